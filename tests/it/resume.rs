//! Crash safety: a run that died after sending a create (journal row left
//! `in_flight`) is resolved by the next run, which re-reads the workspace, links the
//! account the create made, and never sends the create again. Also the writes that
//! cannot be undone: a retention delete checks the account it is about to delete.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use seatwarden::config::Config;
use seatwarden::model::{AccountSpec, Action, ActionKind, DriftKind, Plan, Role};
use seatwarden::run::{self, Mode};
use seatwarden::store::{ActionState, RunKind, RunStatus, Store};

fn scim(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(body)
}

fn ada_account() -> serde_json::Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "acc-1",
        "userName": "ada@example.com",
        "externalId": "00u1",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "displayName": "Ada Lovelace",
        "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
        "active": true,
        "roles": [{"value": "Viewer", "primary": true}]
    })
}

fn list(resources: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources
    })
}

/// A workspace without `/ServiceProviderConfig` listing `users` and `groups`.
async fn mount_listings(
    server: &MockServer,
    users: Vec<serde_json::Value>,
    groups: Vec<serde_json::Value>,
) {
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(list(users)))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(list(groups)))
        .mount(server)
        .await;
}

/// Answers `POST /Users` 409 uniqueness ("userName taken"), expected `times` times.
async fn user_name_taken(server: &MockServer, times: impl Into<wiremock::Times>) {
    Mock::given(method("POST"))
        .and(path("/Users"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "409", "scimType": "uniqueness", "detail": "userName taken"
        })))
        .expect(times)
        .mount(server)
        .await;
}

/// A directory with Ada (active, in scope) and a config pointing at `server`.
/// Action `seq`: create an account `user_name` for `identity`.
fn create_action(seq: u32, identity: &str, user_name: &str) -> Action {
    Action {
        seq,
        kind: ActionKind::CreateAccount {
            identity_id: identity.into(),
            spec: AccountSpec {
                user_name: user_name.into(),
                external_id: identity.into(),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                role: None,
            },
        },
        reason: DriftKind::MissingAccount,
        subject: user_name.into(),
        identity_id: Some(identity.into()),
        detail: String::new(),
        held: None,
    }
}

fn config_for(server: &MockServer, dir: &std::path::Path) -> Config {
    crate::fixtures::ada_config(&server.uri(), dir, "active")
}

/// Journals a create of Ada's account and leaves it `in_flight`, as a process
/// that died right after sending it would. Returns that run's id.
fn crashed_create(config: &Config) -> i64 {
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
    let plan = Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::CreateAccount {
                identity_id: "00u1".into(),
                spec: AccountSpec {
                    user_name: "ada@example.com".into(),
                    external_id: "00u1".into(),
                    given_name: Some("Ada".into()),
                    family_name: Some("Lovelace".into()),
                    display_name: Some("Ada Lovelace".into()),
                    email: Some("ada@example.com".into()),
                    role: Some(Role::Viewer),
                },
            },
            reason: DriftKind::MissingAccount,
            subject: "ada@example.com".into(),
            identity_id: Some("00u1".into()),
            detail: "in scope, no account".into(),
            held: None,
        }],
        drift: vec![],
        new_links: vec![],
        retained: vec![],
        disputed_leavers: vec![],
        protected_by_person: vec![],
        excepted: vec![],
        protected_leavers: vec![],
        disputed_candidates: vec![],
    };
    store.save_plan(run, &plan, Utc::now()).unwrap();
    store.mark_in_flight(run, 0, Utc::now()).unwrap();
    run
}

#[tokio::test]
async fn an_interrupted_create_is_linked_not_sent_twice() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(scim(list(vec![ada_account()])))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(list(vec![ada_account()])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(list(vec![])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let crashed_run = crashed_create(&config);
    // A `plan` run by hand holds no writer lock: one still running may be real.
    let plan_run = Store::open(&config.state.path)
        .unwrap()
        .begin_run(RunKind::Plan, Utc::now())
        .unwrap();

    let store = Store::open(&config.state.path).unwrap();
    let outcome = run::execute(&config, store, Mode::Reconcile).await.unwrap();
    assert_eq!(outcome.report.summary.recovered, 1);
    assert!(
        outcome.plan.is_empty(),
        "nothing left to do: {:?}",
        outcome.plan.actions
    );

    let store = Store::open(&config.state.path).unwrap();
    // The crashed run is closed (so it can be pruned, and reads as what it was).
    let crashed = store.run(crashed_run).unwrap().unwrap();
    assert_eq!(crashed.status, RunStatus::Failed);
    assert!(
        crashed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted")),
        "{crashed:?}"
    );
    assert_eq!(
        store.run(plan_run).unwrap().unwrap().status,
        RunStatus::Running
    );
    let journal = store.journal(crashed_run).unwrap();
    assert_eq!(journal[0].state, ActionState::Applied);
    let links = store.links().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].identity_id, "00u1");
    assert_eq!(links[0].account_id, "acc-1");
    // `expect(0)` on POST is checked when the server drops.
}

