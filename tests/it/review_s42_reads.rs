//! Review (s42) of directory reads that could loop or see too little: an LDAP
//! server that hands back a paged-results cookie it already gave; an Okta or
//! Graph next link back to a listing's first page; an Okta 429 for the org's
//! concurrency limit, which must hold every request of the connector; an LDAP
//! group whose members the bind account may not read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seatwarden::directory::{EntraSource, LdapSource, OktaSource};
use seatwarden::retry::RetryPolicy;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::entra::{graph_group, small_tenant};
use crate::ldap_ad::{
    BACKEND, CookieLoop, IT_ADMINS, looping_cookie, source, start_fake, withholding_members_of,
};
use crate::okta::{LinkStyle, okta_group, okta_user, page, small_org};

/// Reads the fake, failing the test if the read has not ended within 20 s (a
/// loop reads for ever).
async fn ldap_read_error(page: CookieLoop) -> String {
    let (port, _) = start_fake(looping_cookie(page)).await;
    let read = tokio::time::timeout(Duration::from_secs(20), source(port).snapshot())
        .await
        .expect("the read never ended: it follows the repeated cookie for ever");
    let error = read.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    error.to_string()
}

/// A page that hands its own cookie back with the same entries again (a buggy
/// proxy replaying an answer): before, the search asked for the same page for
/// ever, holding each copy of its entries.
#[tokio::test]
async fn an_ldap_page_repeated_under_its_own_cookie_fails_naming_the_entry() {
    let text = ldap_read_error(CookieLoop::SameEntries).await;
    assert!(text.contains("ldap://127.0.0.1:"), "{text}");
    assert!(
        text.contains("OU=Staff,DC=corp,DC=example,DC=com"),
        "{text}"
    );
    assert!(text.contains("CN=Cy"), "{text}");
    assert!(text.contains("twice"), "{text}");
}

/// A page with no entry that hands its own cookie back: nothing repeats but
/// the cookie, which is the loop.
#[tokio::test]
async fn an_ldap_empty_page_handing_its_cookie_back_fails_naming_the_cookie() {
    let text = ldap_read_error(CookieLoop::NoEntries).await;
    assert!(text.contains("ldap://127.0.0.1:"), "{text}");
    assert!(
        text.contains("OU=Staff,DC=corp,DC=example,DC=com"),
        "{text}"
    );
    assert!(text.contains("cookie"), "{text}");
    assert!(text.contains("page-2"), "{text}");
}

/// The URL `req` was sent to, on `base` (wiremock sees `http://localhost/…`).
fn own_url(base: &str, req: &Request) -> String {
    match req.url.query() {
        Some(query) => format!("{base}{}?{query}", req.url.path()),
        None => format!("{base}{}", req.url.path()),
    }
}

/// The requests the server got for `path`.
async fn asked_for(server: &MockServer, path: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == path)
        .count()
}

/// Okta's group listing whose first page names itself as the next: the loop is
/// caught at once. Before, the first page was read a second time, as the check
/// knew only the pages named by a next link.
#[tokio::test]
async fn an_okta_next_link_back_to_the_first_page_is_caught_before_reading_it_again() {
    let server = MockServer::start().await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/api/v1/groups"))
        .respond_with(move |req: &Request| {
            ResponseTemplate::new(200)
                .set_body_json(json!([okta_group("00g1", "Taskade Users")]))
                .insert_header("link", format!("<{}>; rel=\"next\"", own_url(&base, req)))
        })
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let source = OktaSource::new(crate::okta::settings(&server, crate::okta::ssws()));
    let error = source.snapshot().await.unwrap_err().to_string();
    assert!(error.contains("repeats a page already read"), "{error}");
    assert!(error.contains("/api/v1/groups"), "{error}");
    assert_eq!(asked_for(&server, "/api/v1/groups").await, 1, "{error}");
}

