//! Interop with a SCIM server nobody on this team wrote: PyPI `scim2-server`.
//!
//! These tests are `#[ignore]`d so `cargo test` needs nothing installed; the interop
//! suite (`bash scripts/interop.sh`) installs and starts the server and runs them with
//! `--ignored`, passing its address in `SEATWARDEN_SCIM2_SERVER_URL` and the bearer
//! token in `SEATWARDEN_SCIM2_SERVER_TOKEN`. Every test uses its own tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use seatwarden::model::{AccountSpec, DriftKind, IdentityStatus};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};

fn server() -> (String, String) {
    let url = std::env::var("SEATWARDEN_SCIM2_SERVER_URL").unwrap_or_else(|_| {
        panic!(
            "SEATWARDEN_SCIM2_SERVER_URL is not set: run the interop suite with \
             `bash scripts/interop.sh`, which starts scim2-server"
        )
    });
    let token = std::env::var("SEATWARDEN_SCIM2_SERVER_TOKEN")
        .unwrap_or_else(|_| panic!("SEATWARDEN_SCIM2_SERVER_TOKEN is not set"));
    (url.trim_end_matches('/').to_owned(), token)
}

/// A tenant of its own for each test, so tests never see each other's objects.
fn tenant_url(base: &str, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{base}/{name}-{}-{nanos}/v2", std::process::id())
}

fn client(url: &str, token: &str) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url: url.parse().unwrap(),
        token: token.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        // scim2-server speaks HTTP/1.0 with a listen backlog of 5.
        max_concurrency: 4,
        requests_per_second: 1000,
        timeout: Duration::from_secs(30),
        retry: RetryPolicy::default(),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap()
}

/// Writes the drifted workspace the generator describes into a tenant; returns
/// the generator's account ids mapped to the ids the server gave.
async fn seed_tenant(workspace: &ScimClient, data: &synth::Synth) -> HashMap<String, String> {
    let mut ids: HashMap<String, String> = HashMap::new();
    for account in &data.workspace.accounts {
        let created = workspace
            .create_account(&AccountSpec {
                user_name: account.user_name.clone(),
                external_id: account.external_id.clone().unwrap_or_default(),
                given_name: account.given_name.clone(),
                family_name: account.family_name.clone(),
                display_name: account.display_name.clone(),
                email: account.email.clone(),
                role: account.role(),
            })
            .await
            .unwrap();
        if !account.active {
            workspace.set_active(&created.id, false).await.unwrap();
        }
        ids.insert(account.id.clone(), created.id);
    }
    for group in &data.workspace.groups {
        let created = workspace.create_group(&group.display_name).await.unwrap();
        let members: Vec<String> = group
            .members
            .iter()
            .filter_map(|m| ids.get(m).cloned())
            .collect();
        if !members.is_empty() {
            workspace.add_members(&created.id, &members).await.unwrap();
        }
    }

    ids
}

