//! The SCIM 2.0 workspace client against wiremock providers with known quirks, and
//! (ignored) against a real third-party server, scim2-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seatwarden::model::{AccountSpec, Attribute, AttributeChange, Role};
use seatwarden::retry::{RetryPolicy, Transient};
use seatwarden::workspace::{Progress, RoleAttribute, ScimClient, ScimSettings, WorkspaceError};
use serde_json::{Value, json};
use wiremock::matchers::{any, body_json, header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "s3cr3t-t0ken-value";

fn settings(base: &str) -> ScimSettings {
    ScimSettings {
        base_url: base.parse().unwrap(),
        token: TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 4,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry: RetryPolicy::immediate(3),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    }
}

fn client_with(server: &MockServer, tweak: impl FnOnce(&mut ScimSettings)) -> ScimClient {
    let mut s = settings(&format!("{}/scim/v2", server.uri()));
    tweak(&mut s);
    ScimClient::new(s).unwrap()
}

fn client(server: &MockServer) -> ScimClient {
    client_with(server, |_| {})
}

fn user(i: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": format!("u{i}"),
        "userName": format!("user{i}@example.com"),
        "active": true,
    })
}

fn list(total: Option<usize>, resources: Vec<Value>) -> ResponseTemplate {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "Resources": resources,
    });
    if let Some(total) = total {
        body["totalResults"] = total.into();
    }
    ResponseTemplate::new(200).set_body_json(body)
}

fn query(req: &Request, name: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn start_count(req: &Request) -> (usize, usize) {
    let start = query(req, "startIndex").map_or(1, |s| s.parse().unwrap());
    let count = query(req, "count").map_or(0, |s| s.parse().unwrap());
    (start, count)
}

/// A well-behaved /Users of `n` users; `total` overrides what totalResults says.
fn users_provider(
    n: usize,
    total: impl Fn(usize) -> Option<usize> + Send + Sync + 'static,
) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static {
    move |req: &Request| {
        let (start, count) = start_count(req);
        let items: Vec<Value> = (start..=n).take(count).map(user).collect();
        let len = items.len();
        list(total(len), items)
    }
}

async fn mount_empty_groups(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(Some(0), vec![]))
        .mount(server)
        .await;
}

async fn user_requests(server: &MockServer) -> Vec<(usize, usize)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/scim/v2/Users")
        .map(start_count)
        .collect()
}

fn ids(accounts: &[seatwarden::model::Account]) -> Vec<String> {
    accounts.iter().map(|a| a.id.clone()).collect()
}

fn expected_ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("u{i}")).collect()
}

fn no_progress(_: Progress) {}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn missing_service_provider_config_is_tolerated() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404).set_body_string("Not Found"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users_provider(3, |_| Some(3)))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 50);
    client.discover().await.unwrap();
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(3));
    // A first page shorter than asked is checked for a provider paging by less.
    assert_eq!(user_requests(&server).await, vec![(1, 50), (4, 50)]);
}

#[tokio::test]
async fn discovery_rejects_a_bad_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"status": "401", "detail": "bad token"})),
        )
        .mount(&server)
        .await;
    let err = client(&server).discover().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
}

/// A 500 may be a provider's answer to a path it does not serve, and is
/// tolerated as a missing `/ServiceProviderConfig`; a 503 past the retries is a
/// gateway with no service behind it, and fails the discovery.
#[tokio::test]
async fn discovery_fails_on_a_gateway_without_its_service() {
    for (status, fails) in [(500, false), (502, true), (503, true), (504, true)] {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let discovered = client(&server).discover().await;
        assert_eq!(discovered.is_err(), fails, "{status}: {discovered:?}");
        if let Err(e) = discovered {
            assert_eq!(e.status(), Some(status), "{e}");
        }
    }
}

#[tokio::test]
async fn max_results_caps_the_page_size() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "patch": {"supported": true},
            "filter": {"supported": true, "maxResults": 2},
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users_provider(5, |_| Some(5)))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.max_concurrency = 1);
    client.discover().await.unwrap();
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(5));
    assert_eq!(user_requests(&server).await, vec![(1, 2), (3, 2), (5, 2)]);
}

// ---------------------------------------------------------------- paging

#[tokio::test]
async fn pages_through_total_results_sequentially_and_concurrently() {
    for concurrency in [1, 4] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(users_provider(7, |_| Some(7)))
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        let client = client_with(&server, |s| {
            s.page_size = 3;
            s.max_concurrency = concurrency;
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = {
            let seen = Arc::clone(&seen);
            move |p: Progress| seen.lock().unwrap().push(p)
        };
        let snapshot = client.snapshot(&recorder).await.unwrap();
        assert_eq!(
            ids(&snapshot.accounts),
            expected_ids(7),
            "concurrency {concurrency}"
        );
        let mut requests = user_requests(&server).await;
        requests.sort_unstable();
        assert_eq!(
            requests,
            vec![(1, 3), (4, 3), (7, 3)],
            "concurrency {concurrency}"
        );
        let accounts: Vec<(u64, u64)> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.what == "accounts")
            .map(|p| (p.pages, p.objects))
            .collect();
        assert_eq!(accounts, vec![(1, 3), (2, 6), (3, 7)]);
        assert!(seen.lock().unwrap().iter().any(|p| p.what == "groups"));
    }
}

#[tokio::test]
async fn total_results_equal_to_the_page_size_is_not_believed() {
    let server = MockServer::start().await;
    // 8 users, but totalResults always says how many are on the page.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users_provider(8, Some))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 3);
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(8));
    assert_eq!(user_requests(&server).await, vec![(1, 3), (4, 3), (7, 3)]);
}

/// A provider that pages by a size of its own, smaller than asked, and announces
/// each page's length as `totalResults` (apis.md: `count` ignored, `totalResults`
/// equal to the page size): everyone past the first page is listed.
#[tokio::test]
async fn a_provider_paging_by_a_smaller_size_than_asked_is_paged_on() {
    for concurrency in [1, 4] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(|req: &Request| {
                let (start, _) = start_count(req);
                let items: Vec<Value> = (start..=8).take(3).map(user).collect();
                list(Some(items.len()), items)
            })
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        let client = client_with(&server, |s| {
            s.page_size = 5;
            s.max_concurrency = concurrency;
        });
        let (snapshot, whole) = client.snapshot_whole(&no_progress).await.unwrap();
        assert_eq!(
            ids(&snapshot.accounts),
            expected_ids(8),
            "concurrency {concurrency}"
        );
        assert!(whole);
        assert_eq!(
            user_requests(&server).await,
            vec![(1, 5), (4, 5), (7, 5)],
            "concurrency {concurrency}"
        );
    }
}

/// An account deleted from a page already read shifts the next one back onto that
/// page: the listing skips it, yet ends as long as the new total. Measured against
/// the largest total announced, it is not whole, so nothing absent from it is
/// taken as gone (verification reads such objects on their own).
#[tokio::test]
async fn a_deletion_behind_the_listing_leaves_it_not_whole() {
    for concurrency in [1, 4] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(|req: &Request| match start_count(req).0 {
                // u1, u2 of u1..u3; then u1 is deleted, and u3 is second of two.
                1 => list(Some(3), (1..=2).map(user).collect()),
                _ => list(Some(2), vec![]),
            })
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        let client = client_with(&server, |s| {
            s.page_size = 2;
            s.max_concurrency = concurrency;
        });
        let (snapshot, whole) = client.snapshot_whole(&no_progress).await.unwrap();
        assert_eq!(ids(&snapshot.accounts), expected_ids(2), "{concurrency}");
        assert!(!whole, "u3 was never read (concurrency {concurrency})");
    }
}

