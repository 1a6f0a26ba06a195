//! Email: `[report.email]` configuration, the outbox (stored first, sent only once
//! the server accepted it, retried with backoff), and the message as sent.
//!
//! The `smtp_*` tests are `#[ignore]`d: they deliver to PyPI aiosmtpd started by
//! `scripts/interop.sh` (plain, AUTH, STARTTLS and SMTPS listeners with a throwaway
//! CA) and read back what the server received, parsed by Python's email package.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::fixtures::plain_mail_settings;
use seatwarden::config::Config;
use seatwarden::mail::{self, Mailer};
use seatwarden::retry::RetryPolicy;
use seatwarden::store::{OutboxKind, OutboxState, Store};

const PASSWORD: &str = "pa55-Never-In-Mail";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn config_with(dir: &Path, email: &str) -> Result<Config, String> {
    let text = format!(
        r#"
[directory]
kind = "file"
path = "directory.json"

[workspace]
url = "https://acme.taskade.example/scim/v2"
token = "s3cr3t-token-value"

[report]
timezone = "Europe/Berlin"

[report.email]
{email}
"#
    );
    let path = write(dir, "seatwarden.toml", &text);
    Config::load_with_env(&path, Some(Default::default())).map_err(|e| e.to_string())
}

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, hour, minute, 0).unwrap()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn email_config_loads_and_never_prints_the_password() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "smtp-password", &format!("{PASSWORD}\n"));
    let config = config_with(
        dir.path(),
        r#"smtp_url = "smtp://mail.example.com?tls=starttls"
username = "seatwarden"
password_file = "smtp-password"
from = "seatwarden@example.com"
to = ["it-security@example.com", "ops@example.com"]
quiet_period = "2h""#,
    )
    .unwrap();
    assert_eq!(config.report_name(), "acme.taskade.example");
    let settings = config.mail_settings().unwrap().unwrap();
    assert_eq!(settings.endpoint.port, 587);
    assert_eq!(settings.quiet_period, Duration::from_secs(7200));
    assert_eq!(settings.to.len(), 2);
    let shown = format!("{}{:?}{settings:?}", config.to_redacted_toml(), config);
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[test]
fn bad_email_config_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"smtp_url = "http://mail.example.com"
from = "seatwarden@example.com"
to = ["a@example.com"]"#,
            "report.email.smtp_url",
        ),
        (
            r#"smtp_url = "smtp://user:hunter2@mail.example.com"
from = "seatwarden@example.com"
to = ["a@example.com"]"#,
            "report.email.smtp_url",
        ),
        (
            r#"smtp_url = "smtp://mail.example.com"
from = "not an address"
to = ["a@example.com"]"#,
            "report.email.from",
        ),
        (
            r#"smtp_url = "smtp://mail.example.com"
from = "seatwarden@example.com"
to = []"#,
            "report.email.to",
        ),
        (
            r#"smtp_url = "smtp://mail.example.com"
from = "seatwarden@example.com"
to = ["a@example.com"]
password = "hunter2""#,
            "report.email.username",
        ),
        (
            r#"smtp_url = "smtp://mail.example.com"
from = "seatwarden@example.com"
to = ["a@example.com"]
quiet_period = "soon""#,
            "report.email.quiet_period",
        ),
        // Alerts are judged after every job: "0s" would repeat one every minute.
        (
            r#"smtp_url = "smtp://mail.example.com"
from = "seatwarden@example.com"
to = ["a@example.com"]
quiet_period = "0s""#,
            "shorter than 15m",
        ),
        (
            r#"smtp_url = "smtp://mail.example.com"
from = "seatwarden@example.com"
to = ["a@example.com"]
sender = "x""#,
            "sender",
        ),
    ];
    for (email, key) in cases {
        let error = config_with(dir.path(), email).unwrap_err();
        assert!(error.contains(key), "{key}: {error}");
        assert!(error.contains("seatwarden.toml"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

/// A `ca_file` without a PEM certificate (a DER `.cer`) would be an empty trust
/// store: every message would fail at the handshake, retried for ever. It is
/// refused, naming the key and what to do.
#[test]
fn a_ca_file_without_a_pem_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "relay-ca.cer", "\u{30}\u{82}not pem at all");
    let config = config_with(
        dir.path(),
        r#"smtp_url = "smtp://mail.example.com:587?tls=starttls"
from = "seatwarden@example.com"
to = ["a@example.com"]
ca_file = "relay-ca.cer""#,
    )
    .unwrap();
    let error = config.mail_settings().unwrap_err().to_string();
    assert!(error.contains("report.email.ca_file"), "{error}");
    assert!(error.contains("no PEM certificate"), "{error}");
}

#[test]
fn an_unknown_time_zone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "seatwarden.toml",
        r#"
[directory]
kind = "file"
path = "directory.json"
[workspace]
url = "https://scim.example.com/scim/v2"
token = "t"
[report]
timezone = "Mars/Olympus"
"#,
    );
    let error = Config::load_with_env(&path, Some(Default::default()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("report.timezone"), "{error}");
}

#[test]
fn the_message_is_multipart_alternative_with_a_stable_message_id() {
    let mut store = Store::open_in_memory().unwrap();
    let settings = plain_mail_settings(25);
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Report,
        "[seatwarden] acme: 5 drift items",
        "plain words",
        "<p>html words</p>",
        at(8, 0),
    )
    .unwrap();
    let entry = store.outbox().unwrap().remove(0);
    let first = String::from_utf8(mail::build_message(&entry).unwrap().formatted()).unwrap();
    let again = String::from_utf8(mail::build_message(&entry).unwrap().formatted()).unwrap();
    assert!(
        first.contains("Content-Type: multipart/alternative"),
        "{first}"
    );
    assert!(first.contains("Content-Type: text/plain"));
    assert!(first.contains("Content-Type: text/html"));
    assert!(first.contains("Subject: [seatwarden] acme: 5 drift items"));
    let message_id = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("Message-ID:"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        message_id(&first),
        message_id(&again),
        "a resend is the same message"
    );
}

