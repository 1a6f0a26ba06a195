//! Session 60, review of session 59's approved deprovisions retried by the
//! retry job and its look-alike episodes.
//!
//! - `reject` of a newer run holding a deprovision a person had approved
//!   (its write failed, so the retry job was to send it) did not reach the
//!   retry job: until the next sweep ended the look-alike episode, the retry
//!   job deactivated the person the newest decision had kept. The retry pass
//!   now reads the newest decision before it sends; `reject` marks the episode
//!   held at once, so `status` and `explain` say why it is not sent.
//! - `reject` of the approved run itself (an approval that kept the write back
//!   unsent) replaced the approval's record: nothing was left to take back,
//!   and the retry job sent it. A released row rejected counts as an approval
//!   taken back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::store::{Decision, Store};

use crate::review_s58_lookalike::{bob_active, bob_episode_open};
use crate::review_s58_review3::bob_approved_and_failed;
use crate::review_s59_looks::{bob_held_again_by_a_newer_run, carol_rejects_bob_in};

/// The retry job's pass an hour from now (Bob's episode due by then).
async fn retry_pass(config: &Config) -> seatwarden::sweep::SweepOutcome {
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::enforce(config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap()
}

/// Bob's open episode's hold, as the ledger keeps it.
fn bob_held(config: &Config) -> Option<String> {
    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history("00u2", 1).unwrap();
    history.first().and_then(|e| e.held.clone())
}

/// The rejection is recorded and nothing else: as a `reject` killed after
/// its decisions were written, before anything after them. The retry job runs
/// before any sweep: it does not send the deactivation the newest decision
/// refused, and holds the episode saying why. Before, it deactivated Bob.
#[tokio::test]
async fn the_retry_job_does_not_send_an_approved_deprovision_a_newer_rejection_took_back() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let run = bob_held_again_by_a_newer_run(&config);
    carol_rejects_bob_in(&config, run);
    let outcome = retry_pass(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(active, "the retry job deactivated Bob after the rejection");
    assert_eq!(outcome.enforced, 0, "{outcome:?}");
    assert!(bob_episode_open(&config), "the episode ended");
    let held = bob_held(&config).expect("the episode is not held");
    for part in [
        &format!("rejected in run {run} by carol"),
        "the approval in run",
        "is taken back: not sent",
    ] {
        assert!(held.contains(part), "{part:?} not in {held:?}");
    }
}

/// `seatwarden reject` of the newer run: the episode is held at once (before
/// any retry pass), `status` and `explain` say the approval was taken back
/// and not that the retry job sends it, the audit trail has the rejection,
/// and the retry job sends nothing. Before, `status` said nothing of the
/// rejection, and the retry job deactivated Bob.
#[tokio::test]
async fn reject_holds_the_episode_of_an_approved_deprovision_at_once() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let run = bob_held_again_by_a_newer_run(&config);
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
    let held = bob_held(&config).expect("reject did not hold the episode");
    assert!(held.contains(&format!("rejected in run {run}")), "{held:?}");
    let status = crate::review_s45_decided::status_of(&config);
    let text = seatwarden::daemon::status::render_text(&status);
    assert!(!text.contains("the retry job sends it"), "{text}");
    assert!(text.contains(&format!("rejected in run {run}")), "{text}");
    let store = Store::open(&config.state.path).unwrap();
    let explained =
        seatwarden::explain::ledger_lines(&store, Some("00u2"), Utc::now(), chrono_tz::UTC)
            .unwrap()
            .join("\n");
    assert!(!explained.contains("the retry job sends it"), "{explained}");
    assert!(
        explained.contains(&format!("rejected in run {run}")),
        "{explained}"
    );
    let audit = store.audit().unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.command == "reject" && e.run == Some(run)),
        "{audit:#?}"
    );
    drop(store);
    retry_pass(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(active, "the retry job deactivated Bob after the rejection");
}

/// A new approval after the rejection (of a run holding it again) is the
/// newest decision: the retry job sends the deactivation.
#[tokio::test]
async fn an_approval_after_the_rejection_is_sent_by_the_retry_job() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let rejected = bob_held_again_by_a_newer_run(&config);
    let approved = bob_held_again_by_a_newer_run(&config);
    {
        let mut store = Store::open(&config.state.path).unwrap();
        let at = Utc::now() + Duration::seconds(1);
        store
            .record_decisions(rejected, &[(0, Decision::Rejected, None)], "carol", at)
            .unwrap();
        store
            .record_decisions(
                approved,
                &[(0, Decision::Approved, None)],
                "alice",
                at + Duration::seconds(1),
            )
            .unwrap();
        store.approve_held(approved, at).unwrap();
        store.mark_in_flight(approved, 0, at).unwrap();
        store.mark_failed(approved, 0, at, "503").unwrap();
    }
    retry_pass(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(!active, "the newest decision, an approval, was not sent");
}

/// The approval kept Bob's deactivation back unsent (an earlier write found
/// the workspace down), and a person rejected the approved run itself
/// (`reject` takes back what an approval did not send): the rejection replaces
/// the approval's record, yet the retry job does not send it, and the episode
/// says why. Before, with no approval left to take back, the retry job
/// deactivated Bob.
#[tokio::test]
async fn reject_of_the_approved_run_itself_stops_the_retry_job() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let run = {
        let mut store = Store::open(&config.state.path).unwrap();
        let approval = store
            .approved_deprovisions(&["00u2".to_owned()])
            .unwrap()
            .remove("00u2")
            .expect("Bob's deactivation approved");
        let seq = store
            .journal(approval.run)
            .unwrap()
            .into_iter()
            .find(|e| e.action.identity_id.as_deref() == Some("00u2"))
            .unwrap()
            .action
            .seq;
        let now = Utc::now();
        store.mark_in_flight(approval.run, seq, now).unwrap();
        store
            .mark_failed(approval.run, seq, now, seatwarden::apply::NOT_SENT_DOWN)
            .unwrap();
        seatwarden::approval::reject(
            &mut store,
            approval.run,
            &seatwarden::approval::Only::All,
            "seatwarden",
            chrono_tz::UTC,
            now + Duration::seconds(1),
        )
        .unwrap();
        approval.run
    };
    retry_pass(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(active, "the retry job deactivated Bob after the rejection");
    let held = bob_held(&config).expect("the episode is not held");
    for part in [
        format!("rejected in run {run}"),
        format!("the approval in run {run} is taken back: not sent"),
    ] {
        assert!(held.contains(&part), "{part:?} not in {held:?}");
    }
}
