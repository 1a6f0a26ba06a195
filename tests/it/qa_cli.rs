//! An operator's first commands on stored state: `export access` and `explain`
//! after a first `plan`, on data an adopter meets (accounts found by email, names
//! outside ASCII in another case, an email two people share, an account nobody in
//! the directory matches). Each command is run as the binary, on snapshots stored
//! as a plan stores them: no network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use seatwarden::model::{
    Account, DirectorySnapshot, Identity, IdentityStatus, LinkMethod, NewLink, WorkspaceSnapshot,
};
use seatwarden::store::{RunKind, Store};

pub(crate) fn person(id: &str, user_name: &str, email: &str) -> Identity {
    Identity {
        id: id.into(),
        user_name: user_name.into(),
        email: Some(email.into()),
        given_name: None,
        family_name: None,
        display_name: None,
        status: IdentityStatus::Active,
        department: None,
        groups: Vec::new(),
    }
}

pub(crate) fn account(id: &str, user_name: &str, email: &str) -> Account {
    Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some(email.into()),
        active: true,
        roles: vec!["Viewer".into()],
    }
}

/// A configuration in `dir` (every active person in scope, default role Viewer)
/// and a state database holding one run's snapshots of `people` and `accounts`,
/// and no links: the state a first `plan` leaves. Returns the configuration path.
pub(crate) fn first_plan_stored(
    dir: &Path,
    people: Vec<Identity>,
    accounts: Vec<Account>,
) -> PathBuf {
    std::fs::write(dir.join("directory.json"), r#"{"users": []}"#).unwrap();
    let config = dir.join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t0ken\"\n\n\
         [state]\npath = \"state.db\"\n",
    )
    .unwrap();
    let mut store = Store::open(&dir.join("state.db")).unwrap();
    let run = store.begin_run(RunKind::Plan, Utc::now()).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: people,
                complete: true,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &WorkspaceSnapshot {
                accounts,
                groups: Vec::new(),
            },
        )
        .unwrap();
    config
}

pub(crate) fn seatwarden(config: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The export after the first `plan`, before any reconcile has stored a link:
/// the accounts the plan matches to people are theirs, justified by the policy,
/// not "orphaned" (an access review would send a reviewer after every account).
#[test]
fn export_after_a_first_plan_names_the_person_behind_each_matched_account() {
    let dir = tempfile::tempdir().unwrap();
    let mut by_external_id = account("w1", "ada.old@example.com", "ada.old@example.com");
    by_external_id.external_id = Some("00u1".into());
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u1", "ada@example.com", "ada@example.com"),
            person("00u2", "Zoë.Ünal@example.com", "zoe@example.com"),
            person("00u3", "bo@example.com", "mail.only@example.com"),
        ],
        vec![
            by_external_id,
            account("w2", "zoë.ünal@example.com", "z@example.com"),
            account("w3", "someone@example.com", "mail.only@example.com"),
            account("w4", "stray@example.com", "stray@example.com"),
        ],
    );
    let (ok, stdout, stderr) = seatwarden(&config, &["export", "access", "--format", "json"]);
    assert!(ok, "{stderr}");
    let export: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = |id: &str| {
        let rows = export["accounts"].as_array().unwrap();
        let row = rows.iter().find(|r| r["account_id"] == id).unwrap();
        (
            row["identity_id"].as_str().unwrap_or("").to_owned(),
            row["justification"].as_str().unwrap().to_owned(),
        )
    };
    let in_scope = "in scope: default role Viewer".to_owned();
    assert_eq!(row("w1"), ("00u1".to_owned(), in_scope.clone()));
    assert_eq!(row("w2"), ("00u2".to_owned(), in_scope.clone()));
    assert_eq!(row("w3"), ("00u3".to_owned(), in_scope));
    assert_eq!(row("w4"), (String::new(), "orphaned".to_owned()));
}