#[tokio::test]
async fn an_unreachable_server_leaves_the_message_pending_with_backoff() {
    let mut store = Store::open_in_memory().unwrap();
    let settings = plain_mail_settings(closed_port());
    let mailer = Mailer::new(&settings).unwrap();
    let id = mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "subject",
        "text",
        "<p>html</p>",
        at(8, 0),
    )
    .unwrap();
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    assert_eq!((delivery.sent, delivery.retrying), (0, 1));
    let entry = store.outbox().unwrap().remove(0);
    assert_eq!(entry.id, id);
    assert_eq!(entry.state, OutboxState::Pending);
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.next_attempt_at, at(8, 1), "retried a minute later");
    assert!(entry.last_error.unwrap().contains("127.0.0.1"));
    assert!(store.due_messages(at(8, 0), 10).unwrap().is_empty());
    assert_eq!(store.due_messages(at(8, 1), 10).unwrap().len(), 1);
    // The second failure waits longer.
    mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 1))
        .await
        .unwrap();
    assert_eq!(store.outbox().unwrap()[0].next_attempt_at, at(8, 3));
}

/// A message another sender has taken (a job beside this one, `send-mail` from a
/// shell) is not sent again by this one, and its state is not overwritten; once
/// the other sender's claim has lapsed (it died), the message is due again.
#[tokio::test]
async fn a_message_another_sender_took_is_not_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    let settings = plain_mail_settings(closed_port());
    let mailer = Mailer::new(&settings).unwrap();
    let id = mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "subject",
        "text",
        "<p>html</p>",
        at(8, 0),
    )
    .unwrap();
    let mut other = Store::open(&path).unwrap();
    // Two senders at once, both finding the message due: one attempts it.
    let (a, b) = tokio::join!(
        mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0)),
        mail::deliver_due(&mut other, &mailer, settings.retry, at(8, 0)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.retrying + b.retrying, 1, "{a:?} {b:?}");
    assert_eq!(store.outbox().unwrap()[0].attempts, 1);

    other.mark_message_sent(id, at(8, 1)).unwrap();
    // A late failure report from some other attempt does not undo "sent".
    store
        .mark_message_attempt_failed(id, "timed out", Some(at(8, 5)))
        .unwrap();
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Sent);

    // A claim that lapsed: the message is due again.
    let id = mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "second",
        "text",
        "<p>html</p>",
        at(9, 0),
    )
    .unwrap();
    assert!(other.claim_message(id, at(9, 0), at(9, 10)).unwrap());
    assert!(store.due_messages(at(9, 5), 10).unwrap().is_empty());
    assert_eq!(store.due_messages(at(9, 10), 10).unwrap().len(), 1);
}

/// An SMTP relay on loopback that offers AUTH PLAIN and LOGIN and refuses every
/// login with 535, as Postfix does for a wrong password; returns its port and the
/// number of AUTH commands it has seen.
fn relay_refusing_logins() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let logins = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = logins.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = stream.write_all(b"220 relay.example.com ESMTP\r\n");
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let verb = line
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-relay.example.com\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
                    "AUTH" => {
                        seen.fetch_add(1, Ordering::SeqCst);
                        b"535 5.7.8 Error: authentication failed\r\n"
                    }
                    "QUIT" => b"221 2.0.0 Bye\r\n",
                    _ => b"503 5.5.1 Error: authentication required\r\n",
                };
                if stream.write_all(reply).is_err() || verb == "QUIT" {
                    break;
                }
                line.clear();
            }
        }
    });
    (port, logins)
}

/// A refused login is about the relay, not the message: the message stays queued
/// for a later call, but the login is not tried again at once (each retry would be
/// one more bad password, and a few in a row can lock the relay account), nor for
/// the next message in the queue.
#[tokio::test]
async fn a_refused_login_keeps_the_message_and_is_tried_once_per_delivery_call() {
    use std::sync::atomic::Ordering;
    let (port, logins) = relay_refusing_logins();
    let mut settings = plain_mail_settings(port);
    settings.username = Some("seatwarden".into());
    settings.password = Some(PASSWORD.to_owned().into());
    settings.retry = RetryPolicy::immediate(3);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    for n in 0..2 {
        mail::queue(
            &mut store,
            &settings,
            OutboxKind::Alert,
            &format!("alert {n}"),
            "t",
            "<p>h</p>",
            at(8, 0),
        )
        .unwrap();
    }

    let first = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    assert_eq!(
        logins.load(Ordering::SeqCst),
        1,
        "one login per delivery call"
    );
    assert_eq!((first.sent, first.retrying, first.failed), (0, 1, 0));
    let error = first.last_error.unwrap();
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
    let outbox = store.outbox().unwrap();
    assert!(
        outbox.iter().all(|e| e.state == OutboxState::Pending),
        "{outbox:?}"
    );
    assert_eq!(outbox[0].next_attempt_at, at(8, 1), "kept for a later call");

    let second = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 1))
        .await
        .unwrap();
    assert_eq!(
        logins.load(Ordering::SeqCst),
        2,
        "one login per delivery call"
    );
    assert_eq!((second.sent, second.retrying, second.failed), (0, 1, 0));
    assert!(
        store
            .outbox()
            .unwrap()
            .iter()
            .all(|e| e.state == OutboxState::Pending)
    );
}

