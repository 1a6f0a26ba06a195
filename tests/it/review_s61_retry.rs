//! Session 61, the retry job (`sweep::enforce`) and the decisions it follows.
//!
//! - A rejection that took back an approval kept the retry job off that
//!   deprovision even after a later reconcile, holding nothing, planned it
//!   again and its write failed: only the next reconcile retried it, and the
//!   leaver kept access for a schedule interval. A newer unheld plan now
//!   decides, and the reconcile's failed write releases the episode's old hold.
//! - An approval given over a threshold (too many deprovisions at once) also
//!   let a later reconcile skip the look-alike hold of that person, and kept
//!   their episode from the sweep's look-alike ending: it answered another
//!   question. Only an approval of a look-alike hold does so now.
//! - The retry job read no directory: a leaver whose first deactivation failed,
//!   put in a protected group or made active again in the directory before the
//!   next attempt, was deactivated by the retry job when no sweep had run
//!   since (a protected person then stays deactivated: nothing reactivates a
//!   protected account). A retry pass with an attempt due now reads the
//!   directory's changes first, as the sweep does; a directory it cannot read
//!   does not keep the leaver's deactivation back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use seatwarden::config::Config;
use seatwarden::model::{
    Action, ActionClass, ActionKind, DriftKind, HoldReason, Plan, ThresholdWindow,
};
use seatwarden::sla::{LedgerChanges, LossReason, NewEntry};
use seatwarden::store::{Decision, RunId, RunKind, RunStatus, Store};
use wiremock::MockServer;

use crate::okta::{FakeOkta, LinkStyle, okta_group, okta_user};
use crate::review_s57_dirnames::SCIM_TOKEN;
use crate::review_s57_s57review as s57;
use crate::review_s58_lookalike::{bob_active, bob_episode_open, sweep_now};
use crate::review_s58_review3::bob_approved_and_failed;
use crate::review_s59_looks::bob_held_again_by_a_newer_run;

/// The retry job's pass at `at`.
pub(crate) async fn retry_pass_at(
    config: &Config,
    at: DateTime<Utc>,
) -> seatwarden::sweep::SweepOutcome {
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::enforce(config, &client, &store, at)
        .await
        .unwrap()
}

/// Bob's deactivation (account `w2`) as a reconcile run stores it, held for
/// `held`.
fn bob_deactivation(held: Option<HoldReason>) -> Plan {
    Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::Deactivate {
                account_id: "w2".into(),
            },
            reason: DriftKind::StaleAccess,
            subject: "bob@example.com".into(),
            identity_id: Some("00u2".into()),
            detail: "out of scope".into(),
            held,
        }],
        ..Plan::default()
    }
}

/// A reconcile run at `at` that planned Bob's deactivation held for nothing
/// and whose write failed (503), recorded in the ledger as a reconcile records
/// it ([`seatwarden::sweep::record_deprovisions`]).
fn bob_planned_unheld_and_failed(config: &Config, at: DateTime<Utc>) -> RunId {
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, at).unwrap();
    store.save_plan(run, &bob_deactivation(None), at).unwrap();
    store.mark_in_flight(run, 0, at).unwrap();
    store
        .mark_failed(run, 0, at, "503 Service Unavailable")
        .unwrap();
    store
        .finish_run(run, at, RunStatus::Succeeded, None)
        .unwrap();
    seatwarden::sweep::record_deprovisions(
        &mut store,
        run,
        None,
        at,
        at,
        Duration::hours(1),
        &config.admin_command(),
    )
    .unwrap();
    run
}

