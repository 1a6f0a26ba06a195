//! Review (s42) of directory reads that could loop or see too little: an LDAP
//! server that hands back a paged-results cookie it already gave; an Okta or
//! Graph next link back to a listing's first page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::directory::{EntraSource, OktaSource};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::entra::{graph_group, small_tenant};
use crate::ldap_ad::{CookieLoop, looping_cookie, source, start_fake};
use crate::okta::{LinkStyle, okta_group, small_org};

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
