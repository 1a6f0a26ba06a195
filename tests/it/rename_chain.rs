//! A chain of renames: Bob becomes `robert@`, Cy takes Bob's old `bob@`, Dan takes
//! Cy's old `cy@`, and Eve, new, is given Dan's old `dan@`. The plan makes the
//! whole chain; the executor must send each link only once the rename it waits on
//! was accepted (sent side by side, Cy's could reach the workspace before Bob's
//! and meet 409), and must not send a link whose rename failed: it would only
//! meet 409.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use crate::fixtures::reconcile;
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::model::{ActionKind, WorkspaceSnapshot};
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::{ActionState, Store};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "rename-chain-token";

/// The directory file of `people`: (id, userName), all active.
fn write_directory(dir: &Path, people: &[(&str, &str)]) {
    let users: Vec<serde_json::Value> = people
        .iter()
        .map(|(id, user_name)| {
            serde_json::json!({
                "id": id, "userName": user_name, "email": user_name,
                "status": "ACTIVE", "groups": []
            })
        })
        .collect();
    std::fs::write(
        dir.join("directory.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
}

/// No retries (a failed write fails at once), at most `max_renames` renames (the
/// share unlimited), and `safety` added after `[safety]`.
fn config(dir: &Path, url: &str, max_renames: usize, safety: &str) -> Config {
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\nretries = 0\n\
             max_concurrency = 8\n\n\
             [safety]\nsettle = \"0s\"\nmax_renames = {max_renames}\n\
             max_rename_percent = 100.0\n{safety}\n"
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

/// A workspace with Bob, Cy and Dan, made by a first reconcile; then the
/// directory renames them along the chain and adds Eve.
async fn chain(dir: &Path, max_renames: usize, safety: &str) -> (Sandbox, Config) {
    let workspace = crate::fixtures::sandbox(TOKEN, WorkspaceSnapshot::default()).await;
    let config = config(dir, workspace.base_url().as_ref(), max_renames, safety);
    write_directory(
        dir,
        &[
            ("p-bob", "bob@example.com"),
            ("p-cy", "cy@example.com"),
            ("p-dan", "dan@example.com"),
        ],
    );
    crate::fixtures::assert_clean_reconcile(&reconcile(&config).await.report);
    write_directory(
        dir,
        &[
            ("p-bob", "robert@example.com"),
            ("p-cy", "bob@example.com"),
            ("p-dan", "cy@example.com"),
            ("p-eve", "dan@example.com"),
        ],
    );
    (workspace, config)
}

/// (userName, externalId) of every account, sorted.
fn accounts(workspace: &Sandbox) -> Vec<(String, String)> {
    let mut accounts: Vec<(String, String)> = workspace
        .snapshot()
        .accounts
        .into_iter()
        .map(|a| (a.user_name, a.external_id.unwrap_or_default()))
        .collect();
    accounts.sort();
    accounts
}

fn renamed() -> Vec<(String, String)> {
    [
        ("bob@example.com", "p-cy"),
        ("cy@example.com", "p-dan"),
        ("dan@example.com", "p-eve"),
        ("robert@example.com", "p-bob"),
    ]
    .map(|(user, id)| (user.to_owned(), id.to_owned()))
    .to_vec()
}

#[tokio::test]
async fn each_link_of_a_rename_chain_is_sent_after_the_one_it_waits_on() {
    // Several times: side by side, the order the sandbox saw them in was luck.
    for attempt in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (workspace, config) = chain(dir.path(), 100, "").await;
        let outcome = crate::fixtures::assert_converges(&config).await;
        let renames = outcome.plan.runnable().filter(|a| a.kind.renames()).count();
        assert_eq!(renames, 3, "attempt {attempt}: {:#?}", outcome.plan.actions);
        assert_eq!(accounts(&workspace), renamed(), "attempt {attempt}");
        workspace.shutdown().await;
    }
}

/// The journal's (subject, state, error) of `run`, by seq.
fn journal(config: &Config, run: seatwarden::store::RunId) -> Vec<(String, ActionState, String)> {
    Store::open(&config.state.path)
        .unwrap()
        .journal(run)
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.action.subject.clone(),
                e.state,
                e.last_error.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn no_link_is_sent_behind_a_rename_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    // Two failed writes of two open the breaker: the links not sent must not
    // count as failed writes.
    let (workspace, config) = chain(dir.path(), 100, "\n[safety.circuit]\nwindow = 2\n").await;
    workspace.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        seed: 1,
        ..Faults::default()
    });
    let outcome = reconcile(&config).await;
    // Only Bob's rename was sent.
    assert_eq!(workspace.stats().faults_5xx, 1, "{:#?}", outcome.report);
    assert_eq!(outcome.report.summary.actions_failed, 4);
    assert_eq!(outcome.report.safety.circuit, None);
    let journal = journal(&config, outcome.run_id);
    let bob = journal
        .iter()
        .find(|(subject, ..)| subject == "robert@example.com")
        .unwrap();
    assert_eq!(bob.1, ActionState::Failed);
    assert!(bob.2.contains("503"), "{bob:?}");
    let seq_of = |subject: &str| {
        outcome
            .plan
            .actions
            .iter()
            .find(|a| a.subject == subject)
            .unwrap()
            .seq
    };
    for (subject, freed, by) in [
        ("bob@example.com", "bob@example.com", "robert@example.com"),
        ("cy@example.com", "cy@example.com", "bob@example.com"),
        ("dan@example.com", "dan@example.com", "cy@example.com"),
    ] {
        let (_, state, error) = journal.iter().find(|(s, ..)| s == subject).unwrap();
        assert_eq!(*state, ActionState::Failed, "{subject}");
        assert_eq!(
            error,
            &format!(
                "not sent: userName {freed:?} is still taken: the rename of {by} (action {}) \
                 that gives it up failed earlier in this run; the next run plans both again",
                seq_of(by)
            ),
            "{subject}"
        );
    }
    let unchanged: Vec<(String, String)> = [
        ("bob@example.com", "p-bob"),
        ("cy@example.com", "p-cy"),
        ("dan@example.com", "p-dan"),
    ]
    .map(|(user, id)| (user.to_owned(), id.to_owned()))
    .to_vec();
    assert_eq!(accounts(&workspace), unchanged);

    // As promised: once the workspace takes writes, the next run makes the chain.
    workspace.set_faults(Faults::default());
    crate::fixtures::assert_converges(&config).await;
    assert_eq!(accounts(&workspace), renamed());
    workspace.shutdown().await;
}

