#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::model::{
    Account, AccountSpec, ActionKind, DirectorySnapshot, DriftItem, DriftKind, HoldReason,
    Identity, IdentityStatus, Plan, Role, WorkspaceGroup, WorkspaceSnapshot,
};

fn t(secs: i64) -> DateTime<Utc> {
    // A nanosecond fraction checks that timestamps round-trip exactly.
    Utc.timestamp_opt(1_790_000_000 + secs, 123_456_789)
        .unwrap()
}

fn identity(i: usize, status: IdentityStatus, groups: &[&str]) -> Identity {
    Identity {
        id: format!("00u{i}"),
        user_name: format!("user{i}@example.com"),
        email: Some(format!("user{i}@example.com")),
        given_name: Some(format!("Given{i}")),
        family_name: Some("Family".into()),
        display_name: Some(format!("User {i}")),
        status,
        department: Some("Engineering".into()),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn bare_identity(id: &str) -> Identity {
    Identity {
        id: id.into(),
        user_name: id.into(),
        email: None,
        given_name: None,
        family_name: None,
        display_name: None,
        status: IdentityStatus::Suspended,
        department: None,
        groups: vec![],
    }
}

fn account(i: usize) -> Account {
    Account {
        id: format!("acc-{i:06}"),
        user_name: format!("user{i}@example.com"),
        external_id: (!i.is_multiple_of(3)).then(|| format!("00u{i}")),
        given_name: (!i.is_multiple_of(5)).then(|| format!("Given{i}")),
        family_name: (!i.is_multiple_of(7)).then(|| "Family".to_owned()),
        display_name: (i.is_multiple_of(2)).then(|| format!("User {i} \"quoted\" ünïcode")),
        email: (!i.is_multiple_of(11)).then(|| format!("user{i}@example.com")),
        active: !i.is_multiple_of(4),
        roles: match i % 3 {
            0 => vec![],
            1 => vec!["Editor".into()],
            _ => vec!["Viewer".into(), "Owner".into()],
        },
    }
}

fn workspace(accounts: usize, groups: usize, per_group: usize) -> WorkspaceSnapshot {
    WorkspaceSnapshot {
        accounts: (0..accounts).map(account).collect(),
        groups: (0..groups)
            .map(|g| WorkspaceGroup {
                id: format!("grp-{g}"),
                display_name: format!("Group {g}"),
                members: (0..per_group)
                    .map(|m| format!("acc-{:06}", (g * 7 + m * 13) % accounts.max(1)))
                    .collect(),
            })
            .collect(),
    }
}

fn action(seq: u32, kind: ActionKind, held: Option<HoldReason>) -> Action {
    Action {
        seq,
        kind,
        reason: DriftKind::StaleAccess,
        subject: format!("person{seq}"),
        identity_id: Some(format!("00u{seq}")),
        detail: "identity is deprovisioned in the directory".into(),
        held,
    }
}

fn sample_plan() -> Plan {
    Plan {
        actions: vec![
            action(
                0,
                ActionKind::Deactivate {
                    account_id: "a0".into(),
                },
                None,
            ),
            action(
                1,
                ActionKind::Deactivate {
                    account_id: "a1".into(),
                },
                Some(HoldReason::DeprovisionThreshold {
                    planned: 2,
                    limit: 1,
                    managed: 10,
                }),
            ),
            action(
                2,
                ActionKind::CreateAccount {
                    identity_id: "00u2".into(),
                    spec: AccountSpec {
                        user_name: "p2@example.com".into(),
                        external_id: "00u2".into(),
                        given_name: None,
                        family_name: Some("Two".into()),
                        display_name: None,
                        email: Some("p2@example.com".into()),
                        role: Some(Role::Editor),
                    },
                },
                None,
            ),
            action(
                3,
                ActionKind::CreateGroup {
                    display_name: "Design".into(),
                },
                Some(HoldReason::LastOwner),
            ),
        ],
        drift: vec![
            DriftItem {
                kind: DriftKind::StaleAccess,
                identity_id: Some("00u0".into()),
                account_id: Some("a0".into()),
                user_name: "p0".into(),
                detail: "gone".into(),
                conflict: None,
            },
            DriftItem {
                kind: DriftKind::DisputedMatch,
                identity_id: None,
                account_id: None,
                user_name: "ghost".into(),
                detail: "two candidates".into(),
                conflict: None,
            },
        ],
        new_links: vec![],
        retained: vec![],
        disputed_leavers: vec![],
        protected_by_person: vec![],
        excepted: vec![],
        protected_leavers: vec![],
        disputed_candidates: vec![],
    }
}

fn states(store: &Store, run: RunId) -> Vec<(u32, ActionState, u32)> {
    store
        .journal(run)
        .unwrap()
        .into_iter()
        .map(|e| (e.action.seq, e.state, e.attempts))
        .collect()
}

// ---- open / migrations --------------------------------------------------------

#[test]
fn file_database_uses_wal_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let run = {
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
        store.check_writable().unwrap();
        store.begin_run(RunKind::Reconcile, t(0)).unwrap()
    };
    // Opening again runs no migration twice (a second CREATE TABLE would fail) and
    // keeps the data.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    assert_eq!(store.run(run).unwrap().unwrap().kind, RunKind::Reconcile);

    let other = rusqlite::Connection::open(&path).unwrap();
    let mode: String = other
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: bool = store
        .conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert!(fk);
    let sync: i64 = store
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    // FULL: a journal row committed in flight survives a power loss.
    assert_eq!(sync, 2, "synchronous=FULL");
}

#[test]
fn database_from_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(Store::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", migrations::LATEST + 1)
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, supported, .. }
            if found == migrations::LATEST + 1 && supported == migrations::LATEST),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("future.db"), "{message}");
    assert!(message.contains("newer than this binary"), "{message}");
    assert!(!err.is_transient());
}

#[test]
fn an_empty_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, "").unwrap();
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    store.begin_run(RunKind::Plan, t(0)).unwrap();
}

/// Another program's database (tables, no schema version) is refused and left
/// as it was: no seatwarden tables beside its own, its mode unchanged.
#[test]
fn another_programs_database_is_refused_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (x INTEGER); CREATE TABLE customers (y TEXT);")
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err(err) = Store::open(&path) else {
        panic!("another program's database must be refused")
    };
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Foreign { .. })
            && text.contains("customers, invoices")
            && text.contains("not a seatwarden state database"),
        "{text}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 2);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn in_memory_store_has_no_path_and_is_migrated() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.path(), None);
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    store.check_writable().unwrap();
}

#[test]
fn a_held_write_lock_is_a_transient_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let mut store = Store::open(&path).unwrap();
    store.conn.busy_timeout(Duration::from_millis(20)).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let err = store.check_writable().unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("busy.db"), "{err}");
    let err = store.begin_run(RunKind::Plan, t(0)).unwrap_err();
    assert!(err.is_transient(), "{err:?}");

    other.execute_batch("ROLLBACK").unwrap();
    store.check_writable().unwrap();
    store.begin_run(RunKind::Plan, t(0)).unwrap();
}

#[test]
fn the_probe_counts_a_busy_writer_as_writable_and_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = Store::open(&path).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    store.probe_writable().unwrap();
    other.execute_batch("ROLLBACK").unwrap();
    store.probe_writable().unwrap();
    // The connection's own busy timeout is back for everything else.
    let timeout: i64 = store
        .conn
        .pragma_query_value(None, "busy_timeout", |row| row.get(0))
        .unwrap();
    assert_eq!(timeout, BUSY_TIMEOUT.as_millis() as i64);
}

#[test]
fn a_read_only_database_is_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    drop(Store::open(&path).unwrap());
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let store = Store {
        conn,
        path: Some(path.clone()),
    };
    let err = store.check_writable().unwrap_err();
    assert!(err.to_string().contains("ro.db"), "{err}");
    assert!(!err.is_transient());
    assert!(store.probe_writable().is_err());
}

// ---- runs ---------------------------------------------------------------------

#[test]
fn runs_start_running_and_finish_once() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::DryRun, t(0)).unwrap();
    let record = store.run(run).unwrap().unwrap();
    assert_eq!(
        record,
        RunRecord {
            id: run,
            kind: RunKind::DryRun,
            status: RunStatus::Running,
            started_at: t(0),
            finished_at: None,
            error: None,
        }
    );
    store
        .finish_run(run, t(5), RunStatus::Failed, Some("directory unreachable"))
        .unwrap();
    let record = store.run(run).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.finished_at, Some(t(5)));
    assert_eq!(record.error.as_deref(), Some("directory unreachable"));

    let err = store
        .finish_run(run, t(6), RunStatus::Succeeded, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::RunNotRunning {
                status: RunStatus::Failed,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .finish_run(run + 100, t(6), RunStatus::Succeeded, None)
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("run {}", run + 100)),
        "{err}"
    );
    let other = store.begin_run(RunKind::Plan, t(7)).unwrap();
    assert!(matches!(
        store.finish_run(other, t(8), RunStatus::Running, None),
        Err(StoreError::FinalStatusRequired { .. })
    ));
    assert_eq!(store.run(run + 100).unwrap(), None);
}

#[test]
fn latest_run_filters_by_kind() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.latest_run(&[]).unwrap(), None);
    let r1 = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let r2 = store.begin_run(RunKind::Plan, t(1)).unwrap();
    let r3 = store.begin_run(RunKind::DryRun, t(2)).unwrap();
    let r4 = store.begin_run(RunKind::Reconcile, t(3)).unwrap();
    let r5 = store.begin_run(RunKind::Plan, t(4)).unwrap();
    assert!(r1 < r2 && r2 < r3 && r3 < r4 && r4 < r5);
    let id = |kinds: &[RunKind]| store.latest_run(kinds).unwrap().map(|r| r.id);
    assert_eq!(id(&[]), Some(r5));
    assert_eq!(id(&[RunKind::Reconcile]), Some(r4));
    assert_eq!(id(&[RunKind::DryRun]), Some(r3));
    assert_eq!(id(&[RunKind::DryRun, RunKind::Reconcile]), Some(r4));
    assert_eq!(
        id(&[RunKind::Reconcile, RunKind::DryRun, RunKind::Reconcile]),
        Some(r4)
    );
    assert_eq!(id(&[RunKind::Plan, RunKind::DryRun]), Some(r5));
    let latest = store.latest_run(&[RunKind::DryRun]).unwrap().unwrap();
    assert_eq!(latest.kind, RunKind::DryRun);
    assert_eq!(latest.started_at, t(2));
}

#[test]
fn run_ids_are_not_reused_after_pruning() {
    let mut store = Store::open_in_memory().unwrap();
    let r1 = store.begin_run(RunKind::Plan, t(0)).unwrap();
    store.conn.execute("DELETE FROM runs", []).unwrap();
    let r2 = store.begin_run(RunKind::Plan, t(1)).unwrap();
    assert!(r2 > r1);
}

// ---- snapshots ----------------------------------------------------------------

#[test]
fn directory_snapshot_round_trips_exactly() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    assert_eq!(store.load_directory_snapshot(run).unwrap(), None);

    let snapshot = DirectorySnapshot {
        identities: vec![
            identity(1, IdentityStatus::Active, &["Engineering", "All Staff"]),
            bare_identity("00u-bare"),
            identity(2, IdentityStatus::Deprovisioned, &[]),
            identity(
                3,
                IdentityStatus::Active,
                &["All Staff", "Design", "Engineering"],
            ),
            // The same id twice: stored as the source said it.
            bare_identity("00u-bare"),
        ],
        complete: false,
    };
    store.save_directory_snapshot(run, &snapshot).unwrap();
    assert_eq!(store.load_directory_snapshot(run).unwrap(), Some(snapshot));

    // Saving again replaces, including the complete flag.
    let second = DirectorySnapshot {
        identities: vec![identity(9, IdentityStatus::Suspended, &["Ops"])],
        complete: true,
    };
    store.save_directory_snapshot(run, &second).unwrap();
    assert_eq!(store.load_directory_snapshot(run).unwrap(), Some(second));

    // An empty snapshot is a snapshot, not an absence.
    let other = store.begin_run(RunKind::Reconcile, t(1)).unwrap();
    let empty = DirectorySnapshot {
        identities: vec![],
        complete: true,
    };
    store.save_directory_snapshot(other, &empty).unwrap();
    assert_eq!(store.load_directory_snapshot(other).unwrap(), Some(empty));
    // Snapshots of different runs do not mix.
    assert_eq!(
        store
            .load_directory_snapshot(run)
            .unwrap()
            .unwrap()
            .identities
            .len(),
        1
    );
}

#[test]
fn workspace_snapshot_of_1000_accounts_round_trips_exactly() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    assert_eq!(store.load_workspace_snapshot(run).unwrap(), None);
    let mut snapshot = workspace(1000, 40, 25);
    snapshot.groups.push(WorkspaceGroup {
        id: "grp-empty".into(),
        display_name: "Nobody".into(),
        members: vec![],
    });
    // Members not among the accounts (the source said so) are kept.
    snapshot.groups[0].members.push("acc-missing".into());
    store.save_workspace_snapshot(run, &snapshot).unwrap();
    let loaded = store.load_workspace_snapshot(run).unwrap().unwrap();
    assert_eq!(loaded.accounts.len(), 1000);
    assert_eq!(loaded, snapshot);

    let empty_run = store.begin_run(RunKind::Reconcile, t(1)).unwrap();
    store
        .save_workspace_snapshot(empty_run, &WorkspaceSnapshot::default())
        .unwrap();
    assert_eq!(
        store.load_workspace_snapshot(empty_run).unwrap(),
        Some(WorkspaceSnapshot::default())
    );
    // Re-saving replaces rather than appends.
    let smaller = workspace(3, 1, 2);
    store.save_workspace_snapshot(run, &smaller).unwrap();
    assert_eq!(store.load_workspace_snapshot(run).unwrap(), Some(smaller));
}

