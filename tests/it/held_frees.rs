//! A userName a held delete would free: Ann left (gone from the directory export,
//! which refuses two people with one userName) and her account is to be deleted
//! at once (`deprovision.action = "delete"`, `delete_after = "0s"`), and Bob was
//! given her userName. The plan creates Bob because the delete, sent first, frees
//! the name; the deprovision threshold (`safety.max_deprovisions = 0`) holds the
//! delete, so the create waits with it instead of meeting 409 on every run.
//! Approving the delete deletes the account and leaves the create held; the next
//! reconcile creates Bob.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use crate::fixtures::reconcile;
use chrono::Utc;
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::model::{ActionClass, ActionKind, HoldReason, WorkspaceSnapshot};
use seatwarden::report::Outcome;
use seatwarden::store::{ActionState, Store};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "held-frees-token";

/// The directory file of `people`: (id, userName, status).
fn write_directory(dir: &Path, people: &[(&str, &str, &str)]) {
    let users: Vec<serde_json::Value> = people
        .iter()
        .map(|(id, user_name, status)| {
            serde_json::json!({
                "id": id, "userName": user_name, "email": user_name,
                "status": status, "groups": []
            })
        })
        .collect();
    std::fs::write(
        dir.join("directory.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
}

/// Deletes at once, holds every deprovision, and a breaker whose window is one
/// write: a single create meeting 409 would open it.
fn config(dir: &Path, url: &str) -> Config {
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\n\
             [deprovision]\naction = \"delete\"\ndelete_after = \"0s\"\n\n\
             [safety]\nsettle = \"0s\"\nmax_deprovisions = 0\n\n\
             [safety.circuit]\nwindow = 1\n"
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

#[tokio::test]
async fn a_create_waits_for_the_held_delete_that_frees_its_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = crate::fixtures::sandbox(TOKEN, WorkspaceSnapshot::default()).await;
    let config = config(dir.path(), workspace.base_url().as_ref());
    write_directory(dir.path(), &[("00u-ann", "ann@example.com", "ACTIVE")]);
    crate::fixtures::assert_clean_reconcile(&reconcile(&config).await.report);
    let ann = workspace.snapshot().accounts.pop().unwrap();
    assert_eq!(ann.external_id.as_deref(), Some("00u-ann"));

    write_directory(dir.path(), &[("00u-bob", "Ann@Example.com", "ACTIVE")]);
    let mut last_run = None;
    for run in 1..=2 {
        let outcome = reconcile(&config).await;
        let summary = &outcome.report.summary;
        assert_eq!(summary.actions_failed, 0, "run {run}: {summary:?}");
        let kinds: Vec<(&ActionKind, Option<&HoldReason>)> = outcome
            .plan
            .actions
            .iter()
            .map(|a| (&a.kind, a.held.as_ref()))
            .collect();
        let [(delete, Some(threshold)), (create, Some(waits))] = kinds.as_slice() else {
            panic!("run {run}: {kinds:#?}");
        };
        assert!(
            matches!(delete, ActionKind::Delete { account_id, .. } if *account_id == ann.id),
            "run {run}: {delete:?}"
        );
        assert!(
            matches!(
                threshold,
                HoldReason::Threshold {
                    class: ActionClass::Deprovision,
                    ..
                }
            ),
            "run {run}: {threshold:?}"
        );
        assert!(
            matches!(create, ActionKind::CreateAccount { identity_id, .. } if identity_id == "00u-bob"),
            "run {run}: {create:?}"
        );
        assert_eq!(
            *waits,
            &HoldReason::WaitsForDelete {
                account_id: ann.id.clone(),
                held: Box::new((*threshold).clone()),
            },
            "run {run}"
        );
        assert!(
            outcome
                .report
                .actions
                .iter()
                .all(|a| a.outcome == Outcome::Held),
            "run {run}: {:#?}",
            outcome.report.actions
        );
        assert_eq!(outcome.report.safety.circuit, None, "run {run}");
        let store = Store::open(&config.state.path).unwrap();
        assert_eq!(store.circuit().unwrap().opened_at, None, "run {run}");
        assert_eq!(
            workspace.snapshot().accounts,
            std::slice::from_ref(&ann),
            "run {run}"
        );
        last_run = Some(outcome.run_id);
    }

    // Approving the create alone sends nothing: the account still has the name.
    let run = last_run.unwrap();
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approve = |only: Only| {
        let (config, client) = (&config, &client);
        async move {
            approval::approve(
                config,
                client,
                Store::open(&config.state.path).unwrap(),
                run,
                &only,
                Utc::now(),
            )
            .await
            .unwrap()
        }
    };
    let writes = workspace.stats().writes;
    let approval = approve(Only::parse(Some("create_account")).unwrap()).await;
    assert!(approval.approved.is_empty(), "{approval:#?}");
    assert_eq!(
        approval.refused,
        [(
            1,
            format!(
                "waits for the delete of account {}, which stays held: approve that delete, \
                 and the next reconcile sends this",
                ann.id
            )
        )]
    );
    assert_eq!(workspace.stats().writes, writes);

    // Approving the run deletes Ann's account; Bob's create is not sent with it
    // (a delete that failed would leave it meeting 409) and stays held.
    let approval = approve(Only::All).await;
    assert_eq!(approval.approved, [0], "{approval:#?}");
    assert_eq!(approval.failed, 0, "{approval:#?}");
    assert_eq!(approval.applied.failed, 0, "{approval:#?}");
    let [(1, why)] = approval.refused.as_slice() else {
        panic!("{approval:#?}");
    };
    assert_eq!(
        why,
        &format!(
            "waits for the delete of account {}, approved now: once the workspace shows it \
             made, the next reconcile sends this",
            ann.id
        )
    );
    assert!(workspace.snapshot().accounts.is_empty());
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(run)
        .unwrap();
    let states: Vec<ActionState> = journal.iter().map(|e| e.state).collect();
    assert_eq!(states, [ActionState::Applied, ActionState::Held]);

    // The name is free now: the next reconcile creates Bob.
    let outcome = reconcile(&config).await;
    assert_eq!(outcome.report.summary.actions_failed, 0);
    let accounts: Vec<(String, Option<String>)> = workspace
        .snapshot()
        .accounts
        .into_iter()
        .map(|a| (a.user_name, a.external_id))
        .collect();
    assert_eq!(
        accounts,
        [("Ann@Example.com".to_owned(), Some("00u-bob".to_owned()))]
    );
    workspace.shutdown().await;
}
