//! Cursor paging (RFC 9865): the client against wiremock providers that page by
//! cursor, announced or not, that let cursors expire or hand the same one out
//! twice; and the sandbox serving cursors, to a whole reconcile among others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::model::{Account, WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::retry::RetryPolicy;
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions, SandboxPaging};
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::{Pagination, RoleAttribute, ScimClient, ScimSettings};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "cursor-test-token";

fn client(base: &str, pagination: Pagination, page_size: u32) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url: base.parse().unwrap(),
        token: TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size,
        pagination,
        max_concurrency: 4,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry: RetryPolicy::immediate(3),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap()
}

fn mock_client(server: &MockServer, pagination: Pagination, page_size: u32) -> ScimClient {
    client(&format!("{}/scim/v2", server.uri()), pagination, page_size)
}

fn user(i: usize) -> Value {
    json!({"id": format!("u{i}"), "userName": format!("user{i}@example.com"), "active": true})
}

fn query(req: &Request, name: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A provider of `n` users that pages by cursor only, whatever it is asked: the
/// cursor `c{k}` stands for the k-th user, `startIndex` is ignored (RFC 9865 §2.6).
fn cursor_users(n: usize) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static {
    move |req: &Request| {
        let count: usize = query(req, "count").map_or(2, |c| c.parse().unwrap());
        let from = match query(req, "cursor").as_deref() {
            None | Some("") => 1,
            Some(c) => c.trim_start_matches('c').parse().unwrap(),
        };
        let to = (from + count).min(n + 1);
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": n,
            "itemsPerPage": to - from,
            "Resources": (from..to).map(user).collect::<Vec<_>>(),
        });
        if to <= n {
            body["nextCursor"] = format!("c{to}").into();
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

async fn mount_users(server: &MockServer, n: usize) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(cursor_users(n))
        .mount(server)
        .await;
}

async fn mount_empty_groups(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 0,
            "Resources": [],
        })))
        .mount(server)
        .await;
}

async fn mount_config(server: &MockServer, config: Value) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(config))
        .mount(server)
        .await;
}

/// `(cursor, startIndex, count)` of every `/Users` request, in order.
async fn user_queries(server: &MockServer) -> Vec<(Option<String>, Option<String>, String)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/scim/v2/Users")
        .map(|r| {
            (
                query(r, "cursor"),
                query(r, "startIndex"),
                query(r, "count").unwrap_or_default(),
            )
        })
        .collect()
}

fn by_cursor(cursor: &str, count: &str) -> (Option<String>, Option<String>, String) {
    (Some(cursor.to_owned()), None, count.to_owned())
}

fn ids(snapshot: &WorkspaceSnapshot) -> Vec<String> {
    snapshot.accounts.iter().map(|a| a.id.clone()).collect()
}

fn expected(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("u{i}")).collect()
}

#[tokio::test]
async fn a_provider_that_announces_cursors_only_is_paged_by_cursor_at_its_max_page_size() {
    let server = MockServer::start().await;
    mount_config(
        &server,
        json!({"pagination": {"cursor": true, "index": false, "maxPageSize": 3}}),
    )
    .await;
    mount_users(&server, 7).await;
    mount_empty_groups(&server).await;
    let client = mock_client(&server, Pagination::Auto, 100);
    client.discover().await.unwrap();
    assert_eq!(client.listing_concurrency(), 1);

    let snapshot = client.snapshot(&|_| {}).await.unwrap();
    assert_eq!(ids(&snapshot), expected(7));
    assert_eq!(
        user_queries(&server).await,
        vec![
            by_cursor("", "3"),
            by_cursor("c4", "3"),
            by_cursor("c7", "3")
        ]
    );
}

/// A deletion during a cursor listing skips nothing (a cursor does not shift as
/// an index does): a listing that read everyone still there is whole, though it
/// ends shorter than the first page's total.
#[tokio::test]
async fn a_deletion_during_a_cursor_listing_leaves_it_whole() {
    let server = MockServer::start().await;
    mount_config(
        &server,
        json!({"pagination": {"cursor": true, "index": false, "maxPageSize": 2}}),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            // u1, u2 of u1..u4; u3 is deleted, and the cursor goes on to u4.
            let (total, users, next) = match query(req, "cursor").as_deref() {
                None | Some("") => (4, vec![user(1), user(2)], Some("c3")),
                _ => (3, vec![user(4)], None),
            };
            let mut body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": total,
                "Resources": users,
            });
            if let Some(next) = next {
                body["nextCursor"] = next.into();
            }
            ResponseTemplate::new(200).set_body_json(body)
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = mock_client(&server, Pagination::Auto, 100);
    client.discover().await.unwrap();
    let (snapshot, whole) = client.snapshot_whole(&|_| {}).await.unwrap();
    assert_eq!(ids(&snapshot), ["u1", "u2", "u4"]);
    assert!(whole);
}

