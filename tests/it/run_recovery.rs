//! A reconcile asks the workspace's `/ServiceProviderConfig` before it resolves
//! the rows a cut-off run left in flight: a workspace that is down or refuses the
//! token fails the run at once with the discovery error, not after a retry window
//! spent on the recovery's first read, and the rows stay for the next run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use serde_json::json;
use wiremock::{Mock, MockServer, ResponseTemplate};

use seatwarden::config::Config;
use seatwarden::model::{Action, ActionKind, DriftKind, Plan};
use seatwarden::run::{self, Mode};
use seatwarden::store::{ActionState, RunKind, Store};

fn config_for(url: &str, dir: &std::path::Path) -> Config {
    crate::fixtures::ada_config(url, dir, "deprovisioned")
}

/// Journals a deactivation of Ada's account and leaves it `in_flight`, as a
/// reconcile that died after sending it would. Returns that run's id.
pub(crate) fn crashed_deactivation(config: &Config) -> i64 {
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
    let plan = Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::Deactivate {
                account_id: "acc-1".into(),
            },
            reason: DriftKind::StaleAccess,
            subject: "ada@example.com".into(),
            identity_id: Some("00u1".into()),
            detail: "identity is deprovisioned in the directory".into(),
            held: None,
        }],
        ..Plan::default()
    };
    store.save_plan(run, &plan, Utc::now()).unwrap();
    store.mark_in_flight(run, 0, Utc::now()).unwrap();
    run
}

/// A reconcile of `config` against a client retrying twice at once: how it
/// failed, and the requests it sent.
async fn reconcile_retrying_twice(config: &Config) -> (String, u64) {
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(2);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();
    let directory = run::directory_from_config(config);
    let error = run::execute_with_options(
        config,
        &directory,
        &client,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
        run::RunOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    (error, client.stats().requests)
}

async fn paths_asked(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect()
}

fn state_of(config: &Config, run: i64) -> ActionState {
    Store::open(&config.state.path)
        .unwrap()
        .journal(run)
        .unwrap()[0]
        .state
}

#[tokio::test]
async fn a_workspace_that_is_down_fails_the_reconcile_before_its_recovery_reads() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server.uri(), dir.path());
    let crashed = crashed_deactivation(&config);

    let (error, _) = reconcile_retrying_twice(&config).await;

    assert!(
        error.starts_with("reading the workspace: GET /ServiceProviderConfig: HTTP 503"),
        "{error}"
    );
    // One retry window, the discovery's: the recovery read nothing.
    assert_eq!(
        paths_asked(&server).await,
        vec!["/ServiceProviderConfig"; 3],
        "{error}"
    );
    assert_eq!(state_of(&config, crashed), ActionState::InFlight);
}

/// A workspace that answers `/ServiceProviderConfig` to anyone (RFC 7644 lets
/// it) and refuses the token (403, insufficient scope) on everything else.
pub(crate) async fn discovery_passes_then_403() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "filter": {"supported": true, "maxResults": 100}
        })))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "403",
            "detail": "insufficient scope"
        })))
        .mount(&server)
        .await;
    server
}

/// A token that discovery passes but a listing refuses (revoked mid-run, or short
/// of the scope one endpoint needs) is named as the cause too.
#[tokio::test]
async fn a_listing_refused_403_after_discovery_names_the_token() {
    let server = discovery_passes_then_403().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server.uri(), dir.path());

    let (error, _) = reconcile_retrying_twice(&config).await;

    assert!(
        error.starts_with("reading the workspace: GET /")
            && error.contains("HTTP 403")
            && error.contains("insufficient scope")
            && error.contains("check workspace.token or the file workspace.token_file names"),
        "{error}"
    );
}

#[tokio::test]
async fn a_refused_token_fails_the_reconcile_before_its_recovery_naming_the_token() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "401",
            "detail": "token revoked"
        })))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server.uri(), dir.path());
    let crashed = crashed_deactivation(&config);

    let (error, _) = reconcile_retrying_twice(&config).await;

    assert!(
        error.starts_with("reading the workspace: GET /ServiceProviderConfig: HTTP 401")
            && error.contains("token revoked")
            && error.contains("check workspace.token or the file workspace.token_file names"),
        "{error}"
    );
    assert_eq!(
        paths_asked(&server).await,
        vec!["/ServiceProviderConfig"],
        "{error}"
    );
    assert_eq!(state_of(&config, crashed), ActionState::InFlight);
}

#[tokio::test]
async fn a_workspace_refusing_connections_fails_the_reconcile_before_its_recovery_reads() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&url, dir.path());
    let crashed = crashed_deactivation(&config);

    let (error, requests) = reconcile_retrying_twice(&config).await;

    assert!(
        error.starts_with("reading the workspace: GET /ServiceProviderConfig: "),
        "{error}"
    );
    // The discovery's three attempts, and no read of the recovery's.
    assert_eq!(requests, 3, "{error}");
    assert_eq!(state_of(&config, crashed), ActionState::InFlight);
}

/// `approve` resolves a cut-off run's rows first, as a reconcile does: a token
/// that discovery passes and `/Users` refuses failed it with "applying the
/// approved actions: reading the workspace: … HTTP 403", naming actions it never
/// got to and not the token. It says what a run's recovery says now, and the row
/// stays in flight.
#[tokio::test]
async fn an_approvals_recovery_read_refused_after_discovery_names_the_token() {
    let server = discovery_passes_then_403().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&server.uri(), dir.path());
    let crashed = crashed_deactivation(&config);
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();

    let error = seatwarden::approval::approve(
        &config,
        &client,
        Store::open(&config.state.path).unwrap(),
        crashed,
        &seatwarden::approval::Only::All,
        Utc::now(),
    )
    .await
    .unwrap_err()
    .to_string();

    assert!(
        error.starts_with("reading the workspace: GET /Users")
            && error.contains("HTTP 403")
            && error.contains("check workspace.token or the file workspace.token_file names"),
        "{error}"
    );
    assert_eq!(state_of(&config, crashed), ActionState::InFlight, "{error}");
}

/// A group create whose process died after the workspace made the group and
/// before the journal recorded its id: the recovery found no id to read and
/// failed the row "not reached" although the group exists. It looks the group
/// up by its displayName now, as a create of an account is looked up by its
/// userName, and records the create applied.
#[tokio::test]
async fn a_group_create_cut_off_before_its_id_was_journaled_is_found_by_name() {
    use seatwarden::model::{WorkspaceGroup, WorkspaceSnapshot};

    let workspace = crate::fixtures::sandbox(
        "t0ken",
        WorkspaceSnapshot {
            groups: vec![WorkspaceGroup {
                id: "g-fin".into(),
                display_name: "Finance".into(),
                members: vec![],
            }],
            ..WorkspaceSnapshot::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(workspace.base_url().as_str(), dir.path());
    let crashed = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::CreateGroup {
                    display_name: "finance".into(),
                },
                reason: DriftKind::GroupDrift,
                subject: "finance".into(),
                identity_id: None,
                detail: "workspace group finance does not exist".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, Utc::now()).unwrap();
        store.mark_in_flight(run, 0, Utc::now()).unwrap();
        run
    };

    crate::fixtures::reconcile(&config).await;

    let row = &Store::open(&config.state.path)
        .unwrap()
        .journal(crashed)
        .unwrap()[0];
    assert_eq!(row.state, ActionState::Applied, "{row:?}");
    workspace.shutdown().await;
}