/// The price of the above: an honest listing shorter than the page asked costs
/// one more request, and a provider refusing that startIndex past its total
/// with 400 has said the listing ended.
#[tokio::test]
async fn a_short_listing_ends_at_a_refused_start_index_past_its_total() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| match start_count(req).0 {
            1 => list(Some(2), (1..=2).map(user).collect()),
            _ => ResponseTemplate::new(400).set_body_json(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "400", "scimType": "invalidValue", "detail": "startIndex out of range"
            })),
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 5);
    let (snapshot, whole) = client.snapshot_whole(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(2));
    assert!(whole);
    assert_eq!(user_requests(&server).await, vec![(1, 5), (3, 5)]);

    // Any other failure of that check (422, a 5xx that outlasts the retries) ends
    // the listing too: whole by the provider's own count, it must not fail.
    for status in [422, 503] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(move |req: &Request| match start_count(req).0 {
                1 => list(Some(2), (1..=2).map(user).collect()),
                _ => ResponseTemplate::new(status),
            })
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        let client = client_with(&server, |s| s.page_size = 5);
        let (snapshot, whole) = client.snapshot_whole(&no_progress).await.unwrap();
        assert_eq!(ids(&snapshot.accounts), expected_ids(2), "{status}");
        assert!(whole, "{status}");
    }
}

/// A provider that sends no `totalResults`, with pages that come short before
/// the end (users hidden after paging): only an empty page ends the listing, so
/// every user is listed.
#[tokio::test]
async fn without_a_total_short_pages_do_not_end_the_listing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            // Pages of 5, 4, 5, 2 users: the second lost one to a filter.
            let (start, _) = start_count(req);
            let (from, size) = match start {
                1 => (1, 5),
                6 => (6, 4),
                10 => (10, 5),
                15 => (15, 2),
                _ => (17, 0),
            };
            list(None, (from..).take(size).map(user).collect())
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 5);
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(16));

    // One that answers a startIndex past its end with 400: the end of the listing.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            let (start, _) = start_count(req);
            match start {
                1 => list(None, (1..=5).map(user).collect()),
                6 => list(None, (6..=7).map(user).collect()),
                _ => ResponseTemplate::new(400).set_body_json(json!({
                    "status": "400", "scimType": "invalidValue", "detail": "startIndex out of range"
                })),
            }
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 5);
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(7));
}

#[tokio::test]
async fn a_server_ignoring_count_is_paged_by_what_it_sends() {
    let server = MockServer::start().await;
    // Asked for 2, sends 3 a page (honours startIndex), no itemsPerPage.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            let (start, _) = start_count(req);
            list(Some(8), (start..=8).take(3).map(user).collect())
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    for concurrency in [1, 4] {
        let client = client_with(&server, |s| {
            s.page_size = 2;
            s.max_concurrency = concurrency;
        });
        let snapshot = client.snapshot(&no_progress).await.unwrap();
        assert_eq!(
            ids(&snapshot.accounts),
            expected_ids(8),
            "concurrency {concurrency}"
        );
    }
    let mut starts: Vec<usize> = user_requests(&server).await.iter().map(|r| r.0).collect();
    starts.sort_unstable();
    assert_eq!(starts, vec![1, 1, 4, 4, 7, 7]);
}

/// Pages of varying size (a provider that sizes them by bytes): five users on the
/// first page, one on every other. The pages asked concurrently from the first
/// one's size would skip users, so the listing goes on one page after the other
/// from the first short one, and every user is listed.
#[tokio::test]
async fn pages_smaller_than_the_first_are_followed_one_by_one_without_gaps() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            let (start, _) = start_count(req);
            let size = if start == 1 { 5 } else { 1 };
            list(Some(30), (start..=30).take(size).map(user).collect())
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| {
        s.page_size = 5;
        s.max_concurrency = 4;
    });
    let (snapshot, whole) = client.snapshot_whole(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(30));
    assert!(whole);
}

#[tokio::test]
async fn a_page_without_new_ids_stops_the_loop() {
    let server = MockServer::start().await;
    // Ignores startIndex: every page is the first one; totalResults claims 1000.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(Some(1000), (1..=3).map(user).collect()))
        .expect(2)
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| {
        s.page_size = 3;
        s.max_concurrency = 1;
    });
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(3));
}

#[tokio::test]
async fn a_page_without_new_ids_stops_the_concurrent_loop_too() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(Some(1_000_000), (1..=3).map(user).collect()))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| {
        s.page_size = 3;
        s.max_concurrency = 4;
    });
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(3));
    let requests = user_requests(&server).await.len();
    assert!(
        requests <= 1 + 4 + 1,
        "stopped early, made {requests} requests"
    );
}

#[tokio::test]
async fn an_empty_page_stops_the_loop() {
    let server = MockServer::start().await;
    // No totalResults at all; 3 users on a page of 3, then nothing.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users_provider(3, |_| None))
        .mount(&server)
        .await;
    // totalResults says 10 but the second page is empty.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(|req: &Request| {
            let (start, _) = start_count(req);
            let groups = if start == 1 {
                (1..=3)
                    .map(|i| json!({"id": format!("g{i}"), "displayName": format!("G{i}")}))
                    .collect()
            } else {
                vec![]
            };
            list(Some(10), groups)
        })
        .mount(&server)
        .await;
    let client = client_with(&server, |s| {
        s.page_size = 3;
        s.max_concurrency = 1;
    });
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(3));
    assert_eq!(user_requests(&server).await, vec![(1, 3), (4, 3)]);
    assert_eq!(snapshot.groups.len(), 3);
    assert!(snapshot.groups.iter().all(|g| g.members.is_empty()));
    let group_requests = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/scim/v2/Groups")
        .count();
    assert_eq!(group_requests, 2);
}

#[tokio::test]
async fn never_sends_count_zero() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"filter": {"supported": true, "maxResults": 0}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("count", "0"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users_provider(2, |_| Some(2)))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 0);
    client.discover().await.unwrap();
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(2));
    let requests = user_requests(&server).await;
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|(_, count)| *count >= 1),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_list_response_without_resources_is_malformed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"totalResults": 5})))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let err = client(&server).snapshot(&no_progress).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("GET /Users?startIndex=1&count=100"), "{text}");
    assert!(text.contains("no Resources"), "{text}");
}

#[tokio::test]
async fn a_user_without_id_is_malformed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"userName": "a"})))
        .mount(&server)
        .await;
    let err = client(&server).get_account("u1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "GET /Users/u1: malformed response: User without id"
    );
}

// ---------------------------------------------------------------- reads

#[tokio::test]
async fn accounts_parse_tolerantly() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_json(json!({
                    "id": "u1", "userName": "ada@example.com", "externalId": "okta-1",
                    "name": {"givenName": "Ada", "familyName": "Lovelace"},
                    "displayName": "Ada L",
                    "emails": [{"value": "home@example.com", "type": "home"},
                               {"value": "ada@example.com", "type": "work"}],
                    "active": "False",
                    "roles": [{"value": "Editor", "primary": true}],
                })),
        )
        .mount(&server)
        .await;
    let account = client(&server).get_account("u1").await.unwrap().unwrap();
    assert_eq!(
        account,
        seatwarden::model::Account {
            id: "u1".into(),
            user_name: "ada@example.com".into(),
            external_id: Some("okta-1".into()),
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            display_name: Some("Ada L".into()),
            email: Some("ada@example.com".into()),
            active: false,
            roles: vec!["Editor".into()],
        }
    );
}

