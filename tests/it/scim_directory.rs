//! `kind = "scim"`: a SCIM 2.0 service provider as the directory. The provider here
//! is a second in-process sandbox (or a wiremock one for broken answers); the run
//! must give the workspace exactly what the same people in a directory file give
//! it, write nothing to the provider, and fail without a workspace write when the
//! provider cannot be read whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use seatwarden::config::Config;
use seatwarden::model::{Account, IdentityStatus, WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::run::{self, Mode, RunError};
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions, SandboxPaging};
use seatwarden::store::Store;
use seatwarden::synth::{self, Synth, SynthSpec};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WORKSPACE_TOKEN: &str = "workspace-token";
const IDP_TOKEN: &str = "idp-scim-token";

fn data() -> Synth {
    synth::generate(&SynthSpec {
        people: 150,
        groups: 5,
        drift_percent: 10.0,
        seed: 11,
    })
}

async fn serve(
    seed: WorkspaceSnapshot,
    token: &str,
    max_results: usize,
    faults: Faults,
) -> Sandbox {
    serve_paged(seed, token, max_results, faults, SandboxPaging::Index).await
}

async fn serve_paged(
    seed: WorkspaceSnapshot,
    token: &str,
    max_results: usize,
    faults: Faults,
    paging: SandboxPaging,
) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: token.to_owned(),
            max_results,
            or_filters: true,
            faults,
            paging,
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap()
}

/// The workspace being reconciled, seeded with `seed`.
async fn workspace(seed: WorkspaceSnapshot) -> Sandbox {
    serve(seed, WORKSPACE_TOKEN, 1000, Faults::default()).await
}

/// The synthetic directory as a SCIM provider holds it: a User per identity (its
/// id the identity id, `active` its status), a Group per directory group.
fn provider_seed(data: &Synth) -> WorkspaceSnapshot {
    let accounts = data
        .directory
        .identities
        .iter()
        .map(|i| Account {
            id: i.id.clone(),
            user_name: i.user_name.clone(),
            external_id: None,
            given_name: i.given_name.clone(),
            family_name: i.family_name.clone(),
            display_name: i.display_name.clone(),
            email: i.email.clone(),
            active: i.status == IdentityStatus::Active,
            roles: Vec::new(),
        })
        .collect();
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for identity in &data.directory.identities {
        for group in &identity.groups {
            groups.entry(group).or_default().push(identity.id.clone());
        }
    }
    let groups = groups
        .into_iter()
        .enumerate()
        .map(|(n, (name, members))| WorkspaceGroup {
            id: format!("idp-group-{n}"),
            display_name: name.to_owned(),
            members,
        })
        .collect();
    WorkspaceSnapshot { accounts, groups }
}

fn scim_directory(
    dir: &std::path::Path,
    data: &Synth,
    workspace: &Sandbox,
    idp_url: &str,
) -> Config {
    std::fs::write(dir.join("idp-token"), format!("{IDP_TOKEN}\n")).unwrap();
    crate::fixtures::synth_config_with_directory(
        dir,
        data,
        workspace.base_url().as_ref(),
        WORKSPACE_TOKEN,
        8,
        &format!(
            "kind = \"scim\"\nurl = \"{idp_url}\"\ntoken_file = \"idp-token\"\n\
             page_size = 20\nrequests_per_second = 0\n"
        ),
    )
}

/// What a person sees in a workspace: accounts by userName, groups by name with
/// their members' userNames. Ids differ between two sandboxes; this does not.
type Seen = (
    BTreeMap<
        String,
        (
            Option<String>,
            bool,
            Vec<String>,
            Option<String>,
            Option<String>,
        ),
    >,
    BTreeMap<String, BTreeSet<String>>,
);

