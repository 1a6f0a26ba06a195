//! Session 40's review of the email side and what people are told after a run:
//! `report --run` of a reconcile killed before its report, alerts, the outbox,
//! digests and reports as mail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
use seatwarden::store::{Decision, RunKind, Store};

/// A configuration in `dir` whose state database is `state.db` beside it.
fn state_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \
         \"https://x.example/scim/v2\"\ntoken = \"t\"\n[state]\npath = \"state.db\"\n",
    )
    .unwrap();
    config
}

/// `seatwarden report --run RUN` on `config`: its exit code and stderr.
fn report_run(config: &Path, run: i64) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(config)
        .args(["report", "--run", &run.to_string()])
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN__REPORT__ADMIN_COMMAND")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn deactivate(seq: u32, held: Option<HoldReason>) -> Action {
    Action {
        seq,
        kind: ActionKind::Deactivate {
            account_id: format!("a{seq}"),
        },
        reason: DriftKind::StaleAccess,
        subject: format!("user{seq}@example.com"),
        identity_id: Some(format!("00u{seq}")),
        detail: "identity is deprovisioned in the directory".into(),
        held,
    }
}

/// A reconcile killed before its report whose directory read was incomplete:
/// `report --run` said of its holds "held for a human" and told to `approve`
/// the run, which refuses every one of them (and nothing of a settle-window
/// wait is a human's either). It now counts them by what releases them and
/// tells the command that does; only a hold awaiting a decision is a human's,
/// and one rejected is told as decided.
#[test]
fn a_killed_reconciles_incomplete_directory_holds_are_not_told_as_held_for_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_config(dir.path());
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let now = chrono::Utc::now();
    let settling = HoldReason::Settling {
        first_seen: now,
        settles_at: now + chrono::Duration::minutes(10),
    };
    let killed = store.begin_run(RunKind::Reconcile, now).unwrap();
    let plan = Plan {
        actions: vec![
            deactivate(0, None),
            deactivate(1, Some(HoldReason::IncompleteDirectory)),
            deactivate(2, Some(HoldReason::IncompleteDirectory)),
            deactivate(3, Some(settling.clone())),
        ],
        ..Plan::default()
    };
    store.save_plan(killed, &plan, now).unwrap();
    store.mark_in_flight(killed, 0, now).unwrap();
    store.mark_applied(killed, 0, now, None).unwrap();
    drop(store);

    let (code, err) = report_run(&config, killed);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("run {killed} (reconcile) was cut off: "))
            && err.contains(
                "Its writes: 1 applied, 2 held because the directory read was incomplete \
                 (nothing to approve), 1 waiting for the settle window."
            )
            && err.contains("`seatwarden reconcile` again once the directory reads whole")
            && !err.contains("held for a human")
            && !err.contains("approve 1"),
        "{err}"
    );

    // Beside them, a hold for a human is told so, with the command that decides
    // it, and one rejected since is decided.
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    store
        .finish_run(
            killed,
            now,
            seatwarden::store::RunStatus::Failed,
            Some("interrupted"),
        )
        .unwrap();
    let other = store.begin_run(RunKind::Reconcile, now).unwrap();
    let plan = Plan {
        actions: vec![
            deactivate(0, Some(HoldReason::IncompleteDirectory)),
            deactivate(1, Some(HoldReason::LastOwner)),
            deactivate(2, Some(HoldReason::LastOwner)),
        ],
        ..Plan::default()
    };
    store.save_plan(other, &plan, now).unwrap();
    store
        .record_decisions(other, &[(2, Decision::Rejected, None)], "review", now)
        .unwrap();
    drop(store);
    let (code, err) = report_run(&config, other);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "Its writes: 1 held for a human, 1 held because the directory read was incomplete \
             (nothing to approve), 1 held and rejected (never sent from this run)."
        ) && err.contains(&format!("then `seatwarden approve {other}`")),
        "{err}"
    );
}

