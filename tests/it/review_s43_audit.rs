//! Session 43's review of what an auditor and a careful operator rely on: a
//! workspace whose URL changed, previewed before the move binds anything, and
//! `explain` / `export` after real runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::sandbox::Faults;
use seatwarden::store::Store;

const TOKEN: &str = "review-s43-audit";

/// `seatwarden ARGS` in `dir` with `env`: exit code, stdout, stderr.
pub(crate) fn seatwarden_out(
    dir: &Path,
    env: &[(String, String)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `env` with `SEATWARDEN__WORKSPACE__URL` set to `url`.
fn pointed_at(env: &[(String, String)], url: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| match k.as_str() {
            "SEATWARDEN__WORKSPACE__URL" => (k.clone(), url.to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

/// What a state database is, as far as a preview must leave it: the URL it is
/// bound to, its runs, the run `explain` and `export` read, and its audit trail.
fn state_of(path: &Path) -> (Option<String>, i64, Option<i64>, usize) {
    let store = Store::open(path).unwrap();
    let runs: i64 = rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM runs", [], |row| row.get(0))
        .unwrap();
    (
        store.state_value(seatwarden::run::WORKSPACE_KEY).unwrap(),
        runs,
        store.latest_snapshot_run().unwrap(),
        store.audit().unwrap().len(),
    )
}

fn summary(stdout: &str) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_str(stdout).unwrap();
    report["summary"].clone()
}

/// The workspace's provider moved it (the same tenant, the same account ids, at a
/// new URL). `plan --workspace-moved` plans against the new URL with the stored
/// links, the same plan production gets, and records nothing: the database stays
/// bound to the old URL, gets no run, snapshot or audit entry, and its copy is
/// removed. A mistyped URL (another tenant's: an empty workspace here) previewed
/// by `reconcile --dry-run --workspace-moved` shows everyone's account missing, and binds
/// nothing either. Only `reconcile --workspace-moved` records the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_workspace_is_previewed_before_the_move_is_recorded() {
    let production = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let stranger =
        crate::fixtures::sandbox(TOKEN, seatwarden::model::WorkspaceSnapshot::default()).await;
    production.record_requests();
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(
        dir.path(),
        &production,
        TOKEN,
        &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0")],
    );
    let run = |env: Vec<(String, String)>, args: &'static [&'static str]| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || seatwarden_out(&dir, &env, args))
    };
    let (code, _, stderr) = run(env.clone(), &["reconcile"]).await.unwrap();
    assert_eq!(code, Some(3), "{stderr}");
    let (code, stdout, stderr) = run(env.clone(), &["plan", "--format", "json"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let at_production = summary(&stdout);
    // The same tenant at a new URL: the same accounts, ids and all.
    let moved = crate::fixtures::sandbox(TOKEN, production.snapshot()).await;
    moved.record_requests();
    let production_seen = production.requests_seen().len();
    let url = |sandbox: &seatwarden::sandbox::Sandbox| {
        sandbox.base_url().as_str().trim_end_matches('/').to_owned()
    };
    let production_url = url(&production);
    let state = dir.path().join("state.db");
    let before = state_of(&state);
    assert_eq!(before.0.as_deref(), Some(production_url.as_str()));

    let (code, stdout, stderr) = run(
        pointed_at(&env, &url(&moved)),
        &["plan", "--workspace-moved", "--format", "json"],
    )
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("stays bound to {production_url}"))
            && stderr.contains("reconcile --workspace-moved"),
        "{stderr}"
    );
    assert!(!moved.requests_seen().is_empty());
    // Matched by the stored links: the plan production itself gets.
    let at_moved = summary(&stdout);
    assert_eq!(at_moved["drift_by_kind"], at_production["drift_by_kind"]);
    assert_eq!(
        at_moved["actions_planned"],
        at_production["actions_planned"]
    );
    assert_eq!(at_moved["actions_held"], at_production["actions_held"]);
    assert_eq!(state_of(&state), before);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("preview"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Still bound: a plain plan against the new URL is refused, and points at the preview.
    let (code, _, stderr) = run(pointed_at(&env, &url(&moved)), &["plan"])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("plan --workspace-moved"), "{stderr}");

    // A typo'd URL reaching another tenant: every person unmatched, nothing bound.
    let (code, stdout, stderr) = run(
        pointed_at(&env, &url(&stranger)),
        &[
            "reconcile",
            "--dry-run",
            "--workspace-moved",
            "--format",
            "json",
        ],
    )
    .await
    .unwrap();
    assert!(code == Some(0) || code == Some(3), "{code:?}: {stderr}");
    let at_stranger = summary(&stdout);
    assert_eq!(at_production["drift_by_kind"]["missing_account"], 0);
    assert!(
        at_stranger["drift_by_kind"]["missing_account"].as_u64() > Some(40),
        "{at_stranger}"
    );
    assert_eq!(state_of(&state), before);
    assert_eq!(production.requests_seen().len(), production_seen);

    let (code, _, stderr) = run(
        pointed_at(&env, &url(&moved)),
        &["reconcile", "--workspace-moved"],
    )
    .await
    .unwrap();
    assert_eq!(code, Some(3), "{stderr}");
    let after = state_of(&state);
    assert_eq!(after.0, Some(url(&moved)));
    assert_eq!(after.3, before.3 + 1);
}