/// A lookup that fails (503 after the retries) says nothing about whether the
/// interrupted create arrived: the row stays in flight, not failed, and the next
/// recovery, whose lookup answers, links it as applied.
#[tokio::test]
async fn an_interrupted_create_whose_lookup_fails_stays_in_flight() {
    let server = MockServer::start().await;
    let mount = |lookup: ResponseTemplate| {
        let server = &server;
        async move {
            Mock::given(method("GET"))
                .and(path("/Users"))
                .and(query_param("filter", "userName eq \"ada@example.com\""))
                .respond_with(lookup)
                .with_priority(1)
                .mount(server)
                .await;
            Mock::given(method("GET"))
                .and(path("/ServiceProviderConfig"))
                .respond_with(ResponseTemplate::new(404))
                .mount(server)
                .await;
            Mock::given(method("GET"))
                .and(path("/Users"))
                .respond_with(scim(list(vec![ada_account()])))
                .mount(server)
                .await;
            Mock::given(method("GET"))
                .and(path("/Groups"))
                .respond_with(scim(list(vec![])))
                .mount(server)
                .await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(500))
                .expect(0)
                .mount(server)
                .await;
        }
    };
    mount(ResponseTemplate::new(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let crashed_run = crashed_create(&config);
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(2);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();
    let directory = run::directory_from_config(&config);
    let reconcile = |store| {
        run::execute_with_options(
            &config,
            &directory,
            &client,
            store,
            Mode::Reconcile,
            run::RunOptions::default(),
        )
    };

    let outcome = reconcile(Store::open(&config.state.path).unwrap())
        .await
        .unwrap();
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(crashed_run)
        .unwrap();
    assert_eq!(journal[0].state, ActionState::InFlight, "{journal:?}");
    assert_eq!(outcome.report.summary.recovered, 0);

    server.reset().await;
    mount(scim(list(vec![ada_account()]))).await;
    let outcome = reconcile(Store::open(&config.state.path).unwrap())
        .await
        .unwrap();
    assert_eq!(outcome.report.summary.recovered, 1);
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(crashed_run)
        .unwrap();
    assert_eq!(journal[0].state, ActionState::Applied, "{journal:?}");
}

/// A lookup refused for good (403) would be refused at every recovery: the row is
/// failed with the reason rather than left in flight forever.
#[tokio::test]
async fn an_interrupted_create_whose_lookup_is_refused_for_good_is_failed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(ResponseTemplate::new(403))
        .with_priority(1)
        .mount(&server)
        .await;
    mount_listings(&server, vec![ada_account()], vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let crashed_run = crashed_create(&config);
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = std::sync::Mutex::new(Store::open(&config.state.path).unwrap());
    let recovered =
        seatwarden::apply::recover(&client, &store, seatwarden::model::DEFAULT_ADMIN_COMMAND)
            .await
            .unwrap();
    assert_eq!(recovered.resolved, 1);
    let journal = store.lock().unwrap().journal(crashed_run).unwrap();
    assert_eq!(journal[0].state, ActionState::Failed, "{journal:?}");
    let error = journal[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("403"), "{error}");
}

#[tokio::test]
async fn an_interrupted_create_that_never_arrived_is_marked_failed_and_redone() {
    let server = MockServer::start().await;
    mount_listings(&server, vec![], vec![]).await;
    Mock::given(method("POST"))
        .and(path("/Users"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("content-type", "application/scim+json")
                .set_body_json(ada_account()),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/acc-1"))
        .respond_with(scim(ada_account()))
        .mount(&server)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let crashed_run = crashed_create(&config);

    let store = Store::open(&config.state.path).unwrap();
    let outcome = run::execute(&config, store, Mode::Reconcile).await.unwrap();
    assert_eq!(outcome.report.summary.recovered, 1);
    assert_eq!(
        outcome.report.summary.actions_applied, 1,
        "{:?}",
        outcome.report.actions
    );
    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(
        store.journal(crashed_run).unwrap()[0].state,
        ActionState::Failed
    );
    assert_eq!(store.links().unwrap()[0].account_id, "acc-1");
}

/// A deactivation left `in_flight` by a crash is done if its account is inactive
/// or gone. A workspace URL that answers 404 to everything (a wrong path after a
/// configuration change) says "gone" about every account: the run fails before
/// resolving anything, and the deactivation stays in flight for a run that can
/// see the workspace.
#[tokio::test]
async fn an_interrupted_deactivation_is_not_resolved_by_a_workspace_that_answers_404_to_everything()
{
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("Not Found"))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let run = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: "acc-1".into(),
                },
                reason: DriftKind::StaleAccess,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: "left the company".into(),
                held: None,
            }],
            drift: vec![],
            new_links: vec![],
            retained: vec![],
            disputed_leavers: vec![],
            protected_by_person: vec![],
            excepted: vec![],
            protected_leavers: vec![],
            disputed_candidates: vec![],
        };
        store.save_plan(run, &plan, Utc::now()).unwrap();
        store.mark_in_flight(run, 0, Utc::now()).unwrap();
        run
    };

    let store = Store::open(&config.state.path).unwrap();
    let err = run::execute(&config, store, Mode::Reconcile)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GET /Users?startIndex=1&count=1: HTTP 404"),
        "{err}"
    );
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(run)
        .unwrap();
    assert_eq!(journal[0].state, ActionState::InFlight);
}

/// The directory file in `dir` with Ada deprovisioned: her active account is to
/// be deactivated.
fn ada_left(dir: &std::path::Path) {
    std::fs::write(
        dir.join("directory.json"),
        json!({"users": [{
            "id": "00u1", "userName": "ada@example.com", "email": "ada@example.com",
            "status": "deprovisioned", "groups": []
        }]})
        .to_string(),
    )
    .unwrap();
}

