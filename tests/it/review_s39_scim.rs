//! Adversarial review (s39) of the SCIM client, as the workspace and as the
//! directory (`kind = "scim"`), against odd but legal answers (RFC 7644) and the
//! provider quirks of /work/shared/reference/apis.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode};
use seatwarden::store::Store;
use seatwarden::workspace::{Progress, RoleAttribute, ScimClient, ScimSettings};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn settings(server: &MockServer) -> ScimSettings {
    ScimSettings {
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
    }
}

pub(crate) fn client_with(
    server: &MockServer,
    tweak: impl FnOnce(&mut ScimSettings),
) -> ScimClient {
    let mut s = settings(server);
    tweak(&mut s);
    ScimClient::new(s).unwrap()
}

fn client(server: &MockServer) -> ScimClient {
    client_with(server, |_| {})
}

pub(crate) fn user(i: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": format!("u{i}"),
        "userName": format!("user{i}@example.com"),
        "active": true,
        "meta": {"resourceType": "User"},
    })
}

/// An RFC 7644 §3.4.2 ListResponse; `total` None leaves `totalResults` out.
pub(crate) fn list(total: Option<usize>, start: usize, resources: Vec<Value>) -> ResponseTemplate {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    if let Some(total) = total {
        body["totalResults"] = total.into();
    }
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(body)
}

pub(crate) fn scim_error(status: u16, scim_type: Option<&str>, detail: &str) -> ResponseTemplate {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = t.into();
    }
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(body)
}

fn start_of(req: &Request) -> usize {
    req.url
        .query_pairs()
        .find(|(k, _)| k == "startIndex")
        .map_or(1, |(_, v)| v.parse().unwrap())
}

pub(crate) async fn mount_empty_groups(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(Some(0), 1, vec![]))
        .mount(server)
        .await;
}

pub(crate) fn no_progress(_: Progress) {}

fn ids(accounts: &[seatwarden::model::Account]) -> Vec<String> {
    let mut ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    ids.sort();
    ids
}

// ------------------------------------------------- listings and their ends

/// A provider that pages by 2 whatever `count` asks, announces the page's length
/// as `totalResults` (apis.md: "totalResults equal to the page size"), and fails
/// the third page with 503 past its retries. Six accounts exist. Once a second
/// full page has proven the total wrong, the failed page is a real one: the
/// listing is not whole, and taking it so would leave u5 and u6 out (their
/// people planned as missing, a leaver among them never deprovisioned).
#[tokio::test]
async fn a_failed_page_after_the_total_was_proven_wrong_fails_the_listing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            let start = start_of(req);
            if start >= 5 {
                return scim_error(503, None, "try again later");
            }
            list(Some(2), start, (start..start + 2).map(user).collect())
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 5);
    let err = match client.snapshot_whole(&no_progress).await {
        Ok((snapshot, whole)) => panic!(
            "a listing cut by a 503 was taken (whole: {whole}): {:?}",
            ids(&snapshot.accounts)
        ),
        Err(e) => e,
    };
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(
        err.to_string().contains("GET /Users?startIndex=5&count=5"),
        "{err}"
    );
}

/// The control: an honest listing of two, shorter than the page asked, whose
/// check for a page past its total fails with 503, is whole by its own count.
#[tokio::test]
async fn a_failed_check_past_an_honest_total_keeps_the_listing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| match start_of(req) {
            1 => list(Some(2), 1, (1..=2).map(user).collect()),
            _ => scim_error(503, None, "no such page"),
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 5);
    let (snapshot, whole) = client.snapshot_whole(&no_progress).await.unwrap();
    assert_eq!(ids(&snapshot.accounts), ["u1", "u2"]);
    assert!(whole);
}

/// A provider that sends no `totalResults` and ignores `startIndex`: every page
/// is the first. Only two of its five users are ever seen; the listing must not
/// end there as if it were whole, nor loop: it fails, naming the endpoint.
#[tokio::test]
async fn a_provider_repeating_its_first_page_without_a_total_fails_the_listing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(None, 1, (1..=2).map(user).collect()))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| s.page_size = 2);
    let err = client.snapshot_whole(&no_progress).await.err().unwrap();
    let text = err.to_string();
    assert!(text.contains("GET /Users?startIndex=3&count=2"), "{text}");
    assert!(text.contains("ignore startIndex"), "{text}");
    let asked = server.received_requests().await.unwrap();
    assert_eq!(
        asked
            .iter()
            .filter(|r| r.url.path() == "/scim/v2/Users")
            .count(),
        2,
        "one page, then the repeat that ends it"
    );
}

