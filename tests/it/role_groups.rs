//! A role carried by membership in a workspace group (`workspace.role_attribute =
//! "groups"`, `[workspace.role_groups]`): whole reconciles against the sandbox
//! seeded with one group per role, the way providers that grant permissions by
//! group work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};

use seatwarden::config::Config;
use seatwarden::model::{
    Account, ActionKind, DirectorySnapshot, HoldReason, Identity, IdentityStatus, Role,
    WorkspaceGroup, WorkspaceSnapshot,
};
use seatwarden::report::Outcome;
use seatwarden::run::{self, Mode, RunOutcome};
use seatwarden::sandbox::{Sandbox, SandboxOptions, SandboxPaging};
use seatwarden::store::Store;
use seatwarden::workspace::GroupMembers;

const TOKEN: &str = "role-groups-token";
const OWNERS: &str = "Taskade Owners";
const EDITORS: &str = "Taskade Editors";
const VIEWERS: &str = "Taskade Viewers";

/// An active person in scope, in `groups` besides the scope group.
fn person(name: &str, groups: &[&str]) -> Identity {
    Identity {
        id: format!("id-{name}"),
        user_name: format!("{name}@example.com"),
        email: Some(format!("{name}@example.com")),
        given_name: None,
        family_name: None,
        display_name: None,
        status: IdentityStatus::Active,
        department: None,
        groups: std::iter::once("Taskade Users")
            .chain(groups.iter().copied())
            .map(str::to_owned)
            .collect(),
    }
}

/// `name`'s account as the directory describes them, with no role value: the
/// role is in the groups.
pub(crate) fn account(name: &str) -> Account {
    Account {
        id: format!("acct-{name}"),
        user_name: format!("{name}@example.com"),
        external_id: Some(format!("id-{name}")),
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some(format!("{name}@example.com")),
        active: true,
        roles: Vec::new(),
    }
}

pub(crate) fn group(id: &str, name: &str, members: &[&str]) -> WorkspaceGroup {
    WorkspaceGroup {
        id: id.to_owned(),
        display_name: name.to_owned(),
        members: members.iter().map(|m| format!("acct-{m}")).collect(),
    }
}

/// The directory file, and a configuration with roles by group: Engineering
/// gives Editor, Admins gives Owner, everyone else is a Viewer. The role groups'
/// names are spelt in another case than the workspace's, and a role name in
/// lower case: both are compared without regard to case.
pub(crate) fn config(
    dir: &std::path::Path,
    people: &[Identity],
    url: &str,
    members: GroupMembers,
) -> Config {
    let directory = DirectorySnapshot {
        identities: people.to_vec(),
        complete: true,
    };
    std::fs::write(
        dir.join("directory.json"),
        seatwarden::synth::directory_json(&directory),
    )
    .unwrap();
    let toml = format!(
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 10000\n\
         role_attribute = \"groups\"\ngroup_members = \"{members}\"\n\n\
         [workspace.role_groups]\nOwner = \"taskade owners\"\neditor = \"TASKADE EDITORS\"\n\
         Viewer = \" Taskade Viewers \"\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\nrole = \"Editor\"\n\n\
         [[policy.mapping]]\ngroup = \"Admins\"\nworkspace_group = \"Admin Space\"\nrole = \"Owner\"\n\n\
         [safety]\nmax_deprovisions = 1000\nmax_deprovision_percent = 100\n\
         max_membership_removals = 100000\nmax_membership_removal_percent = 100\n\
         max_role_downgrades = 100000\nmax_role_downgrade_percent = 100\nsettle = \"0s\"\n"
    );
    std::fs::write(dir.join("seatwarden.toml"), toml).unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

pub(crate) async fn sandbox(seed: WorkspaceSnapshot, aws_like: bool) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = if aws_like {
        // AWS IAM Identity Center: members never shown, found by filter only.
        SandboxOptions {
            token: TOKEN.to_owned(),
            or_filters: false,
            members_hidden: true,
            paging: SandboxPaging::Cursor,
            ..SandboxOptions::default()
        }
    } else {
        SandboxOptions {
            token: TOKEN.to_owned(),
            ..SandboxOptions::default()
        }
    };
    Sandbox::start(listener, options, seed).await.unwrap()
}

pub(crate) async fn execute(config: &Config, mode: Mode) -> RunOutcome {
    let store = Store::open(&config.state.path).unwrap();
    run::execute(config, store, mode).await.unwrap()
}