/// An empty in-process workspace and a directory for the files of a run on it.
async fn empty_sandbox() -> (seatwarden::sandbox::Sandbox, tempfile::TempDir) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = seatwarden::sandbox::Sandbox::start(
        listener,
        seatwarden::sandbox::SandboxOptions {
            token: "t0ken".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    (sandbox, tempfile::tempdir().unwrap())
}

/// A configuration in `dir` reading `directory.json` there and writing to
/// `sandbox`, with no settle window.
fn sandbox_config(sandbox: &seatwarden::sandbox::Sandbox, dir: &std::path::Path) -> Config {
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n\n[safety]\nsettle = \"0s\"\n",
            sandbox.base_url()
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

async fn reconcile(config: &Config) -> run::RunOutcome {
    run::execute(
        config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap()
}

/// A directory of one person, `id`, with Ada's userName.
fn write_directory(dir: &std::path::Path, id: &str, given_name: &str) {
    std::fs::write(
        dir.join("directory.json"),
        json!({"users": [{
            "id": id, "userName": "ada@example.com", "email": "ada@example.com",
            "givenName": given_name, "familyName": "Lovelace", "status": "active", "groups": []
        }]})
        .to_string(),
    )
    .unwrap();
}

/// Journals a deprovision of Ada's account, `kind`, in a reconcile run and leaves
/// it `in_flight`, as a reconcile that died after sending it would (before it
/// recorded anything in the ledger). Returns that run's id.
fn crashed_deprovision(config: &Config, kind: ActionKind) -> i64 {
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
    let plan = Plan {
        actions: vec![Action {
            seq: 0,
            kind,
            reason: DriftKind::StaleAccess,
            subject: "ada@example.com".into(),
            identity_id: Some("00u1".into()),
            detail: "identity is deprovisioned in the directory".into(),
            held: None,
        }],
        ..Plan::default()
    };
    store.save_plan(run, &plan, Utc::now()).unwrap();
    store.mark_in_flight(run, 0, Utc::now()).unwrap();
    run
}

/// A reconcile that died after its deactivation reached the workspace never
/// recorded it in the same-day ledger. The next reconcile's recovery finds it
/// applied and records it as that run would have: verified, in Ada's history.
#[tokio::test]
async fn a_recovered_deactivation_is_verified_in_the_deprovision_history() {
    let (sandbox, dir) = empty_sandbox().await;
    write_directory(dir.path(), "00u1", "Ada");
    let config = sandbox_config(&sandbox, dir.path());
    reconcile(&config).await;
    let ada = sandbox.snapshot().accounts[0].clone();

    ada_left(dir.path());
    let crashed = crashed_deprovision(
        &config,
        ActionKind::Deactivate {
            account_id: ada.id.clone(),
        },
    );
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    client.set_active(&ada.id, false).await.unwrap();

    let outcome = reconcile(&config).await;
    assert_eq!(outcome.report.summary.recovered, 1);
    assert!(outcome.plan.is_empty(), "{:?}", outcome.plan.actions);
    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(
        store.journal(crashed).unwrap()[0].state,
        ActionState::Applied
    );
    let history = store.deprovision_history("00u1", 10).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(
        history[0].enforced_at.is_some() && history[0].verified_at.is_some(),
        "{history:?}"
    );
    assert!(store.open_deprovisions().unwrap().is_empty());
    sandbox.shutdown().await;
}

/// A recovered delete that reached the workspace loses its link, as a verified
/// one does in the run that sent it.
#[tokio::test]
async fn a_recovered_delete_forgets_the_link_to_the_deleted_account() {
    let (sandbox, dir) = empty_sandbox().await;
    write_directory(dir.path(), "00u1", "Ada");
    let config = sandbox_config(&sandbox, dir.path());
    reconcile(&config).await;
    let ada = sandbox.snapshot().accounts[0].clone();

    ada_left(dir.path());
    crashed_deprovision(
        &config,
        ActionKind::Delete {
            account_id: ada.id.clone(),
            deactivated_since: None,
            frees_user_name: None,
        },
    );
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    client.delete_account(&ada.id).await.unwrap();

    let outcome = reconcile(&config).await;
    assert_eq!(outcome.report.summary.recovered, 1);
    let store = Store::open(&config.state.path).unwrap();
    assert!(
        store
            .links()
            .unwrap()
            .iter()
            .all(|l| l.account_id != ada.id),
        "{:?}",
        store.links().unwrap()
    );
    let history = store.deprovision_history("00u1", 10).unwrap();
    assert!(history[0].verified_at.is_some(), "{history:?}");
    sandbox.shutdown().await;
}

/// Ada (00u1) left and her account was kept, deactivated, linked to her. A new
/// person (00u2) is given her userName. The plan sends no create bound to meet
/// 409 on it: the newcomer is reported, naming Ada's account. A create that meets
/// it all the same (sent by hand here, as one the account appeared before would
/// be), or a create a crash interrupted, finds that the account holding that
/// userName is Ada's: it must not be linked to the newcomer (the next run would
/// reactivate it, with Ada's projects).
#[tokio::test]
async fn a_user_name_given_again_never_inherits_the_earlier_persons_account() {
    let (sandbox, dir) = empty_sandbox().await;
    write_directory(dir.path(), "00u1", "Ada");
    let config = sandbox_config(&sandbox, dir.path());
    let reconcile = || reconcile(&config);
    crate::fixtures::assert_clean_reconcile(&reconcile().await.report);
    let ada = sandbox.snapshot().accounts[0].clone();
    let links = || {
        Store::open(&config.state.path)
            .unwrap()
            .links()
            .unwrap()
            .into_iter()
            .map(|l| (l.identity_id, l.account_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(links(), [("00u1".to_owned(), ada.id.clone())]);

    write_directory(dir.path(), "00u2", "Adah");
    let second = reconcile().await;
    assert_eq!(second.report.summary.actions_failed, 0);
    // Ada's account is deactivated (she left), which keeps her userName taken.
    assert!(
        second
            .plan
            .actions
            .iter()
            .all(|a| matches!(a.kind, ActionKind::Deactivate { .. })),
        "{:#?}",
        second.plan.actions
    );
    let newcomer = second
        .report
        .drift
        .iter()
        .find(|d| d.identity_id.as_deref() == Some("00u2"))
        .unwrap();
    assert!(
        newcomer.detail.starts_with(&format!(
            "not created: userName \"ada@example.com\" is already held by account {} (person \
             00u1)",
            ada.id
        )),
        "{newcomer:?}"
    );
    assert_eq!(links(), [("00u1".to_owned(), ada.id.clone())]);

    let newcomers_create = || {
        let mut plan = Plan::default();
        plan.actions.push(Action {
            seq: 0,
            kind: ActionKind::CreateAccount {
                identity_id: "00u2".into(),
                spec: AccountSpec {
                    user_name: "ada@example.com".into(),
                    external_id: "00u2".into(),
                    given_name: Some("Adah".into()),
                    family_name: Some("Lovelace".into()),
                    display_name: None,
                    email: Some("ada@example.com".into()),
                    role: Some(Role::Viewer),
                },
            },
            reason: DriftKind::MissingAccount,
            subject: "ada@example.com".into(),
            identity_id: Some("00u2".into()),
            detail: "in scope, no account".into(),
            held: None,
        });
        plan
    };
    // A crash right after the newcomer's create was sent: recovery finds Ada's
    // account by the userName and must not link it either.
    let crashed = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
        store
            .save_plan(run, &newcomers_create(), Utc::now())
            .unwrap();
        store.mark_in_flight(run, 0, Utc::now()).unwrap();
        run
    };
    let third = reconcile().await;
    assert_eq!(third.report.summary.recovered, 1);
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(crashed)
        .unwrap();
    assert_eq!(journal[0].state, ActionState::Failed);
    assert_eq!(links(), [("00u1".to_owned(), ada.id.clone())]);
    let account = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.id == ada.id)
        .unwrap();
    assert!(!account.active, "Ada's account stays deactivated");
    assert_eq!(account.external_id.as_deref(), Some("00u1"));

    // The create sent all the same meets 409, and the executor refuses the account.
    let (sent, plan) = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
        let plan = newcomers_create();
        store.save_plan(run, &plan, Utc::now()).unwrap();
        (run, plan)
    };
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    seatwarden::apply::apply(&client, &store, sent, &plan, 1, usize::MAX)
        .await
        .unwrap();
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(sent)
        .unwrap();
    assert_eq!(journal[0].state, ActionState::Failed);
    let failed = journal[0].last_error.clone().unwrap_or_default();
    assert!(
        failed.contains("409")
            && failed.contains("linked to identity 00u1")
            && failed.contains(&format!("rename or delete account {}", ada.id)),
        "{failed}"
    );
    assert_eq!(links(), [("00u1".to_owned(), ada.id.clone())]);
    sandbox.shutdown().await;
}

/// A create answered 409 while no account with its userName can be read over
/// SCIM (the account exists out of sight): the next run holds that create, for a
/// person to look, instead of sending it again on every run.
#[tokio::test]
async fn a_create_refused_by_an_account_out_of_sight_is_not_sent_again_and_again() {
    let server = MockServer::start().await;
    mount_listings(&server, vec![], vec![]).await;
    user_name_taken(&server, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let reconcile = || async {
        run::execute(
            &config,
            Store::open(&config.state.path).unwrap(),
            Mode::Reconcile,
        )
        .await
        .unwrap()
    };
    let first = reconcile().await;
    assert_eq!(first.report.summary.actions_failed, 1);
    let second = reconcile().await;
    assert_eq!(second.report.summary.actions_failed, 0);
    assert_eq!(second.report.summary.actions_held, 1);
    let held = &second.plan.actions[0];
    assert!(
        matches!(held.kind, ActionKind::CreateAccount { .. })
            && held.held == Some(seatwarden::model::HoldReason::OutOfSight),
        "{held:?}"
    );
    // `expect(1)` on POST is checked when the server drops.
}

/// One create the workspace refuses leaves its person's group memberships
/// undone too; those count as one failed write for the circuit breaker, not one
/// per group. With a window of four, counting them again opened the breaker on a
/// single refused account.
#[tokio::test]
async fn a_failed_create_counts_once_against_the_circuit_breaker() {
    let server = MockServer::start().await;
    let groups: Vec<serde_json::Value> = ["G1", "G2", "G3"]
        .iter()
        .map(|g| json!({"id": format!("id-{g}"), "displayName": g, "members": []}))
        .collect();
    mount_listings(&server, vec![], groups).await;
    Mock::given(method("POST"))
        .and(path("/Users"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "invalidValue", "detail": "userName rejected"
        })))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.json"),
        json!({"users": [{
            "id": "00u1", "userName": "ada@example.com", "email": "ada@example.com",
            "status": "active", "groups": ["G1", "G2", "G3"]
        }]})
        .to_string(),
    )
    .unwrap();
    let mut toml = format!(
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n\n\
         [safety]\nsettle = \"0s\"\n\n[safety.circuit]\nwindow = 4\nfailure_ratio = 0.5\n",
        server.uri()
    );
    for g in ["G1", "G2", "G3"] {
        toml.push_str(&format!(
            "\n[[policy.mapping]]\ngroup = \"{g}\"\nworkspace_group = \"{g}\"\nrole = \"Viewer\"\n"
        ));
    }
    std::fs::write(dir.path().join("seatwarden.toml"), toml).unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let outcome = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.report.summary.actions_failed, 4,
        "the create, three groups"
    );
    assert_eq!(outcome.report.safety.circuit, None, "one refused write");
}

