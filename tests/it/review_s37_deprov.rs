//! Session 37: an adversarial review of same-day deprovisioning, as a security
//! engineer auditing the tool does it — someone who keeps access longer than the
//! ledger says, a miss nobody is told about. Each scenario in-process, against the
//! sandbox, with time passed in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::model::AccountSpec;
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "review-s37-token";

/// Failed writes give up at once: the scenarios fail them on purpose.
const QUICK_RETRIES: &[(&str, &str)] = &[
    ("SEATWARDEN__WORKSPACE__RETRIES", "1"),
    ("SEATWARDEN__WORKSPACE__RETRY_DELAY", "10ms"),
];

/// The demo after one reconcile (everyone linked), in a fresh directory, with
/// `more` configuration overrides.
async fn reconciled_demo(more: &[(&str, &str)]) -> (Sandbox, tempfile::TempDir, Config) {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, more);
    crate::fixtures::reconcile(&config).await;
    (sandbox, dir, config)
}

fn shared_store(config: &Config) -> Arc<Mutex<Store>> {
    Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()))
}

/// Edits the directory file's person `id` (added if absent) with `edit`.
fn edit_person(dir: &Path, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let users = full["users"].as_array_mut().unwrap();
    let at = match users.iter().position(|u| u["id"] == id) {
        Some(at) => at,
        None => {
            users.push(serde_json::json!({ "id": id }));
            users.len() - 1
        }
    };
    edit(&mut users[at]);
    std::fs::write(&path, full.to_string()).unwrap();
}

/// Nia: in the directory (active, in scope), with her own account (externalId =
/// her id), linked by a reconcile, then a second one under another userName with
/// her email: a duplicate. Returns (own, duplicate) ids.
async fn nia_with_a_duplicate(
    dir: &Path,
    config: &Config,
    client: &ScimClient,
) -> (String, String) {
    edit_person(dir, "00u9990", |user| {
        *user = serde_json::json!({
            "id": "00u9990",
            "userName": "nia@example.com",
            "email": "nia@example.com",
            "givenName": "Nia",
            "familyName": "Duplicate",
            "status": "active",
            "groups": ["Taskade Users"],
        });
    });
    let spec = |user_name: &str, external_id: &str| AccountSpec {
        user_name: user_name.into(),
        external_id: external_id.into(),
        given_name: Some("Nia".into()),
        family_name: Some("Duplicate".into()),
        display_name: None,
        email: Some("nia@example.com".into()),
        role: None,
    };
    let own = client
        .create_account(&spec("nia@example.com", "00u9990"))
        .await
        .unwrap();
    crate::fixtures::reconcile(config).await;
    let duplicate = client
        .create_account(&spec("nia.alias@example.com", "legacy-nia"))
        .await
        .unwrap();
    (own.id, duplicate.id)
}

fn is_active(sandbox: &Sandbox, account: &str) -> bool {
    sandbox
        .snapshot()
        .accounts
        .iter()
        .any(|a| a.id == account && a.active)
}

