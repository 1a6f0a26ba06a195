//! Session 56: a directory the source check refused is known as refused from
//! the moment of the check, not only from the run's report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use seatwarden::store::Store;

use crate::daemon::reconciled_demo;

/// The directory export is cut to its first person: the source check refuses
/// it, and nothing is planned. The run stores both snapshots before it gets to
/// its report; one that fails or is killed in between (a full disk, an OOM
/// kill) left a run with snapshots and no report. `export` (and `explain`,
/// `link`, the sweep) took its snapshots for the newest sound ones: an export
/// that showed every person but one as gone from the directory, and their
/// accounts as due to lose access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_directory_without_its_report_is_not_read_as_the_newest() {
    let (sandbox, dir, config) = reconciled_demo().await;
    let sound = Store::open(&config.state.path)
        .unwrap()
        .latest_snapshot_run()
        .unwrap()
        .unwrap();

    let path = dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    directory["users"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&path, directory.to_string()).unwrap();
    let refused = crate::fixtures::reconcile_at(&config, Utc::now()).await;
    assert!(
        refused.report.safety.source_fault.is_some(),
        "{:?}",
        refused.report.safety
    );
    // As if the run had stopped before storing its report.
    let store = Store::open(&config.state.path).unwrap();
    rusqlite::Connection::open(&config.state.path)
        .unwrap()
        .execute("DELETE FROM reports WHERE run_id = ?1", [refused.run_id])
        .unwrap();
    assert!(store.report(refused.run_id).unwrap().is_none());

    assert!(store.directory_refused(refused.run_id).unwrap());
    assert_eq!(store.latest_snapshot_run().unwrap(), Some(sound));
    let export = seatwarden::export::access(&store, &config).unwrap();
    assert_eq!(export.run_id, sound);
    let in_directory = export
        .accounts
        .iter()
        .filter(|row| row.identity_status.as_deref() == Some("active"))
        .count();
    assert!(
        in_directory > 1,
        "the export reads the sound run's directory, not the refused one of one person: \
         {in_directory} active people"
    );
    sandbox.shutdown().await;
}

/// A leaver's protected account, gauged, then a directory outage: every
/// reconcile's directory is refused, and nothing is planned from it. Its empty
/// PROTECTED LEAVERS set the gauge to 0, which resolved `SeatwardenProtectedLeaver`
/// for the outage and fired it again after, though nobody had settled anything.
/// The gauge keeps what the last trusted reconcile told, as the drift gauges do.
/// Here the daemon restarts into the outage: the gauge restored from the stored
/// report, its first reconcile refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_directory_leaves_the_protected_findings_gauged_as_they_were() {
    use crate::review_s41_ops::sample;
    use seatwarden::model::ProtectedLeaver;
    use seatwarden::store::{RunKind, RunStatus};
    let metrics = crate::review_s48_protected_link::reconciled_daemon_metrics(
        "breakglass@example.com",
        |state| {
            let mut store = Store::open(state).unwrap();
            let now = Utc::now() - chrono::Duration::hours(1);
            let run = store.begin_run(RunKind::Reconcile, now).unwrap();
            // A directory of 1,000 accepted: the demo's 50 are refused.
            store.accept_directory(run, 1000, now).unwrap();
            let mut report = crate::review_s48_protected_link::quiet_report();
            report.safety.protected_leavers.push(ProtectedLeaver {
                account_id: "w1".into(),
                user_name: "ops-admin@example.com".into(),
                identity_id: "00u1".into(),
                why: "identity is deprovisioned in the directory".into(),
            });
            store.save_report(run, &report.to_stored_json()).unwrap();
            store
                .finish_run(run, now, RunStatus::Succeeded, None)
                .unwrap();
        },
    )
    .await;
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="source_fault"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="protected_leavers"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}
