//! Workspace groups whose provider never shows members (AWS IAM Identity Center):
//! `workspace.group_members = "by_member_filter"` against the sandbox serving
//! groups as AWS does, the old behaviour (`listed`) against the same, and the
//! client against answers shaped like AWS's documented ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use seatwarden::model::{ActionKind, WorkspaceSnapshot};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Sandbox, SandboxOptions, SandboxPaging};
use seatwarden::store::Store;
use seatwarden::synth::{self, Synth, SynthSpec};
use seatwarden::workspace::{GroupMembers, Pagination, RoleAttribute, ScimClient, ScimSettings};
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "aws-like-token";

/// A synthetic workspace whose first mapped group also holds three accounts no
/// mapping puts there (active people in scope): removals to plan.
fn data() -> (Synth, Vec<String>) {
    let mut data = synth::generate(&SynthSpec {
        people: 120,
        groups: 4,
        drift_percent: 10.0,
        seed: 7,
    });
    let group = data.workspace.groups[0].clone();
    let extra: Vec<String> = data
        .directory
        .identities
        .iter()
        .filter(|i| {
            i.status == seatwarden::model::IdentityStatus::Active
                && i.groups.iter().any(|g| g == synth::SCOPE_GROUP)
                && !i.groups.contains(&group.display_name)
        })
        .filter_map(|i| {
            data.workspace
                .accounts
                .iter()
                .find(|a| a.external_id.as_deref() == Some(i.id.as_str()) && a.active)
                .map(|a| a.id.clone())
        })
        .filter(|id| !group.members.contains(id))
        .take(3)
        .collect();
    assert_eq!(extra.len(), 3);
    data.workspace.groups[0]
        .members
        .extend(extra.iter().cloned());
    (data, extra)
}

/// Serves `seed` as AWS IAM Identity Center serves groups: `"members": []`
/// everywhere, members found by filter only, no `or`, cursor pages of 100.
async fn aws_like(seed: WorkspaceSnapshot) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            max_results: 100,
            or_filters: false,
            members_hidden: true,
            paging: SandboxPaging::Cursor,
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap()
}

fn config(
    dir: &std::path::Path,
    data: &Synth,
    sandbox: &Sandbox,
    members: GroupMembers,
) -> seatwarden::config::Config {
    let mut config =
        crate::fixtures::synth_config(dir, data, sandbox.base_url().as_ref(), TOKEN, 4);
    config.workspace.group_members = members;
    config
}

fn managed_members(snapshot: &WorkspaceSnapshot, data: &Synth) -> Vec<(String, BTreeSet<String>)> {
    let managed: BTreeSet<String> = data.roles.iter().map(|(g, _)| g.clone()).collect();
    let mut groups: Vec<(String, BTreeSet<String>)> = snapshot
        .groups
        .iter()
        .filter(|g| managed.contains(&g.display_name))
        .map(|g| (g.id.clone(), g.members.iter().cloned().collect()))
        .collect();
    groups.sort();
    groups
}

fn counts(plan: &seatwarden::model::Plan) -> (usize, usize) {
    let adds = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::AddMembers { .. }))
        .count();
    let removals = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::RemoveMembers { .. }))
        .count();
    (adds, removals)
}

