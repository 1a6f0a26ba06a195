//! Adversarial review (s37) of the workspace SCIM client against answers that are
//! valid HTTP but not what RFC 7644 prescribes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::model::{AccountSpec, Role};
use seatwarden::retry::RetryPolicy;
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url: format!("{}/scim/v2", server.uri()).parse().unwrap(),
        token: "t0ken".to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry: RetryPolicy::immediate(3),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap()
}

fn error_in_200(status: serde_json::Value, scim_type: Option<&str>) -> ResponseTemplate {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status,
        "detail": "refused, said with a 200",
    });
    if let Some(t) = scim_type {
        body["scimType"] = t.into();
    }
    ResponseTemplate::new(200).set_body_json(body)
}

/// A provider that answers a refused write with 200 and a SCIM Error body: the
/// write did not happen, and must not be counted as made.
#[tokio::test]
async fn a_scim_error_body_in_a_200_is_a_failed_write() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(error_in_200(json!("400"), Some("mutability")))
        .mount(&server)
        .await;
    let err = client(&server).set_active("u1", false).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    let text = err.to_string();
    assert!(text.contains("PATCH /Users/u1"), "{text}");
    assert!(text.contains("mutability"), "{text}");
    assert!(text.contains("refused, said with a 200"), "{text}");
    assert!(text.contains("with HTTP 200"), "{text}");
}

/// The same, on a create answered with a uniqueness error as a number: a conflict,
/// so the executor looks for the account rather than recording a creation.
#[tokio::test]
async fn a_uniqueness_error_in_a_200_on_create_is_a_conflict() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .respond_with(error_in_200(json!(409), Some("uniqueness")))
        .mount(&server)
        .await;
    let spec = AccountSpec {
        user_name: "ada@example.com".into(),
        external_id: "okta-1".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some("ada@example.com".into()),
        role: Some(Role::Editor),
    };
    let err = client(&server).create_account(&spec).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
}

/// An Error body in a 2xx whose `status` says nothing usable is still no success.
#[tokio::test]
async fn an_error_body_without_a_status_in_a_204_or_200_fails_the_write() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(error_in_200(json!("OK"), None))
        .mount(&server)
        .await;
    let err = client(&server).delete_account("u1").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("DELETE /Users/u1"), "{text}");
    assert!(text.contains("SCIM Error"), "{text}");
}

fn ada() -> AccountSpec {
    AccountSpec {
        user_name: "ada@example.com".into(),
        external_id: "okta-1".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some("ada@example.com".into()),
        role: None,
    }
}

/// A create answered 200 (not 201), without `Location`, with a stub body that is
/// not the whole User (`{"id": …}` only): the account was made, so it is read back
/// by userName rather than the create reported failed (which would count a made
/// account as a failed write and trip the breaker).
#[tokio::test]
async fn a_create_answered_with_a_stub_body_is_read_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "new-1"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("filter", "userName eq \"ada@example.com\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1,
            "Resources": [{"id": "new-1", "userName": "ada@example.com", "active": "true"}],
        })))
        .mount(&server)
        .await;
    let account = client(&server).create_account(&ada()).await.unwrap();
    assert_eq!(account.id, "new-1");
    assert!(account.active);
}

/// The same stub, and the read-back finds nobody: a clear error naming the POST.
#[tokio::test]
async fn a_stub_create_answer_not_found_afterwards_says_so() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "new-1"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"totalResults": 0})))
        .mount(&server)
        .await;
    let err = client(&server).create_account(&ada()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("POST /Users"), "{text}");
    assert!(text.contains("without userName"), "{text}");
    assert!(text.contains("not found afterwards"), "{text}");
}

/// A listing answered 200 with a SCIM Error body (a gateway's throttle, a
/// provider's "try later"): read as a ListResponse it held nothing, an empty and
/// whole workspace, and every person would be planned a create. It fails the read.
#[tokio::test]
async fn a_listing_answered_200_with_an_error_body_fails_the_snapshot() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(error_in_200(json!(503), None))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"totalResults": 0})))
        .mount(&server)
        .await;
    let no_progress = |_: seatwarden::workspace::Progress| {};
    let err = client(&server)
        .snapshot_whole(&no_progress)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("GET /Users"), "{text}");
    assert_eq!(err.status(), Some(503), "{text}");
}

/// Adding members one of whom is already in the group (push SCIM got there first,
/// or a retried PATCH whose first answer was lost) is answered 409 by providers
/// that enforce membership uniqueness; PATCH is atomic, so the others were not
/// added either. Like a `remove` meeting `noTarget`, the chunk is added again one
/// by one, and the member already there is what was wanted.
#[tokio::test]
async fn an_add_of_members_meeting_409_for_one_already_there_adds_the_rest() {
    use std::sync::{Arc, Mutex};
    let server = MockServer::start().await;
    let added = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&added);
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(move |req: &wiremock::Request| {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let values: Vec<String> = body["Operations"][0]["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .collect();
            if values.iter().any(|v| v == "u1") {
                return ResponseTemplate::new(409).set_body_json(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "status": 409,
                    "detail": "u1 is already a member",
                }));
            }
            seen.lock().unwrap().extend(values);
            ResponseTemplate::new(204)
        })
        .mount(&server)
        .await;
    client(&server)
        .add_members("g1", &["u1".to_owned(), "u2".to_owned(), "u3".to_owned()])
        .await
        .unwrap();
    assert_eq!(*added.lock().unwrap(), ["u2", "u3"]);
}