/// A 404 to a deactivating PATCH is no proof the account is gone (a provider that
/// does not route PATCH, a gateway that passes only GET): the account is read,
/// and while it is there and active the deactivation has failed, never "done".
#[tokio::test]
async fn a_404_to_a_deactivation_is_checked_by_reading_the_account() {
    let server = MockServer::start().await;
    mount_listings(&server, vec![ada_account()], vec![]).await;
    Mock::given(method("GET"))
        .and(path("/Users/acc-1"))
        .respond_with(scim(ada_account()))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(404).set_body_string("Cannot PATCH /Users/acc-1"))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    ada_left(dir.path());

    let store = Store::open(&config.state.path).unwrap();
    let outcome = run::execute(&config, store, Mode::Reconcile).await.unwrap();
    let deactivation = outcome
        .plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::Deactivate { .. }))
        .unwrap();
    let store = Store::open(&config.state.path).unwrap();
    let row = store
        .journal(outcome.run_id)
        .unwrap()
        .into_iter()
        .find(|r| r.action.seq == deactivation.seq)
        .unwrap();
    assert_eq!(row.state, ActionState::Failed, "{row:?}");
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("still active"),
        "{row:?}"
    );
    assert_eq!(outcome.report.summary.actions_applied, 0);
}

/// The `/Users/{id}` route answers 404 for an account that exists (a proxy that
/// will not pass the id, a gateway that routes only the listing): the PATCH and
/// the read after it both 404. The account is looked for by its userName before
/// the deactivation counts, and found active: failed, never "done".
#[tokio::test]
async fn two_404s_by_id_do_not_make_an_active_account_gone() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    // A provider that refuses `id` filters: the read of its own, by the id route,
    // answers 404; a userName search finds the account.
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "id eq \"acc-1\""))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "invalidFilter",
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(scim(list(vec![ada_account()])))
        .with_priority(1)
        .mount(&server)
        .await;
    // The run's listing shows her; a listing after it (verification may re-list
    // rather than read one by one) leaves her out, as a page she slipped off would.
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(list(vec![ada_account()])))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(list(vec![])))
        .with_priority(3)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(list(vec![])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/acc-1"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    ada_left(dir.path());

    let store = Store::open(&config.state.path).unwrap();
    let outcome = run::execute(&config, store, Mode::Reconcile).await.unwrap();
    let deactivation = outcome
        .report
        .actions
        .iter()
        .find(|a| a.op == "deactivate")
        .unwrap();
    assert_eq!(deactivation.outcome.as_str(), "failed", "{deactivation:?}");
    assert!(
        deactivation
            .error
            .as_deref()
            .is_some_and(|e| e.contains("still active") && e.contains("search on /Users")),
        "{deactivation:?}"
    );
    let searched = server.received_requests().await.unwrap().iter().any(|r| {
        r.url
            .query_pairs()
            .any(|(k, v)| k == "filter" && v == "userName eq \"ada@example.com\"")
    });
    assert!(searched);
}

/// A deletion after the retention period is planned from the listing; an admin
/// re-enabled the account after that listing was read. The delete reads the
/// account first and leaves it alone: a deletion cannot be undone.
#[tokio::test]
async fn a_retention_delete_leaves_an_account_re_enabled_since_the_listing() {
    let server = MockServer::start().await;
    let bob = |active: bool| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "acc-2", "userName": "bob@example.com", "externalId": "00u2",
            "active": active,
        })
    };
    mount_listings(&server, vec![ada_account(), bob(false)], vec![]).await;
    Mock::given(method("GET"))
        .and(path("/Users/acc-2"))
        .respond_with(scim(bob(true)))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;

    let dir = tempfile::tempdir().unwrap();
    config_for(&server, dir.path());
    std::fs::write(
        dir.path().join("directory.json"),
        json!({"users": [
            {"id": "00u1", "userName": "ada@example.com", "email": "ada@example.com",
             "givenName": "Ada", "familyName": "Lovelace", "displayName": "Ada Lovelace",
             "status": "active", "groups": []},
            {"id": "00u2", "userName": "bob@example.com", "status": "deprovisioned", "groups": []},
        ]})
        .to_string(),
    )
    .unwrap();
    let toml = std::fs::read_to_string(dir.path().join("seatwarden.toml")).unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        toml.replace(
            "[safety]\n",
            "[deprovision]\naction = \"delete\"\ndelete_after = \"1d\"\n\n\
             [safety]\nmax_deletion_percent = 100\n",
        ),
    )
    .unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    Store::open(&config.state.path)
        .unwrap()
        .update_deactivated(
            &["acc-2".to_owned()],
            &[],
            Utc::now() - chrono::Duration::days(2),
        )
        .unwrap();

    let store = Store::open(&config.state.path).unwrap();
    let outcome = run::execute(&config, store, Mode::Reconcile).await.unwrap();
    let delete = outcome
        .plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::Delete { .. }))
        .expect("the retention delete is planned from the listing");
    assert_eq!(delete.reason, DriftKind::RetentionExpired);
    let row = Store::open(&config.state.path)
        .unwrap()
        .journal(outcome.run_id)
        .unwrap()
        .into_iter()
        .find(|r| r.action.seq == delete.seq)
        .unwrap();
    assert_eq!(row.state, ActionState::Failed, "{row:?}");
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("active again")),
        "{row:?}"
    );
    // `expect(0)` on DELETE is checked when the server drops.
}