#[tokio::test]
async fn members_read_by_filter_are_added_removed_verified_and_converge() {
    let (data, extra) = data();
    let sandbox = aws_like(data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &data, &sandbox, GroupMembers::ByMemberFilter);

    let first = crate::fixtures::assert_converges(&config).await;
    let (adds, removals) = counts(&first.plan);
    assert!(adds > 0, "{:#?}", first.plan.actions);
    assert!(removals > 0, "{:#?}", first.plan.actions);
    let removed: BTreeSet<String> = first
        .plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::RemoveMembers { members, .. } => Some(members.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(extra.iter().all(|e| removed.contains(e)), "{removed:?}");

    // What the filters read is what the workspace holds.
    let truth = sandbox.snapshot();
    let group = truth
        .groups
        .iter()
        .find(|g| g.id == data.workspace.groups[0].id)
        .unwrap();
    assert!(extra.iter().all(|e| !group.members.contains(e)));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    client.discover().await.unwrap();
    let read = client.snapshot(&|_| {}).await.unwrap();
    assert_eq!(
        managed_members(&read, &data),
        managed_members(&truth, &data)
    );
    assert!(
        managed_members(&truth, &data)
            .iter()
            .any(|(_, m)| !m.is_empty())
    );
    // And the sandbox did hide them: read as listed, every group is empty.
    let mut settings = config.scim_settings().unwrap();
    settings.group_members = GroupMembers::Listed;
    let listed = ScimClient::new(settings).unwrap();
    listed.discover().await.unwrap();
    let shown = listed.snapshot(&|_| {}).await.unwrap();
    assert!(shown.groups.iter().all(|g| g.members.is_empty()));
    sandbox.shutdown().await;
}

/// The old behaviour, kept as the default: the groups read as empty, every member
/// is planned as an add on every run, no add is verified (the failure names the
/// setting), and the members no mapping wants are never removed.
#[tokio::test]
async fn members_read_from_groups_that_never_show_them_do_not_converge() {
    let (data, extra) = data();
    let sandbox = aws_like(data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &data, &sandbox, GroupMembers::Listed);
    let open = || Store::open(&config.state.path).unwrap();

    let first = run::execute(&config, open(), Mode::Reconcile)
        .await
        .unwrap();
    assert_eq!(counts(&first.plan).1, 0);
    let failed: Vec<&String> = first
        .report
        .actions
        .iter()
        .filter(|a| a.op == "add_members")
        .filter_map(|a| a.error.as_ref())
        .collect();
    assert!(!failed.is_empty(), "{:#?}", first.report.actions);
    assert!(
        failed.iter().all(|e| e.contains("workspace.group_members")
            && e.contains("AWS IAM Identity Center")),
        "{failed:#?}"
    );
    let second = run::execute(&config, open(), Mode::Plan).await.unwrap();
    let (adds, removals) = counts(&second.plan);
    assert!(
        adds > 0,
        "adds are planned again: {:#?}",
        second.plan.actions
    );
    assert_eq!(removals, 0);
    let truth = sandbox.snapshot();
    let group = truth
        .groups
        .iter()
        .find(|g| g.id == data.workspace.groups[0].id)
        .unwrap();
    assert!(extra.iter().all(|e| group.members.contains(e)));
    sandbox.shutdown().await;
}

fn settings(server: &MockServer, members: GroupMembers) -> ScimSettings {
    ScimSettings {
        base_url: format!("{}/scim/v2", server.uri()).parse().unwrap(),
        token: TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::None,
        page_size: 100,
        pagination: Pagination::Cursor,
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: Duration::from_secs(5),
        retry: RetryPolicy::immediate(2),
        managed_groups: vec!["Engineering".to_owned()],
        group_members: members,
        ca_pem: None,
    }
}

fn list(resources: serde_json::Value) -> serde_json::Value {
    let n = resources.as_array().map_or(0, Vec::len);
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": n,
        "itemsPerPage": n,
        "startIndex": 1,
        "Resources": resources,
    })
}

