//! Review of session 54: an exception in force when the sweep or its retry
//! writes keeps the account by whichever name the reconcile would find it
//! under, the person's directory userName included, however the episode's
//! earlier looks went.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use seatwarden::sandbox::Faults;
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::{reconciled_demo, sweep_at};
use crate::review_s51_exceptions::{active, episode, except, suspend_someone};

/// A time (whole seconds) after the machine's clock, so the passes' "verified
/// at" (the later of the clock and `now`) is `now` itself.
fn later_than_the_clock() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp() + 30 * 86_400, 0).unwrap()
}

/// The sweep's first look at a leaver (directory userName not the account's)
/// finds no exception and tries to deactivate; the workspace fails every write.
/// HR then adds an exception naming the person's directory userName. The retry
/// must keep the account, as the reconcile does: the ledger used to take the
/// account's userName at the first look, and the retry no longer found the
/// exception.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_added_after_a_failed_deactivation_keeps_the_account_on_retry() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) =
        suspend_someone(dir.path(), &sandbox, Some("renamed.leaver@example.com"));
    let now = later_than_the_clock();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();

    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let swept = sweep_at(&config, &config.directory(), &client, &store, now).await;
    assert_eq!((swept.enforced, swept.excepted), (0, 0), "{swept:?}");
    assert!(active(&sandbox, &person), "every write failed");
    sandbox.set_faults(Faults::default());

    let until = now + Duration::days(3);
    except(&mut config, &user_name, until, "handover, HR-4711");
    for hours in [1, 2, 6] {
        let retried =
            seatwarden::sweep::enforce(&config, &client, &store, now + Duration::hours(hours))
                .await
                .unwrap();
        assert_eq!(retried.enforced, 0, "{hours} h: {retried:?}");
        assert!(active(&sandbox, &person), "{hours} h: kept until {until}");
    }
    let put_off = episode(&store, &person);
    assert_eq!(put_off.user_name, user_name, "{put_off:?}");
    assert_eq!(put_off.excepted_until, Some(until), "{put_off:?}");
    drop(store);

    let outcome = crate::fixtures::reconcile_at(&config, now + Duration::hours(7)).await;
    assert!(active(&sandbox, &person), "the reconcile keeps it as well");
    assert!(
        outcome.report.safety.exceptions_naming_nobody.is_empty(),
        "{:?}",
        outcome.report.safety
    );
    sandbox.shutdown().await;
}

/// A sweep holds a leaver's deactivation (the threshold); HR then asks to keep
/// them, naming their directory userName (not their account's). `approve` of
/// the sweep's run must leave the account alone, as the reconcile and the
/// retry do: a sweep's run stores no directory snapshot, so `approve` knew the
/// person by their account's userName alone and deactivated it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_of_a_held_sweep_deactivation_leaves_an_excepted_person_alone() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) =
        suspend_someone(dir.path(), &sandbox, Some("renamed.leaver@example.com"));
    config.safety.max_deprovisions = 0;
    let now = Utc::now();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let swept = sweep_at(&config, &config.directory(), &client, &store, now).await;
    assert_eq!((swept.held, swept.enforced), (1, 0), "{swept:?}");
    let run = swept.run_id.unwrap();
    drop(store);

    except(
        &mut config,
        &user_name,
        now + Duration::days(3),
        "handover, HR-4711",
    );
    let approval = seatwarden::approval::approve(
        &config,
        &client,
        Store::open(&config.state.path).unwrap(),
        run,
        &seatwarden::approval::Only::All,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(active(&sandbox, &person), "{approval:?}");
    assert!(
        approval
            .refused
            .iter()
            .any(|(_, why)| why.contains("kept by an exception (safety.exceptions)")),
        "{approval:?}"
    );
    sandbox.shutdown().await;
}
