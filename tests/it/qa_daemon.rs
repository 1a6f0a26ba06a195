//! What an operator running the daemon trips over: mail that reaches people in
//! the wrong order after the relay was down, and the like. Each test names the
//! situation as the operator meets it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

use crate::fixtures::plain_mail_settings;
use chrono::{DateTime, TimeZone, Utc};
use seatwarden::mail::{self, Mailer};
use seatwarden::retry::RetryPolicy;
use seatwarden::store::{OutboxKind, Store};

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, 0).unwrap()
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A relay on loopback that accepts every message; returns its port and the
/// subjects it received, in order.
fn accepting_relay() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let subjects = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::clone(&subjects);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = stream.write_all(b"220 relay.example.com ESMTP\r\n");
            let mut line = String::new();
            let mut in_data = false;
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                let reply: &[u8] = if in_data {
                    if let Some(subject) = line.strip_prefix("Subject: ") {
                        received.lock().unwrap().push(subject.trim_end().to_owned());
                    }
                    if line == ".\r\n" {
                        in_data = false;
                        b"250 2.0.0 queued\r\n"
                    } else {
                        b""
                    }
                } else {
                    let verb = line.split_whitespace().next().unwrap_or("");
                    match verb.to_ascii_uppercase().as_str() {
                        "EHLO" => b"250-relay.example.com\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => b"221 2.0.0 Bye\r\n",
                        _ => b"250 2.0.0 OK\r\n",
                    }
                };
                if stream.write_all(reply).is_err() || line.starts_with("QUIT") {
                    break;
                }
                line.clear();
            }
        }
    });
    (port, subjects)
}

/// The relay was down while a deprovision went overdue and was then done: the
/// alert, tried more often, waits longer for its next attempt than its
/// resolution queued later. Once the relay is back the resolution must not go
/// first, or people read "Resolved" and then an overdue alert that is no longer
/// true as news; it goes with the alert, after it.
#[tokio::test]
async fn after_a_relay_outage_a_resolution_never_reaches_people_before_its_alert() {
    let mut store = Store::open_in_memory().unwrap();
    let down = plain_mail_settings(closed_port());
    let alert_subject = "[seatwarden] acme: ada is overdue";
    let alert = mail::queue(
        &mut store,
        &down,
        OutboxKind::Alert,
        alert_subject,
        "text",
        "<p>html</p>",
        at(8, 0),
    )
    .unwrap();
    let down_mailer = Mailer::new(&down).unwrap();
    for minute in [0, 1] {
        let delivery = mail::deliver_due(&mut store, &down_mailer, down.retry, at(8, minute))
            .await
            .unwrap();
        assert_eq!(delivery.retrying, 1, "{delivery:?}");
    }
    let root = store.outbox().unwrap()[0].message_id();
    assert_eq!(store.outbox().unwrap()[0].id, alert);
    let resolution_subject = format!("Resolved: {alert_subject}");
    store
        .enqueue_message(
            &seatwarden::store::NewMessage {
                in_reply_to: Some(root),
                ..mail::compose(
                    &down,
                    OutboxKind::Resolution,
                    &resolution_subject,
                    "text",
                    "<p>html</p>",
                )
            },
            at(8, 2),
        )
        .unwrap();

    let (port, received) = accepting_relay();
    let up = plain_mail_settings(port);
    let up_mailer = Mailer::new(&up).unwrap();
    // Only the resolution is due: it waits for its alert.
    let early = mail::deliver_due(&mut store, &up_mailer, up.retry, at(8, 2))
        .await
        .unwrap();
    assert_eq!(early.sent, 0, "{early:?}");
    assert!(received.lock().unwrap().is_empty());
    // The alert is due: both go, in order.
    let both = mail::deliver_due(&mut store, &up_mailer, up.retry, at(8, 3))
        .await
        .unwrap();
    assert_eq!(both.sent, 2, "{both:?}");
    assert_eq!(
        *received.lock().unwrap(),
        vec![alert_subject.to_owned(), resolution_subject]
    );
}

