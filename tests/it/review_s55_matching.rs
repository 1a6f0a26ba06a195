//! Security review of matching (session 55): which account a create that found
//! its userName taken, or a create a crash cut off, links to the person. A
//! workspace that keeps userNames unique only case-sensitively (or not at all)
//! can hold several accounts one `userName eq` filter finds; someone who may
//! create accounts makes one under a new hire's address, and the first of the
//! answer must not be handed the hire's role and groups (nor, in the sweep,
//! stand in for a leaver's account made again under their userName).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use seatwarden::config::Config;
use seatwarden::model::{AccountSpec, Action, ActionKind, DriftKind, Plan};
use seatwarden::run::{self, Mode};
use seatwarden::store::{ActionState, RunKind, Store};

fn scim(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(body)
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

fn user(id: &str, user_name: &str, external_id: Option<&str>) -> serde_json::Value {
    let mut user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": id,
        "userName": user_name,
        "active": true
    });
    if let Some(external_id) = external_id {
        user["externalId"] = json!(external_id);
    }
    user
}

/// A workspace without `/ServiceProviderConfig` whose listings are empty, where
/// `userName eq "ada@example.com"` finds `holders`, and each holder reads by id.
async fn workspace(server: &MockServer, holders: Vec<serde_json::Value>) {
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(scim(list(holders.clone())))
        .with_priority(1)
        .mount(server)
        .await;
    for holder in holders {
        let id = holder["id"].as_str().unwrap().to_owned();
        Mock::given(method("GET"))
            .and(path(format!("/Users/{id}")))
            .respond_with(scim(holder))
            .with_priority(1)
            .mount(server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(list(vec![])))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(list(vec![])))
        .mount(server)
        .await;
}

/// `POST /Users` answered 409 uniqueness.
async fn user_name_taken(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/Users"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "409", "scimType": "uniqueness", "detail": "userName taken"
        })))
        .mount(server)
        .await;
}

fn config_for(server: &MockServer, dir: &std::path::Path) -> Config {
    crate::fixtures::ada_config(&server.uri(), dir, "active")
}

fn links(config: &Config) -> Vec<(String, String)> {
    let mut links: Vec<(String, String)> = Store::open(&config.state.path)
        .unwrap()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    links.sort();
    links
}

/// Journals a create of Ada's account (`00u1`, externalId `00u1`) left
/// `in_flight`, as a process killed after sending it leaves it.
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
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: None,
                    role: None,
                },
            },
            reason: DriftKind::MissingAccount,
            subject: "ada@example.com".into(),
            identity_id: Some("00u1".into()),
            detail: String::new(),
            held: None,
        }],
        ..Plan::default()
    };
    store.save_plan(run, &plan, Utc::now()).unwrap();
    store
        .batch(|s| s.mark_all_in_flight(run, &[0], Utc::now()))
        .unwrap();
    run
}

async fn recover(config: &Config) -> ActionState {
    let run = crashed_create(config);
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = std::sync::Mutex::new(Store::open(&config.state.path).unwrap());
    let recovered =
        seatwarden::apply::recover(&client, &store, seatwarden::model::DEFAULT_ADMIN_COMMAND)
            .await
            .unwrap();
    assert_eq!(recovered.resolved, 1);
    let store = store.into_inner().unwrap();
    store.journal(run).unwrap()[0].state
}