#[test]
fn snapshots_for_unknown_runs_are_refused_with_the_run_named() {
    let mut store = Store::open_in_memory().unwrap();
    let err = store
        .save_workspace_snapshot(42, &workspace(2, 1, 1))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownRun { run: 42, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("run 42"), "{err}");
    let err = store
        .save_directory_snapshot(43, &DirectorySnapshot::default())
        .unwrap_err();
    assert!(err.to_string().contains("run 43"), "{err}");
    assert_eq!(store.load_workspace_snapshot(42).unwrap(), None);
    assert_eq!(store.load_directory_snapshot(43).unwrap(), None);
}

#[test]
fn deleting_a_run_cascades_to_everything_keyed_by_it() {
    let mut store = Store::open_in_memory().unwrap();
    let old = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let new = store.begin_run(RunKind::Reconcile, t(1)).unwrap();
    for run in [old, new] {
        store
            .save_directory_snapshot(
                run,
                &DirectorySnapshot {
                    identities: vec![identity(1, IdentityStatus::Active, &["G"])],
                    complete: true,
                },
            )
            .unwrap();
        store
            .save_workspace_snapshot(run, &workspace(5, 2, 2))
            .unwrap();
        store.save_plan(run, &sample_plan(), t(2)).unwrap();
        store.save_report(run, "{}").unwrap();
    }
    store
        .conn
        .execute("DELETE FROM runs WHERE id = ?1", [old])
        .unwrap();
    for table in [
        "directory_snapshots",
        "workspace_snapshots",
        "actions",
        "plan_drift",
        "reports",
    ] {
        let left: i64 = store
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE run_id = ?1"),
                [old],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "{table}");
        let kept: i64 = store
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE run_id = ?1"),
                [new],
                |r| r.get(0),
            )
            .unwrap();
        assert!(kept > 0, "{table}");
    }
}

// ---- links --------------------------------------------------------------------

fn new_link(identity: &str, account: &str, method: LinkMethod) -> NewLink {
    NewLink {
        identity_id: identity.into(),
        account_id: account.into(),
        method,
    }
}

fn link_pairs(store: &Store) -> Vec<(String, String, LinkMethod, DateTime<Utc>)> {
    store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id, l.method, l.linked_at))
        .collect()
}

#[test]
fn upserting_a_link_to_a_linked_account_replaces_the_old_link() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .upsert_links(
            &[
                new_link("i1", "a1", LinkMethod::ExternalId),
                new_link("i2", "a2", LinkMethod::Email),
            ],
            t(0),
        )
        .unwrap();
    // i3 now claims a1: i1's link to a1 goes. i2 is re-stated: keeps method and time.
    store
        .upsert_links(
            &[
                new_link("i3", "a1", LinkMethod::Created),
                new_link("i2", "a2", LinkMethod::UserName),
            ],
            t(10),
        )
        .unwrap();
    assert_eq!(
        link_pairs(&store),
        vec![
            ("i2".into(), "a2".into(), LinkMethod::Email, t(0)),
            ("i3".into(), "a1".into(), LinkMethod::Created, t(10)),
        ]
    );
    // An identity moving to another account replaces its own link.
    store
        .upsert_links(&[new_link("i2", "a9", LinkMethod::Adopted)], t(20))
        .unwrap();
    assert_eq!(
        link_pairs(&store),
        vec![
            ("i2".into(), "a9".into(), LinkMethod::Adopted, t(20)),
            ("i3".into(), "a1".into(), LinkMethod::Created, t(10)),
        ]
    );
    // Swapping two accounts within one batch works (no UNIQUE failure midway).
    store
        .upsert_links(
            &[
                new_link("i2", "a1", LinkMethod::UserName),
                new_link("i3", "a9", LinkMethod::UserName),
            ],
            t(30),
        )
        .unwrap();
    assert_eq!(
        link_pairs(&store),
        vec![
            ("i2".into(), "a1".into(), LinkMethod::UserName, t(30)),
            ("i3".into(), "a9".into(), LinkMethod::UserName, t(30)),
        ]
    );
}

#[test]
fn links_to_deleted_accounts_are_removed() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .upsert_links(
            &[
                new_link("i1", "a1", LinkMethod::ExternalId),
                new_link("i2", "a2", LinkMethod::ExternalId),
                new_link("i3", "a3", LinkMethod::ExternalId),
            ],
            t(0),
        )
        .unwrap();
    store
        .remove_links_to_accounts(&["a1".into(), "a3".into(), "unknown".into()])
        .unwrap();
    let left: Vec<_> = store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.identity_id)
        .collect();
    assert_eq!(left, vec!["i2".to_owned()]);
    store.remove_links_to_accounts(&[]).unwrap();
    store.upsert_links(&[], t(1)).unwrap();
    assert_eq!(store.links().unwrap().len(), 1);
}

// ---- plans and the journal ----------------------------------------------------

#[test]
fn saved_plan_journals_held_and_planned_actions_in_seq_order() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let mut plan = sample_plan();
    // Journal order is seq order, whatever order the actions came in.
    plan.actions.reverse();
    store.save_plan(run, &plan, t(1)).unwrap();
    plan.actions.reverse();

    let journal = store.journal(run).unwrap();
    let actions: Vec<Action> = journal.iter().map(|e| e.action.clone()).collect();
    assert_eq!(actions, plan.actions);
    assert_eq!(
        states(&store, run),
        vec![
            (0, ActionState::Planned, 0),
            (1, ActionState::Held, 0),
            (2, ActionState::Planned, 0),
            (3, ActionState::Held, 0),
        ]
    );
    assert!(
        journal
            .iter()
            .all(|e| e.run == run && e.updated_at == t(1) && e.last_error.is_none())
    );
    assert_eq!(store.drift(run).unwrap(), plan.drift);

    // Indexed columns carry the action's kind, reason and account.
    let (kind, reason, account): (String, String, Option<String>) = store
        .conn
        .query_row(
            "SELECT kind, reason, account_id FROM actions WHERE run_id = ?1 AND seq = 0",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (kind.as_str(), reason.as_str(), account.as_deref()),
        ("deactivate", "stale_access", Some("a0"))
    );

    let err = store.save_plan(run, &plan, t(2)).unwrap_err();
    assert!(matches!(err, StoreError::PlanExists { .. }), "{err:?}");
    assert_eq!(store.journal(run).unwrap().len(), 4);

    let err = store.save_plan(run + 1, &plan, t(2)).unwrap_err();
    assert!(matches!(err, StoreError::UnknownRun { .. }), "{err:?}");

    // An empty plan is fine and its journal is empty.
    let other = store.begin_run(RunKind::Plan, t(3)).unwrap();
    store.save_plan(other, &Plan::default(), t(3)).unwrap();
    assert!(store.journal(other).unwrap().is_empty());
    assert!(store.drift(other).unwrap().is_empty());
}

#[test]
fn duplicate_seqs_fail_the_whole_plan() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let mut plan = sample_plan();
    plan.actions[2].seq = 0;
    let err = store.save_plan(run, &plan, t(1)).unwrap_err();
    assert!(err.to_string().contains("actions"), "{err}");
    assert!(err.to_string().contains(&format!("run {run}")), "{err}");
    // One transaction: nothing was kept.
    assert!(store.journal(run).unwrap().is_empty());
    assert!(store.drift(run).unwrap().is_empty());
    store.save_plan(run, &sample_plan(), t(2)).unwrap();
}

#[test]
fn set_based_transitions_move_every_row_or_name_the_one_that_cannot() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store.save_plan(run, &sample_plan(), t(1)).unwrap();
    store.mark_in_flight(run, 2, t(1)).unwrap();
    store.mark_failed(run, 2, t(1), "503").unwrap();

    // A held row among them is named, as the one-row transition names it, and
    // inside a batch the row that could move did not.
    let err = store
        .batch(|s| s.mark_all_in_flight(run, &[0, 1], t(2)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                seq: 1,
                from: ActionState::Held,
                to: ActionState::InFlight,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(states(&store, run)[0], (0, ActionState::Planned, 0));

    // Planned and failed rows move together; each counts an attempt.
    store.mark_all_in_flight(run, &[0, 2], t(2)).unwrap();
    assert_eq!(
        states(&store, run),
        vec![
            (0, ActionState::InFlight, 1),
            (1, ActionState::Held, 0),
            (2, ActionState::InFlight, 2),
            (3, ActionState::Held, 0),
        ]
    );
    store.mark_all_applied(run, &[2, 0], t(3)).unwrap();
    let journal = store.journal(run).unwrap();
    assert_eq!(journal[0].state, ActionState::Applied);
    assert_eq!(journal[0].updated_at, t(3));
    assert_eq!(journal[2].state, ActionState::Applied);
    assert_eq!(journal[2].last_error.as_deref(), Some("503"));
    // Nothing to move is not an error.
    store.mark_all_applied(run, &[], t(3)).unwrap();

    // Applied twice: the already-applied row is the one named.
    let err = store.mark_all_applied(run, &[0], t(5)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                seq: 0,
                from: ActionState::Applied,
                to: ActionState::Applied,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store.mark_all_in_flight(run, &[99], t(5)).unwrap_err();
    assert!(
        matches!(err, StoreError::NoSuchAction { seq: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn state_transitions_count_attempts_and_keep_results() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store.save_plan(run, &sample_plan(), t(1)).unwrap();

    // Applying needs the journal to say in-flight first.
    let err = store.mark_applied(run, 2, t(2), None).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: ActionState::Planned,
                to: ActionState::Applied,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        store.mark_failed(run, 2, t(2), "x"),
        Err(StoreError::InvalidTransition {
            from: ActionState::Planned,
            ..
        })
    ));

    store.mark_in_flight(run, 2, t(2)).unwrap();
    store
        .mark_failed(run, 2, t(3), "503 Service Unavailable")
        .unwrap();
    store.mark_in_flight(run, 2, t(4)).unwrap();
    let created = json!({"account_id": "acc-new"});
    store.mark_applied(run, 2, t(5), Some(&created)).unwrap();

    let entry = store.journal(run).unwrap().remove(2);
    assert_eq!(entry.state, ActionState::Applied);
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.last_error.as_deref(), Some("503 Service Unavailable"));
    assert_eq!(entry.updated_at, t(5));
    assert_eq!(store.action_result(run, 2).unwrap(), Some(created));

    // Applied is final; held actions cannot start.
    let err = store.mark_in_flight(run, 2, t(6)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: ActionState::Applied,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store.mark_in_flight(run, 1, t(6)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: ActionState::Held,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("action 1 of run {run}")),
        "{err}"
    );

    // Resuming an in-flight action counts another attempt.
    store.mark_in_flight(run, 0, t(7)).unwrap();
    store.mark_in_flight(run, 0, t(8)).unwrap();
    store.mark_applied(run, 0, t(9), None).unwrap();
    assert_eq!(store.action_result(run, 0).unwrap(), None);

    assert_eq!(
        states(&store, run),
        vec![
            (0, ActionState::Applied, 2),
            (1, ActionState::Held, 0),
            (2, ActionState::Applied, 2),
            (3, ActionState::Held, 0),
        ]
    );

    // Rows that do not exist are errors naming the action, run and table.
    for err in [
        store.mark_in_flight(run, 99, t(10)).unwrap_err(),
        store.mark_applied(run, 99, t(10), None).unwrap_err(),
        store.mark_failed(run + 1, 0, t(10), "x").unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NoSuchAction { .. }), "{err:?}");
        assert!(err.to_string().contains("actions"), "{err}");
    }
    let err = store.action_result(run, 99).unwrap_err();
    assert!(
        err.to_string().contains(&format!("action 99 of run {run}")),
        "{err}"
    );
}

#[test]
fn interrupted_returns_only_in_flight_rows_across_runs_oldest_first() {
    let mut store = Store::open_in_memory().unwrap();
    let r1 = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let r2 = store.begin_run(RunKind::Reconcile, t(1)).unwrap();
    store.save_plan(r1, &sample_plan(), t(0)).unwrap();
    store.save_plan(r2, &sample_plan(), t(1)).unwrap();
    assert!(store.interrupted().unwrap().is_empty());

    // r2 first, to show the order is by run, not by update time.
    store.mark_in_flight(r2, 2, t(2)).unwrap();
    store.mark_in_flight(r2, 0, t(3)).unwrap();
    store.mark_in_flight(r1, 2, t(4)).unwrap();
    store.mark_in_flight(r1, 0, t(5)).unwrap();
    store.mark_applied(r1, 0, t(6), None).unwrap();
    store.mark_in_flight(r2, 0, t(7)).unwrap();
    store.mark_failed(r2, 0, t(8), "boom").unwrap();

    let interrupted: Vec<(RunId, u32, u32)> = store
        .interrupted()
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.state, ActionState::InFlight);
            (e.run, e.action.seq, e.attempts)
        })
        .collect();
    assert_eq!(interrupted, vec![(r1, 2, 1), (r2, 2, 1)]);
}

#[test]
fn journal_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let run = {
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
        store.save_plan(run, &sample_plan(), t(1)).unwrap();
        store.mark_in_flight(run, 0, t(2)).unwrap();
        run
        // dropped mid-apply: a crash
    };
    let store = Store::open(&path).unwrap();
    let interrupted = store.interrupted().unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].run, run);
    assert_eq!(interrupted[0].action, sample_plan().actions[0]);
}

