//! Time: a wall clock stepped back, as NTP steps one that ran ahead or a
//! machine booted with a wrong clock sets it right. What was stamped before the
//! step lies in the clock's future; nothing may wait for the clock to catch up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::model::LossReason;
use seatwarden::sla::{self, Leaver};
use seatwarden::store::Store;

use crate::fixtures::ada_config;

/// A leaver detected while the clock ran a year ahead, then set right: their
/// episode was due a year after the step, and the pass that should escalate it
/// an SLA later found it pending. The detection is taken as now: overdue, and
/// escalated, one SLA after the step (and not at once: when they left is not
/// known, and the deactivation is tried all along).
#[tokio::test]
async fn a_leaver_detected_by_a_clock_set_back_is_escalated_an_sla_after_the_step() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing is due for an attempt below: no pass asks the workspace anything.
    let config = ada_config("http://127.0.0.1:9", dir.path(), "DEPROVISIONED");
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let now = Utc::now();
    let a_year_ahead = now + Duration::days(365);
    let changes = sla::observe(
        &[],
        &[Leaver {
            identity_id: "00u1".into(),
            account_id: Some("acc-1".into()),
            user_name: "ada@example.com".into(),
            reason: LossReason::Deprovisioned,
        }],
        &[],
        a_year_ahead,
        Duration::hours(1),
    );
    let id = {
        let mut store = store.lock().unwrap();
        store.update_ledger(&changes, a_year_ahead).unwrap();
        let id = store.open_deprovisions().unwrap()[0].id;
        // Its next look is 70 minutes on: within what a pass ever waits, so
        // neither pass below tries it.
        store
            .deprovision_held(id, "held: waiting", now + Duration::minutes(70))
            .unwrap();
        id
    };
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();

    let first = seatwarden::sweep::enforce(&config, &client, &store, now)
        .await
        .unwrap();
    assert!(first.escalated.is_empty(), "{first:?}");
    let episode = store.lock().unwrap().open_deprovisions().unwrap()[0].clone();
    assert_eq!(episode.id, id);
    assert!(
        episode.detected_at <= now + Duration::minutes(1),
        "still detected in the clock's future: {episode:?}"
    );
    assert_eq!(episode.due_at - episode.detected_at, Duration::hours(1));

    let later = seatwarden::sweep::enforce(&config, &client, &store, now + Duration::minutes(61))
        .await
        .unwrap();
    let escalated: Vec<i64> = later.escalated.iter().map(|e| e.id).collect();
    assert_eq!(escalated, [id], "{later:?}");
}