/// The same provider as the directory (`kind = "scim"`): ada, ben and cy were
/// provisioned from it; now it ignores `startIndex` and sends no total, so only
/// ada and ben are ever listed. The run fails naming the endpoint, and cy, whom
/// the listing never reached, is not deprovisioned as a leaver.
#[tokio::test]
async fn a_scim_directory_repeating_its_first_page_fails_the_run_and_deprovisions_nobody() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = crate::scim_directory::three_provisioned(&idp).await;
    idp.reset().await;
    let people = json!([
        {"id": "p1", "userName": "ada@example.com", "active": true},
        {"id": "p2", "userName": "ben@example.com", "active": true},
    ]);
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "Resources": people,
        })))
        .mount(&idp)
        .await;
    let members: Vec<Value> = ["p1", "p2", "p3"]
        .iter()
        .map(|id| json!({"value": id}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(
            Some(1),
            1,
            vec![json!({"id": "g1", "displayName": "Taskade Users", "members": members})],
        ))
        .mount(&idp)
        .await;
    let Err(err) = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    else {
        panic!("the run must fail");
    };
    let text = err.to_string();
    assert!(text.starts_with("reading the directory: "), "{text}");
    assert!(text.contains("GET /Users?startIndex=3&count=2"), "{text}");
    assert!(text.contains("ignore startIndex"), "{text}");
    let accounts = workspace.snapshot().accounts;
    assert_eq!(accounts.len(), 3);
    assert!(accounts.iter().all(|a| a.active), "{accounts:?}");
    workspace.shutdown().await;
}

// ------------------------------------------------------ 413 on member writes

/// A workspace without PATCH writes a group whole (PUT, RFC 7644 §3.5.1); a group
/// past the provider's size limit (Miro: about 8,000 members) is refused with 413.
/// A PUT cannot be split (each one is the whole member list): the write fails at
/// once, said so, never sent again identically and never taken as made.
#[tokio::test]
async fn a_put_of_a_group_refused_413_fails_once_and_says_why() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": false},
            "etag": {"supported": false},
            "filter": {"supported": true, "maxResults": 100},
        })))
        .mount(&server)
        .await;
    let members: Vec<Value> = (1..=8000)
        .map(|i| json!({"value": format!("u{i}")}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1", "displayName": "Everyone", "members": members,
        })))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(
            scim_error(413, None, "group exceeds 8000 members").insert_header("Retry-After", "1"),
        )
        .mount(&server)
        .await;
    let client = client(&server);
    client.discover().await.unwrap();
    for write in ["add", "remove"] {
        let err = match write {
            "add" => client.add_members("g1", &["u9001".to_owned()]).await,
            _ => client.remove_members("g1", &["u1".to_owned()]).await,
        }
        .unwrap_err();
        assert_eq!(err.status(), Some(413), "{err}");
        assert!(!seatwarden::retry::Transient::is_transient(&err), "{err}");
        let text = err.to_string();
        assert!(text.contains("PUT /Groups/g1"), "{text}");
        assert!(text.contains("group exceeds 8000 members"), "{text}");
        assert!(text.contains("written whole"), "{text}");
    }
    let puts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .count();
    assert_eq!(puts, 2, "one PUT per write, none repeated");
}

/// With PATCH, members go 100 a request; a 413 on one of them (the group is at
/// the provider's limit) fails the write, not retried, and the requests after it
/// are not sent.
#[tokio::test]
async fn a_member_patch_refused_413_fails_the_write_once() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(scim_error(413, None, "group exceeds 8000 members"))
        .mount(&server)
        .await;
    let ids: Vec<String> = (1..=250).map(|i| format!("u{i}")).collect();
    let err = client(&server).add_members("g1", &ids).await.unwrap_err();
    assert_eq!(err.status(), Some(413), "{err}");
    let patches = server.received_requests().await.unwrap().len();
    assert_eq!(patches, 1, "not retried, nothing sent after it");
}

// ------------------------------------------------ odd but legal list answers

/// RFC 7644 §3.4.2: `Resources` is required only when `totalResults` is not zero:
/// `{"totalResults": 0}` is an empty workspace. A first page with neither (`{}`,
/// a gateway's or a stub's 200) is no listing at all, and must not read as a
/// workspace with nobody in it, where every person would be planned as missing.
#[tokio::test]
async fn a_list_without_resources_is_empty_only_when_its_total_says_so() {
    for (body, empty) in [
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0}),
            true,
        ),
        (json!({}), false),
        (
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]}),
            false,
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body.clone()))
            .mount(&server)
            .await;
        mount_empty_groups(&server).await;
        match client(&server).snapshot_whole(&no_progress).await {
            Ok((snapshot, whole)) => {
                assert!(empty, "{body} was read as an empty workspace");
                assert!(snapshot.accounts.is_empty() && whole);
            }
            Err(e) => {
                assert!(!empty, "{body}: {e}");
                let text = e.to_string();
                assert!(text.contains("GET /Users?startIndex=1&count=100"), "{text}");
                assert!(
                    text.contains("neither totalResults nor Resources"),
                    "{text}"
                );
            }
        }
    }
}

/// `itemsPerPage` smaller than the `count` asked (a provider capping pages at 3):
/// the pages asked concurrently follow the size it sends, and every account is
/// read once, the listing whole.
#[tokio::test]
async fn pages_smaller_than_asked_are_followed_by_the_size_sent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| {
            let start = start_of(req);
            list(Some(8), start, (start..=8).take(3).map(user).collect())
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| {
        s.page_size = 5;
        s.max_concurrency = 4;
    });
    let (snapshot, whole) = client.snapshot_whole(&no_progress).await.unwrap();
    assert_eq!(
        ids(&snapshot.accounts),
        ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"]
    );
    assert!(whole);
}

