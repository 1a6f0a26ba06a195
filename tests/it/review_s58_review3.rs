//! Session 58, review of the look-alike follow-ups (`safety.distinct_groups`,
//! episodes of a scope look-alike's members ended, group listings of
//! `check-config --connect`).
//!
//! - A deprovision a human approved for a look-alike member, whose write then
//!   failed, keeps its episode: the sweep and the reconcile ended it as they end
//!   the episode of a person a look-alike hold keeps, so the retry job never
//!   sent the approved deactivation and the leaver kept access until someone
//!   approved it once more.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::store::{Decision, Store};
use wiremock::MockServer;

use crate::review_s57_dirnames::SCIM_TOKEN;
use crate::review_s57_s57review as s57;

fn bob_active(sandbox: &seatwarden::sandbox::Sandbox) -> bool {
    let after = sandbox.snapshot();
    after.accounts.iter().find(|a| a.id == "w2").unwrap().active
}

fn bob_episode_open(config: &Config) -> bool {
    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history("00u2", 1).unwrap();
    history.first().is_some_and(|e| e.is_open())
}

/// Bob (only in "Taskade\u{200b} Users", a look-alike of the scope group):
/// a reconcile held his deactivation; a person approved it and its write
/// failed, and the approval recorded it in the ledger as `approve` does
/// (an open episode for the retry job). Returns the sandbox and Okta server
/// to keep them alive.
async fn bob_approved_and_failed() -> (
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
    store
        .mark_failed(run, seq, now, "503 Service Unavailable")
        .unwrap();
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
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    seatwarden::sweep::sweep(
        &config,
        &directory,
        &client,
        &store,
        Utc::now(),
        Duration::hours(1),
    )
    .await
    .unwrap();
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

/// A reconcile (holding Bob's deactivation again) keeps the episode too.
#[tokio::test]
async fn a_reconcile_keeps_the_episode_of_an_approved_look_alike_deprovision() {
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    crate::fixtures::reconcile(&config).await;
    assert!(
        bob_episode_open(&config),
        "the reconcile ended the episode of Bob's approved deactivation"
    );
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert!(
        !bob_active(&sandbox),
        "the approved deactivation was never sent"
    );
    sandbox.shutdown().await;
}