#[test]
fn approving_releases_held_actions_for_applying() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store.save_plan(run, &sample_plan(), t(1)).unwrap();
    store.mark_in_flight(run, 0, t(2)).unwrap();
    assert_eq!(store.approve_held(run, t(3)).unwrap(), 2);
    assert_eq!(
        states(&store, run),
        vec![
            (0, ActionState::InFlight, 1),
            (1, ActionState::Planned, 0),
            (2, ActionState::Planned, 0),
            (3, ActionState::Planned, 0),
        ]
    );
    store.mark_in_flight(run, 1, t(4)).unwrap();
    assert_eq!(store.approve_held(run, t(5)).unwrap(), 0);
    assert!(matches!(
        store.approve_held(run + 1, t(5)),
        Err(StoreError::UnknownRun { .. })
    ));
}

#[test]
fn deprovisions_since_counts_recent_applied_or_in_flight_deactivations() {
    let mut store = Store::open_in_memory().unwrap();
    let r1 = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let r2 = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store.save_plan(r1, &sample_plan(), t(0)).unwrap();
    store.save_plan(r2, &sample_plan(), t(0)).unwrap();
    store.approve_held(r2, t(0)).unwrap();
    // r1: seq 0 deactivated long ago; r2: seq 0 applied recently, seq 1 in flight,
    // seq 2 (a create) applied recently: not a deprovision.
    store.mark_in_flight(r1, 0, t(10)).unwrap();
    store.mark_applied(r1, 0, t(11), None).unwrap();
    store.mark_in_flight(r2, 0, t(100)).unwrap();
    store.mark_applied(r2, 0, t(101), None).unwrap();
    store.mark_in_flight(r2, 1, t(102)).unwrap();
    store.mark_in_flight(r2, 2, t(103)).unwrap();
    store.mark_applied(r2, 2, t(104), None).unwrap();
    assert_eq!(store.deprovisions_since(t(50)).unwrap(), 2);
    assert_eq!(store.deprovisions_since(t(0)).unwrap(), 3);
    assert_eq!(store.deprovisions_since(t(102)).unwrap(), 1);
    store.mark_failed(r2, 1, t(105), "x").unwrap();
    assert_eq!(store.deprovisions_since(t(50)).unwrap(), 1);
}

/// A deletion after the retention period is counted as a deletion, never as a
/// deprovision (it would hold the day's deactivations), whichever way it went.
#[test]
fn deletions_after_retention_are_counted_apart_from_deprovisions() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let plan = Plan {
        actions: vec![
            action(
                0,
                ActionKind::Delete {
                    account_id: "a0".into(),
                    deactivated_since: Some(t(-86_400 * 31)),
                    frees_user_name: None,
                },
                None,
            ),
            action(
                1,
                ActionKind::Delete {
                    account_id: "a1".into(),
                    deactivated_since: None,
                    frees_user_name: None,
                },
                None,
            ),
            action(
                2,
                ActionKind::Deactivate {
                    account_id: "a2".into(),
                },
                None,
            ),
        ],
        ..Plan::default()
    };
    store.save_plan(run, &plan, t(0)).unwrap();
    for seq in 0..3 {
        store.mark_in_flight(run, seq, t(10)).unwrap();
    }
    store.mark_applied(run, 0, t(11), None).unwrap();
    assert_eq!(
        store.deprovisions_and_deletions_since(t(0)).unwrap(),
        (2, 1)
    );
    assert_eq!(store.deprovisions_since(t(0)).unwrap(), 2);
    let counts = store.recent_counts(t(0)).unwrap();
    assert_eq!((counts.deprovisions, counts.deletions), (2, 1));
}

#[test]
fn pruning_keeps_newer_runs_and_runs_with_actions_in_flight() {
    let mut store = Store::open_in_memory().unwrap();
    let r1 = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    let r2 = store.begin_run(RunKind::Reconcile, t(1)).unwrap();
    let r3 = store.begin_run(RunKind::Reconcile, t(2)).unwrap();
    let r4 = store.begin_run(RunKind::Reconcile, t(3)).unwrap();
    store.save_plan(r2, &sample_plan(), t(1)).unwrap();
    store.mark_in_flight(r2, 0, t(1)).unwrap();
    store
        .save_workspace_snapshot(r1, &workspace(3, 1, 1))
        .unwrap();
    assert_eq!(store.prune_runs_before(r4).unwrap(), 2);
    assert_eq!(store.run(r1).unwrap(), None);
    assert!(store.run(r2).unwrap().is_some());
    assert_eq!(store.run(r3).unwrap(), None);
    assert!(store.run(r4).unwrap().is_some());
    assert_eq!(store.load_workspace_snapshot(r1).unwrap(), None);
    assert_eq!(store.interrupted().unwrap().len(), 1);
}

// ---- reports ------------------------------------------------------------------

#[test]
fn reports_are_stored_replaced_and_loaded() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    assert_eq!(store.report(run).unwrap(), None);
    store.save_report(run, r#"{"held": 1}"#).unwrap();
    assert_eq!(
        store.report(run).unwrap().as_deref(),
        Some(r#"{"held": 1}"#)
    );
    store.save_report(run, r#"{"held": 0}"#).unwrap();
    assert_eq!(
        store.report(run).unwrap().as_deref(),
        Some(r#"{"held": 0}"#)
    );

    let err = store.save_report(run, "not json").unwrap_err();
    assert!(err.to_string().contains("reports"), "{err}");
    assert!(err.to_string().contains(&format!("run {run}")), "{err}");
    assert_eq!(
        store.report(run).unwrap().as_deref(),
        Some(r#"{"held": 0}"#)
    );

    let err = store.save_report(run + 1, "{}").unwrap_err();
    assert!(matches!(err, StoreError::UnknownRun { .. }), "{err:?}");
}

// ---- ingest timing (run by hand) ----------------------------------------------

/// `cargo test --release --lib store::tests::ingest_100k -- --ignored --nocapture`
#[test]
#[ignore = "timing; run by hand in release mode"]
fn ingest_100k_accounts_timing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("bench.db")).unwrap();
    // 100k accounts, 1,000 groups × 200 members = 200k memberships.
    let snapshot = workspace(100_000, 1000, 200);
    for round in 0..3 {
        let run = store.begin_run(RunKind::Reconcile, t(round)).unwrap();
        let start = std::time::Instant::now();
        store.save_workspace_snapshot(run, &snapshot).unwrap();
        let saved = start.elapsed();
        let start = std::time::Instant::now();
        let loaded = store.load_workspace_snapshot(run).unwrap().unwrap();
        let load = start.elapsed();
        assert_eq!(loaded.accounts.len(), 100_000);
        println!("round {round}: save {saved:?}, load {load:?}");
    }
    let accounts_only = WorkspaceSnapshot {
        accounts: snapshot.accounts.clone(),
        groups: vec![],
    };
    let run = store.begin_run(RunKind::Reconcile, t(9)).unwrap();
    let start = std::time::Instant::now();
    store.save_workspace_snapshot(run, &accounts_only).unwrap();
    println!("accounts only: save {:?}", start.elapsed());

    let directory = DirectorySnapshot {
        identities: (0..100_000)
            .map(|i| identity(i, IdentityStatus::Active, &["All Staff", "Engineering"]))
            .collect(),
        complete: true,
    };
    let start = std::time::Instant::now();
    store.save_directory_snapshot(run, &directory).unwrap();
    println!(
        "directory 100k identities + 200k memberships: save {:?}",
        start.elapsed()
    );
}

/// Compares the layout chosen for snapshot tables (WITHOUT ROWID, key (run_id, pos))
/// with a rowid table plus an index on (run_id, pos), for 100k accounts.
/// `cargo test --release --lib store::tests::layout -- --ignored --nocapture`
#[test]
#[ignore = "timing; run by hand in release mode"]
fn layout_timing_rowid_vs_without_rowid() {
    let accounts: Vec<Account> = (0..100_000).map(account).collect();
    for (name, ddl) in [
        (
            "WITHOUT ROWID, PRIMARY KEY (run_id, pos)",
            "CREATE TABLE a (run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
               pos INTEGER NOT NULL, id TEXT NOT NULL, user_name TEXT NOT NULL,
               external_id TEXT, given_name TEXT, family_name TEXT, display_name TEXT,
               email TEXT, active INTEGER NOT NULL, roles TEXT NOT NULL,
               PRIMARY KEY (run_id, pos)) STRICT, WITHOUT ROWID",
        ),
        (
            "rowid table + index (run_id, pos)",
            "CREATE TABLE a (run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
               pos INTEGER NOT NULL, id TEXT NOT NULL, user_name TEXT NOT NULL,
               external_id TEXT, given_name TEXT, family_name TEXT, display_name TEXT,
               email TEXT, active INTEGER NOT NULL, roles TEXT NOT NULL) STRICT;
             CREATE INDEX a_run ON a (run_id, pos)",
        ),
        (
            "WITHOUT ROWID + UNIQUE (run_id, id)",
            "CREATE TABLE a (run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
               pos INTEGER NOT NULL, id TEXT NOT NULL, user_name TEXT NOT NULL,
               external_id TEXT, given_name TEXT, family_name TEXT, display_name TEXT,
               email TEXT, active INTEGER NOT NULL, roles TEXT NOT NULL,
               PRIMARY KEY (run_id, pos), UNIQUE (run_id, id)) STRICT, WITHOUT ROWID",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("layout.db")).unwrap();
        store.conn.execute_batch(ddl).unwrap();
        let mut best = Duration::MAX;
        for round in 0..3 {
            let run = store.begin_run(RunKind::Plan, t(round)).unwrap();
            let start = std::time::Instant::now();
            let tx = store.conn.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO a VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .unwrap();
                for (i, a) in accounts.iter().enumerate() {
                    insert
                        .execute(rusqlite::params![
                            run,
                            i as i64,
                            a.id,
                            a.user_name,
                            a.external_id,
                            a.given_name,
                            a.family_name,
                            a.display_name,
                            a.email,
                            a.active,
                            serde_json::to_string(&a.roles).unwrap(),
                        ])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
            best = best.min(start.elapsed());
        }
        println!("{name}: best of 3 = {best:?}");
    }
}

#[test]
fn a_batch_commits_all_its_updates_or_none() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store.save_plan(run, &sample_plan(), t(1)).unwrap();

    store
        .batch(|s| {
            s.mark_in_flight(run, 0, t(2))?;
            s.mark_in_flight(run, 2, t(2))
        })
        .unwrap();
    assert_eq!(states(&store, run)[0], (0, ActionState::InFlight, 1));
    assert_eq!(states(&store, run)[2], (2, ActionState::InFlight, 1));

    // The second update is refused (a held action cannot go in flight): the first
    // one, already made inside the batch, is rolled back with it.
    let err = store
        .batch(|s| {
            s.mark_applied(run, 0, t(3), None)?;
            s.mark_in_flight(run, 1, t(3))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTransition { .. }), "{err}");
    assert_eq!(states(&store, run)[0], (0, ActionState::InFlight, 1));
    assert_eq!(states(&store, run)[1], (1, ActionState::Held, 0));
    // And the store is usable afterwards: no transaction left open.
    store.mark_applied(run, 0, t(4), None).unwrap();
    assert_eq!(states(&store, run)[0], (0, ActionState::Applied, 1));
}

#[test]
fn migration_2_rebuilds_runs_without_losing_what_references_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(migrations::M1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (kind, status, started_at) VALUES ('reconcile', 'succeeded', 'x');
             INSERT INTO reports (run_id, json) VALUES (1, '{\"ok\": true}');",
        )
        .unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    // The rebuild of `runs` did not cascade into reports.
    assert_eq!(store.report(1).unwrap().as_deref(), Some("{\"ok\": true}"));
    let sweep = store.begin_run(RunKind::Sweep, t(0)).unwrap();
    assert_eq!(sweep, 2, "AUTOINCREMENT continues after the copied rows");
    assert_eq!(store.run(sweep).unwrap().unwrap().kind, RunKind::Sweep);
    // Foreign keys are enforced again after migrating.
    let enforced: bool = store
        .conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .unwrap();
    assert!(enforced);
}

/// A database file at schema `version` (the first `version` migrations), with
/// `fill` writing rows as that version did.
fn database_at_version(
    path: &std::path::Path,
    version: usize,
    fill: impl FnOnce(&rusqlite::Transaction<'_>),
) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    for migration in &migrations::MIGRATIONS[..version] {
        tx.execute_batch(migration).unwrap();
    }
    fill(&tx);
    tx.commit().unwrap();
    conn.pragma_update(None, "user_version", version as i64)
        .unwrap();
}

/// Before migration 19 a run's refused directory was known only from its stored
/// report; the migration carries that onto the run, so an upgraded database
/// still reads the newest sound snapshots, not the refused ones.
#[test]
fn migration_19_marks_the_runs_whose_report_refused_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v18.db");
    database_at_version(&path, 18, |tx| {
        tx.execute_batch(
            "INSERT INTO runs (kind, status, started_at, directory_complete, workspace_saved)
             VALUES ('reconcile', 'succeeded', '2026-11-01T00:00:00Z', 1, 1),
                    ('reconcile', 'succeeded', '2026-11-01T01:00:00Z', 1, 1),
                    ('reconcile', 'failed', '2026-11-01T02:00:00Z', 1, 1);
             INSERT INTO reports (run_id, json) VALUES
                 (1, '{\"safety\": {\"source_fault\": null}}'),
                 (2, '{\"safety\": {\"source_fault\": {\"empty\": null}}}');",
        )
        .unwrap();
    });
    let store = Store::open(&path).unwrap();
    assert!(!store.directory_refused(1).unwrap());
    assert!(store.directory_refused(2).unwrap());
    // No report: nothing says it was refused, and it is read as before.
    assert!(!store.directory_refused(3).unwrap());
    assert_eq!(store.latest_snapshot_run().unwrap(), Some(3));
    let mut store = store;
    store.mark_directory_refused(3, "empty").unwrap();
    assert_eq!(store.latest_snapshot_run().unwrap(), Some(1));
    // Why is kept from now on; one refused before says so in its report.
    assert_eq!(
        store.directory_refused_why(3).unwrap().as_deref(),
        Some("empty")
    );
    assert_eq!(store.directory_refused_why(2).unwrap(), None);
    assert!(matches!(
        store.mark_directory_refused(4, "empty"),
        Err(StoreError::UnknownRun { run: 4, .. })
    ));
}

