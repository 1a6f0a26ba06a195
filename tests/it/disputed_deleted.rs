//! A person whose match is disputed and who is then deleted from the directory:
//! the store remembers the accounts that may be theirs, so the next reconcile
//! still sees a leaver (reason deleted) with access, holds an episode for them and
//! touches neither account until `seatwarden link` says which is theirs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use seatwarden::config::Config;
use seatwarden::model::{DisputedLeaver, LinkMethod};
use seatwarden::run::{self, Mode, RunOutcome};
use seatwarden::sandbox::Sandbox;
use seatwarden::sla::LossReason;
use seatwarden::store::Store;

const TOKEN: &str = "disputed-deleted-token";
/// The demo's Emma Novak: ws-0005 matches her by userName, ws-0901 by email.
const EMMA: &str = "00u1004";
const BY_USER_NAME: &str = "ws-0005";
const BY_EMAIL: &str = "ws-0901";

async fn demo_sandbox() -> Sandbox {
    crate::fixtures::demo_sandbox(TOKEN, Default::default()).await
}

/// The demo's configuration and directory in `dir`, pointed at `sandbox`.
fn demo_env(dir: &Path, sandbox: &Sandbox) -> Vec<(String, String)> {
    crate::fixtures::copy_demo_files(dir);
    vec![
        (
            "SEATWARDEN__WORKSPACE__URL".into(),
            sandbox.base_url().to_string(),
        ),
        ("SEATWARDEN__WORKSPACE__TOKEN".into(), TOKEN.into()),
        ("SEATWARDEN__STATE__PATH".into(), "state.db".into()),
    ]
}

async fn reconcile(config: &Config) -> RunOutcome {
    run::execute(
        config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap()
}

fn remove_from_directory(dir: &Path, identity_id: &str) {
    let path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let users = full["users"].as_array_mut().unwrap();
    let before = users.len();
    users.retain(|u| u["id"] != identity_id);
    assert_eq!(users.len(), before - 1);
    std::fs::write(&path, full.to_string()).unwrap();
}

/// The demo in a new directory, reconciled once: the sandbox, the directory, the
/// environment overrides the configuration was loaded with, and the configuration.
async fn reconciled_demo() -> (Sandbox, tempfile::TempDir, Vec<(String, String)>, Config) {
    let sandbox = demo_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let env = demo_env(dir.path(), &sandbox);
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(env.iter().cloned().collect()),
    )
    .unwrap();
    reconcile(&config).await;
    (sandbox, dir, env, config)
}