/// `explain` shows the account the plan matches to the person: by a userName
/// outside ASCII in another case, or by email alone, and finds the person by
/// such a userName typed in any case. Before, it said "none" while the next run
/// it printed below renamed or promoted that very account.
#[test]
fn explain_shows_the_account_the_plan_matches_by_folded_user_name_or_email() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u2", "Zoë.Ünal@example.com", "zoe@example.com"),
            person("00u3", "bo@example.com", "mail.only@example.com"),
        ],
        vec![
            account("w2", "zoë.ünal@example.com", "z@example.com"),
            account("w3", "someone@example.com", "mail.only@example.com"),
        ],
    );
    for (asked, identity, account) in [
        ("Zoë.Ünal@example.com", "00u2", "w2"),
        ("ZOË.ÜNAL@EXAMPLE.COM", "00u2", "w2"),
        ("00u3", "00u3", "w3"),
        ("bo@example.com", "00u3", "w3"),
    ] {
        let (ok, stdout, stderr) = seatwarden(&config, &["explain", asked]);
        assert!(ok, "{asked}: {stderr}");
        assert!(
            stdout.contains(&format!("  id:         {identity}\n")),
            "{asked}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("  id:         {account}\n")),
            "{asked}: {stdout}"
        );
        assert!(!stdout.contains("\n  none\n"), "{asked}: {stdout}");
    }
}

/// An email two people share (the directory allows it) names both, and neither is
/// explained: showing the first alone would hide the other from whoever asked.
#[test]
fn explain_by_an_email_two_people_share_names_both_and_explains_neither() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u1", "kate@example.com", "shared@example.com"),
            person("00u2", "lee@example.com", "Shared@Example.com"),
        ],
        vec![account("w1", "kate@example.com", "kate@example.com")],
    );
    let (ok, stdout, stderr) = seatwarden(&config, &["explain", "shared@example.com"]);
    assert!(!ok, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(
            "\"shared@example.com\" is the email of several directory identities: \
             00u1 (kate@example.com), 00u2 (lee@example.com); explain one by its id"
        ),
        "{stderr}"
    );
    let (ok, stdout, stderr) = seatwarden(&config, &["explain", "00u2"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("  userName:   lee@example.com\n"),
        "{stdout}"
    );
}

/// An account no directory identity matches is not "a match candidate".
#[test]
fn explain_of_an_account_nobody_matches_does_not_call_it_a_match_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![
            account("w1", "ada@example.com", "ada@example.com"),
            account("w9", "stray@example.com", "stray@example.com"),
        ],
    );
    let (ok, stdout, stderr) = seatwarden(&config, &["explain", "w9"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .contains("Link\n  no stored link (no directory identity matches the account below)\n"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = seatwarden(&config, &["explain", "w1"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("(the account below is a match candidate by its userName, not linked yet)"),
        "{stdout}"
    );
}

/// `explain ACCOUNT` (the help offers an account id or userName) shows the person
/// linked to it, or the one it matches before a reconcile links them: not "no
/// directory identity justifies this account" for an Owner the directory grants.
#[test]
fn explain_by_account_id_shows_the_person_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut owner = account("w1", "root@example.com", "root@example.com");
    owner.external_id = Some("00u1".into());
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u1", "ada@example.com", "ada@example.com"),
            person("00u2", "bo@example.com", "bo@example.com"),
        ],
        vec![owner, account("w2", "bo.b@example.com", "bo@example.com")],
    );
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    store
        .upsert_links(
            &[NewLink {
                identity_id: "00u2".into(),
                account_id: "w2".into(),
                method: LinkMethod::Email,
            }],
            Utc::now(),
        )
        .unwrap();
    drop(store);
    for (asked, identity) in [("w1", "00u1"), ("root@example.com", "00u1"), ("w2", "00u2")] {
        let (ok, stdout, stderr) = seatwarden(&config, &["explain", asked]);
        assert!(ok, "{asked}: {stderr}");
        assert!(
            stdout.contains(&format!("Directory record\n  id:         {identity}\n")),
            "{asked}: {stdout}"
        );
        assert!(stdout.contains("  in scope: active"), "{asked}: {stdout}");
    }
}