/// `approve` sends what it releases through the same executor: a create held
/// behind a held rename is not sent when the rename fails.
#[tokio::test]
async fn approve_sends_no_create_behind_a_held_rename_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (workspace, config) = chain(dir.path(), 0, "").await;
    let outcome = reconcile(&config).await;
    let held: Vec<&str> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.held.is_some())
        .map(|a| a.kind.name())
        .collect();
    assert_eq!(
        held,
        [
            "update_attributes",
            "update_attributes",
            "update_attributes",
            "create_account"
        ],
        "{:#?}",
        outcome.plan.actions
    );
    assert!(
        outcome
            .plan
            .actions
            .iter()
            .all(|a| a.held.is_some() && !matches!(a.kind, ActionKind::Delete { .. })),
    );
    workspace.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        seed: 1,
        ..Faults::default()
    });
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve(
        &config,
        &client,
        Store::open(&config.state.path).unwrap(),
        outcome.run_id,
        &Only::All,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(approval.applied.failed, 4, "{approval:#?}");
    assert_eq!(workspace.stats().faults_5xx, 1);
    let eve = journal(&config, outcome.run_id)
        .into_iter()
        .find(|(subject, ..)| subject == "dan@example.com")
        .unwrap();
    assert!(
        eve.2
            .starts_with("not sent: userName \"dan@example.com\" is still taken"),
        "{eve:?}"
    );
    workspace.shutdown().await;
}

