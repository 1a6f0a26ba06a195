//! Review of session 53's changes: an exception naming nobody, and a person
//! deleted from the directory whom an exception keeps, told alike by every path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::store::Store;

use crate::daemon::reconciled_demo;
use crate::review_s53_followup::typo_exception;

/// An exception names nobody (a typo): the whole read says so, the alert
/// fires and the gauge reads 1. The next read is rejected (the directory
/// export shrank): it cannot tell, and the alert and gauge stay as they were.
/// The digest took the finding from the newest report alone, which could not
/// tell: it listed no exception naming nobody while the alert on it was
/// active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_keeps_an_exception_naming_nobody_past_a_run_that_could_not_tell() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let now = Utc::now();
    config.safety.exceptions = vec![typo_exception(now)];
    let whole = crate::fixtures::reconcile_at(&config, now).await;
    assert_eq!(whole.report.safety.exceptions_naming_nobody.len(), 1);

    let path = dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    directory["users"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&path, directory.to_string()).unwrap();
    let rejected = crate::fixtures::reconcile_at(&config, now + Duration::minutes(1)).await;
    assert!(
        rejected.report.safety.exceptions_naming_nobody_unknown,
        "{:?}",
        rejected.report.safety
    );

    let store = Store::open(&config.state.path).unwrap();
    let digest = seatwarden::report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        Utc::now() + Duration::minutes(5),
        std::time::Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap()
    .with_exceptions(&config.exceptions().unwrap(), now);
    assert_eq!(digest.exceptions_naming_nobody, ["dana.lee@exmaple.com"]);
    assert!(digest.exceptions[0].names_nobody, "{:?}", digest.exceptions);
    sandbox.shutdown().await;
}
