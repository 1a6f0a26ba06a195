//! A stop (SIGTERM, SIGINT, the daemon stopping) while a write waits for its
//! retry: against a workspace that answers every write 429 with a long
//! `Retry-After`, the wait ends at once, the write is journaled "not sent" (never
//! applied, never left in flight), the run ends stopped, and the next run sends
//! it once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seatwarden::apply::{NOT_SENT_STOPPING, StopSignal};
use seatwarden::config::Config;
use seatwarden::model::ActionKind;
use seatwarden::run::{self, Mode, RunError, RunOptions};
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::{ActionState, RunKind, RunStatus, Store};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "qa-stop-token";

/// Each retry of a write waits this long (the workspace asks so): the default
/// retry policy's six retries take six minutes.
const RETRY_AFTER_SECS: u64 = 60;

/// Far below the retry budget of one write ([`RETRY_AFTER_SECS`] times six),
/// and below one retry's wait; generous for a loaded machine (5 s was not: a
/// process's exit there can take seconds).
const PROMPT: Duration = Duration::from_secs(15);

/// The demo's workspace, every write answered 429 with a `Retry-After` of a minute.
async fn throttling_sandbox() -> Sandbox {
    crate::fixtures::demo_sandbox(
        TOKEN,
        Faults {
            rate_429: 1.0,
            retry_after_secs: RETRY_AFTER_SECS,
            writes_only: true,
            ..Faults::default()
        },
    )
    .await
}

/// The demo's configuration and directory in `dir`, pointed at `sandbox`, one
/// write at a time: the environment (for the binary too) and the configuration.
fn demo(dir: &Path, sandbox: &Sandbox) -> (Vec<(String, String)>, Config) {
    crate::fixtures::demo_env(
        dir,
        sandbox,
        TOKEN,
        &[("SEATWARDEN__WORKSPACE__MAX_CONCURRENCY", "1")],
    )
}

async fn reconcile(config: &Config, options: RunOptions) -> Result<run::RunOutcome, RunError> {
    // The configured retry policy: six retries, each as late as the workspace asks.
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    run::execute_with_options(
        config,
        &run::directory_from_config(config),
        &client,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
        options,
    )
    .await
}

/// Polls (no sleep of a guessed length) until the sandbox has refused `count`
/// writes with 429.
async fn wait_for_refusals(sandbox: &Sandbox, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.stats().faults_429 < count {
        assert!(Instant::now() < deadline, "timed out waiting for a 429");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The run's first write (the leaver's deactivation) is refused 429 and waits a
/// minute for its retry; the stop comes during that wait. The run ends stopped
/// within moments, not after six minutes of retries; the deactivation was not
/// retried and is journaled "not sent", like every write after it, with nothing
/// left in flight. Once the workspace accepts writes, the next run sends the
/// deactivation once and it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_writes_wait_for_its_retry_and_the_next_run_sends_it_once() {
    let sandbox = Arc::new(throttling_sandbox().await);
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = demo(dir.path(), &sandbox);
    let stop = StopSignal::new();
    let stopped_at = tokio::spawn({
        let (stop, stats) = (stop.clone(), Arc::clone(&sandbox));
        async move {
            wait_for_refusals(&stats, 1).await;
            stop.stop();
            Instant::now()
        }
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        reconcile(
            &config,
            RunOptions {
                stop,
                ..RunOptions::default()
            },
        ),
    )
    .await
    .expect("the run did not end within a minute of its start");
    let took = stopped_at.await.unwrap().elapsed();
    assert!(
        took < PROMPT,
        "the run ended {took:?} after the stop, against a retry budget of {} s",
        RETRY_AFTER_SECS * 6
    );
    let Err(RunError::Stopped { unsent, .. }) = outcome else {
        panic!("not stopped: {outcome:?}");
    };
    // No retry left after the stop.
    assert_eq!(sandbox.stats().faults_429, 1);
    assert_eq!(sandbox.stats().writes, 0);

    let store = Store::open(&config.state.path).unwrap();
    assert!(
        store.interrupted().unwrap().is_empty(),
        "a row left in flight"
    );
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped);
    let error = run.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("stopped before the whole plan was applied")
            && error.ends_with("not sent, and the next run plans them again"),
        "{error}"
    );
    let journal = store.journal(run.id).unwrap();
    let writes: Vec<_> = journal
        .iter()
        .filter(|row| row.state != ActionState::Held)
        .collect();
    // The deactivation cut in its retries is among those not sent.
    assert_eq!(unsent, writes.len(), "{journal:?}");
    let deactivation = writes
        .iter()
        .find(|row| matches!(row.action.kind, ActionKind::Deactivate { .. }))
        .expect("the demo deactivates its leaver");
    assert_eq!(deactivation.state, ActionState::Failed);
    assert_eq!(deactivation.last_error.as_deref(), Some(NOT_SENT_STOPPING));
    assert!(
        writes
            .iter()
            .all(|row| row.state == ActionState::Failed || row.state == ActionState::Planned),
        "{journal:?}"
    );
    let report =
        seatwarden::report::Report::from_json(&store.report(run.id).unwrap().unwrap()).unwrap();
    assert_eq!(report.summary.actions_applied, 0);
    assert_eq!(report.summary.actions_failed, 0, "{:?}", report.summary);
    drop(store);

    sandbox.set_faults(Faults::default());
    let next = reconcile(&config, RunOptions::default()).await.unwrap();
    let deactivations: Vec<_> = next
        .plan
        .runnable()
        .filter(|a| matches!(a.kind, ActionKind::Deactivate { .. }))
        .collect();
    assert_eq!(deactivations.len(), 1, "{:?}", next.plan.actions);
    let store = Store::open(&config.state.path).unwrap();
    let journal = store.journal(next.run_id).unwrap();
    assert!(
        journal
            .iter()
            .filter(|row| row.state != ActionState::Held)
            .all(|row| row.state == ActionState::Applied),
        "{journal:?}"
    );
    // Every write of the second run was sent once and accepted; none before.
    assert_eq!(sandbox.stats().writes as usize, writes.len());
    assert_eq!(sandbox.stats().faults_429, 1);
}

