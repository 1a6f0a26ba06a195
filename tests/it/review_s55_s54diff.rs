//! Review of session 54's changes (session 55): what the sweep does for a
//! person deleted from the directory, by the name their ledger episode keeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use seatwarden::sla::{Leaver, LossReason};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::reconciled_demo;
use crate::review_s51_exceptions::{episode, except};

/// A person deleted from the directory whose directory userName, the one
/// their open episode keeps, is protected and named by an exception in force.
/// Deleted, they have lost permanent protection: the reconcile keeps their
/// account by the exception alone, listed as excepted, until its end
/// (`Protected::exception_for_departed`). The sweep's retry held it as
/// protected instead (the exception lookup skips a protected name), so the
/// episode stayed due at its SLA and was escalated as overdue while the
/// exception kept the account; and its end looked like the exception's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_puts_off_a_deleted_protected_and_excepted_persons_deprovision() {
    let (sandbox, _dir, mut config) = reconciled_demo().await;
    let mut store = Store::open(&config.state.path).unwrap();
    let workspace = sandbox.snapshot();
    let (identity, account) = store
        .links()
        .unwrap()
        .into_iter()
        .find_map(|l| {
            workspace
                .accounts
                .iter()
                .find(|a| a.id == l.account_id && a.active && !a.is_owner())
                .map(|a| (l.identity_id.clone(), a.clone()))
        })
        .unwrap();
    let name = "gone.person@example.com";
    assert_ne!(account.user_name, name);
    let now = DateTime::from_timestamp(Utc::now().timestamp() + 30 * 86_400, 0).unwrap();
    let leaver = Leaver {
        identity_id: identity.clone(),
        account_id: Some(account.id.clone()),
        user_name: name.to_owned(),
        reason: LossReason::Deleted,
    };
    let changes = seatwarden::sla::observe(&[], &[leaver], &[], now, Duration::hours(1));
    store.update_ledger(&changes, now).unwrap();
    let until = now + Duration::days(3);
    config.safety.protected = vec![name.to_owned()];
    except(&mut config, name, until, "legal hold, LEGAL-7");
    let store = Arc::new(Mutex::new(store));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();

    let retried = seatwarden::sweep::enforce(&config, &client, &store, now + Duration::minutes(5))
        .await
        .unwrap();
    let kept = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .any(|a| a.id == account.id && a.active);
    assert!(kept, "{retried:?}");
    assert_eq!((retried.excepted, retried.held), (1, 0), "{retried:?}");
    let put_off = episode(&store, &identity);
    assert_eq!(put_off.excepted_until, Some(until), "{put_off:?}");
    assert!(put_off.due_at > until, "{put_off:?}");

    // Looked at again while the exception lasts: it still keeps the account
    // (not taken for an exception taken out, made due at once).
    let later = now + seatwarden::sweep::HOLD_RECHECK + Duration::minutes(10);
    let again = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!((again.excepted, again.enforced), (1, 0), "{again:?}");
    let still = episode(&store, &identity);
    assert_eq!(still.excepted_until, Some(until), "{still:?}");
    assert_eq!(still.due_at, put_off.due_at, "{still:?}");
    sandbox.shutdown().await;
}