#[tokio::test]
async fn not_found_reads_are_none() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "404", "detail": "not found"})))
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(client.get_account("nope").await.unwrap(), None);
    assert_eq!(client.get_group("nope").await.unwrap(), None);
    // A 404 is not retried.
    assert_eq!(client.stats().requests, 2);
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn filter_values_are_escaped() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param(
            "filter",
            r#"userName eq "a\"b\\c@example.com""#,
        ))
        .respond_with(list(
            Some(1),
            vec![json!({"id": "u1", "userName": "a\"b\\c@example.com"})],
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", r#"displayName eq "R&D \"core\"""#))
        .respond_with(list(Some(0), vec![]))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let found = client
        .find_account_by_user_name(r#"a"b\c@example.com"#)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "u1");
    assert_eq!(
        client.find_group_by_name(r#"R&D "core""#).await.unwrap(),
        None
    );
    let raw = server.received_requests().await.unwrap()[0]
        .url
        .query()
        .unwrap()
        .to_owned();
    assert!(
        raw.starts_with("filter=userName%20eq%20%22a%5C%22b%5C%5Cc%40example.com%22"),
        "{raw}"
    );
}

/// A provider that ignores a filter it does not support answers with some other
/// account or group: a single answer is not taken unless it is the one asked for
/// (compared as the plan compares, without regard to case, Unicode included).
#[tokio::test]
async fn a_lookup_answered_with_something_else_finds_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param(
            "filter",
            r#"userName eq "new.hire@example.com""#,
        ))
        .respond_with(list(
            Some(1),
            vec![json!({"id": "admin", "userName": "admin@example.com"})],
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("filter", r#"userName eq "ÉLODIE@example.fr""#))
        .respond_with(list(
            Some(1),
            vec![json!({"id": "e1", "userName": "élodie@example.fr"})],
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", r#"displayName eq "Engineering""#))
        .respond_with(list(
            Some(1),
            vec![json!({"id": "g1", "displayName": "Sales", "members": []})],
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", r#"displayName eq "Design""#))
        .respond_with(list(
            Some(1),
            vec![json!({"id": "g2", "displayName": "design", "members": []})],
        ))
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(
        client
            .find_account_by_user_name("new.hire@example.com")
            .await
            .unwrap(),
        None
    );
    let found = client
        .find_account_by_user_name("ÉLODIE@example.fr")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "e1");
    assert_eq!(
        client.find_group_by_name("Engineering").await.unwrap(),
        None
    );
    let group = client.find_group_by_name("Design").await.unwrap().unwrap();
    assert_eq!(group.id, "g2");
}

/// A group as a provider that leaves `members` out answers it (AWS IAM Identity
/// Center's GetGroup example: id, meta, schemas, displayName).
fn group_without_members(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "meta": {"resourceType": "Group", "created": "2020-04-06T16:48:19Z",
                 "lastModified": "2020-04-06T16:48:19Z"},
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": name,
    })
}

/// A provider that leaves `members` out of its Group listings (a filter by id
/// too) but sends them on a read of the group: a managed group is read again on
/// its own, so its members are known; a group the policy does not manage is not,
/// nor one listed with `members` (empty is an answer).
#[tokio::test]
async fn a_managed_group_listed_without_members_is_read_on_its_own() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users_provider(2, Some))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(|req: &Request| {
            let editors = group_without_members("g1", "Taskade Editors");
            match query(req, "filter") {
                Some(_) => list(Some(1), vec![editors]),
                None => {
                    let mut viewers = group_without_members("g3", "Taskade Viewers");
                    viewers["members"] = json!([]);
                    list(
                        Some(3),
                        vec![editors, group_without_members("g2", "Marketing"), viewers],
                    )
                }
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1",
            "displayName": "Taskade Editors",
            "members": [
                {"value": "u1", "display": "user1@example.com"},
                {"value": "u2", "display": "user2@example.com"},
            ],
            "meta": {"resourceType": "Group"},
        })))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/scim/v2/Groups/g[23]$"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    // Mappings name groups as people write them: case does not matter.
    let client = client_with(&server, |s| {
        s.managed_groups = vec!["taskade editors".to_owned(), "Taskade Viewers".to_owned()];
    });
    let snapshot = client.snapshot(&no_progress).await.unwrap();
    let members: Vec<(&str, Vec<String>)> = snapshot
        .groups
        .iter()
        .map(|g| (g.id.as_str(), g.members.clone()))
        .collect();
    assert_eq!(
        members,
        [
            ("g1", vec!["u1".to_owned(), "u2".to_owned()]),
            ("g2", vec![]),
            ("g3", vec![])
        ]
    );
    // Verification reads groups by id: the same.
    let read = client.groups_by_id(&["g1".to_owned()]).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].members, ["u1", "u2"]);
}

// ---------------------------------------------------------------- writes

async fn capture_patches(server: &MockServer, status: u16) {
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(status))
        .mount(server)
        .await;
}

async fn patch_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| {
            json!({
                "path": r.url.path(),
                "content_type": r.headers.get("content-type").map(|v| v.to_str().unwrap()),
                "body": serde_json::from_slice::<Value>(&r.body).unwrap(),
            })
        })
        .collect()
}

#[tokio::test]
async fn patch_answered_204_or_200_is_success() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u204"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u200"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "u200", "userName": "x", "active": false})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    client.set_active("u204", false).await.unwrap();
    client.set_active("u200", false).await.unwrap();
    assert_eq!(
        patch_bodies(&server).await[0]["body"],
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "replace", "path": "active", "value": false}]})
    );
}

#[tokio::test]
async fn role_patch_bodies() {
    let server = MockServer::start().await;
    capture_patches(&server, 204).await;
    client(&server)
        .set_role("u1", Role::Maintainer)
        .await
        .unwrap();
    let ext = client_with(&server, |s| {
        s.role_attribute =
            RoleAttribute::parse("urn:ietf:params:scim:schemas:extension:taskade:2.0:User:role")
                .unwrap();
    });
    ext.set_role("u2", Role::Viewer).await.unwrap();
    let none = client_with(&server, |s| s.role_attribute = RoleAttribute::None);
    none.set_role("u3", Role::Owner).await.unwrap();
    assert_eq!(none.stats().requests, 0);
    insta::assert_json_snapshot!(patch_bodies(&server).await);
}

/// An email change rewrites the entry seatwarden reads and keeps the others (a
/// PATCH replaces a multi-valued attribute whole); an account without emails gets
/// one work email.
#[tokio::test]
async fn attribute_patch_bodies() {
    let server = MockServer::start().await;
    capture_patches(&server, 200).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "u1", "userName": "old@example.com",
            "emails": [
                {"value": "ada@home.example", "type": "home"},
                {"Value": "old@example.com", "type": "work", "primary": true},
            ],
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "u2", "userName": "b"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let change = |attribute, to: Option<&str>| AttributeChange {
        attribute,
        from: Some("old".into()),
        to: to.map(str::to_owned),
    };
    let client = client(&server);
    client
        .update_attributes(
            "u1",
            &[
                change(Attribute::UserName, Some("new@example.com")),
                change(Attribute::GivenName, Some("Ada")),
                change(Attribute::DisplayName, None),
                change(Attribute::Email, Some("new@example.com")),
            ],
        )
        .await
        .unwrap();
    client
        .update_attributes("u2", &[change(Attribute::Email, Some("b@example.com"))])
        .await
        .unwrap();
    // Without an email change nothing is read first.
    client
        .update_attributes("u3", &[change(Attribute::FamilyName, Some("L"))])
        .await
        .unwrap();
    client.update_attributes("u1", &[]).await.unwrap();
    assert_eq!(client.stats().requests, 5);
    insta::assert_json_snapshot!(patch_bodies(&server).await);
}

