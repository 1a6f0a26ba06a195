//! Session 54: the probes while a job holds the state database's write lock (a
//! reconcile storing a large snapshot, a prune's VACUUM, a backup). `/healthz`,
//! `/readyz` and `/metrics` answer meanwhile, without waiting for the lock nor
//! for the daemon's own connection, on which a job's start is being recorded
//! (that write does wait for the lock, up to the busy timeout).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use seatwarden::sandbox::Faults;

use crate::daemon::{daemon_env, demo_sandbox, http, start_daemon, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_answer_while_a_job_holds_the_write_lock() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    std::fs::write(dir.path().join("trigger-token"), "probe-trigger\n").unwrap();
    env.push((
        "SEATWARDEN__HTTP__TRIGGER_TOKEN_FILE".into(),
        "trigger-token".into(),
    ));
    let daemon = start_daemon(dir.path(), env);
    wait_for(
        "the first reconcile (readyz)",
        Duration::from_secs(60),
        || daemon.get("/readyz").0 == 200,
    )
    .await;
    let port = daemon.port().unwrap();
    let finished = || daemon.log.lock().unwrap().matches("job finished").count();
    let finished_before = finished();
    let holder = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A reconcile asked for now records its start on the daemon's own connection:
    // that write waits for the lock held here.
    assert_eq!(
        http(port, "POST", "/reconcile", Some("probe-trigger")).0,
        202
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answers = Vec::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let asked = Instant::now();
        let (code, body) = daemon.get(path);
        answers.push((path, code, asked.elapsed()));
        assert_eq!(code, 200, "{path} while the write lock is held: {body}");
    }
    // Still held: each answered while it was.
    holder.execute_batch("ROLLBACK").unwrap();
    eprintln!("answers while another connection held the write lock: {answers:?}");
    wait_for("the triggered reconcile", Duration::from_secs(60), || {
        finished() > finished_before
    })
    .await;
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains("cannot record the job start"),
        "the start waited for the lock and was recorded: {log}"
    );
    sandbox.shutdown().await;
}