/// The same for Graph's `@odata.nextLink`.
#[tokio::test]
async fn a_graph_next_link_back_to_the_first_page_is_caught_before_reading_it_again() {
    let server = MockServer::start().await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/groups"))
        .respond_with(move |req: &Request| {
            ResponseTemplate::new(200).set_body_json(json!({
                "value": [graph_group("g1", "Taskade Users")],
                "@odata.nextLink": own_url(&base, req),
            }))
        })
        .with_priority(1)
        .mount(&server)
        .await;
    small_tenant().mount(&server).await;
    let source = EntraSource::new(crate::entra::settings(&server, crate::entra::secret()));
    let error = source.snapshot().await.unwrap_err().to_string();
    assert!(error.contains("repeats a page already read"), "{error}");
    assert!(error.contains("/v1.0/groups"), "{error}");
    assert_eq!(asked_for(&server, "/v1.0/groups").await, 1, "{error}");
}

/// Okta's 429 for its concurrency limit (shared by every app of the org)
/// carries that limit's `X-Rate-Limit-*` values instead of the endpoint
/// family's. Refused on the group listing, after that family answered with its
/// own limit (600), it must hold the user listing too, still paging; before,
/// only the group family waited, and the others kept sending into the limit.
#[tokio::test]
async fn an_okta_concurrency_429_pauses_every_endpoint_family() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    org.users.extend((7..=24).map(|i| {
        okta_user(
            &format!("00u{i}"),
            &format!("user{i}@example.com"),
            "ACTIVE",
        )
    }));
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        // The user listing, each page a moment in coming, every request noted.
        let (arrivals, users, base) = (arrivals.clone(), org.users.clone(), server.uri());
        Mock::given(method("GET"))
            .and(path("/api/v1/users"))
            .respond_with(move |req: &Request| {
                arrivals.lock().unwrap().push(Instant::now());
                let deprovisioned = req.url.query_pairs().any(|(k, _)| k == "search");
                let selected: Vec<Value> = users
                    .iter()
                    .filter(|u| (u["status"] == "DEPROVISIONED") == deprovisioned)
                    .cloned()
                    .collect();
                page(req, &base, &selected, 2, LinkStyle::SeparateLines)
                    .set_delay(Duration::from_millis(150))
            })
            .with_priority(1)
            .mount(&server)
            .await;
    }
    let refused: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let refused = refused.clone();
        Mock::given(method("GET"))
            .and(path("/api/v1/groups"))
            .and(query_param("after", "2"))
            .respond_with(move |_: &Request| {
                *refused.lock().unwrap() = Some(Instant::now());
                let now = SystemTime::now();
                let epoch = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
                ResponseTemplate::new(429)
                    .insert_header("date", httpdate::fmt_http_date(now).as_str())
                    .insert_header("x-rate-limit-limit", "75")
                    .insert_header("x-rate-limit-remaining", "0")
                    .insert_header("x-rate-limit-reset", (epoch + 2).to_string().as_str())
                    .set_body_json(json!({
                        "errorCode": "E0000047",
                        "errorSummary": "API call exceeded rate limit due to too many requests.",
                        "errorLink": "E0000047",
                        "errorId": "oae-s42-concurrency",
                        "errorCauses": []
                    }))
            })
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
    }
    org.mount(&server).await;
    let mut settings = crate::okta::settings(&server, crate::okta::ssws());
    settings.retry = RetryPolicy {
        max_retry_after: Duration::from_secs(10),
        ..RetryPolicy::immediate(3)
    };
    let snapshot = OktaSource::new(settings).snapshot().await.unwrap();
    assert_eq!(snapshot.identities.len(), 24);

    let refused = refused
        .lock()
        .unwrap()
        .expect("the group listing was refused");
    let arrivals = arrivals.lock().unwrap().clone();
    let during_pause: Vec<Duration> = arrivals
        .iter()
        .filter(|at| **at > refused + Duration::from_millis(100))
        .filter(|at| **at < refused + Duration::from_millis(1800))
        .map(|at| *at - refused)
        .collect();
    assert!(
        during_pause.is_empty(),
        "user pages asked for during the pause, after: {during_pause:?}"
    );
    let after = arrivals
        .iter()
        .filter(|at| **at >= refused + Duration::from_millis(1800))
        .count();
    assert!(after >= 5, "{after} user pages after the pause");
}

