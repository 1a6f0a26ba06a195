//! Session 47: the access-review export as an IT/security engineer running an
//! access review meets it: written to a file of its own (`--output`), and an
//! account seatwarden deleted or deactivated after the newest snapshot was read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Utc};
use seatwarden::config::Config;
use seatwarden::model::{
    Account, Action, ActionKind, DirectorySnapshot, DriftKind, Identity, IdentityStatus,
    LinkMethod, NewLink, Plan, WorkspaceSnapshot,
};
use seatwarden::store::{RunKind, RunStatus, Store};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn config(dir: &std::path::Path) -> Config {
    std::fs::write(dir.join("directory.json"), "{\"users\": []}").unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
         [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n",
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

fn person(id: &str, status: IdentityStatus) -> Identity {
    Identity {
        id: id.into(),
        user_name: format!("{id}@example.com"),
        email: None,
        given_name: None,
        family_name: None,
        display_name: None,
        status,
        department: None,
        groups: vec![],
    }
}

fn account(id: &str, user: &str, active: bool) -> Account {
    Account {
        id: id.into(),
        user_name: format!("{user}@example.com"),
        external_id: Some(user.into()),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active,
        roles: vec!["Viewer".into()],
    }
}

fn action(seq: u32, kind: ActionKind, identity: &str) -> Action {
    Action {
        seq,
        kind,
        reason: DriftKind::StaleAccess,
        subject: format!("{identity}@example.com"),
        identity_id: Some(identity.into()),
        detail: String::new(),
        held: None,
    }
}

/// A plan run read the workspace at 08:00: `gone`'s account a1 deactivated,
/// `left`'s a2 active, `stays`' a3 active. At 09:30 a later run (no snapshots
/// of its own: the daemon's sweep, an approval) deleted a1, its retention
/// passed, and deactivated a2; the delete took a1's link with it, as it does.
/// The export must not show a1 as an account that still exists (unlinked, so
/// matched again or called orphaned), and says of both what seatwarden did
/// since the snapshot, and when.
#[test]
fn an_account_seatwarden_deleted_or_deactivated_since_the_snapshot_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let t0 = at("2026-11-29T08:00:00Z");
    let t1 = at("2026-11-29T09:30:00Z");
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Plan, t0).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: vec![
                    person("gone", IdentityStatus::Deprovisioned),
                    person("left", IdentityStatus::Active),
                    person("stays", IdentityStatus::Active),
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
                    account("a2", "left", true),
                    account("a3", "stays", true),
                ],
                groups: vec![],
            },
        )
        .unwrap();
    store
        .finish_run(run, t0, RunStatus::Succeeded, None)
        .unwrap();
    let link = |identity: &str, account: &str| NewLink {
        identity_id: identity.into(),
        account_id: account.into(),
        method: LinkMethod::ExternalId,
    };
    store
        .upsert_links(
            &[link("gone", "a1"), link("left", "a2"), link("stays", "a3")],
            t0,
        )
        .unwrap();

    let later = store.begin_run(RunKind::Sweep, t1).unwrap();
    let plan = Plan {
        actions: vec![
            action(
                0,
                ActionKind::Delete {
                    account_id: "a1".into(),
                    deactivated_since: Some(t0),
                    frees_user_name: None,
                },
                "gone",
            ),
            action(
                1,
                ActionKind::Deactivate {
                    account_id: "a2".into(),
                },
                "left",
            ),
        ],
        ..Plan::default()
    };
    store.save_plan(later, &plan, t1).unwrap();
    for seq in [0, 1] {
        store.mark_in_flight(later, seq, t1).unwrap();
        store.mark_applied(later, seq, t1, None).unwrap();
    }
    store.remove_links_to_accounts(&["a1".into()]).unwrap();
    store
        .finish_run(later, t1, RunStatus::Succeeded, None)
        .unwrap();

    let export = seatwarden::export::access(&store, &config).unwrap();
    let row = |id: &str| {
        export
            .accounts
            .iter()
            .find(|r| r.account_id == id)
            .unwrap_or_else(|| panic!("no row for {id}: {export:#?}"))
    };
    let deleted = row("a1");
    assert!(!deleted.active);
    assert_eq!(deleted.identity_id.as_deref(), Some("gone"), "{deleted:#?}");
    assert_eq!(
        deleted.justification,
        format!(
            "deleted by seatwarden (run {later}) after run {run} read the workspace: \
             the account is gone, no access"
        )
    );
    assert_eq!(
        deleted.since_snapshot.as_deref(),
        Some(format!("deleted 2026-11-29T09:30:00+00:00 (run {later})").as_str())
    );
    let deactivated = row("a2");
    assert!(!deactivated.active);
    assert_eq!(
        deactivated.since_snapshot.as_deref(),
        Some(format!("deactivated 2026-11-29T09:30:00+00:00 (run {later})").as_str())
    );
    assert_eq!(row("a3").since_snapshot, None);

    let csv = export.to_csv().unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = headers.iter().position(|h| h == "since_snapshot").unwrap();
    let cells: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[column].to_owned())
        })
        .collect();
    assert_eq!(
        cells,
        [
            (
                "a1".to_owned(),
                format!("deleted 2026-11-29T09:30:00+00:00 (run {later})")
            ),
            (
                "a2".to_owned(),
                format!("deactivated 2026-11-29T09:30:00+00:00 (run {later})")
            ),
            ("a3".to_owned(), String::new()),
        ]
    );
}