/// PATCH is atomic: a batch removing one member who is already gone is refused
/// whole with `noTarget`. The batch is then removed member by member, the gone
/// one's `noTarget` being what was wanted; another refusal is still an error.
#[tokio::test]
async fn a_removal_batch_refused_for_a_member_already_gone_is_removed_one_by_one() {
    let server = MockServer::start().await;
    let no_target = || {
        ResponseTemplate::new(400).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400",
            "scimType": "noTarget",
            "detail": "no member matches",
        }))
    };
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(move |req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let ops = body["Operations"].as_array().unwrap();
            let gone = ops
                .iter()
                .any(|op| op["path"].as_str().unwrap().contains("\"gone\""));
            if gone {
                no_target()
            } else {
                ResponseTemplate::new(204)
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Groups/g2"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "400", "scimType": "invalidPath", "detail": "no"
        })))
        .mount(&server)
        .await;
    let client = client(&server);
    client
        .remove_members("g1", &["gone".to_owned(), "m2".to_owned()])
        .await
        .unwrap();
    let bodies = patch_bodies(&server).await;
    let ops: Vec<usize> = bodies
        .iter()
        .map(|b| b["body"]["Operations"].as_array().unwrap().len())
        .collect();
    assert_eq!(ops, [2, 1, 1], "the batch, then each member on its own");
    let err = client
        .remove_members("g2", &["m3".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}

#[tokio::test]
async fn member_patch_bodies() {
    let server = MockServer::start().await;
    capture_patches(&server, 204).await;
    let client = client(&server);
    let many: Vec<String> = (0..150).map(|i| format!("u{i}")).collect();
    client.add_members("g1", &many).await.unwrap();
    client.add_members("g1", &[]).await.unwrap();
    client
        .remove_members("g1", &["u1".to_owned(), "odd\"id".to_owned()])
        .await
        .unwrap();
    let bodies = patch_bodies(&server).await;
    assert_eq!(bodies.len(), 3);
    // The answer need not repeat the (large) member list.
    let queries: Vec<Option<String>> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| r.url.query().map(str::to_owned))
        .collect();
    assert_eq!(
        queries,
        vec![Some("excludedAttributes=members".to_owned()); 3]
    );
    let sizes: Vec<usize> = bodies[..2]
        .iter()
        .map(|b| {
            b["body"]["Operations"][0]["value"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, vec![100, 50]);
    let mut shown = bodies.clone();
    // Keep the golden file readable: the first two members of each add.
    for b in &mut shown[..2] {
        let value = b["body"]["Operations"][0]["value"].as_array_mut().unwrap();
        value.truncate(2);
    }
    insta::assert_json_snapshot!(shown);
}

#[tokio::test]
async fn create_account_posts_the_spec() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .and(header("content-type", "application/scim+json"))
        .and(body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@example.com",
            "externalId": "okta-1",
            "active": true,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
            "roles": [{"value": "Editor", "primary": true}],
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "new-1", "userName": "ada@example.com", "externalId": "okta-1",
            "roles": [{"value": "Editor"}]})))
        .expect(1)
        .mount(&server)
        .await;
    let spec = AccountSpec {
        user_name: "ada@example.com".into(),
        external_id: "okta-1".into(),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        display_name: None,
        email: Some("ada@example.com".into()),
        role: Some(Role::Editor),
    };
    let account = client(&server).create_account(&spec).await.unwrap();
    assert_eq!(account.id, "new-1");
    assert!(account.active);
    assert_eq!(account.role(), Some(Role::Editor));
}

/// A redirect is not followed (a POST would come back as a GET, and the token
/// would be dropped on another host): the error says where it pointed.
#[tokio::test]
async fn a_redirect_is_an_error_that_names_where_it_points() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(301).insert_header("location", "/scim/v2/Users/"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let spec = AccountSpec {
        user_name: "ada@example.com".into(),
        external_id: "okta-1".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        role: None,
    };
    let err = client(&server).create_account(&spec).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("redirected to /scim/v2/Users/"), "{text}");
    assert!(text.contains("workspace.url"), "{text}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn created_without_a_body_is_read_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .expect(2)
        .mount(&server)
        .await;
    // Not there before the POST; there after it.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", r#"displayName eq "G""#))
        .respond_with(list(Some(0), vec![]))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", r#"displayName eq "G""#))
        .respond_with(list(Some(1), vec![json!({"id": "g1", "displayName": "G"})]))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(Some(0), vec![]))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(client.create_group("G").await.unwrap().id, "g1");
    let spec = AccountSpec {
        user_name: "ghost".into(),
        external_id: "e".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        role: None,
    };
    let err = client.create_account(&spec).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::Malformed { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("POST /Users: malformed response: HTTP 201 without a body"),
        "{err}"
    );
}

#[tokio::test]
async fn conflict_without_scim_type_is_a_conflict() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"detail": "already exists"})))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(Some(0), vec![]))
        .mount(&server)
        .await;
    let client = client(&server);
    let spec = AccountSpec {
        user_name: "a".into(),
        external_id: "e".into(),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        role: None,
    };
    let err = client.create_account(&spec).await.unwrap_err();
    assert!(err.is_conflict());
    assert!(!err.is_transient());
    assert_eq!(err.to_string(), "POST /Users: HTTP 409: already exists");
    assert!(client.create_group("G").await.unwrap_err().is_conflict());
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn error_body_with_a_numeric_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": 400, "scimType": "invalidFilter", "detail": "filter not supported"})))
        .mount(&server)
        .await;
    let err = client(&server)
        .find_account_by_user_name("a")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(
        err.to_string(),
        r#"GET /Users?filter=userName eq "a"&startIndex=1&count=100: HTTP 400 (invalidFilter): filter not supported"#
    );
}

#[tokio::test]
async fn non_scim_html_error_body() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("content-type", "text/html")
                .set_body_string(format!(
                    "<html>\n<body><h1>Forbidden</h1>{}</body></html>",
                    "x".repeat(5000)
                )),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).get_group("g1").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "GET /Groups/g1: HTTP 403: an HTML page (\"Forbidden\"), not SCIM JSON: a web \
             server, proxy, firewall or gateway answered instead of the SCIM service"
        ),
        "{text}"
    );
    assert!(
        text.len() < 500,
        "detail is truncated: {} chars",
        text.len()
    );
}

