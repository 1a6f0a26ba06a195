//! Session 42: a long reconcile and same-day deprovisioning. Workspace writers
//! share the daemon's one lock, so a sweep fired while a reconcile runs waits
//! behind it; a leaver disabled in the directory after the reconcile took its
//! snapshot is seen only by that sweep. `schedule.reconcile_max_duration` stops
//! a reconcile past it as SIGTERM would, so that the sweep runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use seatwarden::config::Config;
use seatwarden::model::WorkspaceSnapshot;
use seatwarden::sandbox::Faults;
use seatwarden::store::{RunKind, RunStatus, Store};

use crate::fixtures;

/// Writes `d.json`: Bob with `bob_status`, and `newcomers` active people with
/// no account yet (each one a create for the reconcile).
fn write_directory(dir: &Path, newcomers: usize, bob_status: &str) {
    let person = |id: &str, name: &str, status: &str| {
        serde_json::json!({
            "id": id, "userName": format!("{name}@example.com"),
            "email": format!("{name}@example.com"), "givenName": name,
            "familyName": "Example", "status": status, "groups": []
        })
    };
    let mut users = vec![person("00u0", "bob", bob_status)];
    users.extend((1..=newcomers).map(|n| person(&format!("00n{n}"), &format!("new{n}"), "active")));
    std::fs::write(
        dir.join("d.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
}

/// A configuration in `dir` for the workspace at `url`: one request at a time
/// (so that a reconcile's creates take their latency each), no settle window.
fn config_for(url: &str, dir: &Path) -> Config {
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t0ken\"\nmax_concurrency = 1\n\
             requests_per_second = 10000\n\n[safety]\nsettle = \"0s\"\n\n\
             [state]\npath = \"state.db\"\n"
        ),
    )
    .unwrap();
    Config::load_with_env(
        &dir.join("seatwarden.toml"),
        Some(std::collections::HashMap::new()),
    )
    .unwrap()
}

