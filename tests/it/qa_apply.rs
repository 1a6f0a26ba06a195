//! Apply against a workspace that misbehaves mid-run: what it sends after the
//! workspace stops answering, what the journal and the report then say.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use seatwarden::apply::{ApplyProgress, ProgressHook};
use seatwarden::config::Config;
use seatwarden::model::WorkspaceSnapshot;
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode, RunOptions};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "qa-apply-token";

/// A client of `config`'s workspace that tries each request three times, with
/// no wait between the attempts.
fn three_attempts(config: &Config) -> ScimClient {
    let mut settings = config.scim_settings().unwrap();
    settings.retry = RetryPolicy::immediate(2);
    ScimClient::new(settings).unwrap()
}

/// One reconcile of `config` through `client`.
async fn reconcile(config: &Config, client: &ScimClient) -> run::RunOutcome {
    run::execute_with_options(
        config,
        &run::directory_from_config(config),
        client,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
        RunOptions::default(),
    )
    .await
    .unwrap()
}

/// The workspace is killed after twenty of eighty creates, and the breaker's
/// window is too wide for the failures to open it by their share. The writes
/// that found it answering nothing stop the others: at most two rounds of the
/// concurrency limit are sent after the kill (a write in flight at the kill
/// proves no outage when another was answered after it started, so its slot may
/// start one more write, whose failure does), the breaker opens saying why, the
/// rest is journaled "not sent", and verification reads nothing more. Before,
/// every remaining create spent its retries against the dead host (about four
/// minutes each against one that hangs, at the default timeout).
#[tokio::test]
async fn writes_stop_once_the_workspace_answers_nothing() {
    let data = synth::generate(&SynthSpec {
        people: 80,
        groups: 2,
        drift_percent: 0.0,
        seed: 6,
    });
    let sandbox = crate::fixtures::sandbox(TOKEN, WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config_unlimited(
        dir.path(),
        &data,
        sandbox.base_url().as_ref(),
        TOKEN,
        "failure_ratio = 0.9\nwindow = 1000\ncool_down = \"15m\"",
    );
    let client = three_attempts(&config);
    const ATTEMPTS: u64 = 3;
    const CONCURRENCY: u64 = 4;
    let sandbox = Arc::new(Mutex::new(Some(sandbox)));
    let requests_at_kill = Arc::new(AtomicU64::new(0));
    let requests_at_verification = Arc::new(AtomicU64::new(u64::MAX));
    let hook: ProgressHook = {
        let (sandbox, client) = (Arc::clone(&sandbox), client.clone());
        let (at_kill, at_verification) = (
            Arc::clone(&requests_at_kill),
            Arc::clone(&requests_at_verification),
        );
        Arc::new(move |progress| match progress {
            ApplyProgress::Writing { done: 20, .. } => {
                if let Some(sandbox) = sandbox.lock().unwrap().take() {
                    at_kill.store(client.stats().requests, Ordering::SeqCst);
                    // Dead from this moment: the shutdown below finishes later.
                    sandbox.set_faults(seatwarden::sandbox::Faults {
                        rate_reset: 1.0,
                        ..Default::default()
                    });
                    tokio::spawn(sandbox.shutdown());
                }
            }
            ApplyProgress::Verifying { .. } => {
                at_verification.store(client.stats().requests, Ordering::SeqCst);
            }
            ApplyProgress::Writing { .. } | ApplyProgress::Recovering { .. } => {}
        })
    };
    let run = seatwarden::apply::with_progress(hook, reconcile(&config, &client)).await;
    assert!(
        sandbox.lock().unwrap().is_none(),
        "the workspace was killed"
    );

    let writes_after_kill =
        requests_at_verification.load(Ordering::SeqCst) - requests_at_kill.load(Ordering::SeqCst);
    assert!(
        writes_after_kill <= 2 * CONCURRENCY * ATTEMPTS,
        "{writes_after_kill} requests after the kill"
    );
    let circuit = run.report.safety.circuit.as_ref().expect("opened");
    assert!(
        circuit
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("the workspace stopped answering")),
        "{circuit:?}"
    );
    let not_sent = run
        .report
        .actions
        .iter()
        .filter_map(|a| a.error.as_deref())
        .filter(|e| e.starts_with(seatwarden::apply::NOT_SENT_DOWN))
        .count();
    assert!(not_sent >= 40, "{not_sent} journaled not sent");
    assert_eq!(run.report.summary.actions_applied, 0);
    let store = Store::open(&config.state.path).unwrap();
    assert!(store.interrupted().unwrap().is_empty());
    // Verification read nothing: the writes found the workspace down.
    let final_requests = client.stats().requests;
    assert_eq!(
        final_requests,
        requests_at_verification.load(Ordering::SeqCst),
        "verification sent reads to the dead workspace"
    );
}