#[tokio::test]
async fn a_provider_that_pages_both_ways_is_paged_by_index_unless_told_otherwise() {
    for (pagination, cursors) in [(Pagination::Auto, false), (Pagination::Cursor, true)] {
        let server = MockServer::start().await;
        mount_config(
            &server,
            json!({"pagination": {"cursor": true, "index": true, "defaultPaginationMethod": "cursor"}}),
        )
        .await;
        // By index: a well-behaved provider of 5 users, 2 a page.
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .and(query_param("startIndex", "1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 5, "Resources": [user(1), user(2)],
                "nextCursor": "c3",
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .and(query_param("startIndex", "3"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 5, "Resources": [user(3), user(4)],
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .and(query_param("startIndex", "5"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 5, "Resources": [user(5)],
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .and(query_param_is_missing("startIndex"))
            .respond_with(cursor_users(5))
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        let client = mock_client(&server, pagination, 2);
        client.discover().await.unwrap();
        let snapshot = client.snapshot(&|_| {}).await.unwrap();
        assert_eq!(ids(&snapshot), expected(5), "{pagination}");
        let queries = user_queries(&server).await;
        assert!(
            queries
                .iter()
                .all(|(c, s, _)| c.is_some() == cursors && s.is_some() != cursors),
            "{pagination}: {queries:?}"
        );
    }
}

#[tokio::test]
async fn an_unannounced_cursor_is_followed_when_start_index_is_ignored() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    mount_users(&server, 5).await;
    mount_empty_groups(&server).await;
    let client = mock_client(&server, Pagination::Auto, 2);
    client.discover().await.unwrap();
    assert_eq!(client.listing_concurrency(), 4);

    let snapshot = client.snapshot(&|_| {}).await.unwrap();
    assert_eq!(ids(&snapshot), expected(5));
    assert_eq!(
        user_queries(&server).await,
        vec![
            (None, Some("1".to_owned()), "2".to_owned()),
            by_cursor("c3", "2"),
            by_cursor("c5", "2"),
        ]
    );
    // From then on the client pages by cursor, filtered reads included.
    assert_eq!(client.listing_concurrency(), 1);
    client
        .find_account_by_user_name("user1@example.com")
        .await
        .unwrap();
    let last = user_queries(&server).await.pop().unwrap();
    assert_eq!((last.0.as_deref(), last.1), (Some(""), None));
}

#[tokio::test]
async fn index_paging_refused_with_501_falls_back_to_cursors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("startIndex", "1"))
        .respond_with(ResponseTemplate::new(501).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "501", "detail": "Pagination by index is not supported",
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    mount_users(&server, 3).await;
    mount_empty_groups(&server).await;
    let client = mock_client(&server, Pagination::Auto, 2);
    let snapshot = client.snapshot(&|_| {}).await.unwrap();
    assert_eq!(ids(&snapshot), expected(3));
    assert_eq!(client.listing_concurrency(), 1);

    // Told to page by index, the client does not second-guess: the 501 stands.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("startIndex", "1"))
        .respond_with(ResponseTemplate::new(501).set_body_json(json!({"detail": "no index"})))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let err = mock_client(&server, Pagination::Index, 2)
        .snapshot(&|_| {})
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(501), "{err}");
}

/// The page cap follows the smallest page seen, not the first: a provider that
/// sends five users on its first page and one on each after it is listed whole.
#[tokio::test]
async fn later_pages_smaller_than_the_first_do_not_trip_the_page_cap() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            let (items, next) = match query(req, "cursor").as_deref() {
                None | Some("") => ((1..=5).collect::<Vec<_>>(), 6),
                Some(c) => {
                    let k: usize = c.trim_start_matches('c').parse().unwrap();
                    (vec![k], k + 1)
                }
            };
            let mut body = json!({
                "totalResults": 30,
                "Resources": items.into_iter().map(user).collect::<Vec<_>>(),
            });
            if next <= 30 {
                body["nextCursor"] = format!("c{next}").into();
            }
            ResponseTemplate::new(200).set_body_json(body)
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let snapshot = mock_client(&server, Pagination::Cursor, 5)
        .snapshot(&|_| {})
        .await
        .unwrap();
    assert_eq!(ids(&snapshot), expected(30));
    assert_eq!(user_queries(&server).await.len(), 26);
}

/// A provider that hands out a cursor on its last page too, and empty pages with
/// fresh cursors after it: the first empty page once every announced user is in
/// ends the listing.
#[tokio::test]
async fn an_empty_page_after_everything_announced_ends_a_cursor_listing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            let from: usize = match query(req, "cursor").as_deref() {
                None | Some("") => 1,
                Some(c) => c.trim_start_matches('c').parse().unwrap(),
            };
            ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 4,
                "Resources": (from..(from + 2).min(5)).map(user).collect::<Vec<_>>(),
                "nextCursor": format!("c{}", from + 2),
            }))
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let snapshot = mock_client(&server, Pagination::Cursor, 2)
        .snapshot(&|_| {})
        .await
        .unwrap();
    assert_eq!(ids(&snapshot), expected(4));
    assert_eq!(user_queries(&server).await.len(), 3);
}

