//! Session 48 review of `seatwarden unlink` (and `link`, its other half): the
//! link's change, the ledger change and the audit row are one decision. Written
//! one after another, each committed apart, a failure after the link was
//! changed (the audit insert refused: a full disk, an I/O error) left the link
//! changed and the open deprovision moved with no audit row saying who did it,
//! and the command failed as if nothing had been done.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use seatwarden::model::{LinkMethod, NewLink};
use seatwarden::store::Store;

use crate::qa_cli::{account, first_plan_stored, person};
use crate::review_s48_unlink::{open_deprovision, run};

/// Makes every audit insert fail from now on, as a full disk would; dropping
/// the trigger `audit_fails` ends it.
fn fail_audit_inserts(database: &std::path::Path) {
    rusqlite::Connection::open(database)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER audit_fails BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )
        .unwrap();
}

/// An unlink whose audit row cannot be written changes nothing: the link
/// stays, the open deprovision still names the account, and no half of the
/// decision is left unaudited. Once the audit takes rows again, the same
/// unlink goes through whole.
#[test]
fn unlink_is_all_or_nothing_when_its_audit_row_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u7", "carl@example.com", "carl@example.com")],
        vec![account("w7", "c.temp@example.com", "c.temp@example.com")],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[policy]\nunmatched_accounts = \"deactivate\"\n"),
    )
    .unwrap();
    let database = dir.path().join("state.db");
    let now = Utc::now();
    let mut store = Store::open(&database).unwrap();
    store
        .upsert_links(
            &[NewLink {
                identity_id: "00u7".into(),
                account_id: "w7".into(),
                method: LinkMethod::Manual,
            }],
            now,
        )
        .unwrap();
    drop(store);
    open_deprovision(&database, "00u7", Some("w7"), "carl@example.com", now);
    // The audit refuses its next row, as a full disk would.
    fail_audit_inserts(&database);

    let (code, out, err) = run(&config, &["unlink", "w7"]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(err.contains("database or disk is full"), "{err}");
    let store = Store::open(&database).unwrap();
    let links: Vec<(String, String)> = store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    assert_eq!(
        links,
        [("00u7".into(), "w7".into())],
        "the link was removed"
    );
    let open = store.open_deprovisions().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        open[0].account_id.as_deref(),
        Some("w7"),
        "the episode was changed"
    );
    assert!(store.audit().unwrap().is_empty());
    drop(store);

    let db = rusqlite::Connection::open(&database).unwrap();
    db.execute_batch("DROP TRIGGER audit_fails;").unwrap();
    drop(db);
    let (code, out, err) = run(&config, &["unlink", "w7"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let store = Store::open(&database).unwrap();
    assert!(store.links().unwrap().is_empty());
    assert_eq!(store.open_deprovisions().unwrap()[0].account_id, None);
    let audit = store.audit().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].detail, "unlinked identity 00u7 from account w7");
}

/// The same for `link`: an audit row refused leaves no link stored and the
/// open deprovision of the person as it was.
#[test]
fn link_is_all_or_nothing_when_its_audit_row_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u7", "carl@example.com", "carl@example.com")],
        vec![account("w7", "c.temp@example.com", "c.temp@example.com")],
    );
    let database = dir.path().join("state.db");
    let now = Utc::now();
    open_deprovision(&database, "00u7", None, "carl@example.com", now);
    fail_audit_inserts(&database);

    let (code, out, err) = run(&config, &["link", "00u7", "w7"]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(err.contains("database or disk is full"), "{err}");
    let store = Store::open(&database).unwrap();
    assert!(store.links().unwrap().is_empty(), "the link was stored");
    assert_eq!(
        store.open_deprovisions().unwrap()[0].account_id,
        None,
        "the episode was changed"
    );
    drop(store);

    let db = rusqlite::Connection::open(&database).unwrap();
    db.execute_batch("DROP TRIGGER audit_fails;").unwrap();
    drop(db);
    let (code, out, err) = run(&config, &["link", "00u7", "w7"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let store = Store::open(&database).unwrap();
    assert_eq!(store.links().unwrap().len(), 1);
    assert_eq!(
        store.open_deprovisions().unwrap()[0].account_id.as_deref(),
        Some("w7")
    );
    assert_eq!(store.audit().unwrap().len(), 1);
}
