//! Session 58: the follow-ups of session 57's look-alike group handling.
//!
//! - A deprovisioning episode opened before the person was put in a group that
//!   only looks like the scope group ends, as no episode opens for a new leaver
//!   in that group: the sweep enforced it when it fell due, while the reconcile
//!   held the same deprovision for a person to decide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::sla::{LedgerChanges, LossReason, NewEntry};
use seatwarden::store::Store;
use wiremock::MockServer;

use crate::review_s57_dirnames::SCIM_TOKEN;
use crate::review_s57_s57review as s57;

/// Bob (`00u2`, account `w2`) is only in "Taskade\u{200b} Users" (a zero-width
/// space), a look-alike of the scope group; a reconcile linked him and held his
/// deactivation. Then his episode is opened as a sweep had opened it when he
/// left "Taskade Users", before he was put in the look-alike: detected two hours
/// ago, due one hour ago. The sandbox, the Okta server and the store's directory
/// are returned to keep them alive.
async fn bob_with_an_episode_due() -> (
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
    store
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
    (config, sandbox, okta, dir)
}

fn bob_active(sandbox: &seatwarden::sandbox::Sandbox) -> bool {
    let after = sandbox.snapshot();
    after.accounts.iter().find(|a| a.id == "w2").unwrap().active
}

fn bob_episode_open(config: &Config) -> bool {
    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history("00u2", 1).unwrap();
    history.first().is_some_and(|e| e.is_open())
}

/// The sweep ends Bob's episode instead of deactivating him; a retry pass after
/// it finds nothing to enforce. Before, the sweep deactivated him at once (the
/// episode was due), while a reconcile held the same deactivation.
#[tokio::test]
async fn an_episode_opened_before_a_scope_look_alike_is_not_enforced_by_the_sweep() {
    let (config, sandbox, _okta, _dir) = bob_with_an_episode_due().await;
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
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert!(bob_active(&sandbox), "the sweep deactivated Bob");
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
    sandbox.shutdown().await;
}

/// A reconcile, the only observation without the daemon, ends the episode too
/// (and holds the deactivation, as for a new leaver): the retry job, which
/// reads no directory, has nothing of Bob's to enforce.
#[tokio::test]
async fn a_reconcile_ends_an_episode_its_look_alike_hold_would_leave_to_the_retry_job() {
    let (config, sandbox, _okta, _dir) = bob_with_an_episode_due().await;
    let outcome = crate::fixtures::reconcile(&config).await;
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
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert!(bob_active(&sandbox), "the retry job deactivated Bob");
    sandbox.shutdown().await;
}
