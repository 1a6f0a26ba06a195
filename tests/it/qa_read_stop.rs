//! A stop (SIGTERM, SIGINT, the daemon stopping) that comes while a run is still
//! reading, before its first write: against a workspace that answers a read 429
//! with `Retry-After: 60`, the run is given up at once (nothing was sent, so
//! nothing is lost), plans and stores nothing, is recorded stopped, and the next
//! run does the work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatwarden::apply::StopSignal;
use seatwarden::config::Config;
use seatwarden::model::ActionKind;
use seatwarden::run::{self, Mode, RunError, RunOptions};
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::{ActionState, RunKind, RunStatus, Store};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "qa-read-stop-token";

/// Each retry of a read waits this long (the workspace asks so): the default
/// retry policy's six retries take six minutes.
const RETRY_AFTER_SECS: u64 = 60;

/// Far below one read's wait for its retry ([`RETRY_AFTER_SECS`]), and below the
/// daemon's 30 s stop grace; generous for a loaded machine (5 s was not: a
/// process's exit there can take seconds).
const PROMPT: Duration = Duration::from_secs(15);

/// Every request refused 429, to wait a minute for its retry.
fn throttling() -> Faults {
    Faults {
        rate_429: 1.0,
        retry_after_secs: RETRY_AFTER_SECS,
        ..Faults::default()
    }
}

/// Every request answered this late: long enough for a test to change the faults
/// between a request's arrival and the next one's. (At 300 ms a loaded machine
/// could let the next requests through before the faults changed: the first 429
/// then came late, or to a write.)
fn slow() -> Faults {
    Faults {
        latency: Duration::from_secs(2),
        ..Faults::default()
    }
}

/// The demo's configuration and directory in `dir`, pointed at `sandbox`: the
/// environment (for the binary too) and the configuration.
fn demo(dir: &Path, sandbox: &Sandbox) -> (Vec<(String, String)>, Config) {
    crate::fixtures::demo_env(dir, sandbox, TOKEN, &[])
}

/// The configured retry policy: six retries, each as late as the workspace asks.
fn client(config: &Config) -> ScimClient {
    ScimClient::new(config.scim_settings().unwrap()).unwrap()
}

async fn reconcile(config: &Config, options: RunOptions) -> Result<run::RunOutcome, RunError> {
    run::execute_with_options(
        config,
        &run::directory_from_config(config),
        &client(config),
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
        options,
    )
    .await
}

/// Polls (no sleep of a guessed length) until `reached` holds of the sandbox.
async fn wait_until(sandbox: &Sandbox, what: &str, reached: impl Fn(&Sandbox) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reached(sandbox) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A reconcile on `config`, stopped once `sandbox` has refused a request with 429
/// (see [`stop_at_the_first_refusal_after`]): its outcome, and how long after the
/// stop it ended.
async fn reconcile_stopped_at_the_first_refusal(
    sandbox: &Arc<Sandbox>,
    config: &Config,
) -> (Result<run::RunOutcome, RunError>, Duration) {
    let stop = StopSignal::new();
    let stopped_at = stop_at_the_first_refusal_after(sandbox, 0, &stop);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        reconcile(
            config,
            RunOptions {
                stop,
                ..RunOptions::default()
            },
        ),
    )
    .await
    .expect("the run did not end within a minute of its start");
    (outcome, stopped_at.await.unwrap().elapsed())
}

/// Once the request after `before` arrives (the run's `/ServiceProviderConfig`,
/// answered late: see [`slow`]), every request after it is refused 429; once one
/// is, `stop` is set. Returns when it was set.
fn stop_at_the_first_refusal_after(
    sandbox: &Arc<Sandbox>,
    before: u64,
    stop: &StopSignal,
) -> tokio::task::JoinHandle<Instant> {
    let (sandbox, stop) = (Arc::clone(sandbox), stop.clone());
    tokio::spawn(async move {
        wait_until(&sandbox, "the run's first request", |s| {
            s.stats().requests > before
        })
        .await;
        sandbox.set_faults(throttling());
        wait_until(&sandbox, "a 429", |s| s.stats().faults_429 >= 1).await;
        stop.stop();
        Instant::now()
    })
}

