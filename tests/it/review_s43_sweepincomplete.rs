//! Review (s43) of a sweep whose directory read is incomplete: what does an
//! operator see when the directory keeps reading short, so that the sweep can
//! never see a leaver?
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use seatwarden::run::RunError;
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;
use wiremock::MockServer;

use crate::scim_directory::{THREE, mount_people, three_provisioned};

/// A SCIM directory whose listing ends short of the `totalResults` it announced
/// (read twice, short both times) gives the sweep an incomplete snapshot, from
/// which it rightly opens no episode: cy, missing from it, is not taken for a
/// leaver. But the pass was a success, so a directory that kept reading short
/// stopped same-day deprovisioning with nothing to show for it: no episode, so
/// no overdue alert, and no failed sweep job for the repeated-failure alert,
/// `status` or the job metrics. The pass now fails, naming the directory and
/// what it read. The same listing announcing what it sends (complete: cy was
/// deleted) is the control: cy's episode opens and the pass succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_from_an_incomplete_directory_read_fails_the_pass() {
    for (announced, complete) in [(3, false), (2, true)] {
        let idp = MockServer::start().await;
        let (workspace, _dir, config) = three_provisioned(&idp).await;
        // cy is gone from the listing.
        mount_people(&idp, &THREE[..2], announced).await;
        let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
        let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
        let outcome = seatwarden::sweep::sweep(
            &config,
            &config.sweep_directory(),
            &client,
            &store,
            chrono::Utc::now(),
            chrono::Duration::hours(1),
        )
        .await
        .unwrap();
        let cy_active = workspace
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.user_name == "cy@example.com")
            .unwrap()
            .active;
        if complete {
            assert_eq!(outcome.detected, 1, "{outcome:?}");
            assert!(!cy_active, "a whole read shows cy gone");
            outcome.checked().unwrap();
        } else {
            // The invariant stands: nothing observed from a partial read.
            assert_eq!(outcome.detected, 0, "{outcome:?}");
            assert!(cy_active, "an incomplete directory never deprovisions");
            assert!(
                store
                    .lock()
                    .unwrap()
                    .open_deprovisions()
                    .unwrap()
                    .is_empty()
            );
            let error = match outcome.checked() {
                Err(error @ RunError::DirectoryIncomplete(_)) => error.to_string(),
                other => panic!("an incomplete read passed for a sweep that worked: {other:?}"),
            };
            for part in [
                "the directory read was incomplete",
                &format!("scim {}/scim/v2", idp.uri()),
                "2 people read",
                "the sweep observed nothing",
                "leavers wait for a complete read",
            ] {
                assert!(error.contains(part), "{part:?} not in {error}");
            }
        }
        workspace.shutdown().await;
    }
}

/// A daemon killed when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same short directory under the daemon: its sweep job is recorded failed,
/// with the error `status` shows and the repeated-failure alert quotes, and
/// counted so in `seatwarden_job_runs_total`; it was recorded a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_records_a_sweep_from_an_incomplete_read_as_failed() {
    use seatwarden::daemon::{DIGEST, MAIL, PRUNE, RECONCILE, RETRY, SWEEP};
    use seatwarden::store::RunStatus;

    let idp = MockServer::start().await;
    let (workspace, dir, config) = three_provisioned(&idp).await;
    mount_people(&idp, &THREE[..2], 3).await;
    {
        // Only the sweep is due at start.
        let mut store = Store::open(&config.state.path).unwrap();
        let now = chrono::Utc::now();
        for job in [RECONCILE, RETRY, PRUNE, DIGEST, MAIL] {
            store.job_started(job, now).unwrap();
            store
                .job_finished(job, now, RunStatus::Succeeded, None)
                .unwrap();
        }
    }
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &[]);
    let mut daemon = Running(child);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let port = crate::fixtures::listening_port(&mut daemon.0, logged).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sweep = loop {
        let jobs = Store::open(&config.state.path).unwrap().jobs().unwrap();
        if let Some(sweep) = jobs
            .into_iter()
            .find(|job| job.name == SWEEP && job.last_finished_at.is_some())
        {
            break sweep;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sweep finished:\n{}",
            logged()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(sweep.last_status, Some(RunStatus::Failed), "{}", logged());
    let error = sweep.last_error.unwrap_or_default();
    assert!(
        error.contains("the directory read was incomplete"),
        "{error}\n{}",
        logged()
    );
    // The daemon records the job's end in the database before it counts it in
    // /metrics: read just after the row, the counter may not have moved yet.
    let failed = r#"seatwarden_job_runs_total{job_name="sweep",status="failed"} 1"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, metrics) = crate::fixtures::http_get(port, "/metrics");
        if metrics.contains(failed) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(daemon);
    workspace.shutdown().await;
}
