//! `approve` against the demo's data on the sandbox: it leaves settle-window
//! waits to a later run, and re-checks a held action whose group or account was
//! made since the plan (by another run's approval, by this run, by a person)
//! against the workspace as it is now, rather than failing it for "not created
//! earlier in this run".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use seatwarden::approval::{self, Approval, ApprovalError, Only};
use seatwarden::config::Config;
use seatwarden::model::{
    AccountSpec, Action, ActionKind, Attribute, AttributeChange, DriftKind, HoldReason, Plan, Role,
};
use seatwarden::run::{self, Mode, RunOptions, RunOutcome};
use seatwarden::sandbox::Sandbox;
use seatwarden::store::{ActionState, RunId, RunKind, RunStatus, Store};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "demo-token";
const NOAH: &str = "00u1013";
const NOAH_NAME: &str = "noah.muller@example.com";

pub(crate) struct Env {
    pub(crate) sandbox: Sandbox,
    dir: tempfile::TempDir,
    config: Config,
}

/// The demo's directory, workspace and configuration, with `overrides` as
/// `SEATWARDEN__…` variables would give them.
pub(crate) async fn demo_env(overrides: &[(&str, &str)]) -> Env {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
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

    pub(crate) fn client(&self) -> ScimClient {
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

    pub(crate) async fn approve(&self, run: RunId, only: &Only) -> Result<Approval, ApprovalError> {
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

    /// Gives `person` the directory groups `groups` (in scope, active).
    fn regroup(&self, person: &str, groups: &[&str]) {
        let path = self.dir.path().join("directory.json");
        let mut directory: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let user = directory["users"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|u| u["id"] == person)
            .unwrap();
        user["groups"] = serde_json::json!(groups);
        std::fs::write(&path, directory.to_string()).unwrap();
    }

    /// An earlier run whose create of Noah's account met a 409 with no such
    /// account visible: the next reconcile holds that create for a person
    /// ([`HoldReason::OutOfSight`]), and the memberships that need the account
    /// with it.
    fn noah_out_of_sight(&self) {
        let mut store = self.store();
        let at = Utc::now() - Duration::hours(1);
        let run = store.begin_run(RunKind::Reconcile, at).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::CreateAccount {
                    identity_id: NOAH.into(),
                    spec: noah_spec(),
                },
                reason: DriftKind::MissingAccount,
                subject: NOAH_NAME.into(),
                identity_id: Some(NOAH.into()),
                detail: "in scope, no account".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at).unwrap();
        store.mark_in_flight(run, 0, at).unwrap();
        let error = format!(
            "409 userName taken; the workspace says {NOAH_NAME:?} exists but {}",
            seatwarden::apply::OUT_OF_SIGHT
        );
        store.mark_failed(run, 0, at, &error).unwrap();
        store
            .finish_run(run, at, RunStatus::Succeeded, None)
            .unwrap();
    }

    /// Noah in `groups`, his create held out of sight: the reconcile holds
    /// `memberships` of his group additions with it.
    pub(crate) async fn noah_held_with_memberships(
        &self,
        groups: &[&str],
        memberships: usize,
    ) -> RunOutcome {
        self.regroup(NOAH, groups);
        self.noah_out_of_sight();
        let outcome = self.reconcile_at(Utc::now()).await;
        let held = outcome
            .plan
            .held()
            .filter(|a| matches!(a.kind, ActionKind::AddMembers { .. }))
            .count();
        assert_eq!(held, memberships, "{:#?}", outcome.plan.actions);
        outcome
    }

    fn account_id(&self, user_name: &str) -> Option<String> {
        self.sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.user_name.eq_ignore_ascii_case(user_name))
            .map(|a| a.id)
    }

    pub(crate) fn members_of(&self, group: &str) -> Vec<String> {
        self.sandbox
            .snapshot()
            .groups
            .into_iter()
            .find(|g| g.display_name == group)
            .map(|g| g.members)
            .unwrap_or_default()
    }
}