/// Sets `status` on the person `user_name` in the demo directory file in `dir`.
fn set_status(dir: &Path, user_name: &str, status: &str) {
    let path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let user = full["users"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|u| u["userName"] == user_name)
        .unwrap();
    user["status"] = status.into();
    std::fs::write(&path, full.to_string()).unwrap();
}

/// A leaver the daemon's sweep saw leave after the newest snapshot was read: the
/// snapshot still has them active. The access review must not justify their
/// access by their mappings while the deactivation is due, nor, once the sweep
/// deactivated the account, say the identity is active in the directory (which
/// would read as seatwarden cutting off someone who is still there); `explain`,
/// whose scope and next run come from that snapshot, says what the ledger saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_review_tells_a_leaver_the_sweep_saw_after_the_snapshot() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    // The same, but holding every deprovision.
    let (_, holding) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        TOKEN,
        &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0")],
    );
    crate::fixtures::reconcile(&config).await;
    let leaver = "adam.chen@example.com";
    set_status(dir.path(), leaver, "deprovisioned");
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let sweep = async |config: &seatwarden::config::Config| {
        seatwarden::sweep::sweep(
            config,
            &directory,
            &client,
            &store,
            chrono::Utc::now(),
            chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    };
    sweep(&holding).await;
    let row = |store: &Store, leaver: &str| {
        seatwarden::export::access(store, &config)
            .unwrap()
            .accounts
            .into_iter()
            .find(|row| row.user_name == leaver)
            .unwrap()
    };
    let due = row(&store.lock().unwrap(), leaver);
    assert!(due.active, "{due:?}");
    assert_eq!(due.identity_status.as_deref(), Some("deprovisioned"));
    assert!(
        due.justification.contains("deprovisioned in the directory")
            && due.justification.ends_with("access due to be removed"),
        "{due:?}"
    );

    let explained = |leaver: &str| {
        seatwarden::explain::explain(&config, &store.lock().unwrap(), leaver, chrono::Utc::now())
            .unwrap()
    };
    let view = explained(leaver);
    assert!(
        view.contains("but since run 1 read it: deprovisioned in the directory, seen")
            && view.contains("the access is due to be removed;"),
        "{view}"
    );
    // Another leaver, not held: the sweep deactivates the account.
    let leaver = "bella.silva@example.com";
    set_status(dir.path(), leaver, "deprovisioned");
    sweep(&config).await;
    let done = row(&store.lock().unwrap(), leaver);
    assert!(!done.active, "{done:?}");
    assert!(
        done.justification
            .contains("deprovisioned in the directory")
            && !done.justification.contains("is active")
            && done
                .justification
                .ends_with("account deactivated (no access)"),
        "{done:?}"
    );
    let view = explained(leaver);
    assert!(
        view.contains("but since run 1 read it: deprovisioned in the directory, seen")
            && view.contains("the account was deactivated"),
        "{view}"
    );
}