#[tokio::test]
async fn the_token_is_sent_and_never_shown() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(|req: &Request| {
            let accept = req.headers.get("accept").unwrap().to_str().unwrap();
            assert_eq!(accept, "application/scim+json, application/json");
            // A provider that echoes the request headers in its error.
            let auth = req
                .headers
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            ResponseTemplate::new(400).set_body_json(
                json!({"status": "400", "detail": format!("bad request with {auth}")}),
            )
        })
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).get_account("u1").await.unwrap_err();
    assert_eq!(err.status(), Some(400), "the token was sent: {err}");
    assert!(!err.to_string().contains(TOKEN), "{err}");
    assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
    assert!(format!("{:?}", client(&server)).find(TOKEN).is_none());

    // Transport errors too.
    let unreachable = ScimClient::new(settings("http://127.0.0.1:9/scim/v2")).unwrap();
    let err = unreachable.get_account("u1").await.unwrap_err();
    assert!(matches!(err, WorkspaceError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(!err.to_string().contains(TOKEN));
    assert!(err.to_string().starts_with("GET /Users/u1: "), "{err}");
    // Which server: the endpoint is only a method and a path.
    assert!(
        err.to_string()
            .starts_with("GET /Users/u1: connection failed (127.0.0.1:9)"),
        "{err}"
    );
}

/// The token is redacted before an error detail is cut to length (a piece of it
/// would no longer match), and from a 2xx body that is not JSON (a debugging
/// proxy that echoes the request headers in an HTML page).
#[tokio::test]
async fn no_piece_of_the_token_reaches_a_long_or_malformed_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "status": "400",
            "detail": format!("{} Authorization: Bearer {TOKEN}", "x".repeat(265)),
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u2"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!(
            "<html><pre>Authorization: Bearer {TOKEN}</pre></html>"
        )))
        .mount(&server)
        .await;
    // The token JSON-escaped in the body (as PHP writes `/` as `\/`): only the
    // decoded detail shows it.
    let escaped = format!("\\u{:04x}{}", u32::from(TOKEN.as_bytes()[0]), &TOKEN[1..]);
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u3"))
        .respond_with(ResponseTemplate::new(400).set_body_string(format!(
            r#"{{"status": "400", "detail": "Authorization: Bearer {escaped}"}}"#
        )))
        .mount(&server)
        .await;
    let client = client(&server);
    for id in ["u1", "u2", "u3"] {
        let err = client.get_account(id).await.unwrap_err();
        let text = format!("{err} {err:?}");
        for piece in TOKEN.as_bytes().windows(6) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!text.contains(piece), "{id}: {piece:?} in {text}");
        }
        assert!(text.contains("[redacted]"), "{id}: {text}");
    }
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn retry_after_429_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "u1", "userName": "a"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_with(&server, |s| {
        s.retry = RetryPolicy {
            max_retry_after: Duration::from_secs(2),
            ..RetryPolicy::immediate(3)
        };
    });
    let started = std::time::Instant::now();
    let account = client.get_account("u1").await.unwrap().unwrap();
    assert_eq!(account.id, "u1");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().retries, 1);
    assert_eq!(client.stats().requests, 2);
}

/// A 429 throttles the token, not one request: the next request waits for the
/// `Retry-After` too, instead of being refused in turn.
#[tokio::test]
async fn a_429_pauses_every_request_until_its_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "u2", "userName": "b"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client_with(&server, |s| {
        s.retry = RetryPolicy {
            max_retry_after: Duration::from_secs(2),
            ..RetryPolicy::immediate(0)
        };
    });
    let started = std::time::Instant::now();
    let refused = client.get_account("u1").await.unwrap_err();
    assert_eq!(refused.status(), Some(429));
    let account = client.get_account("u2").await.unwrap().unwrap();
    assert_eq!(account.id, "u2");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "the second request did not wait: {:?}",
        started.elapsed()
    );
}

/// The pause is capped like a retry's wait, so one answer cannot park a run.
#[tokio::test]
async fn a_long_retry_after_pauses_no_longer_than_the_cap() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "3600"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "u2", "userName": "b"})),
        )
        .mount(&server)
        .await;
    let client = client_with(&server, |s| {
        s.retry = RetryPolicy {
            max_retry_after: Duration::from_millis(300),
            ..RetryPolicy::immediate(0)
        };
    });
    let started = std::time::Instant::now();
    assert_eq!(
        client.get_account("u1").await.unwrap_err().status(),
        Some(503)
    );
    tokio::time::timeout(Duration::from_secs(20), client.get_account("u2"))
        .await
        .expect("paused past the cap")
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    // Uncapped, the pause would be an hour; 10 s leaves room for a loaded machine
    // (2 s left little).
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    client.set_active("u1", true).await.unwrap();
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_the_budget() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .expect(4)
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.get_account("u1").await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(
        client.stats(),
        seatwarden::workspace::ClientStats {
            requests: 4,
            retries: 3
        }
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"status": "400", "scimType": "invalidPath", "detail": "no"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client.set_active("u1", false).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_transient());
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn unusable_service_provider_configs_are_tolerated() {
    let answers = [
        ResponseTemplate::new(501)
            .set_body_json(json!({"status": 501, "detail": "not implemented"})),
        ResponseTemplate::new(500).set_body_string("<html>boom</html>"),
        ResponseTemplate::new(200).set_body_string("<html>hello</html>"),
        ResponseTemplate::new(200).set_body_json(json!({"filter": "yes"})),
    ];
    for answer in answers {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/ServiceProviderConfig"))
            .respond_with(answer)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(users_provider(3, |_| Some(3)))
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        Mock::given(method("PATCH"))
            .and(path("/scim/v2/Users/u2"))
            .and(body_json(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}],
            })))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server);
        client.discover().await.unwrap();
        // The client goes on with its defaults: the configured page size, and
        // PATCH for a deactivation.
        let snapshot = client.snapshot(&no_progress).await.unwrap();
        assert_eq!(ids(&snapshot.accounts), expected_ids(3));
        assert_eq!(user_requests(&server).await, vec![(1, 100), (4, 100)]);
        client.set_active("u2", false).await.unwrap();
        server.verify().await;
    }
}

