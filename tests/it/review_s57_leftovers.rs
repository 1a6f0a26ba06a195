//! Session 57: small things the session before noticed and left alone.
//! `check-config` warns of a 24 h limit below the per-run limit of its class. A
//! 401 or 403 that is a web page (a WAF's, a proxy's block page) says to check
//! what stands in front of the workspace, not the token. A deactivation whose
//! account was deleted meanwhile says the account was already gone. `approve`
//! says when it reads the directory, as a reconcile does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::run::{self, Mode};
use seatwarden::store::ActionState;
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fixtures::ada_config;
use crate::qa_cli::seatwarden;
use crate::review_s48_protected_link::{configured, reconcile, sandbox};
use crate::review_s56_guards::{accounts, people};

/// What a token refused says to check, and what a block page must not.
const CHECK_TOKEN: &str = "check workspace.token";
/// What a block page says to check instead.
const CHECK_IN_FRONT: &str = "not the token: check the proxy, firewall or WAF in front of the \
                              workspace";

/// A workspace behind a WAF that blocks this machine: every request is
/// answered `status` with the WAF's HTML page.
async fn blocked_by_a_waf(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(status).set_body_raw(
            "<!DOCTYPE html><html><head><title>Request Rejected</title></head>\
             <body>The requested URL was rejected. Your support ID is: 1234</body></html>",
            "text/html; charset=utf-8",
        ))
        .mount(&server)
        .await;
    server
}

/// A 24 h limit tighter than the per-run one (here the per-run count raised past
/// the 24 h default, and a percentage typed the wrong way round) leaves the
/// per-run limit unreachable: `check-config` passes, and warns of each, naming
/// both keys, their values and the file. A value the file writes is not called
/// the default, even when it equals it.
#[test]
fn check_config_warns_of_a_24h_limit_below_the_per_run_one() {
    let dir = tempfile::tempdir().unwrap();
    configured(
        dir.path(),
        "https://workspace.example/scim/v2",
        serde_json::json!([{"id": "p1", "userName": "p1@example.com", "status": "ACTIVE"}]),
        "[safety]\nmax_deprovisions = 60\n\
         max_membership_removal_percent = 10\nmax_membership_removal_percent_per_day = 1\n",
    );
    let path = dir.path().join("seatwarden.toml");
    let (ok, _, err) = seatwarden(&path, &["check-config"]);
    assert!(ok, "{err}");
    for warning in [
        format!(
            "warning: safety.max_deprovisions_per_day = 50 (the default) is below \
             safety.max_deprovisions = 60 in {}: the 24 h limit is met first, so the per-run \
             limit can never be reached; set max_deprovisions_per_day to 60 or more, or \
             max_deprovisions to 50 or less, whichever was meant",
            path.display()
        ),
        format!(
            "warning: safety.max_membership_removal_percent_per_day = 1 is below \
             safety.max_membership_removal_percent = 10 in {}",
            path.display()
        ),
    ] {
        assert!(err.contains(&warning), "{warning:?} not in {err}");
    }
}

/// A 403 block page read by a run: the error names the page's title and says
/// to check what is in front of the workspace, not the token; a SCIM JSON 403
/// keeps the token hint.
#[tokio::test]
async fn a_403_block_page_is_not_called_a_token_problem() {
    for status in [403, 401] {
        let server = blocked_by_a_waf(status).await;
        let dir = tempfile::tempdir().unwrap();
        let config = ada_config(&format!("{}/scim/v2", server.uri()), dir.path(), "ACTIVE");
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let message = run::execute(&config, store, Mode::Plan)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&format!(
                "HTTP {status}: an HTML page (\"Request Rejected\")"
            )),
            "{message}"
        );
        assert!(message.contains(CHECK_IN_FRONT), "{message}");
        assert!(!message.contains(CHECK_TOKEN), "{message}");

        // The same page answering the checks of `check-config --connect`.
        let path = dir.path().join("seatwarden.toml");
        let (_, out, err) = seatwarden(&path, &["check-config", "--connect"]);
        let said = format!("{out}{err}");
        assert!(said.contains("Request Rejected"), "{said}");
        assert!(said.contains(CHECK_IN_FRONT), "{said}");
        assert!(!said.contains(CHECK_TOKEN), "{said}");
    }

    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(403).set_body_raw(
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "403", "detail": "token lacks scim:write"}"#,
            "application/scim+json",
        ))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(&format!("{}/scim/v2", server.uri()), dir.path(), "ACTIVE");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let error = client.get_account("u1").await.unwrap_err();
    assert_eq!(
        error
            .what_to_check()
            .map(|hint| hint.starts_with(CHECK_TOKEN)),
        Some(true)
    );
}

