//! Session 44: what alerts, the digest and `explain` say, held to what the
//! state supports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use seatwarden::store::{AlertRecordState, Store};
use seatwarden::sweep::{DirectoryRead, SweepOutcome};
use wiremock::MockServer;

/// A notifier with email configured (a relay nobody answers at) and the
/// directory its configuration lives in.
fn alerting_notifier() -> (tempfile::TempDir, seatwarden::daemon::notify::Notifier) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config_path,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://acme.example/scim/v2\"\ntoken = \"t\"\n\
         [report.email]\nsmtp_url = \"smtp://127.0.0.1:9\"\nfrom = \"sw@example.com\"\n\
         to = [\"sec@example.com\"]\nquiet_period = \"6h\"\n",
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &config_path,
        Some(std::collections::HashMap::new()),
    )
    .unwrap();
    let notifier =
        seatwarden::daemon::notify::Notifier::from_config(&config).expect("email configured");
    (dir, notifier)
}

/// The rejected-snapshot alert's state; an active one seen clear (its
/// resolution held, `report.email.resolve_after`) reads as resolved.
fn rejected_alert(store: &Store) -> Option<AlertRecordState> {
    store
        .alert("directory_snapshot_rejected")
        .unwrap()
        .map(|record| match record.cleared_at {
            Some(_) => AlertRecordState::Resolved,
            None => record.state,
        })
}

/// A sweep says how it read the directory (Okta: whole on the first pass, a
/// delta from its cursor after), and only a whole, accepted read clears the
/// `directory_snapshot_rejected` alert: a delta proves nothing about the whole
/// directory and leaves it raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_sound_whole_sweep_read_clears_the_rejected_snapshot_alert() {
    use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions};
    use seatwarden::workspace::ScimClient;

    let data = seatwarden::synth::generate(&seatwarden::synth::SynthSpec {
        people: 60,
        groups: 3,
        drift_percent: 10.0,
        seed: 44,
    });
    let okta = MockServer::start().await;
    crate::connectors::okta_org(&data, 25).mount(&okta).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: "s44-scim-token".to_owned(),
            max_results: 1000,
            or_filters: true,
            faults: Faults::default(),
            ..SandboxOptions::default()
        },
        data.workspace.clone(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config_with_directory(
        dir.path(),
        &data,
        sandbox.base_url().as_ref(),
        "s44-scim-token",
        8,
        &format!(
            "kind = \"okta\"\nurl = \"{}\"\ntoken = \"00a-s44\"\n",
            okta.uri()
        ),
    );
    crate::fixtures::assert_converges(&config).await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let (_mail_dir, notifier) = alerting_notifier();
    let sweep = || {
        seatwarden::sweep::sweep(
            &config,
            &directory,
            &client,
            &store,
            chrono::Utc::now(),
            chrono::Duration::hours(1),
        )
    };

    // The first sweep reads the directory whole and leaves a cursor.
    let first = sweep().await.unwrap();
    assert_eq!(first.directory_read, DirectoryRead::Whole, "{first:?}");

    // A pass rejected the directory: the alert is raised.
    let rejected = SweepOutcome {
        source_fault: Some("directory shrank from 60 to 3 people".to_owned()),
        directory_read: DirectoryRead::WholeUnsound,
        ..SweepOutcome::default()
    };
    notifier.after_sweep(&mut store.lock().unwrap(), &rejected, chrono::Utc::now());
    assert_eq!(
        rejected_alert(&store.lock().unwrap()),
        Some(AlertRecordState::Active)
    );

    // A delta from the cursor: the alert stays.
    let delta = sweep().await.unwrap();
    assert_eq!(delta.directory_read, DirectoryRead::Delta, "{delta:?}");
    assert_eq!(delta.source_fault, None);
    notifier.after_sweep(&mut store.lock().unwrap(), &delta, chrono::Utc::now());
    assert_eq!(
        rejected_alert(&store.lock().unwrap()),
        Some(AlertRecordState::Active),
        "a delta must not clear a rejected snapshot"
    );
    // A retry pass, which reads no directory, neither.
    notifier.after_sweep(
        &mut store.lock().unwrap(),
        &SweepOutcome::default(),
        chrono::Utc::now(),
    );
    assert_eq!(
        rejected_alert(&store.lock().unwrap()),
        Some(AlertRecordState::Active)
    );

    // Without a cursor the sweep reads whole again; accepted, it clears the alert.
    store
        .lock()
        .unwrap()
        .set_state_value(seatwarden::sweep::CURSOR_KEY, None)
        .unwrap();
    let whole = sweep().await.unwrap();
    assert_eq!(whole.directory_read, DirectoryRead::Whole, "{whole:?}");
    notifier.after_sweep(&mut store.lock().unwrap(), &whole, chrono::Utc::now());
    assert_eq!(
        rejected_alert(&store.lock().unwrap()),
        Some(AlertRecordState::Resolved)
    );
    sandbox.shutdown().await;
}