/// A leaver with a second (duplicate) account: the sweep deactivates the linked
/// one; the reconcile's deactivation of the duplicate fails. She still has
/// access, so her episode must not stand verified: it is open again, on the
/// duplicate, overdue once her due time passed, escalated, and the retry job
/// deactivates the duplicate once the workspace takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leavers_duplicate_left_active_keeps_her_episode_open_and_escalated() {
    let (sandbox, dir, config) = reconciled_demo(QUICK_RETRIES).await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (own, duplicate) = nia_with_a_duplicate(dir.path(), &config, &client).await;
    let reported = crate::fixtures::reconcile(&config).await;
    assert!(
        reported
            .report
            .drift
            .iter()
            .any(|d| d.detail.starts_with("duplicate account")),
        "{:#?}",
        reported.report.drift
    );
    let store = shared_store(&config);
    let links = store.lock().unwrap().links().unwrap();
    assert!(
        links
            .iter()
            .any(|l| l.identity_id == "00u9990" && l.account_id == own),
        "{links:?}"
    );
    assert!(is_active(&sandbox, &duplicate));

    edit_person(dir.path(), "00u9990", |user| {
        user["status"] = "suspended".into()
    });
    let hour = Duration::hours(1);
    let t0 = Utc::now();
    let directory = config.sweep_directory();
    let swept = seatwarden::sweep::sweep(&config, &directory, &client, &store, t0, hour)
        .await
        .unwrap();
    assert_eq!(swept.enforced, 1, "{swept:?}");
    assert!(!is_active(&sandbox, &own));
    assert!(
        is_active(&sandbox, &duplicate),
        "the sweep knows only the link"
    );

    // The reconcile plans the duplicate's deactivation; the workspace fails it.
    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let outcome = crate::fixtures::reconcile(&config).await;
    let failed: Vec<(&str, &str)> = outcome
        .report
        .actions
        .iter()
        .map(|a| (a.subject.as_str(), a.outcome.as_str()))
        .filter(|(subject, _)| *subject == "nia.alias@example.com")
        .collect();
    assert_eq!(
        failed,
        [("nia.alias@example.com", "failed")],
        "{outcome:#?}"
    );
    assert!(is_active(&sandbox, &duplicate));

    let later = t0 + hour + Duration::minutes(1);
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let nia: Vec<_> = open.iter().filter(|e| e.identity_id == "00u9990").collect();
    assert_eq!(nia.len(), 1, "she still has access: {open:#?}");
    assert_eq!(nia[0].account_id.as_deref(), Some(duplicate.as_str()));
    assert_eq!(nia[0].state(later), seatwarden::sla::EntryState::Overdue);

    // The retry job, past her due time, with the workspace still failing writes:
    // escalated.
    let retried = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert!(
        retried.escalated.iter().any(|e| e.identity_id == "00u9990"),
        "{retried:?}"
    );
    // And once the workspace takes writes, the duplicate goes and the episode ends.
    sandbox.set_faults(Faults::default());
    let after = later + Duration::minutes(20);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, after)
        .await
        .unwrap();
    assert_eq!(retried.enforced, 1, "{retried:?}");
    assert!(!is_active(&sandbox, &duplicate));
    let history = store
        .lock()
        .unwrap()
        .deprovision_history("00u9990", 5)
        .unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert!(history[0].verified_at.is_some(), "{history:#?}");
    sandbox.shutdown().await;
}

/// A configuration writing to the mock `workspace` (file directory, never read
/// here), and its state database.
fn against_mock(
    workspace: &wiremock::MockServer,
) -> (tempfile::TempDir, Config, Arc<Mutex<Store>>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t\"\n",
            workspace.uri()
        ),
    )
    .unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(std::collections::HashMap::new()),
    )
    .unwrap();
    let store = shared_store(&config);
    (dir, config, store)
}