fn seen(snapshot: &WorkspaceSnapshot) -> Seen {
    let names: HashMap<&str, &str> = snapshot
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a.user_name.as_str()))
        .collect();
    let accounts = snapshot
        .accounts
        .iter()
        .map(|a| {
            (
                a.user_name.clone(),
                (
                    a.external_id.clone(),
                    a.active,
                    a.roles.clone(),
                    a.display_name.clone(),
                    a.email.clone(),
                ),
            )
        })
        .collect();
    let groups = snapshot
        .groups
        .iter()
        .map(|g| {
            let members = g
                .members
                .iter()
                .map(|m| names.get(m.as_str()).copied().unwrap_or(m).to_owned())
                .collect();
            (g.display_name.clone(), members)
        })
        .collect();
    (accounts, groups)
}

/// Runs a reconcile that must fail reading the directory, and returns why.
pub(crate) async fn directory_failure(config: &Config) -> seatwarden::directory::DirectoryError {
    let result = run::execute(
        config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await;
    match result {
        Err(RunError::Directory(e)) => e,
        other => panic!("expected a directory error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_scim_directory_gives_the_workspace_what_the_same_people_in_a_file_give_it() {
    // Paged by index, and by cursor from a provider that pages no other way.
    for paging in [SandboxPaging::Index, SandboxPaging::Cursor] {
        the_same_people_over_scim_as_in_a_file(paging).await;
    }
}

async fn the_same_people_over_scim_as_in_a_file(paging: SandboxPaging) {
    let data = data();
    let idp = serve_paged(
        provider_seed(&data),
        IDP_TOKEN,
        1000,
        Faults {
            rate_429: 0.2,
            retry_after_secs: 0,
            seed: 3,
            ..Faults::default()
        },
        paging,
    )
    .await;

    let from_scim = workspace(data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = scim_directory(dir.path(), &data, &from_scim, idp.base_url().as_ref());
    let outcome = crate::fixtures::assert_converges(&config).await;
    assert_eq!(
        outcome.report.summary.identities,
        data.directory.identities.len(),
        "every person of the provider, read over pages of 20"
    );

    let from_file = workspace(data.workspace.clone()).await;
    let file_dir = tempfile::tempdir().unwrap();
    let file_config = crate::fixtures::synth_config(
        file_dir.path(),
        &data,
        from_file.base_url().as_ref(),
        WORKSPACE_TOKEN,
        8,
    );
    crate::fixtures::assert_converges(&file_config).await;

    assert_eq!(seen(&from_scim.snapshot()), seen(&from_file.snapshot()));
    let stats = idp.stats();
    assert_eq!(stats.writes, 0, "the directory is only read ({paging:?})");
    assert!(stats.faults_429 > 0, "the provider throttled: {stats:?}");
    assert!(
        stats.requests >= 10,
        "discovery, 8 pages of people and one of groups: {stats:?}"
    );
    for sandbox in [idp, from_scim, from_file] {
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn a_provider_that_refuses_the_token_fails_the_run_without_a_workspace_write() {
    let data = data();
    let idp = serve(
        provider_seed(&data),
        "another-token",
        1000,
        Faults::default(),
    )
    .await;
    let workspace = workspace(data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = scim_directory(dir.path(), &data, &workspace, idp.base_url().as_ref());
    let e = directory_failure(&config).await;
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("GET /ServiceProviderConfig"), "{e}");
    assert_eq!(workspace.stats().writes, 0);
    workspace.shutdown().await;
    idp.shutdown().await;
}

#[tokio::test]
async fn a_user_the_provider_sends_without_user_name_fails_the_snapshot_naming_the_page() {
    let data = data();
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(json!([
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "p1",
             "userName": "ada@example.com", "active": true},
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "p2",
             "active": true},
        ])))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list_response(json!([])))
        .mount(&idp)
        .await;
    let workspace = workspace(data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = scim_directory(
        dir.path(),
        &data,
        &workspace,
        &format!("{}/scim/v2", idp.uri()),
    );
    let e = directory_failure(&config).await;
    let message = e.to_string();
    assert!(
        message.starts_with("GET /Users?") && message.contains("User p2 without userName"),
        "{message}"
    );
    assert_eq!(workspace.stats().writes, 0);
    workspace.shutdown().await;
}

/// A configuration reading the provider at `idp` (token in a file) for
/// `workspace`, scoped to "Taskade Users", with extra `[directory]` and
/// `[safety]` keys.
pub(crate) fn small_config(
    dir: &std::path::Path,
    idp: &MockServer,
    workspace: &Sandbox,
    directory: &str,
    safety: &str,
) -> Config {
    std::fs::write(dir.join("idp-token"), IDP_TOKEN).unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{}/scim/v2\"\ntoken_file = \"idp-token\"\n\
             requests_per_second = 0\n{directory}\n\
             [workspace]\nurl = \"{}\"\ntoken = \"{WORKSPACE_TOKEN}\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
             [safety]\nsettle = \"0s\"\n{safety}",
            idp.uri(),
            workspace.base_url()
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

/// Answers `/Users` with `people` in pages of two, announcing `announced` as
/// `totalResults`, and `/Groups` with everyone in "Taskade Users".
pub(crate) async fn mount_people(idp: &MockServer, people: &[(&str, &str)], announced: usize) {
    idp.reset().await;
    let list = |start: usize, resources: Vec<serde_json::Value>| {
        ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": announced, "startIndex": start,
            "itemsPerPage": resources.len(), "Resources": resources,
        }))
    };
    for (n, chunk) in people.chunks(2).chain([&[][..]]).enumerate() {
        let start = 1 + 2 * n;
        let users = chunk
            .iter()
            .map(|(id, user)| json!({"id": id, "userName": user, "active": true}))
            .collect();
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .and(wiremock::matchers::query_param(
                "startIndex",
                start.to_string(),
            ))
            .respond_with(list(start, users))
            .mount(idp)
            .await;
    }
    let members: Vec<serde_json::Value> =
        people.iter().map(|(id, _)| json!({"value": id})).collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1, "startIndex": 1, "itemsPerPage": 1,
            "Resources": [{"id": "g1", "displayName": "Taskade Users", "members": members}],
        })))
        .mount(idp)
        .await;
}

