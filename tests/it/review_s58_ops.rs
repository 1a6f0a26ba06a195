//! Session 58: operators' leftovers. `seatwarden approve` read the directory
//! (minutes on a large Okta or Entra ID) while it held the writer lock, and the
//! daemon's reconcile and same-day sweep waited for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::Utc;
use seatwarden::approval::{self, Only};
use seatwarden::model::IdentityStatus;
use seatwarden::run::Mode;
use seatwarden::store::{Store, WriterLock, lock_is_held};
use seatwarden::workspace::ScimClient;

use crate::review_s45_approve::{converged, execute, write_directory};
use crate::review_s56_approve_reads::{held_deactivation_of, set_status, suspend_two};

/// `approve` of a run holding two deactivations: the directory is an export the
/// test feeds through a named pipe, so its read lasts until the test writes it.
/// While approve reads it, the writer lock is free (a daemon job could take
/// it); the approval then goes on under the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_reads_the_directory_without_holding_the_writer_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, _) = converged(dir.path()).await;
    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("max_deprovisions = 1000\n", "max_deprovisions = 0\n"),
    )
    .unwrap();
    let config =
        seatwarden::config::Config::load_with_env(&toml, Some(Default::default())).unwrap();
    assert_eq!(config.safety.max_deprovisions, 0);
    let two = suspend_two(&mut data);
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    held_deactivation_of(&held, &two[0]);
    held_deactivation_of(&held, &two[1]);

    let export = dir.path().join("directory.json");
    let contents = std::fs::read(&export).unwrap();
    std::fs::remove_file(&export).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&export)
        .status()
        .unwrap();
    assert!(made.success());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&toml)
        .args(["approve", &held.run_id.to_string(), "--lock-timeout", "60s"])
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the pipe to write waits until approve opens it to read: from then
    // on, its directory read waits for what the test writes.
    let fifo = export.clone();
    let writer = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().write(true).open(fifo).unwrap()
        }),
    )
    .await
    .expect("approve never read the directory")
    .unwrap();
    let lock = WriterLock::path(&config.state.path);
    let held_while_reading = lock_is_held(&lock).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        std::io::Write::write_all(&mut writer, &contents).unwrap();
    })
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !held_while_reading,
        "approve held the writer lock while it read the directory"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(": 2 approved (2 applied"), "{stdout}");
    let workspace = sandbox.snapshot();
    for identity in &two {
        let account = workspace
            .accounts
            .iter()
            .find(|a| a.external_id.as_deref() == Some(identity.as_str()))
            .unwrap();
        assert!(!account.active, "{identity} is deactivated");
    }
    sandbox.shutdown().await;
}

/// Read before the lock, the directory shows both people still suspended; a
/// plan reads it again meanwhile and sees one of them back. The newer read
/// decides: that person's deactivation is refused, the other's applied, and
/// the approval says whose read it went by.
#[tokio::test]
async fn a_directory_read_again_while_approve_waited_for_the_lock_decides() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    let two = suspend_two(&mut data);
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    let back_seq = held_deactivation_of(&held, &two[0]);
    let gone_seq = held_deactivation_of(&held, &two[1]);

    let store = Store::open(&config.state.path).unwrap();
    let ahead = approval::read_ahead(&config, &store, held.run_id, &Only::All)
        .await
        .unwrap()
        .expect("held deactivations are read for");
    set_status(&mut data, &two[0], IdentityStatus::Active);
    write_directory(dir.path(), &data);
    let newer = execute(&config, Mode::Plan).await;

    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve_read_ahead(
        &config,
        &client,
        store,
        held.run_id,
        &Only::All,
        Some(ahead),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(approval.approved, vec![gone_seq], "{approval:?}");
    assert_eq!(approval.refused.len(), 1, "{approval:?}");
    assert_eq!(approval.refused[0].0, back_seq);
    assert!(
        approval.refused[0]
            .1
            .contains(&format!("in the directory read by run {}", newer.run_id)),
        "{}",
        approval.refused[0].1
    );
    let note = approval.directory_note.clone().unwrap();
    assert!(
        note.starts_with(&format!("run {} read the directory at ", newer.run_id)),
        "{note}"
    );
    assert!(
        note.ends_with(": the re-check used that newer read"),
        "{note}"
    );
    sandbox.shutdown().await;
}

const DEMO_TOKEN: &str = "review-s58-ops-token";

/// `seatwarden digest` only reads, as `status` and `report` do (session 55 made
/// those wait for no writer): while a daemon job holds SQLite's write lock (the
/// nightly VACUUM, a large snapshot being stored) it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_printed_by_hand_does_not_wait_for_a_daemon_jobs_write() {
    let sandbox = crate::fixtures::demo_sandbox(DEMO_TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, config) = crate::fixtures::demo_env(dir.path(), &sandbox, DEMO_TOKEN, &[]);
    let store = Store::open(&config.state.path).unwrap();
    seatwarden::run::execute(&config, store, Mode::Reconcile)
        .await
        .unwrap();
    let job = rusqlite::Connection::open(&config.state.path).unwrap();
    job.execute_batch("BEGIN IMMEDIATE; DELETE FROM outbox;")
        .unwrap();
    let path = dir.path().to_owned();
    let ran = tokio::task::spawn_blocking(move || {
        [
            &["digest"][..],
            &["digest", "--format", "json", "--period", "7d"],
        ]
        .into_iter()
        .map(|args| (args, crate::fixtures::seatwarden_in(&path, &env, args)))
        .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    job.execute_batch("ROLLBACK").unwrap();
    for (args, (code, stderr)) in ran {
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
    sandbox.shutdown().await;
}

/// A `send-mail` killed (SIGKILL, an OOM kill) while it sent left its claim on
/// the message: nobody sent it for ten minutes (the shortest claim), an
/// overdue-deprovision alert with it. The sender lock (`<state.path>.sender`,
/// which the operating system lets go when its holder dies) tells a dead
/// claim from a live one: the next sender, finding no other alive, sends it at
/// once; a claim whose sender still runs stays its own.
#[tokio::test]
async fn a_message_claimed_by_a_sender_that_died_goes_out_at_the_next_delivery() {
    use chrono::TimeZone;
    use seatwarden::mail::{self, Mailer};
    use seatwarden::store::{OutboxKind, OutboxState, SenderLock, Senders};
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
    let queue = |store: &mut Store, subject: &str| {
        mail::queue(
            store,
            &settings,
            OutboxKind::Alert,
            subject,
            "text",
            "<p>html</p>",
            at(0),
        )
        .unwrap()
    };
    let sent = || log.lock().unwrap().iter().filter(|v| *v == ".").count();

    // A sender still running holds the lock: its claim stands.
    let live = queue(&mut store, "claimed by a live sender");
    let mut other = Store::open(&database).unwrap();
    assert!(other.claim_message(live, at(0), at(10)).unwrap());
    let Senders::Alone(running) = SenderLock::take(&database).await.unwrap() else {
        panic!("nobody else sends");
    };
    let running = running.share().unwrap();
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(1))
        .await
        .unwrap();
    assert_eq!((delivery.sent, sent()), (0, 0), "{delivery:?}");

    // It dies (the OS lets its lock go): the next delivery sends the message.
    drop(running);
    let delivery = mail::deliver_due(&mut store, &mailer, settings.retry, at(2))
        .await
        .unwrap();
    assert_eq!((delivery.sent, sent()), (1, 1), "{delivery:?}");
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox[0].state, OutboxState::Sent, "{outbox:#?}");
}