/// A 429 that carries the family's own limit is that family's window: the
/// other families go on (the family itself waits for its reset).
#[tokio::test]
async fn an_okta_rate_limit_429_of_one_family_holds_only_that_family() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    org.users.extend((7..=24).map(|i| {
        okta_user(
            &format!("00u{i}"),
            &format!("user{i}@example.com"),
            "ACTIVE",
        )
    }));
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        let (arrivals, users, base) = (arrivals.clone(), org.users.clone(), server.uri());
        Mock::given(method("GET"))
            .and(path("/api/v1/users"))
            .respond_with(move |req: &Request| {
                arrivals.lock().unwrap().push(Instant::now());
                let deprovisioned = req.url.query_pairs().any(|(k, _)| k == "search");
                let selected: Vec<Value> = users
                    .iter()
                    .filter(|u| (u["status"] == "DEPROVISIONED") == deprovisioned)
                    .cloned()
                    .collect();
                page(req, &base, &selected, 2, LinkStyle::SeparateLines)
                    .set_delay(Duration::from_millis(150))
            })
            .with_priority(1)
            .mount(&server)
            .await;
    }
    let refused: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let refused = refused.clone();
        Mock::given(method("GET"))
            .and(path("/api/v1/groups"))
            .and(query_param("after", "2"))
            .respond_with(move |_: &Request| {
                *refused.lock().unwrap() = Some(Instant::now());
                let now = SystemTime::now();
                let epoch = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
                ResponseTemplate::new(429)
                    .insert_header("date", httpdate::fmt_http_date(now).as_str())
                    .insert_header("x-rate-limit-limit", "600")
                    .insert_header("x-rate-limit-remaining", "0")
                    .insert_header("x-rate-limit-reset", (epoch + 2).to_string().as_str())
                    .set_body_json(json!({
                        "errorCode": "E0000047",
                        "errorSummary": "API call exceeded rate limit due to too many requests.",
                        "errorLink": "E0000047",
                        "errorId": "oae-s42-rate",
                        "errorCauses": []
                    }))
            })
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
    }
    org.mount(&server).await;
    let mut settings = crate::okta::settings(&server, crate::okta::ssws());
    settings.retry = RetryPolicy {
        max_retry_after: Duration::from_secs(10),
        ..RetryPolicy::immediate(3)
    };
    let snapshot = OktaSource::new(settings).snapshot().await.unwrap();
    assert_eq!(snapshot.identities.len(), 24);

    let refused = refused
        .lock()
        .unwrap()
        .expect("the group listing was refused");
    let arrivals = arrivals.lock().unwrap().clone();
    let during_wait = arrivals
        .iter()
        .filter(|at| **at > refused + Duration::from_millis(100))
        .filter(|at| **at < refused + Duration::from_millis(1800))
        .count();
    assert!(
        during_wait >= 3,
        "{during_wait} user pages while the group family waited"
    );
}

/// A group whose `member` the bind account may not read comes back without
/// it, as an empty group does. A user's `memberOf` naming it tells the two
/// apart: the read fails naming the group, instead of taking everyone in it
/// out of what it maps to (a small group slips under the mass-change guards).
#[tokio::test]
async fn an_ldap_group_whose_members_may_not_be_read_fails_naming_it() {
    let (port, _) = start_fake(withholding_members_of(BACKEND)).await;
    let mut settings = source(port).settings().clone();
    settings.other_groups = vec!["Backend".to_owned()];
    let error = LdapSource::new(settings).snapshot().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.contains(BACKEND), "{text}");
    assert!(text.contains("CN=Ben Wong"), "{text}");
    assert!(text.contains("may not read the group's members"), "{text}");
    assert!(text.contains("svc-seatwarden"), "{text}");
}

/// Where no user's `memberOf` names a group that shows no members (a group
/// whose only member is another group), there is nothing to tell it from an
/// empty group by: it reads as empty, as before.
#[tokio::test]
async fn an_ldap_group_without_members_no_memberof_names_reads_as_empty() {
    let (port, _) = start_fake(withholding_members_of(IT_ADMINS)).await;
    let mut settings = source(port).settings().clone();
    settings.other_groups = vec!["IT Admins".to_owned(), "Backend".to_owned()];
    let snapshot = LdapSource::new(settings).snapshot().await.unwrap();
    let ben = snapshot
        .identities
        .iter()
        .find(|i| i.user_name.starts_with("ben"))
        .unwrap();
    assert!(ben.groups.contains(&"Backend".to_owned()), "{ben:?}");
    assert!(
        snapshot
            .identities
            .iter()
            .all(|i| !i.groups.contains(&"IT Admins".to_owned())),
        "{:?}",
        snapshot.identities
    );
}
