//! Session 62: what `status` and `reject` say of an approved deprovision
//! taken back or sent since, and what the retry job asks the workspace.
//!
//! - `status` counted a deprovision a person approved, that was not sent yet
//!   (kept back, or released and cut off before its phase), and that a person
//!   then rejected, as `not_sent` (or `cut_off`): a write pending or broken,
//!   where a person had refused it. It is `rejected` now, counted once.
//! - The retry job, with an attempt due, reads the directory's changes first;
//!   when they end every due episode (the leaver protected or back), it still
//!   asked the workspace (`/ServiceProviderConfig`): during an outage, the
//!   client's retries under the writer lock for nothing. It asks nothing now.
//! - `reject` of a run that held a deprovision again said the older approved
//!   run's copy, kept back unsent, was "rejected there too" (and recorded it
//!   rejected) after the retry job had sent it: the audit said a person
//!   refused a write the workspace had taken. Such a row is left as it is now,
//!   and the rejection and its audit line say it was already sent, not undone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::store::Store;

use seatwarden::sla::LossReason;

use crate::review_s58_lookalike::{bob_active, bob_episode_open};
use crate::review_s58_review3::bob_approved_and_failed_with;
use crate::review_s59_looks::bob_held_again_by_a_newer_run;
use crate::review_s61_retry::{bob_failed_once, directory_now, org, retry_job, retry_pass_at};

/// `status` as `seatwarden status` collects it for `config`'s state, in UTC.
pub(crate) fn status_now(config: &Config) -> seatwarden::daemon::status::Status {
    let store = Store::open(&config.state.path).unwrap();
    seatwarden::daemon::status::collect(
        &store,
        Utc::now() + Duration::seconds(5),
        seatwarden::daemon::status::Settings {
            tz: chrono_tz::UTC,
            delete_after: None,
            cool_down: std::time::Duration::from_secs(900),
            database: None,
            schedule: None,
            admin_command: "seatwarden".into(),
            resolve_after: None,
            certificates: Vec::new(),
            exceptions: Vec::new(),
        },
    )
    .unwrap()
}

/// Bob's deactivation, held by the reconcile, approved, kept back unsent (the
/// workspace had stopped answering) and then rejected in that run: the
/// configuration, its folder, and the run.
pub(crate) async fn bob_approved_kept_back_then_rejected()
-> (Config, tempfile::TempDir, seatwarden::store::RunId) {
    let kept_back = format!(
        "{}: 503 Service Unavailable",
        seatwarden::apply::NOT_SENT_DOWN
    );
    let (config, sandbox, _okta, dir) = bob_approved_and_failed_with(&kept_back).await;
    sandbox.shutdown().await;
    let run = status_now(&config).last_reconcile.unwrap().id;
    {
        let mut store = Store::open(&config.state.path).unwrap();
        seatwarden::approval::reject(
            &mut store,
            run,
            &seatwarden::approval::Only::All,
            "seatwarden",
            chrono_tz::UTC,
            Utc::now() + Duration::seconds(1),
        )
        .unwrap();
    }
    (config, dir, run)
}

/// Bob's deactivation, held by the reconcile, approved and kept back unsent
/// (the workspace had stopped answering), is rejected in that run: `status`
/// counts it `rejected`, in its text and its JSON, and its counts add up to
/// the run's journal. Before, it counted `1 not sent`, and the line said the
/// next reconcile plans it again.
#[tokio::test]
async fn an_approved_deprovision_rejected_before_it_was_sent_counts_rejected() {
    let (config, _dir, run) = bob_approved_kept_back_then_rejected().await;
    let status = status_now(&config);
    let counts = &status.last_reconcile_actions;
    assert_eq!(counts.get("rejected"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("not_sent"), None, "{counts:?}");
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(run)
        .unwrap()
        .len();
    assert_eq!(counts.values().sum::<usize>(), journal, "{counts:?}");
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["last_reconcile_actions"]["rejected"], 1, "{json}");
    let text = seatwarden::daemon::status::render_text(&status);
    let line = text
        .lines()
        .find(|line| line.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("no last reconcile in {text}"));
    assert!(!line.contains("not sent"), "{line}");
    assert!(line.contains("1 rejected"), "{line}");
}

/// Bob's deactivation failed once and its next attempt is due; before it, he
/// was put in a protected group. The retry job reads that from the
/// directory, ends his episode, and asks the workspace nothing: nothing is
/// due any more. Before, it still read `/ServiceProviderConfig`, which during
/// a workspace outage spent the client's retries under the writer lock.
#[tokio::test]
async fn the_retry_job_asks_the_workspace_nothing_once_the_directory_ends_what_was_due() {
    let (config, sandbox, okta, _dir) = bob_failed_once(LossReason::OutOfScope).await;
    directory_now(&okta, org("ACTIVE", &["00u1", "00u4"], &["00u2"], true)).await;
    let before = sandbox.stats().requests;
    let outcome = retry_job(&config).await;
    let asked = sandbox.stats().requests - before;
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(active, "the retry job deactivated a protected person");
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
    assert_eq!(asked, 0, "the retry job asked the workspace: {outcome:?}");
}

