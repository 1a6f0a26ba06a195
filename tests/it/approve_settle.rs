//! `approve` against the demo's data on the sandbox: it leaves settle-window
//! waits to a later run, and finds a held update the workspace already shows
//! obsolete.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use seatwarden::approval::{self, Approval, ApprovalError, Only};
use seatwarden::config::Config;
use seatwarden::model::{Action, ActionKind, Attribute, AttributeChange, HoldReason};
use seatwarden::run::{self, Mode, RunOptions, RunOutcome};
use seatwarden::sandbox::{Sandbox, SandboxOptions};
use seatwarden::store::{ActionState, RunId, Store};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "demo-token";
const NOAH_NAME: &str = "noah.muller@example.com";

struct Env {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    config: Config,
}

/// The demo's directory, workspace and configuration, with `overrides` as
/// `SEATWARDEN__…` variables would give them.
async fn demo_env(overrides: &[(&str, &str)]) -> Env {
    let seed = seatwarden::sandbox::load_seed(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/workspace.json"),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = seatwarden::demo::prepare(dir.path(), sandbox.base_url().as_str()).unwrap();
    let env: HashMap<String, String> = overrides
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = Config::load_with_env(&path, Some(env)).unwrap();
    Env {
        sandbox,
        dir,
        config,
    }
}

impl Env {
    fn store(&self) -> Store {
        Store::open(&self.config.state.path).unwrap()
    }

    fn client(&self) -> ScimClient {
        ScimClient::new(self.config.scim_settings().unwrap()).unwrap()
    }

    async fn reconcile_at(&self, now: DateTime<Utc>) -> RunOutcome {
        run::execute_with_options(
            &self.config,
            &run::directory_from_config(&self.config),
            &self.client(),
            self.store(),
            Mode::Reconcile,
            RunOptions {
                now: Some(now),
                ..RunOptions::default()
            },
        )
        .await
        .unwrap()
    }

    async fn approve(&self, run: RunId, only: &Only) -> Result<Approval, ApprovalError> {
        approval::approve(
            &self.config,
            &self.client(),
            self.store(),
            run,
            only,
            Utc::now(),
        )
        .await
    }

    fn account_id(&self, user_name: &str) -> Option<String> {
        self.sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.user_name.eq_ignore_ascii_case(user_name))
            .map(|a| a.id)
    }
}

fn waits(action: &Action) -> bool {
    action.held.as_ref().is_some_and(HoldReason::is_waiting)
}

