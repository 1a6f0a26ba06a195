//! Session 58: what session 57 noticed and left alone. The writes kept back
//! after a block page's 401 say that something in front of the workspace
//! refused a write, not the token. A directory connector's 401 or 403 that is a
//! web page (Okta, Graph, a SCIM directory) says to check what stands in front
//! of the provider, naming it, as the workspace's does. A deactivation a killed
//! run left in flight whose account is gone keeps the "already gone" note once
//! recovered. `export` and `explain` name a refused directory from the run's
//! own record, not from the newest report, which a run cut off stores none of.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use seatwarden::config::Config;
use seatwarden::directory::{EntraSource, OktaSource};
use seatwarden::model::WorkspaceSnapshot;
use seatwarden::run::{self, Mode, RunError};
use seatwarden::store::{ActionState, Store};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fixtures::ada_config;
use crate::qa_cli::seatwarden;
use crate::review_s48_protected_link::configured;
use crate::review_s56_guards::people;
use crate::run_recovery::crashed_deactivation;

/// What a refused token's writes kept back say, and a block page's must not.
const REFUSED_THE_TOKEN: &str = "refused the token";
/// What a directory's block page says to check, naming nothing yet.
const NOT_THE_CREDENTIAL: &str =
    "so not the credential: check the proxy, firewall or WAF in front of";

/// A WAF's block page, as F5 serves it.
fn block_page(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        "<!DOCTYPE html><html><head><title>Request Rejected</title></head>\
         <body>The requested URL was rejected. Your support ID is: 1234</body></html>",
        "text/html; charset=utf-8",
    )
}

fn scim(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(body)
}

fn listing(resources: Vec<serde_json::Value>) -> ResponseTemplate {
    scim(serde_json::json!({
        "totalResults": resources.len(), "startIndex": 1,
        "itemsPerPage": resources.len(), "Resources": resources
    }))
}

/// A workspace that reads as `accounts` and has no groups, without
/// `/ServiceProviderConfig`.
async fn workspace_of(accounts: Vec<serde_json::Value>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(listing(accounts))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(listing(Vec::new()))
        .mount(&server)
        .await;
    server
}

/// Three leavers' deactivations, written one at a time, and a WAF in front of
/// the workspace that answers the first with its block page and 401: the
/// writes after it are kept back, and said to be kept back because something
/// in front of the workspace refused a write, with what to check, never that
/// the workspace refused the token (which sent operators rotating a token that
/// was fine). The report counts them so, and its headline says so.
#[tokio::test]
async fn writes_kept_back_after_a_block_pages_401_say_what_refused_them() {
    let accounts = (0..3)
        .map(|i| {
            serde_json::json!({
                "id": format!("w{i}"), "userName": format!("p{i}@example.com"),
                "externalId": format!("00u{i}"), "active": true,
                "roles": [{"value": "Viewer", "primary": true}]
            })
        })
        .collect();
    let server = workspace_of(accounts).await;
    Mock::given(method("PATCH"))
        .respond_with(block_page(401))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut leavers = people(3);
    for person in leavers.as_array_mut().unwrap() {
        person["status"] = "SUSPENDED".into();
    }
    let mut config = configured(
        dir.path(),
        &server.uri(),
        leavers,
        "[safety]\nsettle = \"0s\"\nmax_deprovisions = 100\nmax_deprovision_percent = 100\n",
    );
    config.workspace.max_concurrency = 1;
    let store = Store::open(&config.state.path).unwrap();
    let report = run::execute(&config, store, Mode::Reconcile)
        .await
        .unwrap()
        .report;

    assert_eq!(report.summary.actions_failed, 1, "{:#?}", report.actions);
    let kept_back: Vec<&str> = report
        .not_sent()
        .filter_map(|a| a.error.as_deref())
        .collect();
    assert_eq!(kept_back.len(), 2, "{:#?}", report.actions);
    for error in &kept_back {
        assert!(
            error.starts_with(
                "not sent: something in front of the workspace (a proxy, firewall or WAF) \
                 refused a write (an earlier write was answered PATCH /Users/w"
            ),
            "{error}"
        );
        assert!(
            error.contains("HTTP 401: an HTML page (\"Request Rejected\")"),
            "{error}"
        );
        assert!(
            error.ends_with(
                "so not the token: check the proxy, firewall or WAF in front of the workspace \
                 (its rules and allow-list for this machine's address) and HTTPS_PROXY"
            ),
            "{error}"
        );
        assert!(!error.contains(REFUSED_THE_TOKEN), "{error}");
    }
    assert_eq!(
        report.not_sent_by_reason(),
        vec![("something in front of the workspace refused a write", 2)]
    );
    let text = seatwarden::report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    assert!(
        text.contains("because something in front of the workspace refused a write"),
        "{text}"
    );
    assert!(!text.contains(REFUSED_THE_TOKEN), "{text}");
    server.verify().await;
}