/// A person's userName changes and a new hire gets the old one in the same run:
/// the rename goes first, so the create finds the name free instead of meeting a
/// 409 (a failed write for the circuit breaker, and a second run to converge).
#[tokio::test]
async fn a_user_name_handed_over_in_one_run_is_renamed_before_it_is_created() {
    let (sandbox, dir) = empty_sandbox().await;
    let person = |id: &str, user_name: &str| json!({"id": id, "userName": user_name, "email": user_name, "status": "active", "groups": []});
    let write = |users: Vec<serde_json::Value>| {
        std::fs::write(
            dir.path().join("directory.json"),
            json!({ "users": users }).to_string(),
        )
        .unwrap();
    };
    write(vec![person("00u1", "jsmith@example.com")]);
    let config = sandbox_config(&sandbox, dir.path());
    let reconcile = || reconcile(&config);
    crate::fixtures::assert_clean_reconcile(&reconcile().await.report);

    write(vec![
        person("00u1", "john.smith@example.com"),
        person("00u2", "jsmith@example.com"),
    ]);
    let handover = reconcile().await;
    assert_eq!(
        handover.report.summary.actions_failed, 0,
        "{:#?}",
        handover.report.actions
    );
    let mut names: Vec<(Option<String>, String)> = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .map(|a| (a.external_id, a.user_name))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (Some("00u1".into()), "john.smith@example.com".into()),
            (Some("00u2".into()), "jsmith@example.com".into()),
        ]
    );
    sandbox.shutdown().await;
}

/// A reconcile that fails after its writes were applied and verified (here: the
/// report cannot be stored) still records what it applied in the same-day ledger:
/// no recovery finds those rows (they are applied, not in flight), and no later
/// reconcile plans that deactivation again. Without it Ada's deprovision is in no
/// episode at all (or, had a sweep opened one, it would wait open for its next
/// attempt and could escalate as overdue meanwhile). The caller gets the run's
/// own error.
#[tokio::test]
async fn a_reconcile_failing_after_its_writes_still_records_its_deprovisions() {
    let (sandbox, dir) = empty_sandbox().await;
    write_directory(dir.path(), "00u1", "Ada");
    let config = sandbox_config(&sandbox, dir.path());
    reconcile(&config).await;

    ada_left(dir.path());
    rusqlite::Connection::open(&config.state.path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_reports BEFORE INSERT ON reports
             BEGIN SELECT RAISE(ABORT, 'disk full (injected)'); END;",
        )
        .unwrap();
    let error = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("saving the report"), "{error}");
    assert!(
        !sandbox.snapshot().accounts[0].active,
        "Ada was deactivated"
    );

    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history("00u1", 10).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(
        history[0].enforced_at.is_some() && history[0].verified_at.is_some(),
        "{history:?}"
    );
    assert!(store.open_deprovisions().unwrap().is_empty());
    sandbox.shutdown().await;
}

/// A reconcile that verified Ada's deactivation and was killed before it wrote
/// the ledger: its row is applied, not in flight, and her account is inactive, so
/// no recovery and no later plan would ever record it. The next reconcile, closing
/// the cut-off run, records it as that run would have.
#[tokio::test]
async fn a_reconcile_killed_after_verifying_a_deactivation_has_it_ledgered_by_the_next() {
    let (sandbox, dir) = empty_sandbox().await;
    write_directory(dir.path(), "00u1", "Ada");
    let config = sandbox_config(&sandbox, dir.path());
    reconcile(&config).await;
    ada_left(dir.path());
    let ada = sandbox.snapshot().accounts[0].clone();
    seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap())
        .unwrap()
        .set_active(&ada.id, false)
        .await
        .unwrap();
    let started = Utc::now() - chrono::Duration::minutes(30);
    let verified = started + chrono::Duration::minutes(1);
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, started).unwrap();
    let deactivate = Action {
        seq: 0,
        kind: ActionKind::Deactivate {
            account_id: ada.id.clone(),
        },
        reason: DriftKind::StaleAccess,
        subject: ada.user_name.clone(),
        identity_id: Some("00u1".into()),
        detail: "identity is deprovisioned in the directory".into(),
        held: None,
    };
    store
        .save_plan(
            run,
            &Plan {
                actions: vec![deactivate],
                ..Plan::default()
            },
            started,
        )
        .unwrap();
    store.mark_in_flight(run, 0, started).unwrap();
    store.mark_applied(run, 0, verified, None).unwrap();
    drop(store);

    let next = reconcile(&config).await;
    assert!(next.plan.is_empty(), "{:#?}", next.plan.actions);
    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(store.run(run).unwrap().unwrap().status, RunStatus::Failed);
    let history = store.deprovision_history("00u1", 10).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].detected_at, started);
    assert_eq!(history[0].verified_at, Some(verified));
    sandbox.shutdown().await;
}

/// Ada's directory and workspace reconciled, then Ada deprovisioned in the
/// directory with no deprovision allowed to pass (all held), and a reconcile that
/// held her deactivation two hours ago and died while another of its writes was
/// in flight. Returns the configuration now and when the cut-off run started.
async fn a_cut_off_hold_of_ada(
    sandbox: &seatwarden::sandbox::Sandbox,
    dir: &std::path::Path,
) -> (Config, chrono::DateTime<Utc>) {
    use seatwarden::model::HoldReason;

    write_directory(dir, "00u1", "Ada");
    let config = sandbox_config(sandbox, dir);
    reconcile(&config).await;
    let ada = sandbox.snapshot().accounts[0].clone();
    let path = dir.join("seatwarden.toml");
    let toml = std::fs::read_to_string(&path).unwrap() + "max_deprovisions = 0\n";
    std::fs::write(&path, toml).unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();

    ada_left(dir);
    let cut_off_at = Utc::now() - chrono::Duration::hours(2);
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, cut_off_at).unwrap();
    let plan = Plan {
        actions: vec![
            Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: ada.id.clone(),
                },
                reason: DriftKind::StaleAccess,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: "identity is deprovisioned in the directory".into(),
                held: Some(HoldReason::DeprovisionThreshold {
                    planned: 1,
                    limit: 0,
                    managed: 1,
                }),
            },
            Action {
                seq: 1,
                kind: ActionKind::Reactivate {
                    account_id: ada.id.clone(),
                },
                reason: DriftKind::ReactivationDue,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: String::new(),
                held: None,
            },
        ],
        ..Plan::default()
    };
    store.save_plan(run, &plan, cut_off_at).unwrap();
    store.mark_in_flight(run, 1, cut_off_at).unwrap();
    (config, cut_off_at)
}