const TOKEN: &str = "qa-daemon-token";

/// The demo's files in a new folder, pointed at a demo sandbox, after one
/// reconcile (everyone linked).
async fn reconciled_demo() -> (
    seatwarden::sandbox::Sandbox,
    tempfile::TempDir,
    seatwarden::config::Config,
) {
    use seatwarden::run::{self, Mode};

    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let env = [
        ("SEATWARDEN__WORKSPACE__URL", sandbox.base_url().to_string()),
        ("SEATWARDEN__WORKSPACE__TOKEN", TOKEN.to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let config =
        seatwarden::config::Config::load_with_env(&dir.path().join("seatwarden.toml"), Some(env))
            .unwrap();
    run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    (sandbox, dir, config)
}

/// Deletes from the demo's directory file in `dir` a person whose account is
/// active and no Owner; returns their directory id and userName.
fn delete_a_leaver(
    dir: &std::path::Path,
    sandbox: &seatwarden::sandbox::Sandbox,
) -> (String, String) {
    let path = dir.join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut users = full["users"].as_array().unwrap().clone();
    let workspace = sandbox.snapshot();
    let leaver = users
        .iter()
        .position(|user| {
            user["status"].as_str().unwrap_or("active") == "active"
                && workspace.accounts.iter().any(|a| {
                    a.active
                        && a.external_id.as_deref() == user["id"].as_str()
                        && !a.roles.iter().any(|r| r == "Owner")
                })
        })
        .unwrap();
    let removed = users.remove(leaver);
    std::fs::write(&path, serde_json::json!({ "users": users }).to_string()).unwrap();
    (
        removed["id"].as_str().unwrap().to_owned(),
        removed["userName"].as_str().unwrap().to_owned(),
    )
}

/// One sweep pass now, with one try per request; its outcome and the store.
async fn sweep_once(
    config: &seatwarden::config::Config,
) -> (seatwarden::sweep::SweepOutcome, Arc<Mutex<Store>>) {
    let mut settings = config.scim_settings().unwrap();
    settings.retry = RetryPolicy::immediate(1);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let outcome = seatwarden::sweep::sweep(
        config,
        &config.directory(),
        &client,
        &store,
        Utc::now(),
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    (outcome, store)
}

/// Someone deleted from the directory, whose deactivation the workspace refuses
/// (5xx past the retries): the failed job's error, which `status` and the
/// repeated-failure alert show, names them by their account's userName, not by
/// the directory id their episode opened with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_deactivation_names_the_deleted_person_by_their_account() {
    use seatwarden::sandbox::Faults;
    let (sandbox, dir, config) = reconciled_demo().await;
    let (leaver, user_name) = delete_a_leaver(dir.path(), &sandbox);
    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let (outcome, _store) = sweep_once(&config).await;
    assert_eq!((outcome.enforced, outcome.failed), (0, 1), "{outcome:?}");
    let error = outcome.checked().unwrap_err().to_string();
    assert!(
        error.contains(&format!("first error: {user_name}: ")),
        "{error}"
    );
    assert!(!error.contains(&leaver), "{error}");
    sandbox.shutdown().await;
}

/// Someone deleted from the directory while the workspace is down: their
/// episode is named by their account's userName from the last stored workspace
/// snapshot from the start, so `status` and an overdue alert sent before the
/// workspace answers again do not show a bare directory id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_deleted_while_the_workspace_is_down_is_named_by_their_account() {
    let (sandbox, dir, config) = reconciled_demo().await;
    let (leaver, user_name) = delete_a_leaver(dir.path(), &sandbox);
    sandbox.shutdown().await;
    let (outcome, store) = sweep_once(&config).await;
    assert!(
        outcome.unread.is_some(),
        "the workspace was down: {outcome:?}"
    );
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver).unwrap();
    assert_eq!(episode.user_name, user_name, "{open:?}");
}