#[tokio::test]
async fn concurrency_and_rate_are_bounded() {
    const DELAY: Duration = Duration::from_millis(300);
    let server = MockServer::start().await;
    // When each request arrived. Its answer leaves DELAY later at the earliest, so
    // a request that arrives less than DELAY after another one overlapped it.
    let arrivals = Arc::new(Mutex::new(Vec::<std::time::Instant>::new()));
    let recorded = Arc::clone(&arrivals);
    Mock::given(method("GET"))
        .respond_with(move |_: &Request| {
            recorded.lock().unwrap().push(std::time::Instant::now());
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "u1", "userName": "a"}))
                .set_delay(DELAY)
        })
        .mount(&server)
        .await;
    // The most requests in flight together: at each arrival, those that arrived
    // less than DELAY before it (itself included). Load only spreads arrivals out,
    // so it can hide a breach but never invent one.
    let most_in_flight = |arrivals: &[std::time::Instant]| {
        arrivals
            .iter()
            .enumerate()
            .map(|(i, at)| {
                arrivals[..=i]
                    .iter()
                    .filter(|before| at.duration_since(**before) < DELAY)
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    // Two at a time: six requests take three rounds, never three at once.
    let client = client_with(&server, |s| s.max_concurrency = 2);
    let started = std::time::Instant::now();
    let all = futures::future::join_all((0..6).map(|_| client.get_account("u1"))).await;
    assert!(all.iter().all(Result::is_ok));
    let elapsed = started.elapsed();
    let seen = std::mem::take(&mut *arrivals.lock().unwrap());
    assert_eq!(seen.len(), 6);
    assert_eq!(
        most_in_flight(&seen),
        2,
        "{:?}",
        seen.iter()
            .map(|t| t.duration_since(seen[0]))
            .collect::<Vec<_>>()
    );
    // A lower bound only: an upper bound would make the test depend on machine load.
    assert!(elapsed >= Duration::from_millis(880), "{elapsed:?}");

    // Two per second (burst of two): the fourth request waits about a second.
    let client = client_with(&server, |s| {
        s.max_concurrency = 8;
        s.requests_per_second = 2;
    });
    let started = std::time::Instant::now();
    let all = futures::future::join_all((0..4).map(|_| client.get_account("u1"))).await;
    assert!(all.iter().all(Result::is_ok));
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn timeouts_are_transient_and_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .expect(2)
        .mount(&server)
        .await;
    let client = client_with(&server, |s| {
        s.timeout = Duration::from_millis(200);
        s.retry = RetryPolicy::immediate(1);
    });
    let err = client.get_account("u1").await.unwrap_err();
    assert!(err.is_transient());
    assert!(
        err.to_string().starts_with("GET /Users/u1: timed out"),
        "{err}"
    );
    assert_eq!(
        client.stats(),
        seatwarden::workspace::ClientStats {
            requests: 2,
            retries: 1
        }
    );
}

// ---------------------------------------------------------------- transport

/// A hand-rolled HTTP server on a std thread: `http10` answers HTTP/1.0 without a
/// length and closes (like Python's wsgiref); otherwise it answers HTTP/1.1 with
/// keep-alive but closes a connection, unanswered, on its second request.
fn closing_server(http10: bool) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                for served in 0.. {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if served == 1 {
                        return; // drop the connection with the request unanswered
                    }
                    let body = r#"{"id": "u1", "userName": "a"}"#;
                    let head = if http10 {
                        "HTTP/1.0 200 OK\r\nContent-Type: application/scim+json\r\n\r\n".to_owned()
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                    };
                    let _ = stream.write_all(format!("{head}{body}").as_bytes());
                    let _ = stream.flush();
                    if http10 {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/scim/v2")
}

#[tokio::test]
async fn servers_that_close_connections_are_survived() {
    for http10 in [true, false] {
        let client = ScimClient::new(settings(&closing_server(http10))).unwrap();
        for _ in 0..3 {
            let account = client.get_account("u1").await.unwrap().unwrap();
            assert_eq!(account.id, "u1");
        }
        let stats = client.stats();
        if http10 {
            assert_eq!(stats.retries, 0, "HTTP/1.0 connections are never reused");
        } else {
            // The second request went out on the kept-alive connection and was cut.
            assert!(stats.retries >= 1, "{stats:?}");
        }
    }
}

// ---------------------------------------------------------------- interop

/// Talks to a real scim2-server (`scripts/interop-setup.sh`, then
/// `scripts/interop-scim-server.sh start PORT TOKEN`), on a fresh tenant.
#[tokio::test]
#[ignore = "needs a running scim2-server: set SEATWARDEN_SCIM2_SERVER_URL and SEATWARDEN_SCIM2_SERVER_TOKEN"]
async fn interop_scim2_server_client_roundtrip() {
    let (Ok(url), Ok(token)) = (
        std::env::var("SEATWARDEN_SCIM2_SERVER_URL"),
        std::env::var("SEATWARDEN_SCIM2_SERVER_TOKEN"),
    ) else {
        panic!(
            "set SEATWARDEN_SCIM2_SERVER_URL (e.g. http://127.0.0.1:8089) and \
             SEATWARDEN_SCIM2_SERVER_TOKEN; start the server with \
             scripts/interop-setup.sh && scripts/interop-scim-server.sh start 8089 TOKEN"
        );
    };
    let tenant = format!(
        "seatwarden-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut s = settings(&format!("{}/{tenant}/v2", url.trim_end_matches('/')));
    s.token = token.into();
    s.page_size = 100;
    s.max_concurrency = 4;
    s.retry = RetryPolicy::default();
    let client = ScimClient::new(s).unwrap();
    client.discover().await.unwrap();

    // 250 accounts, 4 at a time.
    let specs: Vec<AccountSpec> = (0..250)
        .map(|i| AccountSpec {
            user_name: format!("user{i:03}@example.com"),
            external_id: format!("dir-{i:03}"),
            given_name: Some(format!("Given{i}")),
            family_name: Some("Family".into()),
            display_name: Some(format!("User {i}")),
            email: Some(format!("user{i:03}@example.com")),
            role: Some(Role::Viewer),
        })
        .collect();
    let created: Vec<_> = futures::future::try_join_all(specs.chunks(4).map(|chunk| {
        let client = client.clone();
        let chunk = chunk.to_vec();
        async move {
            let mut out = Vec::new();
            for spec in &chunk {
                out.push(client.create_account(spec).await?);
            }
            Ok::<_, WorkspaceError>(out)
        }
    }))
    .await
    .unwrap()
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(created.len(), 250);
    let id_of = |i: usize| created[i].id.clone();

    // A duplicate is a conflict; lookups by name find the right one.
    let dup = client.create_account(&specs[0]).await.unwrap_err();
    assert!(dup.is_conflict(), "{dup}");
    let found = client
        .find_account_by_user_name("USER007@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id_of(7));
    assert_eq!(client.get_account("does-not-exist").await.unwrap(), None);

    let group = client.create_group("Engineering \"core\"").await.unwrap();
    let members: Vec<String> = (0..120).map(id_of).collect();
    client.add_members(&group.id, &members).await.unwrap();
    client.set_role(&id_of(0), Role::Owner).await.unwrap();
    client.set_role(&id_of(1), Role::Editor).await.unwrap();
    for i in 200..210 {
        client.set_active(&id_of(i), false).await.unwrap();
    }
    let removed: Vec<String> = (100..120).map(id_of).collect();
    client.remove_members(&group.id, &removed).await.unwrap();
    client
        .update_attributes(
            &id_of(2),
            &[AttributeChange {
                attribute: Attribute::DisplayName,
                from: Some("User 2".into()),
                to: Some("Renamed".into()),
            }],
        )
        .await
        .unwrap();
    let by_name = client
        .find_group_by_name("Engineering \"core\"")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name.id, group.id);

    let pages = Arc::new(Mutex::new(0u64));
    let recorder = {
        let pages = Arc::clone(&pages);
        move |p: Progress| {
            if p.what == "accounts" {
                *pages.lock().unwrap() = p.pages;
            }
        }
    };
    let snapshot = client.snapshot(&recorder).await.unwrap();
    assert_eq!(*pages.lock().unwrap(), 3, "250 accounts in pages of 100");
    assert_eq!(snapshot.accounts.len(), 250);
    let by_id: std::collections::HashMap<&str, &seatwarden::model::Account> = snapshot
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        let account = by_id[id_of(i).as_str()];
        assert_eq!(account.user_name, spec.user_name);
        assert_eq!(
            account.external_id.as_deref(),
            Some(spec.external_id.as_str())
        );
        assert_eq!(account.email, spec.email);
        assert_eq!(account.given_name, spec.given_name);
        assert_eq!(account.active, !(200..210).contains(&i), "account {i}");
        let role = match i {
            0 => "Owner",
            1 => "Editor",
            _ => "Viewer",
        };
        assert_eq!(account.roles, vec![role.to_owned()], "account {i}");
        let display = if i == 2 {
            "Renamed".to_owned()
        } else {
            format!("User {i}")
        };
        assert_eq!(account.display_name.as_deref(), Some(display.as_str()));
    }
    assert_eq!(snapshot.groups.len(), 1);
    let listed: BTreeSet<String> = snapshot.groups[0].members.iter().cloned().collect();
    let expected: BTreeSet<String> = (0..100).map(id_of).collect();
    assert_eq!(listed, expected);
    assert_eq!(snapshot.groups[0].display_name, "Engineering \"core\"");

    // Verification reads objects many at a time with `id eq … or …`: scim2-server
    // answers with exactly the ones that exist.
    let wanted: Vec<String> = (0..60)
        .map(id_of)
        .chain(["does-not-exist".to_owned()])
        .collect();
    let batches = client.id_batches(wanted, usize::MAX);
    assert_eq!(batches.len(), 2, "about 30 ids a request");
    let mut found = Vec::new();
    for batch in &batches {
        found.extend(client.accounts_by_id(batch).await.unwrap());
    }
    let found: std::collections::BTreeMap<String, seatwarden::model::Account> =
        found.into_iter().map(|a| (a.id.clone(), a)).collect();
    let expected: BTreeSet<String> = (0..60).map(id_of).collect();
    assert_eq!(found.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(found[&id_of(0)].roles, vec!["Owner".to_owned()]);
    assert_eq!(found[&id_of(2)].display_name.as_deref(), Some("Renamed"));
    let groups = client
        .groups_by_id(std::slice::from_ref(&group.id))
        .await
        .unwrap();
    assert_eq!(groups.len(), 1);
    let members: BTreeSet<String> = groups[0].members.iter().cloned().collect();
    assert_eq!(members, (0..100).map(id_of).collect::<BTreeSet<_>>());
    assert!(client.id_filters_usable());

    client.delete_account(&id_of(249)).await.unwrap();
    assert_eq!(client.get_account(&id_of(249)).await.unwrap(), None);
    let stats = client.stats();
    eprintln!("scim2-server roundtrip: {stats:?}");
}

/// A `POST /Groups` answered 503 may still have created the group (the answer
/// came from a proxy, or after the provider's write): before trying again the
/// client looks the group up by name, and finding it there sends no second POST,
/// which would make a duplicate workspace. Not found, it is posted again.
#[tokio::test]
async fn a_group_create_whose_answer_was_lost_is_not_posted_twice() {
    let server = MockServer::start().await;
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g-new", "displayName": "Design", "members": []
    });
    Mock::given(method("POST"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", "displayName eq \"Design\""))
        .respond_with(list(Some(0), vec![]))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", "displayName eq \"Design\""))
        .respond_with(list(Some(1), vec![group.clone()]))
        .expect(1)
        .mount(&server)
        .await;
    let created = client(&server).create_group("Design").await.unwrap();
    assert_eq!(created.id, "g-new");

    // Not created by the lost attempt: posted again, and that answer counts.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(201).set_body_json(group))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(Some(0), vec![]))
        .mount(&server)
        .await;
    let created = client(&server).create_group("Design").await.unwrap();
    assert_eq!(created.id, "g-new");
}

