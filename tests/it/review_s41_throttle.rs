//! Review (s41) of directory-side throttling: a provider that asks a connector to
//! slow down is obeyed by every request of that connector, not only the one it
//! answered, and a token endpoint's rate limit is waited out as the API's is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatwarden::directory::EntraSource;
use seatwarden::retry::RetryPolicy;
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::entra::{FakeGraph, graph_group, graph_page, graph_user};

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