fn user(id: &str) -> serde_json::Value {
    json!({"id": id, "userName": format!("{id}@example.com"), "active": true,
           "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]})
}

fn group(id: &str, name: &str) -> serde_json::Value {
    json!({"id": id, "displayName": name, "members": [],
           "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"]})
}

/// AWS's documented answers: ListGroups and ListUsers without members
/// (`"members": []`), `members.value eq` answering each user's groups, and 404
/// ResourceNotFound for a user that no longer exists.
async fn aws_documented() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(json!([
            user("u1"),
            user("u2"),
            user("gone")
        ]))))
        .mount(&server)
        .await;
    let groups_of = |user: &str, groups: serde_json::Value| {
        Mock::given(method("GET"))
            .and(path("/scim/v2/Groups"))
            .and(query_param(
                "filter",
                format!("members.value eq \"{user}\""),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(list(groups)))
    };
    groups_of(
        "u1",
        json!([group("g1", "Engineering"), group("g2", "Sales")]),
    )
    .mount(&server)
    .await;
    groups_of("u2", json!([group("g2", "Sales")]))
        .mount(&server)
        .await;
    let not_found = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                           "status": "404", "detail": "ResourceNotFoundException"});
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", "members.value eq \"gone\""))
        .respond_with(ResponseTemplate::new(404).set_body_json(not_found.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(not_found))
        .mount(&server)
        .await;
    // Looked for by a filter before it counts as gone: not found that way either.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("filter", "id eq \"gone\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(json!([]))))
        .with_priority(2)
        .mount(&server)
        .await;
    // The plain listing: no filter parameter.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(|r: &wiremock::Request| !r.url.query_pairs().any(|(k, _)| k == "filter"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(json!([
            group("g1", "Engineering"),
            group("g2", "Sales")
        ]))))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn aws_shaped_answers_give_managed_groups_their_members() {
    let server = aws_documented().await;
    let client = ScimClient::new(settings(&server, GroupMembers::ByMemberFilter)).unwrap();
    let progress = std::sync::Mutex::new(Vec::new());
    let snapshot = client
        .snapshot(&|p| {
            if p.what == "memberships" {
                progress.lock().unwrap().push((p.objects, p.total));
            }
        })
        .await
        .unwrap();
    let members = |id: &str| {
        snapshot
            .groups
            .iter()
            .find(|g| g.id == id)
            .unwrap()
            .members
            .clone()
    };
    // Managed: from the filters. Unmanaged (Sales): as shown, empty.
    assert_eq!(members("g1"), vec!["u1".to_owned()]);
    assert!(members("g2").is_empty());
    assert_eq!(
        progress.into_inner().unwrap(),
        vec![(1, Some(3)), (2, Some(3)), (3, Some(3))]
    );

    // As listed (the default), Engineering reads as empty.
    let listed = ScimClient::new(settings(&server, GroupMembers::Listed)).unwrap();
    let snapshot = listed.snapshot(&|_| {}).await.unwrap();
    assert!(snapshot.groups.iter().all(|g| g.members.is_empty()));
}

/// A 404 for an account found by a search on `/Users` (its read by id answering
/// 404 too: a route that will not pass ids) is no proof it is in no group.
#[tokio::test]
async fn a_member_filter_404_for_an_account_found_by_a_search_fails_the_read() {
    let server = aws_documented().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("filter", "id eq \"gone\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(json!([user("gone")]))))
        .with_priority(1)
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&server, GroupMembers::ByMemberFilter)).unwrap();
    let err = client.snapshot(&|_| {}).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

/// A 404 for an account that still reads as present is no proof it is in no
/// group: the snapshot fails rather than drop its memberships.
#[tokio::test]
async fn a_member_filter_404_for_an_account_that_exists_fails_the_read() {
    let server = aws_documented().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/gone"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user("gone")))
        .with_priority(1)
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&server, GroupMembers::ByMemberFilter)).unwrap();
    let err = client.snapshot(&|_| {}).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(err.to_string().contains("members.value eq"), "{err}");
}

/// Any other failure of one account's filter fails the whole read.
#[tokio::test]
async fn a_member_filter_that_fails_fails_the_read() {
    let server = aws_documented().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", "members.value eq \"u2\""))
        .respond_with(ResponseTemplate::new(403))
        .with_priority(1)
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&server, GroupMembers::ByMemberFilter)).unwrap();
    let err = client.snapshot(&|_| {}).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
}