/// Bob's approved deactivation failed; a person rejected a newer run holding
/// it again (the approval taken back, the episode held); then a reconcile
/// that held nothing planned it again and its write failed. The retry job's
/// next pass, two minutes on, sends it. Before, the retry job skipped it as
/// an approval taken back (and waited for the old hold's recheck): Bob kept
/// access until the next reconcile.
#[tokio::test]
async fn a_newer_unheld_plan_supersedes_the_rejection_for_the_retry_job() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let rejected = bob_held_again_by_a_newer_run(&config);
    let now = Utc::now();
    {
        let mut store = Store::open(&config.state.path).unwrap();
        seatwarden::approval::reject(
            &mut store,
            rejected,
            &seatwarden::approval::Only::All,
            "seatwarden",
            chrono_tz::UTC,
            now + Duration::seconds(1),
        )
        .unwrap();
    }
    bob_planned_unheld_and_failed(&config, now + Duration::seconds(2));
    let outcome = retry_pass_at(&config, now + Duration::minutes(2)).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(
        !active,
        "the retry job left the reconcile's failed deactivation unsent: {outcome:?}"
    );
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
}

/// The same plan made before the rejection does not undo it: the rejection
/// is the newer word, and the retry job sends nothing.
#[tokio::test]
async fn an_unheld_plan_older_than_the_rejection_does_not_undo_it() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let rejected = bob_held_again_by_a_newer_run(&config);
    let now = Utc::now();
    bob_planned_unheld_and_failed(&config, now);
    {
        let mut store = Store::open(&config.state.path).unwrap();
        seatwarden::approval::reject(
            &mut store,
            rejected,
            &seatwarden::approval::Only::All,
            "seatwarden",
            chrono_tz::UTC,
            now + Duration::seconds(1),
        )
        .unwrap();
    }
    retry_pass_at(&config, now + Duration::hours(1)).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(
        active,
        "the retry job sent a deactivation a person rejected"
    );
}

/// Bob (00u2, only in "Taskade\u{200b} Users", a look-alike of the scope
/// group) linked by a first reconcile, which held his deactivation as a
/// look-alike's. Then a reconcile run held his deactivation over the
/// deprovision threshold (as when he was still a plain leaver among many),
/// a person approved that and its write failed: his episode is open for the
/// retry job, as `approve` leaves it.
async fn bob_approved_over_a_threshold() -> (
    Config,
    seatwarden::sandbox::Sandbox,
    MockServer,
    tempfile::TempDir,
) {
    let okta = MockServer::start().await;
    s57::org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = s57::config(dir.path(), sandbox.base_url().as_str(), &okta.uri());
    crate::fixtures::reconcile(&config).await;
    let now = Utc::now();
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, now).unwrap();
    let threshold = HoldReason::Threshold {
        class: ActionClass::Deprovision,
        window: ThresholdWindow::Run,
        planned: 30,
        recent: 0,
        limit: 10,
        managed: 200,
        by_percent: false,
    };
    store
        .save_plan(run, &bob_deactivation(Some(threshold)), now)
        .unwrap();
    store
        .finish_run(run, now, RunStatus::Succeeded, None)
        .unwrap();
    store
        .record_decisions(run, &[(0, Decision::Approved, None)], "alice", now)
        .unwrap();
    store.approve_held(run, now).unwrap();
    store.mark_in_flight(run, 0, now).unwrap();
    store
        .mark_failed(run, 0, now, "503 Service Unavailable")
        .unwrap();
    seatwarden::sweep::record_deprovisions(
        &mut store,
        run,
        Some(&[0]),
        now,
        now,
        Duration::hours(1),
        &config.admin_command(),
    )
    .unwrap();
    drop(store);
    assert!(bob_episode_open(&config), "approve opened no episode");
    (config, sandbox, okta, dir)
}

/// A reconcile holds Bob's deactivation as a look-alike member's: the
/// approval over the threshold did not answer that. Before, the reconcile
/// sent it unheld.
#[tokio::test]
async fn an_approval_over_a_threshold_does_not_answer_a_look_alike_hold() {
    let (config, sandbox, _okta, _dir) = bob_approved_over_a_threshold().await;
    let outcome = crate::fixtures::reconcile(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    let bob: Vec<_> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.identity_id.as_deref() == Some("00u2"))
        .collect();
    assert!(
        !bob.is_empty()
            && bob
                .iter()
                .all(|a| a.held.as_ref().map(|h| h.rule()) == Some("look_alike_group")),
        "{bob:#?}"
    );
    assert!(active, "the reconcile deactivated Bob");
}