/// `Retry-After` as an HTTP date (RFC 9110 §10.2.3), as a 503 may send it: the
/// retry waits until then, not the backoff's few milliseconds.
#[tokio::test]
async fn a_retry_after_given_as_an_http_date_is_waited_for() {
    let server = MockServer::start().await;
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(
            scim_error(503, None, "maintenance")
                .insert_header("Retry-After", httpdate::fmt_http_date(at)),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let client = client_with(&server, |s| {
        s.retry = RetryPolicy {
            max_retry_after: Duration::from_secs(10),
            ..RetryPolicy::immediate(3)
        };
    });
    let started = std::time::Instant::now();
    client.set_active("u1", false).await.unwrap();
    let waited = started.elapsed();
    // The date has a one-second resolution: at least a second is left of two.
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

/// A token that expires mid-listing: the second page answers 401. The read
/// fails at once (another attempt cannot do better), names the page, and says
/// to check the token; no listing is taken from the first page alone.
#[tokio::test]
async fn a_token_expiring_mid_listing_fails_the_read_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(|req: &Request| match start_of(req) {
            1 => list(Some(4), 1, (1..=2).map(user).collect()),
            _ => scim_error(401, None, "token expired"),
        })
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    let client = client_with(&server, |s| {
        s.page_size = 2;
        s.max_concurrency = 1;
    });
    let err = client.snapshot_whole(&no_progress).await.err().unwrap();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        err.to_string().contains("GET /Users?startIndex=3&count=2"),
        "{err}"
    );
    assert!(err.what_to_check().is_some(), "{err}");
    let asked = server.received_requests().await.unwrap();
    let users = asked
        .iter()
        .filter(|r| r.url.path() == "/scim/v2/Users")
        .count();
    assert_eq!(users, 2, "a 401 is not retried");
}

/// A deactivation PATCH of an account deleted meanwhile answers 404: the write
/// says so as a 404 (the executor then lets verification decide by a read,
/// `apply::write`), and is not retried.
#[tokio::test]
async fn a_patch_of_an_account_deleted_meanwhile_is_a_404_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(scim_error(404, None, "Resource u1 not found"))
        .mount(&server)
        .await;
    let err = client(&server).set_active("u1", false).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// The control for a provider that repeats its first page without a total: one
/// that sends everything it has whatever it is asked (no paging at all), fewer
/// than a page, is read whole; so is one sending more than asked, with a
/// `page_size` above its size.
#[tokio::test]
async fn a_provider_sending_everything_at_once_without_a_total_is_read_whole() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(None, 1, (1..=3).map(user).collect()))
        .mount(&server)
        .await;
    mount_empty_groups(&server).await;
    for (page_size, read) in [(5, true), (3, false), (2, false)] {
        let client = client_with(&server, |s| s.page_size = page_size);
        match client.snapshot_whole(&no_progress).await {
            Ok((snapshot, whole)) => {
                assert!(read, "page_size {page_size}");
                assert_eq!(ids(&snapshot.accounts), ["u1", "u2", "u3"]);
                assert!(whole);
            }
            Err(e) => {
                assert!(!read, "page_size {page_size}: {e}");
                assert!(e.to_string().contains("page_size above"), "{e}");
            }
        }
    }
}

// --------------------------------------------- userNames with white space

/// A workspace account whose userName carries a trailing space (typed by hand,
/// pasted from a sheet), no externalId and no email: Ada's all the same. The
/// reconcile links it and corrects its userName; before, it was an orphan and a
/// second account was created beside it (this sandbox, unlike a strict provider,
/// took the create: a duplicate seat with none of her projects).
#[tokio::test]
async fn an_account_with_a_trailing_space_in_its_user_name_is_matched_and_corrected() {
    let seed = seatwarden::model::WorkspaceSnapshot {
        accounts: vec![seatwarden::model::Account {
            id: "u1".into(),
            user_name: "ada@example.com ".into(),
            external_id: None,
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            display_name: Some("Ada Lovelace".into()),
            email: None,
            active: true,
            roles: vec!["Viewer".into()],
        }],
        groups: Vec::new(),
    };
    let workspace = crate::fixtures::sandbox("t0ken", seed).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::ada_config(workspace.base_url().as_str(), dir.path(), "active");
    let outcome = crate::fixtures::reconcile(&config).await;
    let accounts = workspace.snapshot().accounts;
    assert_eq!(accounts.len(), 1, "{accounts:#?}");
    assert_eq!(accounts[0].id, "u1");
    assert_eq!(accounts[0].user_name, "ada@example.com");
    assert_eq!(accounts[0].external_id.as_deref(), Some("00u1"));
    assert!(accounts[0].active);
    assert_eq!(outcome.report.summary.actions_failed, 0);
    let again = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    assert!(again.plan.is_empty(), "{:#?}", again.plan.actions);
    workspace.shutdown().await;
}