/// A directory refused as a source fault (here: empty) is stored as read, but
/// nothing is planned from it: `export access` and `explain` keep to the last run
/// whose directory was not refused, instead of calling everyone deleted and their
/// access due to be removed.
#[tokio::test]
async fn export_and_explain_skip_a_directory_refused_as_a_source_fault() {
    use seatwarden::run::{self, Mode};
    let mut ada = account("w1", "ada@example.com", "ada@example.com");
    ada.external_id = Some("00u1".into());
    let sandbox = crate::fixtures::sandbox(
        "t0ken",
        WorkspaceSnapshot {
            accounts: vec![ada],
            groups: Vec::new(),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::ada_config(sandbox.base_url().as_str(), dir.path(), "active");
    let store = || Store::open(&config.state.path).unwrap();
    let good = run::execute(&config, store(), Mode::Plan).await.unwrap();
    std::fs::write(dir.path().join("directory.json"), r#"{"users": []}"#).unwrap();
    let refused = run::execute(&config, store(), Mode::Plan).await.unwrap();
    assert!(refused.report.safety.source_fault.is_some());
    sandbox.shutdown().await;

    let path = dir.path().join("seatwarden.toml");
    let (ok, stdout, stderr) = seatwarden(&path, &["export", "access", "--format", "json"]);
    assert!(ok, "{stderr}");
    let export: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(export["run_id"], good.run_id, "{stdout}");
    let row = &export["accounts"][0];
    assert_eq!(row["identity_user_name"], "ada@example.com", "{stdout}");
    assert_eq!(
        row["justification"], "in scope: default role Viewer",
        "{stdout}"
    );

    let (ok, stdout, stderr) = seatwarden(&path, &["explain", "ada@example.com"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "ada@example.com — as of run {} (plan",
            good.run_id
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("Directory record\n  id:         00u1\n"),
        "{stdout}"
    );
}

/// `explain`'s last actions are what was done or held for a human, not the
/// previews of `plan` (nothing of which was sent): a dozen plans run by hand
/// while adopting seatwarden must not push the reconcile's create out of view.
#[tokio::test]
async fn explain_lists_a_reconciles_actions_not_the_plans_previews() {
    use seatwarden::run::{self, Mode};
    let sandbox = crate::fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::ada_config(sandbox.base_url().as_str(), dir.path(), "active");
    let store = || Store::open(&config.state.path).unwrap();
    let created = run::execute(&config, store(), Mode::Reconcile)
        .await
        .unwrap();
    assert_eq!(created.report.summary.actions_applied, 1);
    let directory = dir.path().join("directory.json");
    let renamed = std::fs::read_to_string(&directory)
        .unwrap()
        .replace("Ada Lovelace", "Ada King");
    std::fs::write(&directory, renamed).unwrap();
    for _ in 0..12 {
        let plan = run::execute(&config, store(), Mode::Plan).await.unwrap();
        assert_eq!(plan.report.summary.actions_planned, 1);
    }
    sandbox.shutdown().await;

    let path = dir.path().join("seatwarden.toml");
    let (ok, stdout, stderr) = seatwarden(&path, &["explain", "ada@example.com"]);
    assert!(ok, "{stderr}");
    let last: Vec<&str> = stdout
        .split("\nLast actions\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(last.len(), 1, "{stdout}");
    assert!(
        last[0].starts_with(&format!(
            "  run {} #0 create_account — applied (",
            created.run_id
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("Next run (re-planned from run 13's snapshots)\n  update_attributes"),
        "{stdout}"
    );
}

/// When the only snapshots are of a refused directory, `export` and `explain` say
/// so, not that no plan has run (the operator just ran one).
#[tokio::test]
async fn with_only_a_refused_directory_export_and_explain_say_it_was_refused() {
    use seatwarden::run::{self, Mode};
    let sandbox = crate::fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::ada_config(sandbox.base_url().as_str(), dir.path(), "active");
    std::fs::write(dir.path().join("directory.json"), r#"{"users": []}"#).unwrap();
    let store = Store::open(&config.state.path).unwrap();
    let refused = run::execute(&config, store, Mode::Plan).await.unwrap();
    assert!(refused.report.safety.source_fault.is_some());
    sandbox.shutdown().await;

    let path = dir.path().join("seatwarden.toml");
    let said = format!(
        "error: the directory of run {run} was refused as a source fault (`seatwarden report \
         --run {run}` says why), and no run before it stored snapshots to read instead: \
         correct the directory, then run `seatwarden plan`",
        run = refused.run_id
    );
    for args in [&["export", "access"][..], &["explain", "ada@example.com"]] {
        let (ok, stdout, stderr) = seatwarden(&path, args);
        assert!(!ok, "{args:?}: {stdout}");
        assert!(stderr.contains(&said), "{args:?}: {stderr}");
    }
}
