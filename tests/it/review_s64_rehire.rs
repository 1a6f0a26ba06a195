#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Session 64: deletion safety when an account is no longer the leaver's.
//!
//! `approve` of a held deprovision re-checks the directory, but saw only the
//! same directory id come back: a leaver rehired under a new id (Okta and
//! Entra ID make a new user object under the same login) would have the
//! account matching now finds for them deactivated or deleted. And a deleted
//! person's remembered duplicate stayed theirs, deleted at its due time, after
//! an admin renamed it for someone else.

use seatwarden::model::{DisputedCandidate, DriftKind, Identity, IdentityStatus, LinkMethod};
use seatwarden::synth::Synth;

use crate::review_s45_approve::{approve_all, converged, execute, write_directory};
use crate::review_s53_explain::{Scenario, account, actions_on};
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
        why.contains("a leaver rehired under a new id, or someone given their address? Its stored link is still to identity "),
        "{why}"
    );
    assert!(
        why.contains(&format!(
            "Its stored link is still to identity {}, so the next reconcile plans this again: if \
             the account is theirs, `seatwarden link rehired-00u1 ",
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

/// Ann, deleted from the directory, was linked to `a1` (retention deleted it
/// since); `a2` was remembered as her duplicate, matched by her email. An
/// admin renamed `a2` for a contractor: it no longer matches her, so the plan
/// does not deprovision it as hers, reports it as an unmatched account saying
/// why, and `explain a2` says the same.
#[test]
fn a_remembered_duplicate_renamed_since_is_explained_as_nobodys() {
    let scenario = |user_name: &str| {
        let world = Scenario {
            extra: "",
            identities: vec![],
            accounts: vec![account("a2", user_name, None, false)],
            groups: vec![],
            links: vec![],
            departed: vec![("p0", "a1", "ann")],
        }
        .store();
        let mut world = world;
        world
            .store
            .replace_disputed_candidates(&[DisputedCandidate {
                identity_id: "p0".into(),
                user_name: "ann".into(),
                account_id: "a2".into(),
                method: LinkMethod::Email,
                duplicate_of: Some("a1".into()),
                email: Some("ann@ex.com".into()),
            }])
            .unwrap();
        world
    };

    let hers = scenario("ann@ex.com");
    let text = hers.explain("a2");
    assert!(
        text.contains("the account below was theirs too, a duplicate"),
        "{text}"
    );

    let renamed = scenario("contractor@ex.com");
    let plan = renamed.plan();
    assert!(actions_on(&plan, "a2").is_empty(), "{plan:?}");
    let orphaned: Vec<&str> = plan
        .drift
        .iter()
        .filter(|d| d.kind == DriftKind::OrphanedAccount)
        .map(|d| d.detail.as_str())
        .collect();
    assert_eq!(
        orphaned,
        [
            "no directory identity matches this account: it was remembered as a duplicate of \
          identity p0 (ann), whom the directory deleted, but it no longer matches them by \
          externalId, userName or email (renamed since?), so it is not deprovisioned as theirs"
        ],
        "{plan:?}"
    );
    let text = renamed.explain("a2");
    assert!(
        text.contains("no access: no directory identity justifies this account; an orphan"),
        "{text}"
    );
    assert!(
        text.contains(
            "remembered as a duplicate of identity p0 (ann), whom the directory deleted, it no \
             longer matches them by externalId, userName or email (renamed since?): not \
             deprovisioned as theirs"
        ),
        "{text}"
    );
    assert!(!text.contains("the account below was theirs too"), "{text}");
}