/// The digest's trend counted failed runs and failed actions as one number
/// ("5 failures": four failed writes and one failed run, or five of either).
/// It says each apart, as the period line does, in every form.
#[test]
fn the_digest_trend_counts_failed_runs_apart_from_failed_actions() {
    use chrono::TimeZone;
    use seatwarden::model::{Action, ActionKind, DriftKind, Plan};
    use seatwarden::store::{RunKind, RunStatus};
    let at = |day: u32, hour: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, day, hour, 0, 0)
            .unwrap()
    };
    let mut store = Store::open_in_memory().unwrap();
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
    // Yesterday: one reconcile failed after writing (3 applied, 2 failed), and
    // two more failed before they planned anything.
    let run = store.begin_run(RunKind::Reconcile, at(2, 10)).unwrap();
    let plan = Plan {
        actions: (0..5).map(deactivate).collect(),
        ..Plan::default()
    };
    store.save_plan(run, &plan, at(2, 10)).unwrap();
    for seq in 0..5 {
        store.mark_in_flight(run, seq, at(2, 10)).unwrap();
    }
    for seq in 0..3 {
        store.mark_applied(run, seq, at(2, 10), None).unwrap();
    }
    for seq in 3..5 {
        store.mark_failed(run, seq, at(2, 10), "HTTP 500").unwrap();
    }
    store
        .finish_run(run, at(2, 10), RunStatus::Failed, Some("HTTP 500"))
        .unwrap();
    for hour in [12, 14] {
        let run = store.begin_run(RunKind::Reconcile, at(2, hour)).unwrap();
        store
            .finish_run(run, at(2, hour), RunStatus::Failed, Some("directory down"))
            .unwrap();
    }
    let digest = |now| crate::fixtures::day_digest(&store, now);
    let yesterday = digest(at(3, 8));
    let p = &yesterday.period;
    assert_eq!(
        (p.runs, p.failed_runs, p.actions_failed),
        (3, 3, 2),
        "{p:?}"
    );
    let today = digest(at(4, 8));
    let t = &today.trend;
    assert_eq!(
        (t.failed_runs_before, t.actions_failed_before),
        (3, 2),
        "{t:?}"
    );
    assert_eq!(t.failures_before, 5);

    let said = "3 runs (3 failed), 3 actions applied, 2 failed";
    let text = today.render_text();
    assert!(text.contains(said), "{text}");
    assert!(!text.contains("failures"), "{text}");
    let markdown = today.render_markdown().unwrap();
    assert!(markdown.contains(said), "{markdown}");
    let html = today.render_html().unwrap();
    assert!(html.contains(said), "{html}");
    let json: serde_json::Value = serde_json::from_str(&today.to_json()).unwrap();
    assert_eq!(json["trend"]["failed_runs_before"], 3);
    assert_eq!(json["trend"]["actions_failed_before"], 2);
}

/// A run whose stored report cannot be read (another version's, or damaged) is
/// one of its period's runs, as that period's digest counted it: the next
/// digest's trend left it out ("previous period: 0 runs" after a digest of 1).
#[test]
fn the_trend_counts_a_previous_run_whose_report_cannot_be_read() {
    use chrono::TimeZone;
    use seatwarden::store::{RunKind, RunStatus};
    let at = |day: u32, hour: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, day, hour, 0, 0)
            .unwrap()
    };
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, at(2, 10)).unwrap();
    store
        .save_report(run, r#"{"schema_version": 999, "damaged": true}"#)
        .unwrap();
    store
        .finish_run(run, at(2, 10), RunStatus::Succeeded, None)
        .unwrap();
    let digest = |now| crate::fixtures::day_digest(&store, now);
    let yesterday = digest(at(3, 8));
    assert_eq!(yesterday.period.runs, 1, "{:?}", yesterday.period);
    let today = digest(at(4, 8));
    assert_eq!(today.trend.runs_before, 1, "{:?}", today.trend);
}
