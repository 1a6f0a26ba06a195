//! Session 45's review of alerting and mail delivery, as the on-call engineer
//! relying on it: what a relay's answers do to the outbox, and what the errors
//! say.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::fixtures::plain_mail_settings;
use seatwarden::mail::{self, Mailer};
use seatwarden::retry::RetryPolicy;
use seatwarden::store::{OutboxKind, OutboxState, Store};

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, 0).unwrap()
}

/// A relay on loopback: `reply(verb)` answers each command (`None`: no answer
/// at all, the connection held open for `silence`), `.` the end of a message.
/// Returns its port and every command verb it received, in order.
pub(crate) fn relay(
    reply: fn(&str) -> Option<&'static str>,
    silence: Duration,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let _ = stream.write_all(b"220 relay.example.com ESMTP\r\n");
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let verb = line
                        .split([' ', ':', '\r', '\n'])
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    seen.lock().unwrap().push(verb.clone());
                    let Some(answer) = reply(&verb) else {
                        std::thread::sleep(silence);
                        return;
                    };
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    if verb == "DATA" && answer.starts_with("354") {
                        let mut body = String::new();
                        while reader.read_line(&mut body).is_ok_and(|n| n > 0) {
                            if body == ".\r\n" {
                                break;
                            }
                            body.clear();
                        }
                        seen.lock().unwrap().push(".".into());
                        let Some(end) = reply(".") else {
                            std::thread::sleep(silence);
                            return;
                        };
                        if stream.write_all(end.as_bytes()).is_err() {
                            return;
                        }
                    }
                    if verb == "QUIT" {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, log)
}

pub(crate) fn ordinary(verb: &str) -> &'static str {
    match verb {
        "EHLO" => "250-relay.example.com\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
        "DATA" => "354 go ahead\r\n",
        "." => "250 2.0.0 queued as 4F2A\r\n",
        "QUIT" => "221 2.0.0 Bye\r\n",
        _ => "250 2.0.0 OK\r\n",
    }
}

fn queue_alert(store: &mut Store, settings: &mail::MailSettings) {
    mail::queue(
        store,
        settings,
        OutboxKind::Alert,
        "deprovision of ada@example.com is overdue",
        "t",
        "<p>h</p>",
        at(8, 0),
    )
    .unwrap();
}

/// A relay that accepted the message (250 to its end) and then does not answer
/// QUIT: the message was delivered. The session's time bound used to cover the
/// QUIT, so its silence turned the accepted message into a timeout: sent again
/// at once by the call's retries, and again at every later attempt, each copy
/// delivered, the row never marked sent. Now the QUIT has a bound of its own
/// and cannot undo the acceptance.
#[tokio::test]
async fn a_relay_silent_after_accepting_the_message_gets_it_once_and_it_is_sent() {
    let (port, log) = relay(
        |verb| (verb != "QUIT").then(|| ordinary(verb)),
        Duration::from_secs(30),
    );
    let mut settings = plain_mail_settings(port);
    settings.timeout = Duration::from_secs(1);
    settings.retry = RetryPolicy::immediate(2);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    queue_alert(&mut store, &settings);

    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();

    let copies = log.lock().unwrap().iter().filter(|v| *v == ".").count();
    assert_eq!(copies, 1, "delivered once: {:?}", log.lock().unwrap());
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (1, 0, 0),
        "{delivery:?}"
    );
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Sent);
}

/// A wrong password: the error names the relay and the step that failed
/// (`AUTH`, and as whom), whatever words the relay's own answer uses (Gmail:
/// "Username and Password not accepted"), and never the password.
#[tokio::test]
async fn a_refused_login_says_auth_failed_naming_the_relay_and_the_user() {
    let (port, _) = relay(
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
    queue_alert(&mut store, &settings);

    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    let error = delivery.last_error.unwrap();
    assert!(
        error.starts_with(&format!(
            "SMTP server 127.0.0.1:{port}: AUTH as \"seatwarden-relay\" failed: "
        )),
        "{error}"
    );
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains("Secret-Never-Shown-9"), "{error}");
    let row = &store.outbox().unwrap()[0];
    assert_eq!(row.state, OutboxState::Pending, "kept for a fixed password");
    assert_eq!(row.last_error.as_deref(), Some(error.as_str()));
}