/// After a crash, the create's userName is held by an account someone made
/// meanwhile (no externalId, listed first) and by the one the create made
/// (externalId = the person's id): the one the create made is Ada's.
#[tokio::test]
async fn recovery_links_the_account_the_create_made_not_the_first_holding_its_user_name() {
    let server = MockServer::start().await;
    workspace(
        &server,
        vec![
            user("ws-1", "Ada@example.com", None),
            user("ws-2", "ada@example.com", Some("00u1")),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    assert_eq!(recover(&config).await, ActionState::Applied);
    assert_eq!(links(&config), [("00u1".to_owned(), "ws-2".to_owned())]);
}

/// Two accounts hold the userName and neither names Ada by externalId: which is
/// hers (if either) is for a person to say, as the plan disputes such a match;
/// recovery links neither.
#[tokio::test]
async fn recovery_links_neither_of_two_accounts_holding_the_user_name() {
    let server = MockServer::start().await;
    workspace(
        &server,
        vec![
            user("ws-1", "Ada@example.com", None),
            user("ws-2", "ada@example.com", None),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    assert_eq!(recover(&config).await, ActionState::Failed);
    assert_eq!(links(&config), []);
}

/// A create answered 409 whose userName two accounts hold: the one whose
/// externalId names Ada is linked, whatever the answer's order.
#[tokio::test]
async fn a_create_answered_409_links_the_holder_naming_the_person() {
    let server = MockServer::start().await;
    workspace(
        &server,
        vec![
            user("ws-1", "Ada@example.com", None),
            user("ws-2", "ada@example.com", Some("00u1")),
        ],
    )
    .await;
    user_name_taken(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    assert_eq!(links(&config), [("00u1".to_owned(), "ws-2".to_owned())]);
}

/// A create answered 409 whose userName two accounts hold, neither naming Ada:
/// the create fails naming both, and neither gets her role and groups.
#[tokio::test]
async fn a_create_answered_409_links_neither_of_two_holders() {
    let server = MockServer::start().await;
    workspace(
        &server,
        vec![
            user("ws-1", "Ada@example.com", None),
            user("ws-2", "ada@example.com", None),
        ],
    )
    .await;
    user_name_taken(&server).await;
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
    assert!(error.contains("ws-1") && error.contains("ws-2"), "{error}");
    assert_eq!(links(&config), []);
}

/// A create answered 201 without the User is read back by its userName: of two
/// accounts holding it, the one naming the person is the one it made, whatever
/// the answer's order.
#[tokio::test]
async fn a_create_answered_without_its_user_reads_back_the_holder_naming_the_person() {
    let server = MockServer::start().await;
    workspace(
        &server,
        vec![
            user("ws-1", "Ada@example.com", None),
            user("ws-2", "ada@example.com", Some("00u1")),
        ],
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/Users"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let spec = AccountSpec {
        user_name: "ada@example.com".into(),
        external_id: "00u1".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        role: None,
    };
    let account = client.create_account(&spec).await.unwrap();
    assert_eq!(account.id, "ws-2");
}

/// A leaver's linked account reads as gone, and two accounts hold their
/// userName: someone else's, listed first, and the one made again for them
/// (their directory id as externalId). The sweep moves the episode to the one
/// naming them, whatever the answer's order, instead of closing it as gone and
/// leaving that account active.
#[tokio::test]
async fn the_sweep_finds_a_leavers_account_made_again_behind_another_holder() {
    use seatwarden::sla::{self, Leaver, LossReason};
    use wiremock::matchers::query_param_is_missing;

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "id eq \"gone\""))
        .respond_with(scim(list(vec![])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param("filter", "userName eq \"gone@example.com\""))
        .respond_with(scim(list(vec![
            user("ws-x", "Gone@example.com", None),
            user("ws-y", "gone@example.com", Some("id-gone")),
        ])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .and(query_param_is_missing("filter"))
        .respond_with(scim(list(vec![])))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t\"\n",
            server.uri()
        ),
    )
    .unwrap();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(std::collections::HashMap::new()),
    )
    .unwrap();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let detected = Utc::now() - chrono::Duration::minutes(10);
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
        chrono::Duration::hours(1),
    );
    store
        .lock()
        .unwrap()
        .update_ledger(&opened, detected)
        .unwrap();
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(1);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();
    let outcome = seatwarden::sweep::enforce(&config, &client, &store, Utc::now())
        .await
        .unwrap();
    assert_eq!(outcome.already_done, 0, "{outcome:?}");
    let history = store
        .lock()
        .unwrap()
        .deprovision_history("id-gone", 5)
        .unwrap();
    assert_eq!(
        history[0].account_id.as_deref(),
        Some("ws-y"),
        "{history:#?}"
    );
}

/// After a crash, the only account holding the create's userName does not name
/// Ada by externalId (the create sent hers): someone may have made it meanwhile,
/// or the provider keeps no externalId. It is linked as the 409 path links such
/// an account, by userName, not recorded as one seatwarden created.
#[tokio::test]
async fn recovery_records_an_account_not_naming_the_person_as_matched_by_user_name() {
    let server = MockServer::start().await;
    workspace(&server, vec![user("ws-1", "ada@example.com", None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server, dir.path());
    assert_eq!(recover(&config).await, ActionState::Applied);
    let links = Store::open(&config.state.path).unwrap().links().unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].account_id, "ws-1");
    assert_eq!(links[0].method, seatwarden::model::LinkMethod::UserName);
}
