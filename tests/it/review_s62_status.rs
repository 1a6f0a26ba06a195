//! Session 62: what `status` and `reject` say of an approved deprovision
//! taken back or sent since, and what the retry job asks the workspace.
//!
//! - `status` counted a deprovision a person approved, that was not sent yet
//!   (kept back, or released and cut off before its phase), and that a person
//!   then rejected, as `not_sent` (or `cut_off`): a write pending or broken,
//!   where a person had refused it. It is `rejected` now, counted once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::store::Store;

use crate::review_s58_review3::bob_approved_and_failed_with;

/// `status` as `seatwarden status` collects it for `config`'s state, in UTC.
fn status_now(config: &Config) -> seatwarden::daemon::status::Status {
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

/// Bob's deactivation, held by the reconcile, approved and kept back unsent
/// (the workspace had stopped answering), is rejected in that run: `status`
/// counts it `rejected`, in its text and its JSON, and its counts add up to
/// the run's journal. Before, it counted `1 not sent`, and the line said the
/// next reconcile plans it again.
#[tokio::test]
async fn an_approved_deprovision_rejected_before_it_was_sent_counts_rejected() {
    let kept_back = format!(
        "{}: 503 Service Unavailable",
        seatwarden::apply::NOT_SENT_DOWN
    );
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed_with(&kept_back).await;
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
