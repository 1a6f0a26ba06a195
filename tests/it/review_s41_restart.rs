//! Session 41's review of a daemon restart: the slot each job fired last is kept
//! in the state database, so a daemon started on a clock set back since (an NTP
//! step after a reboot, a restored VM) does not fire it again, and one kept
//! implausibly far ahead does not stop the job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use seatwarden::sandbox::Faults;
use seatwarden::store::{RunStatus, Store};

const TOKEN: &str = "review-s41-restart-token";

/// The `daemon_state` key the daemon keeps `job`'s last fired slot under.
fn fired_key(job: &str) -> String {
    format!("fired_slot.{job}")
}

fn last_started(db: &Path, job: &str) -> Option<DateTime<Utc>> {
    Store::open(db)
        .unwrap()
        .jobs()
        .unwrap()
        .into_iter()
        .find(|j| j.name == job)
        .and_then(|j| j.last_started_at)
}

/// Sleeps until `at` on the wall clock (at once if it has passed).
async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// A daemon restarted on a clock that reads before the slot the last one fired
/// (simulated the other way round: the kept slot is the clock's next one) does
/// not fire the reconcile at that slot, but at the one after, and keeps that
/// one; the sweep, whose kept slot lies decades ahead, is not held back by it
/// (logged) and fires on schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_clock_behind_the_slot_fired_last_does_not_fire_it_again() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let every = "*/15 * * * * *";
    let (env, config) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        TOKEN,
        &[
            ("SEATWARDEN__SCHEDULE__RECONCILE", every),
            ("SEATWARDEN__SCHEDULE__SWEEP", every),
            ("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0"),
        ],
    );
    let db = config.state.path.clone();

    // Just after a 15-second slot, so the daemon is up well before the next one.
    let now = Utc::now();
    let past = now.timestamp() - now.timestamp().rem_euclid(15);
    let slot = |n: i64| DateTime::from_timestamp(past + 15 * n, 0).unwrap();
    sleep_until(slot(1) + TimeDelta::milliseconds(300)).await;
    let held = slot(2);
    // The last daemon fired and ran the reconcile at `held`, ahead of this
    // clock, and the sweep decades ahead (on a clock far ahead then).
    let started = held + TimeDelta::milliseconds(100);
    let decades = DateTime::parse_from_rfc3339("2061-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    {
        let mut store = Store::open(&db).unwrap();
        for (job, slot, at) in [("reconcile", held, started), ("sweep", decades, decades)] {
            store.job_started(job, at).unwrap();
            store
                .job_finished(job, at, RunStatus::Succeeded, None)
                .unwrap();
            store
                .set_state_value(&fired_key(job), Some(&slot.to_rfc3339()))
                .unwrap();
        }
    }
    let (child, log) = crate::fixtures::spawn_daemon_with(dir.path(), &env);

    // A few seconds past the held slot: the sweep fired at it, the reconcile not.
    sleep_until(held + TimeDelta::seconds(6)).await;
    let sweep = last_started(&db, "sweep").unwrap();
    assert!(
        sweep >= held && sweep < decades,
        "the sweep fired at {held}: last started {sweep}"
    );
    assert_eq!(
        last_started(&db, "reconcile"),
        Some(started),
        "the reconcile fired the slot {held} the last daemon kept"
    );

    // It fires at the next slot, and that is the slot kept.
    let next = slot(3);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let reconcile = loop {
        match last_started(&db, "reconcile") {
            Some(at) if at != started => break at,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reconcile did not fire at {next}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reconcile >= next, "{reconcile}");
    let kept = |job: &str| {
        Store::open(&db)
            .unwrap()
            .state_value(&fired_key(job))
            .unwrap()
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|at| at.to_utc())
    };
    assert_eq!(kept("reconcile"), Some(next));
    assert!(
        kept("sweep").is_some_and(|at| at >= held && at <= next),
        "{:?}",
        kept("sweep")
    );

    crate::fixtures::sigterm(&child);
    let status = crate::fixtures::exit_of(child, "the daemon").await;
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("the slot it fired last is ahead of the clock"),
        "{log}"
    );
    assert!(
        log.contains("more than a day, or more than one of its intervals, ahead of the clock"),
        "{log}"
    );
}