/// Pending migrations run as one transaction: when a later one fails, the earlier
/// ones are rolled back with it, and the file stays at the version it had, usable
/// by the binary that wrote it.
#[test]
fn a_failed_migration_leaves_the_database_at_its_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v10.db");
    let version = 10;
    database_at_version(&path, version, |tx| {
        // Migration 12 creates this table: with it already there, 12 fails.
        tx.execute_batch("CREATE TABLE deactivated_accounts (x TEXT) STRICT;")
            .unwrap();
        tx.execute_batch(
            "INSERT INTO links VALUES ('i1', 'a1', 'external_id', '2026-11-01T00:00:00Z');",
        )
        .unwrap();
    });
    let Err(err) = Store::open(&path) else {
        panic!("migration 12 must fail")
    };
    assert!(
        matches!(err, StoreError::Migration { version: 12, .. }),
        "{err:?}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(found, version as i64);
    // Migration 11's copy of `links` was rolled back too: no `manual` in the CHECK.
    let links: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'links'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(!links.contains("'manual'"), "{links}");
    let kept: i64 = conn
        .query_row("SELECT count(*) FROM links", [], |row| row.get(0))
        .unwrap();
    assert_eq!(kept, 1);
}

/// Migration 13 copies `runs` and `jobs` to allow `stopped`: rows and what
/// references them survive, and the run ids keep counting past a pruned newest
/// run instead of handing its id out again.
#[test]
fn runs_and_jobs_take_the_stopped_status_without_reusing_run_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v12.db");
    database_at_version(&path, 12, |tx| {
        tx.execute_batch(
            "INSERT INTO runs (kind, status, started_at) VALUES
                 ('reconcile', 'succeeded', '2026-11-01T00:00:00Z'),
                 ('reconcile', 'failed', '2026-11-01T01:00:00Z'),
                 ('sweep', 'succeeded', '2026-11-01T02:00:00Z');
             INSERT INTO reports (run_id, json) VALUES (1, '{\"ok\": true}');
             DELETE FROM runs WHERE id = 3;
             INSERT INTO jobs (name, last_status, last_error)
                 VALUES ('reconcile', 'failed', 'boom');",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    assert_eq!(store.report(1).unwrap().as_deref(), Some("{\"ok\": true}"));
    assert_eq!(store.run(2).unwrap().unwrap().status, RunStatus::Failed);
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    assert_eq!(run, 4, "the id of the pruned run 3 is not handed out again");
    store
        .finish_run(run, t(1), RunStatus::Stopped, Some("stopping"))
        .unwrap();
    let record = store.run(run).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Stopped);
    assert_eq!(record.error.as_deref(), Some("stopping"));
    let jobs = store.jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].last_status, Some(RunStatus::Failed));
    assert_eq!(jobs[0].last_error.as_deref(), Some("boom"));
    store.job_started("reconcile", t(2)).unwrap();
    store
        .job_finished("reconcile", t(3), RunStatus::Stopped, Some("stopping"))
        .unwrap();
    let job = &store.jobs().unwrap()[0];
    assert_eq!(job.last_status, Some(RunStatus::Stopped));
    assert_eq!(job.last_success_at, None, "a stop is no success");
    store
        .job_finished("reconcile", t(4), RunStatus::Succeeded, None)
        .unwrap();
    assert_eq!(store.jobs().unwrap()[0].last_success_at, Some(t(4)));
}

#[test]
fn links_survive_the_move_to_a_clustered_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5.db");
    database_at_version(&path, 5, |tx| {
        tx.execute_batch(
            "INSERT INTO links VALUES ('i1', 'a1', 'external_id', '2026-11-01T00:00:00Z');",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    let links = store.links().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(
        (links[0].identity_id.as_str(), links[0].account_id.as_str()),
        ("i1", "a1")
    );
    assert_eq!(links[0].method, LinkMethod::ExternalId);
    let clustered: String = store
        .conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'links'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(clustered.contains("WITHOUT ROWID"), "{clustered}");
    // Still one link per account: a new identity takes the account over.
    store
        .upsert_links(&[new_link("i2", "a1", LinkMethod::UserName)], t(1))
        .unwrap();
    let links = store.links().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].identity_id, "i2");
}

#[test]
fn the_ledger_keeps_one_open_episode_per_person_and_a_verified_one_until_they_return() {
    use crate::sla::{self, Leaver, LossReason};
    let mut store = Store::open_in_memory().unwrap();
    let leaver = |id: &str| Leaver {
        identity_id: id.into(),
        account_id: Some(format!("acc-{id}")),
        user_name: format!("{id}@example.com"),
        reason: LossReason::Deleted,
    };
    let sla = chrono::Duration::hours(1);
    let changes = sla::observe(&[], &[leaver("a"), leaver("b")], &[], t(0), sla);
    store.update_ledger(&changes, t(0)).unwrap();
    // Inserting the same open episode again is a no-op, not a second row.
    store.update_ledger(&changes, t(1)).unwrap();
    let open = store.open_deprovisions().unwrap();
    assert_eq!(open.len(), 2);
    let (a, b) = (&open[0], &open[1]);
    assert_eq!(a.due_at, t(3600));

    store.deprovision_verified(a.id, t(10)).unwrap();
    store.deprovision_failed(b.id, "HTTP 503", t(40)).unwrap();
    let open = store.open_deprovisions().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].attempts, 1);
    assert_eq!(open[0].next_attempt_at, Some(t(40)));
    let verified = store.verified_deprovisions_since(t(0)).unwrap();
    assert_eq!(verified[0].latency(), Some(chrono::Duration::seconds(10)));
    assert_eq!(verified[0].enforced_at, Some(t(10)));

    // Still gone on the next observation: nothing new.
    let current = store.current_deprovisions().unwrap();
    let again = sla::observe(&current, &[leaver("a"), leaver("b")], &[], t(20), sla);
    assert_eq!(again, sla::LedgerChanges::default());

    // Pruning keeps the verified episode of someone still gone.
    store.prune_before(t(100_000)).unwrap();
    assert_eq!(store.current_deprovisions().unwrap().len(), 2);

    // `a` comes back, `b` too (before enforcement: cancelled).
    let back = sla::observe(&current, &[], &["a".into(), "b".into()], t(30), sla);
    store.update_ledger(&back, t(30)).unwrap();
    assert!(store.open_deprovisions().unwrap().is_empty());
    assert!(store.current_deprovisions().unwrap().is_empty());
    let episodes = store.prune_before(t(100_000)).unwrap().episodes;
    assert_eq!(episodes, 2);
}

/// An episode a look-alike hold ends is closed with why in the same write
/// (`LedgerChanges::look_alike_ended`): two writes, the process killed
/// between them, left it closed with nothing said, which `explain` tells as
/// "access came back". One cancelled alongside it keeps no such text.
#[test]
fn an_episode_a_look_alike_hold_ends_is_closed_with_why_in_one_write() {
    use crate::sla::{self, Leaver, LossReason};
    let mut store = Store::open_in_memory().unwrap();
    let leaver = |id: &str| Leaver {
        identity_id: id.into(),
        account_id: Some(format!("acc-{id}")),
        user_name: format!("{id}@example.com"),
        reason: LossReason::OutOfScope,
    };
    let sla = chrono::Duration::hours(1);
    let opened = sla::observe(&[], &[leaver("a"), leaver("b")], &[], t(0), sla);
    store.update_ledger(&opened, t(0)).unwrap();
    let open = store.open_deprovisions().unwrap();
    let (a, b) = (open[0].id, open[1].id);
    let ended = sla::LedgerChanges {
        cancel: vec![a, b],
        look_alike_ended: vec![a],
        ..sla::LedgerChanges::default()
    };
    store.update_ledger(&ended, t(10)).unwrap();
    let history = store.deprovision_history("a", 1).unwrap();
    assert_eq!(history[0].closed_at, Some(t(10)));
    assert_eq!(history[0].held.as_deref(), Some(sla::LOOK_ALIKE_ENDED));
    let history = store.deprovision_history("b", 1).unwrap();
    assert_eq!(history[0].closed_at, Some(t(10)));
    assert_eq!(history[0].held, None);
}

#[test]
fn snapshots_are_pruned_to_the_newest_runs() {
    let mut store = Store::open_in_memory().unwrap();
    let directory = DirectorySnapshot {
        identities: vec![identity(1, IdentityStatus::Active, &["g"])],
        complete: true,
    };
    let runs: Vec<RunId> = (0..5)
        .map(|i| {
            let run = store.begin_run(RunKind::Reconcile, t(i)).unwrap();
            store.save_directory_snapshot(run, &directory).unwrap();
            run
        })
        .collect();
    let deleted = store.prune_snapshots(2).unwrap();
    assert_eq!(deleted, 3);
    // Pruned reads as "not saved", never as an empty directory.
    assert_eq!(store.load_directory_snapshot(runs[2]).unwrap(), None);
    let kept = |run| {
        store
            .load_directory_snapshot(run)
            .unwrap()
            .unwrap()
            .identities
            .len()
    };
    assert_eq!(kept(runs[3]), 1);
    assert_eq!(kept(runs[4]), 1);
}

/// After reconciles have failed for longer than the retention period, every run is
/// old: the daily prune still keeps what the safety checks read — the runs whose
/// snapshots are stored (the newest few), the newest report, and the newest run
/// whose held actions await `approve`. Only what nothing reads again goes.
#[test]
fn pruning_old_runs_keeps_what_the_safety_checks_read() {
    let mut store = Store::open_in_memory().unwrap();
    let directory = DirectorySnapshot {
        identities: vec![identity(1, IdentityStatus::Active, &["g"])],
        complete: true,
    };
    let mut clock = 0;
    let mut run = |store: &mut Store, kind: RunKind| {
        clock += 1;
        store.begin_run(kind, t(clock)).unwrap()
    };
    let finish = |store: &mut Store, run: RunId| {
        store
            .finish_run(
                run,
                t(100),
                RunStatus::Failed,
                Some("directory unreachable"),
            )
            .unwrap();
    };
    let mut snapshot_runs = vec![];
    for _ in 0..4 {
        let r = run(&mut store, RunKind::Reconcile);
        store.save_directory_snapshot(r, &directory).unwrap();
        store
            .save_workspace_snapshot(r, &workspace(3, 1, 2))
            .unwrap();
        store.save_report(r, "{\"state\":\"drift\"}").unwrap();
        store
            .finish_run(r, t(100), RunStatus::Succeeded, None)
            .unwrap();
        snapshot_runs.push(r);
    }
    // The daemon keeps the newest 3 runs' snapshots.
    store.prune_snapshots(3).unwrap();
    let reported = run(&mut store, RunKind::Reconcile);
    store
        .save_report(reported, "{\"state\":\"needs_attention\"}")
        .unwrap();
    finish(&mut store, reported);
    let older_held = run(&mut store, RunKind::Reconcile);
    store.save_plan(older_held, &sample_plan(), t(50)).unwrap();
    finish(&mut store, older_held);
    let held = run(&mut store, RunKind::Reconcile);
    store.save_plan(held, &sample_plan(), t(50)).unwrap();
    finish(&mut store, held);
    let rejected = run(&mut store, RunKind::Reconcile);
    store.save_plan(rejected, &sample_plan(), t(50)).unwrap();
    store
        .record_decisions(
            rejected,
            &[(1, Decision::Rejected, None), (3, Decision::Rejected, None)],
            "admin",
            t(60),
        )
        .unwrap();
    finish(&mut store, rejected);
    let mut failed = vec![];
    for _ in 0..3 {
        let r = run(&mut store, RunKind::Reconcile);
        finish(&mut store, r);
        failed.push(r);
    }

    // Everything started long before the retention period's start.
    let pruned = store.prune_before(t(1_000_000)).unwrap().runs;
    assert_eq!(
        pruned,
        1 + 1 + 1 + 3,
        "the unsnapshotted, superseded and failed runs"
    );

    let newest = snapshot_runs[3];
    let next = failed[2] + 1;
    assert_eq!(store.previous_workspace_run(next).unwrap(), Some(newest));
    assert_eq!(store.latest_snapshot_run().unwrap(), Some(newest));
    for &r in &snapshot_runs[1..] {
        assert!(store.run(r).unwrap().is_some(), "run {r} has snapshots");
    }
    assert!(store.run(snapshot_runs[0]).unwrap().is_none());
    assert_eq!(
        store.latest_report().unwrap().map(|(r, _)| r),
        Some(reported)
    );
    assert!(
        store.run(held).unwrap().is_some(),
        "its held actions await approval"
    );
    assert!(store.run(older_held).unwrap().is_none());
    assert!(store.run(rejected).unwrap().is_none());
    for &r in &failed {
        assert!(store.run(r).unwrap().is_none());
    }
}

