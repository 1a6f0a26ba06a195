//! Review (s41) of directory-side throttling: a provider that asks a connector to
//! slow down is obeyed by every request of that connector, not only the one it
//! answered, and a token endpoint's rate limit is waited out as the API's is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatwarden::directory::{EntraSource, LdapSource, OktaAuth, OktaSource, Secret};
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

/// A domain controller without a certificate: it answers the StartTLS request
/// (RFC 4511 §4.14) with `unavailable` (52), Active Directory's text, then waits.
/// Counts the connections it is asked for.
async fn dc_without_a_certificate() -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 256];
                let n = stream.read(&mut request).await.unwrap_or(0);
                // 30 len 02 01 <id> 77 …: the ExtendedRequest and its message id.
                assert!(
                    n > 5 && request[2..4] == [0x02, 0x01],
                    "{:02x?}",
                    &request[..n]
                );
                let id = request[4];
                let text = b"00000000: LdapErr: DSID-0C09120C, comment: Error initializing SSL/TLS, data 0, v4563";
                let mut response = vec![0x0a, 0x01, 52, 0x04, 0x00, 0x04, text.len() as u8];
                response.extend_from_slice(text);
                let mut message = vec![0x02, 0x01, id, 0x78, response.len() as u8];
                message.extend(response);
                let mut out = vec![0x30, message.len() as u8];
                out.extend(message);
                let _ = stream.write_all(&out).await;
                let _ = stream.read(&mut request).await;
            });
        }
    });
    (port, connections)
}

/// StartTLS refused as `unavailable` (52) by a server that has no certificate
/// fails at once, saying so: it was taken for a busy server's 52 and retried,
/// which no retry mends.
#[tokio::test]
async fn a_start_tls_refused_for_want_of_a_certificate_fails_at_once() {
    let (port, connections) = dc_without_a_certificate().await;
    let mut settings = crate::ldap_ad::source(0).settings().clone();
    settings.url = format!("ldap://127.0.0.1:{port}");
    settings.start_tls = true;
    settings.retry = RetryPolicy::immediate(3);
    let error = LdapSource::new(settings).snapshot().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.contains("unavailable (52)"), "{text}");
    assert!(
        text.contains("the server has no certificate for StartTLS"),
        "{text}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1, "{text}");
}