/// The workspace answers 200 to every deactivation of Bo, yet every read shows
/// the account active (a provider that ignores `active`, or a push that turns it
/// back on). The pass must not count it done: it fails, the episode stays open
/// with the verification's error, is tried again after its back-off (not before),
/// and once past its due time it is escalated, once.
#[tokio::test]
async fn a_deactivation_answered_200_that_does_not_hold_is_retried_and_escalated() {
    use seatwarden::sla::{self, EntryState, Leaver, LossReason};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let bo = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "bo", "userName": "bo@example.com", "active": true,
    });
    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/bo"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&bo))
        .mount(&workspace)
        .await;
    let mut claimed = bo.clone();
    claimed["active"] = false.into();
    Mock::given(method("PATCH"))
        .and(path("/Users/bo"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&claimed))
        .expect(2)
        .mount(&workspace)
        .await;

    let (_dir, config, store) = against_mock(&workspace);
    let hour = Duration::hours(1);
    let detected = Utc::now();
    let opened = sla::observe(
        &[],
        &[Leaver {
            identity_id: "id-bo".into(),
            account_id: Some("bo".into()),
            user_name: "bo@example.com".into(),
            reason: LossReason::Suspended,
        }],
        &[],
        detected,
        hour,
    );
    store
        .lock()
        .unwrap()
        .update_ledger(&opened, detected)
        .unwrap();
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(1);
    let client = ScimClient::new(settings).unwrap();

    let first = seatwarden::sweep::enforce(&config, &client, &store, detected)
        .await
        .unwrap();
    assert_eq!((first.enforced, first.failed), (0, 1), "{first:?}");
    let error = first.checked().unwrap_err().to_string();
    assert!(error.contains("bo@example.com"), "{error}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    assert_eq!(open.len(), 1, "{open:#?}");
    let episode = open[0].clone();
    assert_eq!(episode.attempts, 1, "{episode:?}");
    assert!(
        episode
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not verified")),
        "{episode:?}"
    );
    let next = episode.next_attempt_at.unwrap();
    assert!(next > detected, "{episode:?}");

    // Before its back-off is over nothing is sent (the mock expects two PATCHes).
    let waiting = seatwarden::sweep::enforce(&config, &client, &store, next - Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(waiting.run_id, None, "{waiting:?}");

    // Past its due time: tried again, still not done, escalated once.
    let late = detected + hour + Duration::minutes(1);
    assert!(late > next);
    let second = seatwarden::sweep::enforce(&config, &client, &store, late)
        .await
        .unwrap();
    assert_eq!(second.failed, 1, "{second:?}");
    let escalated: Vec<&str> = second
        .escalated
        .iter()
        .map(|e| e.identity_id.as_str())
        .collect();
    assert_eq!(escalated, ["id-bo"], "{second:?}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    assert_eq!(open[0].state(late), EntryState::Overdue);
    assert_eq!(open[0].attempts, 2, "{open:#?}");
    assert!(open[0].escalated_at.is_some());
    // A later pass (its back-off not over) escalates it no more.
    let again = seatwarden::sweep::enforce(&config, &client, &store, late + Duration::seconds(1))
        .await
        .unwrap();
    assert!(again.escalated.is_empty(), "{again:?}");
}

/// An account spec for `user_name` naming `external_id`.
fn spec(user_name: &str, external_id: &str) -> AccountSpec {
    AccountSpec {
        user_name: user_name.into(),
        external_id: external_id.into(),
        given_name: Some("Some".into()),
        family_name: Some("One".into()),
        display_name: None,
        email: Some(user_name.into()),
        role: None,
    }
}

/// Nia's linked account was deleted and made again under the same userName and
/// her directory id as externalId (an IdP's push re-creating it, an admin
/// repairing it): a new id the link does not know. She then leaves. The sweep
/// reads her linked account as gone — but she is not without access: the
/// account that is hers by externalId is deactivated, and the episode verified
/// only then, on that account. Ona's account was made again too, for a new hire
/// given her address (another externalId): hers is gone, the new hire's stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leavers_account_made_again_under_a_new_id_is_deactivated_not_taken_for_gone() {
    let (sandbox, dir, config) = reconciled_demo(&[]).await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    edit_person(dir.path(), "00u9991", |user| {
        *user = serde_json::json!({
            "id": "00u9991", "userName": "ona@example.com", "email": "ona@example.com",
            "status": "active", "groups": ["Taskade Users"],
        });
    });
    let ona = client
        .create_account(&spec("ona@example.com", "00u9991"))
        .await
        .unwrap();
    let (own, duplicate) = nia_with_a_duplicate(dir.path(), &config, &client).await;
    // Only her own account matters here.
    client.delete_account(&duplicate).await.unwrap();
    client.delete_account(&own).await.unwrap();
    client.delete_account(&ona.id).await.unwrap();
    let again = client
        .create_account(&spec("nia@example.com", "00u9990"))
        .await
        .unwrap();
    let new_hire = client
        .create_account(&spec("ona@example.com", "new-hire-7"))
        .await
        .unwrap();
    let store = shared_store(&config);
    let links = store.lock().unwrap().links().unwrap();
    for (person, account) in [("00u9990", &own), ("00u9991", &ona.id)] {
        assert!(
            links
                .iter()
                .any(|l| l.identity_id == person && &l.account_id == account),
            "{links:?}"
        );
    }

    for person in ["00u9990", "00u9991"] {
        edit_person(dir.path(), person, |user| {
            user["status"] = "suspended".into()
        });
    }
    let t0 = Utc::now();
    let directory = config.sweep_directory();
    let swept =
        seatwarden::sweep::sweep(&config, &directory, &client, &store, t0, Duration::hours(1))
            .await
            .unwrap();
    assert!(!is_active(&sandbox, &again.id), "{swept:?}");
    assert!(is_active(&sandbox, &new_hire.id), "{swept:?}");
    assert_eq!(swept.enforced, 1, "{swept:?}");
    let history = store
        .lock()
        .unwrap()
        .deprovision_history("00u9990", 5)
        .unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].account_id.as_deref(), Some(again.id.as_str()));
    assert!(history[0].verified_at.is_some() && history[0].enforced_at.is_some());
    let history = store
        .lock()
        .unwrap()
        .deprovision_history("00u9991", 5)
        .unwrap();
    assert_eq!(history[0].account_id.as_deref(), Some(ona.id.as_str()));
    assert!(history[0].found_without_access(), "{history:#?}");
    sandbox.shutdown().await;
}

