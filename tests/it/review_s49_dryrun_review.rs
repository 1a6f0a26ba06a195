//! Review of `schedule.dry_run` (session 49): what a daemon that only observes
//! must neither do nor say. A dry run leaves the alerts about writes (a plan
//! held for approval, the circuit breaker) as the last enforcing run left them;
//! a sweep that fired before a reload into dry run sends nothing after it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use seatwarden::alert::AlertCondition;
use seatwarden::report::Report;
use seatwarden::sandbox::Faults;

use crate::daemon::{daemon_env, demo_sandbox, start_daemon, wait_for};
use crate::review_s39_holds::{active, alerting_notifier};

/// A report of `mode` that found nothing, held nothing and passed no breaker.
fn quiet_report(mode: &str) -> Report {
    Report {
        schema_version: seatwarden::report::SCHEMA_VERSION,
        run_id: 9,
        mode: mode.to_owned(),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        directory: "file directory.json".to_owned(),
        workspace: "https://acme.example/scim/v2".to_owned(),
        summary: Default::default(),
        drift: Vec::new(),
        actions: Vec::new(),
        safety: Default::default(),
    }
}

/// After an enforce→dry-run switch the enforcing run's holds still wait for
/// `approve` (status and `seatwarden_actions_awaiting_approval` count them) and
/// the breaker stays open (nothing passed it): a dry run, which holds nothing
/// approvable and writes nothing, must not mail their resolution. An enforcing
/// run that held nothing and found the breaker closed resolves both, as before.
#[test]
fn a_dry_run_resolves_neither_a_plan_hold_nor_an_open_breaker() {
    let (_config_dir, notifier) = alerting_notifier();
    let dir = tempfile::tempdir().unwrap();
    let mut store = seatwarden::store::Store::open(&dir.path().join("state.db")).unwrap();
    let now = Utc::now();
    notifier.raise(
        &mut store,
        &AlertCondition::PlanHeld {
            run_id: 4,
            held: 3,
            reason: "deprovisions: 3 in this run, over the limit of 2".to_owned(),
        },
        now,
    );
    notifier.raise(
        &mut store,
        &AlertCondition::CircuitBreakerOpen {
            reason: "5 of 8 writes failed".to_owned(),
        },
        now,
    );
    for key in ["plan_held", "circuit_breaker_open"] {
        assert!(active(&store, key), "{key} raised");
    }

    notifier.after_reconcile(&mut store, &quiet_report("dry_run"), now);
    for key in ["plan_held", "circuit_breaker_open"] {
        let record = store.alert(key).unwrap().unwrap();
        assert!(
            active(&store, key) && record.cleared_at.is_none(),
            "a dry run left {key} as it was: {record:?}"
        );
    }

    notifier.after_reconcile(&mut store, &quiet_report("reconcile"), now);
    for key in ["plan_held", "circuit_breaker_open"] {
        let record = store.alert(key).unwrap().unwrap();
        assert!(
            !active(&store, key) || record.cleared_at.is_some(),
            "an enforcing run resolves {key}: {record:?}"
        );
    }
}

/// A sweep fired while the daemon enforced waits for the writer lock (a command
/// run by hand holds it); meanwhile a person leaves, and a SIGHUP turns
/// `schedule.dry_run` on. Once the lock is free the sweep must not deactivate
/// anyone: the daemon only observes now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_waiting_at_a_reload_into_dry_run_writes_nothing() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "* * * * * *");
    let config_path = dir.path().join("seatwarden.toml");
    let enforcing = std::fs::read_to_string(&config_path).unwrap();
    let mut daemon = start_daemon(dir.path(), env);
    daemon.listening().await;
    wait_for("the first reconcile", Duration::from_secs(120), || {
        daemon.get("/readyz").0 == 200
    })
    .await;

    // A command run by hand holds the writer lock: the next sweep waits for it.
    let database = dir.path().join("state.db");
    let held = loop {
        if let Some(lock) = seatwarden::store::WriterLock::try_acquire(&database).unwrap() {
            break lock;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_for("a sweep waiting", Duration::from_secs(60), || {
        daemon.logged("waiting for a seatwarden command run by hand to finish")
    })
    .await;

    // A linked, active person who is not an Owner leaves.
    let directory_path = dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let workspace = sandbox.snapshot();
    let users = directory["users"].as_array_mut().unwrap();
    let position = users
        .iter()
        .position(|u| {
            let id = u["id"].as_str().unwrap();
            u["status"].as_str().unwrap_or("active") == "active"
                && workspace.accounts.iter().any(|a| {
                    a.active
                        && a.external_id.as_deref() == Some(id)
                        && !a.roles.iter().any(|r| r == "Owner")
                })
        })
        .expect("an active, provisioned person who is not an Owner");
    let leaver = users.remove(position);
    let external_id = leaver["id"].as_str().unwrap().to_owned();
    std::fs::write(&directory_path, directory.to_string()).unwrap();

    crate::review_s49_dryrun::write_dry_run(&config_path, &enforcing);
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", daemon.child.id())])
        .status();
    wait_for("the reload into dry run", Duration::from_secs(30), || {
        daemon.logged("dry run (schedule.dry_run = true)")
    })
    .await;
    let writes_before = sandbox.stats().writes;
    drop(held);

    wait_for("the waiting sweep", Duration::from_secs(60), || {
        daemon.logged("job skipped: schedule.dry_run") || sandbox.stats().writes > writes_before
    })
    .await;
    // Time for a pass that was not skipped to send its deactivation.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sandbox.stats().writes,
        writes_before,
        "a daemon in dry run writes nothing: {}",
        daemon.log.lock().unwrap()
    );
    let account = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.external_id.as_deref() == Some(external_id.as_str()))
        .unwrap();
    assert!(account.active, "the leaver's account is left as it was");
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    sandbox.shutdown().await;
}

