//! Review (s43) of the Entra connector as the engineer running it against a large
//! tenant sees it: what a failed read says, and whether it carries what a
//! Microsoft support case needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::EntraSource;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::entra::{secret, settings, small_tenant};

const REQUEST_ID: &str = "7d0b5c4e-1f2a-4b3c-9d8e-0a1b2c3d4e5f";

/// Graph's error body names the request in `innerError` (`request-id`, `date`),
/// which is what Microsoft support asks for first. It was dropped: the error
/// said only the code and message. It stays even where the message and the
/// permission hint fill the detail to its length limit.
#[tokio::test]
async fn a_graph_error_names_its_request_id_and_date() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": {
            "code": "Authorization_RequestDenied",
            "message": "Insufficient privileges to complete the operation.",
            "innerError": {
                "date": "2026-12-05T01:40:12",
                "request-id": REQUEST_ID,
                "client-request-id": REQUEST_ID
            }
        }})))
        .with_priority(1)
        .mount(&server)
        .await;
    small_tenant().mount(&server).await;
    let mut s = settings(&server, secret());
    s.app_id = Some("00000000-0000-4000-8000-0000000000a1".into());
    let text = EntraSource::new(s)
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("Application.Read.All")
            && text.contains(&format!("request-id {REQUEST_ID}"))
            && text.contains("date 2026-12-05T01:40:12"),
        "{text}"
    );
}

/// A 503 from a Graph gateway with no Graph error body still carries the
/// `request-id` header Graph sets on every answer: after the retries, the error
/// names the last one.
#[tokio::test]
async fn a_graph_answer_without_an_error_body_is_named_by_its_request_id_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1\.0/groups/[^/]+/transitiveMembers$"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("request-id", REQUEST_ID)
                .insert_header("date", "Sat, 05 Dec 2026 01:40:12 GMT")
                .set_body_string("Service Unavailable"),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    small_tenant().mount(&server).await;
    let error = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(503), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&format!("request-id {REQUEST_ID}"))
            && text.contains("date Sat, 05 Dec 2026 01:40:12 GMT"),
        "{text}"
    );
}

/// The identity platform refuses an expired client secret with an
/// `error_description` long enough that its trailing `Trace ID: … Correlation ID:
/// … Timestamp: …` lines were cut off with the rest past 300 characters: the
/// correlation id and timestamp that a sign-in support case needs were lost, and
/// the line breaks before them went into the log line. They come from the body's
/// own fields instead, on one line.
#[tokio::test]
async fn a_refused_token_request_names_its_correlation_id_and_timestamp() {
    let server = MockServer::start().await;
    let correlation = "4f6e2d1c-8b7a-4c5d-9e0f-112233445566";
    let trace = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    Mock::given(method("POST"))
        .and(path_regex(r"/oauth2/v2\.0/token$"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": format!(
                "AADSTS7000222: The provided client secret keys for app \
                 '11111111-2222-4333-8444-555555555555' are expired. Visit the Azure portal \
                 to create new keys for your app: https://aka.ms/NewClientSecret, or consider \
                 using certificate credentials for added security: \
                 https://aka.ms/certCreds.\r\nTrace ID: {trace}\r\nCorrelation ID: \
                 {correlation}\r\nTimestamp: 2026-12-05 01:40:12Z"
            ),
            "error_codes": [7000222],
            "timestamp": "2026-12-05 01:40:12Z",
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": "https://login.microsoftonline.com/error?code=7000222"
        })))
        .mount(&server)
        .await;
    let error = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("AADSTS7000222")
            && text.contains(&format!("correlation-id {correlation}"))
            && text.contains(&format!("trace-id {trace}"))
            && text.contains("timestamp 2026-12-05 01:40:12Z"),
        "{text}"
    );
    assert!(!text.contains('\r') && !text.contains('\n'), "{text:?}");
}

