//! Review (s42) of the directory connectors under throttling and in front of
//! proxies: a 429 that says nothing of when to come back, pages that are not
//! what they claim, and what an operator is told.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatwarden::directory::{EntraSource, OktaSource};
use seatwarden::retry::RetryPolicy;
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::okta::{FakeOkta, LinkStyle, okta_group, okta_user, page};

/// A 429 with neither `Retry-After` nor `X-Rate-Limit-*` (a proxy's, or Okta's
/// with its headers stripped on the way) pauses every request of the Okta
/// connector for the refused request's backoff, as one with `Retry-After`
/// does. Before, only the refused request waited; the other member reads, run
/// `max_concurrency` at a time, went on into the limit.
#[tokio::test]
async fn an_okta_429_without_rate_headers_pauses_every_concurrent_read_for_its_backoff() {
    let server = MockServer::start().await;
    let names: Vec<String> = (0..12).map(|i| format!("Team {i:02}")).collect();
    let org = FakeOkta {
        users: vec![okta_user("00u1", "ada@example.com", "ACTIVE")],
        groups: names
            .iter()
            .enumerate()
            .map(|(i, name)| (okta_group(&format!("00g{i:02}"), name), vec!["00u1".into()]))
            .collect(),
        page_size: 20,
        style: LinkStyle::SeparateLines,
        app_users: Vec::new(),
        app_groups: Vec::new(),
        clock_offset: None,
    };
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let throttled = Arc::new(AtomicUsize::new(0));
    {
        let arrivals = arrivals.clone();
        let base = server.uri();
        let member = okta_user("00u1", "ada@example.com", "ACTIVE");
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/groups/[^/]+/users$"))
            .respond_with(move |req: &Request| {
                let id = req.url.path().split('/').nth(4).unwrap().to_owned();
                arrivals.lock().unwrap().push((id.clone(), Instant::now()));
                if id == "00g03" && throttled.fetch_add(1, Ordering::SeqCst) == 0 {
                    return ResponseTemplate::new(429).set_body_json(json!({
                        "errorCode": "E0000047",
                        "errorSummary": "API call exceeded rate limit due to too many requests.",
                        "errorLink": "E0000047",
                        "errorId": "oae-s42-bare-429",
                        "errorCauses": []
                    }));
                }
                page(
                    req,
                    &base,
                    std::slice::from_ref(&member),
                    20,
                    LinkStyle::SeparateLines,
                )
                .set_delay(Duration::from_millis(150))
            })
            .with_priority(1)
            .mount(&server)
            .await;
    }
    org.mount(&server).await;
    let mut settings = crate::okta::settings(&server, crate::okta::ssws());
    settings.scope_groups = vec![names[0].clone()];
    settings.other_groups = names.clone();
    settings.max_concurrency = 4;
    // The backoff's first delay: 1 s, up to twice that with its jitter.
    settings.retry = RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(10),
    };
    let snapshot = OktaSource::new(settings).snapshot().await.unwrap();
    assert_eq!(snapshot.identities.len(), 1);
    assert_eq!(snapshot.identities[0].groups, names);

    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 13, "12 groups and one retry: {arrivals:?}");
    let refused = arrivals.iter().find(|(id, _)| id == "00g03").unwrap().1;
    // Reads sent before the 429 came back arrive with it; none after, until the
    // backoff (at least 1 s) has passed.
    let during_pause: Vec<&String> = arrivals
        .iter()
        .filter(|(_, at)| {
            *at > refused + Duration::from_millis(100) && *at < refused + Duration::from_millis(900)
        })
        .map(|(id, _)| id)
        .collect();
    assert!(
        during_pause.is_empty(),
        "sent during the pause: {during_pause:?} of {arrivals:?}"
    );
}

/// A proxy's login page, as Zscaler or a captive portal serve it: 200, HTML,
/// echoing the request it stopped (credential included).
fn proxy_login_page(echo: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        format!(
            "<!DOCTYPE html>\n<html><head>\n<TITLE>\n  Internet Access: Authentication Required\n</TITLE>\n\
             </head><body><p>Sign in to continue.</p><pre>{echo}</pre></body></html>"
        ),
        "text/html; charset=utf-8",
    )
}

/// A 200 with a web page from a proxy in front of Okta or Graph fails the read
/// saying what answered and what to check, quoting the page's title and nothing
/// else of it; it said only "expected value at line 1 column 1".
#[tokio::test]
async fn a_proxy_page_answered_with_200_is_named_for_what_it_is() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/users$"))
        .respond_with(proxy_login_page(
            "GET /api/v1/users\nAuthorization: SSWS 00a-ssws-test-token-value",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    crate::okta::small_org(LinkStyle::SeparateLines)
        .mount(&server)
        .await;
    let okta = OktaSource::new(crate::okta::settings(&server, crate::okta::ssws()));
    let error = okta.snapshot().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.starts_with("GET /api/v1/users?limit=200"), "{text}");
    assert!(
        text.contains(
            "an HTML page (\"Internet Access: Authentication Required\"), not the provider's JSON"
        ),
        "{text}"
    );
    assert!(
        text.contains("check directory.url, and HTTPS_PROXY"),
        "{text}"
    );
    assert!(!text.contains("00a-ssws-test-token-value"), "{text}");

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/v1.0/users$"))
        .respond_with(proxy_login_page("GET /v1.0/users"))
        .with_priority(1)
        .mount(&server)
        .await;
    crate::entra::small_tenant().mount(&server).await;
    let entra = EntraSource::new(crate::entra::settings(&server, crate::entra::secret()));
    let text = entra.snapshot().await.unwrap_err().to_string();
    assert!(text.starts_with("GET /v1.0/users?"), "{text}");
    assert!(
        text.contains(
            "an HTML page (\"Internet Access: Authentication Required\"), not the provider's JSON"
        ),
        "{text}"
    );
}

/// A proxy that blocks the provider answers 403 with its own page. Taken for
/// Okta's 403, it sent the operator to check the token's admin role ("Read-only
/// Administrator can"), quoting 120 characters of markup; it is named for what
/// it is, with its title, and the credential it echoes stays out.
#[tokio::test]
async fn a_proxy_block_page_is_not_taken_for_the_providers_refusal() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/groups$"))
        .respond_with(ResponseTemplate::new(403).set_body_raw(
            "<html><head><title>Access Denied: Web Filter</title></head><body>\
                 <p>The site acme.okta.com is blocked by policy.</p>\
                 <pre>Authorization: SSWS 00a-ssws-test-token-value</pre></body></html>",
            "text/html",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    crate::okta::small_org(LinkStyle::SeparateLines)
        .mount(&server)
        .await;
    let okta = OktaSource::new(crate::okta::settings(&server, crate::okta::ssws()));
    let error = okta.snapshot().await.unwrap_err();
    assert_eq!(error.status(), Some(403), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(
            "HTTP 403: an HTML page (\"Access Denied: Web Filter\"), not the provider's JSON"
        ),
        "{text}"
    );
    assert!(!text.contains("Read-only Administrator"), "{text}");
    assert!(!text.contains("00a-ssws-test-token-value"), "{text}");
}