/// Ada's one episode: held, open, counted from `detected`, due an hour later.
fn assert_held_from(config: &Config, detected: chrono::DateTime<Utc>) {
    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history("00u1", 10).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    let episode = &history[0];
    assert!(
        episode.held.is_some() && episode.verified_at.is_none(),
        "{episode:?}"
    );
    assert!(
        (episode.detected_at - detected).num_seconds().abs() < 1,
        "detected {} rather than when the cut-off run saw it, {detected}",
        episode.detected_at
    );
    assert_eq!(
        episode.due_at - episode.detected_at,
        chrono::Duration::hours(1)
    );
}

/// A reconcile cut off mid-apply recorded nothing in the same-day ledger, the
/// deactivation it held included. The next reconcile sees the leaver again and
/// holds them again, and its episode starts from when the cut-off run saw them:
/// counted from the later run, the SLA would restart after every crash, and an
/// overdue hold would escalate as late as the process was down.
#[tokio::test]
async fn a_hold_of_a_cut_off_reconcile_keeps_its_detection_time() {
    let (sandbox, dir) = empty_sandbox().await;
    let (config, cut_off_at) = a_cut_off_hold_of_ada(&sandbox, dir.path()).await;

    let outcome = reconcile(&config).await;
    assert_eq!(outcome.report.summary.recovered, 1);
    assert_eq!(outcome.report.summary.actions_held, 1);
    assert_held_from(&config, cut_off_at);
    sandbox.shutdown().await;
}