/// The userNames' local parts of `group_name`'s members in `snapshot`.
fn members(snapshot: &WorkspaceSnapshot, group_name: &str) -> BTreeSet<String> {
    let group = snapshot
        .groups
        .iter()
        .find(|g| g.display_name == group_name)
        .unwrap_or_else(|| panic!("no group {group_name}"));
    group
        .members
        .iter()
        .map(|id| {
            let account = snapshot.accounts.iter().find(|a| &a.id == id).unwrap();
            account
                .user_name
                .trim_end_matches("@example.com")
                .to_owned()
        })
        .collect()
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The SetRole actions of a plan: subject's local part → the role set.
fn role_changes(outcome: &RunOutcome) -> Vec<(String, Role)> {
    let mut changes: Vec<(String, Role)> = outcome
        .plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::SetRole { to, .. } => {
                Some((a.subject.trim_end_matches("@example.com").to_owned(), *to))
            }
            _ => None,
        })
        .collect();
    changes.sort();
    changes
}

/// The workspace of the main scenario: olga an Owner who stays one, eve an
/// Editor as she should be, cy a Viewer who should be an Editor, dee in two role
/// groups, fay in none (as a create cut off between its POST and its role
/// group's add leaves an account).
pub(crate) fn seed() -> WorkspaceSnapshot {
    WorkspaceSnapshot {
        accounts: ["olga", "eve", "cy", "dee", "fay"]
            .into_iter()
            .map(account)
            .collect(),
        groups: vec![
            group("g-owners", OWNERS, &["olga"]),
            group("g-editors", EDITORS, &["eve", "dee"]),
            group("g-viewers", VIEWERS, &["cy", "dee"]),
            group("g-eng", "Engineering", &["eve", "cy"]),
            group("g-admin", "Admin Space", &["olga"]),
        ],
    }
}

pub(crate) fn people() -> Vec<Identity> {
    vec![
        person("olga", &["Admins"]),
        person("eve", &["Engineering"]),
        person("cy", &["Engineering"]),
        person("dee", &[]),
        person("fay", &[]),
        // New hires.
        person("ada", &["Engineering"]),
        person("bob", &[]),
    ]
}

/// The workspace the main scenario must end with, whichever way members are read.
fn assert_roles_converged(after: &WorkspaceSnapshot) {
    assert_eq!(members(after, OWNERS), names(&["olga"]));
    assert_eq!(members(after, EDITORS), names(&["ada", "cy", "eve"]));
    assert_eq!(members(after, VIEWERS), names(&["bob", "dee", "fay"]));
    // The mappings' groups as the policy wants them, untouched otherwise.
    assert_eq!(members(after, "Engineering"), names(&["ada", "cy", "eve"]));
    assert_eq!(members(after, "Admin Space"), names(&["olga"]));
    // The role went by membership only: no role attribute was written.
    assert!(
        after.accounts.iter().all(|a| a.roles.is_empty()),
        "{:#?}",
        after.accounts
    );
    // Nothing made up: the same five groups.
    assert_eq!(after.groups.len(), 5);
}

#[tokio::test]
async fn roles_by_group_are_given_fixed_made_single_and_converge() {
    let sandbox = sandbox(seed(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &people(),
        sandbox.base_url().as_str(),
        GroupMembers::Listed,
    );

    // The plan reads roles from the groups: olga and eve are left alone, and
    // dee, in two role groups, has none until she has one.
    let plan = execute(&config, Mode::Plan).await;
    assert_eq!(
        role_changes(&plan),
        [
            ("cy".to_owned(), Role::Editor),
            ("dee".to_owned(), Role::Viewer),
            ("fay".to_owned(), Role::Viewer),
        ],
        "{:#?}",
        plan.plan.actions
    );
    let creates: BTreeSet<Option<Role>> = plan
        .plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::CreateAccount { spec, .. } => Some(spec.role),
            _ => None,
        })
        .collect();
    assert_eq!(creates, [Some(Role::Viewer), Some(Role::Editor)].into());

    let first = crate::fixtures::assert_converges(&config).await;
    assert_eq!(role_changes(&first).len(), 3);
    assert_roles_converged(&sandbox.snapshot());
}

