//! A fresh-eyes review of `export`, `explain` and `link` as an auditor and an
//! on-call operator use them, and of the state database's preview copy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::model::{AccountSpec, Action, ActionKind, DriftKind, HoldReason, Plan, Role};
use seatwarden::run::{self, Mode};
use seatwarden::store::{RunKind, RunStatus, Store, StoreError};

/// `Store::copy_to` (the copy `plan --workspace-moved` plans in, named after
/// `state.path`) gave SQLite's `VACUUM INTO` the path through
/// `to_string_lossy`: a name that is not UTF-8 became another name (its bytes
/// replaced by U+FFFD), so the copy, the whole state database, was written to
/// another file than the one created, locked and later removed, and left there.
/// It is refused by name, with nothing written.
#[cfg(unix)]
#[test]
fn a_copy_whose_path_is_not_utf8_is_refused_and_nothing_is_written() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let copy = dir.path().join(std::ffi::OsStr::from_bytes(
        b"state-\xff.db.moved-preview-7",
    ));
    let error = store.copy_to(&copy).unwrap_err();
    assert!(matches!(error, StoreError::NotUtf8 { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("not a UTF-8 path"), "{message}");
    assert!(message.contains("nothing was written"), "{message}");
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_owned())
        .filter(|name| !name.starts_with(b"state.db"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");
}

/// An earlier reconcile's create of Ada's account met a 409 with no account of
/// that userName visible: a run holds her create for a person (`approve` sends
/// it again). `explain`'s "next run" re-planned without that hold and said the
/// create would be sent, the very write every run refuses to repeat.
#[tokio::test]
async fn explain_holds_a_create_out_of_sight_as_the_run_does() {
    let sandbox =
        crate::fixtures::sandbox("t0ken", seatwarden::model::WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::ada_config(sandbox.base_url().as_str(), dir.path(), "active");
    let store = || Store::open(&config.state.path).unwrap();
    {
        let mut store = store();
        let at = Utc::now() - Duration::hours(1);
        let run = store.begin_run(RunKind::Reconcile, at).unwrap();
        let spec = AccountSpec {
            user_name: "ada@example.com".into(),
            external_id: "00u1".into(),
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            display_name: None,
            email: Some("ada@example.com".into()),
            role: Some(Role::Viewer),
        };
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::CreateAccount {
                    identity_id: "00u1".into(),
                    spec,
                },
                reason: DriftKind::MissingAccount,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: "in scope, no account".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at).unwrap();
        store.mark_in_flight(run, 0, at).unwrap();
        let error = format!(
            "409 userName taken; the workspace says \"ada@example.com\" exists but {}",
            seatwarden::apply::OUT_OF_SIGHT
        );
        store.mark_failed(run, 0, at, &error).unwrap();
        store
            .finish_run(run, at, RunStatus::Succeeded, None)
            .unwrap();
    }
    let planned = run::execute(&config, store(), Mode::Plan).await.unwrap();
    sandbox.shutdown().await;
    let create = planned
        .plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::CreateAccount { .. }))
        .unwrap();
    assert_eq!(create.held, Some(HoldReason::OutOfSight), "{create:?}");

    let text =
        seatwarden::explain::explain(&config, &store(), "ada@example.com", Utc::now()).unwrap();
    let next = text.split("\nNext run").nth(1).unwrap();
    let line = next
        .lines()
        .find(|l| l.trim_start().starts_with("create_account"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("[HELD: an earlier create met a 409"),
        "{line}\n{text}"
    );
}

fn account(id: &str, user_name: &str, active: bool) -> seatwarden::model::Account {
    seatwarden::model::Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some(user_name.into()),
        active,
        roles: Vec::new(),
    }
}

/// Ada's configuration, and a run that stored an empty directory and a
/// workspace of `accounts` as they are (a workspace that does not keep userNames
/// unique without case, which the sandbox does).
fn stored_with(
    dir: &std::path::Path,
    accounts: Vec<seatwarden::model::Account>,
) -> seatwarden::config::Config {
    stored_people(dir, Vec::new(), accounts)
}

/// [`stored_with`], with a directory of `identities`.
fn stored_people(
    dir: &std::path::Path,
    identities: Vec<seatwarden::model::Identity>,
    accounts: Vec<seatwarden::model::Account>,
) -> seatwarden::config::Config {
    stored_read(dir, identities, true, accounts)
}

