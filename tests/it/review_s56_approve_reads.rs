//! Session 56: `approve` reads the directory again, beside the workspace, when a
//! held action would take access away. Someone back in the directory since the
//! run (the mistake behind a mass hold fixed, a leaver rehired) was deactivated
//! by an approval made before any sweep, reconcile or plan had read the
//! directory again to say so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::{ActionKind, IdentityStatus};
use seatwarden::run::{Mode, RunOutcome};
use seatwarden::synth::Synth;

use crate::review_s45_approve::{approve_all, converged, execute, write_directory};

/// Two active people whose accounts are active, suspended in the directory.
pub(crate) fn suspend_two(data: &mut Synth) -> Vec<String> {
    let two: Vec<String> = data
        .directory
        .identities
        .iter()
        .filter(|i| i.status == IdentityStatus::Active)
        .filter(|i| {
            data.workspace
                .accounts
                .iter()
                .any(|a| a.external_id.as_deref() == Some(i.id.as_str()) && a.active)
        })
        .map(|i| i.id.clone())
        .take(2)
        .collect();
    assert_eq!(two.len(), 2);
    for identity in data
        .directory
        .identities
        .iter_mut()
        .filter(|i| two.contains(&i.id))
    {
        identity.status = IdentityStatus::Suspended;
    }
    two
}

pub(crate) fn held_deactivation_of(outcome: &RunOutcome, identity: &str) -> u32 {
    outcome
        .plan
        .actions
        .iter()
        .find(|a| {
            matches!(a.kind, ActionKind::Deactivate { .. })
                && a.identity_id.as_deref() == Some(identity)
                && a.held.is_some()
        })
        .unwrap_or_else(|| panic!("a held deactivation of {identity}: {:?}", outcome.plan))
        .seq
}

pub(crate) fn set_status(data: &mut Synth, identity: &str, status: IdentityStatus) {
    data.directory
        .identities
        .iter_mut()
        .find(|i| i.id == identity)
        .unwrap()
        .status = status;
}

/// Two people suspended by mistake: their deactivations are held. One is
/// active again in the directory, and nothing has read it since. Approving the
/// run deactivates only the one still suspended; the other's stays held, saying
/// the directory as read now shows them back.
#[tokio::test]
async fn approve_spares_someone_the_directory_shows_back_with_no_run_since() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    let two = suspend_two(&mut data);
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    let back_seq = held_deactivation_of(&held, &two[0]);
    let gone_seq = held_deactivation_of(&held, &two[1]);
    set_status(&mut data, &two[0], IdentityStatus::Active);
    write_directory(dir.path(), &data);

    let approval = approve_all(&config, held.run_id).await;
    assert_eq!(approval.approved, vec![gone_seq], "{approval:?}");
    assert_eq!(approval.directory_note, None, "{approval:?}");
    let refused: Vec<&(u32, String)> = approval.refused.iter().collect();
    assert_eq!(refused.len(), 1, "{approval:?}");
    assert_eq!(refused[0].0, back_seq);
    assert!(
        refused[0].1.starts_with(
            "the person has access again in the directory (in the directory as read now, "
        ),
        "{}",
        refused[0].1
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
    assert!(active(&two[0]), "the person back keeps their account");
    assert!(!active(&two[1]), "the person still suspended loses theirs");
    sandbox.shutdown().await;
}

/// The directory read now cannot be used: unreadable, or cut to one person
/// (refused as a source fault, as a reconcile refuses it). The approval says
/// so, and goes by the reads runs stored, as before: here nothing says the
/// people are back, so both are deactivated.
#[tokio::test]
async fn approve_says_when_the_directory_read_now_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    let two = suspend_two(&mut data);
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    let mut seqs = vec![
        held_deactivation_of(&held, &two[0]),
        held_deactivation_of(&held, &two[1]),
    ];
    seqs.sort();

    // Only one person left in the export, and they are back.
    set_status(&mut data, &two[0], IdentityStatus::Active);
    data.directory.identities.retain(|i| i.id == two[0]);
    write_directory(dir.path(), &data);
    let approval = approve_all(&config, held.run_id).await;
    let note = approval.directory_note.clone().unwrap();
    assert!(
        note.starts_with("the directory read now was refused as a source fault ("),
        "{note}"
    );
    assert!(
        note.ends_with("): the re-check used the directory reads runs stored instead"),
        "{note}"
    );
    assert_eq!(approval.approved, seqs, "{approval:?}");
    sandbox.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    suspend_two(&mut data);
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    std::fs::write(dir.path().join("directory.json"), "{\"users\": [").unwrap();
    let approval = approve_all(&config, held.run_id).await;
    let note = approval.directory_note.clone().unwrap();
    assert!(
        note.starts_with("the directory could not be read now ("),
        "{note}"
    );
    assert_eq!(approval.approved.len(), 2, "{approval:?}");
    sandbox.shutdown().await;
}
