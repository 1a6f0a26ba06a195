//! Session 64, the executor and the plan: the `link` a create that found its
//! userName taken tells people to run is spelled with `report.admin_command`,
//! in the run and in the recovery after a run cut off; and a deactivated
//! orphan whose own `groups` names a managed group that does not hold it (a
//! provider leaving `groups` stale) is not planned out of it on every run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use seatwarden::config::Config;
use seatwarden::model::{
    Account, AccountSpec, Action, ActionKind, DriftKind, Plan, WorkspaceGroup, WorkspaceSnapshot,
};
use seatwarden::run::{self, Mode};
use seatwarden::store::{ActionState, RunKind, Store};

use crate::fixtures;

const ADMIN: &str = "sudo -u seatwarden seatwarden --config /etc/seatwarden/seatwarden.toml";

fn account(id: &str, user_name: &str, external_id: Option<&str>, active: bool) -> Account {
    Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: external_id.map(str::to_owned),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active,
        roles: Vec::new(),
    }
}

/// Ada's configuration ([`fixtures::ada_config`]) run as [`ADMIN`]: the
/// environment for the binary, and the configuration.
fn ada_as_admin(url: &str, dir: &Path) -> (Vec<(String, String)>, Config) {
    fixtures::ada_config(url, dir, "active");
    let env = vec![(
        "SEATWARDEN__REPORT__ADMIN_COMMAND".to_owned(),
        ADMIN.to_owned(),
    )];
    let config = Config::load_with_env(
        &dir.join("seatwarden.toml"),
        Some(env.iter().cloned().collect()),
    )
    .unwrap();
    assert_eq!(config.admin_command(), ADMIN);
    (env, config)
}

/// Ada's create meets a 409: while it waits in the workspace, someone (push
/// SCIM, an admin) gives account ws-9, whose externalId names someone else,
/// her userName. The create fails, and the `link` it tells the operator to
/// run, printed by `reconcile` and kept in the journal, is spelled with
/// `report.admin_command`: it said `seatwarden link`, which run as another
/// user or without `--config` fails, or acts on another database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_finds_its_user_name_taken_prints_the_configured_link_command() {
    let seed = WorkspaceSnapshot {
        accounts: vec![account("ws-9", "someone@example.com", Some("00u9"), true)],
        groups: vec![],
    };
    let sandbox = fixtures::sandbox("t0ken", seed).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, config) = ada_as_admin(sandbox.base_url().as_str(), dir.path());
    // Ada's create is the run's one write: it waits until `release_writes`.
    sandbox.hold_writes_from(1);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .arg("reconcile")
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        fixtures::poll_until(Duration::from_secs(60), || sandbox.writes_held() > 0).await,
        "the create never came"
    );
    // Renamed by "another client" right after this read of it.
    sandbox.change_after_reads(
        "Users",
        "ws-9",
        vec![json!([{"op": "replace", "path": "userName", "value": "ada@example.com"}])],
    );
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    client.get_account("ws-9").await.unwrap();
    sandbox.release_writes();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let link = format!("`{ADMIN} link 00u1 ws-9`");
    assert!(
        stdout.contains("whose externalId \"00u9\" names someone else") && stdout.contains(&link),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("`seatwarden link"), "{stdout}");

    let store = Store::open(&config.state.path).unwrap();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap().id;
    let journal = store.journal(run).unwrap();
    assert_eq!(journal.len(), 1, "{journal:#?}");
    assert_eq!(journal[0].state, ActionState::Failed);
    let error = journal[0].last_error.as_deref().unwrap();
    assert!(error.contains(&link), "{error}");
}

/// A run cut off with Ada's create in flight; before the next one, someone
/// gave account ws-9, whose externalId names someone else, her userName. The
/// recovery does not link it to her, and the journal row it fails says which
/// `link` settles it, spelled with `report.admin_command`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_create_whose_user_name_someone_else_holds_names_the_configured_link_command() {
    let seed = WorkspaceSnapshot {
        accounts: vec![account("ws-9", "ada@example.com", Some("00u9"), true)],
        groups: vec![],
    };
    let sandbox = fixtures::sandbox("t0ken", seed).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = ada_as_admin(sandbox.base_url().as_str(), dir.path());
    let cut_off = {
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::CreateAccount {
                    identity_id: "00u1".into(),
                    spec: AccountSpec {
                        user_name: "ada@example.com".into(),
                        external_id: "00u1".into(),
                        given_name: Some("Ada".into()),
                        family_name: Some("Lovelace".into()),
                        display_name: Some("Ada Lovelace".into()),
                        email: Some("ada@example.com".into()),
                        role: None,
                    },
                },
                reason: DriftKind::MissingAccount,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: "identity is in scope but has no workspace account".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, Utc::now()).unwrap();
        store
            .batch(|s| s.mark_all_in_flight(run, &[0], Utc::now()))
            .unwrap();
        run
    };

    fixtures::reconcile(&config).await;
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(cut_off)
        .unwrap();
    assert_eq!(journal[0].state, ActionState::Failed, "{journal:#?}");
    let error = journal[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("whose externalId \"00u9\" names someone else")
            && error.contains(&format!("`{ADMIN} link 00u1 ws-9`")),
        "{error}"
    );
    assert!(!error.contains("`seatwarden link"), "{error}");
}