#[tokio::test]
#[ignore = "needs scim2-server: run `bash scripts/interop.sh`"]
async fn interop_reconcile_converges_every_drift_kind_against_scim2_server() {
    let (base, token) = server();
    let url = tenant_url(&base, "converge");
    let workspace = client(&url, &token);
    workspace.discover().await.unwrap();

    let data = synth::generate(&SynthSpec {
        people: 300,
        groups: 6,
        drift_percent: 10.0,
        seed: 7,
    });

    let ids = seed_tenant(&workspace, &data).await;

    // Drift kinds the generator does not make: a leaver who came back (their
    // account is inactive), and a disputed match (two accounts claim one person).
    let active: Vec<_> = data
        .directory
        .identities
        .iter()
        .filter(|i| {
            i.status == IdentityStatus::Active && i.groups.iter().any(|g| g == "Taskade Users")
        })
        .collect();
    let returner = data
        .workspace
        .accounts
        .iter()
        .find(|a| {
            a.active
                && active
                    .iter()
                    .any(|i| a.external_id.as_deref() == Some(i.id.as_str()))
        })
        .expect("the generator keeps some converged accounts");
    workspace
        .set_active(&ids[&returner.id], false)
        .await
        .unwrap();
    let disputed = active
        .iter()
        .find(|i| returner.external_id.as_deref() != Some(i.id.as_str()))
        .unwrap();
    workspace
        .create_account(&AccountSpec {
            user_name: format!("second.{}", disputed.user_name),
            external_id: disputed.id.clone(),
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            role: None,
        })
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config(dir.path(), &data, url.as_ref(), &token, 4);

    let first = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let summary = &first.report.summary;
    // Deletion after a retention period needs `deprovision.action = "delete"` and
    // a clock a month old; this scenario deactivates.
    for kind in DriftKind::ALL
        .into_iter()
        .filter(|k| *k != DriftKind::RetentionExpired)
    {
        assert!(
            summary.drift_by_kind[&kind] > 0,
            "the scenario should contain {kind}: {:?}",
            summary.drift_by_kind
        );
    }
    crate::fixtures::assert_clean_reconcile(&first.report);

    let second = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    assert!(
        second.plan.is_empty(),
        "a converged workspace plans nothing, got {:#?}",
        second.plan.actions
    );
    // What remains is drift seatwarden reports but never acts on.
    let left: Vec<DriftKind> = second.plan.drift.iter().map(|d| d.kind).collect();
    assert!(
        left.iter().all(|k| matches!(
            k,
            DriftKind::OrphanedAccount | DriftKind::DisputedMatch | DriftKind::GroupDrift
        )),
        "{left:?}"
    );

    // And the workspace really shows it: every leaver's account is inactive.
    let after = workspace.snapshot(&|_| {}).await.unwrap();
    crate::fixtures::assert_leavers_inactive(&data, &after);
    let returned = after
        .accounts
        .iter()
        .find(|a| a.id == ids[&returner.id])
        .unwrap();
    assert!(returned.active, "the returner's own account is reactivated");
}

