//! Review (s41) of how seatwarden behaves when providers push back: `Retry-After`
//! (seconds or an HTTP-date), rate limits, retries and what is reported of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use seatwarden::retry::RetryPolicy;
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client_with(server: &MockServer, retry: RetryPolicy) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url: format!("{}/scim/v2", server.uri()).parse().unwrap(),
        token: "t0ken".to_owned().into(),
        role_attribute: RoleAttribute::Roles,
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

fn scim_error(status: u16, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": status.to_string(),
            "detail": detail,
        }))
}

/// A 503 whose `Retry-After` is an HTTP-date two seconds after its own `Date`,
/// from a server whose clock is an hour behind this host's (or this host's an
/// hour ahead). Measured against this host's clock the date was long past, and
/// the retry went out at once, into the maintenance window; measured against
/// the answer's `Date` it waits the two seconds asked.
#[tokio::test]
async fn a_retry_after_date_counts_from_the_servers_clock_not_ours() {
    let server = MockServer::start().await;
    let server_now = SystemTime::now() - Duration::from_secs(3600);
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(
            scim_error(503, "maintenance")
                .insert_header("date", httpdate::fmt_http_date(server_now).as_str())
                .insert_header(
                    "retry-after",
                    httpdate::fmt_http_date(server_now + Duration::from_secs(2)).as_str(),
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let client = client_with(
        &server,
        RetryPolicy {
            max_retry_after: Duration::from_secs(10),
            ..RetryPolicy::immediate(3)
        },
    );
    let started = std::time::Instant::now();
    client.set_active("u1", false).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(client.stats().retries, 1);
}
