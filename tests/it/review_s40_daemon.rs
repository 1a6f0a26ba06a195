//! Session 40's review of the long-running side as an SRE running seatwarden
//! under systemd sees it: schedules, clocks, the sweep, the SLA ledger and the
//! retention of `deprovision.delete_after`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use chrono::{TimeDelta, Utc};
use seatwarden::config::Config;
use seatwarden::model::ActionKind;
use seatwarden::run::{self, Mode, RunOptions, RunOutcome};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "review-s40-token";

async fn reconcile(config: &Config, options: RunOptions) -> RunOutcome {
    run::execute_with_options(
        config,
        &run::directory_from_config(config),
        &ScimClient::new(config.scim_settings().unwrap()).unwrap(),
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
        options,
    )
    .await
    .unwrap()
}

fn deletions(outcome: &RunOutcome) -> Vec<String> {
    let mut deleted: Vec<String> = outcome
        .plan
        .runnable()
        .filter_map(|action| match &action.kind {
            ActionKind::Delete { account_id, .. } => Some(account_id.clone()),
            _ => None,
        })
        .collect();
    deleted.sort();
    deleted
}

/// A reconcile bounded by `retention_as_of` (the daemon's, once its wall clock
/// was stepped weeks ahead) deletes no deactivated account whose retention has
/// not run out by then, however far its `now` is; the clocks stay as they were.
/// Unbounded, the same run deletes them all.
#[tokio::test]
async fn a_reconcile_judges_the_retention_no_later_than_retention_as_of() {
    let data = synth::generate(&SynthSpec {
        people: 60,
        groups: 2,
        drift_percent: 0.0,
        seed: 6,
    });
    let sandbox = crate::fixtures::sandbox(TOKEN, data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::synth_config_unlimited(
        dir.path(),
        &data,
        sandbox.base_url().as_ref(),
        TOKEN,
        "",
    );
    let path = dir.path().join("seatwarden.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str("\n[deprovision]\naction = \"delete\"\ndelete_after = \"30d\"\n");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();

    let t0 = Utc::now();
    let at = |days: i64, as_of: Option<i64>| RunOptions {
        now: Some(t0 + TimeDelta::days(days)),
        retention_as_of: as_of.map(|days| t0 + TimeDelta::days(days)),
        ..RunOptions::default()
    };
    reconcile(&config, at(0, None)).await;
    let clocks = Store::open(&config.state.path)
        .unwrap()
        .deactivated_since()
        .unwrap();
    assert!(
        !clocks.is_empty(),
        "the synthetic workspace has deactivated leavers"
    );

    // Forty days on by a clock stepped ahead; the daemon has seen two pass.
    let bounded = reconcile(&config, at(40, Some(2))).await;
    assert_eq!(deletions(&bounded), Vec::<String>::new());
    assert_eq!(
        Store::open(&config.state.path)
            .unwrap()
            .deactivated_since()
            .unwrap(),
        clocks,
        "the clocks keep their start"
    );
    // A bound later than the run's own time changes nothing.
    let early = reconcile(&config, at(29, Some(400))).await;
    assert_eq!(deletions(&early), Vec::<String>::new());

    let unbounded = reconcile(&config, at(40, None)).await;
    let mut expected: Vec<String> = clocks.keys().cloned().collect();
    expected.sort();
    assert_eq!(deletions(&unbounded), expected);
}