/// An account that may be a leaver's (a disputed match whose person left) keeps
/// its access until a person settles the dispute: the access review says whose
/// it may be, and that that person left, so a reviewer does not pass over a
/// leaver's lingering access as an open question of identity. A dispute of
/// someone still there says nothing of leaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_review_says_a_disputed_account_may_be_a_leavers() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    let disputed = |config: &seatwarden::config::Config| {
        let store = Store::open(&config.state.path).unwrap();
        let rows: Vec<String> = seatwarden::export::access(&store, config)
            .unwrap()
            .accounts
            .into_iter()
            .filter(|row| row.justification.starts_with("disputed:"))
            .map(|row| row.justification)
            .collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        rows
    };
    crate::fixtures::reconcile(&config).await;
    for why in disputed(&config) {
        assert!(
            why.starts_with("disputed: may be the account of 00u1004;"),
            "{why}"
        );
        // One claimant: the command is spelled out, not `link PERSON …`.
        assert!(
            why.contains("; `seatwarden link 00u1004 ws-0")
                && why.ends_with("` settles it if it is theirs"),
            "{why}"
        );
        assert!(!why.contains("leaver"), "{why}");
    }
    set_status(dir.path(), "emma.novak@example.com", "deprovisioned");
    crate::fixtures::reconcile(&config).await;
    for why in disputed(&config) {
        assert!(
            why.ends_with(
                "; 00u1004 is deprovisioned in the directory: if it is theirs, a leaver keeps \
                 access until then"
            ),
            "{why}"
        );
    }
}

/// An account deleted by hand in the workspace: once a run has read the
/// workspace without it, `explain` says the linked account is gone and who did
/// not delete it, instead of a bare "none" beside the link that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_a_linked_account_was_deleted_in_the_workspace() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    crate::fixtures::reconcile(&config).await;
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/Users/ws-0031",
            sandbox.base_url().as_str().trim_end_matches('/')
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    seatwarden::run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Plan,
    )
    .await
    .unwrap();
    let view = seatwarden::explain::explain(
        &config,
        &Store::open(&config.state.path).unwrap(),
        "eric.patel@example.com",
        chrono::Utc::now(),
    )
    .unwrap();
    assert!(
        view.contains(
            "none: the linked account ws-0031 is not in the workspace as run 2 read it: \
             deleted there by someone other than seatwarden"
        ),
        "{view}"
    );
}

/// `export --help` teaches what an auditor needs to read the access export: the
/// justification's forms, that writes since the snapshot are laid over it, and
/// the clock its times are on.
#[test]
fn export_help_says_what_the_access_rows_mean_and_as_of_when() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["export", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for phrase in [
        "access due to be removed",
        "`protected`, `disputed: …`",
        "`orphaned`",
        "writes\napplied since laid over them",
        "times are UTC to the second",
    ] {
        assert!(help.contains(phrase), "{phrase:?} missing from:\n{help}");
    }
}

/// The access review's `last_change` is when seatwarden last changed the
/// account's access; a folder membership it added is such a change. Membership
/// writes are group-level actions that name their accounts only inside, so the
/// column ignored them: someone added to Design by the latest run still showed
/// the time their account was linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_reviews_last_change_counts_a_membership_added() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    crate::fixtures::reconcile(&config).await;
    let path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    full["users"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|u| u["userName"] == "diana.garcia@example.com")
        .unwrap()["groups"]
        .as_array_mut()
        .unwrap()
        .push("Design".into());
    std::fs::write(&path, full.to_string()).unwrap();
    let outcome = crate::fixtures::reconcile(&config).await;
    assert!(
        outcome.plan.actions.iter().any(|a| matches!(
            &a.kind,
            seatwarden::model::ActionKind::AddMembers { group, .. } if group.display_name() == "Design"
        )),
        "{:?}",
        outcome.plan.actions
    );

    let store = Store::open(&config.state.path).unwrap();
    let account = "ws-0030";
    let linked_at = store
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.account_id == account)
        .unwrap()
        .linked_at;
    let row = seatwarden::export::access(&store, &config)
        .unwrap()
        .accounts
        .into_iter()
        .find(|row| row.account_id == account)
        .unwrap();
    assert!(
        row.workspace_groups.iter().any(|g| g == "Design"),
        "{row:?}"
    );
    assert!(
        row.last_change.is_some_and(|at| at > linked_at),
        "last change {:?}, linked at {linked_at}",
        row.last_change
    );
}