/// Bob is disabled in the directory while the daemon's reconcile is creating
/// 80 accounts at 400 ms a request (about half a minute), its directory snapshot
/// long taken. The sweeps fire every two seconds and wait behind its lock. With
/// `schedule.reconcile_max_duration = "5s"` the reconcile is stopped as SIGTERM
/// stops it: no further create is sent, the run is recorded `stopped` with the
/// limit as its cause, and the waiting sweep deactivates Bob within seconds, not
/// after the whole reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_past_its_time_limit_stops_and_the_waiting_sweep_deactivates_a_leaver() {
    let sandbox = fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    write_directory(dir.path(), 0, "active");
    let config = config_for(sandbox.base_url().as_str(), dir.path());
    // Bob's account and link, from a reconcile run by hand.
    fixtures::reconcile(&config).await;
    let bob_active = |sandbox: &seatwarden::sandbox::Sandbox| {
        sandbox
            .snapshot()
            .accounts
            .iter()
            .find(|a| a.user_name == "bob@example.com")
            .map(|a| a.active)
    };
    assert_eq!(bob_active(&sandbox), Some(true));

    const NEWCOMERS: usize = 80;
    write_directory(dir.path(), NEWCOMERS, "active");
    sandbox.set_faults(Faults {
        latency: Duration::from_millis(400),
        ..Faults::default()
    });
    let env: Vec<(String, String)> = [
        ("SEATWARDEN__SCHEDULE__RECONCILE", "0 0 1 1 *".to_owned()),
        ("SEATWARDEN__SCHEDULE__SWEEP", "*/2 * * * * *".to_owned()),
        (
            "SEATWARDEN__SCHEDULE__RECONCILE_MAX_DURATION",
            "5s".to_owned(),
        ),
        ("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .map(|(name, value)| (name.to_owned(), value))
    .to_vec();
    let (mut daemon, log) = fixtures::spawn_daemon_with(dir.path(), &env);
    let port = fixtures::listening_port(&mut daemon, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;

    // The reconcile is applying: its snapshot of the directory is taken.
    let applying = fixtures::poll_until(Duration::from_secs(30), || {
        sandbox.snapshot().accounts.len() > 1
    })
    .await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        applying,
        "the reconcile never created an account:\n{}",
        log_text()
    );
    write_directory(dir.path(), NEWCOMERS, "suspended");
    let disabled = Instant::now();
    let deactivated = fixtures::poll_until(Duration::from_secs(60), || {
        bob_active(&sandbox) == Some(false)
    })
    .await;
    let took = disabled.elapsed();
    // The wait shows: the sweep's start says how long it waited, and the
    // histogram counts it.
    let (code, metrics) = fixtures::http_get(port, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    let waits = metrics
        .lines()
        .find(|l| l.starts_with("seatwarden_job_lock_wait_seconds_sum{job_name=\"sweep\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(waits.is_some_and(|s| s >= 1.0), "{waits:?}\n{metrics}");
    fixtures::sigterm(&daemon);
    fixtures::exit_of(daemon, "the daemon").await;
    let log = log_text();
    assert!(deactivated, "Bob was never deactivated:\n{log}");
    assert!(
        took < Duration::from_secs(15),
        "Bob was deactivated {took:?} after he was disabled, behind the whole reconcile:\n{log}"
    );

    // The reconcile stopped short of its plan, recorded with the limit as the cause.
    let created = sandbox.snapshot().accounts.len() - 1;
    assert!(created < NEWCOMERS, "{created} created:\n{log}");
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped, "{run:?}");
    let error = run.error.unwrap_or_default();
    assert!(
        error.contains("schedule.reconcile_max_duration (5s)")
            && !error.contains("seatwarden was stopping"),
        "{error}"
    );
    let job = store
        .jobs()
        .unwrap()
        .into_iter()
        .find(|j| j.name == "reconcile")
        .unwrap();
    // The job failed: a reconcile that keeps running out of its time never
    // converges, and must reach the repeated-failure alert.
    assert_eq!(job.last_status, Some(RunStatus::Failed), "{job:?}");
    assert!(
        log.contains("ran longer than schedule.reconcile_max_duration (5s)"),
        "{log}"
    );
    assert!(
        log.lines().any(
            |l| l.contains("job started after waiting for the writer lock")
                && l.contains("job=\"sweep\"")
                && l.contains("waited_secs=")
        ),
        "{log}"
    );
}

/// The limit is checked at load: a key error names the key and the file.
#[test]
fn a_reconcile_time_limit_that_is_no_duration_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_directory(dir.path(), 0, "active");
    config_for("http://127.0.0.1:9/scim/v2", dir.path());
    let file = dir.path().join("seatwarden.toml");
    let base = std::fs::read_to_string(&file).unwrap();
    for (value, says) in [("soon", "invalid duration"), ("0s", "longer than zero")] {
        std::fs::write(
            &file,
            format!("{base}\n[schedule]\nreconcile_max_duration = \"{value}\"\n"),
        )
        .unwrap();
        let error = Config::load_with_env(&file, Some(std::collections::HashMap::new()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("schedule.reconcile_max_duration")
                && error.contains("seatwarden.toml")
                && error.contains(says),
            "{value}: {error:?}"
        );
    }
}

/// A reconcile whose stop has a cause (the daemon's time limit) and that is given
/// up while still reading records the cause with its run: "stopped while
/// reading" alone reads as a SIGTERM nobody sent.
#[tokio::test]
async fn a_reconcile_given_up_while_reading_records_its_stops_cause() {
    let sandbox = fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    write_directory(dir.path(), 0, "active");
    let config = config_for(sandbox.base_url().as_str(), dir.path());
    let stop = seatwarden::apply::StopSignal::new();
    stop.stop_for("the reconcile ran longer than its limit".to_owned());
    let outcome = seatwarden::run::execute_with_options(
        &config,
        &seatwarden::run::directory_from_config(&config),
        &seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap(),
        Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Reconcile,
        seatwarden::run::RunOptions {
            stop,
            ..seatwarden::run::RunOptions::default()
        },
    )
    .await;
    assert!(
        matches!(outcome, Err(seatwarden::run::RunError::StoppedReading)),
        "{outcome:?}"
    );
    let store = Store::open(&config.state.path).unwrap();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped, "{run:?}");
    assert_eq!(
        run.error.as_deref(),
        Some(
            format!(
                "the reconcile ran longer than its limit: {}",
                seatwarden::run::RunError::StoppedReading
            )
            .as_str()
        ),
    );
    assert!(sandbox.snapshot().accounts.is_empty());
}