/// A provider that ignores `members.value eq` answers every account with every
/// group, and with members hidden nothing in the answers shows it: every account
/// would read as a member of every managed group. A member that cannot exist is
/// asked first; groups for it fail the read.
#[tokio::test]
async fn a_provider_that_ignores_the_member_filter_fails_the_read() {
    let server = aws_documented().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(|r: &wiremock::Request| r.url.query_pairs().any(|(k, _)| k == "filter"))
        .respond_with(ResponseTemplate::new(200).set_body_json(list(json!([
            group("g1", "Engineering"),
            group("g2", "Sales")
        ]))))
        .with_priority(1)
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&server, GroupMembers::ByMemberFilter)).unwrap();
    let err = client.snapshot(&|_| {}).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the provider ignores the members.value filter"),
        "{err}"
    );
}

/// A crash left membership changes in flight: recovery judges them by each
/// member's groups, as verification does, not by the empty member list.
#[tokio::test]
async fn interrupted_membership_changes_are_recovered_by_the_members_groups() {
    use seatwarden::model::{AccountRef, Action, DriftKind, GroupRef, Plan, WorkspaceGroup};
    use seatwarden::store::{ActionState, RunKind};

    let seed = WorkspaceSnapshot {
        accounts: data().0.workspace.accounts.into_iter().take(3).collect(),
        groups: Vec::new(),
    };
    let ids: Vec<String> = seed.accounts.iter().map(|a| a.id.clone()).collect();
    let seed = WorkspaceSnapshot {
        groups: vec![WorkspaceGroup {
            id: "g1".into(),
            display_name: "Engineering".into(),
            // ids[0] arrived; ids[1] was removed; ids[2] never arrived.
            members: vec![ids[0].clone()],
        }],
        ..seed
    };
    let sandbox = aws_like(seed).await;
    let server_settings = ScimSettings {
        base_url: sandbox.base_url(),
        token: TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: Pagination::Auto,
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: Duration::from_secs(5),
        retry: RetryPolicy::immediate(2),
        managed_groups: vec!["Engineering".to_owned()],
        group_members: GroupMembers::ByMemberFilter,
        ca_pem: None,
    };
    let client = ScimClient::new(server_settings).unwrap();
    client.discover().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let run = store
        .begin_run(RunKind::Reconcile, chrono::Utc::now())
        .unwrap();
    let group = GroupRef::Existing {
        id: "g1".into(),
        display_name: "Engineering".into(),
    };
    let action = |seq: u32, kind: ActionKind| Action {
        seq,
        kind,
        reason: DriftKind::GroupDrift,
        subject: "Engineering".into(),
        identity_id: None,
        detail: String::new(),
        held: None,
    };
    let add = |id: &String| ActionKind::AddMembers {
        group: group.clone(),
        members: vec![AccountRef::Existing { id: id.clone() }],
    };
    let plan = Plan {
        actions: vec![
            action(0, add(&ids[0])),
            action(
                1,
                ActionKind::RemoveMembers {
                    group: group.clone(),
                    members: vec![ids[1].clone()],
                },
            ),
            action(2, add(&ids[2])),
        ],
        ..Plan::default()
    };
    store.save_plan(run, &plan, chrono::Utc::now()).unwrap();
    for seq in 0..3 {
        store.mark_in_flight(run, seq, chrono::Utc::now()).unwrap();
    }
    let store = std::sync::Mutex::new(store);
    let recovered =
        seatwarden::apply::recover(&client, &store, seatwarden::model::DEFAULT_ADMIN_COMMAND)
            .await
            .unwrap();
    assert_eq!(recovered.resolved, 3);
    let journal = store.lock().unwrap().journal(run).unwrap();
    let states: Vec<ActionState> = journal.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        vec![
            ActionState::Applied,
            ActionState::Applied,
            ActionState::Failed
        ],
        "{journal:#?}"
    );
    sandbox.shutdown().await;
}