/// The same when a sweep is the first to run after the crash: the episode its
/// observation opens counts from the cut-off run, so the hold, overdue since, is
/// escalated now rather than an hour from now.
#[tokio::test]
async fn a_sweep_after_a_cut_off_reconcile_escalates_its_overdue_hold() {
    let (sandbox, dir) = empty_sandbox().await;
    let (config, cut_off_at) = a_cut_off_hold_of_ada(&sandbox, dir.path()).await;

    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let outcome = seatwarden::sweep::sweep(
        &config,
        &run::directory_from_config(&config),
        &client,
        &store,
        Utc::now(),
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    drop(store);
    assert_eq!((outcome.detected, outcome.held), (1, 1), "{outcome:?}");
    assert_held_from(&config, cut_off_at);
    assert_eq!(outcome.escalated.len(), 1, "{outcome:?}");
    sandbox.shutdown().await;
}

/// A workspace account seeded for the recovery scenario: uuid-shaped ids, so a
/// filter holds as many ids as against a real provider.
fn seeded_account(n: usize, user_name: String, active: bool) -> seatwarden::model::Account {
    seatwarden::model::Account {
        id: format!("{n:08x}-0000-4000-8000-{n:012x}"),
        user_name,
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active,
        roles: Vec::new(),
    }
}

/// What a recovery of a whole cut-off phase found, and what it cost.
struct PhaseRecovery {
    recovered: seatwarden::apply::Recovered,
    /// Each row's state, by seq.
    states: Vec<ActionState>,
    /// Identity id → account id.
    links: std::collections::BTreeMap<String, String>,
    /// Requests the recovery sent, and those refused for saying `or`.
    requests: u64,
    or_refused: u64,
}

const DEACTIVATIONS: usize = 120;
const CREATES: usize = 60;

/// A reconcile killed in the middle of two large phases: `DEACTIVATIONS`
/// deactivations in flight, of which the even ones reached the workspace, and
/// `CREATES` creates in flight, of which the even ones did (their accounts exist,
/// their answers were lost). Recovers it against a sandbox that does or does not
/// take `or` in filters.
async fn recover_a_cut_off_phase(or_filters: bool) -> PhaseRecovery {
    let mut accounts: Vec<seatwarden::model::Account> = (0..DEACTIVATIONS)
        .map(|n| seeded_account(n, format!("leaver{n}@example.com"), n % 2 == 1))
        .collect();
    accounts.extend(
        (0..CREATES)
            .filter(|n| n % 2 == 0)
            // Case differs from the create's: userNames are not case-exact.
            .map(|n| seeded_account(1000 + n, format!("Hire{n}@Example.com"), true)),
    );
    let deactivations = accounts.iter().take(DEACTIVATIONS).map(|a| {
        (
            ActionKind::Deactivate {
                account_id: a.id.clone(),
            },
            a.user_name.clone(),
            DriftKind::StaleAccess,
        )
    });
    let actions = deactivations.chain((0..CREATES).map(hire)).collect();
    recover_on_sandbox(accounts, actions, or_filters).await
}

/// The create of hire `n`'s account (identity `00h{n}`, `hire{n}@example.com`).
fn hire(n: usize) -> (ActionKind, String, DriftKind) {
    let user_name = format!("hire{n}@example.com");
    (
        ActionKind::CreateAccount {
            identity_id: format!("00h{n}"),
            spec: AccountSpec {
                user_name: user_name.clone(),
                external_id: format!("00h{n}"),
                given_name: None,
                family_name: None,
                display_name: None,
                email: Some(user_name.clone()),
                role: None,
            },
        },
        user_name,
        DriftKind::MissingAccount,
    )
}

/// A reconcile killed while `actions` were in flight (one phase, marked in one
/// commit), recovered against a sandbox holding `accounts` that does or does not
/// take `or` in filters.
async fn recover_on_sandbox(
    accounts: Vec<seatwarden::model::Account>,
    actions: Vec<(ActionKind, String, DriftKind)>,
    or_filters: bool,
) -> PhaseRecovery {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = seatwarden::sandbox::Sandbox::start(
        listener,
        seatwarden::sandbox::SandboxOptions {
            token: "t0ken".into(),
            or_filters,
            // Each answer some milliseconds away, as any real workspace's: the
            // recovery's probe compares a filter for four ids with a read of
            // one, and at no latency a busy host's scheduling noise could tip
            // it to reading one by one, and the requests counted here with it.
            // At 5 ms it tipped once beside parallel builds on two cores (122
            // requests); at 25 ms a filter must be 77 ms late to tip it.
            faults: seatwarden::sandbox::Faults {
                latency: std::time::Duration::from_millis(25),
                ..Default::default()
            },
            ..Default::default()
        },
        seatwarden::model::WorkspaceSnapshot {
            accounts,
            groups: Vec::new(),
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox_config(&sandbox, dir.path());

    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
    let actions: Vec<Action> = actions
        .into_iter()
        .enumerate()
        .map(|(seq, (kind, subject, reason))| Action {
            seq: u32::try_from(seq).unwrap(),
            kind,
            reason,
            subject,
            identity_id: None,
            detail: String::new(),
            held: None,
        })
        .collect();
    let seqs: Vec<u32> = actions.iter().map(|a| a.seq).collect();
    store
        .save_plan(
            run,
            &Plan {
                actions,
                ..Plan::default()
            },
            Utc::now(),
        )
        .unwrap();
    store
        .batch(|s| s.mark_all_in_flight(run, &seqs, Utc::now()))
        .unwrap();

    let mut settings = config.scim_settings().unwrap();
    // Requests are counted here, not timed: no rate limit to wait on.
    settings.requests_per_second = 0;
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();
    let store = std::sync::Mutex::new(store);
    let before = sandbox.stats();
    let recovered =
        seatwarden::apply::recover(&client, &store, seatwarden::model::DEFAULT_ADMIN_COMMAND)
            .await
            .unwrap();
    let after = sandbox.stats();
    let store = store.into_inner().unwrap();
    let states = store
        .journal(run)
        .unwrap()
        .into_iter()
        .map(|e| e.state)
        .collect();
    let links = store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    sandbox.shutdown().await;
    PhaseRecovery {
        recovered,
        states,
        links,
        requests: after.requests - before.requests,
        or_refused: after.or_filters_refused - before.or_filters_refused,
    }
}

/// Whatever the reads, the cut-off phase resolves the same: every row decided,
/// the changes that arrived applied (the creates linked to the accounts found by
/// userName, case aside), the rest failed for the next plan to redo.
fn assert_phase_resolved(found: &PhaseRecovery) {
    assert_eq!(found.recovered.resolved, DEACTIVATIONS + CREATES);
    let expected: Vec<ActionState> = (0..DEACTIVATIONS)
        .chain(0..CREATES)
        .map(|n| {
            if n % 2 == 0 {
                ActionState::Applied
            } else {
                ActionState::Failed
            }
        })
        .collect();
    assert_eq!(found.states, expected);
    let links: std::collections::BTreeMap<String, String> = (0..CREATES)
        .filter(|n| n % 2 == 0)
        .map(|n| {
            let n1000 = 1000 + n;
            (
                format!("00h{n}"),
                format!("{n1000:08x}-0000-4000-8000-{n1000:012x}"),
            )
        })
        .collect();
    assert_eq!(found.links, links);
}

/// A crash mid-apply leaves a whole phase in flight, and the next sweep waits
/// behind its recovery: the interrupted rows' accounts are read about 30 a
/// request, and the creates' userNames too, instead of one request per row
/// (181 here). A create that did not arrive is still looked up on its own:
/// absence is never taken from an `or` filter.
#[tokio::test]
async fn a_cut_off_phase_is_recovered_by_filtered_reads() {
    let found = recover_a_cut_off_phase(true).await;
    assert_phase_resolved(&found);
    assert_eq!(found.or_refused, 0);
    let absent_creates = (CREATES / 2) as u64;
    // The /Users check, a read and a four-id filter comparing the two, five
    // filters for the other deactivations, two for the creates, and the absent
    // creates one by one.
    assert!(
        found.requests <= 1 + 2 + 5 + 2 + absent_creates,
        "{} requests",
        found.requests
    );
}

/// A provider that refuses `or` in filters (AWS IAM Identity Center) gets the
/// rows' objects read one by one, with the same outcome.
#[tokio::test]
async fn a_cut_off_phase_is_recovered_one_by_one_where_or_is_refused() {
    let found = recover_a_cut_off_phase(false).await;
    assert_phase_resolved(&found);
    assert!(found.or_refused >= 1);
    // The refused filters, then one read per row.
    assert!(
        found.requests <= 1 + 2 + (DEACTIVATIONS + CREATES) as u64 + 2,
        "{} requests",
        found.requests
    );
}

/// A provider that mishandles `or`: its answer for two userNames holds one of
/// them and an account nobody asked for. The other is looked up on its own and
/// found, so both creates are linked (absence is never taken from an `or`
/// answer, nor an unasked account linked), and the client reads one by one from
/// then on: that provider's `or` answers cannot be trusted to be complete.
#[tokio::test]
async fn a_create_an_or_answer_left_out_is_looked_up_on_its_own() {
    let server = MockServer::start().await;
    let account = |id: &str, user_name: &str| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": id, "userName": user_name, "active": true,
        })
    };
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param(
            "filter",
            "userName eq \"ada@example.com\" or userName eq \"bob@example.com\"",
        ))
        .respond_with(scim(list(vec![
            account("acc-9", "eve@example.com"),
            account("acc-1", "ADA@example.com"),
        ])))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"bob@example.com\""))
        .respond_with(scim(list(vec![account("acc-2", "bob@example.com")])))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_listings(&server, vec![], vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let run = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
        let plan = Plan {
            actions: vec![
                create_action(0, "00u1", "ada@example.com"),
                create_action(1, "00u2", "bob@example.com"),
            ],
            ..Plan::default()
        };
        store.save_plan(run, &plan, Utc::now()).unwrap();
        store.mark_in_flight(run, 0, Utc::now()).unwrap();
        store.mark_in_flight(run, 1, Utc::now()).unwrap();
        run
    };
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = std::sync::Mutex::new(Store::open(&config.state.path).unwrap());
    let recovered =
        seatwarden::apply::recover(&client, &store, seatwarden::model::DEFAULT_ADMIN_COMMAND)
            .await
            .unwrap();
    assert_eq!(recovered.resolved, 2);
    let store = store.into_inner().unwrap();
    let states: Vec<ActionState> = store
        .journal(run)
        .unwrap()
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(states, [ActionState::Applied, ActionState::Applied]);
    let mut links: Vec<(String, String)> = store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    links.sort();
    assert_eq!(
        links,
        [
            ("00u1".to_owned(), "acc-1".to_owned()),
            ("00u2".to_owned(), "acc-2".to_owned()),
        ]
    );
    assert!(!client.id_filters_usable());
    // The `expect`s are checked when the server drops.
}

const HIRES: usize = 600;
const HIRES_SENT: usize = 150;
const STAFF: usize = 100;