/// `small_tenant` with "Taskade Users" (g1) a Microsoft 365 group with hidden
/// membership, whose transitive members are `members`.
fn hidden_scope_group(members: &[&str]) -> crate::entra::FakeGraph {
    let mut tenant = small_tenant();
    for (group, ids) in &mut tenant.groups {
        if group["id"] == "g1" {
            group["visibility"] = json!("HiddenMembership");
            group["groupTypes"] = json!(["Unified"]);
            *ids = members.iter().map(|id| id.to_string()).collect();
        } else {
            group["visibility"] = serde_json::Value::Null;
        }
    }
    tenant
}

/// Graph lists the members of a hidden-membership group (a Microsoft 365 group
/// created with `visibility` HiddenMembership) only to an app granted
/// `Member.Read.Hidden`, which the permissions README names did not include. Read
/// as nobody, a hidden scope group put every member out of scope: deprovisioned
/// on the strength of a read that looked whole. The read fails instead, naming
/// the group and the permission; with the permission (members listed) it reads as
/// any group.
#[tokio::test]
async fn a_hidden_membership_group_listed_empty_fails_the_read_naming_member_read_hidden() {
    let server = MockServer::start().await;
    hidden_scope_group(&[]).mount(&server).await;
    let error = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("Member.Read.Hidden")
            && text.contains("\"Taskade Users\"")
            && text.contains("transitiveMembers"),
        "{text}"
    );
    // Graph returns only the properties `$select` names.
    let requests = server.received_requests().await.unwrap();
    let listing = requests
        .iter()
        .find(|r| r.url.path() == "/v1.0/groups")
        .unwrap();
    let select = listing
        .url
        .query_pairs()
        .find(|(k, _)| k == "$select")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    assert!(select.split(',').any(|f| f == "visibility"), "{select}");

    let server = MockServer::start().await;
    hidden_scope_group(&["a1", "a2", "a3"]).mount(&server).await;
    let snapshot = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap();
    let in_scope: Vec<&str> = snapshot
        .identities
        .iter()
        .filter(|i| i.groups.iter().any(|g| g == "Taskade Users"))
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(in_scope, ["a1", "a2", "a3"]);
}

/// Refused with 403 instead, the member read of a hidden-membership group named
/// GroupMember.Read.All, which the app has: the error names Member.Read.Hidden.
#[tokio::test]
async fn a_403_for_a_hidden_membership_group_names_member_read_hidden() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/g1/transitiveMembers"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": {
            "code": "Authorization_RequestDenied",
            "message": "Insufficient privileges to complete the operation.",
            "innerError": {"date": "2026-12-05T01:40:12", "request-id": REQUEST_ID}
        }})))
        .with_priority(1)
        .mount(&server)
        .await;
    hidden_scope_group(&["a1"]).mount(&server).await;
    let text = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("HTTP 403")
            && text.contains("Member.Read.Hidden")
            && text.contains("\"Taskade Users\""),
        "{text}"
    );
}

/// With no group named in the configuration every group is read for its name
/// alone, and scope is everyone: a hidden-membership group listed empty takes
/// nobody out of scope, and does not fail the read.
#[tokio::test]
async fn with_no_group_named_a_hidden_membership_group_listed_empty_is_read() {
    let server = MockServer::start().await;
    hidden_scope_group(&[]).mount(&server).await;
    let mut s = settings(&server, secret());
    s.scope_groups.clear();
    s.other_groups.clear();
    let snapshot = EntraSource::new(s).snapshot().await.unwrap();
    assert_eq!(snapshot.identities.len(), 4);
}

/// With `app_id`, a hidden-membership group assigned to the app (not named in the
/// configuration) listed with no direct member would take everyone it brings
/// into scope out of it: the read fails the same way.
#[tokio::test]
async fn an_app_assigned_hidden_membership_group_listed_empty_fails_the_read() {
    let server = MockServer::start().await;
    let mut tenant = hidden_scope_group(&[]);
    tenant.assignments = vec![("g1".into(), "Group"), ("a4".into(), "User")];
    tenant.mount(&server).await;
    let mut s = settings(&server, secret());
    s.app_id = Some("app-client-id".into());
    s.scope_groups.clear();
    let text = EntraSource::new(s)
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("Member.Read.Hidden")
            && text.contains("\"Taskade Users\"")
            && text.contains("/members"),
        "{text}"
    );
}