/// The daily prune deletes messages sent or refused for good before the retention
/// period's start, bodies and all; a message still waiting (claimed or not), and
/// recent ones, stay.
#[test]
fn pruning_deletes_old_sent_and_failed_messages_only() {
    let mut store = Store::open_in_memory().unwrap();
    let message = NewMessage {
        kind: OutboxKind::Report,
        subject: "drift".into(),
        from: "seatwarden@example.com".into(),
        to: vec!["it@example.com".into()],
        text: "text".into(),
        html: "<p>html</p>".into(),
        in_reply_to: None,
    };
    let old_sent = store.enqueue_message(&message, t(0)).unwrap();
    store.mark_message_sent(old_sent, t(5)).unwrap();
    let old_failed = store.enqueue_message(&message, t(0)).unwrap();
    assert!(store.claim_message(old_failed, t(1), t(601)).unwrap());
    store
        .mark_message_attempt_failed(old_failed, "550 no such user", None)
        .unwrap();
    let old_pending = store.enqueue_message(&message, t(0)).unwrap();
    store
        .mark_message_attempt_failed(old_pending, "421 try later", Some(t(3600)))
        .unwrap();
    let old_claimed = store.enqueue_message(&message, t(0)).unwrap();
    assert!(store.claim_message(old_claimed, t(1), t(601)).unwrap());
    let new_sent = store.enqueue_message(&message, t(0)).unwrap();
    store.mark_message_sent(new_sent, t(20_000)).unwrap();
    let new_failed = store.enqueue_message(&message, t(19_500)).unwrap();
    assert!(
        store
            .claim_message(new_failed, t(19_500), t(20_100))
            .unwrap()
    );
    store
        .mark_message_attempt_failed(new_failed, "550 no such user", None)
        .unwrap();

    let pruned = store.prune_before(t(10_000)).unwrap();
    assert_eq!(pruned.messages, 2, "{pruned:?}");
    let left: Vec<OutboxId> = store.outbox().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left, [old_pending, old_claimed, new_sent, new_failed]);
}

/// In WAL mode VACUUM writes the whole database into the `-wal` file; the prune's
/// vacuum must not leave it there, as big as the database, until the next restart.
#[test]
fn vacuum_leaves_no_large_wal_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vacuum.db");
    let mut store = Store::open(&path).unwrap();
    for i in 0..4 {
        let run = store.begin_run(RunKind::Reconcile, t(i)).unwrap();
        store
            .save_workspace_snapshot(run, &workspace(2_000, 20, 100))
            .unwrap();
        store
            .finish_run(run, t(i + 1), RunStatus::Succeeded, None)
            .unwrap();
    }
    assert!(store.prune_snapshots(1).unwrap() > 0);
    store.vacuum().unwrap();
    let size = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::fs::metadata(PathBuf::from(name)).map_or(0, |m| m.len())
    };
    assert!(
        size("") > 100 * 1024,
        "the database holds a snapshot: {}",
        size("")
    );
    assert!(
        size("-wal") <= 4 * 4096,
        "the -wal file after VACUUM: {} bytes",
        size("-wal")
    );
}

/// A database an older version created readable by everyone (and its `-wal` and
/// `-shm` files, which SQLite gives the database's mode) is made readable by its
/// owner only when it is opened.
#[cfg(unix)]
#[test]
fn opening_a_world_readable_database_restricts_it_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    drop(Store::open(&path).unwrap());
    let wal = dir.path().join("old.db-wal");
    let shm = dir.path().join("old.db-shm");
    let chmod = |file: &Path, mode| {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let mode = |file: &Path| std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    chmod(&path, 0o644);
    // An older daemon still has it open: its -wal and -shm exist.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("CREATE TABLE written_by_an_old_version (x INTEGER)")
        .unwrap();
    chmod(&wal, 0o644);
    chmod(&shm, 0o664);
    assert_eq!(mode(&path), 0o644);

    let store = Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(mode(&shm), 0o600);
    drop(store);
    drop(other);

    // Stricter than 0600 already: left as it is.
    chmod(&path, 0o400);
    drop(Store::open(&path).ok());
    assert_eq!(mode(&path), 0o400);
}

/// Reconciles whose workspace read fails still save their directory snapshot; the
/// newest few of those must not push out the last workspace snapshot (the workspace
/// sanity check's baseline) nor the last run with both (`explain`, `link`).
#[test]
fn pruning_snapshots_keeps_the_newest_workspace_snapshot() {
    let mut store = Store::open_in_memory().unwrap();
    let directory = DirectorySnapshot {
        identities: vec![identity(1, IdentityStatus::Active, &["g"])],
        complete: true,
    };
    let mut runs = vec![];
    for i in 0..2 {
        let run = store.begin_run(RunKind::Reconcile, t(i)).unwrap();
        store.save_directory_snapshot(run, &directory).unwrap();
        store
            .save_workspace_snapshot(run, &workspace(3, 1, 2))
            .unwrap();
        runs.push(run);
    }
    for i in 2..7 {
        let run = store.begin_run(RunKind::Reconcile, t(i)).unwrap();
        store.save_directory_snapshot(run, &directory).unwrap();
        runs.push(run);
    }
    assert_eq!(store.prune_snapshots(3).unwrap(), 2 + 2);
    let next = runs[6] + 1;
    assert_eq!(store.previous_workspace_run(next).unwrap(), Some(runs[1]));
    assert_eq!(store.workspace_account_count(runs[1]).unwrap(), 3);
    assert_eq!(store.latest_snapshot_run().unwrap(), Some(runs[1]));
    assert!(store.load_directory_snapshot(runs[1]).unwrap().is_some());
    assert_eq!(store.load_directory_snapshot(runs[0]).unwrap(), None);
    assert_eq!(store.load_directory_snapshot(runs[3]).unwrap(), None);
    assert!(store.load_directory_snapshot(runs[4]).unwrap().is_some());
}

/// A directory outage refuses every reconcile's directory (empty, or shrunk past
/// the limit) while the workspace is still read and stored. The newest few of
/// those runs must not push out the last run whose directory was accepted:
/// `explain`, `export` and `link` read it, and the sweep counts its managed
/// accounts from it.
#[test]
fn pruning_snapshots_keeps_the_newest_accepted_directory() {
    let mut store = Store::open_in_memory().unwrap();
    let directory = DirectorySnapshot {
        identities: vec![identity(1, IdentityStatus::Active, &["g"])],
        complete: true,
    };
    let accepted = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store.save_directory_snapshot(accepted, &directory).unwrap();
    store
        .save_workspace_snapshot(accepted, &workspace(3, 1, 2))
        .unwrap();
    store
        .save_report(accepted, "{\"safety\":{\"source_fault\":null}}")
        .unwrap();
    let mut refused = vec![];
    for i in 1..5 {
        let run = store.begin_run(RunKind::Reconcile, t(i)).unwrap();
        store
            .save_directory_snapshot(run, &DirectorySnapshot::default())
            .unwrap();
        // As `safety::check_source` marks it, before the workspace snapshot is stored.
        store.mark_directory_refused(run, "empty").unwrap();
        store
            .save_workspace_snapshot(run, &workspace(3, 1, 2))
            .unwrap();
        store
            .save_report(run, "{\"safety\":{\"source_fault\":{\"kind\":\"empty\"}}}")
            .unwrap();
        refused.push(run);
    }
    store.prune_snapshots(3).unwrap();
    assert_eq!(store.latest_snapshot_run().unwrap(), Some(accepted));
    assert_eq!(
        store.load_directory_snapshot(accepted).unwrap(),
        Some(directory)
    );
    assert!(store.load_workspace_snapshot(accepted).unwrap().is_some());
    assert_eq!(store.load_directory_snapshot(refused[0]).unwrap(), None);
}

/// The prune reads the cut-off, then deletes: while another connection holds the
/// write lock it waits for it (the busy timeout), rather than failing at once with
/// SQLITE_BUSY when its read transaction cannot become a write one.
#[test]
fn pruning_snapshots_waits_for_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prune.db");
    let mut store = Store::open(&path).unwrap();
    let directory = DirectorySnapshot {
        identities: vec![identity(1, IdentityStatus::Active, &["g"])],
        complete: true,
    };
    for i in 0..3 {
        let run = store.begin_run(RunKind::Reconcile, t(i)).unwrap();
        store.save_directory_snapshot(run, &directory).unwrap();
    }
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let pruning = std::thread::spawn(move || store.prune_snapshots(1));
    std::thread::sleep(Duration::from_millis(300));
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(pruning.join().unwrap().unwrap(), 2);
}

// ---- journal indexes ------------------------------------------------------------

/// The journal's hot queries read the partial indexes made for them (migration 5),
/// not the whole table.
#[test]
fn journal_queries_use_their_partial_indexes() {
    let store = Store::open_in_memory().unwrap();
    let plan = |sql: &str| -> String {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows: Vec<String> = stmt
            .query_map([], |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.join("; ")
    };
    let in_flight = plan("SELECT seq FROM actions WHERE state = 'in_flight' ORDER BY run_id, seq");
    assert!(in_flight.contains("actions_in_flight"), "{in_flight}");
    let deprovisions = plan(
        "SELECT count(*) FROM actions
         WHERE state IN ('applied', 'in_flight')
           AND kind IN ('deactivate', 'delete')
           AND updated_at >= '2026-01-01'",
    );
    assert!(
        deprovisions.contains("actions_recent_deprovisions"),
        "{deprovisions}"
    );
    let downgrades = plan(
        "SELECT payload FROM actions
         WHERE state IN ('applied', 'in_flight')
           AND kind IN ('remove_members', 'set_role')
           AND updated_at >= '2026-01-01'",
    );
    assert!(
        downgrades.contains("actions_recent_downgrades"),
        "{downgrades}"
    );
}

/// Migration 7 turns the row-per-item snapshots of a version 6 database into one
/// document per run and side, and loads give back exactly what was saved.
#[test]
fn snapshots_survive_the_move_to_one_document_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.db");
    let mut workspace_snapshot = workspace(60, 4, 9);
    workspace_snapshot.groups.push(WorkspaceGroup {
        id: "grp-empty".into(),
        display_name: "Nobody".into(),
        members: vec![],
    });
    workspace_snapshot.groups[1]
        .members
        .push("acc-missing".into());
    let directory_snapshot = DirectorySnapshot {
        identities: vec![
            identity(1, IdentityStatus::Active, &["Engineering", "All Staff"]),
            bare_identity("00u-bare"),
            identity(2, IdentityStatus::Deprovisioned, &[]),
            identity(3, IdentityStatus::Suspended, &["Ops"]),
            bare_identity("00u-bare"),
        ],
        complete: false,
    };
    database_at_version(&path, 6, |tx| {
        // Run 1: both snapshots; run 2: an empty workspace and an empty, complete
        // directory; run 3: no snapshots at all. Rows as version 6 wrote them.
        for run in 1..=3 {
            tx.execute(
                "INSERT INTO runs (id, kind, status, started_at) VALUES (?1, 'reconcile', 'succeeded', '2026-11-01T00:00:00.000000000Z')",
                [run],
            )
            .unwrap();
        }
        tx.execute_batch(
            "UPDATE runs SET directory_complete = 0, workspace_saved = 1 WHERE id = 1;
             UPDATE runs SET directory_complete = 1, workspace_saved = 1 WHERE id = 2;",
        )
        .unwrap();
        let mut membership = 0;
        for (pos, i) in directory_snapshot.identities.iter().enumerate() {
            tx.execute(
                "INSERT INTO directory_identities VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    pos,
                    i.id,
                    i.user_name,
                    i.email,
                    i.given_name,
                    i.family_name,
                    i.display_name,
                    i.status.as_str(),
                    i.department
                ],
            )
            .unwrap();
            for group in &i.groups {
                tx.execute(
                    "INSERT INTO directory_memberships VALUES (1, ?1, ?2, ?3, ?4)",
                    rusqlite::params![membership, pos, i.id, group],
                )
                .unwrap();
                membership += 1;
            }
        }
        for (pos, a) in workspace_snapshot.accounts.iter().enumerate() {
            tx.execute(
                "INSERT INTO workspace_accounts VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    pos, a.id, a.user_name, a.external_id, a.given_name, a.family_name,
                    a.display_name, a.email, a.active, serde_json::to_string(&a.roles).unwrap()
                ],
            )
            .unwrap();
        }
        let mut membership = 0;
        for (pos, g) in workspace_snapshot.groups.iter().enumerate() {
            tx.execute(
                "INSERT INTO workspace_groups VALUES (1, ?1, ?2, ?3)",
                rusqlite::params![pos, g.id, g.display_name],
            )
            .unwrap();
            for member in &g.members {
                tx.execute(
                    "INSERT INTO workspace_memberships VALUES (1, ?1, ?2, ?3, ?4)",
                    rusqlite::params![membership, pos, g.id, member],
                )
                .unwrap();
                membership += 1;
            }
        }
    });
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    assert_eq!(
        store.load_directory_snapshot(1).unwrap(),
        Some(directory_snapshot)
    );
    assert_eq!(
        store.load_workspace_snapshot(1).unwrap(),
        Some(workspace_snapshot)
    );
    assert_eq!(store.workspace_account_count(1).unwrap(), 60);
    assert_eq!(
        store.load_directory_snapshot(2).unwrap(),
        Some(DirectorySnapshot {
            identities: vec![],
            complete: true
        })
    );
    assert_eq!(
        store.load_workspace_snapshot(2).unwrap(),
        Some(WorkspaceSnapshot::default())
    );
    assert_eq!(store.load_directory_snapshot(3).unwrap(), None);
    assert_eq!(store.load_workspace_snapshot(3).unwrap(), None);
    let old_tables: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('directory_identities',
             'directory_memberships', 'workspace_accounts', 'workspace_groups',
             'workspace_memberships')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(old_tables, 0);
}

