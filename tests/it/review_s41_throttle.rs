//! Review (s41) of directory-side throttling: a provider that asks a connector to
//! slow down is obeyed by every request of that connector, not only the one it
//! answered, and a token endpoint's rate limit is waited out as the API's is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatwarden::directory::{EntraSource, OktaAuth, OktaSource, Secret};
use seatwarden::retry::RetryPolicy;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::entra::{FakeGraph, graph_group, graph_page, graph_user};
use crate::okta::{LinkStyle, expected_small_org, small_org, statuses};

/// Microsoft Graph throttles an app in a tenant, not a request: while one member
/// read waits out a 429's `Retry-After`, the other member reads (run
/// `max_concurrency` at a time) must send nothing either. Before, only the
/// refused read waited, and the others went on into more 429s.
#[tokio::test]
async fn a_graph_429_pauses_every_concurrent_read_for_its_retry_after() {
    let server = MockServer::start().await;
    let names: Vec<String> = (0..12).map(|i| format!("Team {i:02}")).collect();
    let graph = FakeGraph {
        users: vec![graph_user("a1", "ada@contoso.com", true)],
        groups: names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    graph_group(&format!("g{i:02}"), name),
                    vec!["a1".to_owned()],
                )
            })
            .collect(),
        direct: Default::default(),
        page_size: 10,
        assignments: Vec::new(),
        others: false,
    };
    // Every member read is recorded with when it arrived; the first read of
    // g03 is throttled, the others take a moment, as Graph's do.
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let throttled = Arc::new(AtomicUsize::new(0));
    {
        let arrivals = arrivals.clone();
        let base = server.uri();
        Mock::given(method("GET"))
            .and(path_regex(r"^/v1.0/groups/[^/]+/transitiveMembers$"))
            .respond_with(move |req: &Request| {
                let id = req.url.path().split('/').nth(3).unwrap().to_owned();
                arrivals.lock().unwrap().push((id.clone(), Instant::now()));
                if id == "g03" && throttled.fetch_add(1, Ordering::SeqCst) == 0 {
                    return ResponseTemplate::new(429)
                        .insert_header("retry-after", "2")
                        .set_body_json(json!({"error": {
                            "code": "TooManyRequests",
                            "message": "Too many requests.",
                        }}));
                }
                let members = [json!({"@odata.type": "#microsoft.graph.user", "id": "a1"})];
                graph_page(req, &base, &members, 10).set_delay(Duration::from_millis(150))
            })
            .with_priority(1)
            .mount(&server)
            .await;
    }
    graph.mount(&server).await;
    let mut settings = crate::entra::settings(&server, crate::entra::secret());
    settings.scope_groups = vec![names[0].clone()];
    settings.other_groups = names.clone();
    settings.max_concurrency = 4;
    settings.retry = RetryPolicy {
        max_retry_after: Duration::from_secs(10),
        ..RetryPolicy::immediate(3)
    };
    let snapshot = EntraSource::new(settings).snapshot().await.unwrap();
    assert_eq!(snapshot.identities.len(), 1);
    assert_eq!(snapshot.identities[0].groups, names);

    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 13, "12 groups and one retry: {arrivals:?}");
    let refused = arrivals.iter().find(|(id, _)| id == "g03").unwrap().1;
    // Reads sent before the 429 came back arrive with it; none after, until
    // Retry-After has passed.
    let during_pause: Vec<&String> = arrivals
        .iter()
        .filter(|(_, at)| {
            *at > refused + Duration::from_millis(100)
                && *at < refused + Duration::from_millis(1900)
        })
        .map(|(id, _)| id)
        .collect();
    assert!(
        during_pause.is_empty(),
        "sent during the pause: {during_pause:?}"
    );
    let after = arrivals
        .iter()
        .filter(|(_, at)| *at >= refused + Duration::from_millis(1900))
        .count();
    assert!(after >= 9, "{after} reads after the pause: {arrivals:?}");
}

/// Okta's token endpoint has its own rate limit, and answers a 429 as the API
/// does: `X-Rate-Limit-Reset`, no `Retry-After`. The token request waits for
/// the reset as API calls do; before, it was retried on the plain backoff, whose
/// retries ran out within seconds of a window that resets up to a minute later.
#[tokio::test]
async fn an_okta_token_endpoint_429_waits_for_its_rate_limit_reset() {
    let server = MockServer::start().await;
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        let arrivals = arrivals.clone();
        Mock::given(method("POST"))
            .and(path("/oauth2/v1/token"))
            .respond_with(move |_: &Request| {
                let mut arrivals = arrivals.lock().unwrap();
                arrivals.push(Instant::now());
                if arrivals.len() == 1 {
                    let now = std::time::SystemTime::now();
                    let epoch = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                    return ResponseTemplate::new(429)
                        .insert_header("date", httpdate::fmt_http_date(now).as_str())
                        .insert_header("x-rate-limit-limit", "600")
                        .insert_header("x-rate-limit-remaining", "0")
                        .insert_header("x-rate-limit-reset", (epoch + 2).to_string().as_str())
                        .set_body_json(json!({
                            "errorCode": "E0000047",
                            "errorSummary": "API call exceeded rate limit due to too many requests.",
                            "errorLink": "E0000047",
                            "errorId": "oae-s41-token",
                            "errorCauses": []
                        }));
                }
                ResponseTemplate::new(200).set_body_json(json!({
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "access_token": "access-token-s41",
                    "scope": "okta.users.read okta.groups.read"
                }))
            })
            .mount(&server)
            .await;
    }
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let auth = OktaAuth::PrivateKeyJwt {
        client_id: "0oa-service-app".into(),
        key_id: Some("key-1".into()),
        private_key: Secret::File {
            key: "directory.private_key_file",
            path: std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/keys/test-rsa-pkcs8.pem"
            ))
            .to_owned(),
        },
    };
    let mut settings = crate::okta::settings(&server, auth);
    settings.retry = RetryPolicy {
        max_retry_after: Duration::from_secs(10),
        ..RetryPolicy::immediate(3)
    };
    let source = OktaSource::new(settings);
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2, "one 429, then the token");
    let waited = arrivals[1] - arrivals[0];
    assert!(
        waited >= Duration::from_millis(1800),
        "asked again after {waited:?}"
    );
}