/// The same against a provider that never shows a group's members (AWS IAM
/// Identity Center): the role groups' members are read by the per-account filter
/// like the managed groups'.
#[tokio::test]
async fn roles_by_group_converge_where_members_are_read_by_filter() {
    let sandbox = sandbox(seed(), true).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &people(),
        sandbox.base_url().as_str(),
        GroupMembers::ByMemberFilter,
    );
    let first = crate::fixtures::assert_converges(&config).await;
    assert_eq!(
        role_changes(&first),
        [
            ("cy".to_owned(), Role::Editor),
            ("dee".to_owned(), Role::Viewer),
            ("fay".to_owned(), Role::Viewer),
        ]
    );
    assert_roles_converged(&sandbox.snapshot());
}

/// Moved from one role group to another without PATCH (read, change, PUT back).
#[tokio::test]
async fn roles_by_group_converge_without_patch() {
    let sandbox = sandbox(seed(), false).await;
    sandbox.set_patch_supported(false);
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &people(),
        sandbox.base_url().as_str(),
        GroupMembers::Listed,
    );
    crate::fixtures::assert_converges(&config).await;
    assert_roles_converged(&sandbox.snapshot());
}

/// The Owner group's only member is the last Owner: her demotion (no mapping
/// gives her Owner any more) is held, she stays in the Owner group, and the new
/// Owner the directory names is created into it.
#[tokio::test]
async fn the_only_owner_group_member_is_not_demoted() {
    let seed = WorkspaceSnapshot {
        accounts: vec![account("olga")],
        groups: vec![
            group("g-owners", OWNERS, &["olga"]),
            group("g-editors", EDITORS, &[]),
            group("g-viewers", VIEWERS, &[]),
            group("g-eng", "Engineering", &[]),
            group("g-admin", "Admin Space", &["olga"]),
        ],
    };
    let sandbox = sandbox(seed, false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &[person("olga", &[]), person("nina", &["Admins"])],
        sandbox.base_url().as_str(),
        GroupMembers::Listed,
    );
    let outcome = execute(&config, Mode::Reconcile).await;
    let demotion = outcome
        .plan
        .actions
        .iter()
        .find(|a| {
            matches!(
                a.kind,
                ActionKind::SetRole {
                    to: Role::Viewer,
                    ..
                }
            )
        })
        .unwrap();
    assert_eq!(demotion.subject, "olga@example.com");
    assert_eq!(demotion.held, Some(HoldReason::LastOwner));
    let reported = outcome
        .report
        .actions
        .iter()
        .find(|a| a.seq == demotion.seq)
        .unwrap();
    assert_eq!(reported.outcome, Outcome::Held);
    let after = sandbox.snapshot();
    assert_eq!(members(&after, OWNERS), names(&["nina", "olga"]));
    assert_eq!(members(&after, VIEWERS), names(&[]));
}

