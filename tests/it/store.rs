//! The store through its public API only: one reconciliation's worth of writes
//! against a file database, then a reopen as after a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{TimeZone, Utc};
use seatwarden::model::{
    Account, Action, ActionKind, DirectorySnapshot, DriftItem, DriftKind, Identity, IdentityStatus,
    LinkMethod, NewLink, Plan, WorkspaceGroup, WorkspaceSnapshot,
};
use seatwarden::store::{ActionState, RunKind, RunStatus, Store, StoreError};

fn store_is_send<T: Send>() {}
fn error_is_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn one_run_end_to_end_then_resume_after_a_crash() {
    store_is_send::<Store>();
    error_is_send_sync::<StoreError>();
    let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.db");

    let run = {
        let mut store = Store::open(&path).unwrap();
        store.check_writable().unwrap();
        let run = store.begin_run(RunKind::Reconcile, at(0)).unwrap();
        let directory = DirectorySnapshot {
            identities: vec![Identity {
                id: "00u1".into(),
                user_name: "ada@example.com".into(),
                email: None,
                given_name: Some("Ada".into()),
                family_name: None,
                display_name: None,
                status: IdentityStatus::Deprovisioned,
                department: None,
                groups: vec!["Engineering".into()],
            }],
            complete: true,
        };
        let workspace = WorkspaceSnapshot {
            accounts: vec![Account {
                id: "a1".into(),
                user_name: "ada@example.com".into(),
                external_id: Some("00u1".into()),
                given_name: Some("Ada".into()),
                family_name: None,
                display_name: None,
                email: Some("ada@example.com".into()),
                active: true,
                roles: vec!["Editor".into()],
            }],
            groups: vec![WorkspaceGroup {
                id: "g1".into(),
                display_name: "Engineering".into(),
                members: vec!["a1".into()],
            }],
        };
        store.save_directory_snapshot(run, &directory).unwrap();
        store.save_workspace_snapshot(run, &workspace).unwrap();
        store
            .upsert_links(
                &[NewLink {
                    identity_id: "00u1".into(),
                    account_id: "a1".into(),
                    method: LinkMethod::ExternalId,
                }],
                at(1),
            )
            .unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: "a1".into(),
                },
                reason: DriftKind::StaleAccess,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: "identity is deprovisioned in the directory".into(),
                held: None,
            }],
            drift: vec![DriftItem {
                kind: DriftKind::StaleAccess,
                identity_id: Some("00u1".into()),
                account_id: Some("a1".into()),
                user_name: "ada@example.com".into(),
                detail: "identity is deprovisioned in the directory".into(),
                conflict: None,
            }],
            new_links: vec![],
            retained: vec![],
            disputed_leavers: vec![],
            protected_by_person: vec![],
            excepted: vec![],
            protected_leavers: vec![],
            disputed_candidates: vec![],
        };
        store.save_plan(run, &plan, at(2)).unwrap();
        store.mark_in_flight(run, 0, at(3)).unwrap();
        assert_eq!(store.load_directory_snapshot(run).unwrap(), Some(directory));
        assert_eq!(store.load_workspace_snapshot(run).unwrap(), Some(workspace));
        run
        // the process dies here, mid-apply
    };

    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.path(), Some(path.as_path()));
    let interrupted = store.interrupted().unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].run, run);
    assert_eq!(interrupted[0].state, ActionState::InFlight);
    store.mark_in_flight(run, 0, at(10)).unwrap();
    store.mark_applied(run, 0, at(11), None).unwrap();
    assert_eq!(store.journal(run).unwrap()[0].attempts, 2);
    store.save_report(run, r#"{"applied": 1}"#).unwrap();
    store
        .finish_run(run, at(12), RunStatus::Succeeded, None)
        .unwrap();

    let latest = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(latest.id, run);
    assert_eq!(latest.status, RunStatus::Succeeded);
    assert_eq!(store.links().unwrap().len(), 1);
    assert_eq!(store.drift(run).unwrap().len(), 1);
    assert_eq!(
        store.report(run).unwrap().as_deref(),
        Some(r#"{"applied": 1}"#)
    );
    assert!(store.interrupted().unwrap().is_empty());
}