/// Bob's deactivation, approved in the first reconcile and kept back unsent
/// (the workspace had stopped answering), sent since by the retry job's pass;
/// a newer reconcile held the same deactivation, undecided, before that.
/// Returns the approved run and the newer one.
async fn bob_approved_then_sent_by_the_retry_job() -> (
    Config,
    seatwarden::sandbox::Sandbox,
    wiremock::MockServer,
    tempfile::TempDir,
    seatwarden::store::RunId,
    seatwarden::store::RunId,
) {
    let kept_back = format!(
        "{}: 503 Service Unavailable",
        seatwarden::apply::NOT_SENT_DOWN
    );
    let (config, sandbox, okta, dir) = bob_approved_and_failed_with(&kept_back).await;
    let approved = status_now(&config).last_reconcile.unwrap().id;
    let newer = bob_held_again_by_a_newer_run(&config);
    let outcome = retry_pass_at(&config, Utc::now() + Duration::hours(1)).await;
    assert!(
        !bob_active(&sandbox),
        "the retry job did not send the approved deactivation: {outcome:?}"
    );
    (config, sandbox, okta, dir, approved, newer)
}

/// `reject` of the newer run does not say, nor record, that the approved
/// run's copy was rejected there too: the retry job sent it. Before, the
/// rejection and its audit line said "rejected there too".
#[tokio::test]
async fn a_reject_does_not_claim_it_refused_what_the_retry_job_sent() {
    let (config, sandbox, _okta, _dir, approved, newer) =
        bob_approved_then_sent_by_the_retry_job().await;
    sandbox.shutdown().await;
    let mut store = Store::open(&config.state.path).unwrap();
    let rejection = seatwarden::approval::reject(
        &mut store,
        newer,
        &seatwarden::approval::Only::All,
        "seatwarden",
        chrono_tz::UTC,
        Utc::now() + Duration::hours(1) + Duration::seconds(1),
    )
    .unwrap();
    let text = rejection.to_string();
    assert!(!text.contains("rejected there too"), "{text}");
    assert!(
        text.contains(&format!("approved in run {approved} was already sent by")),
        "{text}"
    );
    assert!(text.contains("not undone"), "{text}");
    assert!(!text.contains("stays open in the ledger"), "{text}");
    let audit = store.audit().unwrap();
    let line = &audit.last().unwrap().detail;
    assert!(!line.contains("rejected there too"), "{line}");
    assert!(line.contains("already sent by"), "{line}");
    assert!(
        !store
            .decisions(approved)
            .unwrap()
            .values()
            .any(|d| *d == seatwarden::store::Decision::Rejected),
        "the approved run's sent row was recorded rejected"
    );
}

/// `reject` of the approved run itself, once the retry job sent what it
/// approved, rejects nothing and says why. Before, it recorded it rejected
/// ("1 already approved by an approval cut off before sending").
#[tokio::test]
async fn a_reject_of_the_approved_run_after_the_retry_job_sent_it_rejects_nothing() {
    let (config, sandbox, _okta, _dir, approved, _newer) =
        bob_approved_then_sent_by_the_retry_job().await;
    sandbox.shutdown().await;
    let mut store = Store::open(&config.state.path).unwrap();
    let refused = seatwarden::approval::reject(
        &mut store,
        approved,
        &seatwarden::approval::Only::All,
        "seatwarden",
        chrono_tz::UTC,
        Utc::now() + Duration::hours(1) + Duration::seconds(1),
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("was already sent by"), "{refused}");
    assert!(refused.contains("not undone"), "{refused}");
}

/// The same rejected row in a reconcile that stored no report (as if cut off
/// before it): `report --run` tells it from its journal as `status` counts
/// it, "approved, then rejected before they were sent". Before, it said
/// "1 kept back unsent", a write the next run would make.
#[tokio::test]
async fn report_run_of_a_run_without_a_report_tells_an_approval_taken_back_as_rejected() {
    let (config, dir, run) = bob_approved_kept_back_then_rejected().await;
    rusqlite::Connection::open(&config.state.path)
        .unwrap()
        .execute("DELETE FROM reports WHERE run_id = ?1", [run])
        .unwrap();

    let (code, stderr) =
        crate::fixtures::seatwarden_in(dir.path(), &[], &["report", "--run", &run.to_string()]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("1 approved, then rejected before they were sent"),
        "{stderr}"
    );
    assert!(!stderr.contains("kept back unsent"), "{stderr}");
}
