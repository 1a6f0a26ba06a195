//! Session 60, a second week with seatwarden: a leaver, a role change, a new
//! hire, a disputed match and an orphan an admin added by hand, reconciled, then
//! read back (`status`, `report`, `digest`, `audit`, `explain`), settled with
//! `link`, approved and rejected, backed up and restored, and exported for an
//! access review, through the binary as the engineer who runs it does.
//!
//! - `export access` told a reviewer to settle a duplicate account (its person
//!   linked to another account already) with `seatwarden link ID ACCOUNT`,
//!   which `link` refuses without `--replace`.
//! - `export access --output reviews/` (a folder, as `backup` takes one) said
//!   the file "already exists" and offered `--force`, which then failed with
//!   "Is a directory (os error 21)".
//! - The access export's columns were documented only as a prose list.
//! - After `seatwarden reject RUN`, `status` still counted that run's rejected
//!   actions as `held` ("actions: 2 held"), as if they waited for a decision;
//!   `report --run RUN` counts them not run.
//! - `audit --run 999`, a run id mistyped, said "0 entries about run 999", as
//!   of a run nobody decided about.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::sandbox::Faults;

use crate::review_s43_audit::seatwarden_out;

const TOKEN: &str = "review-s60-walk";

/// `seatwarden ARGS` in `dir` with `env`, off the runtime's threads.
pub(crate) async fn run(
    dir: &Path,
    env: &[(String, String)],
    args: &'static [&'static str],
) -> (Option<i32>, String, String) {
    let (dir, env) = (dir.to_owned(), env.to_vec());
    tokio::task::spawn_blocking(move || seatwarden_out(&dir, &env, args))
        .await
        .unwrap()
}

/// The demo's workspace served, and reconciled once from its directory by the
/// binary: the sandbox (keep it), the folder of the configuration and state,
/// and the environment that points the binary at them.
async fn reconciled_demo() -> (
    seatwarden::sandbox::Sandbox,
    tempfile::TempDir,
    Vec<(String, String)>,
) {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    let (code, _, stderr) = run(dir.path(), &env, &["reconcile"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    (sandbox, dir, env)
}

/// `export access --output reviews/`, a folder, as `backup` takes one: it was
/// "already exists … --force to replace it", and with --force "Is a directory
/// (os error 21)". The folder is named as one, --force or not, and nothing is
/// written in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_to_a_folder_says_it_is_one() {
    let (_sandbox, dir, env) = reconciled_demo().await;
    let reviews = dir.path().join("reviews");
    std::fs::create_dir(&reviews).unwrap();
    let folder = reviews.to_str().unwrap().to_owned();
    let slashed = format!("{folder}/");
    for args in [
        vec!["export", "access", "--output", &folder],
        vec!["export", "access", "--output", &slashed, "--force"],
        vec!["export", "workspace", "-o", &folder],
    ] {
        let (dir, env) = (dir.path().to_owned(), env.clone());
        let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = owned.iter().map(String::as_str).collect();
            seatwarden_out(&dir, &env, &args)
        })
        .await
        .unwrap();
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(
            stderr.contains("is a folder; nothing was written: give the name of a file in it")
                && !stderr.contains("--force")
                && !stderr.contains("os error"),
            "{args:?}: {stderr}"
        );
    }
    let left = std::fs::read_dir(dir.path().join("reviews"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

/// The demo's disputed person, Emma (`00u1004`), linked by hand to her own
/// account `ws-0005`: the other candidate, `ws-0901`, is a duplicate the export
/// calls disputed, and the command it gives to move the link must be one `link`
/// takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_account_is_settled_with_the_command_link_takes() {
    let (_sandbox, dir, env) = reconciled_demo().await;
    let (code, _, stderr) = run(dir.path(), &env, &["link", "00u1004", "ws-0005"]).await;
    assert_eq!(code, Some(0), "{stderr}");

    let (code, csv, stderr) = run(dir.path(), &env, &["export", "access"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let row = csv
        .lines()
        .find(|line| line.starts_with("ws-0901,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        row.contains("`seatwarden link 00u1004 ws-0901 --replace` settles it if it is theirs")
            && row.contains("00u1004 is linked to account ws-0005"),
        "{row}"
    );
    // The command as the export gives it is taken.
    let (code, stdout, stderr) = run(
        dir.path(),
        &env,
        &["link", "00u1004", "ws-0901", "--replace"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("replaced: identity 00u1004 ↔ account ws-0005"),
        "{stdout}"
    );
}

/// An access review goes to people who did not run seatwarden: every column of
/// the CSV is explained in the README's table, in the order the file has them.
#[test]
fn every_column_of_the_access_export_is_in_the_readme_table() {
    let export = seatwarden::export::AccessExport {
        run_id: 1,
        snapshot_at: chrono::Utc::now(),
        applied_through: None,
        accounts: Vec::new(),
    };
    let csv = export.to_csv().unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Access review export\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split('`').next())
        .collect();
    assert_eq!(documented, header, "{section}");
}

/// A reconcile held by a threshold (no deprovision allowed), its hold rejected:
/// `status` counts its actions `rejected`, not `held` waiting for a decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_rejected_actions_as_rejected_not_held() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        TOKEN,
        &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0")],
    );
    let (code, _, stderr) = run(dir.path(), &env, &["reconcile"]).await;
    assert_eq!(code, Some(3), "{stderr}");
    let (code, before, stderr) = run(dir.path(), &env, &["status"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let held = before
        .lines()
        .find(|line| line.starts_with("Last reconcile:"))
        .unwrap()
        .to_owned();
    assert!(held.contains("held for approval"), "{held}");

    let (code, _, stderr) = run(dir.path(), &env, &["reject", "1"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, after, stderr) = run(dir.path(), &env, &["status"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let line = after
        .lines()
        .find(|line| line.starts_with("Last reconcile:"))
        .unwrap();
    assert!(
        line.contains(" rejected") && !line.contains(" held"),
        "{line}"
    );
    let (code, json, stderr) = run(dir.path(), &env, &["status", "--format", "json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let actions = &json["last_reconcile_actions"];
    assert!(actions.get("held").is_none(), "{actions}");
    assert!(actions["rejected"].as_u64().unwrap() > 0, "{actions}");
}

/// `audit --run N` of a run that was never recorded says so, beside "0 entries";
/// of a run with no decisions, only the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_of_a_run_never_recorded_says_so() {
    let (_sandbox, dir, env) = reconciled_demo().await;
    let (code, stdout, stderr) = run(dir.path(), &env, &["audit", "--run", "999"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("0 entries about run 999 (no run 999 is recorded: check the id)"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(dir.path(), &env, &["audit", "--run", "1"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("0 entries about run 1"), "{stdout}");
    assert!(!stdout.contains("no run 1 is recorded"), "{stdout}");
}
