//! Session 41: the deprovisioning passes during a workspace outage. The retry
//! job runs every minute under the daemon's writer lock; a pass of it with
//! nothing due for an attempt and nothing left in flight has no question for
//! the workspace, and must not spend the client's retries (about 20 s) asking
//! its `/ServiceProviderConfig` while the sweeps that record leavers wait for the
//! lock. The sweep records its leavers before it asks the workspace anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use seatwarden::config::Config;
use seatwarden::model::{Action, ActionKind, DriftKind, LinkMethod, NewLink, Plan};
use seatwarden::sla::{self, Leaver, LossReason};
use seatwarden::store::{RunKind, Store};
use seatwarden::workspace::ScimClient;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A configuration in `dir` for the workspace at `url`, with a directory file
/// (`d.json`) of Ada (active) and Bob (suspended), and its state database.
fn config_for(url: &str, dir: &Path) -> (Config, Arc<Mutex<Store>>) {
    let person = |id: &str, name: &str, status: &str| {
        serde_json::json!({
            "id": id, "userName": format!("{name}@example.com"),
            "email": format!("{name}@example.com"), "givenName": name,
            "familyName": "Example", "status": status, "groups": []
        })
    };
    std::fs::write(
        dir.join("d.json"),
        serde_json::json!({"users": [
            person("00u1", "ada", "active"),
            person("00u2", "bob", "suspended"),
        ]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t\"\n"
        ),
    )
    .unwrap();
    let config = Config::load_with_env(
        &dir.join("seatwarden.toml"),
        Some(std::collections::HashMap::new()),
    )
    .unwrap();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    (config, store)
}

/// The client with the default retries (about 20 s against a workspace that
/// does not answer), as the daemon builds it.
fn client(config: &Config) -> ScimClient {
    ScimClient::new(config.scim_settings().unwrap()).unwrap()
}

/// Bob's deprovision episode, detected `ago` before now and tried once already:
/// its next attempt is minutes ahead, so nothing is due for an attempt now.
fn waiting_episode(store: &Arc<Mutex<Store>>, ago: chrono::Duration) {
    let detected = Utc::now() - ago;
    let changes = sla::observe(
        &[],
        &[Leaver {
            identity_id: "00u2".into(),
            account_id: Some("acc-bob".into()),
            user_name: "bob@example.com".into(),
            reason: LossReason::Suspended,
        }],
        &[],
        detected,
        chrono::Duration::hours(1),
    );
    let mut store = store.lock().unwrap();
    store.update_ledger(&changes, detected).unwrap();
    let open = store.open_deprovisions().unwrap();
    store
        .deprovision_failed(
            open[0].id,
            "reading the account: HTTP 503",
            Utc::now() + chrono::Duration::minutes(10),
        )
        .unwrap();
}

/// A workspace that answers 503 to everything (a load balancer with no service
/// behind it), counting what it is asked.
async fn answering_503() -> MockServer {
    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&workspace)
        .await;
    workspace
}

/// The retry job's pass while the workspace answers only 503 and the one open
/// episode waits for its next attempt: nothing to ask, so nothing is asked (it
/// used to ask `/ServiceProviderConfig` with all its retries, about 20 s under
/// the writer lock, every minute). The overdue episode is still escalated.
#[tokio::test]
async fn a_retry_pass_with_nothing_due_asks_a_workspace_answering_503_nothing() {
    let workspace = answering_503().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = config_for(&workspace.uri(), dir.path());
    waiting_episode(&store, chrono::Duration::hours(2));

    let started = Instant::now();
    let outcome = seatwarden::sweep::enforce(&config, &client(&config), &store, Utc::now())
        .await
        .unwrap();
    let took = started.elapsed();

    let asked = workspace.received_requests().await.unwrap_or_default();
    assert!(
        asked.is_empty(),
        "{} requests in {took:?}: {:?}",
        asked.len(),
        asked.iter().map(|r| r.url.path()).collect::<Vec<_>>()
    );
    // Well short of the retries' 20 s, with room for a loaded machine (2 s had
    // little: the pass opens and writes the state database).
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(outcome.idle, Some(1), "{outcome:?}");
    assert_eq!(outcome.escalated.len(), 1, "{outcome:?}");
    assert!(outcome.clone().checked().is_ok(), "{outcome:?}");
}

/// The same with a workspace that takes no connection at all (a port nobody
/// listens on): the pass is over at once, not after the retries.
#[tokio::test]
async fn a_retry_pass_with_nothing_due_waits_for_no_workspace_that_is_gone() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = config_for(&url, dir.path());
    waiting_episode(&store, chrono::Duration::minutes(5));
    let client = client(&config);

    let started = Instant::now();
    let outcome = seatwarden::sweep::enforce(&config, &client, &store, Utc::now())
        .await
        .unwrap();
    let took = started.elapsed();
    // Well short of the retries' 20 s, with room for a loaded machine.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(client.stats().retries, 0, "{:?}", client.stats());
    assert_eq!(outcome.idle, Some(1), "{outcome:?}");
    assert!(outcome.escalated.is_empty(), "{outcome:?}");
}

