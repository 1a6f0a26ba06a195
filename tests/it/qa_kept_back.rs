//! Writes the executor kept back unsent (the workspace found down, its token
//! refused, the breaker, a stop): the report, `status`, the digest and the exit
//! code tell one story. A kept-back row is "not sent", with why, and the next run
//! plans it again; "failed" is a write that was sent and failed. A run that kept
//! writes back never exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use seatwarden::apply::{ApplyProgress, ProgressHook};
use seatwarden::cli::{exit, exit_code_for};
use seatwarden::config::Config;
use seatwarden::daemon::status::{self, Settings};
use seatwarden::model::WorkspaceSnapshot;
use seatwarden::report::{self, Outcome, Report, State};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode, RunOptions};
use seatwarden::sandbox::Faults;
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "qa-kept-back-token";

/// The demo's files in `dir` against `url`, requests tried once.
fn demo_config(dir: &Path, url: &str) -> Config {
    crate::fixtures::copy_demo_files(dir);
    let env: HashMap<String, String> = [
        ("SEATWARDEN__WORKSPACE__URL", url.to_owned()),
        ("SEATWARDEN__WORKSPACE__TOKEN", TOKEN.to_owned()),
        ("SEATWARDEN__WORKSPACE__RETRIES", "0".to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(env)).unwrap()
}

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

pub(crate) fn status_of(config: &Config) -> status::Status {
    let store = Store::open(&config.state.path).unwrap();
    status::collect(
        &store,
        chrono::Utc::now(),
        Settings::of(config, chrono_tz::UTC, None),
    )
    .unwrap()
}

fn digest_of(config: &Config) -> report::digest::Digest {
    let store = Store::open(&config.state.path).unwrap();
    report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        chrono::Utc::now() + chrono::Duration::seconds(1),
        Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap()
}

/// Every human form of `report`: text, Markdown, HTML.
fn rendered(report: &Report) -> [String; 3] {
    [
        report::render_text(report, chrono_tz::UTC, "seatwarden", false),
        report::render_markdown(report, chrono_tz::UTC, "seatwarden").unwrap(),
        report::render_html(report, chrono_tz::UTC, "seatwarden").unwrap(),
    ]
}

/// What every reader of a run that kept writes back must agree on: the report's
/// counts, its renderings, `status`, the digest and the exit code.
fn assert_one_story(config: &Config, report: &Report) {
    let failed = report.summary.actions_failed;
    let not_sent = report.not_sent().count();
    let by_reason = report.not_sent_by_reason();
    assert!(not_sent > 0);
    assert_eq!(
        report
            .actions
            .iter()
            .filter(|a| a.outcome == Outcome::Failed)
            .count(),
        failed
    );
    // Nothing kept back is a failure, and nothing that failed is kept back.
    assert!(
        report
            .actions
            .iter()
            .filter(|a| a.outcome == Outcome::Failed)
            .all(|a| !seatwarden::apply::not_sent(a.error.as_deref())),
        "{:#?}",
        report.actions
    );
    assert_eq!(State::of(report), State::NeedsAttention);
    assert_eq!(exit_code_for(report), exit::FAILED);
    assert!(
        report::subject("acme", report).contains(&report::plural(
            not_sent,
            "action not sent",
            "actions not sent"
        )),
        "{}",
        report::subject("acme", report)
    );
    let said = report::not_sent_text(&by_reason);
    for out in rendered(report) {
        // HTML escapes the apostrophe of "the run's writes".
        let out = out.replace("&#x27;", "'");
        assert!(out.contains("NOT SENT"), "{out}");
        assert!(out.contains(&said), "{out}");
        assert!(out.contains("the next run plans them again"), "{out}");
    }
    // The text lists as FAILED only what failed.
    let text = report::render_text(report, chrono_tz::UTC, "seatwarden", false);
    assert_eq!(text.matches("  FAILED #").count(), failed, "{text}");
    assert_eq!(text.matches(" not_sent ").count(), not_sent, "{text}");

    let status = status_of(config);
    let count = |state: &str| {
        status
            .last_reconcile_actions
            .get(state)
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (count("failed"), count("not_sent"), count("planned")),
        (failed, not_sent, 0),
        "{:?}",
        status.last_reconcile_actions
    );
    let line = status::render_text(&status);
    assert!(
        line.contains(&format!("{not_sent} not sent (kept back")),
        "{line}"
    );

    let digest = digest_of(config);
    assert_eq!(
        (digest.period.actions_failed, digest.period.actions_not_sent),
        (failed, not_sent),
        "{:?}",
        digest.period
    );
    assert_eq!(digest.state, State::NeedsAttention);
    assert!(digest.headline.contains("not sent"), "{}", digest.headline);
    let text = digest.render_text();
    assert!(
        text.contains(&format!(", {failed} failed, {not_sent} not sent (")),
        "{text}"
    );
    for (reason, n) in &by_reason {
        let why = if by_reason.len() == 1 {
            format!("not sent ({reason}), ")
        } else {
            format!("{n} because {reason}")
        };
        assert!(text.contains(&why), "{text}");
    }
    for out in [
        digest.render_markdown().unwrap(),
        digest.render_html().unwrap(),
    ] {
        assert!(
            out.contains(&format!("{failed} failed, {not_sent} not sent (")),
            "{out}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&digest.to_json()).unwrap();
    assert_eq!(json["period"]["actions_not_sent"], not_sent, "{json}");
    for (reason, n) in &by_reason {
        assert_eq!(
            json["period"]["actions_not_sent_by_reason"][reason], *n,
            "{json}"
        );
    }
}

/// The token is revoked after twenty of eighty creates: the writes refused 401
/// failed (and fail the run, exit 4), the rest were kept back "not sent: the
/// workspace refused the token". The report, status and the digest count those
/// as not sent, apart from the failures, and say why. Before, the report and the
/// digest counted every one of them as a failed write.
#[tokio::test]
async fn a_token_refused_mid_apply_is_told_as_failures_and_writes_not_sent() {
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
    let mut settings = config.scim_settings().unwrap();
    settings.retry = RetryPolicy::immediate(2);
    let client = ScimClient::new(settings).unwrap();
    let hook: ProgressHook = {
        let sandbox = Arc::clone(&sandbox);
        Arc::new(move |progress| {
            if let ApplyProgress::Writing { done: 20, .. } = progress {
                sandbox.set_token("rotated-by-an-admin");
            }
        })
    };
    let run = seatwarden::apply::with_progress(hook, reconcile(&config, &client)).await;
    let report = &run.report;
    assert!(report.safety.circuit.is_none(), "{:?}", report.safety);
    let refused = report
        .actions
        .iter()
        .filter(|a| a.error.as_deref().is_some_and(|e| e.contains("HTTP 401")))
        .filter(|a| !seatwarden::apply::not_sent(a.error.as_deref()))
        .count();
    assert!(refused > 0, "{:#?}", report.actions);
    assert_eq!(
        report.summary.actions_failed, refused,
        "{:?}",
        report.summary
    );
    // The rest of the phase under way is journaled with why; the phases after
    // it were never reached.
    let refused_token = report
        .not_sent_by_reason()
        .into_iter()
        .find(|(why, _)| *why == "the workspace refused the token")
        .map_or(0, |(_, n)| n);
    assert!(refused_token >= 40, "{:?}", report.not_sent_by_reason());
    assert!(
        report
            .not_sent()
            .filter_map(|a| a.error.as_deref())
            .all(|e| e.contains("check workspace.token")),
        "{:#?}",
        report.actions
    );
    assert_one_story(&config, report);
    // `explain` tells a create kept back as not sent, not as a failed write.
    let kept_back = report
        .not_sent()
        .find(|a| a.op == "create_account" && a.error.is_some())
        .unwrap();
    let store = Store::open(&config.state.path).unwrap();
    let explained =
        seatwarden::explain::explain(&config, &store, &kept_back.subject, chrono::Utc::now())
            .unwrap();
    let line = explained
        .lines()
        .find(|l| l.contains(&format!("#{} create_account", kept_back.seq)))
        .unwrap_or_else(|| panic!("{explained}"));
    assert!(
        line.contains("create_account — not sent: the workspace refused the token"),
        "{line}"
    );
}

/// The workspace drops every write: the first (the deactivation, alone in its
/// phase) finds it answering nothing, and the writes of the phases after it are
/// never sent. Before, the report listed them "not_run" with no word of why, and
/// `status` called them "planned", as if the run were still to send them.
#[tokio::test]
async fn a_workspace_down_mid_apply_leaves_the_later_phases_not_sent_and_says_so() {
    let sandbox = crate::fixtures::demo_sandbox(
        TOKEN,
        Faults {
            rate_reset: 1.0,
            writes_only: true,
            ..Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), sandbox.base_url().as_ref());
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let run = reconcile(&config, &client).await;
    let report = &run.report;
    assert_eq!(report.summary.actions_applied, 0, "{:?}", report.summary);
    assert_eq!(report.summary.actions_failed, 1, "{:#?}", report.actions);
    let not_sent = report.summary.actions_planned - 1;
    for action in report.not_sent() {
        assert_eq!(
            report.why_of(action, chrono_tz::UTC).as_deref(),
            Some(report::NOT_SENT_UNREACHED)
        );
    }
    assert_eq!(
        report.not_sent_by_reason(),
        [("the run's writes had stopped before their turn", not_sent)]
    );
    assert_one_story(&config, report);
    // `explain` says the same of a create never sent: not "planned", as if the
    // finished run were still to send it.
    let store = Store::open(&config.state.path).unwrap();
    let explained = seatwarden::explain::explain(
        &config,
        &store,
        "noah.muller@example.com",
        chrono::Utc::now(),
    )
    .unwrap();
    assert!(
        explained.contains(&format!(
            "#2 create_account — {}",
            report::NOT_SENT_UNREACHED
        )),
        "{explained}"
    );

    // Had the write that found the workspace down been kept back as well (every
    // row not sent, none failed, the breaker closed), the run is no success: it
    // exits 4, and reads as needing attention, not as mere drift.
    let mut none_sent = report.clone();
    for action in &mut none_sent.actions {
        if action.outcome == Outcome::Failed {
            action.outcome = Outcome::NotRun;
            action.error = Some(format!(
                "{} (PATCH /Users/ws-0015: connection closed); the next run plans it again",
                seatwarden::apply::NOT_SENT_DOWN
            ));
        }
    }
    none_sent.summary.actions_failed = 0;
    none_sent.summary.actions_not_run = none_sent.actions.len();
    assert_eq!(none_sent.not_sent().count(), none_sent.actions.len());
    assert_eq!(exit_code_for(&none_sent), exit::FAILED);
    assert_eq!(State::of(&none_sent), State::NeedsAttention);
    let (tone, headline) = report::headline(&none_sent, "seatwarden");
    assert_eq!(tone, report::Tone::Bad, "{headline}");
    assert!(
        headline
            == format!(
                "{} actions not sent ({} because the run's writes had stopped before their \
                 turn, 1 because the workspace stopped answering); the next run plans them again",
                none_sent.actions.len(),
                none_sent.actions.len() - 1
            ),
        "{headline}"
    );
    // A plan or a dry run sends nothing by design: nothing of it is kept back.
    let mut dry_run = report.clone();
    dry_run.mode = "dry_run".into();
    dry_run.summary.actions_failed = 0;
    dry_run.actions.retain(|a| a.outcome == Outcome::NotRun);
    assert_eq!(dry_run.not_sent().count(), 0);
    assert_eq!(exit_code_for(&dry_run), exit::OK);
}

/// A sweep's writes kept back for any reason are not sent in its summary, its
/// metrics and the digest; only the write that was sent and failed is a failure.
/// Before, only those a stop kept back were.
#[test]
fn a_sweeps_writes_kept_back_are_not_sent_whatever_kept_them() {
    use seatwarden::apply::{NOT_SENT_BREAKER, NOT_SENT_DOWN, NOT_SENT_STOPPING, NOT_SENT_TOKEN};
    use seatwarden::model::{Action, ActionKind, DriftKind, Plan};
    use seatwarden::store::{RunKind, RunStatus};

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let deactivate = |seq: u32| Action {
        seq,
        kind: ActionKind::Deactivate {
            account_id: format!("acc{seq}"),
        },
        reason: DriftKind::StaleAccess,
        subject: format!("leaver{seq}@example.com"),
        identity_id: Some(format!("u{seq}")),
        detail: "deprovisioned in the directory".into(),
        held: None,
    };
    let started = chrono::Utc::now() - chrono::Duration::minutes(5);
    let sweep = store.begin_run(RunKind::Sweep, started).unwrap();
    let plan = Plan {
        // The seventh stays planned: its phase was never reached.
        actions: (0..7).map(deactivate).collect(),
        ..Plan::default()
    };
    store.save_plan(sweep, &plan, started).unwrap();
    for seq in 0..6 {
        store.mark_in_flight(sweep, seq, started).unwrap();
    }
    let down = format!(
        "{NOT_SENT_DOWN} (PATCH /Users/acc0: connection refused); the next run plans it again"
    );
    let token =
        format!("{NOT_SENT_TOKEN} (an earlier write was answered HTTP 401); check workspace.token");
    let errors = [
        "PATCH /Users/acc0: connection refused (still failing after 3 attempts)",
        &down,
        &down,
        &token,
        NOT_SENT_BREAKER,
        NOT_SENT_STOPPING,
    ];
    for (seq, error) in errors.iter().enumerate() {
        store
            .mark_failed(sweep, seq as u32, started, error)
            .unwrap();
    }
    store
        .finish_run(sweep, started, RunStatus::Succeeded, None)
        .unwrap();

    let journal = store.journal(sweep).unwrap();
    let outcomes: Vec<&str> = journal
        .iter()
        .map(seatwarden::sweep::metric_outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            "failed", "not_run", "not_run", "not_run", "not_run", "not_run", "not_run"
        ]
    );

    let digest = report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        chrono::Utc::now(),
        Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap();
    assert_eq!(
        (digest.period.actions_failed, digest.period.actions_not_sent),
        (1, 6),
        "{:?}",
        digest.period
    );
    let text = digest.render_text();
    assert!(
        text.contains(
            ", 1 failed, 6 not sent (2 because the workspace stopped answering, 1 because \
             seatwarden was stopping, 1 because the circuit breaker opened, 1 because the \
             run's writes had stopped before their turn, 1 because the workspace refused \
             the token), "
        ),
        "{text}"
    );
}

/// Removes `count` active, non-Owner people with an active account from the
/// demo's directory file in `dir`: leavers the sweep deactivates.
fn remove_leavers(dir: &Path, workspace: &WorkspaceSnapshot, count: usize) {
    let path = dir.join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let users = full["users"].as_array().unwrap();
    let mut removed = 0;
    let kept: Vec<&serde_json::Value> = users
        .iter()
        .filter(|user| {
            let leaves = removed < count
                && user["status"].as_str().unwrap_or("active") == "active"
                && workspace.accounts.iter().any(|a| {
                    a.active
                        && a.external_id.as_deref() == user["id"].as_str()
                        && !a.roles.iter().any(|r| r == "Owner")
                });
            removed += usize::from(leaves);
            !leaves
        })
        .collect();
    assert_eq!(removed, count);
    std::fs::write(&path, serde_json::json!({ "users": kept }).to_string()).unwrap();
}

/// The token is revoked during a sweep's deactivations, one at a time: the
/// write refused 401 failed and fails the pass, the one after it was kept back.
/// That one is not sent in the pass's outcome and no attempt in the ledger
/// (whose attempts set the back-off and tell of a failing workspace). Before, it
/// counted as a failed deactivation and an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweeps_deactivation_kept_back_by_a_refused_token_is_no_failure_nor_attempt() {
    use std::sync::Mutex;

    let sandbox = Arc::new(crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await);
    let dir = tempfile::tempdir().unwrap();
    let mut config = demo_config(dir.path(), sandbox.base_url().as_ref());
    config.workspace.max_concurrency = 1;
    run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    remove_leavers(dir.path(), &sandbox.snapshot(), 3);

    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let hook: ProgressHook = {
        let sandbox = Arc::clone(&sandbox);
        Arc::new(move |progress| {
            if let ApplyProgress::Writing { done: 1, .. } = progress {
                sandbox.set_token("rotated-by-an-admin");
            }
        })
    };
    let directory = config.directory();
    let sweeping = seatwarden::sweep::sweep(
        &config,
        &directory,
        &client,
        &store,
        chrono::Utc::now(),
        chrono::Duration::hours(1),
    );
    let outcome = seatwarden::apply::with_progress(hook, sweeping)
        .await
        .unwrap();
    assert_eq!(outcome.not_sent, 1, "{outcome:?}");
    assert!(outcome.failed >= 1, "{outcome:?}");
    let unwritten = outcome
        .unwritten
        .as_ref()
        .expect("the refused write fails the pass");
    assert_eq!(unwritten.failed, outcome.failed, "{outcome:?}");
    assert!(outcome.clone().checked().is_err());

    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let kept_back: Vec<_> = open
        .iter()
        .filter(|e| {
            e.last_error
                .as_deref()
                .is_some_and(|error| error.starts_with(seatwarden::apply::NOT_SENT_TOKEN))
        })
        .collect();
    assert_eq!(kept_back.len(), 1, "{open:#?}");
    assert_eq!(kept_back[0].attempts, 0, "{:?}", kept_back[0]);
    let journal = store
        .lock()
        .unwrap()
        .journal(outcome.run_id.unwrap())
        .unwrap();
    let not_run = journal
        .iter()
        .filter(|row| seatwarden::sweep::metric_outcome(row) == "not_run")
        .count();
    assert_eq!(not_run, 1, "{journal:#?}");
}

/// `seatwarden reconcile` against a workspace that drops every write: exit 4,
/// never 0, and stderr says how many writes were not sent, why, and what sends
/// them; the report it prints counts them apart from the one that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_exits_4_and_says_what_it_did_not_send() {
    let sandbox = crate::fixtures::demo_sandbox(
        TOKEN,
        Faults {
            rate_reset: 1.0,
            writes_only: true,
            ..Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let (config, url) = (
        dir.path().join("seatwarden.toml"),
        sandbox.base_url().to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&config)
            .arg("reconcile")
            .env_remove("SEATWARDEN_CONFIG")
            .env("SEATWARDEN__WORKSPACE__URL", url)
            .env("SEATWARDEN__WORKSPACE__TOKEN", TOKEN)
            .env("SEATWARDEN__WORKSPACE__RETRIES", "0")
            .env("SEATWARDEN__STATE__PATH", "state.db")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(exit::FAILED.into()), "{stderr}");
    assert!(
        stdout.contains("1 action failed; 7 not sent (the next run plans them again)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "7 actions not sent because the run's writes had stopped before their turn: never \
             sent, so no failure of theirs; `seatwarden reconcile` plans and sends them once \
             the workspace takes writes again"
        ),
        "{stderr}"
    );
}