/// The reconcile's `/ServiceProviderConfig` is answered; its listing of the
/// workspace is refused 429 with `Retry-After: 60`, and the stop comes while it
/// waits for its retry. The run ends within moments, not a minute later, stopped
/// while reading: recorded stopped, with no plan, no report, and nothing sent.
/// With the workspace healthy again, the next run plans and applies as a first
/// run does (the demo's leaver deactivated once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_listing_waits_for_its_retry_gives_the_reconcile_up_at_once() {
    let sandbox = Arc::new(crate::fixtures::demo_sandbox(TOKEN, slow()).await);
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = demo(dir.path(), &sandbox);
    let (outcome, took) = reconcile_stopped_at_the_first_refusal(&sandbox, &config).await;
    assert!(
        took < PROMPT,
        "the run ended {took:?} after the stop, against a wait of {RETRY_AFTER_SECS} s"
    );
    assert!(
        matches!(outcome, Err(RunError::StoppedReading)),
        "not stopped while reading: {outcome:?}"
    );
    // The listing was not retried: whatever else was asked at once, nothing later.
    assert!(sandbox.stats().faults_429 <= 2, "{:?}", sandbox.stats());
    assert_eq!(sandbox.stats().writes, 0);

    let store = Store::open(&config.state.path).unwrap();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped);
    assert!(run.finished_at.is_some());
    assert_eq!(
        run.error.as_deref(),
        Some(RunError::StoppedReading.to_string().as_str())
    );
    assert!(
        store.journal(run.id).unwrap().is_empty(),
        "a plan was stored"
    );
    assert!(store.drift(run.id).unwrap().is_empty(), "a plan was stored");
    assert!(
        store.report(run.id).unwrap().is_none(),
        "a report was stored"
    );
    assert!(store.interrupted().unwrap().is_empty());
    drop(store);

    sandbox.set_faults(Faults::default());
    let next = reconcile(&config, RunOptions::default()).await.unwrap();
    assert_ne!(next.run_id, run.id);
    let deactivations = next
        .plan
        .runnable()
        .filter(|a| matches!(a.kind, ActionKind::Deactivate { .. }))
        .count();
    assert_eq!(deactivations, 1, "{:?}", next.plan.actions);
    let store = Store::open(&config.state.path).unwrap();
    let journal = store.journal(next.run_id).unwrap();
    let writes: Vec<_> = journal
        .iter()
        .filter(|row| row.state != ActionState::Held)
        .collect();
    assert!(!writes.is_empty());
    assert!(
        writes.iter().all(|row| row.state == ActionState::Applied),
        "{journal:?}"
    );
    assert_eq!(sandbox.stats().writes as usize, writes.len());
    assert_eq!(
        store
            .latest_run(&[RunKind::Reconcile])
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
}

