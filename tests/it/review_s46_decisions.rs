//! Session 46's review of decisions on held actions. A limit of 0 holding one
//! leaver reads "1 deprovision planned", not "1 deprovisions planned".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::config::Config;
use seatwarden::store::{RunId, Store};

use crate::review_s45_decided::held;

/// The guard's per-run limit of 0 holding one leaver: its reason (the journal's,
/// the report's, the alert's) read "1 deprovisions planned".
#[tokio::test]
async fn one_held_deprovision_is_worded_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 1).await;
    let why = held_reason(&config, run);
    assert!(
        why.starts_with("1 deprovision planned, the per-run limit is 0"),
        "{why}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 2).await;
    let why = held_reason(&config, run);
    assert!(
        why.starts_with("2 deprovisions planned, the per-run limit is 0"),
        "{why}"
    );
}

fn held_reason(config: &Config, run: RunId) -> String {
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(run)
        .unwrap();
    journal
        .iter()
        .find_map(|e| e.action.held.as_ref())
        .unwrap()
        .to_string()
}