pub(crate) const THREE: [(&str, &str); 3] = [
    ("p1", "ada@example.com"),
    ("p2", "ben@example.com"),
    ("p3", "cy@example.com"),
];

pub(crate) async fn reconcile(config: &Config) -> run::RunOutcome {
    run::execute(
        config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap()
}

/// Where the short-listing tests start: `idp` lists ada, ben and cy in pages of
/// two, and an empty workspace was reconciled from it once.
pub(crate) async fn three_provisioned(idp: &MockServer) -> (Sandbox, tempfile::TempDir, Config) {
    mount_people(idp, &THREE, 3).await;
    let workspace = workspace(WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(
        dir.path(),
        idp,
        &workspace,
        "page_size = 2\n",
        "max_deprovision_percent = 100\nmax_directory_shrink_percent = 100\n",
    );
    crate::fixtures::assert_clean_reconcile(&reconcile(&config).await.report);
    (workspace, dir, config)
}

/// A provider whose listing ends short of its `totalResults` (people moved between
/// pages, or it stopped early): the one it did not send must not look like a
/// leaver. The same provider announcing what it sends is the control.
#[tokio::test]
async fn a_listing_short_of_its_total_holds_deprovisions() {
    for (announced, cy_stays_active) in [(3, true), (2, false)] {
        let idp = MockServer::start().await;
        let (workspace, _dir, config) = three_provisioned(&idp).await;

        // cy is gone from the listing.
        mount_people(&idp, &THREE[..2], announced).await;
        let outcome = reconcile(&config).await;
        let cy = workspace
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.user_name == "cy@example.com")
            .unwrap();
        assert_eq!(cy.active, cy_stays_active, "totalResults {announced}");
        assert_eq!(
            outcome.report.summary.actions_held,
            usize::from(cy_stays_active),
            "totalResults {announced}"
        );
        if cy_stays_active {
            // The held deactivation must not reach the ledger either: the daemon's
            // retry job, which reads no directory, would enforce it.
            let store = std::sync::Arc::new(std::sync::Mutex::new(
                Store::open(&config.state.path).unwrap(),
            ));
            assert!(
                store
                    .lock()
                    .unwrap()
                    .open_deprovisions()
                    .unwrap()
                    .is_empty()
            );
            let client =
                seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
            let later = chrono::Utc::now() + chrono::Duration::minutes(16);
            seatwarden::sweep::enforce(&config, &client, &store, later)
                .await
                .unwrap();
            let cy_later = workspace
                .snapshot()
                .accounts
                .into_iter()
                .find(|a| a.user_name == "cy@example.com")
                .unwrap();
            assert!(
                cy_later.active,
                "an incomplete directory never deprovisions"
            );
        }
        workspace.shutdown().await;
    }
}

/// A listing that ends short once (cy's page came back empty while people moved)
/// is read again; whole the second time, the snapshot is complete and nothing is
/// held or deprovisioned.
#[tokio::test]
async fn a_listing_short_once_is_read_again() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;

    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(wiremock::matchers::query_param("startIndex", "3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalResults": 3, "startIndex": 3, "itemsPerPage": 0, "Resources": [],
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&idp)
        .await;
    let outcome = reconcile(&config).await;
    assert_eq!(outcome.report.summary.actions_held, 0);
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    let cy = workspace
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.user_name == "cy@example.com")
        .unwrap();
    assert!(cy.active);
    workspace.shutdown().await;
}

