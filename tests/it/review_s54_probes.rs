//! Session 54: the probes while a job holds the state database's write lock (a
//! reconcile storing a large snapshot, a prune's VACUUM, a backup). `/healthz`,
//! `/readyz` and `/metrics` answer meanwhile, without waiting for the lock nor
//! for the daemon's own connection, on which a job's start is being recorded
//! (that write does wait for the lock, up to the busy timeout).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use seatwarden::sandbox::Faults;

use crate::daemon::{daemon_with_trigger_token, demo_sandbox, http, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_answer_while_a_job_holds_the_write_lock() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with_trigger_token(dir.path(), &sandbox, "probe-trigger").await;
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

/// A flood of `GET /readyz` (no token needed), as many at once as the listener
/// takes, while a reconcile runs: the reconcile's writes all get through (no
/// SQLITE_BUSY past the busy timeout) and it succeeds; each probe takes the
/// write lock once a second at most. The rate is printed for the review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_readiness_probes_fails_no_reconcile() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with_trigger_token(dir.path(), &sandbox, "flood-trigger").await;
    let port = daemon.port().unwrap();
    let finished = || daemon.log.lock().unwrap().matches("job finished").count();
    let finished_before = finished();
    let flooding = Arc::new(AtomicBool::new(true));
    let (answered, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (flooding, answered, refused) = (
                Arc::clone(&flooding),
                Arc::clone(&answered),
                Arc::clone(&refused),
            );
            std::thread::spawn(move || {
                while flooding.load(Ordering::SeqCst) {
                    match http(port, "GET", "/readyz", None).0 {
                        200 => answered.fetch_add(1, Ordering::SeqCst),
                        _ => refused.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    let flood_started = Instant::now();
    assert_eq!(
        http(port, "POST", "/reconcile", Some("flood-trigger")).0,
        202
    );
    wait_for(
        "the reconcile under the flood",
        Duration::from_secs(120),
        || finished() > finished_before,
    )
    .await;
    flooding.store(false, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let flooded_for = flood_started.elapsed();
    eprintln!(
        "flood: {} ready and {} other answers in {flooded_for:?} while the reconcile ran",
        answered.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst)
    );
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "every probe answered ready"
    );
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("job failed"), "{log}");
    assert!(!log.contains("cannot record"), "{log}");
    sandbox.shutdown().await;
}
