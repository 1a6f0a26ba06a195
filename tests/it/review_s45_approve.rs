//! `approve` of a run whose held demotions and membership removals the
//! directory (or the mappings) no longer asks for: a mass change held by a
//! threshold is most often a mistake fixed since, and approving the run's stale
//! plan afterwards took away access the directory gives again (the next
//! reconcile handed it back). The re-check refuses them; what is still wanted
//! goes ahead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use chrono::Utc;
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::model::{ActionKind, IdentityStatus, Role};
use seatwarden::run::{self, Mode, RunOutcome};
use seatwarden::sandbox::Sandbox;
use seatwarden::store::{ActionState, Store};
use seatwarden::synth::{self, Synth, SynthSpec};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "review-s45-approve-token";

/// A synthetic directory and its workspace in step, reconciled once (every
/// account linked), with thresholds that hold every role downgrade and
/// membership removal.
pub(crate) async fn converged(dir: &Path) -> (Sandbox, Synth, Config) {
    let data = synth::generate(&SynthSpec {
        people: 40,
        groups: 7,
        drift_percent: 0.0,
        seed: 45,
    });
    let sandbox = crate::fixtures::sandbox(TOKEN, data.workspace.clone()).await;
    let mut config =
        crate::fixtures::synth_config(dir, &data, sandbox.base_url().as_ref(), TOKEN, 4);
    execute(&config, Mode::Reconcile).await;
    config.safety.max_role_downgrades = 0;
    config.safety.max_membership_removals = 0;
    (sandbox, data, config)
}

pub(crate) async fn execute(config: &Config, mode: Mode) -> RunOutcome {
    run::execute(config, Store::open(&config.state.path).unwrap(), mode)
        .await
        .unwrap()
}

pub(crate) fn write_directory(dir: &Path, data: &Synth) {
    std::fs::write(
        dir.join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
}

pub(crate) async fn approve_all(
    config: &Config,
    run: seatwarden::store::RunId,
) -> approval::Approval {
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

/// A mapped group above the default role (Viewer) but not Owner, and two active
/// members of it whose highest role comes from it alone.
pub(crate) fn group_and_two_members(data: &Synth) -> (String, Role, Vec<String>) {
    for (group, role) in &data.roles {
        if *role == Role::Owner || *role <= Role::Viewer {
            continue;
        }
        let members: Vec<String> = data
            .directory
            .identities
            .iter()
            .filter(|i| i.status == IdentityStatus::Active && i.groups.contains(group))
            .filter(|i| {
                data.roles
                    .iter()
                    .filter(|(g, _)| g != group && i.groups.contains(g))
                    .all(|(_, r)| r < role)
            })
            .map(|i| i.id.clone())
            .take(2)
            .collect();
        if members.len() == 2 {
            return (group.clone(), *role, members);
        }
    }
    panic!("no mapped group with two members whose role it alone gives");
}

pub(crate) fn held_demotion_of(outcome: &RunOutcome, identity: &str) -> u32 {
    outcome
        .plan
        .actions
        .iter()
        .find(|a| {
            matches!(a.kind, ActionKind::SetRole { .. })
                && a.identity_id.as_deref() == Some(identity)
        })
        .filter(|a| a.held.is_some())
        .unwrap_or_else(|| panic!("a held demotion of {identity}: {:?}", outcome.plan))
        .seq
}

fn held_removal(outcome: &RunOutcome) -> u32 {
    outcome
        .plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::RemoveMembers { .. }))
        .filter(|a| a.held.is_some())
        .unwrap_or_else(|| panic!("a held removal: {:?}", outcome.plan))
        .seq
}