/// Okta behind a proxy that blocks it with a 401 or a 403 page: the error names
/// the page and says to look at what is in front of Okta's address, not at the
/// token, the admin role or the URL.
#[tokio::test]
async fn an_okta_block_page_says_to_check_what_is_in_front_of_okta() {
    for status in [401, 403] {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(block_page(status))
            .mount(&server)
            .await;
        let okta = OktaSource::new(crate::okta::settings(&server, crate::okta::ssws()));
        let text = okta.snapshot().await.unwrap_err().to_string();
        assert!(
            text.contains(&format!(
                "HTTP {status}: an HTML page (\"Request Rejected\"), not the provider's JSON"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("{NOT_THE_CREDENTIAL} {} (", server.uri())),
            "{text}"
        );
        assert!(!text.contains("Read-only Administrator"), "{text}");
        assert!(!text.contains("check directory.url"), "{text}");
    }
}

/// The same for Microsoft Graph, here its token endpoint blocked with a 403:
/// the endpoint the page answered for is named.
#[tokio::test]
async fn an_entra_block_page_says_to_check_what_is_in_front_of_the_endpoint() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(block_page(403))
        .mount(&server)
        .await;
    let entra = EntraSource::new(crate::entra::settings(&server, crate::entra::secret()));
    let text = entra.snapshot().await.unwrap_err().to_string();
    assert!(
        text.contains("/oauth2/v2.0/token: HTTP 403: an HTML page"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{NOT_THE_CREDENTIAL} {} (", server.uri())),
        "{text}"
    );
}

/// A SCIM directory (an IdP that serves SCIM) behind a WAF: the run's error and
/// `check-config --connect`'s directory line say to check what is in front of
/// the provider, naming it, not the token.
#[tokio::test(flavor = "multi_thread")]
async fn a_scim_directorys_block_page_says_to_check_what_is_in_front_of_it() {
    let idp = MockServer::start().await;
    Mock::given(any())
        .respond_with(block_page(403))
        .mount(&idp)
        .await;
    let workspace = crate::fixtures::sandbox("s58-token", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{}/scim/v2\"\ntoken = \"idp-token\"\n\
             requests_per_second = 0\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"s58-token\"\n\n\
             [state]\npath = \"{}\"\n\n[safety]\nsettle = \"0s\"\n",
            idp.uri(),
            workspace.base_url(),
            dir.path().join("state.db").display()
        ),
    )
    .unwrap();
    let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
    let error = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RunError::Directory(_)), "{error:?}");
    let text = error.to_string();
    let in_front = format!("{NOT_THE_CREDENTIAL} {} (", idp.uri());
    assert!(
        text.contains("HTTP 403: an HTML page (\"Request Rejected\")"),
        "{text}"
    );
    assert!(text.contains(&in_front), "{text}");

    let (_, out, err) =
        tokio::task::spawn_blocking(move || seatwarden(&path, &["check-config", "--connect"]))
            .await
            .unwrap();
    let line = out
        .lines()
        .chain(err.lines())
        .find(|l| l.trim_start().starts_with("directory"))
        .unwrap_or_else(|| panic!("{out}{err}"));
    assert!(line.contains(&in_front), "{line}");
    workspace.shutdown().await;
}

/// A reconcile killed after sending Ada's deactivation, her account deleted in
/// the workspace meanwhile (no read finds it): the next run's recovery journals
/// the row applied with the note the run's own verification gives, so the
/// journal and `explain` say the account was already gone, not only
/// "applied", which an auditor reads as seatwarden's deactivation.
#[tokio::test]
async fn a_recovered_deactivation_whose_account_is_gone_says_it_was_already_gone() {
    let server = workspace_of(Vec::new()).await;
    Mock::given(method("GET"))
        .and(path("/Users/acc-1"))
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "404", "detail": "User acc-1 not found"}"#,
            "application/scim+json",
        ))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(&server.uri(), dir.path(), "deprovisioned");
    let crashed = crashed_deactivation(&config);

    run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();

    let store = Store::open(&config.state.path).unwrap();
    let row = &store.journal(crashed).unwrap()[0];
    assert_eq!(row.state, ActionState::Applied);
    let note = row.last_error.clone().unwrap_or_default();
    assert!(
        note.starts_with(
            "the account was already gone from the workspace: no read finds account acc-1 when"
        ),
        "{note}"
    );
    assert!(seatwarden::apply::applied_note(Some(&note)), "{note}");
    let explained =
        seatwarden::explain::explain(&config, &store, "ada@example.com", chrono::Utc::now())
            .unwrap();
    let line = explained
        .lines()
        .find(|l| l.contains(&format!("run {crashed} #0 deactivate")))
        .unwrap_or_else(|| panic!("{explained}"));
    assert!(
        line.contains("applied: the account was already gone from the workspace"),
        "{line}"
    );
}

/// The only snapshots are of a run whose directory the source check refused,
/// and that run stored no report (as one that failed or was killed after the
/// check leaves it): `export` and `explain` name the refused run, as the run's
/// record says, rather than telling the operator, who just ran a plan, to run
/// one first.
#[tokio::test]
async fn export_and_explain_name_a_refused_directory_whose_run_stored_no_report() {
    let sandbox = crate::fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(sandbox.base_url().as_str(), dir.path(), "active");
    std::fs::write(dir.path().join("directory.json"), r#"{"users": []}"#).unwrap();
    let refused = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    assert!(refused.report.safety.source_fault.is_some());
    sandbox.shutdown().await;
    rusqlite::Connection::open(&config.state.path)
        .unwrap()
        .execute("DELETE FROM reports WHERE run_id = ?1", [refused.run_id])
        .unwrap();

    let said = format!(
        "the directory of run {} was refused as a source fault",
        refused.run_id
    );
    let store = Store::open(&config.state.path).unwrap();
    let exported = seatwarden::export::access(&store, &config)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(exported.starts_with(&said), "{exported}");
    let explained =
        seatwarden::explain::explain(&config, &store, "ada@example.com", chrono::Utc::now())
            .unwrap_err()
            .to_string();
    assert!(explained.starts_with(&said), "{explained}");
}
