//! Session 58, review of the look-alike follow-ups (`safety.distinct_groups`,
//! episodes of a scope look-alike's members ended, group listings of
//! `check-config --connect`).
//!
//! - An episode the sweep ends for a look-alike member is told apart in
//!   `explain`: it said "cancelled (access came back)", while access did not
//!   come back and the deprovision waits for a person.
//! - A SCIM directory's group listing that ended short is said by
//!   `check-config --connect` (no warning read as "no look-alike").
//! - A deprovision a human approved for a look-alike member, whose write then
//!   failed, keeps its episode: the sweep and the reconcile ended it as they end
//!   the episode of a person a look-alike hold keeps, so the retry job never
//!   sent the approved deactivation and the leaver kept access until someone
//!   approved it once more.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::sla::{LedgerChanges, LossReason, NewEntry};
use seatwarden::store::{Decision, Store};
use wiremock::MockServer;

use crate::review_s57_dirnames::SCIM_TOKEN;
use crate::review_s57_s57review as s57;
use crate::review_s58_lookalike::{bob_active, bob_episode_open, sweep_now};

/// Bob (only in "Taskade\u{200b} Users", a look-alike of the scope group):
/// a reconcile held his deactivation; a person approved it and its write
/// failed, and the approval recorded it in the ledger as `approve` does
/// (an open episode for the retry job). Returns the sandbox and Okta server
/// to keep them alive.
pub(crate) async fn bob_approved_and_failed() -> (
    Config,
    seatwarden::sandbox::Sandbox,
    MockServer,
    tempfile::TempDir,
) {
    bob_approved_and_failed_with("503 Service Unavailable").await
}

/// [`bob_approved_and_failed`], the approved write journaled failed with
/// `error` (one of `apply::NOT_SENT`'s for a write kept back unsent).
pub(crate) async fn bob_approved_and_failed_with(
    error: &str,
) -> (
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
    let outcome = crate::fixtures::reconcile(&config).await;
    let seq = outcome
        .plan
        .actions
        .iter()
        .find(|a| {
            a.identity_id.as_deref() == Some("00u2")
                && a.held.as_ref().map(|h| h.rule()) == Some("look_alike_group")
        })
        .map(|a| a.seq)
        .expect("Bob's deactivation held as a look-alike");
    let run = outcome.run_id;
    let now = Utc::now();
    let mut store = Store::open(&config.state.path).unwrap();
    store
        .record_decisions(run, &[(seq, Decision::Approved, None)], "alice", now)
        .unwrap();
    store.approve_held(run, now).unwrap();
    store.mark_in_flight(run, seq, now).unwrap();
    store.mark_failed(run, seq, now, error).unwrap();
    let started = store.run(run).unwrap().unwrap().started_at;
    seatwarden::sweep::record_deprovisions(
        &mut store,
        run,
        Some(&[seq]),
        started,
        now,
        Duration::hours(1),
        &config.admin_command(),
    )
    .unwrap();
    assert!(bob_episode_open(&config), "approve opened no episode");
    (config, sandbox, okta, dir)
}

/// The sweep after the failed approved deactivation leaves Bob's episode
/// open, and the retry job sends it. Before, the sweep ended the episode as
/// a look-alike member's, and Bob kept access.
#[tokio::test]
async fn a_sweep_keeps_the_episode_of_an_approved_look_alike_deprovision() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let (_, store, client) = sweep_now(&config).await;
    assert!(
        bob_episode_open(&config) || !bob_active(&sandbox),
        "the sweep ended the episode of Bob's approved deactivation"
    );
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert!(
        !bob_active(&sandbox),
        "the approved deactivation was never sent"
    );
    sandbox.shutdown().await;
}

