//! The state database failing under the program: a write refused mid-run (a
//! full disk, a read-only file, a lock held past the busy timeout) must lose
//! nothing that was already done in the workspace, and send nothing twice.
//! Faults are injected with SQLite triggers on the real file: they persist in
//! its schema, so every connection the program opens meets them, and one
//! statement refused is as a full disk refuses it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::{Account, WorkspaceSnapshot};
use seatwarden::run::{self, Mode};
use seatwarden::store::{RunStatus, Store};

use crate::fixtures::{ada_config, sandbox};

fn ada_account() -> Account {
    Account {
        id: "acc-1".into(),
        user_name: "ada@example.com".into(),
        external_id: Some("00u1".into()),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        display_name: Some("Ada Lovelace".into()),
        email: Some("ada@example.com".into()),
        active: true,
        roles: vec!["Viewer".into()],
    }
}

/// Makes every `op` (INSERT, UPDATE) on `table` in the database at `path` fail
/// with SQLite's message for a full disk, until [`heal`].
fn refuse(path: &std::path::Path, name: &str, op: &str, table: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TRIGGER {name} BEFORE {op} ON {table}
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;"
    ))
    .unwrap();
}

pub(crate) fn heal(path: &std::path::Path, name: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!("DROP TRIGGER {name}")).unwrap();
}

/// A reconcile deactivated a leaver, and then could not write her episode into
/// the same-day ledger (the disk full by then); its run was still closed
/// `failed`. Her account is inactive, so no later run plans her again, and her
/// row is applied, not in flight, so no recovery sees it: the next run must
/// record the deactivation the failed one could not, once.
#[tokio::test]
async fn a_deactivation_whose_ledger_write_failed_is_recorded_by_the_next_run() {
    let sandbox = sandbox(
        "t0ken",
        WorkspaceSnapshot {
            accounts: vec![ada_account()],
            groups: Vec::new(),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(sandbox.base_url().as_str(), dir.path(), "deprovisioned");
    drop(Store::open(&config.state.path).unwrap());
    refuse(&config.state.path, "full_ledger", "INSERT", "deprovisions");

    let error = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("database or disk is full"), "{error}");
    assert!(!sandbox.snapshot().accounts[0].active, "{error}");
    let store = Store::open(&config.state.path).unwrap();
    let failed = store.latest_run(&[]).unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed, "{failed:?}");
    assert!(store.deprovision_history("00u1", 5).unwrap().is_empty());
    drop(store);

    heal(&config.state.path, "full_ledger");
    let outcome = crate::fixtures::reconcile(&config).await;
    assert_eq!(outcome.plan.actions.len(), 0, "{:?}", outcome.plan);
    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history("00u1", 5).unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert!(history[0].verified_at.is_some(), "{history:#?}");
    assert_eq!(history[0].detected_at, failed.started_at, "{history:#?}");

    // Once: a further run records nothing more.
    drop(store);
    crate::fixtures::reconcile(&config).await;
    let history = Store::open(&config.state.path)
        .unwrap()
        .deprovision_history("00u1", 5)
        .unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
}

/// Makes `op` on `table` fail as a full disk does, when `when` holds of the row.
pub(crate) fn refuse_when(path: &std::path::Path, name: &str, op: &str, table: &str, when: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TRIGGER {name} BEFORE {op} ON {table} WHEN {when}
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;"
    ))
    .unwrap();
}

fn at(hour: u32, minute: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(2026, 12, 1, hour, minute, 0)
        .unwrap()
}

/// The relay took the alert, and its row could not be marked `sent` (the disk
/// full). The row stayed pending under its sender's claim, and once the claim
/// ran out the next delivery sent the alert a second time, to people paged by
/// it. The sender keeps what it sent: the next call marks it and sends nothing.
#[tokio::test]
async fn a_message_whose_sent_mark_failed_is_not_sent_again() {
    use seatwarden::mail::{self, Mailer};
    use seatwarden::store::{NewMessage, OutboxKind, OutboxState};
    let (port, log) = crate::review_s45_mail::relay(
        |verb| Some(crate::review_s45_mail::ordinary(verb)),
        std::time::Duration::ZERO,
    );
    let settings = crate::fixtures::plain_mail_settings(port);
    let mailer = Mailer::new(&settings).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    let id = store
        .enqueue_message(
            &NewMessage {
                kind: OutboxKind::Alert,
                subject: "deprovision of ada@example.com is overdue".into(),
                from: "seatwarden@example.com".into(),
                to: vec!["it-security@example.com".into()],
                text: "t".into(),
                html: "<p>h</p>".into(),
                in_reply_to: None,
            },
            at(8, 0),
        )
        .unwrap();
    refuse_when(
        &path,
        "full_outbox",
        "UPDATE OF state",
        "outbox",
        "NEW.state = 'sent'",
    );
    let sent = || log.lock().unwrap().iter().filter(|v| *v == ".").count();

    let error = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 1))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(sent(), 1, "{error}");
    assert!(error.contains(&format!("message {id}")), "{error}");

    heal(&path, "full_outbox");
    // Past any claim (an hour at most).
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(9, 30))
        .await
        .unwrap();
    assert_eq!(sent(), 1, "sent again: {delivery:?}");
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox[0].state, OutboxState::Sent, "{outbox:#?}");
}

/// A state database that is not one (overwritten, truncated) or damaged in its
/// schema: every command failed with SQLite's words and the path, and nothing
/// said what to do about it. Now it says to restore the last backup.
#[test]
fn a_damaged_state_database_says_to_restore_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config("http://127.0.0.1:9/scim/v2", dir.path(), "active");
    let path = config.state.path.clone();
    let check = |what: &str| {
        for args in [&["status"][..], &["reconcile"][..], &["report"][..]] {
            let (code, stderr) = crate::fixtures::seatwarden_in(dir.path(), &[], args);
            assert_eq!(code, Some(1), "{what} {args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("the state database {} is damaged", path.display()))
                    && stderr.contains("restore the last backup"),
                "{what} {args:?}: {stderr}"
            );
        }
    };
    std::fs::write(&path, "not a database ".repeat(300)).unwrap();
    check("not SQLite");

    std::fs::remove_file(&path).unwrap();
    drop(Store::open(&path).unwrap());
    // The schema's page, past the file header, overwritten.
    let mut bytes = std::fs::read(&path).unwrap();
    for byte in bytes.iter_mut().take(4000).skip(100) {
        *byte = 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    check("a damaged schema page");
}
