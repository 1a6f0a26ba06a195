//! Session 46's review of mail delivery after a relay outage, as the operator:
//! a relay that was down is tried again within minutes of its return even with
//! one alert queued, while one that answered keeps its backoff; and a relay
//! login fixed and reloaded (SIGHUP) is tried at once, not an hour later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::fixtures::plain_mail_settings;
use crate::review_s40_mail::silent_relay;
use crate::review_s45_mail::{ordinary, relay};
use seatwarden::mail::{self, Mailer};
use seatwarden::store::{NewMessage, OutboxKind, OutboxState, Store};

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, 0).unwrap()
}

fn message(subject: &str) -> NewMessage {
    NewMessage {
        kind: OutboxKind::Alert,
        subject: subject.to_owned(),
        from: "seatwarden@example.com".to_owned(),
        to: vec!["it-security@example.com".to_owned()],
        text: "t".to_owned(),
        html: "<p>h</p>".to_owned(),
        in_reply_to: None,
    }
}

/// Queues `subject` at `now` as a message that already failed `failures` times
/// (a relay outage of an hour or more) and is due at `now`.
fn failed_before(store: &mut Store, subject: &str, failures: u32, now: DateTime<Utc>) {
    let id = store.enqueue_message(&message(subject), now).unwrap();
    for _ in 0..failures {
        store
            .mark_message_attempt_failed(id, "connection refused", Some(now))
            .unwrap();
    }
}

/// One delivery call at 08:00 with one alert that failed six times before
/// (its backoff is at the hour now), against `port`: the alert's next attempt.
async fn next_attempt_after_one_call(settings: &mail::MailSettings) -> DateTime<Utc> {
    let mailer = Mailer::new(settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    failed_before(
        &mut store,
        "deprovision of ada@example.com is overdue",
        6,
        at(8, 0),
    );
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    assert_eq!((delivery.sent, delivery.retrying), (0, 1), "{delivery:?}");
    let row = &store.outbox().unwrap()[0];
    assert_eq!(row.state, OutboxState::Pending);
    assert_eq!(row.attempts, 7);
    row.next_attempt_at
}

/// A relay that is down (nothing listens: connection refused) with one alert
/// queued: nothing else probes it, and the alert's backoff had grown to an
/// hour, so the alert went out up to an hour after the relay came back. A
/// failure that never reached the relay now waits five minutes at most.
#[tokio::test]
async fn a_relay_refusing_connections_is_tried_again_within_five_minutes() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let next = next_attempt_after_one_call(&plain_mail_settings(port)).await;
    assert_eq!(next, at(8, 5), "capped at five minutes, not 09:00");
}

/// A relay that takes the connection and never greets (a hung MTA, a firewall):
/// no SMTP reply either, so the same cap; and the other due messages, put off
/// with it (not retried within the call), wait no longer than it.
#[tokio::test]
async fn a_relay_that_never_greets_is_tried_again_within_five_minutes() {
    let mut settings = plain_mail_settings(silent_relay());
    settings.timeout = Duration::from_millis(500);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    failed_before(&mut store, "overdue", 6, at(8, 0));
    failed_before(&mut store, "digest", 0, at(8, 0));

    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();

    assert!(
        delivery
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no SMTP greeting within")),
        "{delivery:?}"
    );
    let outbox = store.outbox().unwrap();
    assert_eq!(
        outbox
            .iter()
            .map(|e| (e.attempts, e.next_attempt_at))
            .collect::<Vec<_>>(),
        [(7, at(8, 5)), (0, at(8, 5))],
        "{outbox:?}"
    );
}

/// A relay that answered keeps the full backoff: a 4xx (greylisting asks to
/// come back later, not every five minutes) and a refused login (another try
/// with the same password can lock the account).
#[tokio::test]
async fn a_relay_that_answered_keeps_its_backoff() {
    let (greylisting, _) = relay(
        |verb| {
            Some(match verb {
                "MAIL" => "451 4.7.1 Greylisted, please try again later\r\n",
                other => ordinary(other),
            })
        },
        Duration::ZERO,
    );
    let next = next_attempt_after_one_call(&plain_mail_settings(greylisting)).await;
    assert_eq!(next, at(9, 0), "greylisting: the hour's backoff");

    let (refusing, _) = relay(
        |verb| {
            Some(match verb {
                "AUTH" => "535 5.7.8 Username and Password not accepted\r\n",
                other => ordinary(other),
            })
        },
        Duration::ZERO,
    );
    let mut settings = plain_mail_settings(refusing);
    settings.username = Some("seatwarden-relay".into());
    settings.password = Some("not-the-password".to_owned().into());
    let next = next_attempt_after_one_call(&settings).await;
    assert_eq!(next, at(9, 0), "a refused login: the hour's backoff");
}
