//! Review of session 53: the alert and gauge on exceptions naming nobody must
//! say nothing about a run whose reads were not whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::config::ExceptionConfig;

use crate::daemon::reconciled_demo;

/// An exception names nobody (a typo), alerted. Then the directory read is
/// rejected (it shrank past the limit) run after run, for days: that read
/// tells nothing about who the exception names. The alert was resolved all the
/// same (its resolution held, then sent once `resolve_after` passed): "the
/// exception for … names nobody" resolved with the typo still in the file, and
/// raised again at the next whole read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_directory_read_neither_resolves_nor_raises_exceptions_naming_nobody() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let now = Utc::now();
    config.safety.exceptions = vec![ExceptionConfig {
        user_name: "dana.lee@exmaple.com".to_owned(),
        until: (now + Duration::days(30)).to_rfc3339(),
        reason: "handover, HR-4711".to_owned(),
    }];
    let (_config_dir, notifier) = crate::review_s39_holds::alerting_notifier();
    let mut store = seatwarden::store::Store::open(&dir.path().join("alerts.db")).unwrap();

    let whole = crate::fixtures::reconcile_at(&config, now).await;
    assert_eq!(whole.report.safety.exceptions_naming_nobody.len(), 1);
    notifier.after_reconcile(&mut store, &whole.report, now);
    assert!(store.alert("exceptions_naming_nobody").unwrap().is_some());

    // The directory export cut to its first person: rejected as a source fault.
    let path = dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    directory["users"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&path, directory.to_string()).unwrap();
    for day in 1..=3 {
        let at = now + Duration::days(day);
        let rejected = crate::fixtures::reconcile_at(&config, at).await;
        assert!(
            rejected.report.safety.source_fault.is_some(),
            "{:?}",
            rejected.report.safety
        );
        notifier.after_reconcile(&mut store, &rejected.report, at);
        notifier.resolve_due(&mut store, at);
        let record = store.alert("exceptions_naming_nobody").unwrap().unwrap();
        assert_eq!(
            (record.state, record.cleared_at),
            (seatwarden::store::AlertRecordState::Active, None),
            "day {day}: {record:?}"
        );
    }
    sandbox.shutdown().await;
}
