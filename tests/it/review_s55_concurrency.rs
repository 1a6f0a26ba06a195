//! Session 55 review: commands run by hand beside the daemon on the same state
//! database and workspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::store::Store;

const TOKEN: &str = "review-s55-token";

/// The read-only commands opened the state database with the migration's
/// `BEGIN IMMEDIATE`, SQLite's write lock, though there was nothing to migrate:
/// while a daemon job held that lock (the nightly prune's VACUUM, a 100k-account
/// snapshot being stored) `status`, `report`, `explain`, `export` and `audit`
/// waited out the 5 s busy timeout and failed with "database is locked" (a
/// monitoring check on `status` went red). They only read: they wait for no
/// writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_commands_do_not_wait_for_a_daemon_jobs_write() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, config) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    let store = Store::open(&config.state.path).unwrap();
    seatwarden::run::execute(&config, store, seatwarden::run::Mode::Reconcile)
        .await
        .unwrap();
    // A daemon job in the middle of a long write transaction.
    let job = rusqlite::Connection::open(&config.state.path).unwrap();
    job.execute_batch("BEGIN IMMEDIATE; DELETE FROM outbox;")
        .unwrap();
    let commands: [&[&str]; 5] = [
        &["status"],
        &["report"],
        &["explain", "ava.smith@example.com"],
        &["export", "access"],
        &["audit"],
    ];
    let path = dir.path().to_owned();
    let ran = tokio::task::spawn_blocking(move || {
        commands
            .into_iter()
            .map(|args| {
                let (code, stderr) = crate::fixtures::seatwarden_in(&path, &env, args);
                (args, code, stderr)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    // Held until every command is done: one that waited for it failed.
    job.execute_batch("ROLLBACK").unwrap();
    for (args, code, stderr) in ran {
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
    }
}

/// `seatwarden reconcile` printed its report while it still held the writer
/// lock. Piped into a pager left open (`reconcile | less`), or to a reader that
/// stalls, a report larger than the pipe's buffer kept the process blocked on
/// its output, the lock with it: the daemon's sweeps waited behind a pager, and
/// same-day deprovisioning with them. The run is over before the report is
/// printed; the lock goes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_whose_report_is_not_read_holds_no_writer_lock() {
    use seatwarden::sandbox::{Sandbox, SandboxOptions};
    use seatwarden::store::{WriterLock, lock_is_held};
    let data = seatwarden::synth::generate(&seatwarden::synth::SynthSpec {
        people: 600,
        groups: 6,
        drift_percent: 0.0,
        seed: 55,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // An empty workspace: the first reconcile creates everyone, and its JSON
    // report is far larger than a pipe holds.
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            ..SandboxOptions::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config =
        crate::fixtures::synth_config(dir.path(), &data, sandbox.base_url().as_str(), TOKEN, 8);
    let lock = WriterLock::path(&config.state.path);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .args(["reconcile", "--format", "json"])
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its report stored, the run is done: what is left is the printing, which
    // waits for a reader that never comes.
    let stored = crate::fixtures::poll_until(Duration::from_secs(180), || {
        Store::open_existing(&config.state.path)
            .ok()
            .and_then(|store| store.latest_report().ok().flatten())
            .is_some()
    })
    .await;
    assert!(stored, "the reconcile stored no report");
    let freed =
        crate::fixtures::poll_until(Duration::from_secs(20), || !lock_is_held(&lock).unwrap())
            .await;
    let still_printing = child.try_wait().unwrap().is_none();
    // Read now: the process finishes either way.
    let mut report = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut report).unwrap();
    let status = child.wait().unwrap();
    assert!(report.len() > 128 * 1024, "{} bytes", report.len());
    assert!(
        still_printing,
        "the report was read before the check ({status})"
    );
    assert!(
        freed,
        "the writer lock stayed held while the report waited for its reader"
    );
    assert_eq!(status.code(), Some(0), "{status}");
}