/// A workspace that refuses filters (400 invalidFilter, as some providers do)
/// cannot say whether another account names a leaver whose linked account reads
/// as gone: the listing page that answers confirms it gone, as before the
/// question was asked, and the episode ends instead of failing at every pass.
#[tokio::test]
async fn a_gone_account_on_a_workspace_that_refuses_filters_is_still_gone() {
    use seatwarden::sla::{self, Leaver, LossReason};
    use wiremock::matchers::{method, path, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param_is_missing("filter"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": [],
        })))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "invalidFilter", "detail": "no filters here",
        })))
        .mount(&workspace)
        .await;

    let (_dir, config, store) = against_mock(&workspace);
    let detected = Utc::now() - Duration::minutes(10);
    let opened = sla::observe(
        &[],
        &[Leaver {
            identity_id: "id-gone".into(),
            account_id: Some("gone".into()),
            user_name: "gone@example.com".into(),
            reason: LossReason::Deprovisioned,
        }],
        &[],
        detected,
        Duration::hours(1),
    );
    store
        .lock()
        .unwrap()
        .update_ledger(&opened, detected)
        .unwrap();
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(1);
    let client = ScimClient::new(settings).unwrap();
    let outcome = seatwarden::sweep::enforce(&config, &client, &store, Utc::now())
        .await
        .unwrap()
        .checked()
        .unwrap();
    assert_eq!(
        (outcome.already_done, outcome.failed),
        (1, 0),
        "{outcome:?}"
    );
    assert!(
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .is_empty()
    );
}

/// The circuit breaker opened with a three-hour cool-down (the workspace failed
/// most writes), and then Ada left. Nothing is sent while it is open, and her
/// next attempt waits for the cool-down — but her deprovision is overdue an hour
/// after it was seen, and escalated then by the retry job, not three hours later
/// when it is next tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_kept_back_by_an_open_breaker_is_escalated_at_her_due_time() {
    let (sandbox, dir, config) =
        reconciled_demo(&[("SEATWARDEN__SAFETY__CIRCUIT__COOL_DOWN", "3h")]).await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = shared_store(&config);
    let t0 = Utc::now();
    store
        .lock()
        .unwrap()
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(t0),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    // Ada: the demo's first active person whose account is active.
    let workspace = sandbox.snapshot();
    let ada = workspace
        .accounts
        .iter()
        .find(|a| a.active && !a.roles.iter().any(|r| r == "Owner"))
        .and_then(|a| a.external_id.clone())
        .unwrap();
    edit_person(dir.path(), &ada, |user| user["status"] = "suspended".into());
    let directory = config.sweep_directory();
    let hour = Duration::hours(1);
    let swept = seatwarden::sweep::sweep(&config, &directory, &client, &store, t0, hour)
        .await
        .unwrap();
    assert_eq!((swept.not_sent, swept.enforced), (1, 0), "{swept:?}");
    let episode = store
        .lock()
        .unwrap()
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == ada)
        .unwrap();
    let next = episode.next_attempt_at.unwrap();
    assert!(next >= t0 + Duration::hours(3), "{episode:?}");

    let writes = sandbox.stats().writes;
    let late = t0 + hour + Duration::minutes(1);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, late)
        .await
        .unwrap();
    assert_eq!(sandbox.stats().writes, writes, "nothing sent: {retried:?}");
    let escalated: Vec<&str> = retried
        .escalated
        .iter()
        .map(|e| e.identity_id.as_str())
        .collect();
    assert_eq!(escalated, [ada.as_str()], "{retried:?}");
    sandbox.shutdown().await;
}