/// [`stored_people`], from a directory read whole or not (`complete`).
fn stored_read(
    dir: &std::path::Path,
    identities: Vec<seatwarden::model::Identity>,
    complete: bool,
    accounts: Vec<seatwarden::model::Account>,
) -> seatwarden::config::Config {
    let config = crate::fixtures::ada_config("http://127.0.0.1:9/scim/v2", dir, "active");
    let mut store = Store::open(&config.state.path).unwrap();
    let at = Utc::now() - Duration::minutes(5);
    let run = store.begin_run(RunKind::Plan, at).unwrap();
    store
        .save_directory_snapshot(
            run,
            &seatwarden::model::DirectorySnapshot {
                identities,
                complete,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &seatwarden::model::WorkspaceSnapshot {
                accounts,
                groups: Vec::new(),
            },
        )
        .unwrap();
    store
        .finish_run(run, at, RunStatus::Succeeded, None)
        .unwrap();
    config
}

/// Two workspace accounts whose userNames differ only in case (`Bob@…`, an
/// old deactivated one, and `bob@…`), nobody's in the directory: `explain
/// bob@example.com` showed whichever the workspace listed first (SCIM asks a
/// workspace to keep userNames unique without case; not every one does), and hid the
/// other, the one an on-call operator may have been asked about. A userName
/// several accounts share is refused with their ids, as one several people
/// share is; an account id picks one.
#[test]
fn explain_refuses_a_user_name_several_accounts_share() {
    let dir = tempfile::tempdir().unwrap();
    let config = stored_with(
        dir.path(),
        vec![
            account("w1", "Bob@example.com", false),
            account("w2", "bob@example.com", true),
        ],
    );
    let store = Store::open(&config.state.path).unwrap();
    let error = seatwarden::explain::explain(&config, &store, "BOB@example.com", Utc::now())
        .unwrap_err()
        .to_string();
    assert!(error.contains("several workspace accounts"), "{error}");
    assert!(error.contains("w1 (Bob@example.com)"), "{error}");
    assert!(error.contains("w2 (bob@example.com)"), "{error}");
    let text = seatwarden::explain::explain(&config, &store, "w2", Utc::now()).unwrap();
    assert!(text.contains("w2"), "{text}");
    assert!(!text.contains("w1"), "{text}");
}

/// `export` to a file that cannot be written (a full disk, `/dev/full` here)
/// said only `error: No space left on device (os error 28)`: nothing said it was
/// the export, not the state database, that failed, or that the file is cut
/// short. It says so, exit 1. And `export access`, like `export workspace`, says
/// on stderr which run's snapshots it is and how old they are, on the report's
/// clock: a review written to a file from a daemon stopped days ago otherwise
/// reads as current.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn export_says_how_old_its_snapshots_are_and_when_its_output_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let toml = dir.path().join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!("{text}\n[report]\ntimezone = \"Asia/Kolkata\"\n"),
    )
    .unwrap();
    let export = |args: &[&str], stdout: std::process::Stdio| {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&toml)
            .args(args)
            .env_remove("SEATWARDEN_CONFIG")
            .stdout(stdout)
            .output()
            .unwrap()
    };
    let output = export(&["export", "access"], std::process::Stdio::piped());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.starts_with("access as run "), "{stderr}");
    assert!(stderr.contains("+05:30 (IST) ("), "{stderr}");
    assert!(stderr.contains(" ago)"), "{stderr}");
    for kind in ["access", "workspace"] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let output = export(&["export", kind], full.into());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "error: writing the {kind} export to stdout (what was written is incomplete): "
            )),
            "{stderr}"
        );
    }
}

/// The access review's rows are sorted by userName without case: two accounts
/// whose userNames differ only in case came in whatever order the workspace
/// listed them, so two exports of the same access differed (a diff between
/// review periods showed a change where there was none). The account id
/// breaks the tie.
#[test]
fn export_rows_keep_one_order_when_user_names_differ_only_in_case() {
    let order = |accounts: Vec<seatwarden::model::Account>| {
        let dir = tempfile::tempdir().unwrap();
        let config = stored_with(dir.path(), accounts);
        let store = Store::open(&config.state.path).unwrap();
        let export = seatwarden::export::access(&store, &config).unwrap();
        export
            .accounts
            .iter()
            .map(|row| row.account_id.clone())
            .collect::<Vec<_>>()
    };
    let bob = account("w1", "Bob@example.com", false);
    let bob_again = account("w2", "bob@example.com", true);
    assert_eq!(order(vec![bob.clone(), bob_again.clone()]), ["w1", "w2"]);
    assert_eq!(order(vec![bob_again, bob]), ["w1", "w2"]);
}

