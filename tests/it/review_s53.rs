//! Session 53: an exception keeps a person deleted from the directory, by the
//! directory userName the ledger remembers, in the reconcile as in the sweep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::reconciled_demo;
use crate::review_s51_exceptions::{active, except, suspend_someone};

/// HR keeps a leaver's access for their notice period; the exception names
/// their directory userName, which their workspace account does not have. The
/// sweep puts the deprovision off, then the directory deletes the person. The
/// reconcile knew them only by their link, found no name for them, deactivated
/// the account the sweep kept and told the exception as naming nobody. It now
/// takes the name the ledger keeps: the account stays active, listed under
/// EXCEPTIONS as a deleted person's, and the exception names somebody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_keeps_a_person_deleted_from_the_directory_by_their_directory_name() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) =
        suspend_someone(dir.path(), &sandbox, Some("renamed.leaver@example.com"));
    let now = Utc::now();
    except(
        &mut config,
        &user_name,
        now + Duration::days(10),
        "notice period",
    );
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let swept = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        now,
        Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(swept.excepted, 1, "{swept:?}");

    // Deleted from the directory.
    let path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    full["users"]
        .as_array_mut()
        .unwrap()
        .retain(|u| u["id"] != person.as_str());
    std::fs::write(&path, full.to_string()).unwrap();
    drop(store);

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
    sandbox.shutdown().await;
}
