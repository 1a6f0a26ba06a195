//! Session 59: review of session 58's operator-facing changes. A run refused
//! by the source check before seatwarden kept the check's words (migration
//! 20) has no reason stored: `report --run` says so, and where it was said.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::review_s58_approve2::a_refused_run_without_a_report;

/// A run refused (and failed before its report) by a build before migration
/// 20 is marked refused with no reason: `report --run` said nothing of the
/// refusal at all, though `export` and `explain` send the operator there for it.
#[test]
fn report_of_a_refused_run_from_before_its_reason_was_kept_says_it_was_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (refused, _) = a_refused_run_without_a_report(dir.path());
    // As migration 20 leaves a run an older build refused: no reason beside the flag.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    db.execute(
        "UPDATE runs SET directory_refused_why = NULL WHERE id = ?1",
        [refused],
    )
    .unwrap();
    drop(db);

    let (code, stderr) =
        crate::fixtures::seatwarden_in(dir.path(), &[], &["report", "--run", &refused.to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the workspace answered 503"), "{stderr}");
    assert!(
        stderr.contains(
            "the source check refused its directory (why is not recorded: the seatwarden \
             that refused it did not keep it; its log says why, at \"directory snapshot \
             rejected\")"
        ),
        "{stderr}"
    );
}

/// A message the relay took whose `sent` mark the database refused (a full
/// disk) is this process's to mark: while it is unmarked the process keeps the
/// sender lock, so another sender (a `send-mail` beside the daemon) does not
/// find itself alone and release the claim, which would send it again. Once
/// marked, the lock is let go.
#[tokio::test]
async fn a_sender_with_a_message_sent_but_unmarked_keeps_the_sender_lock_until_it_marks_it() {
    use chrono::TimeZone;
    use seatwarden::mail::{self, Mailer};
    use seatwarden::store::{OutboxKind, OutboxState, SenderLock, Senders, Store};
    use std::time::Duration;

    use crate::review_s55_storage::{heal, refuse_when};

    let at = |minute: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 6, 8, minute, 0)
            .unwrap()
    };
    let (port, log) = crate::review_s45_mail::relay(
        |verb| Some(crate::review_s45_mail::ordinary(verb)),
        Duration::ZERO,
    );
    let settings = crate::fixtures::plain_mail_settings(port);
    let mailer = Mailer::new(&settings).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("state.db");
    let mut store = Store::open(&database).unwrap();
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "deprovision of ada@example.com is overdue",
        "text",
        "<p>html</p>",
        at(0),
    )
    .unwrap();
    let sent = || log.lock().unwrap().iter().filter(|v| *v == ".").count();
    let alone = |senders: Senders| matches!(senders, Senders::Alone(_));

    refuse_when(
        &database,
        "full_outbox",
        "UPDATE OF state",
        "outbox",
        "NEW.state = 'sent'",
    );
    let error = mail::deliver_due(&mut store, &mailer, settings.retry, at(1))
        .await
        .unwrap_err();
    assert_eq!(sent(), 1, "{error}");
    assert!(
        !alone(SenderLock::take(&database).await.unwrap()),
        "another sender took the unmarked message's claim for a dead one's"
    );

    heal(&database, "full_outbox");
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(2))
        .await
        .unwrap();
    assert_eq!(sent(), 1, "sent again: {delivery:?}");
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Sent);
    assert!(
        alone(SenderLock::take(&database).await.unwrap()),
        "the sender lock is kept after the mark"
    );
}