/// A relay that offers no login over a connection without TLS (most offer AUTH
/// only after STARTTLS): the error says the login could not even be tried, and
/// how to ask for TLS, instead of lettre's "No compatible authentication
/// mechanism was found".
#[tokio::test]
async fn a_relay_offering_no_login_without_tls_says_to_use_tls() {
    let (port, _) = relay(
        |verb| {
            Some(match verb {
                "EHLO" => "250-relay.example.com\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
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
    queue_alert(&mut store, &settings);

    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    let error = delivery.last_error.unwrap();
    assert!(
        error.contains("AUTH as \"seatwarden-relay\" failed: the server offers no login"),
        "{error}"
    );
    assert!(error.contains("?tls=starttls"), "{error}");
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Pending);
}

/// A relay refusing our sender: the error says it was MAIL FROM it refused.
#[tokio::test]
async fn a_refused_sender_says_mail_from() {
    let (port, _) = relay(
        |verb| {
            Some(match verb {
                "MAIL" => "550 5.7.1 Client host rejected: Access denied\r\n",
                other => ordinary(other),
            })
        },
        Duration::ZERO,
    );
    let settings = plain_mail_settings(port);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    queue_alert(&mut store, &settings);
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    let error = delivery.last_error.unwrap();
    assert!(
        error.starts_with(&format!(
            "SMTP server 127.0.0.1:{port}: MAIL FROM <seatwarden@example.com> failed: permanent \
             error (550)"
        )),
        "{error}"
    );
}

/// `smtp://…?tls=starttls` (or plain `smtp://`) to a port that expects TLS from
/// the first byte (465): each side waits for the other to speak. That spent the
/// whole session's bound once per retry (two minutes each with the default
/// `timeout`, `send-mail` silent meanwhile) and said only "did not finish";
/// now the greeting has a bound of its own, the call does not retry it at once,
/// and the error says which URL to write.
#[tokio::test]
async fn starttls_asked_of_an_implicit_tls_port_says_to_use_smtps_without_waiting_out_retries() {
    let (url, connections) = crate::fixtures::untrusted_tls_server();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut settings = plain_mail_settings(port);
    settings.endpoint.tls = mail::TlsMode::StartTls;
    settings.timeout = Duration::from_secs(1);
    settings.retry = RetryPolicy::immediate(2);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    queue_alert(&mut store, &settings);

    let started = std::time::Instant::now();
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    let took = started.elapsed();
    let error = delivery.last_error.unwrap();
    assert!(
        error.contains("no SMTP greeting within 2s")
            && error.contains(&format!("smtps://127.0.0.1:{port}")),
        "{error}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not retried within the call"
    );
    let row = &store.outbox().unwrap()[0];
    assert_eq!(row.state, OutboxState::Pending, "kept for a fixed URL");
}

/// `smtps://` to a port that speaks plain SMTP first (587, 25): the error says
/// to ask for STARTTLS, not only "received corrupt message".
#[tokio::test]
async fn smtps_asked_of_a_plain_port_says_to_use_starttls() {
    let (port, _) = relay(|verb| Some(ordinary(verb)), Duration::ZERO);
    let mut settings = plain_mail_settings(port);
    settings.endpoint.tls = mail::TlsMode::Implicit;
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    queue_alert(&mut store, &settings);
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    let error = delivery.last_error.unwrap();
    assert!(
        error.contains(&format!(
            "; the server on that port does not speak TLS: a port that starts TLS on \
             request, such as 587, wants smtp://127.0.0.1:{port}?tls=starttls"
        )),
        "{error}"
    );
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Pending);
}
