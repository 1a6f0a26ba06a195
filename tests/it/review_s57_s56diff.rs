//! Review (s57) of session 56's changes: `approve`'s directory reads beside a
//! directory outage, and protection it knows of only from its own read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::IdentityStatus;
use seatwarden::run::Mode;

use crate::review_s45_approve::{approve_all, converged, execute, write_directory};
use crate::review_s56_approve_reads::{held_deactivation_of, set_status, suspend_two};

/// Two people suspended by mistake, their deactivations held. One is active
/// again, and a `plan` reads the directory so. Then the export is cut to one
/// person: the next reconcile's read is refused as a source fault, and so is
/// the one `approve` makes. The newest sound read, the plan's, shows the
/// person back; the approval looked only at the newest complete read (the
/// refused one), skipped it, and fell back to the held run's own read: it
/// deactivated someone a read since had shown back.
#[tokio::test]
async fn approve_goes_by_the_newest_sound_read_past_a_refused_one() {
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
    let planned = execute(&config, Mode::Plan).await;
    assert!(planned.report.safety.source_fault.is_none());

    let mut cut = data.clone();
    cut.directory.identities.truncate(1);
    write_directory(dir.path(), &cut);
    let refused = execute(&config, Mode::Reconcile).await;
    assert!(refused.report.safety.source_fault.is_some());

    let approval = approve_all(&config, held.run_id).await;
    assert!(approval.directory_note.is_some(), "{approval:?}");
    assert_eq!(approval.approved, vec![gone_seq], "{approval:?}");
    assert_eq!(
        approval
            .refused
            .iter()
            .map(|(seq, _)| *seq)
            .collect::<Vec<_>>(),
        vec![back_seq],
        "{approval:?}"
    );
    let why = &approval.refused[0].1;
    assert!(
        why.contains(&format!(
            "in the directory read by run {}, ",
            planned.run_id
        )),
        "{why}"
    );
    sandbox.shutdown().await;
}

/// A held mass deactivation takes in someone who must keep their account (a
/// suspension by mistake of an on-call admin): the operator puts them in a
/// protected directory group (`safety.protected_groups`) and approves the run
/// for the rest. `approve` reads the directory beside the workspace for just
/// such holds, yet judged protection by the group's members in the held run's
/// read alone: the account was deactivated, as the next reconcile, reading the
/// same directory, would never have done. Its members as read now are
/// protected too.
#[tokio::test]
async fn approve_protects_someone_put_in_a_protected_group_since_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    config.safety.protected_groups = vec!["On-call Admins".into()];
    let two = suspend_two(&mut data);
    // The group has a member from the start (an export lists no empty group).
    let member = data
        .directory
        .identities
        .iter_mut()
        .find(|i| i.status == IdentityStatus::Active && !two.contains(&i.id))
        .unwrap();
    member.groups.push("On-call Admins".into());
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    let kept_seq = held_deactivation_of(&held, &two[0]);
    let gone_seq = held_deactivation_of(&held, &two[1]);

    data.directory
        .identities
        .iter_mut()
        .find(|i| i.id == two[0])
        .unwrap()
        .groups
        .push("On-call Admins".into());
    write_directory(dir.path(), &data);
    let approval = approve_all(&config, held.run_id).await;
    assert_eq!(approval.directory_note, None, "{approval:?}");
    assert_eq!(approval.approved, vec![gone_seq], "{approval:?}");
    assert_eq!(approval.refused.len(), 1, "{approval:?}");
    assert_eq!(approval.refused[0].0, kept_seq);
    assert!(
        approval.refused[0].1.ends_with(" is protected"),
        "{}",
        approval.refused[0].1
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
    assert!(active(&two[0]), "the protected person keeps their account");
    assert!(!active(&two[1]));
    sandbox.shutdown().await;
}

/// A leaver's protected account, gauged from a whole directory read; then a
/// read that was incomplete (a SCIM directory's listing short of its
/// `totalResults`), which since session 56 lists no protected leaver it does
/// not show. Its empty PROTECTED LEAVERS set the gauge to 0: the
/// `SeatwardenProtectedLeaver` alert resolved, to fire again at the next whole
/// read, with nothing settled. Here the daemon restarts after such a run (its
/// own first reconcile refused, so the restored gauge is what it shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_directory_read_does_not_lower_the_protected_leaver_gauge() {
    use crate::review_s41_ops::sample;
    use chrono::Utc;
    use seatwarden::model::ProtectedLeaver;
    use seatwarden::store::{RunKind, RunStatus, Store};
    let metrics = crate::review_s48_protected_link::reconciled_daemon_metrics(
        "breakglass@example.com",
        |state| {
            let mut store = Store::open(state).unwrap();
            let now = Utc::now() - chrono::Duration::hours(2);
            let whole = store.begin_run(RunKind::Reconcile, now).unwrap();
            // A directory of 1,000 accepted: the demo's 50 are refused.
            store.accept_directory(whole, 1000, now).unwrap();
            let mut report = crate::review_s48_protected_link::quiet_report();
            report.safety.protected_leavers.push(ProtectedLeaver {
                account_id: "w1".into(),
                user_name: "ops-admin@example.com".into(),
                identity_id: "00u1".into(),
                why: "identity is deleted from the directory".into(),
            });
            store.save_report(whole, &report.to_stored_json()).unwrap();
            store
                .finish_run(whole, now, RunStatus::Succeeded, None)
                .unwrap();

            let later = now + chrono::Duration::minutes(30);
            let partial = store.begin_run(RunKind::Reconcile, later).unwrap();
            let mut report = crate::review_s48_protected_link::quiet_report();
            report.run_id = partial;
            report.safety.directory_incomplete = true;
            store
                .save_report(partial, &report.to_stored_json())
                .unwrap();
            store
                .finish_run(partial, later, RunStatus::Succeeded, None)
                .unwrap();
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

/// A reconcile's report says when its directory read was incomplete (and
/// not refused), which the gauges above go by; a whole read's says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_report_says_its_directory_read_was_incomplete() {
    use crate::scim_directory::{THREE, mount_people, three_provisioned};
    let idp = wiremock::MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    let whole = execute(&config, Mode::Reconcile).await;
    assert!(!whole.report.safety.directory_incomplete);
    assert!(
        !whole
            .report
            .to_stored_json()
            .contains("directory_incomplete")
    );
    mount_people(&idp, &THREE[..2], 3).await;
    let short = execute(&config, Mode::Reconcile).await;
    assert!(short.report.safety.source_fault.is_none());
    assert!(short.report.safety.directory_incomplete);
    workspace.shutdown().await;
}