/// A reconcile neither ends the episode nor asks about Bob's approved
/// deactivation again: the approval answered the look-alike hold's question,
/// so the reconcile sends it, once, as the retry job would. Before session 59
/// it held the deactivation as a look-alike's again, asking for a second
/// approval while the retry job sent it anyway.
#[tokio::test]
async fn a_reconcile_sends_an_approved_look_alike_deprovision_unheld() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    sandbox.record_requests();
    let outcome = crate::fixtures::reconcile(&config).await;
    let bobs: Vec<_> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.identity_id.as_deref() == Some("00u2"))
        .collect();
    assert_eq!(bobs.len(), 1, "{bobs:#?}");
    assert_eq!(bobs[0].held, None, "held again: {:?}", bobs[0].held);
    assert!(
        !bob_active(&sandbox),
        "the approved deactivation was not sent"
    );
    let store = Store::open(&config.state.path).unwrap();
    let episode = store.deprovision_history("00u2", 1).unwrap();
    assert!(
        episode.first().is_some_and(|e| e.enforced_at.is_some()),
        "the episode was not closed as enforced: {episode:#?}"
    );
    let store = Arc::new(Mutex::new(store));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    let deactivations = sandbox
        .requests_seen()
        .iter()
        .filter(|r| r.method != "GET" && r.path == "/Users/w2")
        .count();
    sandbox.shutdown().await;
    assert_eq!(deactivations, 1, "Bob's account written more than once");
}

/// A SCIM directory whose `/Groups` listing ends short of the `totalResults`
/// it announced: `check-config --connect` says the groups not listed were not
/// looked at. Before, it said nothing (logged at debug), and no warning read
/// as "no look-alike" while the unlisted groups held one.
#[tokio::test]
async fn check_config_connect_says_a_scim_group_listing_ended_short() {
    use crate::review_s58_lookalike::{checked_scim_directory, scim_directory, scim_list};
    use wiremock::Mock;
    use wiremock::matchers::{method, path, query_param};
    let idp = scim_directory().await;
    // Five groups announced, two listed: every later page is empty.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("startIndex", "1"))
        .respond_with(scim_list(
            serde_json::json!([
                {"id": "g1", "displayName": "Taskade Users"},
                {"id": "g3", "displayName": "Engineering"},
            ]),
            5,
        ))
        .with_priority(1)
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(scim_list(serde_json::json!([]), 5))
        .with_priority(2)
        .mount(&idp)
        .await;
    let checked = checked_scim_directory(&idp).await;
    assert!(checked.passed(), "{}", checked.line());
    assert!(
        checked
            .warnings
            .iter()
            .any(|w| w.contains("ended short") && w.contains("(2 listed)")),
        "{:#?}",
        checked.warnings
    );
}

/// Bob (only in a look-alike of the scope group) had an episode opened before
/// he was put in it; the sweep ends it. `explain` says it ended without
/// enforcing, for the look-alike hold, not that his access came back.
#[tokio::test]
async fn explain_tells_a_look_alike_ended_episode_from_access_come_back() {
    let okta = MockServer::start().await;
    s57::org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = s57::config(dir.path(), sandbox.base_url().as_str(), &okta.uri());
    crate::fixtures::reconcile(&config).await;
    let now = Utc::now();
    Store::open(&config.state.path)
        .unwrap()
        .update_ledger(
            &LedgerChanges {
                open: vec![NewEntry {
                    identity_id: "00u2".into(),
                    account_id: Some("w2".into()),
                    user_name: "bob@example.com".into(),
                    reason: LossReason::OutOfScope,
                    detected_at: now - Duration::hours(2),
                    due_at: now - Duration::hours(1),
                }],
                ..LedgerChanges::default()
            },
            now - Duration::hours(2),
        )
        .unwrap();
    sweep_now(&config).await;
    sandbox.shutdown().await;
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
    let lines = seatwarden::explain::ledger_lines(
        &Store::open(&config.state.path).unwrap(),
        Some("00u2"),
        Utc::now(),
        chrono_tz::UTC,
    )
    .unwrap();
    let line = lines.first().expect("Bob's episode");
    assert!(!line.contains("access came back"), "{line}");
    assert!(
        line.contains("without enforcing") && line.contains("look_alike_group"),
        "{line}"
    );
}