/// A role group the workspace lacks: nobody holds the role on read, and every
/// action that would give it fails, naming the group and the key, while the
/// rest of the run goes on. No group is created and no account is made without
/// its role.
#[tokio::test]
async fn a_missing_role_group_fails_what_would_give_the_role() {
    let seed = WorkspaceSnapshot {
        accounts: vec![account("olga"), account("cy")],
        groups: vec![
            group("g-owners", OWNERS, &["olga"]),
            group("g-viewers", VIEWERS, &["cy"]),
            group("g-eng", "Engineering", &["cy"]),
            group("g-admin", "Admin Space", &["olga"]),
        ],
    };
    let sandbox = sandbox(seed, false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &[
            person("olga", &["Admins"]),
            person("cy", &["Engineering"]),
            person("ada", &["Engineering"]),
            person("bob", &[]),
        ],
        sandbox.base_url().as_str(),
        GroupMembers::Listed,
    );
    let outcome = execute(&config, Mode::Reconcile).await;
    let failed: Vec<(&str, &str, &str)> = outcome
        .report
        .actions
        .iter()
        .filter(|a| a.outcome == Outcome::Failed)
        .map(|a| {
            (
                a.op.as_str(),
                a.subject.as_str(),
                a.error.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    // ada's membership of Engineering fails with her create.
    let (role_failures, others): (Vec<_>, Vec<_>) =
        failed.iter().partition(|(op, _, _)| *op != "add_members");
    assert!(
        others
            .iter()
            .all(|(_, group, error)| *group == "Engineering" && error.contains("id-ada")),
        "{failed:#?}"
    );
    assert_eq!(role_failures.len(), 2, "{failed:#?}");
    for (op, subject, error) in &role_failures {
        assert!(
            (*op, *subject) == ("set_role", "cy@example.com")
                || (*op, *subject) == ("create_account", "ada@example.com"),
            "{failed:#?}"
        );
        assert!(
            error.contains("\"TASKADE EDITORS\"")
                && error.contains("workspace.role_groups.Editor")
                && error.contains("does not create permission groups"),
            "{error}"
        );
    }
    let after = sandbox.snapshot();
    assert!(
        !after
            .accounts
            .iter()
            .any(|a| a.user_name == "ada@example.com"),
        "ada's account was made without its role"
    );
    assert_eq!(after.groups.len(), 4, "{:#?}", after.groups);
    // cy keeps the role she has until hers can be given; bob got his.
    assert_eq!(members(&after, VIEWERS), names(&["bob", "cy"]));
}

/// The client against wiremock, roles by group: Editors and Viewers.
fn client_for(server: &wiremock::MockServer) -> seatwarden::workspace::ScimClient {
    use seatwarden::workspace::{Pagination, RoleAttribute, ScimClient, ScimSettings};
    ScimClient::new(ScimSettings {
        base_url: server.uri().parse().unwrap(),
        token: TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::Groups {
            groups: vec![
                (Role::Editor, EDITORS.to_owned()),
                (Role::Viewer, VIEWERS.to_owned()),
            ],
        },
        page_size: 100,
        pagination: Pagination::Index,
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: std::time::Duration::from_secs(10),
        retry: seatwarden::retry::RetryPolicy::immediate(1),
        managed_groups: Vec::new(),
        group_members: GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap()
}

/// `GET /Groups?filter=displayName eq "<name>"` answered with that group and
/// `members`.
async fn serve_role_group(server: &wiremock::MockServer, id: &str, name: &str, members: &[&str]) {
    use wiremock::matchers::{method, path, query_param};
    let members: Vec<serde_json::Value> = members
        .iter()
        .map(|m| serde_json::json!({"value": m}))
        .collect();
    wiremock::Mock::given(method("GET"))
        .and(path("/Groups"))
        .and(query_param("filter", format!("displayName eq \"{name}\"")))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": 1,
                "Resources": [{"id": id, "displayName": name, "members": members}],
            })),
        )
        .mount(server)
        .await;
}

/// The PATCHes the server received, as (path, first operation's `op`).
async fn patches(server: &wiremock::MockServer) -> Vec<(String, String)> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (
                r.url.path().to_owned(),
                body["Operations"][0]["op"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A role is moved by adding to the new role's group first and only then
/// removing from the old one; when the add fails, nothing is removed, so the
/// account keeps the role it had rather than falling to none.
#[tokio::test]
async fn a_role_move_adds_before_it_removes_and_stops_when_the_add_fails() {
    use wiremock::matchers::{method, path};
    let server = wiremock::MockServer::start().await;
    serve_role_group(&server, "g-ed", EDITORS, &[]).await;
    serve_role_group(&server, "g-view", VIEWERS, &["u1"]).await;
    wiremock::Mock::given(method("PATCH"))
        .and(path("/Groups/g-ed"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&server)
        .await;
    wiremock::Mock::given(method("PATCH"))
        .and(path("/Groups/g-view"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let client = client_for(&server);
    client.set_role("u1", Role::Editor).await.unwrap();
    assert_eq!(
        patches(&server).await,
        [
            ("/Groups/g-ed".to_owned(), "add".to_owned()),
            ("/Groups/g-view".to_owned(), "remove".to_owned()),
        ]
    );

    let server = wiremock::MockServer::start().await;
    serve_role_group(&server, "g-ed", EDITORS, &[]).await;
    serve_role_group(&server, "g-view", VIEWERS, &["u1"]).await;
    wiremock::Mock::given(method("PATCH"))
        .and(path("/Groups/g-ed"))
        .respond_with(
            wiremock::ResponseTemplate::new(403).set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "403",
                "detail": "not allowed",
            })),
        )
        .mount(&server)
        .await;
    let client = client_for(&server);
    let error = client.set_role("u1", Role::Editor).await.unwrap_err();
    assert_eq!(error.status(), Some(403), "{error}");
    assert_eq!(
        patches(&server).await,
        [("/Groups/g-ed".to_owned(), "add".to_owned())]
    );
}

/// Every read of single accounts (verification, approval, sweep) fills the roles
/// from the role groups as the snapshot does: by id, by a batch of ids, by
/// userName and by the search after a 404; where members are listed, and where
/// they are found by filter only.
#[tokio::test]
async fn single_account_reads_fill_roles_from_the_role_groups() {
    use seatwarden::workspace::{Pagination, RoleAttribute, ScimClient, ScimSettings};
    for aws_like in [false, true] {
        let sandbox = sandbox(seed(), aws_like).await;
        let client = ScimClient::new(ScimSettings {
            base_url: sandbox.base_url(),
            token: TOKEN.to_owned().into(),
            role_attribute: RoleAttribute::Groups {
                groups: vec![
                    (Role::Owner, OWNERS.to_uppercase()),
                    (Role::Editor, format!(" {EDITORS} ")),
                    (Role::Viewer, VIEWERS.to_owned()),
                ],
            },
            page_size: 100,
            pagination: Pagination::Auto,
            max_concurrency: 2,
            requests_per_second: 0,
            timeout: std::time::Duration::from_secs(10),
            retry: seatwarden::retry::RetryPolicy::immediate(1),
            managed_groups: vec!["Engineering".to_owned()],
            group_members: if aws_like {
                GroupMembers::ByMemberFilter
            } else {
                GroupMembers::Listed
            },
            ca_pem: None,
        })
        .unwrap();
        client.discover().await.unwrap();
        let roles = |account: Option<Account>| account.unwrap().roles;
        assert_eq!(
            roles(client.get_account("acct-dee").await.unwrap()),
            ["Editor", "Viewer"],
            "aws_like {aws_like}"
        );
        assert_eq!(
            roles(client.get_account("acct-olga").await.unwrap()),
            ["Owner"]
        );
        assert!(roles(client.get_account("acct-fay").await.unwrap()).is_empty());
        assert_eq!(
            roles(
                client
                    .find_account_by_user_name("cy@example.com")
                    .await
                    .unwrap()
            ),
            ["Viewer"]
        );
        assert_eq!(
            roles(
                client
                    .find_account_elsewhere("acct-eve", Some("eve@example.com"))
                    .await
                    .unwrap()
            ),
            ["Editor"]
        );
        // The AWS-like sandbox refuses `or`, which a batch of ids is read by.
        if !aws_like {
            let mut batch = client
                .accounts_by_id(&["acct-olga".to_owned(), "acct-cy".to_owned()])
                .await
                .unwrap();
            batch.sort_by(|a, b| a.id.cmp(&b.id));
            let batch: Vec<Vec<String>> = batch.into_iter().map(|a| a.roles).collect();
            assert_eq!(batch, [vec!["Viewer".to_owned()], vec!["Owner".to_owned()]]);
        }
        // The snapshot agrees.
        let snapshot = client.snapshot(&|_| {}).await.unwrap();
        let dee = snapshot
            .accounts
            .iter()
            .find(|a| a.id == "acct-dee")
            .unwrap();
        assert_eq!(dee.roles, ["Editor", "Viewer"]);
        sandbox.shutdown().await;
    }
}

/// A create whose POST went through but whose role group refused the account
/// still returns the account, without a role: the executor keeps its link, and
/// verification (which does not call such a create done) and the next plan see
/// the missing role. The POST carries no role attribute.
#[tokio::test]
async fn a_create_whose_role_group_add_fails_keeps_the_account() {
    use seatwarden::model::AccountSpec;
    use wiremock::matchers::{method, path};
    let server = wiremock::MockServer::start().await;
    serve_role_group(&server, "g-ed", EDITORS, &[]).await;
    wiremock::Mock::given(method("POST"))
        .and(path("/Users"))
        .respond_with(
            wiremock::ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "u9",
                "userName": "ada@example.com",
                "externalId": "id-ada",
                "active": true,
            })),
        )
        .mount(&server)
        .await;
    wiremock::Mock::given(method("PATCH"))
        .and(path("/Groups/g-ed"))
        .respond_with(wiremock::ResponseTemplate::new(403))
        .mount(&server)
        .await;
    let client = client_for(&server);
    let spec = AccountSpec {
        user_name: "ada@example.com".into(),
        external_id: "id-ada".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        role: Some(Role::Editor),
    };
    let created = client.create_account(&spec).await.unwrap();
    assert_eq!(created.id, "u9");
    assert!(created.roles.is_empty(), "{created:?}");
    let requests = server.received_requests().await.unwrap();
    let post = requests
        .iter()
        .find(|r| r.method.as_str() == "POST")
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert!(body.get("roles").is_none(), "{body}");
    assert_eq!(body["schemas"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(patches(&server).await.len(), 1);
}