/// scim2-server as the *directory* (`kind = "scim"`): people and groups written to
/// it through its API are read back as identities and provisioned into an empty
/// in-process workspace.
#[tokio::test]
#[ignore = "needs scim2-server: run `bash scripts/interop.sh`"]
async fn interop_scim2_server_as_the_directory_provisions_an_empty_workspace() {
    use seatwarden::model::WorkspaceSnapshot;
    use seatwarden::sandbox::{Sandbox, SandboxOptions};

    let (base, token) = server();
    let url = tenant_url(&base, "directory");
    let idp = client(&url, &token);
    idp.discover().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..12 {
        let person = idp
            .create_account(&AccountSpec {
                user_name: format!("person{n}@example.com"),
                external_id: format!("hr-{n}"),
                given_name: Some(format!("Person{n}")),
                family_name: Some("Example".to_owned()),
                display_name: Some(format!("Person{n} Example")),
                email: Some(format!("person{n}@example.com")),
                role: None,
            })
            .await
            .unwrap();
        ids.push(person.id);
    }
    idp.set_active(&ids[5], false).await.unwrap();
    let everyone = idp.create_group("Taskade Users").await.unwrap();
    idp.add_members(&everyone.id, &ids[..10]).await.unwrap();
    let engineering = idp.create_group("Engineering").await.unwrap();
    idp.add_members(&engineering.id, &ids[..4]).await.unwrap();
    // person10 is in scope only through a Group that is a member of the scope group.
    let contractors = idp.create_group("Contractors").await.unwrap();
    idp.add_members(&contractors.id, &ids[10..11])
        .await
        .unwrap();
    idp.add_members(&everyone.id, std::slice::from_ref(&contractors.id))
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let workspace = Sandbox::start(
        listener,
        SandboxOptions {
            token: "workspace-token".to_owned(),
            ..SandboxOptions::default()
        },
        WorkspaceSnapshot::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{url}\"\ntoken = \"{token}\"\n\
             page_size = 5\nmax_concurrency = 2\nrequests_per_second = 0\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"workspace-token\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
             [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\n\
             role = \"Editor\"\n\n[safety]\nsettle = \"0s\"\n",
            workspace.base_url()
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(HashMap::new()),
    )
    .unwrap();
    crate::fixtures::assert_converges(&config).await;

    let after = workspace.snapshot();
    let provisioned: Vec<(&str, &str, Vec<String>)> = {
        let mut rows: Vec<_> = after
            .accounts
            .iter()
            .map(|a| {
                assert!(a.active, "{}", a.user_name);
                (
                    a.user_name.as_str(),
                    a.external_id.as_deref().unwrap_or_default(),
                    a.roles.clone(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let mut expected: Vec<(String, String, Vec<String>)> = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
        .iter()
        .map(|&n| {
            let role = if n < 4 { "Editor" } else { "Viewer" };
            (
                format!("person{n}@example.com"),
                ids[n].clone(),
                vec![role.to_owned()],
            )
        })
        .collect();
    expected.sort();
    assert_eq!(
        provisioned,
        expected
            .iter()
            .map(|(u, e, r)| (u.as_str(), e.as_str(), r.clone()))
            .collect::<Vec<_>>(),
        "in scope (directly or through a nested Group) and active: provisioned, keyed \
         by scim2-server's ids; the inactive one and the one out of scope: not"
    );
    let group = after
        .groups
        .iter()
        .find(|g| g.display_name == "Engineering")
        .unwrap();
    assert_eq!(group.members.len(), 4);
    workspace.shutdown().await;
}

fn cursor_server() -> String {
    std::env::var("SEATWARDEN_SCIM2_CURSOR_SERVER_URL")
        .unwrap_or_else(|_| {
            panic!(
                "SEATWARDEN_SCIM2_CURSOR_SERVER_URL is not set: run the interop suite with \
                 `bash scripts/interop.sh`, which starts a scim2-server that pages by cursor only"
            )
        })
        .trim_end_matches('/')
        .to_owned()
}

/// scim2-server configured to page by cursor only (RFC 9865): it refuses
/// `startIndex` with 501 and seals its cursors to the query and the count. The
/// client learns that from /ServiceProviderConfig; a whole reconcile then lists,
/// matches and verifies by cursor and converges.
#[tokio::test]
#[ignore = "needs scim2-server: run `bash scripts/interop.sh`"]
async fn interop_scim2_server_paging_by_cursor_only_converges() {
    let (_, token) = server();
    let url = tenant_url(&cursor_server(), "cursor");
    let workspace = client(&url, &token);
    workspace.discover().await.unwrap();
    assert_eq!(
        workspace.listing_concurrency(),
        1,
        "the server announces cursor paging only"
    );

    let data = synth::generate(&SynthSpec {
        people: 300,
        groups: 6,
        drift_percent: 10.0,
        seed: 11,
    });
    seed_tenant(&workspace, &data).await;
    let listed = workspace.snapshot(&|_| {}).await.unwrap();
    assert_eq!(
        listed.accounts.len(),
        data.workspace.accounts.len(),
        "pages of 100 by cursor list every account once"
    );
    // Not told by discovery, the client meets a 501 for `startIndex`, asks
    // without paging parameters, and follows the cursor the answer carries.
    let undiscovered = client(&url, &token).snapshot(&|_| {}).await.unwrap();
    assert_eq!(undiscovered.accounts.len(), listed.accounts.len());

    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config(dir.path(), &data, url.as_ref(), &token, 4);
    crate::fixtures::assert_converges(&config).await;

    let after = workspace.snapshot(&|_| {}).await.unwrap();
    crate::fixtures::assert_leavers_inactive(&data, &after);
    // Filtered reads page by cursor too: the server refuses `startIndex` there as well.
    let some = &after.accounts[0];
    let found = workspace
        .find_account_by_user_name(&some.user_name)
        .await
        .unwrap();
    assert_eq!(found.as_ref().map(|a| &a.id), Some(&some.id));
}

/// A chain of renames (Bob gives up `bob@`, Cy takes it and gives up `cy@`, Dan
/// takes that, and Eve, new, is given Dan's old `dan@`) made in one run against
/// scim2-server: each link after the one it waits on.
#[tokio::test]
#[ignore = "needs scim2-server: run `bash scripts/interop.sh`"]
async fn interop_a_chain_of_renames_converges_against_scim2_server() {
    let (base, token) = server();
    let url = tenant_url(&base, "rename-chain");
    let workspace = client(&url, &token);
    workspace.discover().await.unwrap();
    for who in ["bob", "cy", "dan"] {
        workspace
            .create_account(&AccountSpec {
                user_name: format!("{who}@example.com"),
                external_id: format!("p-{who}"),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                role: None,
            })
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<serde_json::Value> = [
        ("p-bob", "robert"),
        ("p-cy", "bob"),
        ("p-dan", "cy"),
        ("p-eve", "dan"),
    ]
    .iter()
    .map(|(id, user)| {
        serde_json::json!({
            "id": id, "userName": format!("{user}@example.com"),
            "email": format!("{user}@example.com"), "status": "ACTIVE", "groups": []
        })
    })
    .collect();
    std::fs::write(
        dir.path().join("directory.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{token}\"\nmax_concurrency = 4\n\n\
             [safety]\nsettle = \"0s\"\nmax_renames = 10\nmax_rename_percent = 100.0\n"
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let outcome = crate::fixtures::assert_converges(&config).await;
    assert_eq!(
        outcome.plan.runnable().filter(|a| a.kind.renames()).count(),
        3
    );
    let mut accounts: Vec<(String, Option<String>)> = workspace
        .snapshot(&|_| {})
        .await
        .unwrap()
        .accounts
        .into_iter()
        .map(|a| (a.user_name, a.external_id))
        .collect();
    accounts.sort();
    let expected: Vec<(String, Option<String>)> = [
        ("bob", "p-cy"),
        ("cy", "p-dan"),
        ("dan", "p-eve"),
        ("robert", "p-bob"),
    ]
    .iter()
    .map(|(user, id)| (format!("{user}@example.com"), Some((*id).to_owned())))
    .collect();
    assert_eq!(accounts, expected);
}

/// `check-config --connect` against scim2-server as the directory: every Group is
/// listed through its pages (`attributes=displayName`, two a page, so four
/// pages), and the one named like the scope group but for a no-break space is
/// warned of, the real one and the unrelated ones not.
#[tokio::test]
#[ignore = "needs scim2-server: run `bash scripts/interop.sh`"]
async fn interop_scim2_server_groups_are_listed_for_look_alikes() {
    let (base, token) = server();
    let url = tenant_url(&base, "look-alikes");
    let idp = client(&url, &token);
    idp.discover().await.unwrap();
    let names = [
        "Taskade Users",
        "Taskade\u{a0}Users",
        "Engineering",
        "Design",
        "Sales",
        "Support",
        "Finance",
    ];
    for name in names {
        idp.create_group(name).await.unwrap();
    }
    let workspace =
        crate::fixtures::sandbox(crate::review_s57_dirnames::SCIM_TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::review_s57_dirnames::config_with(
        dir.path(),
        workspace.base_url().as_str(),
        &format!(
            "kind = \"scim\"\nurl = \"{url}\"\ntoken = \"{token}\"\npage_size = 2\n\
             max_concurrency = 2\nrequests_per_second = 0\n"
        ),
        "",
    );
    let listed = config
        .directory()
        .group_names(&|_| {})
        .await
        .unwrap()
        .unwrap();
    assert!(listed.whole, "the listing reached totalResults");
    let mut listed = listed.names;
    listed.sort();
    let mut expected = names.map(str::to_owned).to_vec();
    expected.sort();
    assert_eq!(listed, expected, "every page of scim2-server's Groups");

    let checks = seatwarden::connect::check(&config).await;
    workspace.shutdown().await;
    let checked = checks.iter().find(|c| c.side == "directory").unwrap();
    assert!(checked.passed(), "{}", checked.line());
    assert_eq!(checked.warnings.len(), 1, "{:#?}", checked.warnings);
    assert!(
        checked.warnings[0].contains("(policy.scope_groups)")
            && checked.warnings[0].contains("U+00A0"),
        "{:?}",
        checked.warnings
    );
}