/// A relay that accepts connections and never says a word (a firewall that
/// lets the handshake through, a hung MTA): its port.
pub(crate) fn silent_relay() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            held.push(stream);
        }
    });
    port
}

/// A sender holds a message while it sends it; another sender (`send-mail` from
/// a shell beside the daemon's mail job) leaves it alone until that claim lapses.
/// The claim was a fixed ten minutes, while a send to a relay gone silent, with
/// `report.email.timeout = "60s"` and the configured retries, takes about 16:
/// the other sender took the message at minute ten and both sent it. The claim
/// now covers the whole send, and the send stops before the claim lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_send_keeps_its_claim_so_no_other_sender_sends_it_too() {
    use chrono::TimeZone;
    use seatwarden::mail::{self, Mailer};
    use seatwarden::store::OutboxKind;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("state.db");
    let at = |minute: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 4, 8, minute, 0)
            .unwrap()
    };
    let mut settings = crate::fixtures::plain_mail_settings(silent_relay());
    settings.timeout = std::time::Duration::from_secs(60);
    // As `Config::mail_settings` sets it.
    settings.retry = seatwarden::retry::RetryPolicy {
        max_retries: 3,
        min_delay: std::time::Duration::from_millis(500),
        max_delay: std::time::Duration::from_secs(5),
        max_retry_after: std::time::Duration::from_secs(5),
    };
    let mut store = Store::open(&database).unwrap();
    let id = mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "deprovision of ada@example.com is overdue",
        "text",
        "<p>html</p>",
        at(0),
    )
    .unwrap();
    let sender = tokio::spawn(async move {
        let mailer = Mailer::new(&settings).unwrap();
        mail::deliver_due(&mut store, &mailer, settings.retry, at(0)).await
    });

    let other = Store::open(&database).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while other.outbox().unwrap()[0].next_attempt_at == at(0) {
        assert!(std::time::Instant::now() < deadline, "never claimed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut other = other;
    assert!(
        other.due_messages(at(11), 10).unwrap().is_empty(),
        "due to another sender while the first still sends it"
    );
    assert!(!other.claim_message(id, at(11), at(21)).unwrap());
    // Not held for ever either: due again once a whole send could have ended
    // (four attempts of four timeouts each, and a timeout for each one's QUIT).
    assert_eq!(other.due_messages(at(22), 10).unwrap().len(), 1);
    sender.abort();
}

/// However long `report.email.timeout` is, a send ends before its claim (at
/// most an hour) lapses: an attempt still under way then is given up, the
/// message kept for a later call. (Time paused: the relay's silence costs no
/// wall-clock time.)
#[tokio::test(start_paused = true)]
async fn a_send_ends_before_its_claim_lapses_whatever_the_timeout() {
    use chrono::TimeZone;
    use seatwarden::mail::{self, Mailer};
    use seatwarden::store::{OutboxKind, OutboxState};
    let at = |minute: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 4, 8, minute, 0)
            .unwrap()
    };
    let mut settings = crate::fixtures::plain_mail_settings(silent_relay());
    settings.timeout = std::time::Duration::from_secs(30 * 60);
    settings.retry = seatwarden::retry::RetryPolicy {
        max_retries: 3,
        min_delay: std::time::Duration::from_millis(500),
        max_delay: std::time::Duration::from_secs(5),
        max_retry_after: std::time::Duration::from_secs(5),
    };
    let mut store = Store::open_in_memory().unwrap();
    mail::queue(
        &mut store,
        &settings,
        OutboxKind::Alert,
        "subject",
        "text",
        "<p>html</p>",
        at(0),
    )
    .unwrap();
    let mailer = Mailer::new(&settings).unwrap();
    let started = tokio::time::Instant::now();
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(0))
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60 * 60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((delivery.sent, delivery.retrying), (0, 1), "{delivery:?}");
    let entry = store.outbox().unwrap().remove(0);
    assert_eq!(entry.state, OutboxState::Pending);
    assert!(
        entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("the time the message was claimed for")),
        "{entry:?}"
    );
}