/// Ada is suspended, and the workspace fails the deactivation; within the hour
/// she is active again in the directory (a mistaken suspension undone). The next
/// sweep ends her episode, cancelled, so it is neither escalated nor retried
/// once her due time passes — and her account, never deactivated, stays active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_back_before_her_due_time_is_cancelled_not_escalated() {
    let (sandbox, dir, config) = reconciled_demo(QUICK_RETRIES).await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = shared_store(&config);
    let workspace = sandbox.snapshot();
    let account = workspace
        .accounts
        .iter()
        .find(|a| a.active && !a.roles.iter().any(|r| r == "Owner"))
        .unwrap()
        .clone();
    let ada = account.external_id.clone().unwrap();
    let directory = config.sweep_directory();
    let hour = Duration::hours(1);
    let t0 = Utc::now();

    edit_person(dir.path(), &ada, |user| user["status"] = "suspended".into());
    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let swept = seatwarden::sweep::sweep(&config, &directory, &client, &store, t0, hour)
        .await
        .unwrap();
    assert_eq!(swept.failed, 1, "{swept:?}");

    edit_person(dir.path(), &ada, |user| user["status"] = "active".into());
    sandbox.set_faults(Faults::default());
    let back = t0 + Duration::minutes(20);
    let swept = seatwarden::sweep::sweep(&config, &directory, &client, &store, back, hour)
        .await
        .unwrap();
    assert_eq!((swept.cancelled, swept.enforced), (1, 0), "{swept:?}");

    let late = t0 + hour + Duration::minutes(5);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, late)
        .await
        .unwrap();
    assert!(retried.escalated.is_empty(), "{retried:?}");
    assert_eq!(retried.run_id, None, "nothing planned: {retried:?}");
    assert!(is_active(&sandbox, &account.id));
    let history = store.lock().unwrap().deprovision_history(&ada, 5).unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(
        history[0].state(late),
        seatwarden::sla::EntryState::Cancelled
    );
    sandbox.shutdown().await;
}

/// Ada's account names a colleague by externalId, so the sweep holds her
/// deprovision ("disputed link"). An admin puts her own id back; the next pass
/// is no longer held, but the workspace fails the write. Her episode must then
/// say what stops it now — the failure — not the hold that is over, whose advice
/// (`link … --replace`) would hand her account to the colleague.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_is_over_is_not_shown_once_the_write_fails() {
    use seatwarden::model::{Attribute, AttributeChange};

    let (sandbox, dir, config) = reconciled_demo(QUICK_RETRIES).await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = shared_store(&config);
    let workspace = sandbox.snapshot();
    let mut active = workspace
        .accounts
        .iter()
        .filter(|a| a.active && !a.roles.iter().any(|r| r == "Owner"));
    let account = active.next().unwrap().clone();
    let colleague = active.next().unwrap().external_id.clone().unwrap();
    let ada = account.external_id.clone().unwrap();
    let set_external_id = |from: &str, to: &str| AttributeChange {
        attribute: Attribute::ExternalId,
        from: Some(from.to_owned()),
        to: Some(to.to_owned()),
    };
    client
        .update_attributes(&account.id, &[set_external_id(&ada, &colleague)])
        .await
        .unwrap();
    edit_person(dir.path(), &ada, |user| user["status"] = "suspended".into());
    let directory = config.sweep_directory();
    let t0 = Utc::now();
    let hour = Duration::hours(1);
    let swept = seatwarden::sweep::sweep(&config, &directory, &client, &store, t0, hour)
        .await
        .unwrap();
    assert_eq!(swept.held, 1, "{swept:?}");
    let episode = |store: &Arc<Mutex<Store>>| {
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .into_iter()
            .find(|e| e.identity_id == ada)
            .unwrap()
    };
    let held = episode(&store);
    assert!(
        held.held
            .as_deref()
            .is_some_and(|h| h.starts_with(seatwarden::sweep::CONTRADICTED_LINK_HOLD)),
        "{held:?}"
    );

    client
        .update_attributes(&account.id, &[set_external_id(&colleague, &ada)])
        .await
        .unwrap();
    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let later = held.next_attempt_at.unwrap();
    let retried = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!((retried.held, retried.failed), (0, 1), "{retried:?}");
    let failing = episode(&store);
    assert_eq!(failing.held, None, "{failing:?}");
    assert!(
        failing
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{failing:?}"
    );
    sandbox.shutdown().await;
}