/// `link PERSON ACCOUNT` where the account is someone else's by a stored link
/// said `already linked: identity X ↔ account Y; pass --replace to move the
/// link`: an operator with a mistyped id who did as told took a colleague's
/// account away (renamed to the other person, their projects with it; a new,
/// empty account for the colleague). The refusal says what moving each link
/// does, with the names, and how to check, as the refusal of an account matched
/// but not yet linked does; nothing is linked.
#[tokio::test]
async fn link_to_an_account_linked_to_someone_else_says_what_replace_would_do() {
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .args(["link", "00u1026", "ws-0001"])
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for said in [
        "account ws-0001 (ava.smith@example.com) is linked to identity 00u1000 \
         (ava.smith@example.com): moved, the next reconcile would rename it to 00u1026's \
         userName and give 00u1000 a new, empty account",
        "identity 00u1026 (adam.chen@example.com) is linked to account ws-0027 \
         (adam.chen@example.com): moved, that account is matched afresh by the next run",
        "`seatwarden explain 00u1026`",
        "pass --replace: `seatwarden link 00u1026 ws-0001 --replace`",
    ] {
        assert!(stderr.contains(said), "{said}\n{stderr}");
    }
    let store = Store::open(&dir.path().join("seatwarden.db")).unwrap();
    let links = store.links().unwrap();
    let linked = |account: &str| {
        links
            .iter()
            .find(|l| l.account_id == account)
            .map(|l| l.identity_id.clone())
    };
    assert_eq!(linked("ws-0001").as_deref(), Some("00u1000"));
    assert_eq!(linked("ws-0027").as_deref(), Some("00u1026"));
}

/// One person's userName that is another's email (a reused address, an alias
/// moved to someone else): `explain x@…` showed the person with that userName
/// and never said that another one has it as their email, though the plan may
/// match an account with that address to either. Refused with both ids, as a
/// userName or an email several people share is; each id still explains one.
#[test]
fn explain_refuses_a_user_name_that_is_another_persons_email() {
    let dir = tempfile::tempdir().unwrap();
    let config = stored_people(
        dir.path(),
        vec![
            crate::qa_cli::person("00u1", "sam@example.com", "sam.old@example.com"),
            crate::qa_cli::person("00u2", "samantha@example.com", "Sam@example.com"),
        ],
        Vec::new(),
    );
    let store = Store::open(&config.state.path).unwrap();
    let error = seatwarden::explain::explain(&config, &store, "sam@example.com", Utc::now())
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "\"sam@example.com\" is the userName or email of several directory identities: \
         00u1 (sam@example.com), 00u2 (samantha@example.com); explain one by its id"
    );
    for id in ["00u1", "00u2"] {
        let text = seatwarden::explain::explain(&config, &store, id, Utc::now()).unwrap();
        assert!(text.contains(&format!("  id:         {id}\n")), "{text}");
    }
    // A person's own userName and email alike is no ambiguity.
    let text =
        seatwarden::explain::explain(&config, &store, "sam.old@example.com", Utc::now()).unwrap();
    assert!(text.contains("  id:         00u1\n"), "{text}");
}

/// With the circuit breaker open a reconcile writes nothing, yet `explain`'s
/// next run listed Ada's create as if it would be sent: an on-call operator
/// asking why a leaver is still active was told the next run deactivates them.
/// It says the breaker holds it back, since when and why, and what closes it.
#[test]
fn explain_says_an_open_circuit_breaker_keeps_the_next_runs_writes_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = stored_people(
        dir.path(),
        vec![crate::qa_cli::person(
            "00u1",
            "ada@example.com",
            "ada@example.com",
        )],
        Vec::new(),
    );
    let next_run = || {
        let store = Store::open(&config.state.path).unwrap();
        let text = seatwarden::explain::explain(&config, &store, "00u1", Utc::now()).unwrap();
        text.split("\nNext run").nth(1).unwrap().to_owned()
    };
    let closed = next_run();
    assert!(closed.contains("\n  create_account — "), "{closed}");
    assert!(!closed.contains("circuit breaker"), "{closed}");

    let mut store = Store::open(&config.state.path).unwrap();
    store
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(Utc::now() - Duration::minutes(1)),
            reason: Some("5 of the last 6 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    drop(store);
    let open = next_run();
    assert!(open.contains("\n  create_account — "), "{open}");
    assert!(
        open.contains("\n  not sent while the circuit breaker is open (since ")
            && open.contains(": 5 of the last 6 writes failed): runs write nothing until ")
            && open.contains(" (the cool-down) or `seatwarden resume`"),
        "{open}"
    );
}