pub(crate) fn noah_spec() -> AccountSpec {
    AccountSpec {
        user_name: NOAH_NAME.into(),
        external_id: NOAH.into(),
        given_name: Some("Noah".into()),
        family_name: Some("Muller".into()),
        display_name: None,
        email: Some(NOAH_NAME.into()),
        role: Some(Role::Commenter),
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

/// A held create approved (an account that was out of sight), and its
/// membership in a group the same run created before the approval: the group is
/// found in the workspace by its name, not failed as "not created earlier in
/// this run".
#[tokio::test]
async fn an_approved_membership_finds_the_group_its_run_created_earlier() {
    let env = demo_env(&[]).await;
    env.regroup(NOAH, &["Taskade Users", "Design", "Finance"]);
    env.noah_out_of_sight();
    let outcome = env.reconcile_at(Utc::now()).await;
    let finance_for_noah = outcome
        .plan
        .held()
        .find(|a| {
            matches!(&a.kind, ActionKind::AddMembers { group, .. } if group.display_name() == "Finance")
        })
        .unwrap_or_else(|| panic!("{:#?}", outcome.plan.actions));
    assert_eq!(finance_for_noah.held, Some(HoldReason::OutOfSight));
    assert!(
        !env.members_of("Finance").is_empty(),
        "the run created Finance and added the others"
    );

    let approval = env.approve(outcome.run_id, &Only::All).await.unwrap();
    assert_eq!(approval.applied.failed, 0, "{approval:?}");
    assert!(approval.refused.is_empty(), "{approval:?}");
    let noah = env.account_id(NOAH_NAME).unwrap();
    assert!(env.members_of("Finance").contains(&noah));
    assert!(env.members_of("Design").contains(&noah));
    let journal = env.store().journal(outcome.run_id).unwrap();
    assert!(
        journal.iter().all(|e| e.state != ActionState::Failed),
        "{journal:#?}"
    );
    env.sandbox.shutdown().await;
}

/// A held create whose account a person made since (found out of sight, made
/// visible): the create is obsolete, and its held memberships are re-checked
/// against that account: applied where still missing, obsolete where the person
/// added it already; never failed because this approval did not create it.
#[tokio::test]
async fn held_memberships_of_an_account_made_since_are_rechecked_not_failed() {
    let env = demo_env(&[]).await;
    let outcome = env
        .noah_held_with_memberships(&["Taskade Users", "Design", "Marketing"], 2)
        .await;

    // Someone makes the account, and adds it to Marketing themselves.
    let admin = env.client();
    admin.discover().await.unwrap();
    let noah = admin.create_account(&noah_spec()).await.unwrap();
    let marketing = admin
        .find_group_by_name("Marketing")
        .await
        .unwrap()
        .unwrap();
    admin
        .add_members(&marketing.id, std::slice::from_ref(&noah.id))
        .await
        .unwrap();

    let approval = env.approve(outcome.run_id, &Only::All).await.unwrap();
    assert_eq!(approval.applied.failed, 0, "{approval:?}");
    assert_eq!(approval.applied.applied, 1, "Design: {approval:?}");
    let obsolete: Vec<&str> = approval.obsolete.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(obsolete.len(), 2, "the create and Marketing: {obsolete:?}");
    assert!(env.members_of("Design").contains(&noah.id));
    assert_eq!(
        env.account_id(NOAH_NAME),
        Some(noah.id.clone()),
        "no second account"
    );
    env.sandbox.shutdown().await;
}

/// As above, with the account made by hand as `Noah.Muller@example.com ` (capitals,
/// a trailing space): the plan takes it for Noah's (userNames match trimmed and
/// case-folded), and so must the approval that points the held membership at it.
#[tokio::test]
async fn a_held_membership_finds_the_account_made_since_under_a_trimmed_user_name() {
    let env = demo_env(&[]).await;
    let outcome = env
        .noah_held_with_memberships(&["Taskade Users", "Design"], 1)
        .await;

    let admin = env.client();
    admin.discover().await.unwrap();
    let typed = AccountSpec {
        user_name: "Noah.Muller@example.com ".into(),
        ..noah_spec()
    };
    let noah = admin.create_account(&typed).await.unwrap();

    let approval = env.approve(outcome.run_id, &Only::All).await.unwrap();
    assert_eq!(approval.applied.failed, 0, "{approval:?}");
    assert!(approval.refused.is_empty(), "{approval:?}");
    assert_eq!(approval.applied.applied, 1, "Design: {approval:?}");
    assert!(env.members_of("Design").contains(&noah.id));
    let noahs = env
        .sandbox
        .snapshot()
        .accounts
        .into_iter()
        .filter(|a| a.user_name.trim().eq_ignore_ascii_case(NOAH_NAME))
        .count();
    assert_eq!(noahs, 1, "no second account");
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
