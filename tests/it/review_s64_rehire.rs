#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Session 64: deletion safety when an account is no longer the leaver's.
//!
//! `approve` of a held deprovision re-checks the directory, but saw only the
//! same directory id come back: a leaver rehired under a new id (Okta and
//! Entra ID make a new user object under the same login) would have the
//! account matching now finds for them deactivated or deleted.

use seatwarden::model::{Identity, IdentityStatus};
use seatwarden::synth::Synth;

use crate::review_s45_approve::{approve_all, converged, execute, write_directory};
use crate::review_s56_approve_reads::{held_deactivation_of, suspend_two};
use seatwarden::run::Mode;

/// `identity` deleted from the directory and back as someone new under
/// `new_id`: the same login, email and groups (Okta's, Entra ID's rehire).
fn rehire_under(data: &mut Synth, identity: &str, new_id: &str) -> Identity {
    let position = data
        .directory
        .identities
        .iter()
        .position(|i| i.id == identity)
        .unwrap();
    let mut rehired = data.directory.identities.remove(position);
    rehired.id = new_id.to_owned();
    rehired.status = IdentityStatus::Active;
    data.directory.identities.push(rehired.clone());
    rehired
}

/// Two people suspended, their deactivations held. One is rehired under a new
/// directory id before anyone approves: approving deactivates only the other,
/// and refuses the rehired person's, naming them and leaving it to the next
/// reconcile. Their account stays active.
#[tokio::test]
async fn approve_spares_an_account_a_leaver_rehired_under_a_new_id_would_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    let two = suspend_two(&mut data);
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    let rehired_seq = held_deactivation_of(&held, &two[0]);
    let gone_seq = held_deactivation_of(&held, &two[1]);
    let rehired = rehire_under(&mut data, &two[0], "rehired-00u1");
    write_directory(dir.path(), &data);

    let approval = approve_all(&config, held.run_id).await;
    assert_eq!(approval.approved, vec![gone_seq], "{approval:?}");
    assert_eq!(approval.refused.len(), 1, "{approval:?}");
    let (seq, why) = &approval.refused[0];
    assert_eq!(*seq, rehired_seq);
    let expected_start = format!(
        "the directory has {} (identity rehired-00u1) with access now (in the directory as \
         read now, ",
        rehired.user_name
    );
    assert!(why.starts_with(&expected_start), "{why}");
    assert!(
        why.contains("a leaver rehired under a new id, or someone given their address? The next reconcile decides whose the account is"),
        "{why}"
    );
    assert!(
        why.contains(&format!(
            "its stored link is still to identity {}: if the account is theirs, `seatwarden \
             link rehired-00u1 ",
            two[0]
        )),
        "{why}"
    );
    let workspace = sandbox.snapshot();
    let active = |identity: &str| {
        workspace
            .accounts
            .iter()
            .find(|a| a.external_id.as_deref() == Some(identity))
            .unwrap()
            .active
    };
    assert!(
        active(&two[0]),
        "the rehired person's account is left alone"
    );
    assert!(!active(&two[1]), "the other leaver loses theirs");
    sandbox.shutdown().await;
}

/// The run itself read the new person already: its plan decided with them in
/// view (and the next reconcile would plan the same), so approving goes ahead
/// as planned.
#[tokio::test]
async fn approve_goes_ahead_when_the_run_read_the_new_person_already() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    let two = suspend_two(&mut data);
    rehire_under(&mut data, &two[0], "rehired-00u1");
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    let seq = held_deactivation_of(&held, &two[0]);

    let approval = approve_all(&config, held.run_id).await;
    assert!(approval.approved.contains(&seq), "{approval:?}");
    assert!(approval.refused.is_empty(), "{approval:?}");
    sandbox.shutdown().await;
}
