//! Session 56: the rolling 24 h percentage thresholds
//! (`safety.max_*_percent_per_day`). Several runs each under the per-run
//! percentage add up to far more of the managed accounts in a day than either
//! limit means; the 24 h percentage counts what the 24 h count counts (what was
//! sent in the 24 h before plus the run's) against a share of the managed
//! accounts, from `min_population_for_percent` on, in a reconcile and in a
//! retry pass alike. `approve` is the human decision over it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::model::{ActionClass, HoldReason, ThresholdWindow};
use seatwarden::run::RunOutcome;
use seatwarden::sandbox::Sandbox;
use seatwarden::sla::{self, Leaver, LossReason};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::qa_cli::seatwarden;
use crate::review_s48_protected_link::{configured, sandbox};
use crate::review_s56_guards::{accounts, people, reconcile_at};

/// Managed accounts: enough for the percentages to apply at the default
/// `min_population_for_percent` (100). 5% a run is 10; 8% a day is 16.
const MANAGED: usize = 200;
const PER_DAY_PERCENT: usize = 8;
/// Leavers in each of two runs: within the per-run 10, but 18 in a day.
const LEAVERS_A_RUN: usize = 9;

/// The directory: people `0..MANAGED`, those in `left` suspended.
fn write_directory(dir: &std::path::Path, left: std::ops::Range<usize>) {
    let mut users = people(MANAGED);
    for i in left {
        users[i]["status"] = "SUSPENDED".into();
    }
    std::fs::write(
        dir.join("directory.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
}

/// A workspace of `MANAGED` linked accounts and a configuration with the
/// default thresholds but a 24 h deprovision percentage of `PER_DAY_PERCENT`
/// and the given `min_population_for_percent`.
async fn setting(dir: &std::path::Path, min_population: usize) -> (Sandbox, Config) {
    let sandbox = sandbox(accounts(MANAGED)).await;
    let config = configured(
        dir,
        sandbox.base_url().as_str(),
        people(MANAGED),
        &format!(
            "[safety]\nsettle = \"0s\"\nmin_population_for_percent = {min_population}\n\
             max_deprovision_percent_per_day = {PER_DAY_PERCENT}\n"
        ),
    );
    (sandbox, config)
}

fn active(sandbox: &Sandbox) -> usize {
    sandbox
        .snapshot()
        .accounts
        .iter()
        .filter(|a| a.active)
        .count()
}

fn held_deprovisions(outcome: &RunOutcome) -> Vec<Option<HoldReason>> {
    outcome
        .plan
        .actions
        .iter()
        .filter(|a| {
            a.kind
                .threshold_class()
                .is_some_and(|(class, _)| class == ActionClass::Deprovision)
        })
        .map(|a| a.held.clone())
        .collect()
}

/// Two reconciles an hour apart, nine leavers each: each within the per-run
/// percentage (5% of 200 is 10), together over the 24 h one (8% of 200 is 16).
/// The second holds all nine with a reason naming the 24 h limit by percentage;
/// `approve` of that run sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_each_under_the_per_run_percentage_are_held_over_the_24h_percentage() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, config) = setting(dir.path(), 100).await;
    // The journal stamps its rows with the wall clock: the runs are judged from it.
    let now = Utc::now();
    write_directory(dir.path(), 0..LEAVERS_A_RUN);
    let first = reconcile_at(&config, now, false).await;
    assert_eq!(first.report.summary.managed_accounts, MANAGED);
    assert!(first.plan.held().next().is_none(), "{:#?}", first.plan);
    assert_eq!(first.report.summary.actions_applied, LEAVERS_A_RUN);
    assert_eq!(active(&sandbox), MANAGED - LEAVERS_A_RUN);

    write_directory(dir.path(), 0..2 * LEAVERS_A_RUN);
    let at = now + Duration::hours(1);
    let second = reconcile_at(&config, at, false).await;
    let reason = HoldReason::Threshold {
        class: ActionClass::Deprovision,
        window: ThresholdWindow::Day,
        planned: LEAVERS_A_RUN,
        recent: LEAVERS_A_RUN,
        limit: MANAGED * PER_DAY_PERCENT / 100,
        managed: MANAGED,
        by_percent: true,
    };
    assert_eq!(
        held_deprovisions(&second),
        vec![Some(reason.clone()); LEAVERS_A_RUN],
        "the whole class is held"
    );
    assert_eq!(
        reason.to_string(),
        "9 deprovisions planned + 9 in the last 24 h = 18, the 24 h limit is 16 \
         (by percentage, of 200 managed accounts)"
    );
    assert_eq!(second.report.summary.actions_applied, 0);
    assert_eq!(active(&sandbox), MANAGED - LEAVERS_A_RUN);

    // `approve` is the human decision over the threshold: it sends them.
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approved = approval::approve(
        &config,
        &client,
        Store::open(&config.state.path).unwrap(),
        second.run_id,
        &Only::All,
        at + Duration::minutes(5),
    )
    .await
    .unwrap();
    assert!(approved.refused.is_empty(), "{:?}", approved.refused);
    assert_eq!(active(&sandbox), MANAGED - 2 * LEAVERS_A_RUN);
}

/// The same two runs with `min_population_for_percent` above the managed
/// accounts: no percentage applies, only the counts (25 a run, 50 a day), and
/// both runs send their nine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_minimum_population_the_24h_percentage_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, config) = setting(dir.path(), MANAGED + 1).await;
    let now = Utc::now();
    for (run, at) in [(1, now), (2, now + Duration::hours(1))] {
        write_directory(dir.path(), 0..run * LEAVERS_A_RUN);
        let outcome = reconcile_at(&config, at, false).await;
        assert!(outcome.plan.held().next().is_none(), "run {run}");
        assert_eq!(outcome.report.summary.actions_applied, LEAVERS_A_RUN);
    }
    assert_eq!(active(&sandbox), MANAGED - 2 * LEAVERS_A_RUN);
}