fn scim(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(body)
}

/// A leaver's account deleted in the workspace (by an admin, by push SCIM)
/// after the run listed it and before its deactivation: the PATCH is answered
/// 404 and no read finds the account. The deactivation is no failure and is
/// not retried; its journal row, `explain` and the report say the account was
/// already gone (the access ended by that deletion, not by this write); the
/// person's deprovision is done.
#[tokio::test]
async fn a_deactivation_whose_account_was_deleted_meanwhile_says_it_was_already_gone() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    // The run's listing shows the account; every read after it, none.
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(serde_json::json!({
            "totalResults": 1, "startIndex": 1, "itemsPerPage": 1,
            "Resources": [{"id": "acc-1", "userName": "ada@example.com",
                           "externalId": "00u1", "active": true,
                           "roles": [{"value": "Viewer", "primary": true}]}]
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users"))
        .respond_with(scim(
            serde_json::json!({"totalResults": 0, "startIndex": 1, "Resources": []}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Groups"))
        .respond_with(scim(
            serde_json::json!({"totalResults": 0, "startIndex": 1, "Resources": []}),
        ))
        .mount(&server)
        .await;
    let not_found = || {
        ResponseTemplate::new(404).set_body_raw(
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "404", "detail": "User acc-1 not found"}"#,
            "application/scim+json",
        )
    };
    Mock::given(method("GET"))
        .and(path("/Users/acc-1"))
        .respond_with(not_found())
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/Users/acc-1"))
        .respond_with(not_found())
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = ada_config(&server.uri(), dir.path(), "DEPROVISIONED");
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let outcome = run::execute(&config, store, Mode::Reconcile).await.unwrap();

    let report = &outcome.report;
    assert_eq!(report.summary.actions_failed, 0, "{report:?}");
    assert_eq!(report.summary.actions_applied, 1, "{report:?}");
    let deactivation = &report.actions[0];
    assert_eq!(deactivation.op, "deactivate");
    let note = deactivation.error.clone().unwrap_or_default();
    assert!(
        note.starts_with(
            "the account was already gone from the workspace: no read finds account acc-1 \
             (the deactivation was answered 404; not by its id, nor by a search on /Users): \
             deleted there, or hidden by the workspace once deactivated, so its access ended \
             before this write, not with it"
        ),
        "{note}"
    );
    let text = seatwarden::report::render_text(report, chrono_tz::UTC, "seatwarden", false);
    assert!(text.contains(&note), "{text}");

    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let journal = store.journal(outcome.run_id).unwrap();
    assert_eq!(journal[0].state, ActionState::Applied);
    assert_eq!(journal[0].attempts, 1);
    assert_eq!(journal[0].last_error.as_deref(), Some(note.as_str()));
    // The same-day ledger: the person has no access left, so the episode is
    // verified and nothing is open.
    assert_eq!(store.open_deprovisions().unwrap(), Vec::new());
    let episodes = store.deprovision_history("00u1", 5).unwrap();
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    assert!(episodes[0].verified_at.is_some(), "{episodes:?}");
    server.verify().await;
}

/// `approve` of a held deactivation reads the directory beside the workspace
/// (someone back since is spared): that read says when it starts and when it
/// ends, how many people and how long, on stderr as a reconcile's does, so a
/// long read of a large directory does not look like a hang.
#[tokio::test(flavor = "multi_thread")]
async fn approve_says_when_it_reads_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(accounts(3)).await;
    let mut users = people(3);
    users[0]["status"] = "SUSPENDED".into();
    let config = configured(
        dir.path(),
        sandbox.base_url().as_ref(),
        users,
        "[safety]\nmax_deprovisions = 0\nsettle = \"0s\"\n",
    );
    let held = reconcile(&config).await;
    assert_eq!(held.summary.actions_held, 1, "{held:?}");
    let path = dir.path().join("seatwarden.toml");
    let run = held.run_id.to_string();
    let (ok, _, err) = tokio::task::spawn_blocking(move || seatwarden(&path, &["approve", &run]))
        .await
        .unwrap();
    assert!(ok, "{err}");
    let reading = err.find("reading the directory").expect(&err);
    let read = err.find("directory read").expect(&err);
    assert!(reading < read, "{err}");
    let line = err[read..].lines().next().unwrap();
    assert!(line.contains("identities=3"), "{line}");
    assert!(line.contains("elapsed="), "{line}");
    sandbox.shutdown().await;
}
