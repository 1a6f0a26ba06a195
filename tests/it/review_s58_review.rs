//! Review (s58) of session 57's changes: what `approve` protects when its own
//! directory read cannot be used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::IdentityStatus;
use seatwarden::run::Mode;

use crate::review_s45_approve::{
    approve_all, converged, execute, group_and_two_members, held_demotion_of, write_directory,
};

pub(crate) const PROTECTED_GROUP: &str = "On-call Admins";

/// What [`two_demotions_held`] returns: the converged workspace, the data and
/// configuration, the reconcile that held the demotions, the two people and
/// their held seqs (the first's, then the other's).
pub(crate) struct TwoDemotionsHeld {
    pub sandbox: seatwarden::sandbox::Sandbox,
    pub data: seatwarden::synth::Synth,
    pub config: seatwarden::config::Config,
    pub group: String,
    pub held: seatwarden::run::RunOutcome,
    pub members: Vec<String>,
    pub first_seq: u32,
    pub other_seq: u32,
}

/// Two people dropped from a mapped group by mistake: a reconcile holds their
/// demotions. With `protected`, `safety.protected_groups` names
/// [`PROTECTED_GROUP`], which someone else is in from the start (an export
/// lists no empty group, and approve's check has a group to go by).
pub(crate) async fn two_demotions_held(dir: &std::path::Path, protected: bool) -> TwoDemotionsHeld {
    let (sandbox, mut data, mut config) = converged(dir).await;
    let (group, _, members) = group_and_two_members(&data);
    if protected {
        config.safety.protected_groups = vec![PROTECTED_GROUP.into()];
        data.directory
            .identities
            .iter_mut()
            .find(|i| i.status == IdentityStatus::Active && !members.contains(&i.id))
            .unwrap()
            .groups
            .push(PROTECTED_GROUP.into());
    }
    for identity in data
        .directory
        .identities
        .iter_mut()
        .filter(|i| members.contains(&i.id))
    {
        identity.groups.retain(|g| *g != group);
    }
    write_directory(dir, &data);
    let held = execute(&config, Mode::Reconcile).await;
    let first_seq = held_demotion_of(&held, &members[0]);
    let other_seq = held_demotion_of(&held, &members[1]);
    TwoDemotionsHeld {
        sandbox,
        data,
        config,
        group,
        held,
        members,
        first_seq,
        other_seq,
    }
}

/// Two people dropped from a mapped group by mistake: their demotions are held
/// (the run returned, with the two demotions' seqs, the first's kept then the
/// other's). The first is then put in a protected directory group
/// (`safety.protected_groups`), and a `plan` reads the directory so.
pub(crate) async fn demotions_held_then_one_put_in_a_protected_group(
    dir: &std::path::Path,
) -> (
    seatwarden::sandbox::Sandbox,
    seatwarden::synth::Synth,
    seatwarden::config::Config,
    seatwarden::run::RunOutcome,
    u32,
    u32,
) {
    let TwoDemotionsHeld {
        sandbox,
        mut data,
        config,
        held,
        members,
        first_seq: kept_seq,
        other_seq: demoted_seq,
        ..
    } = two_demotions_held(dir, true).await;

    data.directory
        .identities
        .iter_mut()
        .find(|i| i.id == members[0])
        .unwrap()
        .groups
        .push(PROTECTED_GROUP.into());
    write_directory(dir, &data);
    let planned = execute(&config, Mode::Plan).await;
    assert!(planned.report.safety.source_fault.is_none());
    (sandbox, data, config, held, kept_seq, demoted_seq)
}

/// Two people dropped from a mapped group by mistake: their demotions are
/// held. The operator keeps one of them out of it by putting them in a
/// protected directory group (`safety.protected_groups`), and a `plan` reads
/// the directory so. Then the export is cut (a directory outage), and the read
/// `approve` makes is refused by the source check. The approval went by the
/// newest sound read (the plan's) for who is back and what is no longer asked,
/// but by the held run's own read alone for the protected groups' members: it
/// demoted the person the plan's read showed protected, which approve does not
/// when its own read shows them so, nor would the next reconcile.
#[tokio::test]
async fn approve_protects_a_protected_group_member_of_a_later_read_when_its_own_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, data, config, held, kept_seq, demoted_seq) =
        demotions_held_then_one_put_in_a_protected_group(dir.path()).await;

    let mut cut = data.clone();
    cut.directory.identities.truncate(1);
    write_directory(dir.path(), &cut);
    let approval = approve_all(&config, held.run_id).await;
    assert!(approval.directory_note.is_some(), "{approval:?}");
    assert!(
        approval.approved.contains(&demoted_seq),
        "the other demotion goes ahead: {approval:?}"
    );
    assert!(
        !approval.approved.contains(&kept_seq),
        "the protected person's demotion was approved: {approval:?}"
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

/// The running daemon sets the PROTECTED LEAVERS gauge to 1 from a reconcile
/// whose directory read was incomplete and never to 0 from one: after a whole
/// read that listed none, a first incomplete read that listed a protected
/// leaver, and a second that did not show them (on a page its listing
/// lacked), it reads 1. Restarted then, it read 0: the restore raised the
/// gauge from the newest incomplete read alone, and the
/// `SeatwardenProtectedLeaver` alert resolved at the restart, with nothing
/// settled. (The daemon's own first reconcile is refused here, so the
/// restored gauge is what it shows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_protected_leaver_gauge_an_earlier_incomplete_read_raised() {
    use crate::review_s41_ops::sample;
    use chrono::Utc;
    use seatwarden::model::ProtectedLeaver;
    use seatwarden::store::{RunKind, RunStatus, Store};
    let metrics = crate::review_s48_protected_link::reconciled_daemon_metrics(
        "breakglass@example.com",
        |state| {
            let mut store = Store::open(state).unwrap();
            let start = Utc::now() - chrono::Duration::hours(3);
            let mut stored = |minutes: i64, incomplete: bool, leaver: bool| {
                let at = start + chrono::Duration::minutes(minutes);
                let run = store.begin_run(RunKind::Reconcile, at).unwrap();
                // A directory of 1,000 accepted: the demo's 50 are refused.
                if !incomplete {
                    store.accept_directory(run, 1000, at).unwrap();
                }
                let mut report = crate::review_s48_protected_link::quiet_report();
                report.run_id = run;
                report.safety.directory_incomplete = incomplete;
                if leaver {
                    report.safety.protected_leavers.push(ProtectedLeaver {
                        account_id: "w1".into(),
                        user_name: "ops-admin@example.com".into(),
                        identity_id: "00u1".into(),
                        why: "identity is suspended in the directory".into(),
                    });
                }
                store.save_report(run, &report.to_stored_json()).unwrap();
                store
                    .finish_run(run, at, RunStatus::Succeeded, None)
                    .unwrap();
            };
            stored(0, false, false);
            stored(30, true, true);
            stored(60, true, false);
        },
    )
    .await;
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="protected_leavers"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}