/// A first provisioning run cut off early in its create phase: `HIRES` creates
/// in flight, of which only the first `HIRES_SENT` reached the workspace (their
/// accounts exist, userNames in another case), beside `STAFF` other accounts.
fn a_create_phase_cut_off_early() -> (
    Vec<seatwarden::model::Account>,
    Vec<(ActionKind, String, DriftKind)>,
) {
    let mut accounts: Vec<seatwarden::model::Account> = (0..STAFF)
        .map(|n| seeded_account(n, format!("staff{n}@example.com"), true))
        .collect();
    accounts.extend(
        (0..HIRES_SENT).map(|n| seeded_account(1000 + n, format!("Hire{n}@Example.com"), true)),
    );
    (accounts, (0..HIRES).map(hire).collect())
}

/// The creates that reached the workspace applied and linked to their accounts,
/// the others failed for the next plan to redo.
fn assert_cut_off_creates_resolved(found: &PhaseRecovery) {
    assert_eq!(found.recovered.resolved, HIRES);
    let expected: Vec<ActionState> = (0..HIRES)
        .map(|n| {
            if n < HIRES_SENT {
                ActionState::Applied
            } else {
                ActionState::Failed
            }
        })
        .collect();
    assert_eq!(found.states, expected);
    let links: std::collections::BTreeMap<String, String> = (0..HIRES_SENT)
        .map(|n| {
            let n1000 = 1000 + n;
            (
                format!("00h{n}"),
                format!("{n1000:08x}-0000-4000-8000-{n1000:012x}"),
            )
        })
        .collect();
    assert_eq!(found.links, links);
}

/// Most creates of a phase cut off early were never sent, and an `or` answer
/// lacking them proves nothing: rather than one lookup each (450 here, minutes
/// at a provider's rate limit), they are settled from one listing of `/Users`,
/// which reached its `totalResults`: the standard a plan trusts to decide who
/// lacks an account. Where `or` is refused, the same listing replaces all 600.
#[tokio::test]
async fn a_create_phase_cut_off_early_is_recovered_from_one_listing() {
    let pages = (STAFF + HIRES_SENT).div_ceil(100) as u64;
    let (accounts, actions) = a_create_phase_cut_off_early();
    let found = recover_on_sandbox(accounts, actions, true).await;
    assert_cut_off_creates_resolved(&found);
    assert_eq!(found.or_refused, 0);
    // The /Users check, the userName filters about 30 names each, then the
    // listing's pages.
    let batches = HIRES.div_ceil(25) as u64;
    assert!(
        found.requests <= 1 + batches + pages,
        "{} requests",
        found.requests
    );

    let (accounts, actions) = a_create_phase_cut_off_early();
    let found = recover_on_sandbox(accounts, actions, false).await;
    assert_cut_off_creates_resolved(&found);
    assert!(found.or_refused >= 1);
    // The /Users check, the refused filters, the listing's pages.
    assert!(
        found.requests <= 1 + 2 + pages,
        "{} requests, {} refused",
        found.requests,
        found.or_refused
    );
}

/// A listing of `/Users` that ends short of its `totalResults` (objects moved
/// between its pages, or the provider stopped early) is no proof of absence: a
/// create whose account it shows is reached, one it lacks is looked up on its
/// own (and found there, or not).
#[tokio::test]
async fn a_create_a_short_listing_lacks_is_looked_up_on_its_own() {
    let server = MockServer::start().await;
    let account = |id: &str, user_name: &str| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": id, "userName": user_name, "active": true,
        })
    };
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    // `or` refused, as AWS IAM Identity Center refuses it: every userName is
    // left to look up.
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param(
            "filter",
            "userName eq \"ada@example.com\" or userName eq \"bob@example.com\" \
             or userName eq \"cy@example.com\"",
        ))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "invalidFilter", "detail": "or"
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    // Ada is in the listing: her lookup is never sent.
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(ResponseTemplate::new(403))
        .expect(0)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"bob@example.com\""))
        .respond_with(scim(list(vec![account("acc-2", "bob@example.com")])))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"cy@example.com\""))
        .respond_with(scim(list(vec![])))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    // Four accounts announced, two shown: Bob's is among those it left out.
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 4,
            "Resources": [account("acc-1", "Ada@Example.com"), account("acc-7", "zed@example.com")]
        })))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let run = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
        let plan = Plan {
            actions: vec![
                create_action(0, "00u1", "ada@example.com"),
                create_action(1, "00u2", "bob@example.com"),
                create_action(2, "00u3", "cy@example.com"),
            ],
            ..Plan::default()
        };
        store.save_plan(run, &plan, Utc::now()).unwrap();
        store
            .batch(|s| s.mark_all_in_flight(run, &[0, 1, 2], Utc::now()))
            .unwrap();
        run
    };
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = std::sync::Mutex::new(Store::open(&config.state.path).unwrap());
    let recovered =
        seatwarden::apply::recover(&client, &store, seatwarden::model::DEFAULT_ADMIN_COMMAND)
            .await
            .unwrap();
    assert_eq!(recovered.resolved, 3);
    let store = store.into_inner().unwrap();
    let states: Vec<ActionState> = store
        .journal(run)
        .unwrap()
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        states,
        [
            ActionState::Applied,
            ActionState::Applied,
            ActionState::Failed
        ]
    );
    let mut links: Vec<(String, String)> = store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    links.sort();
    assert_eq!(
        links,
        [
            ("00u1".to_owned(), "acc-1".to_owned()),
            ("00u2".to_owned(), "acc-2".to_owned()),
        ]
    );
    // The `expect`s are checked when the server drops.
}

/// A create answered 409 (someone took the userName between the plan and the
/// write: push SCIM, an admin) finds the account holding it, whose externalId
/// names someone else: it is not linked to the person being created, which
/// would hand another person's account (their projects) to them. The create
/// fails saying so; the next run's plan judges the account as matching does.
#[tokio::test]
async fn a_create_answered_409_never_links_an_account_whose_external_id_names_someone_else() {
    let server = MockServer::start().await;
    mount_listings(&server, vec![], vec![]).await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(wiremock::matchers::query_param(
            "filter",
            "userName eq \"ada@example.com\"",
        ))
        .respond_with(scim(list(vec![json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "ws-9", "userName": "ada@example.com", "externalId": "00u9",
            "active": true
        })])))
        .with_priority(1)
        .mount(&server)
        .await;
    user_name_taken(&server, ..).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let outcome = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    assert_eq!(outcome.report.summary.actions_failed, 1);
    let error = outcome.report.actions[0].error.clone().unwrap();
    assert!(
        error.contains("ws-9")
            && error.contains("externalId \"00u9\"")
            && error.contains("free the userName in the workspace (rename or delete account ws-9)"),
        "{error}"
    );
    let links = Store::open(&config.state.path).unwrap().links().unwrap();
    assert!(links.is_empty(), "{links:?}");
}
