//! Session 46's review of decided holds: after a reject, the run's headline
//! read "N actions planned" as if they were to come.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::report::{self, Report};
use seatwarden::store::{RunId, Store};

use crate::review_s45_decided::held;

/// When the decisions below are recorded: fixed, so the alert's words are.
fn decided_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 9, 30, 0).unwrap()
}

fn reject(config: &Config, run: RunId) {
    let rejected = approval::reject(
        &mut Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        decided_at(),
    )
    .unwrap();
    assert!(rejected.rejected > 0);
}

/// The run's headline (`report --run`'s first line, the mailed report's) and
/// subject after a reject: "2 drift items, 2 actions planned" read as if they
/// were still to come; they say the actions were rejected and what is next.
#[tokio::test]
async fn after_reject_the_runs_headline_says_rejected_not_planned() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 2).await;
    reject(&config, run);
    let store = Store::open(&config.state.path).unwrap();
    let stored = Report::from_json(&store.report(run).unwrap().unwrap()).unwrap();
    assert_eq!(stored.rejected(), 2);
    let text = report::render_text(&stored, chrono_tz::UTC, "seatwarden", false);
    let first = text.lines().next().unwrap().to_owned();
    assert!(!first.contains("planned"), "{first}");
    let golden = format!(
        "{first}\nsubject: {}\nmarkdown: {}",
        report::subject("acme", &stored),
        report::render_markdown(&stored, chrono_tz::UTC, "seatwarden")
            .unwrap()
            .lines()
            .find(|l| l.contains("rejected"))
            .unwrap_or("<no line says rejected>")
    );
    insta::assert_snapshot!("rejected_headline", golden);
}