/// "501 pagination not supported": a provider that refuses every paging parameter
/// is asked without them, and what it sends in that one answer is the listing,
/// whole if it holds the `totalResults` it announces.
#[tokio::test]
async fn a_provider_that_does_not_page_is_listed_in_one_answer() {
    for (announced, whole) in [(5, true), (7, false)] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(move |req: &Request| {
                if ["startIndex", "count", "cursor"]
                    .iter()
                    .any(|p| query(req, p).is_some())
                {
                    ResponseTemplate::new(501).set_body_json(json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "status": "501", "detail": "pagination not supported",
                    }))
                } else {
                    ResponseTemplate::new(200).set_body_json(json!({
                        "totalResults": announced,
                        "Resources": (1..=5).map(user).collect::<Vec<_>>(),
                    }))
                }
            })
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        let client = mock_client(&server, Pagination::Auto, 2);
        let (snapshot, listed_whole) = client.snapshot_whole(&|_| {}).await.unwrap();
        assert_eq!(ids(&snapshot), expected(5));
        assert_eq!(listed_whole, whole, "totalResults {announced}");
        assert_eq!(
            user_queries(&server).await,
            vec![
                (None, Some("1".to_owned()), "2".to_owned()),
                (None, None, String::new())
            ]
        );
        // A filtered read is asked with the filter alone after the same 501.
        let found = client
            .find_account_by_user_name("user3@example.com")
            .await
            .unwrap();
        assert_eq!(found.map(|a| a.id).as_deref(), Some("u3"));
        let asked = server.received_requests().await.unwrap();
        let last = asked.last().unwrap();
        assert_eq!(
            last.url
                .query_pairs()
                .map(|(k, _)| k.into_owned())
                .collect::<Vec<_>>(),
            ["filter"]
        );
    }
}

/// `/Users?cursor=c3` answers 400 `expiredCursor` the first `times` times.
async fn expiring(server: &MockServer, times: u64) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .and(query_param("cursor", "c3"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "400", "scimType": "expiredCursor",
            "detail": "Cursor has expired",
        })))
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn an_expired_cursor_restarts_the_listing_once_and_keeps_every_user_once() {
    let server = MockServer::start().await;
    expiring(&server, 1).await;
    mount_users(&server, 5).await;
    mount_empty_groups(&server).await;
    let client = mock_client(&server, Pagination::Cursor, 2);
    let snapshot = client.snapshot(&|_| {}).await.unwrap();
    assert_eq!(ids(&snapshot), expected(5));
    assert_eq!(
        user_queries(&server).await,
        vec![
            by_cursor("", "2"),
            by_cursor("c3", "2"),
            by_cursor("", "2"),
            by_cursor("c3", "2"),
            by_cursor("c5", "2"),
        ]
    );
}