/// A run whose directory read was incomplete (a SCIM directory's listing short
/// of its `totalResults`, twice) stores its snapshot, and the export is built
/// from it: a person the read left out had their linked account reported as
/// `linked to … which is no longer in the directory: access due to be removed`,
/// and an account it would have matched as `orphaned`, findings an auditor
/// would chase though the run held every removal. Each says the read was
/// incomplete; from a whole read they read as before.
#[test]
fn an_export_from_an_incomplete_directory_read_does_not_call_people_gone() {
    let justification = |complete: bool| {
        let dir = tempfile::tempdir().unwrap();
        let config = stored_read(
            dir.path(),
            vec![crate::qa_cli::person(
                "00u1",
                "ada@example.com",
                "ada@example.com",
            )],
            complete,
            vec![
                account("w1", "ada@example.com", true),
                account("w2", "bob@example.com", true),
                account("w3", "cy@example.com", true),
            ],
        );
        let mut store = Store::open(&config.state.path).unwrap();
        store
            .upsert_links(
                &[seatwarden::model::NewLink {
                    identity_id: "00u2".into(),
                    account_id: "w2".into(),
                    method: seatwarden::model::LinkMethod::UserName,
                }],
                Utc::now() - Duration::days(30),
            )
            .unwrap();
        let export = seatwarden::export::access(&store, &config).unwrap();
        let of = |id: &str| {
            export
                .accounts
                .iter()
                .find(|row| row.account_id == id)
                .unwrap()
                .justification
                .clone()
        };
        (of("w2"), of("w3"))
    };
    assert_eq!(
        justification(true),
        (
            "linked to 00u2 which is no longer in the directory: access due to be removed"
                .to_owned(),
            "orphaned".to_owned()
        )
    );
    let (linked, orphan) = justification(false);
    assert_eq!(
        linked,
        "linked to 00u2, who is not in run 1's directory read, which was incomplete: not \
         known to have left (a run holds the removal of access until a whole read)"
    );
    assert_eq!(
        orphan,
        "orphaned in run 1's directory read, which was incomplete: its person may be one the \
         read missed"
    );
}

/// `explain` of an account whose person an incomplete directory read left out
/// said `not in the directory snapshot (deleted, or never there)`: an on-call
/// operator took the person for gone. It says the read was incomplete.
#[test]
fn explain_from_an_incomplete_directory_read_does_not_call_a_person_gone() {
    let record = |complete: bool| {
        let dir = tempfile::tempdir().unwrap();
        let config = stored_read(
            dir.path(),
            Vec::new(),
            complete,
            vec![account("w2", "bob@example.com", true)],
        );
        let store = Store::open(&config.state.path).unwrap();
        let text = seatwarden::explain::explain(&config, &store, "w2", Utc::now()).unwrap();
        text.split("\nDirectory record\n")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        record(true),
        "  not in the directory snapshot (deleted, or never there)"
    );
    assert_eq!(
        record(false),
        "  not in the directory snapshot, which run 1 read incompletely (a listing short of \
         its total): perhaps one it missed, not known to have left"
    );
}

/// An access review opened in Excel: without a byte order mark Excel reads a CSV
/// in the machine's legacy code page, and every justification's "→" (and any
/// accented userName or group) comes out garbled, "â†’", on the auditor's screen. `--bom` begins the CSV with one (and only the CSV: JSON must
/// not have one); without it the bytes start with the header, as before.
#[tokio::test]
async fn export_access_with_bom_begins_with_a_byte_order_mark_for_excel() {
    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let toml = dir.path().join("seatwarden.toml");
    let export = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&toml)
            .args(args)
            .env_remove("SEATWARDEN_CONFIG")
            .output()
            .unwrap()
    };
    let marked = export(&["export", "access", "--bom"]);
    assert!(
        marked.status.success(),
        "{}",
        String::from_utf8_lossy(&marked.stderr)
    );
    assert_eq!(&marked.stdout[..3], b"\xEF\xBB\xBF");
    let text = std::str::from_utf8(&marked.stdout[3..]).unwrap();
    assert!(text.starts_with("account_id,"), "{text}");
    assert!(
        text.contains("Marketing → Marketing as Collaborator"),
        "{text}"
    );

    let plain = export(&["export", "access"]);
    assert!(plain.status.success());
    assert_eq!(plain.stdout, marked.stdout[3..]);

    for args in [
        &["export", "access", "--format", "json", "--bom"][..],
        &["export", "workspace", "--bom"][..],
    ] {
        let refused = export(args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("leave out --bom"), "{stderr}");
        assert!(refused.stdout.is_empty(), "{args:?}");
    }
}