/// The sweep ends Bob's episode as a look-alike member's, and the retry job
/// after it sends nothing. Before, the threshold's approval kept the episode
/// and the sweep deactivated him.
#[tokio::test]
async fn the_sweep_ends_a_look_alike_episode_approved_only_over_a_threshold() {
    let (config, sandbox, _okta, _dir) = bob_approved_over_a_threshold().await;
    let (_, store, client) = sweep_now(&config).await;
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(active, "the sweep or the retry job deactivated Bob");
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
}

/// Okta now, as `lastUpdated` and `lastMembershipUpdated` give it.
fn okta_now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Ada, Bob and Dee in "Taskade Users"; "Break Glass", a protected group,
/// holds `break_glass`. Bob's status is `bob_status`; `changed` dates Bob and
/// both groups now, so a delta since the last sweep sees them.
pub(crate) fn org(
    bob_status: &str,
    in_scope: &[&str],
    break_glass: &[&str],
    changed: bool,
) -> FakeOkta {
    let mut bob = okta_user("00u2", "bob@example.com", bob_status);
    let mut scope = okta_group("00g1", "Taskade Users");
    let mut protected = okta_group("00g5", "Break Glass");
    if changed {
        let now = okta_now();
        bob["lastUpdated"] = now.clone().into();
        scope["lastMembershipUpdated"] = now.clone().into();
        protected["lastMembershipUpdated"] = now.into();
    }
    let ids = |members: &[&str]| members.iter().map(|m| (*m).to_owned()).collect();
    FakeOkta {
        users: vec![
            okta_user("00u1", "ada@example.com", "ACTIVE"),
            bob,
            okta_user("00u4", "dee@example.com", "ACTIVE"),
        ],
        groups: vec![(scope, ids(in_scope)), (protected, ids(break_glass))],
        page_size: 200,
        style: LinkStyle::SeparateLines,
        app_users: Vec::new(),
        app_groups: Vec::new(),
        clock_offset: None,
    }
}

/// Okta (Ada, Bob, Dee in scope) against the sandbox, "Break Glass" in
/// `safety.protected_groups`: a reconcile links everyone and a sweep takes the
/// directory's cursor, so the next read is a delta. Then Bob's episode opens
/// (`reason`) as a sweep opens it when he loses access, and its first
/// deactivation fails: the next attempt is due now.
pub(crate) async fn bob_failed_once(
    reason: LossReason,
) -> (
    Config,
    seatwarden::sandbox::Sandbox,
    MockServer,
    tempfile::TempDir,
) {
    let okta = MockServer::start().await;
    org("ACTIVE", &["00u1", "00u2", "00u4"], &[], false)
        .mount(&okta)
        .await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let directory = format!(
        "kind = \"okta\"\nurl = \"{}\"\ntoken = \"s61-retry-okta-token\"\n",
        okta.uri()
    );
    crate::review_s57_dirnames::config_with(
        dir.path(),
        sandbox.base_url().as_str(),
        &directory,
        "",
    );
    let path = dir.path().join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    // `[safety]` is the last table written.
    text.push_str("protected_groups = [\"Break Glass\"]\n");
    std::fs::write(&path, text).unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
    crate::fixtures::reconcile(&config).await;
    let (swept, _, _) = sweep_now(&config).await;
    assert_eq!(swept.detected, 0, "{swept:?}");
    let now = Utc::now();
    let mut store = Store::open(&config.state.path).unwrap();
    store
        .update_ledger(
            &LedgerChanges {
                open: vec![NewEntry {
                    identity_id: "00u2".into(),
                    account_id: Some("w2".into()),
                    user_name: "bob@example.com".into(),
                    reason,
                    detected_at: now - Duration::minutes(2),
                    due_at: now + Duration::minutes(58),
                }],
                ..LedgerChanges::default()
            },
            now - Duration::minutes(2),
        )
        .unwrap();
    let episode = store
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == "00u2")
        .unwrap();
    store
        .deprovision_failed(
            episode.id,
            "503 Service Unavailable",
            now - Duration::seconds(1),
        )
        .unwrap();
    drop(store);
    assert!(bob_active(&sandbox));
    (config, sandbox, okta, dir)
}

