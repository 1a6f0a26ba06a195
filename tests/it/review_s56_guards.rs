//! Session 56: the safety guards over a sequence of runs. Each run can stay under
//! a limit that the sequence as a whole passes; these tests hold the guards to the
//! whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use seatwarden::config::Config;
use seatwarden::guard::SourceFault;
use seatwarden::model::Account;
use seatwarden::run::{self, Mode, RunOptions, RunOutcome};
use seatwarden::sla::{self, Leaver, LossReason};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::review_s48_protected_link::{configured, linked, sandbox, user};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, 2, 9, 0, 0).unwrap()
}

/// People `0..n` of the directory, all active.
pub(crate) fn people(n: usize) -> serde_json::Value {
    (0..n)
        .map(|i| {
            let name = format!("p{i}@example.com");
            user(&format!("00u{i}"), &name, &name, "ACTIVE", &[])
        })
        .collect()
}

/// An account for each of people `0..n`, linked by externalId.
pub(crate) fn accounts(n: usize) -> Vec<Account> {
    (0..n)
        .map(|i| {
            linked(
                &format!("w{i}"),
                &format!("p{i}@example.com"),
                &format!("00u{i}"),
            )
        })
        .collect()
}

/// The directory file in `dir` (as [`configured`] wrote it) with people `0..n` only.
fn write_people(dir: &Path, n: usize) {
    std::fs::write(
        dir.join("directory.json"),
        serde_json::json!({ "users": people(n) }).to_string(),
    )
    .unwrap();
}

/// A reconcile judged at `at`, with `--accept-directory` when `accept`.
pub(crate) async fn reconcile_at(config: &Config, at: DateTime<Utc>, accept: bool) -> RunOutcome {
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    run::execute_with_options(
        config,
        &run::directory_from_config(config),
        &client,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
        RunOptions {
            now: Some(at),
            accept_directory: accept,
            ..RunOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A directory that shrinks a little at each reconcile, each step within
/// `max_directory_shrink_percent` of the one before, is rejected once it has
/// shrunk past the limit within 24 h: a run is measured against the largest
/// directory accepted in the 24 h before it, not only the last one (else
/// reconciles walk the baseline down, and a read losing 15% an hour is never a
/// source fault). `--accept-directory` starts the measure afresh from what it
/// accepted, and so does the passing of the 24 h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_shrinking_a_little_at_each_run_is_rejected_once_the_day_passes_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(accounts(20)).await;
    let config = configured(
        dir.path(),
        sandbox.base_url().as_str(),
        people(20),
        "[safety]\nsettle = \"0s\"\nmax_directory_shrink_percent = 20\n",
    );
    let first = reconcile_at(&config, t0(), false).await;
    assert_eq!(first.report.safety.source_fault, None);

    // 17 of 20: 15% fewer, within the limit.
    write_people(dir.path(), 17);
    let second = reconcile_at(&config, t0() + Duration::hours(1), false).await;
    assert_eq!(second.report.safety.source_fault, None);

    // 15 of 17 is 11.8% fewer than the last run, but 25% fewer than 2 h ago.
    write_people(dir.path(), 15);
    let third = reconcile_at(&config, t0() + Duration::hours(2), false).await;
    match &third.report.safety.source_fault {
        Some(SourceFault::Shrank {
            previous: 20,
            current: 15,
            ..
        }) => {}
        other => panic!("not rejected against the day's largest directory: {other:?}"),
    }
    assert!(third.plan.actions.is_empty(), "{:#?}", third.plan.actions);
    assert_eq!(
        sandbox
            .snapshot()
            .accounts
            .iter()
            .filter(|a| a.active)
            .count(),
        17,
        "only the three leavers of the accepted run were deactivated"
    );

    // A person says it is real: accepted, and measured from there on.
    let accepted = reconcile_at(&config, t0() + Duration::hours(3), true).await;
    assert_eq!(accepted.report.safety.source_fault, None);
    write_people(dir.path(), 13);
    let after = reconcile_at(&config, t0() + Duration::hours(4), false).await;
    assert_eq!(after.report.safety.source_fault, None, "13 of 15 accepted");

    // A day later, the largest of the last 24 h is 13: 11 is within the limit.
    write_people(dir.path(), 11);
    let next_day = reconcile_at(&config, t0() + Duration::hours(29), false).await;
    assert_eq!(next_day.report.safety.source_fault, None);
}

/// A retry pass with three deprovisions due and a per-run limit of two, whose
/// read of one of the accounts fails (a provider that answers 500 for it, past
/// the client's retries): the threshold counts what the pass was due to
/// deprovision, not only the accounts it could read. Counting only those, a
/// mass deprovision the reconcile held (every leaver at once) went through in
/// passes over the limit's size whenever reads failed, without a human: two
/// now, the third on its next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_pass_counts_the_due_deprovisions_it_could_not_read_against_the_limit() {
    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 100}
        })))
        .mount(&workspace)
        .await;
    for i in 0..2 {
        Mock::given(method("GET"))
            .and(path(format!("/Users/w{i}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": format!("w{i}"), "userName": format!("p{i}@example.com"),
                "externalId": format!("00u{i}"), "active": true,
            })))
            .mount(&workspace)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/Users/w2"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&workspace)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&workspace)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = configured(
        dir.path(),
        &workspace.uri(),
        people(3),
        "[safety]\nsettle = \"0s\"\nmax_deprovisions = 2\n",
    );
    config.workspace.retries = 0;
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let now = Utc::now();
    // As a reconcile that held all three would leave them, due for an attempt.
    let leavers: Vec<Leaver> = (0..3)
        .map(|i| Leaver {
            identity_id: format!("00u{i}"),
            account_id: Some(format!("w{i}")),
            user_name: format!("p{i}@example.com"),
            reason: LossReason::Suspended,
        })
        .collect();
    let detected = now - Duration::minutes(20);
    let changes = sla::observe(&[], &leavers, &[], detected, Duration::hours(1));
    store
        .lock()
        .unwrap()
        .update_ledger(&changes, detected)
        .unwrap();

    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let outcome = seatwarden::sweep::enforce(&config, &client, &store, now)
        .await
        .unwrap();
    let patched: Vec<String> = workspace
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| r.url.path().to_owned())
        .collect();
    assert!(patched.is_empty(), "sent under the limit: {patched:?}");
    assert_eq!(outcome.held, 2, "{outcome:?}");
    let held = store.lock().unwrap().open_deprovisions().unwrap();
    let why = held
        .iter()
        .find(|e| e.identity_id == "00u0")
        .and_then(|e| e.held.clone())
        .unwrap();
    assert!(
        why.contains("3 deprovisions planned, the per-run limit is 2"),
        "{why}"
    );
    // The unread one is held with them, all three looked at again together:
    // on its read's back-off it came due alone, a pass before the others.
    for entry in &held {
        assert_eq!(entry.held.as_deref(), Some(why.as_str()), "{entry:?}");
        assert_eq!(
            entry.next_attempt_at,
            Some(now + seatwarden::sweep::HOLD_RECHECK),
            "{entry:?}"
        );
    }
    let reads_of_w2 = || async {
        workspace
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/Users/w2")
            .count()
    };
    let before = reads_of_w2().await;
    seatwarden::sweep::enforce(&config, &client, &store, now + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(reads_of_w2().await, before, "w2 came due alone");
}