/// The tester's two runs with the settle window on (10 minutes) and every
/// deprovision held for a person: `approve 2` applies the deprovisions and
/// leaves the creates and updates that only wait for the settle window alone
/// (even when `--only` names their kind); `approve 1` finds the deprovisions
/// done (obsolete) and fails nothing. The next run once the window has passed
/// applies the waits.
#[tokio::test]
async fn approve_leaves_settle_window_waits_to_a_later_run() {
    let env = demo_env(&[
        ("SEATWARDEN__SAFETY__SETTLE", "10m"),
        ("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0"),
    ])
    .await;
    let start = Utc::now();
    let first = env.reconcile_at(start).await;
    let second = env.reconcile_at(start + Duration::minutes(1)).await;
    let waiting: Vec<u32> = second
        .plan
        .actions
        .iter()
        .filter(|a| waits(a))
        .map(|a| a.seq)
        .collect();
    let for_a_person: Vec<u32> = second
        .plan
        .held()
        .filter(|a| !waits(a))
        .map(|a| a.seq)
        .collect();
    assert!(!waiting.is_empty(), "{:#?}", second.plan.actions);
    assert!(
        second
            .plan
            .actions
            .iter()
            .any(|a| waits(a) && matches!(a.kind, ActionKind::CreateAccount { .. })),
        "Noah's create waits: {:#?}",
        second.plan.actions
    );
    assert!(!for_a_person.is_empty(), "{:#?}", second.plan.actions);

    // Naming the waits' kind picks none of them.
    let only_creates = env
        .approve(second.run_id, &Only::parse(Some("create_account")).unwrap())
        .await;
    let Err(ApprovalError::NothingHeld { waiting: left, .. }) = only_creates else {
        panic!("a settle-window wait is nobody's to approve: {only_creates:?}");
    };
    assert_eq!(left, 1, "Noah's create waits for the settle window");

    let approval = env.approve(second.run_id, &Only::All).await.unwrap();
    assert_eq!(approval.approved, for_a_person, "{approval:?}");
    assert_eq!(approval.waiting, waiting.len(), "{approval:?}");
    assert_eq!(approval.applied.failed, 0, "{approval:?}");
    assert_eq!(env.account_id(NOAH_NAME), None, "nothing created yet");
    let journal = env.store().journal(second.run_id).unwrap();
    for entry in journal.iter().filter(|e| waiting.contains(&e.action.seq)) {
        assert_eq!(entry.state, ActionState::Held, "{entry:?}");
    }
    assert!(
        env.store()
            .decisions(second.run_id)
            .unwrap()
            .keys()
            .all(|seq| !waiting.contains(seq)),
        "nobody decided on the waits"
    );

    // The older run: its deprovisions are done by now, its waits left alone.
    let late = env.approve(first.run_id, &Only::All).await.unwrap();
    assert!(late.approved.is_empty(), "{late:?}");
    assert!(late.refused.is_empty(), "{late:?}");
    assert_eq!(late.obsolete.len(), for_a_person.len(), "{late:?}");
    assert_eq!(late.applied.failed, 0, "{late:?}");

    // Once the window has passed, a run applies what waited.
    let settled = env.reconcile_at(start + Duration::minutes(12)).await;
    assert_eq!(settled.report.summary.actions_failed, 0);
    assert_eq!(settled.report.summary.actions_held, 0);
    assert!(env.account_id(NOAH_NAME).is_some());
    env.sandbox.shutdown().await;
}

/// Two runs hold the same renames (over `max_renames`); `approve` of the newer
/// applies them, and `approve` of the older finds each already as planned in
/// the workspace read now: obsolete, not sent again.
#[tokio::test]
async fn a_held_update_the_workspace_already_shows_is_obsolete() {
    let env = demo_env(&[("SEATWARDEN__SAFETY__MAX_RENAMES", "0")]).await;
    let path = env.dir.path().join("directory.json");
    let directory = std::fs::read_to_string(&path)
        .unwrap()
        .replace("julia.hart@example.com", "julia.smith@example.com");
    std::fs::write(&path, directory).unwrap();
    let start = Utc::now();
    let first = env.reconcile_at(start).await;
    let second = env.reconcile_at(start + Duration::minutes(1)).await;
    let rename = |outcome: &RunOutcome| -> Action {
        outcome
            .plan
            .held()
            .find(|a| a.kind.renames())
            .cloned()
            .unwrap_or_else(|| panic!("{:#?}", outcome.plan.actions))
    };
    let ActionKind::UpdateAttributes { changes, .. } = rename(&first).kind else {
        panic!("a rename is an update");
    };
    assert!(changes.contains(&AttributeChange {
        attribute: Attribute::UserName,
        from: Some("julia.hart@example.com".into()),
        to: Some("julia.smith@example.com".into()),
    }));

    let approval = env.approve(second.run_id, &Only::All).await.unwrap();
    assert_eq!(approval.approved, vec![rename(&second).seq], "{approval:?}");
    assert_eq!(approval.applied.applied, 1, "{approval:?}");
    assert!(env.account_id("julia.smith@example.com").is_some());

    let late = env.approve(first.run_id, &Only::All).await.unwrap();
    assert!(late.approved.is_empty(), "sent again: {late:?}");
    assert_eq!(
        late.obsolete
            .iter()
            .map(|(seq, _)| *seq)
            .collect::<Vec<_>>(),
        vec![rename(&first).seq],
        "{late:?}"
    );
    env.sandbox.shutdown().await;
}
