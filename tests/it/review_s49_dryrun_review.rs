//! Review of `schedule.dry_run` (session 49): what a daemon that only observes
//! must neither do nor say. A dry run leaves the alerts about writes (a plan
//! held for approval, the circuit breaker) as the last enforcing run left them;
//! a sweep that fired before a reload into dry run sends nothing after it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use seatwarden::alert::AlertCondition;
use seatwarden::report::Report;

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