/// A provider that sends at most three Users a page whatever `count` asks, and
/// announces each page's length as `totalResults` (apis.md: `count` ignored,
/// `totalResults` equal to the page size): the people past the first page are in
/// the snapshot, not leavers nor missing from a snapshot taken as complete.
#[tokio::test]
async fn a_provider_paging_by_fewer_than_asked_is_read_past_its_first_page() {
    let idp = MockServer::start().await;
    let people: Vec<(String, String)> = (1..=8)
        .map(|i| (format!("p{i}"), format!("person{i}@example.com")))
        .collect();
    let users = people.clone();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(move |req: &wiremock::Request| {
            let start: usize = req
                .url
                .query_pairs()
                .find(|(k, _)| k == "startIndex")
                .map_or(1, |(_, v)| v.parse().unwrap());
            let page: Vec<serde_json::Value> = users
                .iter()
                .skip(start - 1)
                .take(3)
                .map(|(id, user)| json!({"id": id, "userName": user, "active": true}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": page.len(), "startIndex": start,
                "itemsPerPage": page.len(), "Resources": page,
            }))
        })
        .mount(&idp)
        .await;
    let members: Vec<serde_json::Value> =
        people.iter().map(|(id, _)| json!({"value": id})).collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list_response(json!([
            {"id": "g1", "displayName": "Taskade Users", "members": members},
        ])))
        .mount(&idp)
        .await;
    let workspace = workspace(WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(
        dir.path(),
        &idp,
        &workspace,
        "page_size = 5
",
        "",
    );
    let outcome = reconcile(&config).await;
    crate::fixtures::assert_clean_reconcile(&outcome.report);
    let mut provisioned: Vec<String> = workspace
        .snapshot()
        .accounts
        .into_iter()
        .filter(|a| a.active)
        .map(|a| a.user_name)
        .collect();
    provisioned.sort();
    let mut expected: Vec<String> = people.into_iter().map(|(_, user)| user).collect();
    expected.sort();
    assert_eq!(provisioned, expected);
    workspace.shutdown().await;
}

/// A SCIM ListResponse of `resources`, all on one page.
pub(crate) fn list_response(resources: serde_json::Value) -> ResponseTemplate {
    let n = resources.as_array().map_or(0, Vec::len);
    ResponseTemplate::new(200).set_body_json(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": n, "startIndex": 1, "itemsPerPage": n, "Resources": resources,
    }))
}

/// A provider with two people and the given `/Groups` listing, and a config
/// scoping to "Taskade Users" for an empty workspace.
async fn provider_with_groups(
    groups: serde_json::Value,
) -> (MockServer, Sandbox, tempfile::TempDir, Config) {
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(json!([
            {"id": "p1", "userName": "ada@example.com"},
            {"id": "p2", "userName": "ben@example.com"},
        ])))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list_response(groups))
        .mount(&idp)
        .await;
    let workspace = workspace(WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), &idp, &workspace, "", "");
    (idp, workspace, dir, config)
}

