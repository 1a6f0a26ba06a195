//! Two people, one userName: a directory that is not a file export (here a SCIM
//! provider, mocked) can list two people whose userNames differ only in case. The
//! workspace holds a userName once, so a create for the second person is bound to
//! fail with 409; the plan reports it instead of sending it, and the failed write
//! never reaches the circuit breaker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use crate::fixtures::reconcile;
use seatwarden::config::Config;
use seatwarden::explain::explain;
use seatwarden::model::{ActionKind, DriftKind, UserNameConflict, WorkspaceSnapshot};
use seatwarden::report::{Outcome, State, headline};
use seatwarden::store::Store;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WORKSPACE_TOKEN: &str = "qa-conflicts-workspace";
const IDP_TOKEN: &str = "qa-conflicts-idp";

/// Serves `people` (id, userName) as the provider's `/Users`, everyone in
/// "Taskade Users".
async fn list_people(idp: &MockServer, people: &[(&str, &str)]) {
    idp.reset().await;
    let users: Vec<serde_json::Value> = people
        .iter()
        .map(|(id, user)| json!({"id": id, "userName": user, "active": true}))
        .collect();
    let members: Vec<serde_json::Value> =
        people.iter().map(|(id, _)| json!({"value": id})).collect();
    let list = |resources: Vec<serde_json::Value>| {
        ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": resources.len(), "startIndex": 1,
            "itemsPerPage": resources.len(), "Resources": resources,
        }))
    };
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(users))
        .mount(idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(vec![
            json!({"id": "g1", "displayName": "Taskade Users", "members": members}),
        ]))
        .mount(idp)
        .await;
}

/// A breaker whose window is one write: a single failed write opens it, so a
/// create bound to fail cannot go unnoticed.
fn config(dir: &std::path::Path, idp: &MockServer, workspace_url: &str) -> Config {
    std::fs::write(dir.join("idp-token"), IDP_TOKEN).unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{}/scim/v2\"\ntoken_file = \"idp-token\"\n\
             requests_per_second = 0\n\n\
             [workspace]\nurl = \"{workspace_url}\"\ntoken = \"{WORKSPACE_TOKEN}\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
             [safety]\nsettle = \"0s\"\n\n[safety.circuit]\nwindow = 1\n",
            idp.uri()
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

/// Ada has her account; Ben's directory entry was given her address in another
/// case. Each run reports Ben (also in `explain`), sends nothing for him, fails
/// nothing, and the breaker (open at one failed write) stays closed; Ada's
/// account stays hers. Cy, new at the same time, is created by the first run,
/// whose report still leaves Ben to review.
#[tokio::test]
async fn a_second_person_with_a_taken_user_name_is_reported_and_never_written() {
    let idp = MockServer::start().await;
    list_people(&idp, &[("p-ada", "ada@example.com")]).await;
    let workspace = crate::fixtures::sandbox(WORKSPACE_TOKEN, WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &idp, workspace.base_url().as_ref());
    crate::fixtures::assert_clean_reconcile(&reconcile(&config).await.report);
    let ada = workspace
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.user_name == "ada@example.com")
        .unwrap();
    assert_eq!(ada.external_id.as_deref(), Some("p-ada"));

    list_people(
        &idp,
        &[
            ("p-ada", "ada@example.com"),
            ("p-ben", "Ada@Example.com"),
            ("p-cy", "cy@example.com"),
        ],
    )
    .await;
    let mut writes_before = workspace.stats().writes;
    for run in 1..=2 {
        let outcome = reconcile(&config).await;
        let summary = &outcome.report.summary;
        assert_eq!(
            summary.actions_failed, 0,
            "run {run}: {:#?}",
            outcome.report.actions
        );
        if run == 1 {
            let created: Vec<(&str, Outcome)> = outcome
                .report
                .actions
                .iter()
                .map(|a| (a.subject.as_str(), a.outcome))
                .collect();
            assert_eq!(created, [("cy@example.com", Outcome::Applied)]);
            writes_before = workspace.stats().writes;
            let (_, headline) = headline(&outcome.report, "seatwarden");
            assert!(
                headline.ends_with("; 1 drift item left to review"),
                "{headline}"
            );
        }
        assert_eq!(State::of(&outcome.report), State::Drift, "run {run}");
        assert_eq!(workspace.stats().writes, writes_before, "run {run}");
        assert_eq!(outcome.report.safety.circuit, None, "run {run}");
        let store = Store::open(&config.state.path).unwrap();
        assert_eq!(store.circuit().unwrap().opened_at, None, "run {run}");

        let for_ben: Vec<&ActionKind> = outcome
            .plan
            .actions
            .iter()
            .filter(|a| {
                a.identity_id.as_deref() == Some("p-ben")
                    || matches!(&a.kind, ActionKind::CreateAccount { identity_id, .. } if identity_id == "p-ben")
            })
            .map(|a| &a.kind)
            .collect();
        assert!(for_ben.is_empty(), "run {run}: {for_ben:#?}");

        let ben: Vec<_> = outcome
            .report
            .drift
            .iter()
            .filter(|d| d.identity_id.as_deref() == Some("p-ben"))
            .collect();
        assert_eq!(ben.len(), 1, "run {run}: {ben:#?}");
        assert_eq!(ben[0].kind, DriftKind::MissingAccount);
        assert_eq!(
            ben[0].conflict,
            Some(UserNameConflict {
                held_by: vec![ada.id.clone()],
                ..UserNameConflict::default()
            }),
            "run {run}"
        );
        let detail = &ben[0].detail;
        assert!(
            detail.starts_with("not created: userName \"Ada@Example.com\" is already held by")
                && detail.contains(&format!("account {}", ada.id))
                && detail.contains("person p-ada"),
            "run {run}: {detail}"
        );
        // Ada's account is untouched and still hers.
        assert!(
            !outcome
                .plan
                .actions
                .iter()
                .any(|a| a.kind.account_id() == Some(ada.id.as_str())),
            "run {run}: {:#?}",
            outcome.plan.actions
        );
    }
    let store = Store::open(&config.state.path).unwrap();
    let explained = explain(&config, &store, "p-ben", chrono::Utc::now()).unwrap();
    let next_run = explained.split("\nNext run").nth(1).unwrap_or_default();
    assert!(
        next_run.contains("\n  not created: userName \"Ada@Example.com\" is already held by"),
        "{explained}"
    );
    let mut accounts: Vec<(String, Option<String>)> = workspace
        .snapshot()
        .accounts
        .into_iter()
        .map(|a| (a.user_name, a.external_id))
        .collect();
    accounts.sort();
    assert_eq!(
        accounts,
        [
            ("ada@example.com".to_owned(), Some("p-ada".to_owned())),
            ("cy@example.com".to_owned(), Some("p-cy".to_owned())),
        ]
    );
    workspace.shutdown().await;
}