/// A retry pass is held to the 24 h percentage as a reconcile is: nine sent by
/// a reconcile, nine more due an hour later in a retry pass, 18 of 200 in a day
/// over 8%: the pass sends none, and the ledger says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_pass_is_held_over_the_24h_percentage() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, config) = setting(dir.path(), 100).await;
    let now = Utc::now();
    write_directory(dir.path(), 0..LEAVERS_A_RUN);
    let first = reconcile_at(&config, now, false).await;
    assert_eq!(first.report.summary.actions_applied, LEAVERS_A_RUN);

    // Nine more leavers, as a sweep that detected them would leave them.
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let at: DateTime<Utc> = now + Duration::hours(1);
    let detected = at - Duration::minutes(20);
    let leavers: Vec<Leaver> = (LEAVERS_A_RUN..2 * LEAVERS_A_RUN)
        .map(|i| Leaver {
            identity_id: format!("00u{i}"),
            account_id: Some(format!("w{i}")),
            user_name: format!("p{i}@example.com"),
            reason: LossReason::Suspended,
        })
        .collect();
    let changes = sla::observe(&[], &leavers, &[], detected, Duration::hours(1));
    store
        .lock()
        .unwrap()
        .update_ledger(&changes, detected)
        .unwrap();

    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let outcome = seatwarden::sweep::enforce(&config, &client, &store, at)
        .await
        .unwrap();
    assert_eq!(outcome.held, LEAVERS_A_RUN, "{outcome:?}");
    assert_eq!(outcome.enforced, 0, "{outcome:?}");
    assert_eq!(active(&sandbox), MANAGED - LEAVERS_A_RUN);
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    assert_eq!(open.len(), LEAVERS_A_RUN);
    for entry in &open {
        let why = entry.held.as_deref().unwrap_or_default();
        assert!(
            why.contains(
                "9 deprovisions planned + 9 in the last 24 h = 18, the 24 h limit is 16 \
                 (by percentage, of 200 managed accounts)"
            ),
            "{entry:?}"
        );
    }
}

/// `check-config` prints the 24 h percentages with their defaults among the
/// other limits, warns of one that allows nothing at the minimum population,
/// and refuses one out of 0 to 100 naming the key and the file.
#[test]
fn check_config_shows_warns_of_and_refuses_the_24h_percentages() {
    let dir = tempfile::tempdir().unwrap();
    configured(
        dir.path(),
        "https://workspace.example/scim/v2",
        people(3),
        "[safety]\nmin_population_for_percent = 3\n",
    );
    let path = dir.path().join("seatwarden.toml");
    let (ok, out, err) = seatwarden(&path, &["check-config"]);
    assert!(ok, "{err}");
    for line in [
        "max_deprovision_percent_per_day = 10.0\n",
        "max_membership_removal_percent_per_day = 20.0\n",
        "max_role_downgrade_percent_per_day = 10.0\n",
        "max_deletion_percent_per_day = 10.0\n",
        "max_rename_percent_per_day = 10.0\n",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    assert!(
        err.contains(
            "warning: safety.max_deprovision_percent_per_day = 10 is less than one of 3 to 9 \
             managed accounts"
        ),
        "{err}"
    );

    let text = std::fs::read_to_string(&path).unwrap().replace(
        "min_population_for_percent = 3\n",
        "max_deprovision_percent_per_day = 150\n",
    );
    std::fs::write(&path, text).unwrap();
    let (ok, _, err) = seatwarden(&path, &["check-config"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}: key `safety.max_deprovision_percent_per_day`: must be between 0 and 100",
            path.display()
        )),
        "{err}"
    );
}