/// A run marked as having saved a snapshot whose document is missing is a corrupt
/// database, reported with the table and the run, never an empty snapshot.
#[test]
fn a_missing_snapshot_document_is_corruption_not_an_empty_snapshot() {
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store
        .save_workspace_snapshot(run, &workspace(3, 1, 2))
        .unwrap();
    store
        .save_directory_snapshot(run, &DirectorySnapshot::default())
        .unwrap();
    store
        .conn
        .execute_batch("DELETE FROM workspace_snapshots; DELETE FROM directory_snapshots;")
        .unwrap();
    for err in [
        store.load_workspace_snapshot(run).unwrap_err(),
        store.load_directory_snapshot(run).map(|_| ()).unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::Corrupt { run: r, .. } if r == run),
            "{err:?}"
        );
    }
    store
        .conn
        .execute(
            "INSERT INTO workspace_snapshots VALUES (?1, 1, 0, '{\"accounts\": 7}')",
            [run],
        )
        .unwrap();
    let err = store.load_workspace_snapshot(run).unwrap_err();
    assert!(err.to_string().contains("workspace_snapshots"), "{err}");
    assert!(err.to_string().contains("does not decode"), "{err}");
    assert!(
        !err.to_string().contains('7'),
        "no value from the row: {err}"
    );
}