/// A stop while a reconcile's recovery reads the workspace (the `/Users` count it
/// starts with refused 429): the run is given up at once, and the row a crashed
/// run left in flight stays in flight (the recovery writes its outcomes only once
/// every read is answered). The next run resolves it, as not reached, and sends
/// the deactivation once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_recovery_leaves_the_rows_in_flight_for_the_next_run() {
    let sandbox = Arc::new(crate::fixtures::demo_sandbox(TOKEN, slow()).await);
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = demo(dir.path(), &sandbox);
    // The demo's leaver, Olivia (00u1014), and her account.
    let deactivation = ActionKind::Deactivate {
        account_id: "ws-0015".into(),
    };
    let crashed = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store
            .begin_run(RunKind::Reconcile, chrono::Utc::now())
            .unwrap();
        let plan = seatwarden::model::Plan {
            actions: vec![seatwarden::model::Action {
                seq: 0,
                kind: deactivation.clone(),
                reason: seatwarden::model::DriftKind::StaleAccess,
                subject: "olivia.haddad@example.com".into(),
                identity_id: Some("00u1014".into()),
                detail: "identity is deprovisioned in the directory".into(),
                held: None,
            }],
            ..seatwarden::model::Plan::default()
        };
        store.save_plan(run, &plan, chrono::Utc::now()).unwrap();
        store.mark_in_flight(run, 0, chrono::Utc::now()).unwrap();
        run
    };
    let (outcome, took) = reconcile_stopped_at_the_first_refusal(&sandbox, &config).await;
    assert!(took < PROMPT, "the run ended {took:?} after the stop");
    assert!(
        matches!(outcome, Err(RunError::StoppedReading)),
        "not stopped while reading: {outcome:?}"
    );
    assert_eq!(sandbox.stats().faults_429, 1, "{:?}", sandbox.stats());
    assert_eq!(sandbox.stats().writes, 0);
    let store = Store::open(&config.state.path).unwrap();
    let in_flight = store.interrupted().unwrap();
    assert_eq!(in_flight.len(), 1, "{in_flight:?}");
    assert_eq!(in_flight[0].run, crashed);
    let stopped = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_ne!(stopped.id, crashed);
    assert_eq!(stopped.status, RunStatus::Stopped);
    assert!(store.journal(stopped.id).unwrap().is_empty());
    drop(store);

    sandbox.set_faults(Faults::default());
    let next = reconcile(&config, RunOptions::default()).await.unwrap();
    let store = Store::open(&config.state.path).unwrap();
    assert!(store.interrupted().unwrap().is_empty());
    assert_eq!(
        store.journal(crashed).unwrap()[0].state,
        ActionState::Failed,
        "never sent, so not reached"
    );
    let journal = store.journal(next.run_id).unwrap();
    let sent = journal
        .iter()
        .find(|row| row.action.kind == deactivation)
        .unwrap_or_else(|| panic!("no deactivation planned: {journal:?}"));
    assert_eq!(sent.state, ActionState::Applied);
    assert_eq!(
        sandbox.stats().writes as usize,
        journal
            .iter()
            .filter(|row| row.state == ActionState::Applied)
            .count()
    );
}

/// A sweep whose directory opened a leaver's episode, stopped while the read of
/// the leaver's account waits a minute for its retry: the pass ends within
/// moments, stopped while reading, with nothing sent; the episode stays open and
/// due, with no attempt counted. The next pass deactivates the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_a_sweep_reads_a_leavers_account_ends_the_pass_with_nothing_sent() {
    let sandbox = Arc::new(crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await);
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = demo(dir.path(), &sandbox);
    // Links the demo's people to their accounts.
    reconcile(&config, RunOptions::default()).await.unwrap();
    let leaver = "00u1002";
    let path = dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let person = directory["users"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|user| user["id"] == leaver)
        .unwrap();
    person["status"] = "suspended".into();
    std::fs::write(&path, directory.to_string()).unwrap();

    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let sweep = |stop: StopSignal| {
        let (config, store) = (config.clone(), Arc::clone(&store));
        async move {
            let (client, directory) = (client(&config), config.sweep_directory());
            let sweeping = seatwarden::sweep::sweep(
                &config,
                &directory,
                &client,
                &store,
                chrono::Utc::now(),
                seatwarden::sweep::configured_sla(&config),
            );
            seatwarden::apply::until_stopped(stop, sweeping).await.0
        }
    };
    let writes_before = sandbox.stats().writes;
    sandbox.set_faults(slow());
    let stop = StopSignal::new();
    // The pass's first request is its `/ServiceProviderConfig` (the directory is
    // a file, and nothing is in flight): the read of the account after it waits.
    let stopped_at = stop_at_the_first_refusal_after(&sandbox, sandbox.stats().requests, &stop);
    let passed = tokio::time::timeout(Duration::from_secs(60), sweep(stop))
        .await
        .expect("the pass did not end within a minute of its start");
    let took = stopped_at.await.unwrap().elapsed();
    assert!(
        took < PROMPT,
        "the pass ended {took:?} after the stop, against a wait of {RETRY_AFTER_SECS} s"
    );
    assert!(
        matches!(passed, Err(RunError::StoppedReading)),
        "not stopped while reading: {passed:?}"
    );
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    // The due accounts are read at once, each refused once and none retried.
    let due = open.iter().filter(|e| e.account_id.is_some()).count();
    assert!(
        sandbox.stats().faults_429 <= due as u64,
        "{:?}, {open:?}",
        sandbox.stats()
    );
    assert_eq!(sandbox.stats().writes, writes_before);
    let episode = open
        .iter()
        .find(|e| e.identity_id == leaver)
        .unwrap_or_else(|| panic!("no open episode: {open:?}"));
    assert!(episode.account_id.is_some(), "{episode:?}");
    assert_eq!(episode.attempts, 0, "{episode:?}");
    assert_eq!(episode.enforced_at, None, "{episode:?}");
    assert_eq!(episode.last_error, None, "{episode:?}");

    sandbox.set_faults(Faults::default());
    let outcome = sweep(StopSignal::new()).await.unwrap();
    assert!(outcome.enforced >= 1, "{outcome:?}");
    assert_eq!(
        sandbox.stats().writes,
        writes_before + outcome.enforced as u64
    );
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    assert!(open.iter().all(|e| e.identity_id != leaver), "{open:?}");
}