/// A relay whose certificate this host does not trust fails the same way on every
/// attempt: one handshake per delivery call, and the message stays queued for a
/// later one (a renewed certificate, a fixed CA file).
#[tokio::test]
async fn an_untrusted_relay_certificate_keeps_the_message_and_is_tried_once_per_call() {
    use std::sync::atomic::Ordering;
    let (url, handshakes) = crate::fixtures::untrusted_tls_server();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut settings = plain_mail_settings(port);
    settings.endpoint.tls = mail::TlsMode::Implicit;
    settings.retry = RetryPolicy::immediate(3);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "alert",
        "t",
        "<p>h</p>",
        at(8, 0),
    )
    .unwrap();
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        1,
        "no retry within the call"
    );
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (0, 1, 0)
    );
    let error = delivery.last_error.unwrap();
    assert!(error.contains("certificate"), "{error}");
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox[0].state, OutboxState::Pending, "{outbox:?}");
}

// ---- against aiosmtpd (scripts/interop.sh) -----------------------------------

struct Smtp {
    dir: PathBuf,
    base_port: u16,
}

fn smtp() -> Smtp {
    let dir = std::env::var("SEATWARDEN_SMTP_DIR")
        .expect("SEATWARDEN_SMTP_DIR: run through scripts/interop.sh");
    let base_port = std::env::var("SEATWARDEN_SMTP_PORT")
        .expect("SEATWARDEN_SMTP_PORT: run through scripts/interop.sh")
        .parse()
        .unwrap();
    Smtp {
        dir: PathBuf::from(dir),
        base_port,
    }
}

/// A message aiosmtpd received, as our capture handler parsed it.
#[derive(Debug, serde::Deserialize)]
struct Received {
    mail_from: String,
    rcpt_tos: Vec<String>,
    login: Option<String>,
    tls: bool,
    subject: String,
    to: Vec<String>,
    content_type: String,
    parts: std::collections::HashMap<String, String>,
    raw: String,
}

/// The messages `listener` received with `subject`. Its folder exists from the
/// server's start (scripts/interop-smtp-server.py): a folder that is not there is a
/// misspelled listener, not a listener that received nothing.
fn received(dir: &Path, listener: &str, subject: &str) -> Vec<Received> {
    let folder = dir.join(listener);
    let entries = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("no listener folder {}: {e}", folder.display()));
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let message: Received =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if message.subject == subject {
                found.push(message);
            }
        }
    }
    found
}

fn unique_subject(what: &str) -> String {
    format!(
        "[seatwarden] interop: {what} {}",
        Utc::now().timestamp_nanos_opt().unwrap()
    )
}