/// A plan's drift document an older version stored has no `conflict` on any
/// item: it loads, its userName conflicts (told then by how the detail begins)
/// still count as such, and a plan saved now keeps the marker and who it names.
#[test]
fn drift_stored_before_user_name_conflicts_were_marked_still_loads() {
    let mut store = Store::open_in_memory().unwrap();
    let old = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store
        .conn
        .execute(
            "INSERT INTO plan_drift (run_id, item_count, body) VALUES (?1, 2, ?2)",
            rusqlite::params![
                old,
                json!([
                    {"kind": "missing_account", "identity_id": "ben", "account_id": null,
                     "user_name": "ada@example.com",
                     "detail": "not created: userName \"ada@example.com\" is already held by \
                                account 1 (person ada); two people cannot share a userName"},
                    {"kind": "missing_account", "identity_id": "cy", "account_id": null,
                     "user_name": "cy@example.com",
                     "detail": "identity is in scope but has no workspace account"},
                ])
                .to_string()
            ],
        )
        .unwrap();
    let loaded = store.drift(old).unwrap();
    let conflicts: Vec<(&str, bool)> = loaded
        .iter()
        .map(|d| (d.user_name.as_str(), crate::plan::is_user_name_conflict(d)))
        .collect();
    assert_eq!(
        conflicts,
        [("ada@example.com", true), ("cy@example.com", false)]
    );

    let run = store.begin_run(RunKind::Reconcile, t(1)).unwrap();
    let marked = DriftItem {
        conflict: Some(crate::model::UserNameConflict {
            held_by: vec!["1".into()],
            wanted_by: vec!["dan".into()],
            wanted_by_more: 0,
        }),
        ..loaded[0].clone()
    };
    let plan = Plan {
        drift: vec![marked.clone(), loaded[1].clone()],
        ..Plan::default()
    };
    store.save_plan(run, &plan, t(2)).unwrap();
    assert_eq!(store.drift(run).unwrap(), plan.drift);
    let body: String = store
        .conn
        .query_row(
            "SELECT body FROM plan_drift WHERE run_id = ?1",
            [run],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(body.matches("\"conflict\"").count(), 1, "{body}");
}

#[test]
fn drift_items_survive_the_move_to_one_document_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v7.db");
    database_at_version(&path, 7, |tx| {
        // Run 1: three items, inserted out of order; run 2: a plan without drift.
        for run in 1..=2 {
            tx.execute(
                "INSERT INTO runs (id, kind, status, started_at) VALUES (?1, 'reconcile', 'succeeded', '2026-11-01T00:00:00.000000000Z')",
                [run],
            )
            .unwrap();
        }
        tx.execute_batch(
            "INSERT INTO drift_items VALUES (1, 2, 'orphaned_account', NULL, 'a9', 'x@example.com', 'nobody owns it');
             INSERT INTO drift_items VALUES (1, 0, 'stale_access', 'i1', 'a1', 'ann@example.com', 'identity is \"deprovisioned\"');
             INSERT INTO drift_items VALUES (1, 1, 'missing_account', 'i2', NULL, 'bo@example.com', 'no account');",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    let item =
        |kind, identity: Option<&str>, account: Option<&str>, user: &str, detail: &str| DriftItem {
            kind,
            identity_id: identity.map(str::to_owned),
            account_id: account.map(str::to_owned),
            user_name: user.to_owned(),
            detail: detail.to_owned(),
            conflict: None,
        };
    assert_eq!(
        store.drift(1).unwrap(),
        vec![
            item(
                DriftKind::StaleAccess,
                Some("i1"),
                Some("a1"),
                "ann@example.com",
                "identity is \"deprovisioned\""
            ),
            item(
                DriftKind::MissingAccount,
                Some("i2"),
                None,
                "bo@example.com",
                "no account"
            ),
            item(
                DriftKind::OrphanedAccount,
                None,
                Some("a9"),
                "x@example.com",
                "nobody owns it"
            ),
        ]
    );
    assert!(store.drift(2).unwrap().is_empty());
    // The plan of run 1 still counts as saved: it cannot be saved twice.
    let err = store.save_plan(1, &Plan::default(), t(5)).unwrap_err();
    assert!(matches!(err, StoreError::PlanExists { .. }), "{err:?}");
    let dropped: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'drift_items'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(dropped, 0);

    // An undecodable document is corruption, named by table and run.
    store
        .conn
        .execute(
            "UPDATE plan_drift SET body = '[{\"kind\": 7}]' WHERE run_id = 1",
            [],
        )
        .unwrap();
    let err = store.drift(1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "plan_drift",
                run: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn pending_drift_survives_the_move_to_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v8.db");
    database_at_version(&path, 8, |tx| {
        tx.execute_batch(
            "INSERT INTO drift_seen VALUES ('create:i2', '2026-11-01T00:00:00.000000000Z', '2026-11-02T00:00:00.000000000Z');
             INSERT INTO drift_seen VALUES ('update:i1:\"title\"', '2026-11-01T08:30:00.250000000Z', '2026-11-02T00:00:00.000000000Z');",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    // Keys stored before they were hashed are found by their digest.
    let keys = ["create:i2", "update:i1:\"title\"", "create:i3"]
        .map(|stored| crate::guard::settle_key_of_stored(stored.to_owned()));
    let seen = store.drift_first_seen(&keys).unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[&keys[0]],
        "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(
        seen[&keys[1]],
        "2026-11-01T08:30:00.25Z".parse::<DateTime<Utc>>().unwrap()
    );

    // A run keeps what is still pending, adds what is new, forgets the rest.
    let now = "2026-11-05T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    store.replace_drift_seen(&keys[1..], now).unwrap();
    let seen = store.drift_first_seen(&keys).unwrap();
    assert_eq!(seen.get(&keys[0]), None);
    assert_eq!(seen.get(&keys[2]), Some(&now));
    assert_eq!(
        seen[&keys[1]],
        "2026-11-01T08:30:00.25Z".parse::<DateTime<Utc>>().unwrap()
    );

    // An undecodable document is an error naming the table, not an empty set
    // (that would restart every settle window).
    store
        .conn
        .execute("UPDATE pending_drift SET body = '{\"create:i3\": 7}'", [])
        .unwrap();
    let err = store.drift_first_seen(&keys).unwrap_err();
    assert!(err.to_string().contains("pending_drift"), "{err}");
}

/// The opcodes SQLite compiles `sql` to.
fn opcodes(store: &Store, sql: &str) -> Vec<String> {
    let mut stmt = store.conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    stmt.query_map(rusqlite::params_from_iter(nulls), |row| {
        row.get::<_, String>(1)
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Every row a run writes to the journal and the links (three journal writes per
/// action, a link per matched account) runs these constraint checks. A check
/// `x IN ('a', 'b')` compiles to a temporary b-tree built for every statement
/// execution: a large share of each row's cost.
#[test]
fn journal_and_link_writes_build_no_temporary_tables() {
    let store = Store::open_in_memory().unwrap();
    for table in ["actions", "links"] {
        // (name, part of the primary key)
        let columns: Vec<(String, bool)> = {
            let mut stmt = store
                .conn
                .prepare("SELECT name, pk > 0 FROM pragma_table_info(?1)")
                .unwrap();
            stmt.query_map([table], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert!(columns.len() > 3, "{table}: {columns:?}");
        let by_key = columns
            .iter()
            .filter(|(_, key)| *key)
            .map(|(c, _)| format!("{c} = ?"))
            .collect::<Vec<_>>()
            .join(" AND ");
        // Each column updated alone, on one row, as the store updates them.
        let mut statements = vec![format!("INSERT INTO {table} DEFAULT VALUES")];
        statements.extend(
            columns
                .iter()
                .filter(|(_, key)| !key)
                .map(|(c, _)| format!("UPDATE {table} SET {c} = ? WHERE {by_key}")),
        );
        for sql in statements {
            let ops = opcodes(&store, &sql);
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{sql} opens a temporary table: {ops:?}"
            );
        }
    }
}

/// Every row of `table`, every column, in key order.
fn all_rows(conn: &rusqlite::Connection, table: &str) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
        .unwrap();
    let width = stmt.column_count();
    stmt.query_map([], |row| (0..width).map(|i| row.get(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The indexes on `table`, each as its name and columns (with SQLite's own for
/// keys and `UNIQUE`), sorted.
fn index_shapes(conn: &rusqlite::Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(
            "SELECT il.name || '(' || group_concat(ii.name, ',') || ') ' || il.partial
             FROM pragma_index_list(?1) il, pragma_index_info(il.name) ii
             GROUP BY il.name ORDER BY il.name",
        )
        .unwrap();
    stmt.query_map([table], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn the_journal_and_links_keep_every_row_and_index_through_the_check_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v9.db");
    database_at_version(&path, 9, |tx| {
        tx.execute_batch(
            "INSERT INTO runs (id, kind, status, started_at) VALUES
                 (1, 'reconcile', 'succeeded', '2026-11-01T00:00:00Z'),
                 (2, 'reconcile', 'running', '2026-11-02T00:00:00Z');
             INSERT INTO actions VALUES
                 (1, 0, 'deactivate', 'stale_access', 'a@example.com', 'i1', 'a1', '{}',
                  'applied', 1, NULL, NULL, '2026-11-01T00:00:00Z', '2026-11-01T00:01:00Z'),
                 (1, 1, 'create_account', 'missing', 'b@example.com', 'i2', NULL, '{\"k\":1}',
                  'failed', 3, 'HTTP 500', NULL, '2026-11-01T00:00:00Z', '2026-11-01T00:02:00Z'),
                 (2, 0, 'set_role', 'wrong_role', 'c@example.com', 'i3', 'a3', '{}',
                  'in_flight', 1, NULL, '{\"account_id\":\"a3\"}', '2026-11-02T00:00:00Z',
                  '2026-11-02T00:00:01Z'),
                 (2, 1, 'add_members', 'missing_membership', 'Design', NULL, NULL, '[]',
                  'held', 0, NULL, NULL, '2026-11-02T00:00:00Z', '2026-11-02T00:00:00Z');
             INSERT INTO links VALUES
                 ('i1', 'a1', 'external_id', '2026-11-01T00:00:00Z'),
                 ('i3', 'a3', 'adopted', '2026-11-02T00:00:00Z');",
        )
        .unwrap();
    });
    let (before, indexes_before) = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let rows: Vec<_> = ["actions", "links"]
            .iter()
            .map(|t| all_rows(&conn, t))
            .collect();
        let indexes: Vec<_> = ["actions", "links"]
            .iter()
            .map(|t| index_shapes(&conn, t))
            .collect();
        (rows, indexes)
    };
    assert_eq!(before[0].len(), 4);
    assert_eq!(before[1].len(), 2);
    assert_eq!(indexes_before[0].len(), 6, "{:?}", indexes_before[0]);
    assert_eq!(indexes_before[1].len(), 2, "{:?}", indexes_before[1]);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    for (i, table) in ["actions", "links"].iter().enumerate() {
        assert_eq!(all_rows(&store.conn, table), before[i], "{table}");
        assert_eq!(
            index_shapes(&store.conn, table),
            indexes_before[i],
            "{table}"
        );
    }
    // Still the same constraints: an unknown value is refused.
    for sql in [
        "UPDATE actions SET state = 'done' WHERE run_id = 1 AND seq = 0",
        "UPDATE links SET method = 'guessed' WHERE identity_id = 'i1'",
    ] {
        let err = store.conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{sql}: {err}");
    }
    // A pruned run still takes its journal along.
    let mut store = store;
    assert_eq!(store.prune_runs_before(2).unwrap(), 1);
    let left = all_rows(&store.conn, "actions");
    assert_eq!(left, before[0][2..]);
}

/// A digest counts the runs that finished in its period: one that started in the
/// previous period and finished in this one is counted here, and one still running
/// is left for the next digest instead of being lost between the two.
#[test]
fn reports_between_counts_runs_by_when_they_finished() {
    let mut store = Store::open_in_memory().unwrap();
    let straddling = store.begin_run(RunKind::Reconcile, t(50)).unwrap();
    store.save_report(straddling, "{}").unwrap();
    store
        .finish_run(straddling, t(150), RunStatus::Succeeded, None)
        .unwrap();
    let inside = store.begin_run(RunKind::Reconcile, t(160)).unwrap();
    store
        .finish_run(inside, t(170), RunStatus::Failed, Some("boom"))
        .unwrap();
    let running = store.begin_run(RunKind::Reconcile, t(180)).unwrap();
    let ids = |store: &Store, from, to| -> Vec<RunId> {
        store
            .reports_between(t(from), t(to))
            .unwrap()
            .into_iter()
            .map(|(run, _)| run.id)
            .collect()
    };
    assert_eq!(ids(&store, 100, 200), [straddling, inside]);
    assert_eq!(ids(&store, 0, 100), Vec::<RunId>::new());
    store
        .finish_run(running, t(210), RunStatus::Succeeded, None)
        .unwrap();
    assert_eq!(ids(&store, 200, 300), [running]);
}

/// A new state database, its WAL and the writer lock are readable by their owner
/// only, whatever the umask of the shell that ran the first command.
#[cfg(unix)]
#[test]
fn a_new_database_and_its_lock_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    store.begin_run(RunKind::Plan, t(0)).unwrap();
    let _lock = writer::WriterLock::acquire_blocking(&path, |_| {}).unwrap();
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("state.db"), 0o600);
    assert_eq!(mode("state.db-wal"), 0o600);
    assert_eq!(mode("state.db.writer"), 0o600);
}

/// A message whose next attempt was set by a clock since stepped back (a day, here)
/// is due now, not once the clock has caught up; a legitimate wait (the hour the
/// backoff stops at, a sender's ten-minute claim) is still honoured.
#[test]
fn an_outbox_attempt_scheduled_before_the_clock_stepped_back_is_due() {
    let mut store = Store::open_in_memory().unwrap();
    let message = NewMessage {
        kind: OutboxKind::Alert,
        subject: "deprovision overdue".into(),
        from: "seatwarden@example.com".into(),
        to: vec!["it@example.com".into()],
        text: "text".into(),
        html: "<p>html</p>".into(),
        in_reply_to: None,
    };
    let waiting = store.enqueue_message(&message, t(0)).unwrap();
    store
        .mark_message_attempt_failed(waiting, "421 try later", Some(t(3600)))
        .unwrap();
    let due = |store: &Store, now| -> Vec<OutboxId> {
        store
            .due_messages(now, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert!(due(&store, t(1)).is_empty(), "the backoff's hour is kept");
    assert!(!store.claim_message(waiting, t(1), t(601)).unwrap());

    // Scheduled by a clock a day ahead, which NTP has since put right.
    let stepped = store.enqueue_message(&message, t(86_400)).unwrap();
    assert_eq!(due(&store, t(1)), [stepped]);
    assert!(store.claim_message(stepped, t(1), t(601)).unwrap());
    // Claimed: the sender's ten minutes are a legitimate wait.
    assert!(due(&store, t(2)).is_empty());
    assert!(!store.claim_message(stepped, t(2), t(602)).unwrap());

    // The clamp allows for the longest wait the mail module schedules.
    let cap = chrono::Duration::from_std(crate::mail::redelivery_delay(u32::MAX)).unwrap();
    assert!(
        outbox::LONGEST_WAIT >= cap + chrono::Duration::minutes(10) + chrono::Duration::hours(1)
    );
}

/// What `approve` and a reconcile's ledger update read: the newest complete
/// directory snapshot of a later run (of any kind, incomplete and refused ones
/// skipped), and
/// whether a run's directory was accepted as a baseline.
#[test]
fn the_newest_complete_directory_after_a_run_and_its_acceptance() {
    let mut store = Store::open_in_memory().unwrap();
    let snapshot = |complete| DirectorySnapshot {
        identities: vec![identity(1, IdentityStatus::Active, &["g"])],
        complete,
    };
    let held = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    store
        .save_directory_snapshot(held, &snapshot(true))
        .unwrap();
    store.accept_directory(held, 1, t(0)).unwrap();
    assert_eq!(store.newest_complete_directory_after(held).unwrap(), None);

    let plan = store.begin_run(RunKind::Plan, t(10)).unwrap();
    store
        .save_directory_snapshot(plan, &snapshot(true))
        .unwrap();
    let partial = store.begin_run(RunKind::Reconcile, t(20)).unwrap();
    store
        .save_directory_snapshot(partial, &snapshot(false))
        .unwrap();
    let unread = store.begin_run(RunKind::Reconcile, t(30)).unwrap();
    assert_eq!(
        store.newest_complete_directory_after(held).unwrap(),
        Some(plan)
    );
    assert_eq!(store.newest_complete_directory_after(plan).unwrap(), None);

    assert!(store.directory_accepted(held).unwrap());
    for run in [plan, partial, unread] {
        assert!(!store.directory_accepted(run).unwrap(), "run {run}");
    }

    // A read the source check refused since (a directory outage) is passed
    // over: the plan's is still the newest sound one.
    let refused = store.begin_run(RunKind::Reconcile, t(40)).unwrap();
    store
        .save_directory_snapshot(refused, &snapshot(true))
        .unwrap();
    store.mark_directory_refused(refused, "empty").unwrap();
    assert_eq!(
        store.newest_complete_directory_after(held).unwrap(),
        Some(plan)
    );
}

/// The disputed matches a reconcile remembers replace the previous run's whole:
/// what it no longer lists is forgotten.
#[test]
fn remembered_disputes_are_replaced_whole() {
    use crate::model::DisputedCandidate;

    let candidate = |identity: &str, account: &str, method| DisputedCandidate {
        identity_id: identity.into(),
        user_name: format!("{identity}@example.com"),
        account_id: account.into(),
        method,
        duplicate_of: None,
        email: None,
    };
    let mut store = Store::open_in_memory().unwrap();
    assert!(store.disputed_candidates().unwrap().is_empty());
    let first = vec![
        candidate("p1", "a2", LinkMethod::Email),
        candidate("p1", "a1", LinkMethod::UserName),
        candidate("p2", "a3", LinkMethod::ExternalId),
    ];
    store.replace_disputed_candidates(&first).unwrap();
    assert_eq!(
        store.disputed_candidates().unwrap(),
        [
            candidate("p1", "a1", LinkMethod::UserName),
            candidate("p1", "a2", LinkMethod::Email),
            candidate("p2", "a3", LinkMethod::ExternalId),
        ]
    );
    assert!(store.remembers_disputed("p1").unwrap());

    store
        .replace_disputed_candidates(&[candidate("p2", "a3", LinkMethod::ExternalId)])
        .unwrap();
    assert_eq!(
        store.disputed_candidates().unwrap(),
        [candidate("p2", "a3", LinkMethod::ExternalId)]
    );
    assert!(!store.remembers_disputed("p1").unwrap());
    assert!(store.remembers_disputed("p2").unwrap());
}

/// Migration 21: a database remembered disputes before duplicates were
/// remembered with the account their person was linked to. Its rows upgrade
/// as disputes (no `duplicate_of`), and a duplicate's is stored and read back.
#[test]
fn migration_21_keeps_remembered_disputes_and_stores_whose_duplicate_an_account_is() {
    use crate::model::DisputedCandidate;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v20.db");
    database_at_version(&path, 20, |tx| {
        tx.execute_batch(
            "INSERT INTO disputed_candidates (identity_id, account_id, user_name, method)
             VALUES ('p1', 'a2', 'ann', 'email');",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    let disputed = DisputedCandidate {
        identity_id: "p1".into(),
        user_name: "ann".into(),
        account_id: "a2".into(),
        method: LinkMethod::Email,
        duplicate_of: None,
        email: None,
    };
    assert_eq!(
        store.disputed_candidates().unwrap(),
        std::slice::from_ref(&disputed)
    );
    let duplicate = DisputedCandidate {
        duplicate_of: Some("a1".into()),
        ..disputed
    };
    store
        .replace_disputed_candidates(std::slice::from_ref(&duplicate))
        .unwrap();
    assert_eq!(store.disputed_candidates().unwrap(), [duplicate]);
}

/// Migration 22: a database remembered duplicates before the person's email
/// was kept beside them. Its rows upgrade with none (the plan takes the
/// remembered userName for it), and an email is stored and read back.
#[test]
fn migration_22_keeps_remembered_duplicates_and_stores_the_persons_email() {
    use crate::model::DisputedCandidate;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v21.db");
    database_at_version(&path, 21, |tx| {
        tx.execute_batch(
            "INSERT INTO disputed_candidates
                 (identity_id, account_id, user_name, method, duplicate_of)
             VALUES ('p1', 'a2', 'ann', 'email', 'a1');",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    let legacy = DisputedCandidate {
        identity_id: "p1".into(),
        user_name: "ann".into(),
        account_id: "a2".into(),
        method: LinkMethod::Email,
        duplicate_of: Some("a1".into()),
        email: None,
    };
    assert_eq!(
        store.disputed_candidates().unwrap(),
        std::slice::from_ref(&legacy)
    );
    let with_email = DisputedCandidate {
        email: Some("ann@example.com".into()),
        ..legacy
    };
    store
        .replace_disputed_candidates(std::slice::from_ref(&with_email))
        .unwrap();
    assert_eq!(store.disputed_candidates().unwrap(), [with_email]);
}

/// The report the daemon restores its reconcile gauges from: the newest
/// succeeded reconcile's, and for the drift the newest of those that rejected
/// no directory; a failed or stopped reconcile's report, and a sweep's, are not.
#[test]
fn the_latest_reconcile_report_skips_what_set_no_gauge() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(
        store
            .latest_reconcile_report(RunKind::Reconcile, false)
            .unwrap(),
        None
    );
    let mut run = |kind, status, json: &str| {
        let run = store.begin_run(kind, t(0)).unwrap();
        store.save_report(run, json).unwrap();
        store.finish_run(run, t(1), status, None).unwrap();
    };
    run(RunKind::Reconcile, RunStatus::Succeeded, r#"{"n": 1}"#);
    run(
        RunKind::Reconcile,
        RunStatus::Succeeded,
        r#"{"n": 2, "safety": {"source_fault": {"reason": "shrank"}}}"#,
    );
    run(RunKind::Reconcile, RunStatus::Failed, r#"{"n": 3}"#);
    run(RunKind::Reconcile, RunStatus::Stopped, r#"{"n": 4}"#);
    run(RunKind::Sweep, RunStatus::Succeeded, r#"{"n": 5}"#);
    run(RunKind::DryRun, RunStatus::Succeeded, r#"{"n": 6}"#);
    run(RunKind::DryRun, RunStatus::Failed, r#"{"n": 7}"#);
    let n = |kind, trusted| {
        let json = store
            .latest_reconcile_report(kind, trusted)
            .unwrap()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["n"].clone()
    };
    assert_eq!(n(RunKind::Reconcile, false), json!(2));
    assert_eq!(n(RunKind::Reconcile, true), json!(1));
    // A daemon in dry run shows its own dry runs' drift.
    assert_eq!(n(RunKind::DryRun, false), json!(6));
}

/// Several opens of one new state database at once (a daemon's first start and
/// `seatwarden status` at a terminal; a daemon test and its own check): the
/// switch to WAL was answered "database is locked" at once, without the busy
/// timeout, and the open failed. (The other race of such opens, a migration
/// committed between the foreign-database check's two reads, which made the
/// daemon exit with "not a seatwarden state database" in a CI rehearsal, is
/// closed by reading both in one statement; its window is too short for this
/// test to hit.) All must open it.
#[test]
fn two_opens_of_a_new_database_at_once_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..150 {
        let path = dir.path().join(format!("state-{round}.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let openers: Vec<_> = (0..3)
            .map(|_| {
                let path = path.clone();
                let barrier = std::sync::Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&path).map(drop)
                })
            })
            .collect();
        for opener in openers {
            if let Err(e) = opener.join().unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}

/// Migration 16 adds `held_decisions.decided_in`: a database at 15 keeps its
/// decisions (decided on their own run), and takes a newer run's rejection of
/// an older run's hold, which names that run.
#[test]
fn held_decisions_take_the_run_that_decided_them_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v15.db");
    database_at_version(&path, 15, |tx| {
        tx.execute_batch(
            "INSERT INTO runs (kind, status, started_at) VALUES
                 ('reconcile', 'succeeded', '2026-12-01T00:00:00Z'),
                 ('reconcile', 'succeeded', '2026-12-01T01:00:00Z');
             INSERT INTO held_decisions (run_id, seq, decision, user, at, detail)
                 VALUES (1, 1, 'approved', 'bob', '2026-12-01T00:30:00Z', NULL);",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    let summary = store.decision_summary(1).unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(
        (
            summary[0].decision,
            summary[0].user.as_str(),
            summary[0].decided_in
        ),
        (Decision::Approved, "bob", None)
    );
    assert!(store.newer_rejections(1).unwrap().is_empty());
    store
        .record_newer_rejection(1, &[1, 2], 2, "alice", t(60))
        .unwrap();
    assert_eq!(
        store.newer_rejections(1).unwrap(),
        [1, 2].map(|seq| NewerRejection {
            seq,
            run: 2,
            user: "alice".to_owned(),
            at: t(60),
        })
    );
    assert_eq!(
        store.decisions(1).unwrap().get(&1),
        Some(&Decision::Rejected)
    );
    let summary = store.decision_summary(1).unwrap();
    assert_eq!(
        (summary.len(), summary[0].count, summary[0].decided_in),
        (1, 2, Some(2))
    );
}

/// Migration 17 adds `alerts.cleared_at` and `flaps`: an alert of a database at
/// 16 holds no resolution and has not flapped (it resolves as it did), and the
/// hold of one seen clear after the upgrade is stored and read back.
#[test]
fn alerts_hold_their_resolution_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v16.db");
    database_at_version(&path, 16, |tx| {
        tx.execute_batch(
            "INSERT INTO alerts (key, condition, state, first_raised_at, last_sent_at,
                                 resolved_at, suppressed, thread_root)
                 VALUES ('circuit_breaker_open', '{}', 'active', '2026-12-01T08:00:00Z',
                         '2026-12-01T08:00:00Z', NULL, 2, '<seatwarden.1.1@example.com>');",
        )
        .unwrap();
    });
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST);
    let old = store.alert("circuit_breaker_open").unwrap().unwrap();
    assert_eq!(
        (old.cleared_at, old.flaps, old.suppressed, old.state),
        (None, 0, 2, AlertRecordState::Active)
    );
    let clearing = AlertRecord {
        cleared_at: Some(t(60)),
        flaps: 3,
        ..old.clone()
    };
    let written = store
        .record_alerts(
            AlertsSeen::Key {
                key: "circuit_breaker_open",
                record: Some(&old),
            },
            std::slice::from_ref(&clearing),
            &[],
            t(60),
        )
        .unwrap();
    assert_eq!(written, Some(Vec::new()));
    assert_eq!(store.alert("circuit_breaker_open").unwrap(), Some(clearing));
}

/// A flood of readiness probes (each takes the write lock for a moment, then
/// reads the jobs, back to back as the HTTP handlers' connection answers them)
/// beside a job's small write transactions: every write gets through within
/// its busy timeout. The times are printed for the review's numbers.
#[test]
fn a_flood_of_probes_fails_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.db");
    let mut writer = Store::open(&path).unwrap();
    let writes = |writer: &mut Store| {
        let started = std::time::Instant::now();
        for i in 0..300 {
            writer.job_started("reconcile", t(i)).unwrap();
        }
        started.elapsed()
    };
    let quiet = writes(&mut writer);
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let flooding = std::sync::Arc::new(AtomicBool::new(true));
    let probed = std::sync::Arc::new(AtomicU64::new(0));
    let prober = {
        let path = path.clone();
        let (flooding, probed) = (
            std::sync::Arc::clone(&flooding),
            std::sync::Arc::clone(&probed),
        );
        std::thread::spawn(move || {
            let probes = Store::open(&path).unwrap();
            while flooding.load(Ordering::SeqCst) {
                probes.probe_writable().unwrap();
                probes.jobs().unwrap();
                probed.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while probed.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let before = probed.load(Ordering::SeqCst);
    let flooded = writes(&mut writer);
    let probes = probed.load(Ordering::SeqCst) - before;
    flooding.store(false, Ordering::SeqCst);
    prober.join().unwrap();
    eprintln!("300 writes: {quiet:?} quiet, {flooded:?} under {probes} probes");
}

/// Opening an up-to-date database is a read: `seatwarden status`, `report`,
/// `explain` and `export` opened it with the migration's `BEGIN IMMEDIATE`,
/// the write lock, even with nothing to migrate. While a daemon job held that
/// lock (the prune's VACUUM, a large snapshot being stored) they waited out the
/// busy timeout and failed with "database is locked", as a migration error.
#[test]
fn opening_an_up_to_date_database_waits_for_no_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, t(0)).unwrap();
    drop(store);
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let opening = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let opened = Store::open_existing(&path).map(|store| store.run(run).map(|r| r.is_some()));
        (opened, started.elapsed())
    });
    let (opened, took) = opening.join().unwrap();
    writer.execute_batch("ROLLBACK").unwrap();
    assert!(matches!(opened, Ok(Ok(true))), "{opened:?}");
    assert!(took < Duration::from_secs(2), "the open waited {took:?}");
}

/// What the daemon's restore raises its protected gauges by: the reports of
/// the succeeded reconciles since the newest whole directory read, whose read
/// was incomplete and not refused. One before that whole read, one refused,
/// one failed and one of another kind count for nothing.
#[test]
fn what_the_incomplete_reads_since_the_last_whole_one_listed_as_protected() {
    let mut store = Store::open_in_memory().unwrap();
    let mut stored = |kind: RunKind, status: RunStatus, json: &str| {
        let run = store.begin_run(kind, t(0)).unwrap();
        store.save_report(run, json).unwrap();
        store.finish_run(run, t(0), status, None).unwrap();
        store
            .incomplete_reads_listed_protected(RunKind::Reconcile)
            .unwrap()
    };
    let reconciled = RunStatus::Succeeded;
    let whole = r#"{"safety":{}}"#;
    let leaver =
        r#"{"safety":{"directory_incomplete":true,"protected_leavers":[{"account_id":"w1"}]}}"#;
    let by_person =
        r#"{"safety":{"directory_incomplete":true,"protected_by_person":[{"account_id":"w2"}]}}"#;
    let neither = r#"{"safety":{"directory_incomplete":true}}"#;
    let refused = r#"{"safety":{"source_fault":{"Empty":null},"protected_leavers":[{}]}}"#;
    use RunKind::{Plan, Reconcile};
    assert_eq!(stored(Reconcile, reconciled, leaver), (false, true));
    assert_eq!(stored(Reconcile, reconciled, whole), (false, false));
    assert_eq!(stored(Reconcile, reconciled, neither), (false, false));
    assert_eq!(stored(Reconcile, reconciled, refused), (false, false));
    assert_eq!(stored(Reconcile, RunStatus::Failed, leaver), (false, false));
    assert_eq!(stored(Plan, reconciled, by_person), (false, false));
    assert_eq!(stored(Reconcile, reconciled, leaver), (false, true));
    // Not lowered by a later incomplete read that does not list them.
    assert_eq!(stored(Reconcile, reconciled, neither), (false, true));
    assert_eq!(stored(Reconcile, reconciled, by_person), (true, true));
    assert_eq!(stored(Reconcile, reconciled, whole), (false, false));
    // A workspace listing short does not show every account either.
    let short = r#"{"safety":{"workspace_listing_short":true,"protected_leavers":[{}]}}"#;
    assert_eq!(stored(Reconcile, reconciled, short), (false, true));
    assert_eq!(stored(Reconcile, reconciled, whole), (false, false));
}

/// What `approve` notes as its read ahead of the writer lock begins: the runs
/// after the approved one, up to the newest, still at work.
#[test]
fn runs_at_work_between_lists_only_those_still_running() {
    let mut store = Store::open_in_memory().unwrap();
    let now = Utc::now();
    let held = store.begin_run(RunKind::Reconcile, now).unwrap();
    let finished = store.begin_run(RunKind::Plan, now).unwrap();
    store
        .finish_run(finished, now, RunStatus::Succeeded, None)
        .unwrap();
    let reading = store.begin_run(RunKind::Reconcile, now).unwrap();
    let later = store.begin_run(RunKind::Plan, now).unwrap();
    assert_eq!(
        store.runs_at_work_between(held, reading).unwrap(),
        vec![reading]
    );
    assert_eq!(
        store.runs_at_work_between(held, later).unwrap(),
        vec![reading, later]
    );
    assert!(
        store
            .runs_at_work_between(reading, reading)
            .unwrap()
            .is_empty()
    );
}

/// A plan whose one action, the deactivation of account `a0`, is held (an
/// incomplete directory read).
fn held_deactivation_of_a0() -> Plan {
    Plan {
        actions: vec![action(
            0,
            ActionKind::Deactivate {
                account_id: "a0".into(),
            },
            Some(HoldReason::IncompleteDirectory),
        )],
        ..Plan::default()
    }
}

/// The newest decision about a person's held deprovision decides, in any run:
/// an approval that released it counts until a later run's rejection, a
/// rejection at the very moment of an approval refuses, and an approval after a
/// rejection counts again. Both readers (`deprovisions_approved` for the
/// look-alike episodes, `approved_deprovisions` for the guard and the retry
/// job) answer alike.
#[test]
fn the_newest_decision_about_a_held_deprovision_decides_and_a_tied_rejection_refuses() {
    let mut store = Store::open_in_memory().unwrap();
    let person = vec!["00u0".to_owned()];
    let held = held_deactivation_of_a0;
    let decide = |store: &mut Store, at: i64, decision: Decision| {
        let run = store.begin_run(RunKind::Reconcile, t(at)).unwrap();
        store.save_plan(run, &held(), t(at)).unwrap();
        store
            .record_decisions(run, &[(0, decision, None)], "admin", t(at))
            .unwrap();
        if decision == Decision::Approved {
            store.approve_held(run, t(at)).unwrap();
        }
        run
    };
    let approved_at = |store: &Store| {
        let by_time = store.deprovisions_approved(&person).unwrap();
        let full = store.approved_deprovisions(&person).unwrap();
        assert_eq!(
            by_time.get("00u0").copied(),
            full.get("00u0").map(|a| a.at),
            "the two readers disagree"
        );
        full.get("00u0").map(|a| (a.run, a.at, a.accounts.clone()))
    };

    let first = decide(&mut store, 10, Decision::Approved);
    assert_eq!(
        approved_at(&store),
        Some((first, t(10), vec!["a0".to_owned()]))
    );
    decide(&mut store, 20, Decision::Rejected);
    assert_eq!(approved_at(&store), None, "a later rejection stands");
    let again = decide(&mut store, 30, Decision::Approved);
    assert_eq!(
        approved_at(&store),
        Some((again, t(30), vec!["a0".to_owned()]))
    );
    // A rejection recorded at the same moment as an approval, of a newer run
    // (the run id alone would put the approval first): it still refuses. (A
    // rejection of an older run decides that run alone:
    // `a_rejection_of_an_older_run_leaves_a_newer_approval_standing`.)
    let approved = store.begin_run(RunKind::Reconcile, t(40)).unwrap();
    store.save_plan(approved, &held(), t(40)).unwrap();
    let newer = decide(&mut store, 45, Decision::Rejected);
    store
        .record_decisions(approved, &[(0, Decision::Approved, None)], "admin", t(50))
        .unwrap();
    store.approve_held(approved, t(50)).unwrap();
    store
        .record_decisions(newer, &[(0, Decision::Rejected, None)], "admin", t(50))
        .unwrap();
    assert_eq!(approved_at(&store), None, "a tied rejection refuses");
}

/// `reject` of the approved run itself replaces the approval's record; the
/// approval taken back is dated by the row's release (its last change), not by
/// the rejection: `reject 8` of a run whose approval was kept back unsent months
/// ago would otherwise pass for an approval of the person's episode open now,
/// and hold a plain leaver's deprovision from the retry job.
#[test]
fn an_approval_its_own_run_rejected_keeps_the_time_it_was_released() {
    let mut store = Store::open_in_memory().unwrap();
    let person = vec!["00u0".to_owned()];
    let run = store.begin_run(RunKind::Reconcile, t(10)).unwrap();
    let plan = held_deactivation_of_a0();
    store.save_plan(run, &plan, t(10)).unwrap();
    store
        .record_decisions(run, &[(0, Decision::Approved, None)], "admin", t(10))
        .unwrap();
    store.approve_held(run, t(10)).unwrap();
    store
        .record_decisions(run, &[(0, Decision::Rejected, None)], "admin", t(500))
        .unwrap();

    let taken_back = store.rejected_approvals(&person).unwrap();
    let decided = taken_back.get("00u0").expect("the approval was taken back");
    assert_eq!(decided.approval.run, run);
    assert_eq!(decided.approval.at, t(10), "dated by the rejection");
    assert_eq!(decided.rejection.at, t(500));
}

/// `reject 7` after `approve 8` (a person clearing an old run that held the
/// same deactivation) decides run 7's plan, not run 8's approval: the approval
/// stands, and the retry job still sends it. Before, the rejection, being the
/// later decision, took run 8's approval back and the leaver kept access until
/// someone approved again.
#[test]
fn a_rejection_of_an_older_run_leaves_a_newer_approval_standing() {
    let mut store = Store::open_in_memory().unwrap();
    let person = vec!["00u0".to_owned()];
    let plan = held_deactivation_of_a0();
    let older = store.begin_run(RunKind::Reconcile, t(10)).unwrap();
    store.save_plan(older, &plan, t(10)).unwrap();
    let newer = store.begin_run(RunKind::Reconcile, t(20)).unwrap();
    store.save_plan(newer, &plan, t(20)).unwrap();
    store
        .record_decisions(newer, &[(0, Decision::Approved, None)], "admin", t(30))
        .unwrap();
    store.approve_held(newer, t(30)).unwrap();
    store
        .record_decisions(older, &[(0, Decision::Rejected, None)], "admin", t(40))
        .unwrap();

    let approved = store.approved_deprovisions(&person).unwrap();
    assert_eq!(
        approved.get("00u0").map(|a| a.run),
        Some(newer),
        "run {newer}'s approval stands: {approved:?}"
    );
    assert!(store.rejected_approvals(&person).unwrap().is_empty());

    // A rejection of the approved run itself, or of a newer one, still takes
    // it back.
    store
        .record_decisions(newer, &[(0, Decision::Rejected, None)], "admin", t(50))
        .unwrap();
    assert!(store.approved_deprovisions(&person).unwrap().is_empty());
    assert_eq!(
        store
            .rejected_approvals(&person)
            .unwrap()
            .get("00u0")
            .map(|r| r.approval.run),
        Some(newer)
    );
}

/// The state folder's owner flips `state.db-wal` between a plain file others
/// may read and a link to a file of theirs while the mode is tightened: the
/// file the link leads to keeps its mode. Before, the mode was looked at on
/// the name and then set on the name, following a link swapped in between
/// (as root, a `chmod 0600` of any file, `/etc/passwd` say).
#[cfg(unix)]
#[test]
fn tightening_the_mode_follows_no_link_swapped_in_for_a_side_file() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("state.db");
    std::fs::write(&database, b"").unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wal = dir.path().join("state.db-wal");
    let elsewhere = dir.path().join("elsewhere.file");
    std::fs::write(&elsewhere, b"").unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flipper = {
        let (dir, wal, elsewhere, stop) = (
            dir.path().to_owned(),
            wal.clone(),
            elsewhere.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let plain = dir.join("plain");
            let link = dir.join("link");
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&plain, b"").unwrap();
                std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
                std::fs::rename(&plain, &wal).unwrap();
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
                std::fs::rename(&link, &wal).unwrap();
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut chmodded = false;
    while std::time::Instant::now() < deadline {
        restrict_permissions(&database);
        let mode = std::fs::metadata(&elsewhere).unwrap().permissions().mode() & 0o777;
        if mode != 0o644 {
            chmodded = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(
        !chmodded,
        "the mode of the file a swapped-in link leads to was changed"
    );
}