/// `approve --only create_account` while the renames that free its userName stay
/// held: the create is refused and stays held (sent, it would meet 409; judged
/// obsolete because "an account dan@ exists", Eve would never be asked about
/// again in this run). Approving the renames, then the run, makes the chain.
#[tokio::test]
async fn approving_the_create_alone_sends_nothing_behind_held_renames() {
    let dir = tempfile::tempdir().unwrap();
    let (workspace, config) = chain(dir.path(), 0, "").await;
    let outcome = reconcile(&config).await;
    assert_eq!(outcome.plan.held().count(), 4);
    let dan = workspace
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.user_name == "dan@example.com")
        .unwrap();
    let writes = workspace.stats().writes;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approve = |only: &'static str| {
        let (config, client) = (&config, &client);
        async move {
            approval::approve(
                config,
                client,
                Store::open(&config.state.path).unwrap(),
                outcome.run_id,
                &Only::parse((only != "all").then_some(only)).unwrap(),
                chrono::Utc::now(),
            )
            .await
            .unwrap()
        }
    };
    let approval = approve("create_account").await;
    assert_eq!(workspace.stats().writes, writes, "{approval:#?}");
    assert!(approval.approved.is_empty(), "{approval:#?}");
    assert!(approval.obsolete.is_empty(), "{approval:#?}");
    let create = outcome
        .plan
        .actions
        .iter()
        .find(|a| a.kind.name() == "create_account")
        .unwrap();
    assert_eq!(
        approval.refused,
        [(
            create.seq,
            format!(
                "wants the userName dan@example.com, which account {} gives up by a rename \
                 that stays held: approve that rename with it (`--only rename`, or the whole \
                 run)",
                dan.id
            )
        )]
    );
    let states = |run| {
        Store::open(&config.state.path)
            .unwrap()
            .journal(run)
            .unwrap()
            .into_iter()
            .map(|e| (e.action.kind.name(), e.state))
            .collect::<Vec<_>>()
    };
    assert!(
        states(outcome.run_id)
            .iter()
            .all(|(_, state)| *state == ActionState::Held)
    );

    let approval = approve("rename").await;
    assert_eq!(approval.approved.len(), 3, "{approval:#?}");
    assert_eq!(approval.applied.failed, 0, "{approval:#?}");
    let approval = approve("all").await;
    assert_eq!(approval.approved, [create.seq], "{approval:#?}");
    assert_eq!(approval.applied.failed, 0, "{approval:#?}");
    assert_eq!(accounts(&workspace), renamed());
    workspace.shutdown().await;
}

/// A leaver's account is deleted (`deprovision.action = "delete"`) and a new
/// hire is given its userName in the same run: IT renamed the leaver in the
/// directory to free the address. The plan counts the name as freed by the
/// delete; when the delete fails, the create is not sent (it would only meet
/// 409, and count as a second failed write), and the next run makes both.
#[tokio::test]
async fn no_create_is_sent_behind_a_delete_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = crate::fixtures::sandbox(TOKEN, WorkspaceSnapshot::default()).await;
    let config = config(
        dir.path(),
        workspace.base_url().as_ref(),
        100,
        "\n[deprovision]\naction = \"delete\"\ndelete_after = \"0s\"\n",
    );
    write_directory(dir.path(), &[("p-old", "bob@example.com")]);
    crate::fixtures::assert_clean_reconcile(&reconcile(&config).await.report);
    let people = serde_json::json!({ "users": [
        {"id": "p-old", "userName": "bob.old@example.com", "email": "bob.old@example.com",
         "status": "DEPROVISIONED", "groups": []},
        {"id": "p-new", "userName": "bob@example.com", "email": "bob@example.com",
         "status": "ACTIVE", "groups": []},
    ]});
    std::fs::write(dir.path().join("directory.json"), people.to_string()).unwrap();
    workspace.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        seed: 1,
        ..Faults::default()
    });

    let outcome = reconcile(&config).await;

    let delete = outcome
        .plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::Delete { .. }))
        .unwrap();
    assert!(
        matches!(&delete.kind, ActionKind::Delete { frees_user_name: Some(name), .. } if name == "bob@example.com"),
        "{:#?}",
        outcome.plan
    );
    // Only the delete was sent.
    assert_eq!(workspace.stats().faults_5xx, 1, "{:#?}", outcome.report);
    let journal = journal(&config, outcome.run_id);
    let (_, state, error) = journal
        .iter()
        .find(|(subject, ..)| subject == "bob@example.com")
        .unwrap();
    assert_eq!(*state, ActionState::Failed);
    let account = &workspace.snapshot().accounts[0];
    assert_eq!(
        error,
        &format!(
            "not sent: userName \"bob@example.com\" is still taken: the delete of account {} \
             ({}) (action {}) that gives it up failed earlier in this run; the next run plans \
             both again",
            account.id, delete.subject, delete.seq
        )
    );
    assert_eq!(
        accounts(&workspace),
        [("bob@example.com".to_owned(), "p-old".to_owned())]
    );

    workspace.set_faults(Faults::default());
    crate::fixtures::assert_converges(&config).await;
    assert_eq!(
        accounts(&workspace),
        [("bob@example.com".to_owned(), "p-new".to_owned())]
    );
    workspace.shutdown().await;
}