/// Waits up to a minute for `child` to exit; kills it and fails if it does not.
/// `seatwarden reconcile` under systemd, SIGTERM while its read of the workspace
/// waits a minute for its retry: it exits within moments with 143, says it
/// stopped reading, and the run is recorded stopped with nothing planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_reconcile_reads_exits_143_at_once() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, throttling()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = demo(dir.path(), &sandbox);
    let log = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .arg("reconcile")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(&sandbox, "a 429", |s| s.stats().faults_429 >= 1).await;
    let signalled = Instant::now();
    crate::fixtures::sigterm(&child);
    let status = crate::fixtures::exit_of(child, "seatwarden reconcile").await;
    let took = signalled.elapsed();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(took < PROMPT, "exited {took:?} after SIGTERM: {stderr}");
    assert_eq!(
        status.code(),
        Some(seatwarden::cli::exit::TERMINATED.into()),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "interrupted (SIGTERM): stopped reading; nothing was written to the workspace \
             and nothing was planned"
        ),
        "{stderr}"
    );
    // The first signal's line says so too, before the run has given up.
    assert!(
        stderr.contains("SIGTERM: stopping: a run still reading gives up at once;"),
        "{stderr}"
    );
    assert_eq!(sandbox.stats().faults_429, 1, "{stderr}");
    assert_eq!(sandbox.stats().writes, 0, "{stderr}");
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped, "{stderr}");
    assert!(store.journal(run.id).unwrap().is_empty(), "{stderr}");
    assert!(store.report(run.id).unwrap().is_none(), "{stderr}");
}

/// The daemon's SIGTERM while its first job (the reconcile or the sweep, both run
/// at start) waits a minute for a read's retry: the daemon stops within moments,
/// not at the end of its 30 s grace; the job is recorded stopped, none failed,
/// and a reconcile it began is recorded stopped with nothing planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stops_at_once_while_a_job_reads_and_records_it_stopped() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, throttling()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = demo(dir.path(), &sandbox);
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    wait_until(&sandbox, "a 429", |s| s.stats().faults_429 >= 1).await;
    let signalled = Instant::now();
    crate::fixtures::sigterm(&child);
    let status = crate::fixtures::exit_of(child, "the daemon").await;
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(took < PROMPT, "stopped {took:?} after SIGTERM: {log}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("job stopped"), "{log}");
    assert!(!log.contains("job failed"), "{log}");
    assert_eq!(sandbox.stats().faults_429, 1, "{log}");
    assert_eq!(sandbox.stats().writes, 0, "{log}");

    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let jobs = store.jobs().unwrap();
    let stopped: Vec<_> = jobs
        .iter()
        .filter(|job| job.last_status == Some(RunStatus::Stopped))
        .collect();
    assert_eq!(stopped.len(), 1, "{jobs:?}");
    assert!(
        jobs.iter()
            .all(|job| job.last_status != Some(RunStatus::Failed)),
        "{jobs:?}"
    );
    if let Some(run) = store.latest_run(&[RunKind::Reconcile]).unwrap() {
        assert_eq!(stopped[0].name, "reconcile", "{jobs:?}");
        assert_eq!(run.status, RunStatus::Stopped, "{log}");
        assert!(store.journal(run.id).unwrap().is_empty(), "{log}");
    }
}