#[tokio::test]
async fn a_scope_group_listed_without_members_is_read_on_its_own() {
    let (idp, workspace, _dir, config) =
        provider_with_groups(json!([{"id": "g1", "displayName": "Taskade Users"}])).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "g1", "displayName": "Taskade Users",
            "members": [{"value": "p1"}, {"value": "p2"}],
        })))
        // Once for the reconcile, once for the plan after it.
        .expect(2)
        .mount(&idp)
        .await;
    crate::fixtures::assert_converges(&config).await;
    let mut provisioned: Vec<String> = workspace
        .snapshot()
        .accounts
        .into_iter()
        .map(|a| a.user_name)
        .collect();
    provisioned.sort();
    assert_eq!(provisioned, ["ada@example.com", "ben@example.com"]);
    workspace.shutdown().await;
}

/// A provider that leaves `members` out of every listing: the groups the
/// configuration names are read on their own, and so is every group nested in
/// them, however deep. Here Engineering sits in Taskade Users (ben is in scope
/// only through it), and cy is only in "Break Glass", which only
/// `safety.protected_groups` names: her existing account must stay untouched.
#[tokio::test]
async fn groups_listed_without_members_are_read_through_their_nesting() {
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(json!([
            {"id": "p1", "userName": "ada@example.com"},
            {"id": "p2", "userName": "ben@example.com"},
            {"id": "p3", "userName": "cy@example.com"},
        ])))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list_response(json!([
            {"id": "g1", "displayName": "Taskade Users"},
            {"id": "g2", "displayName": "Engineering"},
            {"id": "g3", "displayName": "Break Glass"},
        ])))
        .mount(&idp)
        .await;
    for (id, name, members) in [
        (
            "g1",
            "Taskade Users",
            json!([{"value": "p1"}, {"value": "g2"}]),
        ),
        ("g2", "Engineering", json!([{"value": "p2"}])),
        ("g3", "Break Glass", json!([{"value": "p3"}])),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/scim/v2/Groups/{id}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": id, "displayName": name, "members": members})),
            )
            .mount(&idp)
            .await;
    }
    let cy = Account {
        id: "w-cy".into(),
        user_name: "cy@example.com".into(),
        external_id: Some("p3".into()),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active: true,
        roles: vec!["Owner".into()],
    };
    let other_owner = Account {
        id: "w-root".into(),
        user_name: "root@example.com".into(),
        external_id: None,
        ..cy.clone()
    };
    let workspace = workspace(WorkspaceSnapshot {
        accounts: vec![cy.clone(), other_owner],
        groups: Vec::new(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(
        dir.path(),
        &idp,
        &workspace,
        "",
        "protected_groups = [\"Break Glass\"]\n",
    );
    crate::fixtures::assert_converges(&config).await;
    let accounts = workspace.snapshot().accounts;
    let active: BTreeSet<&str> = accounts
        .iter()
        .filter(|a| a.active)
        .map(|a| a.user_name.as_str())
        .collect();
    assert!(
        active.contains("ada@example.com") && active.contains("ben@example.com"),
        "ben is in scope through Engineering: {active:?}"
    );
    assert_eq!(
        accounts.iter().find(|a| a.id == "w-cy"),
        Some(&cy),
        "the protected account is untouched"
    );
    workspace.shutdown().await;
}

#[tokio::test]
async fn two_groups_under_the_scope_group_name_fail_the_run_before_any_write() {
    let (_idp, workspace, _dir, config) = provider_with_groups(json!([
        {"id": "g1", "displayName": "Taskade Users", "members": [{"value": "p1"}]},
        {"id": "g2", "displayName": "Taskade Users", "members": [{"value": "p2"}]},
    ]))
    .await;
    let message = directory_failure(&config).await.to_string();
    assert!(
        message.contains("\"g1\"") && message.contains("\"g2\""),
        "{message}"
    );
    assert_eq!(workspace.stats().writes, 0);
    workspace.shutdown().await;
}

#[tokio::test]
async fn a_scope_group_the_provider_lacks_fails_the_run_before_any_write() {
    let (_idp, workspace, _dir, config) = provider_with_groups(json!([
        {"id": "g1", "displayName": "Taskade-Users", "members": [{"value": "p1"}]}
    ]))
    .await;
    let e = directory_failure(&config).await;
    let message = e.to_string();
    assert!(
        message.contains("scope group \"Taskade Users\"")
            && message.contains("policy.scope_groups"),
        "{message}"
    );
    assert_eq!(workspace.stats().writes, 0);
    workspace.shutdown().await;
}

/// The sweep's read of the directory checks the groups that decide who left or
/// who is never touched (protected), not a mapping's: an Owner mapping's group
/// missing from the provider stops reconciles, but not the deprovisioning of
/// leavers.
#[tokio::test]
async fn the_sweep_reads_past_a_missing_owner_mapping_group_not_a_protected_one() {
    let (idp, workspace, dir, _) = provider_with_groups(json!([
        {"id": "g1", "displayName": "Taskade Users", "members": [{"value": "p1"}]},
        {"id": "g2", "displayName": "IT Admins", "members": [{"value": "p2"}]},
    ]))
    .await;
    let owners = small_config(
        dir.path(),
        &idp,
        &workspace,
        "",
        "[[policy.mapping]]\ngroup = \"Taskade Ownerz\"\nworkspace_group = \"All\"\nrole = \"Owner\"\n",
    );
    let refused = owners.directory().snapshot().await.unwrap_err().to_string();
    assert!(refused.contains("policy.mapping[0].group"), "{refused}");
    let read = owners.sweep_directory().snapshot().await.unwrap();
    assert_eq!(read.identities.len(), 2, "{read:?}");

    let protected = small_config(
        dir.path(),
        &idp,
        &workspace,
        "",
        "protected_groups = [\"IT Admin\"]\n",
    );
    let refused = protected
        .sweep_directory()
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("safety.protected_groups"), "{refused}");
    workspace.shutdown().await;
}

#[tokio::test]
async fn a_protected_group_the_provider_lacks_fails_the_run_before_any_write() {
    let (idp, workspace, dir, _) = provider_with_groups(json!([
        {"id": "g1", "displayName": "Taskade Users", "members": [{"value": "p1"}]},
        {"id": "g2", "displayName": "IT Admins", "members": [{"value": "p2"}]},
    ]))
    .await;
    let config = |protected: &str| {
        small_config(
            dir.path(),
            &idp,
            &workspace,
            "",
            &format!("protected_groups = [\"{protected}\"]\n"),
        )
    };
    let message = directory_failure(&config("IT Admin")).await.to_string();
    assert!(
        message.contains("group \"IT Admin\" (safety.protected_groups)")
            && message.contains("safety.protected_groups"),
        "{message}"
    );
    assert_eq!(workspace.stats().writes, 0);
    // The group of a mapping that gives Owner is required too: without it every
    // Owner would be planned down.
    let owners = |group: &str| {
        small_config(
            dir.path(),
            &idp,
            &workspace,
            "",
            &format!(
                "[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"All\"\nrole = \"Owner\"\n"
            ),
        )
    };
    let message = directory_failure(&owners("Taskade Ownerz"))
        .await
        .to_string();
    assert!(
        message.contains("group \"Taskade Ownerz\" (policy.mapping[0].group)")
            && message.contains("every workspace Owner"),
        "{message}"
    );
    assert_eq!(workspace.stats().writes, 0);
    // Mappings match their group exactly: one that differs in case matches nobody,
    // and is refused naming the directory's spelling.
    let message = directory_failure(&owners("it admins")).await.to_string();
    assert!(
        message.contains("the directory has \"IT Admins\""),
        "{message}"
    );
    crate::fixtures::assert_converges(&config("it admins")).await;
    workspace.shutdown().await;
}