/// `seatwarden reconcile` under systemd: SIGTERM while the first write waits a
/// minute for its retry ends the process within moments with 143, the run
/// recorded stopped, not after the retries (six minutes; systemd kills at 90 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_writes_retry_wait_exits_143_at_once() {
    let sandbox = throttling_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = demo(dir.path(), &sandbox);
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .arg("reconcile")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_refusals(&sandbox, 1).await;
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                return (status, stderr);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("seatwarden did not exit within a minute of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (status, stderr) = exited.await.unwrap();
    let took = signalled.elapsed();
    assert!(took < PROMPT, "exited {took:?} after SIGTERM: {stderr}");
    assert_eq!(
        status.code(),
        Some(seatwarden::cli::exit::TERMINATED.into()),
        "{stderr}"
    );
    assert_eq!(sandbox.stats().faults_429, 1, "{stderr}");
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped, "{stderr}");
    assert!(store.interrupted().unwrap().is_empty(), "{stderr}");
}

/// The daemon's SIGTERM while its reconcile's first write waits a minute for its
/// retry: the daemon stops within moments, not at the end of its 30 s grace
/// (when it gave up on the write and left it to recovery); the reconcile is
/// recorded stopped, in the run and in its job, with nothing left in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stops_at_once_during_a_writes_retry_wait_and_records_it_stopped() {
    let sandbox = throttling_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = demo(dir.path(), &sandbox);
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    wait_for_refusals(&sandbox, 1).await;
    let signalled = Instant::now();
    crate::fixtures::sigterm(&child);
    let status = crate::fixtures::exit_of(child, "the daemon").await;
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(took < PROMPT, "stopped {took:?} after SIGTERM: {log}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("job stopped"), "{log}");
    assert_eq!(sandbox.stats().faults_429, 1, "{log}");

    let store = Store::open(&dir.path().join("state.db")).unwrap();
    assert!(store.interrupted().unwrap().is_empty(), "{log}");
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped, "{log}");
    let job = store
        .jobs()
        .unwrap()
        .into_iter()
        .find(|job| job.name == "reconcile")
        .unwrap();
    assert_eq!(job.last_status, Some(RunStatus::Stopped), "{job:?}");
}

/// A write held by the provider's pause (a 429 with `Retry-After: 60` to another
/// request throttles the token) when the stop comes: it is never sent, and the
/// client says the stop kept it back. Reads are not stopped.
#[tokio::test]
async fn a_write_held_by_the_providers_pause_is_not_sent_after_the_stop() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "60"))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let client = ScimClient::new(seatwarden::workspace::ScimSettings {
        base_url: format!("{}/scim/v2", server.uri()).parse().unwrap(),
        token: TOKEN.to_owned().into(),
        role_attribute: seatwarden::workspace::RoleAttribute::Roles,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 4,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry: seatwarden::retry::RetryPolicy::default(),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap();
    // The read is refused and pauses every request for a minute; it is left
    // waiting for its retry (no stop reaches a read).
    let reading = tokio::spawn({
        let client = client.clone();
        async move { client.get_account("u1").await }
    });
    // Waits until the client has taken in the 429 (it counts the answer after
    // setting the pause), not merely until the server saw the read: under load
    // the write could otherwise leave before the pause exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.answers() == 0 {
        assert!(Instant::now() < deadline, "the read was never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stop = StopSignal::new();
    let stopping = {
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.stop();
        }
    };
    let writing = seatwarden::apply::until_stopped(stop, client.set_active("u2", false));
    let ((written, _), ()) =
        tokio::time::timeout(PROMPT, async { tokio::join!(writing, stopping) })
            .await
            .expect("the write waited out the pause after the stop");
    let error = written.unwrap_err();
    assert!(error.is_stopped(), "{error}");
    assert!(!reading.is_finished(), "the read was stopped too");
    reading.abort();
    let patches = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .count();
    assert_eq!(patches, 0);
}
