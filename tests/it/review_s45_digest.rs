//! The digest of a period in which nothing ran, when the newest stored report
//! (an earlier period's) cannot be read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::TimeZone;
use seatwarden::store::{RunKind, RunStatus, Store};

/// The newest stored report, of two days before, cannot be read (a downgrade,
/// or damage) and nothing ran today. The digest said "no run has stored a
/// report yet" (one did: it is named as unreadable), did not say that no run
/// happened in the period (the one sign that the schedule stopped), and said of
/// that run that its writes were counted from its journal (not in this period).
#[test]
fn a_period_without_runs_after_an_unreadable_newest_report_says_both() {
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
    let digest = seatwarden::report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        at(4, 8),
        Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap();
    assert_eq!(digest.period.runs, 0);
    let headline = &digest.headline;
    assert!(headline.contains("no run in this period"), "{headline}");
    assert!(
        !headline.contains("no run has stored a report"),
        "{headline}"
    );
    assert!(
        headline.contains(&format!("run {run}'s stored report cannot be read")),
        "{headline}"
    );
    assert!(
        digest.subject.contains("no run in this period"),
        "{}",
        digest.subject
    );
    let text = digest.render_text();
    assert!(!text.contains("no run has stored a report"), "{text}");
    assert!(
        text.contains("Drift unknown: the newest stored report"),
        "{text}"
    );
    assert_eq!(digest.unreadable_reports.len(), 1);
    let line = &digest.unreadable_reports[0];
    assert!(line.contains("it ran before this period"), "{line}");
    assert!(!line.contains("counted from its journal"), "{line}");
}

/// A store where no run ever stored a report still says so.
#[test]
fn a_store_without_any_report_still_says_none_was_stored() {
    let store = Store::open_in_memory().unwrap();
    let now = chrono::Utc.with_ymd_and_hms(2026, 12, 4, 8, 0, 0).unwrap();
    let digest = seatwarden::report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        now,
        Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap();
    assert!(
        digest.headline.contains("no run has stored a report yet"),
        "{}",
        digest.headline
    );
    assert!(!digest.headline.contains("no run in this period"));
}