#[tokio::test]
async fn a_cursor_refused_again_after_the_restart_fails_naming_the_request() {
    let server = MockServer::start().await;
    expiring(&server, u64::MAX).await;
    mount_users(&server, 5).await;
    mount_empty_groups(&server).await;
    let err = mock_client(&server, Pagination::Cursor, 2)
        .snapshot(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "GET /Users?cursor=c3&count=2: HTTP 400 (expiredCursor): Cursor has expired"
    );
    assert_eq!(
        user_queries(&server).await.len(),
        4,
        "one restart, not more"
    );
}

#[tokio::test]
async fn a_cursor_handed_out_twice_ends_the_listing_with_an_error_not_a_loop() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(move |req: &Request| {
            // Each page brings new users but always the same nextCursor.
            let n = query(req, "cursor").map_or(0, |c| c.len());
            ResponseTemplate::new(200).set_body_json(json!({
                "Resources": [user(n + 1)], "nextCursor": "again",
            }))
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let err = mock_client(&server, Pagination::Cursor, 1)
        .snapshot(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "GET /Users?cursor=again&count=1: malformed response: nextCursor \"again\" was \
         already followed in this listing: it would never end"
    );
    assert_eq!(user_queries(&server).await.len(), 2);
}

// ---------------------------------------------------------------- the sandbox

async fn start(seed: WorkspaceSnapshot, paging: SandboxPaging, max_results: usize) -> Sandbox {
    sandbox_with(seed, paging, max_results, None).await
}

async fn sandbox_with(
    seed: WorkspaceSnapshot,
    paging: SandboxPaging,
    max_results: usize,
    cursor_timeout: Option<Duration>,
) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            max_results,
            paging,
            cursor_timeout,
            faults: Faults::default(),
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap()
}

/// `n` accounts and, for every 100 of them, a group holding them.
fn people(n: usize) -> WorkspaceSnapshot {
    let accounts: Vec<Account> = (0..n)
        .map(|i| Account {
            id: format!("a{i:05}"),
            user_name: format!("person{i}@example.com"),
            external_id: Some(format!("p{i}")),
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active: i % 7 != 0,
            roles: vec!["Viewer".to_owned()],
        })
        .collect();
    let groups = accounts
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| WorkspaceGroup {
            id: format!("g{i:03}"),
            display_name: format!("Folder {i}"),
            members: chunk.iter().map(|a| a.id.clone()).collect(),
        })
        .collect();
    WorkspaceSnapshot { accounts, groups }
}