/// Goes through the configuration file, as the binary does, so `password_file`
/// and `ca_file` are what the test exercises.
async fn deliver_through_config(listener: &str, port_offset: u16, url: &str, auth: bool) {
    let server = smtp();
    let dir = tempfile::tempdir().unwrap();
    let password = std::fs::read_to_string(server.dir.join("password")).unwrap();
    let port = server.base_port + port_offset;
    let url = url.replace("PORT", &port.to_string());
    let ca = server.dir.join("ca.pem");
    let mut email = format!(
        "smtp_url = \"{url}\"\nfrom = \"seatwarden@example.com\"\n\
         to = [\"it-security@example.com\", \"ops@example.com\"]\nca_file = \"{}\"\n",
        ca.display()
    );
    if auth {
        write(dir.path(), "smtp-password", &password);
        email.push_str("username = \"seatwarden-interop\"\npassword_file = \"smtp-password\"\n");
    }
    let config = config_with(dir.path(), &email).unwrap();
    let settings = config.mail_settings().unwrap().unwrap();
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let subject = unique_subject(listener);
    let now = Utc::now();
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Digest,
        &subject,
        "Needs attention: 2 overdue deprovisions",
        "<p>Needs <b>attention</b>: 2 overdue deprovisions</p>",
        now,
    )
    .unwrap();
    let delivery = mail::deliver_due(&mut store, &mailer, RetryPolicy::immediate(2), now)
        .await
        .unwrap();
    assert_eq!(delivery.sent, 1, "{delivery:?}");
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Sent);

    let got = received(&server.dir, listener, &subject);
    assert_eq!(got.len(), 1, "delivered once");
    let message = &got[0];
    assert_eq!(message.mail_from, "seatwarden@example.com");
    assert_eq!(
        message.rcpt_tos,
        ["it-security@example.com", "ops@example.com"]
    );
    assert_eq!(
        message.to.len(),
        1,
        "one To header with both: {:?}",
        message.to
    );
    assert!(message.to[0].contains("ops@example.com"));
    assert_eq!(message.content_type, "multipart/alternative");
    assert_eq!(
        message.parts["text/plain"].trim(),
        "Needs attention: 2 overdue deprovisions"
    );
    assert!(message.parts["text/html"].contains("<b>attention</b>"));
    assert_eq!(message.login.is_some(), auth);
    assert_eq!(message.tls, listener == "starttls" || listener == "smtps");
    let password = password.trim();
    assert!(
        !message.raw.contains(password),
        "the password is not in the message"
    );
    assert!(!message.raw.contains("s3cr3t-token-value"));
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_plain_delivery() {
    deliver_through_config("plain", 0, "smtp://127.0.0.1:PORT", false).await;
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_auth_delivery() {
    deliver_through_config("auth", 1, "smtp://127.0.0.1:PORT", true).await;
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_starttls_auth_delivery() {
    deliver_through_config("starttls", 2, "smtp://127.0.0.1:PORT?tls=starttls", true).await;
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_smtps_auth_delivery() {
    deliver_through_config("smtps", 3, "smtps://127.0.0.1:PORT", true).await;
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_wrong_password_is_refused_and_kept() {
    let server = smtp();
    let mut settings = plain_mail_settings(server.base_port + 1);
    settings.username = Some("seatwarden-interop".into());
    settings.password = Some("wrong-password".to_owned().into());
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    let subject = unique_subject("refused");
    for _ in 0..2 {
        mail::queue(
            &mut store,
            &settings,
            OutboxKind::Alert,
            &subject,
            "t",
            "<p>h</p>",
            at(8, 0),
        )
        .unwrap();
    }
    let delivery = mail::deliver_due(&mut store, &mailer, RetryPolicy::immediate(1), at(8, 0))
        .await
        .unwrap();
    assert_eq!(delivery.sent, 0);
    // A refused login is about the relay, not the message: both stay pending for
    // when the password is fixed, none is failed for good.
    for entry in store.outbox().unwrap() {
        assert_eq!(entry.state, OutboxState::Pending, "{entry:?}");
        assert!(
            !entry
                .last_error
                .unwrap_or_default()
                .contains("wrong-password")
        );
    }
    assert!(received(&server.dir, "auth", &subject).is_empty());
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_a_server_that_comes_up_late_gets_the_message_once() {
    let python = std::env::var("SEATWARDEN_INTEROP_PYTHON")
        .expect("SEATWARDEN_INTEROP_PYTHON: run through scripts/interop.sh");
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let state = dir.path().join("state.db");
    let settings = plain_mail_settings(port);
    let mailer = Mailer::new(&settings).unwrap();
    let subject = unique_subject("late server");
    let start = Utc::now();
    {
        let mut store = Store::open(&state).unwrap();
        mail::queue(
            &mut store,
            &settings,
            OutboxKind::Alert,
            &subject,
            "t",
            "<p>h</p>",
            start,
        )
        .unwrap();
        let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, start)
            .await
            .unwrap();
        assert_eq!((delivery.sent, delivery.retrying), (0, 1), "server down");
    }

    // aiosmtpd's own Mailbox handler, exactly as its README runs it.
    let mut server = std::process::Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .spawn()
        .unwrap();
    let mut up = false;
    // Up to 30 s: a Python interpreter importing asyncio can take most of 10 s
    // to listen on a loaded two-core machine.
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "aiosmtpd did not start on {port}");

    // A restart: a new store handle on the same file; the message is due later.
    let mut store = Store::open(&state).unwrap();
    let too_early = mail::deliver_due(&mut store, &mailer, settings.retry, start)
        .await
        .unwrap();
    assert_eq!(too_early.sent, 0, "not before its backoff");
    let later = start + chrono::Duration::minutes(5);
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, later)
        .await
        .unwrap();
    assert_eq!(delivery.sent, 1);
    let again = mail::deliver_due(
        &mut store,
        &mailer,
        settings.retry,
        later + chrono::Duration::hours(2),
    )
    .await
    .unwrap();
    assert_eq!(again.sent, 0, "sent once");
    let entry = store.outbox().unwrap().remove(0);
    assert_eq!(entry.state, OutboxState::Sent);
    assert_eq!(entry.attempts, 2);

    let delivered: Vec<String> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(delivered.len(), 1, "exactly one message in the Maildir");
    assert!(delivered[0].contains(&subject));
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_an_untrusted_certificate_is_refused() {
    let server = smtp();
    let mut settings = plain_mail_settings(server.base_port + 2);
    settings.endpoint.tls = mail::TlsMode::StartTls;
    // No ca_file: the throwaway CA is not trusted, so nothing may be sent.
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    let subject = unique_subject("untrusted");
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        &subject,
        "t",
        "<p>h</p>",
        at(8, 0),
    )
    .unwrap();
    let delivery = mail::deliver_due(&mut store, &mailer, RetryPolicy::immediate(0), at(8, 0))
        .await
        .unwrap();
    assert_eq!(delivery.sent, 0);
    assert_ne!(store.outbox().unwrap()[0].state, OutboxState::Sent);
    assert!(received(&server.dir, "starttls", &subject).is_empty());
}

#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_a_temporary_refusal_is_retried_and_sent_once() {
    let server = smtp();
    let settings = plain_mail_settings(server.base_port);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    let subject = unique_subject("[tempfail]");
    let now = Utc::now();
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        &subject,
        "t",
        "<p>h</p>",
        now,
    )
    .unwrap();
    let first = mail::deliver_due(&mut store, &mailer, RetryPolicy::immediate(0), now)
        .await
        .unwrap();
    assert_eq!(
        (first.sent, first.retrying),
        (0, 1),
        "451 is not an acceptance"
    );
    let entry = store.outbox().unwrap().remove(0);
    assert_eq!(entry.state, OutboxState::Pending);
    assert!(entry.last_error.unwrap().contains("451"));
    assert!(received(&server.dir, "plain", &subject).is_empty());

    let later = now + chrono::Duration::minutes(2);
    let second = mail::deliver_due(&mut store, &mailer, RetryPolicy::immediate(0), later)
        .await
        .unwrap();
    assert_eq!(second.sent, 1);
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Sent);
    assert_eq!(received(&server.dir, "plain", &subject).len(), 1);
}

/// A message the server refuses for good (554) is kept as failed and not retried:
/// `seatwarden send-mail` says so and exits 4, so a cron job that pages on
/// failure fires, instead of exiting 0 because nothing is pending any more.
#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_send_mail_exits_4_when_a_message_is_refused_for_good() {
    let server = smtp();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "directory.json", r#"{"users": []}"#);
    let config = config_with(
        dir.path(),
        &format!(
            "smtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"seatwarden@example.com\"\n\
             to = [\"it-security@example.com\"]\n",
            server.base_port
        ),
    )
    .unwrap();
    let settings = config.mail_settings().unwrap().unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    let subject = unique_subject("[permfail]");
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        &subject,
        "t",
        "<p>h</p>",
        Utc::now(),
    )
    .unwrap();
    drop(store);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .arg("send-mail")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("refused for good"), "{stderr}");
    assert!(stderr.contains("554"), "{stderr}");
    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Failed);
    assert!(received(&server.dir, "plain", &subject).is_empty());
}

