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

/// Ada's account holds the userName two others now want: Ben, new, and Dan,
/// whose account would be renamed to it. Explaining Ada names both and says
/// their create and rename wait on her account; explaining Ben names Ada's
/// account, as before. Someone no one waits on gets no such line.
#[tokio::test]
async fn explaining_the_holder_of_a_wanted_user_name_names_who_waits_on_it() {
    let idp = MockServer::start().await;
    list_people(
        &idp,
        &[("p-ada", "ada@example.com"), ("p-dan", "dan@example.com")],
    )
    .await;
    let workspace = crate::fixtures::sandbox(WORKSPACE_TOKEN, WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &idp, workspace.base_url().as_ref());
    crate::fixtures::assert_clean_reconcile(&reconcile(&config).await.report);
    let id_of = |user_name: &str| {
        workspace
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.user_name == user_name)
            .unwrap()
            .id
    };
    let (ada, dan) = (id_of("ada@example.com"), id_of("dan@example.com"));

    list_people(
        &idp,
        &[
            ("p-ada", "ada@example.com"),
            ("p-ben", "Ada@Example.com"),
            ("p-dan", "ADA@example.com"),
        ],
    )
    .await;
    let outcome = reconcile(&config).await;
    assert_eq!(
        outcome.report.summary.actions_failed, 0,
        "{:#?}",
        outcome.report.actions
    );
    let mut conflicts: Vec<(&str, Option<&str>, &UserNameConflict)> = outcome
        .report
        .drift
        .iter()
        .filter_map(|d| {
            Some((
                d.identity_id.as_deref()?,
                d.account_id.as_deref(),
                d.conflict.as_ref()?,
            ))
        })
        .collect();
    conflicts.sort_by_key(|c| c.0);
    let held = |wanted_by: &str| UserNameConflict {
        held_by: vec![ada.clone()],
        wanted_by: vec![wanted_by.to_owned()],
        wanted_by_more: 0,
    };
    assert_eq!(
        conflicts,
        [
            ("p-ben", None, &held("p-dan")),
            ("p-dan", Some(dan.as_str()), &held("p-ben")),
        ]
    );

    let store = Store::open(&config.state.path).unwrap();
    let next_run = |person: &str| {
        let explained = explain(&config, &store, person, chrono::Utc::now()).unwrap();
        explained
            .split("\nNext run")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    let for_ada = next_run("p-ada");
    let waiting: Vec<&str> = for_ada
        .lines()
        .filter(|l| l.starts_with("  holds the userName"))
        .collect();
    let free = format!(
        "while this account keeps it; two people cannot share a userName: fix it in the \
         directory, or free it (rename or delete account {ada}) if it should be theirs"
    );
    assert_eq!(
        waiting,
        [
            format!(
                "  holds the userName person p-ben wants (\"Ada@Example.com\"): their account \
                 is not created {free}"
            ),
            format!(
                "  holds the userName person p-dan wants (\"ADA@example.com\"): their account \
                 {dan} is not renamed to it {free}"
            ),
        ],
        "{for_ada}"
    );
    // Nothing is planned for Ada herself.
    assert!(for_ada.contains("\n  nothing\n"), "{for_ada}");

    let for_ben = next_run("p-ben");
    assert!(
        for_ben.contains(&format!(
            "\n  not created: userName \"Ada@Example.com\" is already held by account {ada} \
             (person p-ada) and is wanted by person p-dan (account {dan} renamed) too"
        )),
        "{for_ben}"
    );
    assert!(!for_ben.contains("holds the userName"), "{for_ben}");
    // Dan has an account, but not the one in the way: only his own rename shows.
    let for_dan = next_run("p-dan");
    assert!(
        for_dan.contains(&format!(
            "\n  not renamed: account {dan} keeps \"dan@example.com\": userName \
             \"ADA@example.com\" is already held by account {ada}"
        )),
        "{for_dan}"
    );
    assert!(!for_dan.contains("holds the userName"), "{for_dan}");

    // Many want it: a few are named, the rest counted.
    let mut people = vec![("p-ada", "ada@example.com"), ("p-dan", "ADA@example.com")];
    let others: Vec<String> = (1..=6).map(|n| format!("p-w{n}")).collect();
    people.extend(others.iter().map(|id| (id.as_str(), "ada@EXAMPLE.com")));
    list_people(&idp, &people).await;
    reconcile(&config).await;
    let for_ada = next_run("p-ada");
    let lines: Vec<&str> = for_ada.lines().collect();
    assert_eq!(lines.len(), 8, "{for_ada}");
    assert_eq!(lines[1], "  nothing");
    assert!(
        lines[2..7]
            .iter()
            .all(|l| l.starts_with("  holds the userName person p-")),
        "{for_ada}"
    );
    assert_eq!(
        lines[7],
        "  and 2 more people want its userName, each waiting likewise"
    );
    workspace.shutdown().await;
}
