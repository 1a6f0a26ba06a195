//! Session 46's review of mail delivery after a relay outage, as the operator:
//! a relay that was down is tried again within minutes of its return even with
//! one alert queued, while one that answered keeps its backoff; and a relay
//! login fixed and reloaded (SIGHUP) is tried at once, not an hour later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::fixtures::{self, plain_mail_settings};
use crate::review_s40_mail::silent_relay;
use crate::review_s45_mail::{ordinary, relay};
use seatwarden::mail::{self, Mailer};
use seatwarden::model::WorkspaceSnapshot;
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

/// Whether the relay of the reload test refuses the login.
static REFUSING_LOGIN: AtomicBool = AtomicBool::new(true);

/// A relay refusing the daemon's login puts off every due message for the
/// refused one's backoff (an hour after a few refusals). The operator fixes
/// the password and reloads (SIGHUP): the messages used to wait out that
/// backoff all the same. Now a successful reload makes them due and runs the
/// mail job at once: the fixed login is tried within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_fixed_and_reloaded_is_tried_at_once() {
    let (port, log) = relay(
        |verb| {
            Some(match verb {
                "AUTH" if REFUSING_LOGIN.load(Ordering::SeqCst) => {
                    "535 5.7.8 Username and Password not accepted\r\n"
                }
                "AUTH" => "235 2.7.0 Authentication successful\r\n",
                other => ordinary(other),
            })
        },
        Duration::ZERO,
    );
    let sandbox = fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("d.json"),
        serde_json::json!({ "users": [{
            "id": "00p1", "userName": "p1@example.com", "email": "p1@example.com",
            "givenName": "P", "familyName": "Example", "status": "active", "groups": []
        }]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("relay-password"), "rotated-away\n").unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n\n\
             [state]\npath = \"state.db\"\n\n\
             [report.email]\nsmtp_url = \"smtp://127.0.0.1:{port}\"\n\
             from = \"seatwarden@example.com\"\nto = [\"it-security@example.com\"]\n\
             username = \"seatwarden-relay\"\npassword_file = \"relay-password\"\n",
            sandbox.base_url()
        ),
    )
    .unwrap();
    let subject = "deprovision of ada@example.com is overdue";
    {
        let mut store = Store::open(&dir.path().join("state.db")).unwrap();
        failed_before(&mut store, subject, 6, Utc::now());
    }
    let row = || {
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store
            .outbox()
            .unwrap()
            .into_iter()
            .find(|e| e.message.subject == subject)
            .unwrap()
    };

    let (mut daemon, daemon_log) = fixtures::spawn_daemon_once(dir.path(), &[]);
    let logged = || std::fs::read_to_string(&daemon_log).unwrap_or_default();
    fixtures::listening_port(&mut daemon, logged).await;
    // The start's mail job: refused, put off for the hour.
    let refused = fixtures::poll_until(Duration::from_secs(30), || row().attempts == 7).await;
    let before = row();
    assert!(
        refused,
        "the login was never refused: {before:?}\n{}",
        logged()
    );
    assert_eq!(before.state, OutboxState::Pending);
    assert!(
        before.next_attempt_at > Utc::now() + chrono::Duration::minutes(50),
        "{before:?}"
    );

    // The operator fixes the password and reloads.
    std::fs::write(dir.path().join("relay-password"), "the-right-one\n").unwrap();
    REFUSING_LOGIN.store(false, Ordering::SeqCst);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent =
        fixtures::poll_until(Duration::from_secs(30), || row().state == OutboxState::Sent).await;
    fixtures::sigterm(&daemon);
    fixtures::exit_of(daemon, "the daemon").await;
    let logged = logged();
    assert!(sent, "not sent after the reload: {:?}\n{logged}", row());
    assert!(logged.contains("configuration reloaded"), "{logged}");
    let logins = log.lock().unwrap().iter().filter(|v| *v == "AUTH").count();
    assert!(logins >= 2, "refused, then the fixed login: {logins}");
}