/// A directory of Ada (00u1) in Engineering, mapped to the workspace group
/// Engineering, with `unmatched_accounts`; no settle window.
fn engineering_config(url: &str, dir: &Path, unmatched: &str) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        json!({"users": [{
            "id": "00u1", "userName": "ada@example.com", "email": "ada@example.com",
            "givenName": "Ada", "familyName": "Lovelace", "displayName": "Ada Lovelace",
            "status": "active", "groups": ["Engineering"]
        }]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t0ken\"\nrole_attribute = \"none\"\n\n\
             [policy]\nunmatched_accounts = \"{unmatched}\"\n\n\
             [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\n\
             role = \"Viewer\"\n\n[safety]\nsettle = \"0s\"\n"
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

/// Ghost's account (ws-2) is nobody's and deactivated; Engineering does not
/// hold it, but the provider left its own `groups` naming Engineering, and the
/// workspace read counts a deactivated account in the managed group its
/// `groups` names (a provider may list only active members). Under
/// `unmatched_accounts = "deactivate"` each run planned Ghost out of
/// Engineering, the workspace answered success and changed nothing, and the
/// next run planned it again, for ever, with no word to anyone; under
/// `"report"` each run reported a membership it does not have. A deactivated
/// orphan's memberships are now left alone, as a leaver's are: the first run
/// plans nothing for Ghost, and the second plan is empty. Stray (ws-3),
/// deactivated and really in Engineering, is left there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_orphans_stale_groups_are_not_a_removal_on_every_run() {
    for unmatched in ["deactivate", "report"] {
        let seed = WorkspaceSnapshot {
            accounts: vec![
                account("ws-1", "ada@example.com", Some("00u1"), true),
                account("ws-2", "ghost@example.com", None, false),
                account("ws-3", "stray@example.com", None, false),
            ],
            groups: vec![WorkspaceGroup {
                id: "g-eng".into(),
                display_name: "Engineering".into(),
                members: vec!["ws-1".into(), "ws-3".into()],
            }],
        };
        let sandbox = fixtures::sandbox("t0ken", seed).await;
        sandbox.name_stale_groups("ws-2", &["g-eng"]);
        let dir = tempfile::tempdir().unwrap();
        let config = engineering_config(sandbox.base_url().as_str(), dir.path(), unmatched);

        let first = fixtures::reconcile(&config).await;
        let names_them = |plan: &Plan| {
            plan.actions.iter().any(|a| match &a.kind {
                ActionKind::RemoveMembers { members, .. } => {
                    members.iter().any(|m| m == "ws-2" || m == "ws-3")
                }
                _ => false,
            })
        };
        assert!(
            !names_them(&first.plan),
            "{unmatched}: {:#?}",
            first.plan.actions
        );
        let membership_drift: Vec<&str> = first
            .plan
            .drift
            .iter()
            .filter(|d| d.kind == DriftKind::GroupDrift)
            .map(|d| d.detail.as_str())
            .collect();
        assert!(
            membership_drift.is_empty(),
            "{unmatched}: {membership_drift:?}"
        );
        assert_eq!(first.report.summary.actions_failed, 0, "{unmatched}");

        let second = run::execute(
            &config,
            Store::open(&config.state.path).unwrap(),
            Mode::Plan,
        )
        .await
        .unwrap();
        assert!(
            second.plan.is_empty(),
            "{unmatched}: {:#?}",
            second.plan.actions
        );
        let engineering = sandbox
            .snapshot()
            .groups
            .into_iter()
            .find(|g| g.id == "g-eng")
            .unwrap();
        assert_eq!(engineering.members, ["ws-1", "ws-3"], "{unmatched}");
    }
}