/// The lookup before a retried `POST /Groups` is a GET that `send` retries on
/// its own; the create loop does not retry it again. A provider answering 503 to
/// everything gets one POST and one round of lookups (not a round per POST
/// retry); one that only fails the POST gets every POST retry, each after one
/// lookup.
#[tokio::test]
async fn a_group_create_retries_each_request_at_one_level() {
    let attempts = settings("http://x.invalid").retry.max_retries + 1;
    let count = |requests: &[Request], verb: &str| {
        requests
            .iter()
            .filter(|r| r.method.as_str() == verb)
            .count()
    };

    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    // The lookup before the first POST fails: nothing is posted blind.
    let error = client(&server).create_group("Design").await.unwrap_err();
    assert_eq!(error.status(), Some(503));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(count(&requests, "POST"), 0);
    assert_eq!(count(&requests, "GET"), attempts, "one round of lookups");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(Some(0), vec![]))
        .mount(&server)
        .await;
    let error = client(&server).create_group("Design").await.unwrap_err();
    assert_eq!(error.status(), Some(503));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(count(&requests, "POST"), attempts);
    assert_eq!(
        count(&requests, "GET"),
        attempts,
        "one lookup before each POST"
    );
}

/// A listing by index that a deletion shifted can skip a group that exists, and
/// the plan then creates it; `displayName` is not unique, so a blind POST would
/// make a second workspace of that name. The group is looked up first: one is
/// used, several are refused without a write.
#[tokio::test]
async fn a_group_that_exists_is_not_created_again() {
    let group = |id: &str, name: &str| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": id, "displayName": name, "members": []
        })
    };
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", "displayName eq \"Design\""))
        .respond_with(list(Some(1), vec![group("g7", "design")]))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server).create_group("Design").await.unwrap().id,
        "g7"
    );

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(
            Some(3),
            vec![
                group("g7", "Design"),
                group("g8", "Design"),
                group("g9", "Design Ops"),
            ],
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let error = client(&server).create_group("Design").await.unwrap_err();
    assert!(matches!(error, WorkspaceError::NotSent { .. }), "{error}");

    // A provider that refuses the filter is not asked: the group is posted.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "invalidFilter", "detail": "filter not supported"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(201).set_body_json(group("g1", "Design")))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server).create_group("Design").await.unwrap().id,
        "g1"
    );
    assert!(!error.is_transient() && !error.is_conflict(), "{error}");
    let text = error.to_string();
    assert!(
        text.starts_with("POST /Groups: not sent: 2 groups already answer to \"Design\" (g7, g8)"),
        "{text}"
    );
}

/// A certificate the client does not trust will not be trusted on the next
/// attempt: the request fails on the first handshake, not after the whole
/// backoff, and the error says it was the certificate.
#[tokio::test]
async fn an_untrusted_certificate_fails_at_once_and_says_so() {
    let (url, connections) = crate::fixtures::untrusted_tls_server();
    let client = ScimClient::new(settings(&format!("{url}/scim/v2"))).unwrap();
    let error = client.get_account("u1").await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(text.starts_with("GET /Users/u1: "), "{text}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one handshake, no retries"
    );
}

// ---------------------------------------------------------------- limits

/// An answer longer than the body limit fails the request as malformed, naming
/// the endpoint and the limit, and is not asked again (it would be as long);
/// answers under the limit are read as ever.
#[tokio::test]
async fn an_answer_over_the_body_limit_is_refused_and_not_retried() {
    let server = MockServer::start().await;
    let mut long = user(1);
    long["displayName"] = "x".repeat(5000).into();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(long))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user(2)))
        .mount(&server)
        .await;
    // 100 users to a page are about 13 kB.
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(users_provider(150, Some))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let base = format!("{}/scim/v2", server.uri());
    let client = ScimClient::with_max_body_bytes(settings(&base), 4096).unwrap();

    let error = client.get_account("u1").await.unwrap_err();
    assert!(matches!(error, WorkspaceError::Malformed { .. }), "{error}");
    assert!(!error.is_transient());
    let message = error.to_string();
    assert!(message.starts_with("GET /Users/u1: "), "{message}");
    assert!(message.contains("larger than 4096 bytes"), "{message}");
    assert_eq!(client.stats().retries, 0);

    assert_eq!(client.get_account("u2").await.unwrap().unwrap().id, "u2");

    let error = client.snapshot(&no_progress).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("GET /Users?startIndex=1&count=100: "),
        "{message}"
    );
    assert!(message.contains("larger than 4096 bytes"), "{message}");

    // The production limit reads the same listing.
    let snapshot = ScimClient::new(settings(&base))
        .unwrap()
        .snapshot(&no_progress)
        .await
        .unwrap();
    assert_eq!(ids(&snapshot.accounts), expected_ids(150));
}