/// `seatwarden report --email` on the demo's state: the binary renders the latest
/// report and sends it through the outbox.
#[tokio::test]
#[ignore = "needs aiosmtpd: scripts/interop.sh"]
async fn smtp_report_email_command_sends_the_latest_report() {
    let server = smtp();
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let config = dir.path().join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[report]\nname = \"acme\"\n\n[report.email]\nsmtp_url = \"smtp://127.0.0.1:{}\"\n\
         from = \"seatwarden@example.com\"\nto = [\"it-security@example.com\"]\n",
        server.base_port
    ));
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&config)
        .args(["report", "--email"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let subject = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sent: "))
        .unwrap_or_else(|| panic!("{stderr}"))
        .to_owned();
    assert!(subject.starts_with("[seatwarden] acme run "), "{subject}");
    let got = received(&server.dir, "plain", &subject);
    assert_eq!(got.len(), 1);
    assert!(got[0].parts["text/plain"].contains("seatwarden run"));
    assert!(got[0].parts["text/html"].contains("<table"));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&config)
        .args(["digest", "--email"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let digest_subject = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sent: "))
        .unwrap_or_else(|| panic!("{stderr}"))
        .to_owned();
    let got = received(&server.dir, "plain", &digest_subject);
    assert_eq!(got.len(), 1);
    assert!(got[0].parts["text/plain"].contains("seatwarden digest for acme"));
    assert!(got[0].parts["text/html"].contains("Current drift"));

    let store = Store::open(&dir.path().join("seatwarden.db")).unwrap();
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 2);
    assert!(outbox.iter().all(|e| e.state == OutboxState::Sent));
    assert_eq!(outbox[0].message.kind, OutboxKind::Report);
    assert_eq!(outbox[1].message.kind, OutboxKind::Digest);
}

#[tokio::test]
async fn report_email_with_the_server_down_keeps_the_message_queued() {
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let config = dir.path().join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[report.email]\nsmtp_url = \"smtp://127.0.0.1:{}\"\n\
         from = \"seatwarden@example.com\"\nto = [\"it-security@example.com\"]\ntimeout = \"2s\"\n",
        closed_port()
    ));
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["report", "--email"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("queued in the outbox"), "{stderr}");
    let store = Store::open(&dir.path().join("seatwarden.db")).unwrap();
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1, "stored before any attempt");
    assert_eq!(outbox[0].state, OutboxState::Pending);
    assert!(outbox[0].message.html.contains("<!DOCTYPE html>"));
    assert!(outbox[0].message.text.contains("seatwarden run"));
}

/// With the server down, `seatwarden send-mail` says every retry as it happens
/// (the server, the error, the wait, the attempt), then the last error, and
/// exits 1: it does not sit silent through its backoff.
#[test]
fn send_mail_says_when_it_retries() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "directory.json", r#"{"users": []}"#);
    let port = closed_port();
    let config = config_with(
        dir.path(),
        &format!(
            "smtp_url = \"smtp://127.0.0.1:{port}\"\nfrom = \"seatwarden@example.com\"\n\
             to = [\"it-security@example.com\"]\ntimeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let settings = config.mail_settings().unwrap().unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "subject",
        "t",
        "<p>h</p>",
        Utc::now(),
    )
    .unwrap();
    drop(store);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .arg("send-mail")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let server = format!("SMTP server 127.0.0.1:{port}: ");
    let total = settings.retry.max_retries + 1;
    for next in 2..=total {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("(attempt {next} of {total})")))
            .unwrap_or_else(|| panic!("no notice before attempt {next}: {stderr}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(&server), "{line}");
        assert!(line.contains("; retrying in "), "{line}");
        assert!(line.contains(" s (attempt"), "{line}");
    }
    assert!(
        stderr.contains(&format!("last error: {server}")),
        "the final failure names the server: {stderr}"
    );
    // What is left, and when it goes, in the report's zone.
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(
            "error: 1 message is still waiting in the outbox: the next attempt is due at 20"
        ) && (last.contains(" +01:00 (CET) (its last error: SMTP server 127.0.0.1:")
            || last.contains(" +02:00 (CEST) (its last error: SMTP server 127.0.0.1:"))
            && last.ends_with(
                "; the daemon's mail job sends them when due, or run `send-mail` again then"
            ),
        "{last}"
    );
}

#[test]
fn a_retry_notice_names_the_server_the_error_the_wait_and_the_attempt() {
    let error = mail::MailError::Smtp {
        host: "smtp.example.com".into(),
        port: 587,
        message: "connection refused".into(),
        transient: true,
        relay_refused: false,
        unreachable: true,
    };
    assert_eq!(
        mail::retry_notice(&error, Duration::from_millis(2000), 2, 5),
        "SMTP server smtp.example.com:587: connection refused; retrying in 2.0 s (attempt 2 of 5)"
    );
    assert_eq!(
        mail::retry_notice(&error, Duration::from_secs(30), 5, 5),
        "SMTP server smtp.example.com:587: connection refused; retrying in 30 s (attempt 5 of 5)"
    );
}