/// Two people dropped from a group by mistake: their demotions and the removal
/// are held. One is put back, and a `plan` reads the directory again. Approving
/// the held run then demotes only the one still out of the group, and refuses
/// the demotion and the removal the directory no longer asks for (they stay
/// held, saying which read and what it gives), rather than taking the group and
/// its role from someone the directory grants them to.
#[tokio::test]
async fn approving_a_held_demotion_the_directory_no_longer_asks_for_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, config) = converged(dir.path()).await;
    let (group, role, members) = group_and_two_members(&data);
    let original = data.directory.clone();
    for identity in data
        .directory
        .identities
        .iter_mut()
        .filter(|i| members.contains(&i.id))
    {
        identity.groups.retain(|g| *g != group);
    }
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    let back_seq = held_demotion_of(&held, &members[0]);
    let gone_seq = held_demotion_of(&held, &members[1]);
    let removal_seq = held_removal(&held);

    // The first is back in the group; a plan reads the directory again.
    let back = original
        .identities
        .iter()
        .find(|i| i.id == members[0])
        .unwrap()
        .clone();
    *data
        .directory
        .identities
        .iter_mut()
        .find(|i| i.id == members[0])
        .unwrap() = back.clone();
    write_directory(dir.path(), &data);
    execute(&config, Mode::Plan).await;
    let writes = sandbox.stats().writes;

    let approval = approve_all(&config, held.run_id).await;
    assert_eq!(approval.approved, vec![gone_seq], "{approval:?}");
    assert!(approval.obsolete.is_empty(), "{approval:?}");
    let refused: Vec<u32> = approval.refused.iter().map(|(seq, _)| *seq).collect();
    let mut expected = vec![back_seq, removal_seq];
    expected.sort();
    assert_eq!(refused, expected, "{approval:?}");
    let why = |seq: u32| {
        approval
            .refused
            .iter()
            .find(|(s, _)| *s == seq)
            .unwrap()
            .1
            .clone()
    };
    // The approval's own read of the directory goes before the plan's.
    let source = "the directory no longer asks for it: the directory as read now (";
    assert!(why(back_seq).starts_with(source), "{}", why(back_seq));
    assert!(
        why(back_seq).ends_with(&format!(
            "), mapped as configured now, gives them {role}, not Viewer; a new run decides \
             what they need"
        )),
        "{}",
        why(back_seq)
    );
    assert!(why(removal_seq).starts_with(source), "{}", why(removal_seq));
    assert!(
        why(removal_seq).ends_with(&format!(
            "), mapped as configured now, grants {group} to 1 of its members ({}); a new run \
             decides who loses it",
            back.user_name
        )),
        "{}",
        why(removal_seq)
    );
    assert_eq!(
        seatwarden::cli::approve_exit_code(&approval),
        3,
        "refused: exit 3"
    );
    // One write: the demotion still wanted.
    assert_eq!(sandbox.stats().writes, writes + 1);
    let workspace = sandbox.snapshot();
    let account = workspace
        .accounts
        .iter()
        .find(|a| a.external_id.as_deref() == Some(back.id.as_str()))
        .unwrap();
    assert_eq!(account.role(), Some(role), "kept their role: {account:?}");
    let group_now = workspace
        .groups
        .iter()
        .find(|g| g.display_name == group)
        .unwrap();
    assert!(group_now.members.contains(&account.id), "kept the group");

    let store = Store::open(&config.state.path).unwrap();
    let journal = store.journal(held.run_id).unwrap();
    for seq in [back_seq, removal_seq] {
        let row = journal.iter().find(|e| e.action.seq == seq).unwrap();
        assert_eq!(row.state, ActionState::Held, "{row:?}");
    }
    sandbox.shutdown().await;
}

/// A mapping's directory group misspelt: everyone it gave a role to is planned
/// down and out of its workspace group, all held. The mapping is corrected, and
/// the run approved before any other run, with the directory unreadable now:
/// with the mappings as configured now, the run's own directory read gives them
/// their role and group, so nothing is taken away.
#[tokio::test]
async fn approving_after_the_mapping_was_corrected_takes_nothing_away() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, data, mut config) = converged(dir.path()).await;
    let (group, _, members) = group_and_two_members(&data);
    let mapping = config
        .policy
        .mapping
        .iter()
        .position(|m| m.group == group)
        .unwrap();
    config.policy.mapping[mapping].group = format!("{group} (typo)");
    let held = execute(&config, Mode::Reconcile).await;
    held_demotion_of(&held, &members[0]);
    held_removal(&held);
    let writes = sandbox.stats().writes;

    config.policy.mapping[mapping].group = group.clone();
    std::fs::write(dir.path().join("directory.json"), "not json").unwrap();
    let approval = approve_all(&config, held.run_id).await;
    assert!(approval.directory_note.is_some(), "{approval:?}");
    assert!(approval.approved.is_empty(), "{approval:?}");
    assert!(!approval.refused.is_empty(), "{approval:?}");
    let run = held.run_id;
    for (_, why) in &approval.refused {
        assert!(
            why.starts_with(&format!(
                "the directory no longer asks for it: the directory read by run {run} ("
            )),
            "{why}"
        );
    }
    assert_eq!(sandbox.stats().writes, writes, "nothing sent");
    sandbox.shutdown().await;
}

/// A held deactivation whose account the person deciding found to be someone
/// else's, and linked to them (`seatwarden link ACTIVE ACCOUNT --replace`)
/// before approving the run: the re-check refuses it, naming the link, rather
/// than deactivating the account of an active person, and sends nothing.
#[tokio::test]
async fn approving_a_held_deactivation_of_an_account_linked_since_to_someone_else_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    let store = Store::open(&config.state.path).unwrap();
    let links = store.links().unwrap();
    drop(store);
    let linked_active: Vec<&seatwarden::model::Identity> = data
        .directory
        .identities
        .iter()
        .filter(|i| i.status == IdentityStatus::Active)
        .filter(|i| links.iter().any(|l| l.identity_id == i.id))
        .take(2)
        .collect();
    let (leaver, stays) = (linked_active[0].id.clone(), linked_active[1].id.clone());
    let account = links
        .iter()
        .find(|l| l.identity_id == leaver)
        .unwrap()
        .account_id
        .clone();
    data.directory
        .identities
        .iter_mut()
        .find(|i| i.id == leaver)
        .unwrap()
        .status = IdentityStatus::Suspended;
    write_directory(dir.path(), &data);
    config.safety.max_deprovisions = 0;
    let held = execute(&config, Mode::Reconcile).await;
    let deactivation = held
        .plan
        .actions
        .iter()
        .find(|a| {
            a.kind
                == ActionKind::Deactivate {
                    account_id: account.clone(),
                }
        })
        .unwrap_or_else(|| panic!("a deactivation of {account}: {:?}", held.plan));
    assert!(deactivation.held.is_some(), "{deactivation:?}");

    // The account is the other person's.
    let mut store = Store::open(&config.state.path).unwrap();
    approval::link(&mut store, &stays, &account, true, "seatwarden", Utc::now()).unwrap();
    drop(store);
    let writes = sandbox.stats().writes;

    let approval = approve_all(&config, held.run_id).await;
    assert!(approval.approved.is_empty(), "{approval:?}");
    assert_eq!(
        approval.refused,
        vec![(
            deactivation.seq,
            format!(
                "account {account} is linked to identity {stays} now (`seatwarden link` since \
                 the run), and the run planned this for identity {leaver}; a new run decides \
                 what the account needs"
            )
        )]
    );
    assert_eq!(sandbox.stats().writes, writes, "nothing sent");
    let workspace = sandbox.snapshot();
    assert!(
        workspace
            .accounts
            .iter()
            .any(|a| a.id == account && a.active),
        "still active"
    );
    sandbox.shutdown().await;
}