fn active(sandbox: &Sandbox, account_id: &str) -> bool {
    sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.id == account_id)
        .unwrap()
        .active
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_person_deleted_from_the_directory_is_held_until_linked() {
    let (sandbox, dir, env, config) = reconciled_demo().await;
    let remembered = Store::open(&config.state.path)
        .unwrap()
        .disputed_candidates()
        .unwrap();
    let emmas: Vec<(&str, LinkMethod)> = remembered
        .iter()
        .filter(|c| c.identity_id == EMMA)
        .map(|c| (c.account_id.as_str(), c.method))
        .collect();
    assert_eq!(
        emmas,
        [
            (BY_USER_NAME, LinkMethod::UserName),
            (BY_EMAIL, LinkMethod::Email)
        ]
    );

    // Deleted from the directory: still a leaver who may have access.
    remove_from_directory(dir.path(), EMMA);
    let outcome = reconcile(&config).await;
    assert_eq!(
        outcome.plan.disputed_leavers,
        [DisputedLeaver {
            identity_id: EMMA.into(),
            user_name: "emma.novak@example.com".into(),
            reason: LossReason::Deleted,
            accounts: vec![BY_USER_NAME.into(), BY_EMAIL.into()],
            active: vec![BY_USER_NAME.into(), BY_EMAIL.into()],
        }]
    );
    let touches_emmas = |outcome: &RunOutcome| {
        outcome.plan.actions.iter().any(|a| {
            a.kind
                .account_id()
                .is_some_and(|id| id == BY_USER_NAME || id == BY_EMAIL)
        })
    };
    assert!(!touches_emmas(&outcome), "{:#?}", outcome.plan.actions);
    assert!(active(&sandbox, BY_USER_NAME) && active(&sandbox, BY_EMAIL));
    let disputed: Vec<_> = outcome
        .plan
        .drift
        .iter()
        .filter(|d| d.identity_id.as_deref() == Some(EMMA))
        .collect();
    assert_eq!(disputed.len(), 1, "{disputed:#?}");
    assert!(
        disputed[0].detail.contains(
            "LOST ACCESS (identity was deleted from the directory): no account of theirs is \
             deactivated until `seatwarden link 00u1004 ACCOUNT`"
        ),
        "{}",
        disputed[0].detail
    );
    let (_, headline) = seatwarden::report::headline(&outcome.report, "seatwarden");
    assert_eq!(
        headline,
        "1 leaver still has access (disputed match) — needs `seatwarden link`"
    );

    let store = Store::open(&config.state.path).unwrap();
    let episode = store
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == EMMA)
        .expect("an episode opens");
    assert_eq!(episode.account_id, None);
    assert_eq!(episode.reason, LossReason::Deleted);
    assert_eq!(episode.detected_at, outcome.report.started_at);
    assert_eq!(
        episode.due_at - episode.detected_at,
        seatwarden::sweep::configured_sla(&config)
    );
    let held = episode.held.clone().unwrap_or_default();
    assert!(
        held.starts_with("disputed match")
            && held.contains(BY_USER_NAME)
            && held.contains(BY_EMAIL),
        "{held}"
    );

    // A second run keeps it so: the memory is carried while the accounts are
    // active, and the episode stays the same one.
    let again = reconcile(&config).await;
    assert_eq!(again.plan.disputed_leavers, outcome.plan.disputed_leavers);
    assert!(!touches_emmas(&again), "{:#?}", again.plan.actions);
    let still = store
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == EMMA)
        .expect("still open");
    assert_eq!(still.id, episode.id);

    // `explain` finds her by her id, her last userName or either account, and
    // says what holds her deprovisioning and how to settle it.
    for query in [EMMA, "emma.novak@example.com", BY_EMAIL] {
        let text =
            seatwarden::explain::explain(&config, &store, query, chrono::Utc::now()).unwrap();
        for line in [
            "  not in the directory snapshot: deleted since a run saw emma.novak@example.com \
             (id 00u1004) with a disputed match",
            "  undecided: whose account this is is disputed (see Disputed match)",
            "  DISPUTED: 2 workspace account(s) may have been this person's; seatwarden writes \
             to none of them until a person chooses:",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{query}: no {line:?} in:\n{text}"
            );
        }
        assert!(
            text.contains(&format!("    seatwarden link {EMMA} {BY_USER_NAME}\n"))
                && text.contains(&format!("    seatwarden link {EMMA} {BY_EMAIL}\n")),
            "{query}: {text}"
        );
        assert!(
            text.contains("LOST ACCESS (deleted from the directory)"),
            "{query}: {text}"
        );
        assert!(
            !text.contains("never seen losing access"),
            "{query}: {text}"
        );
        assert!(
            !text.contains("no directory identity justifies"),
            "{query}: {text}"
        );
    }
    // The access review says whose they may be, not "orphaned".
    let export = seatwarden::export::access(&store, &config).unwrap();
    for account in [BY_USER_NAME, BY_EMAIL] {
        let row = export
            .accounts
            .iter()
            .find(|r| r.account_id == account)
            .unwrap();
        assert!(
            row.justification
                .starts_with(&format!("disputed: may be the account of {EMMA};")),
            "{row:?}"
        );
    }

    // A human says which account was hers; the next reconcile deactivates it.
    let linked = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args([
            "--config",
            dir.path().join("seatwarden.toml").to_str().unwrap(),
        ])
        .args(["link", EMMA, BY_USER_NAME])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    let settled = reconcile(&config).await;
    assert!(settled.plan.disputed_leavers.is_empty());
    assert!(!active(&sandbox, BY_USER_NAME));
    // The other account matched her by email alone: a duplicate of hers, gone
    // with it, as a present leaver's duplicates are.
    assert!(!active(&sandbox, BY_EMAIL));
    let history = store.deprovision_history(EMMA, 5).unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    let done = &history[0];
    assert_eq!(done.id, episode.id);
    assert!(
        done.verified_at.is_some() && !done.found_without_access(),
        "{done:?}"
    );
    assert_eq!(done.account_id.as_deref(), Some(BY_USER_NAME));

    // Nothing of hers has access, yet the duplicate is still remembered as
    // hers: forgotten, it would be an orphan (reported, taken out of its
    // groups, never deleted after a retention period).
    let after = reconcile(&config).await;
    assert!(after.plan.actions.is_empty(), "{:#?}", after.plan.actions);
    assert!(
        !after
            .plan
            .drift
            .iter()
            .any(|d| d.account_id.as_deref() == Some(BY_EMAIL)),
        "{:#?}",
        after.plan.drift
    );
    let remembered: Vec<String> = store
        .disputed_candidates()
        .unwrap()
        .into_iter()
        .filter(|c| c.identity_id == EMMA)
        .map(|c| c.account_id)
        .collect();
    assert_eq!(remembered, [BY_EMAIL]);
    sandbox.shutdown().await;
}

/// `link` still refuses an identity that neither the directory nor a remembered
/// dispute knows (a typo would deprovision the account as a deleted person's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_refuses_an_identity_nobody_remembers() {
    let (sandbox, dir, env, _) = reconciled_demo().await;
    let linked = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args([
            "--config",
            dir.path().join("seatwarden.toml").to_str().unwrap(),
        ])
        .args(["link", "00u9999", BY_EMAIL])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!linked.status.success());
    assert!(
        String::from_utf8_lossy(&linked.stderr).contains("is not in the newest directory"),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    sandbox.shutdown().await;
}
