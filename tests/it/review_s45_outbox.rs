//! Session 45's review of the outbox after a relay outage, as the on-call
//! engineer: once the relay is back, the mail that waited for it goes out
//! within a minute, not an hour later; `send-mail` flushes everything pending;
//! the metrics show the messages refused for good.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::fixtures::plain_mail_settings;
use crate::review_s45_mail::{ordinary, relay};
use seatwarden::mail::{self, Mailer};
use seatwarden::store::{NewMessage, OutboxKind, OutboxState, Store};

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, 0).unwrap()
}

fn message(kind: OutboxKind, subject: &str, in_reply_to: Option<String>) -> NewMessage {
    NewMessage {
        kind,
        subject: subject.to_owned(),
        from: "seatwarden@example.com".to_owned(),
        to: vec!["it-security@example.com".to_owned()],
        text: "t".to_owned(),
        html: "<p>h</p>".to_owned(),
        in_reply_to,
    }
}

/// After an outage every message kept its own backoff (up to an hour): once
/// the relay was back, the first message due went out, and the oldest alert,
/// with the resolution queued behind it in its thread, waited out its hour.
/// Now the relay's first acceptance makes the waiting messages due in the same
/// call, the alert before its resolution; a message another sender holds
/// (claimed, its send in flight) is left to it, not sent a second time.
#[tokio::test]
async fn once_the_relay_takes_a_message_the_ones_waiting_on_backoff_go_out_in_the_same_call() {
    let (port, log) = relay(|verb| Some(ordinary(verb)), Duration::ZERO);
    let settings = plain_mail_settings(port);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();

    // The outage: the alert failed at 08:00 and waits until 09:00.
    let alert = store
        .enqueue_message(&message(OutboxKind::Alert, "overdue", None), at(8, 0))
        .unwrap();
    store
        .mark_message_attempt_failed(alert, "connection refused", Some(at(9, 0)))
        .unwrap();
    let root = store.outbox().unwrap()[0].message_id();
    // Its resolution, due, but behind the alert in its thread.
    let resolution = store
        .enqueue_message(
            &message(OutboxKind::Resolution, "resolved", Some(root)),
            at(8, 2),
        )
        .unwrap();
    // Claimed by another sender (send-mail in a shell) until 08:20.
    let held = store
        .enqueue_message(&message(OutboxKind::Report, "held", None), at(8, 3))
        .unwrap();
    assert!(store.claim_message(held, at(8, 4), at(8, 20)).unwrap());
    // The relay is back; a digest is due.
    let digest = store
        .enqueue_message(&message(OutboxKind::Digest, "digest", None), at(8, 5))
        .unwrap();

    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 6))
        .await
        .unwrap();

    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (3, 0, 0),
        "{delivery:?}"
    );
    let outbox = store.outbox().unwrap();
    let state = |id| outbox.iter().find(|e| e.id == id).unwrap().state;
    assert_eq!(state(digest), OutboxState::Sent);
    assert_eq!(state(alert), OutboxState::Sent, "not at 09:00");
    assert_eq!(state(resolution), OutboxState::Sent);
    assert_eq!(state(held), OutboxState::Pending, "its sender sends it");
    let copies = log.lock().unwrap().iter().filter(|v| *v == ".").count();
    assert_eq!(copies, 3);
    let sent_at = |id| outbox.iter().find(|e| e.id == id).unwrap().sent_at;
    assert!(sent_at(alert) <= sent_at(resolution), "{outbox:?}");
    assert_eq!(sent_at(held), None, "a claim is not shown as a send");
}

/// `seatwarden send-mail`, the operator's flush once the relay is fixed, could
/// not force out a message waiting for its next attempt: it exited 1 saying
/// when the attempt was due. Now it sends every pending message at once.
#[test]
fn send_mail_sends_the_messages_waiting_on_backoff_now() {
    let (port, log) = relay(|verb| Some(ordinary(verb)), Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), r#"{"users": []}"#).unwrap();
    let config_path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[directory]
kind = "file"
path = "directory.json"

[workspace]
url = "https://acme.taskade.example/scim/v2"
token = "s3cr3t-token-value"

[report.email]
smtp_url = "smtp://127.0.0.1:{port}"
from = "seatwarden@example.com"
to = ["it-security@example.com"]
"#
        ),
    )
    .unwrap();
    let config =
        seatwarden::config::Config::load_with_env(&config_path, Some(Default::default())).unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    let now = Utc::now();
    for subject in ["first", "second"] {
        let id = store
            .enqueue_message(&message(OutboxKind::Alert, subject, None), now)
            .unwrap();
        store
            .mark_message_attempt_failed(
                id,
                "connection refused",
                Some(now + chrono::Duration::minutes(50)),
            )
            .unwrap();
    }
    drop(store);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&config_path)
        .arg("send-mail")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let store = Store::open(&config.state.path).unwrap();
    let outbox = store.outbox().unwrap();
    assert!(
        outbox.iter().all(|e| e.state == OutboxState::Sent),
        "{outbox:?}"
    );
    let copies = log.lock().unwrap().iter().filter(|v| *v == ".").count();
    assert_eq!(copies, 2);
}

/// A relay refusing our login (535): the refused message waits for its backoff,
/// and the other due messages used to stay due, so the daemon logged in again
/// each minute with the next one, refused each time (a few can lock the relay
/// account). Now they wait with it: one login per backoff. A relay that is
/// down is still tried each minute (see the first test for its return).
#[tokio::test]
async fn a_relay_refusing_our_login_puts_off_every_due_message_with_the_refused_one() {
    let (port, log) = relay(
        |verb| {
            Some(match verb {
                "AUTH" => "535 5.7.8 Username and Password not accepted\r\n",
                other => ordinary(other),
            })
        },
        Duration::ZERO,
    );
    let mut settings = plain_mail_settings(port);
    settings.username = Some("seatwarden-relay".into());
    settings.password = Some("Secret-Never-Shown-9".to_owned().into());
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    for subject in ["first", "second", "third"] {
        store
            .enqueue_message(&message(OutboxKind::Alert, subject, None), at(8, 0))
            .unwrap();
    }

    for minute in 0..3 {
        mail::deliver_due(&mut store, &mailer, settings.retry, at(8, minute))
            .await
            .unwrap();
    }

    let logins = log.lock().unwrap().iter().filter(|v| *v == "AUTH").count();
    assert_eq!(
        logins, 2,
        "at 08:00 and at 08:01, when its backoff ended; not at 08:02"
    );
    let outbox = store.outbox().unwrap();
    assert!(
        outbox.iter().all(|e| e.state == OutboxState::Pending),
        "{outbox:?}"
    );
    assert_eq!(
        outbox.iter().map(|e| e.attempts).collect::<Vec<_>>(),
        [2, 0, 0],
        "the others wait with it, untried"
    );
}