/// The token is revoked after twenty of eighty creates. The first writes refused
/// 401 stop the others (each would be refused alike): no more than one round of
/// the concurrency limit is refused, each failure names the endpoint and what to
/// check, the rest is journaled "not sent" saying why, and the breaker stays
/// closed, so the run after the token is fixed finishes the work with no
/// `resume`. Before, writes went on until a window's share had failed, and the
/// breaker then kept the repaired token from writing for its cool-down.
#[tokio::test]
async fn a_token_revoked_mid_apply_stops_the_writes_without_opening_the_breaker() {
    let data = synth::generate(&SynthSpec {
        people: 80,
        groups: 2,
        drift_percent: 0.0,
        seed: 6,
    });
    let sandbox = Arc::new(crate::fixtures::sandbox(TOKEN, WorkspaceSnapshot::default()).await);
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config_unlimited(
        dir.path(),
        &data,
        sandbox.base_url().as_ref(),
        TOKEN,
        "",
    );
    let client = three_attempts(&config);
    const CONCURRENCY: u64 = 4;
    let requests_at_revocation = Arc::new(AtomicU64::new(0));
    let requests_at_verification = Arc::new(AtomicU64::new(u64::MAX));
    let hook: ProgressHook = {
        let (sandbox, client) = (Arc::clone(&sandbox), client.clone());
        let (at_revocation, at_verification) = (
            Arc::clone(&requests_at_revocation),
            Arc::clone(&requests_at_verification),
        );
        Arc::new(move |progress| match progress {
            ApplyProgress::Writing { done: 20, .. } => {
                at_revocation.store(client.stats().requests, Ordering::SeqCst);
                sandbox.set_token("rotated-by-an-admin");
            }
            ApplyProgress::Verifying { .. } => {
                at_verification.store(client.stats().requests, Ordering::SeqCst);
            }
            ApplyProgress::Writing { .. } | ApplyProgress::Recovering { .. } => {}
        })
    };
    let run = seatwarden::apply::with_progress(hook, reconcile(&config, &client)).await;

    let refused_writes = requests_at_verification.load(Ordering::SeqCst)
        - requests_at_revocation.load(Ordering::SeqCst);
    assert!(
        refused_writes <= CONCURRENCY,
        "{refused_writes} writes sent after the revocation"
    );
    assert!(
        run.report.safety.circuit.is_none(),
        "{:?}",
        run.report.safety.circuit
    );
    let errors: Vec<&str> = run
        .report
        .actions
        .iter()
        .filter_map(|a| a.error.as_deref())
        .collect();
    let refused: Vec<&&str> = errors
        .iter()
        .filter(|e| e.starts_with("POST /Users: HTTP 401"))
        .collect();
    assert!(!refused.is_empty(), "{errors:#?}");
    assert!(
        refused.iter().all(|e| e.contains("check workspace.token")),
        "{refused:#?}"
    );
    let not_sent = errors
        .iter()
        .filter(|e| e.starts_with(seatwarden::apply::NOT_SENT_TOKEN))
        .filter(|e| e.contains("HTTP 401") && e.contains("check workspace.token"))
        .count();
    assert!(not_sent >= 40, "{not_sent} journaled not sent: {errors:#?}");

    // The token is fixed: the next run writes at once.
    sandbox.set_token(TOKEN);
    let next = reconcile(&config, &client).await;
    assert!(next.report.safety.circuit.is_none());
    assert_eq!(
        next.report.summary.actions_failed, 0,
        "{:#?}",
        next.report.actions
    );
    let creates = run
        .report
        .actions
        .iter()
        .filter(|a| a.op == "create_account")
        .count();
    assert_eq!(sandbox.snapshot().accounts.len(), creates);
}

/// A write that fails for a transient reason has been retried until its attempts
/// ran out, and the journal and the report say so: "HTTP 503" alone reads as one
/// unlucky answer nobody tried again. A refusal that is not retried says nothing
/// of attempts.
#[tokio::test]
async fn a_write_that_failed_past_its_retries_says_how_often_it_was_tried() {
    let data = synth::generate(&SynthSpec {
        people: 6,
        groups: 1,
        drift_percent: 0.0,
        seed: 6,
    });
    let sandbox = crate::fixtures::sandbox(TOKEN, WorkspaceSnapshot::default()).await;
    sandbox.set_faults(seatwarden::sandbox::Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config_unlimited(
        dir.path(),
        &data,
        sandbox.base_url().as_ref(),
        TOKEN,
        "",
    );
    let client = three_attempts(&config);
    let run = reconcile(&config, &client).await;
    let errors: Vec<&str> = run
        .report
        .actions
        .iter()
        .filter_map(|a| a.error.as_deref())
        .filter(|e| e.contains("HTTP 503"))
        .collect();
    assert!(!errors.is_empty(), "{:#?}", run.report.actions);
    assert!(
        errors
            .iter()
            .all(|e| e.ends_with("(still failing after 3 attempts)")),
        "{errors:#?}"
    );
}
