//! Findings of the review of session 34's changes, each pinned by a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{TimeZone, Utc};
use seatwarden::config::Config;
use seatwarden::model::{
    Account, DirectorySnapshot, Identity, IdentityStatus, LinkMethod, NewLink, WorkspaceSnapshot,
};
use seatwarden::store::{RunKind, RunStatus, Store};

/// A directory snapshot stored before group names were composed (NFC) on reading
/// keeps a macOS export's `e` + U+0301. The configuration's names are composed
/// at load now, so what reads stored snapshots (the access review, `explain`,
/// `approve`'s check for people back) would find the mapping applying to no one
/// until the next reconcile stored a new snapshot: a stored snapshot loads
/// composed, as a fresh read is.
#[test]
fn a_snapshot_stored_with_decomposed_group_names_is_compared_composed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), r#"{"users": []}"#).unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t0ken\"\n\n\
         [state]\npath = \"state.db\"\n\n\
         [policy]\ndefault_role = \"Viewer\"\n\n\
         [[policy.mapping]]\ngroup = \"Caf\u{e9} Team\"\nworkspace_group = \"Cafe\"\nrole = \"Editor\"\n",
    )
    .unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let at = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, at).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: vec![Identity {
                    id: "00u1".into(),
                    user_name: "ada@example.com".into(),
                    email: Some("ada@example.com".into()),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    status: IdentityStatus::Active,
                    department: None,
                    groups: vec!["Cafe\u{301} Team".into()],
                }],
                complete: true,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &WorkspaceSnapshot {
                accounts: vec![Account {
                    id: "a1".into(),
                    user_name: "ada@example.com".into(),
                    external_id: Some("00u1".into()),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: Some("ada@example.com".into()),
                    active: true,
                    roles: vec!["Editor".into()],
                }],
                groups: Vec::new(),
            },
        )
        .unwrap();
    store
        .upsert_links(
            &[NewLink {
                identity_id: "00u1".into(),
                account_id: "a1".into(),
                method: LinkMethod::ExternalId,
            }],
            at,
        )
        .unwrap();
    store
        .finish_run(run, at, RunStatus::Succeeded, None)
        .unwrap();

    let loaded = store.load_directory_snapshot(run).unwrap().unwrap();
    assert_eq!(loaded.identities[0].groups, ["Caf\u{e9} Team"]);
    let export = seatwarden::export::access(&store, &config).unwrap();
    let ada = export
        .accounts
        .iter()
        .find(|row| row.account_id == "a1")
        .unwrap();
    assert_eq!(ada.justification, "Caf\u{e9} Team → Cafe as Editor");
}