#[tokio::test]
async fn one_unreachable_server_costs_one_attempt_per_call_not_one_per_message() {
    let mut store = Store::open_in_memory().unwrap();
    let settings = plain_mail_settings(closed_port());
    let mailer = Mailer::new(&settings).unwrap();
    for n in 0..3 {
        mail::queue(
            &mut store,
            &settings,
            OutboxKind::Alert,
            &format!("alert {n}"),
            "t",
            "<p>h</p>",
            at(8, 0),
        )
        .unwrap();
    }
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    assert_eq!(delivery.retrying, 1);
    let attempts: Vec<u32> = store.outbox().unwrap().iter().map(|e| e.attempts).collect();
    assert_eq!(attempts, [1, 0, 0]);
    assert_eq!(
        store.due_messages(at(8, 0), 10).unwrap().len(),
        2,
        "still due, in order"
    );
}

/// What an alert and its resolution say, as queued (golden).
#[test]
fn alert_and_resolution_messages() {
    use seatwarden::alert::{self, AlertCondition, AlertContext};
    let mut store = Store::open_in_memory().unwrap();
    let settings = plain_mail_settings(25);
    let context = AlertContext {
        name: "acme",
        timezone: chrono_tz::Europe::Berlin,
        mail: &settings,
        admin_command: "sudo seatwarden-admin",
    };
    let condition = AlertCondition::OverdueDeprovision {
        identity_id: "00u1001".into(),
        user_name: "olivia.haddad@example.com".into(),
        due_at: at(8, 0),
    };
    alert::raise(&mut store, &context, &condition, at(8, 5)).unwrap();
    alert::resolve(&mut store, &context, &condition.key(), at(8, 30)).unwrap();
    let held = AlertCondition::PlanHeld {
        run_id: 42,
        held: 30,
        reason: "30 deprovisions planned, limit is 25".into(),
    };
    alert::raise(&mut store, &context, &held, at(9, 0)).unwrap();
    let swept = AlertCondition::SweepHeld {
        run_id: 43,
        held: 2,
        reason: "the directory snapshot was incomplete".into(),
        people: vec![
            alert::HeldPerson {
                user_name: "olivia.haddad@example.com".into(),
                identity_id: "00u1001".into(),
                rejected: None,
            },
            alert::HeldPerson {
                user_name: "liam.chen@example.com".into(),
                identity_id: "00u1002".into(),
                rejected: None,
            },
        ],
        rejected_before: 0,
    };
    alert::raise(&mut store, &context, &swept, at(9, 5)).unwrap();
    alert::resolve(&mut store, &context, &swept.key(), at(9, 20)).unwrap();
    let mut shown = String::new();
    for entry in store.outbox().unwrap() {
        shown.push_str(&format!(
            "== {} ({}) to {:?}\n{}\n{}\n",
            entry.message.subject,
            entry.message.kind,
            entry.message.to,
            entry.message.text,
            entry.message.html
        ));
    }
    insta::assert_snapshot!(shown);
}

#[test]
fn recipients_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    config_with(
        dir.path(),
        r#"smtp_url = "smtp://127.0.0.1"
from = "seatwarden@example.com"
to = ["nobody@example.com"]"#,
    )
    .unwrap();
    let env = [(
        "SEATWARDEN__REPORT__EMAIL__TO".to_owned(),
        "a@example.com,b@example.com".to_owned(),
    )]
    .into_iter()
    .collect();
    let config = Config::load_with_env(&dir.path().join("seatwarden.toml"), Some(env)).unwrap();
    assert_eq!(
        config.report.email.unwrap().to,
        ["a@example.com", "b@example.com"]
    );
}

// ---- a scripted relay: 5xx answers at each step of the session ---------------

/// What a [`scripted_relay`] answers: the greeting, then a reply per command
/// verb (`MAIL`, `RCPT`, `DATA`, and `.` for the end of a message), given the
/// command line and how many times that verb was seen before; `None` is the
/// ordinary positive reply.
type Script = fn(verb: &str, line: &str, seen: usize) -> Option<&'static str>;

/// An SMTP relay on loopback answering as `script` says; returns its port and the
/// commands it received, in order (`.` for each message's end).
fn scripted_relay(script: Script) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let count = |verb: &str| seen.lock().unwrap().iter().filter(|v| *v == verb).count();
            let greeting = script("GREETING", "", count("GREETING"))
                .unwrap_or("220 relay.example.com ESMTP\r\n");
            seen.lock().unwrap().push("GREETING".into());
            let _ = stream.write_all(greeting.as_bytes());
            if !greeting.starts_with('2') {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let verb = line
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_end_matches(':')
                    .to_ascii_uppercase();
                let verb = verb.split(':').next().unwrap_or("").to_owned();
                let scripted = script(&verb, &line, count(&verb));
                seen.lock().unwrap().push(verb.clone());
                let reply = scripted.unwrap_or(match verb.as_str() {
                    "EHLO" => "250-relay.example.com\r\n250 8BITMIME\r\n",
                    "DATA" => "354 go ahead\r\n",
                    "QUIT" => "221 2.0.0 Bye\r\n",
                    _ => "250 2.0.0 OK\r\n",
                });
                if stream.write_all(reply.as_bytes()).is_err() || verb == "QUIT" {
                    break;
                }
                if verb == "DATA" && reply.starts_with("354") {
                    // The message, up to the lone ".".
                    let mut body = String::new();
                    while reader.read_line(&mut body).is_ok_and(|n| n > 0) {
                        if body == ".\r\n" {
                            break;
                        }
                        body.clear();
                    }
                    let end = script(".", "", count("."));
                    seen.lock().unwrap().push(".".into());
                    let end = end.unwrap_or("250 2.0.0 queued\r\n");
                    if stream.write_all(end.as_bytes()).is_err() {
                        break;
                    }
                }
                line.clear();
            }
        }
    });
    (port, log)
}

/// Queues `n` messages (the first an alert, as an outage's alert would be).
fn queue_several(store: &mut Store, settings: &mail::MailSettings, n: usize) {
    for i in 0..n {
        let kind = if i == 0 {
            OutboxKind::Alert
        } else {
            OutboxKind::Report
        };
        mail::queue(
            store,
            settings,
            kind,
            &format!("message {i}"),
            "t",
            "<p>h</p>",
            at(8, 0),
        )
        .unwrap();
    }
}