/// After an outage the operator asks `seatwarden status` when the alerts will
/// go out: it said nothing of the outbox (the metrics count its messages, not
/// when they are tried). It now says how many are not sent, when the next
/// attempt is on the configured zone's clock, the last error, and how to send
/// them now; `--format json` gives the time as an RFC 3339 instant.
#[tokio::test]
async fn status_says_when_the_next_delivery_attempt_is() {
    use seatwarden::daemon::status::{self, Settings};

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let settings = plain_mail_settings(port);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    failed_before(&mut store, "overdue", 6, at(8, 0));
    mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    let refused = store
        .enqueue_message(&message("refused"), at(8, 0))
        .unwrap();
    store
        .mark_message_attempt_failed(refused, "554 message refused", None)
        .unwrap();

    let collect = |store: &Store, now| {
        status::collect(
            store,
            now,
            Settings {
                tz: chrono_tz::Europe::Berlin,
                delete_after: None,
                cool_down: Duration::from_secs(600),
                database: None,
                schedule: None,
                admin_command: "sudo -u seatwarden seatwarden".to_owned(),
                resolve_after: None,
                certificates: Vec::new(),
                exceptions: Vec::new(),
            },
        )
        .unwrap()
    };
    let now = at(8, 1);
    let shown = collect(&store, now);
    let text = status::render_text(&shown);
    let line = text
        .lines()
        .find(|l| l.starts_with("Outbox: "))
        .unwrap_or_else(|| panic!("no outbox line:\n{text}"));
    assert!(
        line.starts_with(
            "Outbox: 1 message not sent yet (1 waiting for its next attempt, the first at \
             2026-12-01 09:05"
        ),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "; last error: SMTP server 127.0.0.1:{port}: connecting failed"
        )),
        "{line}"
    );
    assert!(
        line.contains("`sudo -u seatwarden seatwarden send-mail` sends them now")
            && line.ends_with("; 1 refused for good by the mail server"),
        "{line}"
    );
    let json = serde_json::to_value(&shown).unwrap();
    assert_eq!(json["outbox"]["waiting"], 1, "{json}");
    assert_eq!(json["outbox"]["due"], 0, "{json}");
    assert_eq!(json["outbox"]["failed"], 1, "{json}");
    assert_eq!(
        json["outbox"]["next_attempt_at"], "2026-12-01T08:05:00Z",
        "{json}"
    );

    // Once it is due, it is told so; with nothing left to send, no line.
    let later = status::render_text(&collect(&store, at(8, 5)));
    assert!(
        later.contains("Outbox: 1 message not sent yet (1 due now); last error: "),
        "{later}"
    );
    let (relay_port, _) = relay(|verb| Some(ordinary(verb)), Duration::ZERO);
    let back = Mailer::new(&plain_mail_settings(relay_port)).unwrap();
    mail::deliver_due(&mut store, &back, settings.retry, at(8, 5))
        .await
        .unwrap();
    let sent = status::render_text(&collect(&store, at(8, 6)));
    assert!(
        sent.lines()
            .any(|l| l == "Outbox: 1 refused for good by the mail server"),
        "{sent}"
    );
}

/// A relay that takes the connection and never greets, for more than the three
/// days after which a relay's refusals give a message up: it refused nothing, so
/// the alert stays queued for its return (as it does behind a relay refusing
/// connections), tried again within five minutes, instead of being dropped as
/// "given up after 3 days of refusals".
#[tokio::test]
async fn an_alert_is_not_given_up_while_the_relay_never_answers() {
    let mut settings = plain_mail_settings(silent_relay());
    settings.timeout = Duration::from_millis(500);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    let queued = at(8, 0);
    store
        .enqueue_message(
            &message("deprovision of ada@example.com is overdue"),
            queued,
        )
        .unwrap();
    let now = queued + chrono::Duration::days(4);

    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, now)
        .await
        .unwrap();

    assert_eq!((delivery.sent, delivery.retrying), (0, 1), "{delivery:?}");
    let row = &store.outbox().unwrap()[0];
    assert_eq!(row.state, OutboxState::Pending, "{row:?}");
    assert_eq!(row.next_attempt_at, now + chrono::Duration::minutes(1));
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no SMTP greeting") && !e.contains("given up")),
        "{row:?}"
    );
}
