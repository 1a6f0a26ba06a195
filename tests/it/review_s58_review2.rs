//! Review (s58, second) of session 58's changes: `approve`'s directory read
//! made before the writer lock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use seatwarden::approval::{self, Only};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::review_s45_approve::write_directory;
use crate::review_s58_review::demotions_held_then_one_put_in_a_protected_group;

/// As `review_s58_review`'s refused read, with the directory read before the
/// writer lock (`seatwarden approve` does so since 1da5214): the read ahead is
/// refused (a directory outage), no run read the directory since, and the
/// approval went by the held run's read alone for the protected groups'
/// members: it demoted the person the plan's read showed protected.
#[tokio::test]
async fn approve_reading_ahead_protects_a_protected_group_member_of_a_later_read_when_its_read_is_refused()
 {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, data, config, held, kept_seq, demoted_seq) =
        demotions_held_then_one_put_in_a_protected_group(dir.path()).await;

    let mut cut = data.clone();
    cut.directory.identities.truncate(1);
    write_directory(dir.path(), &cut);
    let store = Store::open(&config.state.path).unwrap();
    let ahead = approval::read_ahead(&config, &store, held.run_id, &Only::All)
        .await
        .unwrap()
        .expect("held demotions are read for");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve_read_ahead(
        &config,
        &client,
        store,
        held.run_id,
        &Only::All,
        Some(ahead),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(approval.directory_note.is_some(), "{approval:?}");
    assert!(
        approval.approved.contains(&demoted_seq),
        "the other demotion goes ahead: {approval:?}"
    );
    let why = &approval
        .refused
        .iter()
        .find(|(seq, _)| *seq == kept_seq)
        .unwrap_or_else(|| panic!("the protected person's demotion refused: {approval:?}"))
        .1;
    assert!(why.ends_with(" is protected"), "{why}");
    sandbox.shutdown().await;
}

/// Read before the lock, the directory shows one of two suspended people back.
/// Meanwhile a `plan` (which takes no writer lock) is still at work: it has
/// stored a directory snapshot that its source check has not yet judged (an
/// export cut to one person, which the check will refuse). That run is no
/// newer evidence: until it has finished, its read may be one the check
/// refuses. The approval took it for the newer read, set its own read aside
/// and deactivated the person who is back.
#[tokio::test]
async fn a_plan_still_running_is_not_the_newer_read_that_decides_an_approval() {
    use seatwarden::model::{DirectorySnapshot, IdentityStatus};
    use seatwarden::run::Mode;
    use seatwarden::store::RunKind;

    use crate::review_s45_approve::{converged, execute};
    use crate::review_s56_approve_reads::{held_deactivation_of, set_status, suspend_two};

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
    let mut store = Store::open(&config.state.path).unwrap();
    let ahead = approval::read_ahead(&config, &store, held.run_id, &Only::All)
        .await
        .unwrap()
        .expect("held deactivations are read for");
    // The plan, mid-run: its snapshot stored, its source check still to come.
    let planning = store.begin_run(RunKind::Plan, Utc::now()).unwrap();
    let cut = DirectorySnapshot {
        identities: data
            .directory
            .identities
            .iter()
            .filter(|i| i.id == two[1])
            .cloned()
            .collect(),
        complete: true,
    };
    store.save_directory_snapshot(planning, &cut).unwrap();

    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve_read_ahead(
        &config,
        &client,
        store,
        held.run_id,
        &Only::All,
        Some(ahead),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        approval.approved,
        vec![gone_seq],
        "the person back deactivated: {approval:?}"
    );
    let why = &approval
        .refused
        .iter()
        .find(|(seq, _)| *seq == back_seq)
        .unwrap_or_else(|| panic!("the deactivation of the person back refused: {approval:?}"))
        .1;
    assert!(why.contains("in the directory as read now"), "{why}");
    sandbox.shutdown().await;
}

/// Read before the lock, the directory shows neither of two people whose
/// demotions are held in a protected group. While approve waits for the
/// lock, the operator puts one of them in one, and a reconcile reads the
/// directory so and then fails (the workspace answered 503). That read is
/// passed over as the newer state (the run did not succeed), and the approval
/// went by its own older read alone: it demoted the person a read since shows
/// protected, which it would not have had it read the directory under the lock.
#[tokio::test]
async fn a_protected_group_member_shown_by_a_run_that_failed_while_approve_waited_is_protected() {
    use seatwarden::store::{RunKind, RunStatus};

    use crate::review_s58_review::{PROTECTED_GROUP, TwoDemotionsHeld, two_demotions_held};

    let dir = tempfile::tempdir().unwrap();
    let TwoDemotionsHeld {
        sandbox,
        mut data,
        config,
        held,
        members,
        first_seq: kept_seq,
        other_seq: demoted_seq,
        ..
    } = two_demotions_held(dir.path(), true).await;

    let mut store = Store::open(&config.state.path).unwrap();
    let ahead = approval::read_ahead(&config, &store, held.run_id, &Only::All)
        .await
        .unwrap()
        .expect("held demotions are read for");
    data.directory
        .identities
        .iter_mut()
        .find(|i| i.id == members[0])
        .unwrap()
        .groups
        .push(PROTECTED_GROUP.into());
    write_directory(dir.path(), &data);
    // The daemon's reconcile: its read stored, then the run failed.
    let failed = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
    store
        .save_directory_snapshot(failed, &data.directory)
        .unwrap();
    store
        .finish_run(
            failed,
            Utc::now(),
            RunStatus::Failed,
            Some("the workspace answered 503"),
        )
        .unwrap();

    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve_read_ahead(
        &config,
        &client,
        store,
        held.run_id,
        &Only::All,
        Some(ahead),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(
        approval.approved.contains(&demoted_seq),
        "the other demotion goes ahead: {approval:?}"
    );
    let why = &approval
        .refused
        .iter()
        .find(|(seq, _)| *seq == kept_seq)
        .unwrap_or_else(|| panic!("the protected person's demotion refused: {approval:?}"))
        .1;
    assert!(why.ends_with(" is protected"), "{why}");
    sandbox.shutdown().await;
}