/// `n` messages queued at 08:00 in a fresh store, and one delivery call then.
async fn queue_and_deliver(
    settings: &mail::MailSettings,
    n: usize,
) -> (Store, Mailer, mail::Delivery) {
    let mailer = Mailer::new(settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    queue_several(&mut store, settings, n);
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    (store, mailer, delivery)
}

fn relay_settings(port: u16) -> mail::MailSettings {
    let mut settings = plain_mail_settings(port);
    settings.retry = RetryPolicy::immediate(3);
    settings
}

/// A relay that does not accept our sender (`550 relaying denied` at MAIL FROM,
/// a misconfigured relay) refuses every message the same way: none is failed for
/// good, the first is rescheduled with the answer recorded, and the call stops
/// there instead of spending every queued message (alerts too) on it.
#[tokio::test]
async fn a_sender_refused_at_mail_from_keeps_every_message_and_stops_the_call() {
    let (port, log) =
        scripted_relay(|verb, _, _| (verb == "MAIL").then_some("550 5.7.1 relaying denied\r\n"));
    let settings = relay_settings(port);
    let mailer = Mailer::new(&settings).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    queue_several(&mut store, &settings, 3);

    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (0, 1, 0),
        "{delivery:?}"
    );
    assert!(delivery.last_error.unwrap().contains("550"));
    let outbox = store.outbox().unwrap();
    assert!(
        outbox.iter().all(|e| e.state == OutboxState::Pending),
        "{outbox:?}"
    );
    assert_eq!(outbox[0].attempts, 1);
    assert!(
        outbox[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("relaying denied")
    );
    assert_eq!(outbox[0].next_attempt_at, at(8, 1), "kept for a later call");
    assert_eq!(
        (outbox[1].attempts, outbox[2].attempts),
        (0, 0),
        "not tried"
    );
    let mails = log.lock().unwrap().iter().filter(|v| *v == "MAIL").count();
    assert_eq!(mails, 1, "one MAIL FROM per call, not retried at once");

    // Refused for longer than REFUSED_FOR_AT_MOST, a message is given up: it
    // carries the sender of when it was queued, which a corrected configuration
    // does not change, and it must not stand in front of later alerts for ever.
    let later = at(8, 0) + mail::REFUSED_FOR_AT_MOST + chrono::Duration::minutes(1);
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, later)
        .await
        .unwrap();
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (0, 0, 3),
        "{delivery:?}"
    );
    let outbox = store.outbox().unwrap();
    assert!(
        outbox.iter().all(|e| e.state == OutboxState::Failed
            && e.last_error
                .as_deref()
                .is_some_and(|m| m.contains("given up after 3 days"))),
        "{outbox:?}"
    );
}

/// A relay that refuses our connection from the greeting (`554`, an address on
/// its blocklist) is about the relay too: the message stays queued.
#[tokio::test]
async fn a_refusing_greeting_keeps_the_message() {
    let (port, _) = scripted_relay(|verb, _, _| {
        (verb == "GREETING").then_some("554 5.7.1 your address is blocklisted\r\n")
    });
    let settings = relay_settings(port);
    let (store, _, delivery) = queue_and_deliver(&settings, 2).await;
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (0, 1, 0),
        "{delivery:?}"
    );
    let outbox = store.outbox().unwrap();
    assert!(
        outbox.iter().all(|e| e.state == OutboxState::Pending),
        "{outbox:?}"
    );
}

/// A refusal of the message itself (`554` to DATA, or to its content) fails that
/// message for good, and the next one is sent.
#[tokio::test]
async fn a_message_refused_at_data_fails_and_the_next_is_sent() {
    let (port, log) = scripted_relay(|verb, _, seen| {
        (verb == "DATA" && seen == 0).then_some("554 5.7.1 message refused by policy\r\n")
    });
    let settings = relay_settings(port);
    let (store, _, delivery) = queue_and_deliver(&settings, 2).await;
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (1, 0, 1),
        "{delivery:?}"
    );
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox[0].state, OutboxState::Failed, "{outbox:?}");
    assert!(outbox[0].last_error.as_deref().unwrap().contains("554"));
    assert_eq!(outbox[1].state, OutboxState::Sent, "{outbox:?}");
    let datas = log.lock().unwrap().iter().filter(|v| *v == "DATA").count();
    assert_eq!(datas, 2, "a refused message is not retried");
}

#[tokio::test]
async fn a_message_refused_after_its_content_fails_and_the_next_is_sent() {
    let (port, _) = scripted_relay(|verb, _, seen| {
        (verb == "." && seen == 0).then_some("554 5.6.0 content rejected\r\n")
    });
    let settings = relay_settings(port);
    let (store, _, delivery) = queue_and_deliver(&settings, 2).await;
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (1, 0, 1),
        "{delivery:?}"
    );
    let outbox = store.outbox().unwrap();
    assert_eq!(
        (outbox[0].state, outbox[1].state),
        (OutboxState::Failed, OutboxState::Sent)
    );
}