/// A daemon in dry run killed mid-run (SIGKILL, the OOM killer) left its dry run
/// `running`: no writer closes a dry run (it holds no writer lock), so `status`
/// showed it under way for good and the prune never removed it. The next start
/// closes it as interrupted, and `status` says it was cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_cut_off_by_a_kill_is_closed_at_the_next_start() {
    // Slow enough answers that the kill comes mid-run.
    let sandbox = demo_sandbox(Faults {
        latency: Duration::from_secs(2),
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let config_path = dir.path().join("seatwarden.toml");
    let enforcing = std::fs::read_to_string(&config_path).unwrap();
    crate::review_s49_dryrun::write_dry_run(&config_path, &enforcing);
    let run_status = |dir: &std::path::Path| -> Vec<(String, String, Option<String>)> {
        let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
        let mut stmt = db
            .prepare("SELECT kind, status, error FROM runs ORDER BY id")
            .unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut daemon = start_daemon(dir.path(), env.clone());
    daemon.listening().await;
    wait_for("the dry run to begin", Duration::from_secs(60), || {
        daemon.logged("run started")
    })
    .await;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    assert_eq!(
        run_status(dir.path()),
        [("dry_run".to_owned(), "running".to_owned(), None)]
    );

    let mut daemon = start_daemon(dir.path(), env);
    daemon.listening().await;
    let runs = run_status(dir.path());
    assert_eq!(runs.len(), 1, "no run at the restart: {runs:?}");
    assert_eq!(
        (runs[0].0.as_str(), runs[0].1.as_str()),
        ("dry_run", "failed"),
        "{runs:?}"
    );
    assert_eq!(
        runs[0].2.as_deref(),
        Some(seatwarden::store::INTERRUPTED_RUN_ERROR)
    );
    let status = daemon.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(
            "last dry run: run 1, cut off (the daemon stopped before it finished; closed at \
             its next start "
        ),
        "{text}"
    );
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    sandbox.shutdown().await;
}

/// `status` in dry run: its "Last reconcile" is the last run that wrote, and
/// what it says the next reconcile does (recover its cut-off writes, plan the
/// unsent again) no dry run does; a line under it says that waits until
/// `schedule.dry_run` is off. Not shown when the daemon enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_dry_run_says_the_last_reconcile_waits_for_enforcing() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "* * * * *");
    let config = dir.path().join("seatwarden.toml");
    let command = |args: &[&str], dry_run: &str| {
        let mut env = env.clone();
        env.push(("SEATWARDEN__SCHEDULE__DRY_RUN".into(), dry_run.into()));
        let dir = dir.path().to_owned();
        let config = config.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_seatwarden"))
                .current_dir(dir)
                .args(["--config", config.to_str().unwrap()])
                .args(&args)
                .envs(env)
                .output()
                .unwrap()
        })
    };
    let reconciled = command(&["reconcile"], "false").await.unwrap();
    assert!(
        reconciled.status.success(),
        "{}",
        String::from_utf8_lossy(&reconciled.stderr)
    );
    let note = "the last run that wrote: dry runs since write nothing";
    let status = command(&["status"], "true").await.unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let last = text
        .lines()
        .position(|l| l.starts_with("Last reconcile: run 1 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.lines().nth(last + 1).is_some_and(|l| l.contains(note)),
        "{text}"
    );
    let status = command(&["status"], "false").await.unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("Last reconcile: run 1 ") && !text.contains(note),
        "{text}"
    );
    sandbox.shutdown().await;
}
