//! `approve` at its edges: a held change whose target a person removed by hand
//! after the hold, a create whose userName its holder keeps, and what `approve`
//! shows on a terminal while it lists the workspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};

use chrono::Utc;
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::model::{AccountRef, ActionKind, GroupRef, IdentityStatus};
use seatwarden::run::{self, Mode, RunOutcome};
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::{ActionState, Decision, Store};
use seatwarden::synth::{self, Synth, SynthSpec};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "approve-edges-token";

/// A synthetic directory and its workspace (in step), served by the sandbox, with
/// a configuration whose thresholds hold nothing; reconciled once, so every
/// account is linked.
async fn converged(dir: &Path) -> (Sandbox, Synth, Config) {
    let data = synth::generate(&SynthSpec {
        people: 40,
        groups: 2,
        drift_percent: 0.0,
        seed: 11,
    });
    let sandbox = crate::fixtures::sandbox(TOKEN, data.workspace.clone()).await;
    let config = crate::fixtures::synth_config(dir, &data, sandbox.base_url().as_ref(), TOKEN, 4);
    reconcile(&config).await;
    (sandbox, data, config)
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

fn write_directory(dir: &Path, data: &Synth) {
    std::fs::write(
        dir.join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
}

async fn approve_all(config: &Config, run: seatwarden::store::RunId) -> approval::Approval {
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    approval::approve(
        config,
        &client,
        Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        Utc::now(),
    )
    .await
    .unwrap()
}

/// A held membership removal whose group a person deleted by hand after the hold:
/// the approval records it obsolete, saying why, and sends nothing (a PATCH to the
/// missing group would only meet 404 and read as a failure).
#[tokio::test]
async fn a_held_membership_removal_from_a_group_deleted_since_is_obsolete_and_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    let group = data.group_names[0].clone();
    let member = data
        .directory
        .identities
        .iter_mut()
        .find(|i| i.status == IdentityStatus::Active && i.groups.contains(&group))
        .unwrap();
    member.groups.retain(|g| *g != group);
    write_directory(dir.path(), &data);
    config.safety.max_membership_removals = 0;

    let held = reconcile(&config).await;
    let removal = held
        .plan
        .actions
        .iter()
        .find(|a| matches!(&a.kind, ActionKind::RemoveMembers { .. }))
        .unwrap();
    assert!(removal.held.is_some(), "{removal:?}");
    let ActionKind::RemoveMembers {
        group: GroupRef::Existing { id, .. },
        ..
    } = &removal.kind
    else {
        panic!("a removal from an existing group: {removal:?}");
    };

    // Deleted by hand in the workspace.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/Groups/{id}", sandbox.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert!(sandbox.snapshot().groups.iter().all(|g| g.id != *id));
    let writes = sandbox.stats().writes;

    let approval = approve_all(&config, held.run_id).await;
    assert_eq!(
        approval.obsolete,
        vec![(removal.seq, "the group no longer exists".to_owned())]
    );
    assert!(approval.approved.is_empty(), "{approval:?}");
    assert!(approval.refused.is_empty(), "{approval:?}");
    assert_eq!((approval.applied.applied, approval.applied.failed), (0, 0));
    assert_eq!(sandbox.stats().writes, writes, "nothing sent");

    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(
        store.decisions(held.run_id).unwrap().get(&removal.seq),
        Some(&Decision::Obsolete)
    );
    let report =
        seatwarden::report::Report::from_json(&store.report(held.run_id).unwrap().unwrap())
            .unwrap();
    let reported = report
        .actions
        .iter()
        .find(|a| a.seq == removal.seq)
        .unwrap();
    assert_eq!(reported.outcome, seatwarden::report::Outcome::NotRun);
    assert_eq!(
        reported.error.as_deref(),
        Some("obsolete when approved: the group no longer exists; nothing was sent")
    );
    sandbox.shutdown().await;
}

/// A held rename and the create held behind it, which wants the userName the
/// rename gives up. The account becomes protected before the approval: the
/// re-check refuses the rename, so its holder keeps the name, and the create is
/// refused too, rather than taken for obsolete ("an account with that userName
/// exists now": it is someone else's) or sent to meet 409. Both stay held, with
/// the reasons, and so do the new hire's memberships; nothing is sent.
#[tokio::test]
async fn a_create_wanting_the_name_of_a_refused_rename_is_refused_and_stays_held() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    let linked: Vec<String> = data
        .workspace
        .accounts
        .iter()
        .filter(|a| a.active)
        .filter_map(|a| a.external_id.clone())
        .collect();
    let renamed = data
        .directory
        .identities
        .iter_mut()
        .find(|i| i.status == IdentityStatus::Active && linked.contains(&i.id))
        .unwrap();
    let given_up = renamed.user_name.clone();
    renamed.user_name = given_up.replace('@', ".renamed@");
    let mut new_hire = renamed.clone();
    new_hire.id = "new-hire".into();
    new_hire.user_name = given_up.clone();
    new_hire.email = Some(given_up.clone());
    data.directory.identities.push(new_hire);
    write_directory(dir.path(), &data);
    config.safety.max_renames = 0;

    let held = reconcile(&config).await;
    let rename = held.plan.actions.iter().find(|a| a.kind.renames()).unwrap();
    let create = held
        .plan
        .actions
        .iter()
        .find(|a| {
            matches!(&a.kind, ActionKind::CreateAccount { spec, .. } if spec.user_name == given_up)
        })
        .unwrap();
    assert!(rename.held.is_some(), "{rename:?}");
    assert!(create.held.is_some(), "the create waits behind the rename");
    let writes = sandbox.stats().writes;

    // Protected since the run: the re-check refuses to rename it.
    config.safety.protected.push(given_up.clone());
    let approval = approve_all(&config, held.run_id).await;
    assert!(approval.approved.is_empty(), "{approval:?}");
    assert!(approval.obsolete.is_empty(), "{approval:?}");
    let wants = format!(
        "wants the userName {given_up}, which its holder keeps: the re-check refused the \
         rename that frees it"
    );
    let mut refused = vec![
        (rename.seq, format!("{given_up} is protected")),
        (create.seq, wants.clone()),
    ];
    // The new hire's memberships wait for their account, and stay held with it.
    let memberships: Vec<u32> = held
        .plan
        .actions
        .iter()
        .filter(|a| match &a.kind {
            ActionKind::AddMembers { members, .. } => members.iter().any(
                |m| matches!(m, AccountRef::Created { identity_id } if identity_id == "new-hire"),
            ),
            _ => false,
        })
        .map(|a| a.seq)
        .collect();
    assert!(!memberships.is_empty());
    refused.extend(memberships.into_iter().map(|seq| {
        (
            seq,
            "identity new-hire has no account: the re-check refused its create".to_owned(),
        )
    }));
    refused.sort();
    assert_eq!(approval.refused, refused);
    assert_eq!(sandbox.stats().writes, writes, "nothing sent");
    let accounts = sandbox.snapshot().accounts;
    assert!(accounts.iter().any(|a| a.user_name == given_up));
    assert!(
        accounts
            .iter()
            .all(|a| a.external_id.as_deref() != Some("new-hire"))
    );

    let store = Store::open(&config.state.path).unwrap();
    let journal = store.journal(held.run_id).unwrap();
    let row = journal
        .iter()
        .find(|row| row.action.seq == create.seq)
        .unwrap();
    assert_eq!(row.state, ActionState::Held);
    assert_eq!(
        row.last_error.as_deref(),
        Some(format!("refused by the re-check of `approve`: {wants}").as_str())
    );
    sandbox.shutdown().await;
}

