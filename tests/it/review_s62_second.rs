//! Session 62, second helper's review.
//!
//! - An approved deprovision whose write failed, then rejected (`reject`
//!   takes the approval back and holds the episode): `status`, the digest
//!   and the overdue alert said it was "held by the guard, waiting for
//!   `approve RUN` of the run holding it", though no run held it and a
//!   person had just refused it. `Store::decided_holds` looked only at rows
//!   still `held`; the approval had released this one (`failed`, kept back).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::report::digest::HoldDecided;
use seatwarden::store::Store;

use crate::review_s58_review3::bob_approved_and_failed_with;
use crate::review_s62_status::status_now;

/// Bob's deactivation, approved and kept back unsent, rejected in its run:
/// his open episode is told rejected, not waiting for an approval. Before,
/// `hold_decided` was `None` and the line sent the reader to `approve RUN`.
#[tokio::test]
async fn an_approval_taken_back_by_a_rejection_is_told_rejected_not_waiting() {
    let kept_back = format!(
        "{}: 503 Service Unavailable",
        seatwarden::apply::NOT_SENT_DOWN
    );
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed_with(&kept_back).await;
    sandbox.shutdown().await;
    let run = status_now(&config).last_reconcile.unwrap().id;
    {
        let mut store = Store::open(&config.state.path).unwrap();
        seatwarden::approval::reject(
            &mut store,
            run,
            &seatwarden::approval::Only::All,
            "seatwarden",
            chrono_tz::UTC,
            Utc::now() + Duration::seconds(1),
        )
        .unwrap();
    }
    let status = status_now(&config);
    let bob = status
        .deprovisions
        .open
        .iter()
        .find(|line| line.identity_id == "00u2")
        .unwrap_or_else(|| panic!("Bob's episode is not open: {:?}", status.deprovisions));
    assert!(
        matches!(bob.hold_decided, Some(HoldDecided::Rejected { run: rejected, .. }) if rejected == run),
        "{:?} / {:?}",
        bob.hold,
        bob.hold_decided
    );
    let text = seatwarden::daemon::status::render_text(&status);
    assert!(!text.contains("approve RUN"), "{text}");
    assert!(text.contains("was rejected"), "{text}");
}
