//! Session 41's review of what an SRE running seatwarden as a service reads:
//! the metrics an outage and a restart show, the unit's status after a reload,
//! the state database a clean stop leaves, and the log of an outage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use chrono::Timelike;
use seatwarden::daemon::{DIGEST, MAIL, PRUNE, RETRY, SWEEP};
use seatwarden::store::{RunStatus, Store};

use crate::fixtures::http_get as get;

/// A daemon killed when the test ends, however it ends.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the sample `series` (name and labels, as rendered) in a
/// `/metrics` answer.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The port the daemon logging to `log` listens on, once it has started.
pub(crate) async fn port_of(log: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .find(|line| line.contains("daemon started"))
            .and_then(|line| line.split("listen=127.0.0.1:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok())
        {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not start: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A workspace that is down: the reconcile's reads are retried, then the run
/// fails. Those retries are what `seatwarden_retries_total` is there to show,
/// yet they were counted only from a run that finished (from its report's
/// summary): during an outage the counter stood still, and every failed
/// reconcile's retries were lost. The other workspace jobs (sweep, retry) are
/// recorded as just run, so the reconcile is the only job that asks the
/// workspace anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reconciles_retries_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    // Nothing listens there: every request is refused, and retried.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The retry job fires every minute: start well before the next one.
    while chrono::Utc::now().second() >= 30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    {
        let mut store = Store::open(&dir.path().join("state.db")).unwrap();
        let now = chrono::Utc::now();
        for job in [SWEEP, RETRY, PRUNE, DIGEST, MAIL] {
            store.job_started(job, now).unwrap();
            store
                .job_finished(job, now, RunStatus::Succeeded, None)
                .unwrap();
        }
    }
    let env: Vec<(String, String)> = [
        (
            "SEATWARDEN__WORKSPACE__URL",
            format!("http://127.0.0.1:{down}/scim/v2"),
        ),
        (
            "SEATWARDEN__WORKSPACE__TOKEN",
            "review-s41-token".to_owned(),
        ),
        ("SEATWARDEN__WORKSPACE__RETRIES", "2".to_owned()),
        ("SEATWARDEN__WORKSPACE__RETRY_DELAY", "10ms".to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let _daemon = Running(child);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let port = port_of(&log).await;
    let failed = r#"seatwarden_job_runs_total{job_name="reconcile",status="failed"}"#;
    let deadline = Instant::now() + Duration::from_secs(25);
    let metrics = loop {
        let (code, metrics) = get(port, "/metrics");
        if code == 200 && sample(&metrics, failed) == Some(1.0) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the reconcile did not fail: {metrics}\n{}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for job in [SWEEP, RETRY] {
        for status in ["succeeded", "failed", "stopped"] {
            let series =
                format!(r#"seatwarden_job_runs_total{{job_name="{job}",status="{status}"}}"#);
            assert_eq!(
                sample(&metrics, &series),
                Some(0.0),
                "{series}: another job asked the workspace too\n{}",
                logged()
            );
        }
    }
    let retries = sample(&metrics, "seatwarden_retries_total").unwrap();
    assert!(
        retries >= 2.0,
        "seatwarden_retries_total is {retries} after a reconcile that failed after its \
         retries\n{}",
        logged()
    );
}

/// A clean stop (SIGTERM, nothing running) closes the state database: SQLite
/// then folds the `-wal` file into `state.db` and removes it. The daemon's own
/// connection was never closed (the job starter it keeps refers back to the
/// state that holds the connection), so the committed data stayed in
/// `state.db-wal`: the systemd README's "after a clean stop it holds only
/// `state.db`" was not so, and a copy of `state.db` alone, taken after a stop
/// as a backup, lacked what the daemon had written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_the_state_in_the_database_file() {
    let token = "review-s41-token";
    let sandbox =
        crate::fixtures::demo_sandbox(token, seatwarden::sandbox::Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(dir.path(), &sandbox, token, &[]);
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let mut daemon = Running(child);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let port = port_of(&log).await;
    let succeeded = r#"seatwarden_job_runs_total{job_name="reconcile",status="succeeded"}"#;
    let idle = |metrics: &str| {
        ["reconcile", "sweep", "retry", "mail"].iter().all(|job| {
            sample(
                metrics,
                &format!(r#"seatwarden_job_running{{job_name="{job}"}}"#),
            ) == Some(0.0)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, metrics) = get(port, "/metrics");
        if code == 200 && sample(&metrics, succeeded) == Some(1.0) && idle(&metrics) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first jobs did not finish: {metrics}\n{}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::fixtures::sigterm(&daemon.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop: {}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", logged());
    let wal = dir.path().join("state.db-wal");
    let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        left,
        0,
        "{} holds {left} bytes after a clean stop\n{}",
        wal.display(),
        logged()
    );
    // `state.db` alone, as a backup copies it, holds the run.
    let copy = dir.path().join("backup.db");
    std::fs::copy(dir.path().join("state.db"), &copy).unwrap();
    let store = Store::open(&copy).unwrap();
    assert!(
        store
            .latest_run(&[seatwarden::store::RunKind::Reconcile])
            .unwrap()
            .is_some(),
        "a copy of state.db has no reconcile"
    );
}

/// A sweep with nothing due, the workspace down: the outage is warned about
/// once, without "0 of 0 due accounts were not read; their deprovisions are
/// tried again later", which sent people looking for deprovisions that were
/// not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_nothing_due_names_no_deprovisions() {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env: Vec<(String, String)> = [
        (
            "SEATWARDEN__WORKSPACE__URL",
            format!("http://127.0.0.1:{down}/scim/v2"),
        ),
        (
            "SEATWARDEN__WORKSPACE__TOKEN",
            "review-s41-token".to_owned(),
        ),
        ("SEATWARDEN__WORKSPACE__RETRIES", "0".to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let _daemon = Running(child);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logged().contains("stopped answering") {
        assert!(
            Instant::now() < deadline,
            "no sweep found the workspace down: {}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = logged();
    let line = log
        .lines()
        .find(|line| line.contains("stopped answering"))
        .unwrap();
    assert!(
        line.contains("no due account was left unread") && !line.contains("0 of 0"),
        "{line}"
    );
}

/// The notifications read from `socket` until one has `READY=1` (within 30 s).
fn until_ready(socket: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(length) = socket.recv(&mut buffer) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
        let ready = message.lines().any(|line| line == "READY=1");
        seen.push(message);
        if ready {
            return seen;
        }
    }
    panic!("no READY=1 within 30 s: {seen:?}");
}

/// `systemctl reload` with an invalid configuration succeeds (its `kill -HUP`
/// did), and the daemon goes on with the configuration it had: the person who
/// reloaded had nothing in `systemctl status` to tell them, only a log line and
/// a gauge. The failed reload is the unit's `STATUS=` until a reload succeeds,
/// which clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_shows_in_systemctl_status_until_one_succeeds() {
    let token = "review-s41-token";
    let sandbox =
        crate::fixtures::demo_sandbox(token, seatwarden::sandbox::Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut env, _) = crate::fixtures::demo_env(dir.path(), &sandbox, token, &[]);
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    env.push(("NOTIFY_SOCKET".to_owned(), path.display().to_string()));
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let daemon = Running(child);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    until_ready(&socket);
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &daemon.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let config = dir.path().join("seatwarden.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[nonsense]\nkey = 1\n")).unwrap();
    hangup();
    let failed = until_ready(&socket).join("");
    let status = failed
        .lines()
        .find_map(|line| line.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= after a failed reload: {failed:?}\n{}", logged()));
    assert!(
        status.starts_with("configuration reload failed") && status.contains("nonsense"),
        "{status}"
    );
    std::fs::write(&config, good).unwrap();
    hangup();
    let reloaded = until_ready(&socket).join("");
    assert!(
        reloaded.lines().any(|line| line == "STATUS="),
        "the failed reload's status is not cleared: {reloaded:?}\n{}",
        logged()
    );
}

/// The gauges only a reconcile knows (`seatwarden_drift_items`,
/// `seatwarden_safety_finding`) come back at start from the last reconcile's
/// stored report. They were absent after every restart until the next
/// reconcile ended, up to an interval later: each alert on them (stale access
/// left, a source fault) resolved at the restart and fired again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_last_reconciles_gauges() {
    let token = "review-s41-token";
    let sandbox =
        crate::fixtures::demo_sandbox(token, seatwarden::sandbox::Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(dir.path(), &sandbox, token, &[]);
    let series = [
        r#"seatwarden_drift_items{kind="orphaned_account"}"#,
        r#"seatwarden_drift_items{kind="disputed_match"}"#,
        r#"seatwarden_drift_items{kind="stale_access"}"#,
        r#"seatwarden_safety_finding{finding="source_fault"}"#,
    ];
    let succeeded = r#"seatwarden_job_runs_total{job_name="reconcile",status="succeeded"}"#;

    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let mut first = Running(child);
    let port = port_of(&log).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let (code, metrics) = get(port, "/metrics");
        if code == 200 && sample(&metrics, succeeded) == Some(1.0) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the first reconcile did not succeed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let values: Vec<Option<f64>> = series.iter().map(|s| sample(&before, s)).collect();
    assert!(values.iter().all(Option::is_some), "{values:?}\n{before}");
    // The demo leaves an orphaned account and a disputed match to a human.
    assert!(
        values[0].unwrap() > 0.0 && values[1].unwrap() > 0.0,
        "{values:?}"
    );
    crate::fixtures::sigterm(&first.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the first daemon did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Its reconcile ran today: the next start waits for the slot (1 January).
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let _second = Running(child);
    let port = port_of(&log).await;
    let (code, after) = get(port, "/metrics");
    assert_eq!(code, 200, "{after}");
    assert_eq!(sample(&after, succeeded), Some(0.0), "{after}");
    let restored: Vec<Option<f64>> = series.iter().map(|s| sample(&after, s)).collect();
    assert_eq!(restored, values, "{after}");
}