/// The binary with `args` against the configuration in `dir`, to its end.
async fn binary(dir: &Path, args: &[&str]) -> std::process::Output {
    let config = dir.join("seatwarden.toml");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("SEATWARDEN_CONFIG")
            .env("SEATWARDEN_OPERATOR", "review")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A mass deprovision held by the threshold, and held again by the next
/// reconcile (the daemon's, every half hour). The person deciding approves the
/// run the first alert named: the newer run's same holds are recorded done
/// there, so `status`, its report and the digest stop asking to approve people
/// whose accounts were just deactivated (before, they did until the next
/// reconcile, and `approve` of that run found everything obsolete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_an_older_run_settles_the_same_holds_of_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    let leavers: Vec<String> = data
        .directory
        .identities
        .iter()
        .filter(|i| i.status == IdentityStatus::Active)
        .take(2)
        .map(|i| i.id.clone())
        .collect();
    for identity in data
        .directory
        .identities
        .iter_mut()
        .filter(|i| leavers.contains(&i.id))
    {
        identity.status = IdentityStatus::Suspended;
    }
    write_directory(dir.path(), &data);
    config.safety.max_deprovisions = 0;
    let first = execute(&config, Mode::Reconcile).await;
    let newer = execute(&config, Mode::Reconcile).await;
    assert_eq!(newer.report.summary.actions_held, 2, "held again");

    let out = binary(dir.path(), &["approve", &first.run_id.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout), @r"
    run 2: 2 approved (2 applied, 0 failed), 0 obsolete, 0 refused
      run 3 held 2 of these again: recorded there as done, not to be approved again
    ");

    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(
        approval::awaiting_decision(&store, newer.run_id).unwrap(),
        0
    );
    let report =
        seatwarden::report::Report::from_json(&store.report(newer.run_id).unwrap().unwrap())
            .unwrap();
    assert_eq!(report.summary.actions_held, 0, "{report:?}");
    for action in &report.actions {
        assert_eq!(
            action.error.as_deref(),
            Some("obsolete when approved: done by the approval of run 2; nothing was sent"),
            "{action:?}"
        );
    }
    drop(store);
    let out = binary(dir.path(), &["status", "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
    let out = binary(dir.path(), &["digest", "--format", "json"]).await;
    let digest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(digest["held"], serde_json::json!([]), "{digest}");
    sandbox.shutdown().await;
}

/// `approve RUN --only KIND` naming a kind the run does not hold (a mistyped or
/// misremembered one) said only that the run had nothing of it left to decide
/// on, as of a run with nothing held: it now says what the run holds instead,
/// by kind and class, so the next command is the right one. Exit 1, nothing
/// decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_only_a_kind_the_run_does_not_hold_says_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    for identity in data
        .directory
        .identities
        .iter_mut()
        .filter(|i| i.status == IdentityStatus::Active)
        .take(2)
    {
        identity.status = IdentityStatus::Suspended;
    }
    write_directory(dir.path(), &data);
    config.safety.max_deprovisions = 0;
    let held = execute(&config, Mode::Reconcile).await;
    let run = held.run_id.to_string();

    let out = binary(dir.path(), &["approve", &run, "--only", "role_downgrade"]).await;
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(error_lines(&out), @"error: run 2 has no held actions of class role_downgrade left to decide on; it holds 2 others that wait for a decision: 2 deactivate (class deprovision)");
    let out = binary(dir.path(), &["reject", &run, "--only", "create_account"]).await;
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(error_lines(&out), @"error: run 2 has no held actions of kind create_account left to decide on; it holds 2 others that wait for a decision: 2 deactivate (class deprovision)");
    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(approval::awaiting_decision(&store, held.run_id).unwrap(), 2);
    sandbox.shutdown().await;
}

/// The `error:` lines of a command's stderr (its log's warnings left out).
fn error_lines(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n")
}
