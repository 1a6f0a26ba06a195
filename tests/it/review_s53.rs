//! Session 53: an exception keeps a person deleted from the directory, by the
//! directory userName the ledger remembers, in the reconcile as in the sweep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::reconciled_demo;
use crate::review_s51_exceptions::{
    PutOff, active, except, put_off_for_ten_days_as, suspend_someone,
};
use crate::review_s51_exceptions_review::{held_deactivation, refusal_of_approving};

/// HR keeps a leaver's access for their notice period; the exception names
/// their directory userName, which their workspace account does not have. The
/// sweep puts the deprovision off, then the directory deletes the person. The
/// reconcile knew them only by their link, found no name for them, deactivated
/// the account the sweep kept and told the exception as naming nobody. It now
/// takes the name the ledger keeps: the account stays active, listed under
/// EXCEPTIONS as a deleted person's, and the exception names somebody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_keeps_a_person_deleted_from_the_directory_by_their_directory_name() {
    let now = Utc::now();
    let PutOff {
        sandbox,
        dir,
        config,
        person,
        store,
        ..
    } = put_off_for_ten_days_as(now, Some("renamed.leaver@example.com")).await;
    drop(store);
    delete_from_directory(dir.path(), &person);

    let outcome = crate::fixtures::reconcile_at(&config, now + Duration::minutes(5)).await;
    assert!(active(&sandbox, &person), "the exception keeps the account");
    let safety = &outcome.report.safety;
    assert!(
        safety.exceptions_naming_nobody.is_empty(),
        "the exception names the deleted person: {safety:?}"
    );
    assert_eq!(safety.excepted.len(), 1, "{safety:?}");
    assert_eq!(
        safety.excepted[0].identity_id.as_deref(),
        Some(person.as_str())
    );
    assert!(
        safety.excepted[0].why.contains("deleted"),
        "{:?}",
        safety.excepted[0]
    );
    // The access review says the same: the access stays, and until when.
    let store = Store::open(&config.state.path).unwrap();
    let review =
        seatwarden::export::access_at(&store, &config, now + Duration::minutes(6)).unwrap();
    let row = review
        .accounts
        .iter()
        .find(|r| r.identity_id.as_deref() == Some(person.as_str()))
        .unwrap();
    assert!(
        row.justification
            .contains("access kept by an exception (safety.exceptions) until")
            && row.justification.contains("notice period"),
        "{}",
        row.justification
    );
    sandbox.shutdown().await;
}

/// A leaver's deactivation held by the threshold (its ledger episode keeps
/// their directory userName), held again once the directory deleted them; HR
/// then asks to keep them, by an exception naming that name (their account's
/// differs). `approve` of the second run must leave the account alone, as the
/// reconcile and the sweep do: from the run's directory it knew only the people
/// still in it, and deactivated the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_leaves_alone_a_deleted_person_an_exception_keeps() {
    use seatwarden::run::{self, Mode};

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) =
        suspend_someone(dir.path(), &sandbox, Some("renamed.leaver@example.com"));
    config.safety.max_deprovisions = 0;
    let reconcile = || {
        run::execute(
            &config,
            Store::open(&config.state.path).unwrap(),
            Mode::Reconcile,
        )
    };
    // Held; its ledger episode keeps the directory userName.
    reconcile().await.unwrap();
    delete_from_directory(dir.path(), &person);
    // Held again, from a directory without them.
    let held = reconcile().await.unwrap();
    let deactivate = held_deactivation(&held, &person);

    except(
        &mut config,
        &user_name,
        Utc::now() + Duration::days(3),
        "legal hold",
    );
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let refused = refusal_of_approving(&config, &client, held.run_id, deactivate).await;
    assert!(active(&sandbox, &person));
    assert!(
        refused.contains("exception (safety.exceptions)") && refused.contains("legal hold"),
        "{refused:?}"
    );
    sandbox.shutdown().await;
}

/// Takes the person `identity_id` out of the directory file in `dir`.
fn delete_from_directory(dir: &std::path::Path, identity_id: &str) {
    let path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    full["users"]
        .as_array_mut()
        .unwrap()
        .retain(|u| u["id"] != identity_id);
    std::fs::write(&path, full.to_string()).unwrap();
}

/// The gauge of an exception naming nobody, restored at a daemon's start from
/// the newest reconcile that could tell: when the newest could not (its
/// directory rejected), the gauge was absent until a whole read, which
/// Prometheus takes for the alert resolved, to fire again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_the_exception_naming_nobody_gauge_past_a_run_that_could_not_tell() {
    use crate::review_s41_ops::{Running, port_of, sample};
    let (sandbox, dir, env, config) =
        crate::review_s52::demo_daemon_with_a_typo_exception("review-s53-token").await;
    let now = Utc::now();
    let told = crate::fixtures::reconcile_at(&config, now).await;
    assert_eq!(told.report.safety.exceptions_naming_nobody.len(), 1);
    // The directory comes back empty: rejected, nothing can be told.
    std::fs::write(dir.path().join("directory.json"), r#"{"users":[]}"#).unwrap();
    let untold = crate::fixtures::reconcile_at(&config, now + Duration::minutes(1)).await;
    assert!(
        untold.report.safety.source_fault.is_some()
            && untold.report.safety.exceptions_naming_nobody_unknown,
        "{:?}",
        untold.report.safety
    );

    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let _daemon = Running(child);
    let port = port_of(&log).await;
    let (code, metrics) = crate::fixtures::http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="exceptions_naming_nobody"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    sandbox.shutdown().await;
}