/// With nothing open at all, the retry job's pass asks nothing and says that
/// nothing waits (the daemon counts it a success: there is nothing to retry).
#[tokio::test]
async fn a_retry_pass_with_nothing_open_asks_nothing_and_nothing_waits() {
    let workspace = answering_503().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = config_for(&workspace.uri(), dir.path());

    let outcome = seatwarden::sweep::enforce(&config, &client(&config), &store, Utc::now())
        .await
        .unwrap();
    assert!(
        workspace
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(outcome.idle, Some(0), "{outcome:?}");
}

/// A deactivation a cut-off pass left in flight, with nothing due: the retry
/// pass still asks the workspace (its `/ServiceProviderConfig`, then what the
/// recovery reads) and resolves the row; it is not an idle pass.
#[tokio::test]
async fn a_retry_pass_with_a_row_in_flight_still_asks_and_recovers_it() {
    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 100}
        })))
        .mount(&workspace)
        .await;
    let bob = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "acc-bob", "userName": "bob@example.com", "externalId": "00u2", "active": false,
    });
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [bob]
        })))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/acc-bob"))
        .respond_with(ResponseTemplate::new(200).set_body_json(bob))
        .mount(&workspace)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = config_for(&workspace.uri(), dir.path());
    let earlier = Utc::now() - chrono::Duration::minutes(3);
    {
        let mut store = store.lock().unwrap();
        let run = store.begin_run(RunKind::Sweep, earlier).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: "acc-bob".into(),
                },
                reason: DriftKind::StaleAccess,
                subject: "bob@example.com".into(),
                identity_id: Some("00u2".into()),
                detail: "identity is suspended".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, earlier).unwrap();
        store.mark_in_flight(run, 0, earlier).unwrap();
    }

    let outcome = seatwarden::sweep::enforce(&config, &client(&config), &store, Utc::now())
        .await
        .unwrap();
    assert_eq!(outcome.idle, None, "{outcome:?}");
    let asked: Vec<String> = workspace
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(
        asked.first().map(String::as_str),
        Some("/ServiceProviderConfig"),
        "{asked:?}"
    );
    assert!(asked.len() > 1, "the recovery read nothing: {asked:?}");
    assert!(
        store.lock().unwrap().interrupted().unwrap().is_empty(),
        "the row is still in flight"
    );
}

/// The sweep records a leaver's episode (its SLA clock) before it asks the
/// workspace anything: while its first request (`/ServiceProviderConfig`, which
/// a workspace in trouble answers only after seconds) is still unanswered, the
/// episode is in the ledger, detected at the pass's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_records_its_leavers_before_it_asks_the_workspace() {
    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_secs(3)))
        .mount(&workspace)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = config_for(&workspace.uri(), dir.path());
    let now = Utc::now().trunc_subsecs(0);
    store
        .lock()
        .unwrap()
        .upsert_links(
            &[
                NewLink {
                    identity_id: "00u1".into(),
                    account_id: "acc-ada".into(),
                    method: LinkMethod::ExternalId,
                },
                NewLink {
                    identity_id: "00u2".into(),
                    account_id: "acc-bob".into(),
                    method: LinkMethod::ExternalId,
                },
            ],
            now,
        )
        .unwrap();
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(0);
    let client = ScimClient::new(settings).unwrap();
    let directory = config.sweep_directory();

    let sweeping = {
        let (config, store) = (config.clone(), Arc::clone(&store));
        tokio::spawn(async move {
            seatwarden::sweep::sweep(
                &config,
                &directory,
                &client,
                &store,
                now,
                chrono::Duration::hours(1),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let episode = loop {
        let open = store.lock().unwrap().open_deprovisions().unwrap();
        if let Some(entry) = open.into_iter().next() {
            break entry;
        }
        assert!(
            !sweeping.is_finished(),
            "the sweep finished before its episode was seen"
        );
        assert!(Instant::now() < deadline, "no episode opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        !sweeping.is_finished(),
        "the episode was recorded only after the workspace answered"
    );
    let asked = workspace.received_requests().await.unwrap_or_default();
    assert!(
        asked
            .iter()
            .all(|r| r.url.path() == "/ServiceProviderConfig"),
        "{:?}",
        asked.iter().map(|r| r.url.path()).collect::<Vec<_>>()
    );
    assert_eq!(episode.identity_id, "00u2");
    assert_eq!(episode.detected_at, now);
    let outcome = sweeping.await.unwrap().unwrap();
    assert_eq!(outcome.detected, 1, "{outcome:?}");
    assert_eq!(outcome.idle, None, "the sweep always asks: {outcome:?}");
}

/// The daemon's first retry pass (every job runs once at start) against a
/// workspace answering 503, on a state database with or without an episode
/// waiting for its next attempt: the log line that ends it.
async fn first_retry_end(waiting: bool) -> String {
    let workspace = answering_503().await;
    let dir = tempfile::tempdir().unwrap();
    let (_config, store) = config_for(&workspace.uri(), dir.path());
    if waiting {
        waiting_episode(&store, chrono::Duration::minutes(5));
    }
    drop(store);
    let env: Vec<(String, String)> = [
        ("SEATWARDEN__WORKSPACE__RETRIES", "1"),
        ("SEATWARDEN__WORKSPACE__RETRY_DELAY", "10ms"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| {
            l.contains("job=\"retry\"") && (l.contains("job finished") || l.contains("job failed"))
        }) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no retry pass ended: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    crate::fixtures::sigterm(&child);
    let status = crate::fixtures::exit_of(child, "the daemon").await;
    assert!(status.success(), "{status:?}");
    end
}

/// The daemon counts a retry pass with nothing open as a success (there is
/// nothing to retry: its failures in a row end), and one whose episode waits
/// for its next attempt as a pass that reached nothing (its failures in a row
/// stand, as during the back-off of an outage), not a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_ends_an_idle_retry_pass_by_whether_anything_waits() {
    let nothing_open = first_retry_end(false).await;
    assert!(
        nothing_open.contains("job finished") && !nothing_open.contains("without an answer"),
        "{nothing_open}"
    );
    let waiting = first_retry_end(true).await;
    assert!(
        waiting.contains("job finished without an answer from the workspace"),
        "{waiting}"
    );
}