// ---------------------------------------------------------------- ids in paths

/// An id that is empty or a dot segment would name another resource once the
/// URL is normalised (`DELETE /Users/..` is `DELETE /`): every request that puts
/// an id in the path refuses it as malformed before any request is built.
#[tokio::test]
async fn ids_that_are_dot_segments_never_reach_the_path() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&server)
        .await;
    let client = client(&server);
    let members = vec!["u1".to_owned()];
    let change = AttributeChange {
        attribute: Attribute::DisplayName,
        from: None,
        to: Some("Ada".into()),
    };
    for id in ["", ".", "..", "%2e", "%2E%2e"] {
        let errors = [
            ("GET /Users/{id}", client.get_account(id).await.map(drop)),
            ("DELETE /Users/{id}", client.delete_account(id).await),
            ("PATCH /Users/{id}", client.set_active(id, false).await),
            ("PATCH /Users/{id}", client.set_role(id, Role::Viewer).await),
            (
                "PATCH /Users/{id}",
                client
                    .update_attributes(id, std::slice::from_ref(&change))
                    .await,
            ),
            ("GET /Groups/{id}", client.get_group(id).await.map(drop)),
            ("PATCH /Groups/{id}", client.add_members(id, &members).await),
            (
                "PATCH /Groups/{id}",
                client.remove_members(id, &members).await,
            ),
        ];
        for (endpoint, result) in errors {
            let error = result.unwrap_err();
            assert!(
                matches!(error, WorkspaceError::Malformed { .. }),
                "{id:?}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{endpoint}: malformed response: ")),
                "{message}"
            );
            assert!(message.contains("path segment"), "{message}");
        }
    }
    assert_eq!(client.stats().requests, 0);
    server.verify().await;
}

/// One account the workspace answers 500 for, however often it is asked, read
/// while nothing else is in flight: a 5xx is a reply, so the workspace is not
/// taken as down and the accounts read after it are still read. A workspace that
/// answers nothing at all is, at its first failed read.
#[tokio::test]
async fn one_account_answering_500_is_no_outage_a_closed_port_is() {
    use seatwarden::workspace::{Outage, Unread};

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/broken"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/scim/v2/Users/ok-[0-9]+$"))
        .respond_with(|request: &Request| {
            let id = request.url.path().rsplit('/').next().unwrap_or_default();
            ResponseTemplate::new(200).set_body_json(
                json!({"id": id, "userName": format!("{id}@example.com"), "active": true}),
            )
        })
        .mount(&server)
        .await;
    let client = client_with(&server, |s| s.max_concurrency = 1);
    let outage = Outage::new(&client);
    for _ in 0..3 {
        let broken = outage.watch(client.get_account("broken")).await;
        assert!(
            matches!(&broken, Err(Unread::Failed(e)) if e.status() == Some(500)),
            "{broken:?}"
        );
        assert_eq!(outage.down(), None);
    }
    for n in 0..5 {
        let id = format!("ok-{n}");
        let read = outage.watch(client.get_account(&id)).await;
        assert!(
            read.as_ref()
                .is_ok_and(|a| a.as_ref().is_some_and(|a| a.id == id)),
            "{read:?}"
        );
    }

    // Nothing listens: down at the first read, and the next is not sent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = ScimClient::new(settings(&format!("http://127.0.0.1:{port}/scim/v2"))).unwrap();
    let outage = Outage::new(&client);
    let first = outage.watch(client.get_account("ok-0")).await;
    assert!(matches!(first, Err(Unread::Failed(_))), "{first:?}");
    assert!(
        outage
            .down()
            .is_some_and(|why| why.contains("GET /Users/ok-0"))
    );
    let next = outage.watch(client.get_account("ok-1")).await;
    assert!(matches!(next, Err(Unread::Skipped(_))), "{next:?}");
}

// ---------------------------------------------------------------- role groups

/// Roles by group, Editor and Viewer, against `server`, whose users u1 to u4
/// answer by id, with the Editors' group listing `editors` and the Viewers'
/// listing u3.
async fn role_group_client(server: &MockServer, editors: &[&str]) -> ScimClient {
    Mock::given(method("GET"))
        .and(path_regex(r"^/scim/v2/Users/u[0-9]+$"))
        .respond_with(|req: &Request| {
            let id = req.url.path().trim_start_matches("/scim/v2/Users/u");
            ResponseTemplate::new(200).set_body_json(user(id.parse().unwrap()))
        })
        .mount(server)
        .await;
    serve_role_group(server, "g-ed", "Editors", editors, 5).await;
    serve_role_group(server, "g-view", "Viewers", &["u3"], 5).await;
    client_with(server, |s| {
        s.role_attribute = RoleAttribute::Groups {
            groups: vec![
                (Role::Editor, "Editors".to_owned()),
                (Role::Viewer, "Viewers".to_owned()),
            ],
        };
    })
}

/// `GET /Groups?filter=displayName eq "<name>"` answered with that group and
/// `members`, at wiremock's `priority` (1 wins over the default 5).
async fn serve_role_group(
    server: &MockServer,
    id: &str,
    name: &str,
    members: &[&str],
    priority: u8,
) {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("filter", format!("displayName eq \"{name}\"")))
        .respond_with(list(
            Some(1),
            vec![json!({"id": id, "displayName": name, "members": members})],
        ))
        .with_priority(priority)
        .mount(server)
        .await;
}

async fn group_reads(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path().starts_with("/scim/v2/Groups"))
        .count()
}

async fn roles_of(client: &ScimClient, id: &str) -> Vec<String> {
    client.get_account(id).await.unwrap().unwrap().roles
}

/// A pass checking several accounts (a sweep's reads, a verification) reads each
/// role group once, not once per account, even with the checks side by side.
#[tokio::test]
async fn checks_of_accounts_read_each_role_group_once_per_pass() {
    let server = MockServer::start().await;
    let client = role_group_client(&server, &["u1", "u2"]).await;
    let checks = ["u1", "u2", "u3", "u4"].map(|id| roles_of(&client, id));
    let roles = futures::future::join_all(checks).await;
    assert_eq!(
        roles,
        [vec!["Editor"], vec!["Editor"], vec!["Viewer"], vec![]]
    );
    assert_eq!(roles_of(&client, "u1").await, ["Editor"]);
    assert_eq!(group_reads(&server).await, 2);
}

/// A membership the pass itself changes is read again: the cached role groups
/// are forgotten by the write, and the check after it sees the new role.
#[tokio::test]
async fn a_role_group_changed_by_the_pass_is_read_again() {
    let server = MockServer::start().await;
    let client = role_group_client(&server, &["u1"]).await;
    assert!(roles_of(&client, "u4").await.is_empty());
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Groups/g-ed"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    client
        .add_members("g-ed", &["u4".to_owned()])
        .await
        .unwrap();
    serve_role_group(&server, "g-ed", "Editors", &["u1", "u4"], 1).await;

    assert_eq!(roles_of(&client, "u4").await, ["Editor"]);
    assert_eq!(roles_of(&client, "u1").await, ["Editor"]);
    assert_eq!(group_reads(&server).await, 4);

    // A run starts with what it reads itself.
    client.forget_role_groups();
    assert_eq!(roles_of(&client, "u3").await, ["Viewer"]);
    assert_eq!(group_reads(&server).await, 6);
}
