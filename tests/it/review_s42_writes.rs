//! Review (s42) of writes whose answer was lost: the connection dropped after the
//! request left, a timeout, a 5xx sent after the provider made the change. What
//! is sent again, what is looked up first, and what is counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::apply::{StopSignal, until_stopped};
use seatwarden::model::{AccountSpec, LinkMethod, WorkspaceSnapshot};
use seatwarden::retry::RetryPolicy;
use seatwarden::store::Store;
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fixtures::{ada_config, reconcile, sandbox};

fn client_at(base_url: url::Url, retry: RetryPolicy) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url,
        token: "t0ken".to_owned().into(),
        role_attribute: RoleAttribute::None,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry,
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap()
}

fn mock_client(server: &MockServer, retry: RetryPolicy) -> ScimClient {
    client_at(format!("{}/scim/v2", server.uri()).parse().unwrap(), retry)
}

fn ada() -> AccountSpec {
    AccountSpec {
        user_name: "ada@example.com".into(),
        external_id: "00u1".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some("ada@example.com".into()),
        role: None,
    }
}

fn user(id: &str, external_id: Option<&str>) -> serde_json::Value {
    let mut user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": id,
        "userName": "ada@example.com",
        "active": true,
    });
    if let Some(external_id) = external_id {
        user["externalId"] = external_id.into();
    }
    user
}

fn listing(users: Vec<serde_json::Value>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": users.len(),
        "startIndex": 1,
        "itemsPerPage": users.len(),
        "Resources": users,
    }))
}

fn unavailable() -> ResponseTemplate {
    ResponseTemplate::new(503).set_body_json(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "503",
        "detail": "try later",
    }))
}

/// A provider that does not enforce userName uniqueness, and answered 503 to a
/// POST it had carried out: the POST was sent again blind and made a second
/// account for Ada. Looked up by userName before the retry, the account the
/// first attempt made is found (its externalId is Ada's) and used; no second
/// POST leaves.
#[tokio::test]
async fn a_create_whose_answer_was_lost_is_looked_up_not_posted_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .respond_with(unavailable())
        .up_to_n_times(1)
        .mount(&server)
        .await;
    // The duplicate a second POST would make.
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(201).set_body_json(user("u2", Some("00u1"))))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(listing(vec![user("u1", Some("00u1"))]))
        .mount(&server)
        .await;
    let client = mock_client(&server, RetryPolicy::immediate(3));
    let account = client.create_account(&ada()).await.unwrap();
    assert_eq!(account.id, "u1");
    let posts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(posts, 1);
    // The lookup found it: no retry was made.
    assert_eq!(client.stats().retries, 0);
}

/// What the lookup before a retry finds under the userName with another
/// externalId (or none) is not taken as made by this create: the create fails
/// as one answered 409 does, for the executor to judge the account as it judges
/// one after a 409; nothing is posted again.
#[tokio::test]
async fn an_account_found_before_a_retry_with_another_external_id_is_not_taken_as_made() {
    for found in [Some("00u9"), None] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/scim/v2/Users"))
            .respond_with(unavailable())
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(listing(vec![user("u7", found)]))
            .mount(&server)
            .await;
        let client = mock_client(&server, RetryPolicy::immediate(3));
        let err = client.create_account(&ada()).await.unwrap_err();
        assert!(err.is_taken_after_lost_answer(), "{err}");
        let text = err.to_string();
        assert!(text.contains("account u7"), "{text}");
        match found {
            Some(other) => assert!(text.contains(&format!("externalId {other:?}")), "{text}"),
            None => assert!(text.contains("no externalId"), "{text}"),
        }
        let posts = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count();
        assert_eq!(posts, 1, "{found:?}");
    }
}

/// Against the sandbox, whose connection drops after it made the account: the
/// run's create is not posted again (the sandbox would answer 409, a provider
/// without uniqueness would make a duplicate), and Ada's link says seatwarden
/// created the account.
#[tokio::test]
async fn a_reconcile_whose_create_lost_its_answer_sends_one_post_and_links_the_account() {
    let sandbox = sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(sandbox.base_url().as_str(), dir.path(), "ACTIVE");
    sandbox.record_requests();
    sandbox.lose_answers("POST", "Users", 1);
    let outcome = reconcile(&config).await;
    let posts: Vec<u16> = sandbox
        .requests_seen()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/Users")
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, vec![201], "{:?}", outcome.report.summary);
    let accounts = sandbox.snapshot().accounts;
    assert_eq!(accounts.len(), 1);
    let links = Store::open(&config.state.path).unwrap().links().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].account_id, accounts[0].id);
    assert_eq!(links[0].method, LinkMethod::Created);
}