/// One recipient the server does not know (`550 user unknown`) does not hold the
/// message from the others: it is sent to them, and the refusal is recorded on
/// the row and reported. When every recipient is refused nobody got it: the
/// message fails for good (its recipients are its own).
/// A temporary answer about one recipient (greylisting, 452 too many recipients)
/// is no refusal: the whole message is kept for later, so that recipient gets it.
#[tokio::test]
async fn a_recipient_answered_temporarily_keeps_the_whole_message() {
    let (port, log) = scripted_relay(|verb, line, _| {
        (verb == "RCPT" && line.contains("grey@")).then_some("450 4.2.0 greylisted\r\n")
    });
    let mut settings = relay_settings(port);
    settings.to = vec!["it-security@example.com".into(), "grey@example.com".into()];
    settings.retry = seatwarden::retry::RetryPolicy::immediate(0);
    let (store, _, delivery) = queue_and_deliver(&settings, 1).await;
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (0, 1, 0),
        "{delivery:?}"
    );
    assert_eq!(store.outbox().unwrap()[0].state, OutboxState::Pending);
    assert_eq!(
        log.lock().unwrap().iter().filter(|v| *v == "DATA").count(),
        0
    );
}

#[tokio::test]
async fn a_refused_recipient_is_reported_and_the_others_get_the_message() {
    let (port, log) = scripted_relay(|verb, line, _| {
        (verb == "RCPT" && line.contains("gone@")).then_some("550 5.1.1 user unknown\r\n")
    });
    let mut settings = relay_settings(port);
    settings.to = vec!["it-security@example.com".into(), "gone@example.com".into()];
    let (mut store, mailer, delivery) = queue_and_deliver(&settings, 1).await;
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (1, 0, 0),
        "{delivery:?}"
    );
    let error = delivery.last_error.unwrap();
    assert!(
        error.contains("gone@example.com") && error.contains("550"),
        "{error}"
    );
    let entry = store.outbox().unwrap().remove(0);
    assert_eq!(entry.state, OutboxState::Sent);
    assert!(entry.last_error.unwrap().contains("gone@example.com"));
    assert_eq!(log.lock().unwrap().iter().filter(|v| *v == ".").count(), 1);

    // Every recipient refused: the recipients are the message's own (on its row),
    // so it fails for good rather than stand first in the queue for ever.
    settings.to = vec!["gone@example.com".into()];
    queue_several(&mut store, &settings, 2);
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(8, 0))
        .await
        .unwrap();
    assert_eq!(
        (delivery.sent, delivery.retrying, delivery.failed),
        (0, 0, 2),
        "{delivery:?}"
    );
    assert!(
        delivery
            .last_error
            .unwrap()
            .contains("every recipient was refused")
    );
    let outbox = store.outbox().unwrap();
    assert_eq!(
        (outbox[1].state, outbox[2].state),
        (OutboxState::Failed, OutboxState::Failed)
    );
    assert_eq!(
        log.lock().unwrap().iter().filter(|v| *v == "DATA").count(),
        1
    );
}

/// Mail clients thread by `In-Reply-To` and `References`: an alert's reminders
/// and its resolution name its first mail's Message-ID, and the same condition
/// raised again after its resolution starts a thread of its own.
#[test]
fn reminders_and_the_resolution_reply_to_the_alerts_first_mail() {
    use seatwarden::alert::{self, AlertCondition, AlertContext};
    let mut store = Store::open_in_memory().unwrap();
    let settings = plain_mail_settings(25);
    let context = AlertContext {
        name: "acme",
        timezone: chrono_tz::UTC,
        mail: &settings,
        admin_command: "seatwarden",
    };
    let condition = AlertCondition::CircuitBreakerOpen {
        reason: "9 of 10 writes failed".into(),
    };
    // Each message goes out before the next raise: no reminder is queued
    // behind one of its thread still waiting.
    let delivered = |store: &mut Store, when| {
        for entry in store.outbox().unwrap() {
            if entry.state == OutboxState::Pending {
                store.mark_message_sent(entry.id, when).unwrap();
            }
        }
    };
    alert::raise(&mut store, &context, &condition, at(8, 0)).unwrap();
    delivered(&mut store, at(8, 1));
    alert::raise(&mut store, &context, &condition, at(9, 0)).unwrap();
    delivered(&mut store, at(9, 1));
    alert::raise(&mut store, &context, &condition, at(10, 0)).unwrap();
    alert::resolve(&mut store, &context, &condition.key(), at(10, 30)).unwrap();
    // Its resolution once it stayed clear for `resolve_after`.
    alert::resolve_due(&mut store, &context, at(11, 30)).unwrap();
    alert::raise(&mut store, &context, &condition, at(12, 0)).unwrap();

    let header = |formatted: &str, name: &str| {
        formatted
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
    };
    let sent: Vec<(String, String)> = store
        .outbox()
        .unwrap()
        .iter()
        .map(|entry| {
            let formatted =
                String::from_utf8(mail::build_message(entry).unwrap().formatted()).unwrap();
            (entry.message.subject.clone(), formatted)
        })
        .collect();
    let subjects: Vec<&str> = sent.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "[seatwarden] acme: circuit breaker open: workspace writes stopped",
            "[seatwarden] acme: still: circuit breaker open: workspace writes stopped",
            "[seatwarden] acme: still: circuit breaker open: workspace writes stopped",
            "Resolved: [seatwarden] acme: circuit breaker open: workspace writes stopped",
            "[seatwarden] acme: circuit breaker open: workspace writes stopped",
        ]
    );
    let first = header(&sent[0].1, "Message-ID").unwrap();
    assert_eq!(header(&sent[0].1, "In-Reply-To"), None);
    for (subject, formatted) in &sent[1..4] {
        assert_eq!(
            header(formatted, "In-Reply-To").as_deref(),
            Some(first.as_str()),
            "{subject}\n{formatted}"
        );
        assert_eq!(
            header(formatted, "References").as_deref(),
            Some(first.as_str()),
            "{subject}\n{formatted}"
        );
    }
    let again = &sent[4].1;
    assert_eq!(header(again, "In-Reply-To"), None, "{again}");
    assert_eq!(header(again, "References"), None, "{again}");
    assert_ne!(header(again, "Message-ID").unwrap(), first);
}