async fn get(sandbox: &Sandbox, path_and_query: &str) -> (u16, Value) {
    let response = raw_client()
        .get(format!("{}{path_and_query}", sandbox.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn listed_ids(page: &Value) -> Vec<String> {
    page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_sandbox_announces_how_it_pages() {
    for (paging, cursor, index) in [
        (SandboxPaging::Index, false, true),
        (SandboxPaging::Cursor, true, false),
        (SandboxPaging::Both, true, true),
    ] {
        let sandbox = sandbox_with(
            WorkspaceSnapshot::default(),
            paging,
            50,
            Some(Duration::from_secs(600)),
        )
        .await;
        let (_, config) = get(&sandbox, "/ServiceProviderConfig").await;
        let pagination = &config["pagination"];
        assert_eq!(pagination["cursor"], cursor, "{paging:?}");
        assert_eq!(pagination["index"], index, "{paging:?}");
        assert_eq!(pagination["maxPageSize"], 50);
        assert_eq!(pagination["cursorTimeout"].as_u64(), cursor.then_some(600));
    }
}

#[tokio::test]
async fn sandbox_cursors_neither_skip_nor_repeat_when_users_are_deleted_meanwhile() {
    let seed = people(10);
    let mut all: Vec<String> = seed.accounts.iter().map(|a| a.id.clone()).collect();
    all.sort();

    let sandbox = start(seed.clone(), SandboxPaging::Both, 1000).await;
    let (_, first) = get(&sandbox, "/Users?cursor=&count=4").await;
    assert_eq!(listed_ids(&first), all[..4]);
    assert_eq!(first["totalResults"], 10);
    assert!(first.get("startIndex").is_none());
    let next = first["nextCursor"].as_str().unwrap().to_owned();
    // Two users already listed leave.
    let http = raw_client();
    for id in &all[..2] {
        let status = http
            .delete(format!("{}/Users/{id}", sandbox.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }
    let (_, second) = get(&sandbox, &format!("/Users?cursor={next}&count=4")).await;
    assert_eq!(
        listed_ids(&second),
        all[4..8],
        "by cursor nothing is skipped"
    );
    let next = second["nextCursor"].as_str().unwrap().to_owned();
    let (_, third) = get(&sandbox, &format!("/Users?cursor={next}&count=4")).await;
    assert_eq!(listed_ids(&third), all[8..]);
    assert!(third.get("nextCursor").is_none(), "the last page has none");

    // By index, the same deletions shift users past the client.
    let sandbox = start(seed, SandboxPaging::Both, 1000).await;
    let (_, first) = get(&sandbox, "/Users?startIndex=1&count=4").await;
    assert!(first.get("nextCursor").is_none());
    for id in &all[..2] {
        http.delete(format!("{}/Users/{id}", sandbox.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
    }
    let (_, second) = get(&sandbox, "/Users?startIndex=5&count=4").await;
    assert_eq!(listed_ids(&second), all[6..10]);
}

#[tokio::test]
async fn sandbox_cursors_that_expired_or_were_never_handed_out_are_refused() {
    let sandbox = sandbox_with(people(5), SandboxPaging::Cursor, 2, Some(Duration::ZERO)).await;
    // Cursor-only: startIndex is ignored and the first page carries a cursor.
    let (status, first) = get(&sandbox, "/Users?startIndex=3").await;
    assert_eq!(status, 200);
    assert_eq!(listed_ids(&first).len(), 2);
    let next = first["nextCursor"].as_str().unwrap().to_owned();
    let (status, expired) = get(&sandbox, &format!("/Users?cursor={next}")).await;
    assert_eq!(
        (status, &expired["scimType"]),
        (400, &json!("expiredCursor"))
    );
    let (status, invalid) = get(&sandbox, "/Users?cursor=nonsense").await;
    assert_eq!(
        (status, &invalid["scimType"]),
        (400, &json!("invalidCursor"))
    );
    let (status, count) = get(&sandbox, "/Users?cursor=&count=0").await;
    assert_eq!((status, &count["scimType"]), (400, &json!("invalidCount")));

    // The client restarts once, then reports the refusal.
    let err = client(sandbox.base_url().as_str(), Pagination::Auto, 100)
        .snapshot(&|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("(expiredCursor)"), "{err}");
}

#[tokio::test]
async fn the_client_lists_a_cursor_only_sandbox_as_it_lists_an_index_one() {
    let seed = people(2_500);
    let index = start(seed.clone(), SandboxPaging::Index, 1000).await;
    let cursor = start(seed, SandboxPaging::Cursor, 1000).await;
    let read = |sandbox: &Sandbox| {
        let client = client(sandbox.base_url().as_str(), Pagination::Auto, 1000);
        async move {
            client.discover().await.unwrap();
            client.snapshot(&|_| {}).await.unwrap()
        }
    };
    let (by_index, by_cursor) = (read(&index).await, read(&cursor).await);
    assert_eq!(by_cursor.accounts.len(), 2_500);
    assert_eq!(by_cursor, by_index);
    // By index, the groups' one short page is followed by a look past it: a
    // provider paging by less than asked would announce that page as the total.
    assert_eq!(cursor.stats().requests + 1, index.stats().requests);
}

/// A whole reconcile (snapshot, writes, verification) against a workspace that
/// pages by cursor only, in pages of 40: it converges, and the plan after it is
/// empty. Paging by index there would read the first page again and again.
#[tokio::test]
async fn a_reconcile_against_a_cursor_only_workspace_converges() {
    let data = synth::generate(&SynthSpec {
        people: 300,
        groups: 6,
        drift_percent: 10.0,
        seed: 5,
    });
    let sandbox = start(data.workspace.clone(), SandboxPaging::Cursor, 40).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        crate::fixtures::synth_config(dir.path(), &data, sandbox.base_url().as_ref(), TOKEN, 8);
    crate::fixtures::assert_converges(&config).await;
    let after = sandbox.snapshot();
    crate::fixtures::assert_leavers_inactive(&data, &after);
}

/// A plain reqwest client for raw requests to the sandbox. reqwest is built
/// without a default TLS crypto provider: one must be installed first, and a test
/// cannot count on another having done it (run alone, it would panic).
fn raw_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