/// A stop that ends the wait before a retry withdraws the retry: the client's
/// retry count (the metric and the run report's `retries`) counted it anyway,
/// one too many for every write the stop cut short.
#[tokio::test]
async fn a_retry_the_stop_withdrew_is_not_counted() {
    let server = MockServer::start().await;
    for (verb, at) in [("PATCH", "/scim/v2/Users/u1"), ("POST", "/scim/v2/Users")] {
        Mock::given(method(verb))
            .and(path(at))
            .respond_with(unavailable().insert_header("retry-after", "60"))
            .mount(&server)
            .await;
    }
    let client = mock_client(
        &server,
        RetryPolicy {
            max_retry_after: Duration::from_secs(120),
            ..RetryPolicy::immediate(3)
        },
    );
    let stop = StopSignal::new();
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.stop();
    };
    let ((patched, _), ()) = tokio::join!(
        until_stopped(stop.clone(), client.set_active("u1", false)),
        stopping
    );
    assert!(patched.unwrap_err().is_stopped());
    assert_eq!(client.stats().retries, 0);

    // The same for a create, whose retries look the account up first.
    let stop = StopSignal::new();
    let client = mock_client(
        &server,
        RetryPolicy {
            max_retry_after: Duration::from_secs(120),
            ..RetryPolicy::immediate(3)
        },
    );
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.stop();
    };
    let spec = ada();
    let ((created, _), ()) = tokio::join!(
        until_stopped(stop.clone(), client.create_account(&spec)),
        stopping
    );
    assert!(created.unwrap_err().is_stopped());
    assert_eq!(client.stats().retries, 0);
}

/// A run's create answered 503 (the provider made the account) against a
/// provider that keeps no externalId: the lookup before the retry finds Ada's
/// userName on an account without one. The executor judges it as after a 409
/// (nobody else's link, no other person's externalId) and links it by
/// userName; the create failed instead, and the next run's plan would match
/// the account the same way a run later.
#[tokio::test]
async fn a_run_links_the_account_found_after_a_lost_answer_as_after_a_409() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    // The snapshot: no account yet.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(wiremock::matchers::query_param_is_missing("filter"))
        .respond_with(listing(Vec::new()))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(listing(vec![user("u7", None)]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user("u7", None)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(listing(Vec::new()))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .respond_with(unavailable())
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(&format!("{}/scim/v2", server.uri()), dir.path(), "ACTIVE");
    reconcile(&config).await;
    let posts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(posts, 1);
    let links = Store::open(&config.state.path).unwrap().links().unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].account_id, "u7");
    assert_eq!(links[0].method, LinkMethod::UserName);
}

/// The other writes, each of whose first answer is lost after the sandbox made
/// it, end as done, with no error for the executor to journal: a PUT built from
/// a read (no PATCH) carries `If-Match`, so its retry is refused 412 (the
/// first attempt changed the version), which reads again and writes once more;
/// a membership add and removal are sent again and taken; a DELETE sent again
/// is answered 404, which the executor leaves to verification.
#[tokio::test]
async fn the_other_writes_end_done_after_a_lost_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = seatwarden::sandbox::Sandbox::start(
        listener,
        seatwarden::sandbox::SandboxOptions {
            token: "t0ken".to_owned(),
            patch_supported: false,
            ..Default::default()
        },
        WorkspaceSnapshot::default(),
    )
    .await
    .unwrap();
    let client = client_at(sandbox.base_url(), RetryPolicy::immediate(3));
    client.discover().await.unwrap();
    let account = client.create_account(&ada()).await.unwrap();
    let group = client.create_group("Design").await.unwrap();
    sandbox.record_requests();

    sandbox.lose_answers("PUT", "Users", 1);
    client.set_active(&account.id, false).await.unwrap();
    let puts: Vec<u16> = sandbox
        .requests_seen()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.status)
        .collect();
    assert_eq!(puts, vec![200, 412, 200]);
    assert!(!sandbox.snapshot().accounts[0].active);

    let members = [account.id.clone()];
    sandbox.lose_answers("PUT", "Groups", 1);
    client.add_members(&group.id, &members).await.unwrap();
    assert_eq!(sandbox.snapshot().groups[0].members, members.to_vec());
    let group_puts: Vec<u16> = sandbox
        .requests_seen()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with("/Groups"))
        .map(|r| r.status)
        .collect();
    assert_eq!(group_puts, vec![200, 412, 200]);

    // By PATCH, where the provider has it.
    sandbox.set_patch_supported(true);
    let patching = client_at(sandbox.base_url(), RetryPolicy::immediate(3));
    sandbox.lose_answers("PATCH", "Groups", 2);
    patching.remove_members(&group.id, &members).await.unwrap();
    assert!(sandbox.snapshot().groups[0].members.is_empty());
    patching.add_members(&group.id, &members).await.unwrap();
    assert_eq!(sandbox.snapshot().groups[0].members, members.to_vec());
    let patches = sandbox
        .requests_seen()
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 200)
        .count();
    assert_eq!(patches, 4);

    sandbox.lose_answers("DELETE", "Users", 1);
    let deleted = client.delete_account(&account.id).await.unwrap_err();
    assert!(deleted.is_not_found(), "{deleted}");
    assert!(sandbox.snapshot().accounts.is_empty());
}