/// On a terminal, `approve` shows the read's progress line while it lists the
/// workspace to re-check what it approves (before its apply's), as a reconcile
/// does; with stderr not a terminal, no progress line. The terminal is a pty that
/// util-linux `script` provides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_shows_the_listing_progress_on_a_terminal_only() {
    let sandbox = crate::fixtures::demo_sandbox(
        TOKEN,
        Faults {
            latency: std::time::Duration::from_millis(20),
            ..Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let config = dir.path().join("seatwarden.toml");
    let env = [
        ("SEATWARDEN__WORKSPACE__URL", sandbox.base_url().to_string()),
        ("SEATWARDEN__WORKSPACE__TOKEN", TOKEN.to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
        // The demo's leaver is held for a human.
        ("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let seatwarden = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
        command
            .arg("--config")
            .arg(&config)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command
    };
    let blocking =
        |mut command: Command| tokio::task::spawn_blocking(move || command.output().unwrap());
    // Two runs hold the same deactivation: one for each approval below.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let reconciled = blocking(seatwarden(&["reconcile"])).await.unwrap();
        assert_eq!(
            reconciled.status.code(),
            Some(seatwarden::cli::exit::HELD.into()),
            "{}",
            String::from_utf8_lossy(&reconciled.stderr)
        );
        let run = Store::open(&dir.path().join("state.db"))
            .unwrap()
            .latest_run(&[seatwarden::store::RunKind::Reconcile])
            .unwrap()
            .unwrap()
            .id;
        runs.push(run);
    }
    // The newer run on the terminal: approving the older one first would record
    // the newer one's copy done there, leaving the piped approval nothing to read.
    let run = runs[1];

    let line = format!(
        "{} --config {} approve {run}",
        env!("CARGO_BIN_EXE_seatwarden"),
        config.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    let terminal = tokio::task::spawn_blocking(move || {
        script
            .output()
            .unwrap_or_else(|e| panic!("util-linux `script` gives the test a terminal: {e}"))
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert_eq!(terminal.status.code(), Some(0), "{shown}");
    let reading = shown
        .find("reading workspace accounts: ")
        .unwrap_or_else(|| panic!("no listing progress: {shown:?}"));
    let applying = shown.find("applying: ").unwrap();
    assert!(reading < applying, "{shown:?}");
    // Ended with its own line before the apply's begins.
    let between = &shown[reading..applying];
    assert!(between.contains('\n'), "{shown:?}");

    // Not a terminal: no progress line. The first run's deactivation is obsolete
    // by now, but the approval lists the workspace all the same to find that out.
    let piped = blocking(seatwarden(&["approve", &runs[0].to_string()]))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    let stdout = String::from_utf8_lossy(&piped.stdout);
    assert!(stdout.contains("1 obsolete"), "{stdout}{stderr}");
    assert!(!stderr.contains("reading workspace"), "{stderr}");
    sandbox.shutdown().await;
}