/// The directory at `okta` replaced by `fake`.
pub(crate) async fn directory_now(okta: &MockServer, fake: FakeOkta) {
    okta.reset().await;
    fake.mount(okta).await;
}

/// The daemon's retry job's pass now.
pub(crate) async fn retry_job(config: &Config) -> seatwarden::sweep::SweepOutcome {
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::retry(
        config,
        &config.sweep_directory(),
        &client,
        &store,
        Utc::now(),
        Duration::hours(1),
    )
    .await
    .unwrap()
}

/// Bob, out of scope, was put in the protected group before the retry job's
/// next attempt, and no sweep ran since: the retry job does not deactivate
/// him, and his episode ends. Before, it deactivated him, and nothing would
/// have given a protected account its access back.
#[tokio::test]
async fn the_retry_job_leaves_a_leaver_put_in_a_protected_group_since_alone() {
    let (config, sandbox, okta, _dir) = bob_failed_once(LossReason::OutOfScope).await;
    directory_now(&okta, org("ACTIVE", &["00u1", "00u4"], &["00u2"], true)).await;
    let outcome = retry_job(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(
        active,
        "the retry job deactivated a protected person: {outcome:?}"
    );
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
}

/// Bob, suspended, was made active again before the retry job's next attempt:
/// it does not deactivate him. Before, it did, until a reconcile reactivated
/// him.
#[tokio::test]
async fn the_retry_job_leaves_a_person_active_again_alone() {
    let (config, sandbox, okta, _dir) = bob_failed_once(LossReason::Suspended).await;
    directory_now(&okta, org("ACTIVE", &["00u1", "00u2", "00u4"], &[], true)).await;
    let outcome = retry_job(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(
        active,
        "the retry job deactivated a person back: {outcome:?}"
    );
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
}

/// A directory the retry job cannot read keeps no leaver's deactivation back:
/// the pass enforces the ledger as the last sweep left it.
#[tokio::test]
async fn the_retry_job_deactivates_the_leaver_while_the_directory_cannot_be_read() {
    let (config, sandbox, okta, _dir) = bob_failed_once(LossReason::OutOfScope).await;
    okta.reset().await;
    let outcome = retry_job(&config).await;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(!active, "the leaver kept access: {outcome:?}");
    assert_eq!(outcome.enforced, 1, "{outcome:?}");
}

/// `explain` says what the reconcile now does: the next run holds Bob's
/// deactivation as a look-alike member's. Before, it said the next run
/// deactivates him, as the reconcile then did.
#[tokio::test]
async fn explain_holds_as_a_look_alike_what_was_approved_only_over_a_threshold() {
    let (config, sandbox, _okta, _dir) = bob_approved_over_a_threshold().await;
    sandbox.shutdown().await;
    let store = Store::open(&config.state.path).unwrap();
    let explained =
        seatwarden::explain::explain(&config, &store, "bob@example.com", Utc::now()).unwrap();
    let next = explained
        .split_once("\nNext run")
        .map(|(_, next)| next)
        .unwrap_or_else(|| panic!("no next run in {explained}"));
    assert!(
        next.contains("[HELD: the person is in directory group \"Taskade\\u{200b} Users\""),
        "{explained}"
    );
}
