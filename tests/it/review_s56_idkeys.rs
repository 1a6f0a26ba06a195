//! Review of how keys are compared (session 56): names folded in one place must
//! be folded the same way wherever the same thing is looked up. The plan matches
//! workspace groups by `model::fold_case` (case aside, accents composed, and a
//! character outside ASCII never taken for an ASCII one); the workspace client's
//! reads of role groups and managed groups must find the same groups, or a
//! look-alike counts as a role group and a decomposed name is not read at all.
//! And an account found by the userName a held create asked for is the
//! create's only when no other person claims it, by a link or by externalId.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use seatwarden::approval::Only;
use seatwarden::config::Config;
use seatwarden::model::{
    AccountSpec, ActionKind, GroupRef, HoldReason, IdentityStatus, Role, WorkspaceSnapshot,
};
use seatwarden::run::Mode;
use seatwarden::workspace::GroupMembers;

use crate::approve_settle::{demo_env, noah_spec};
use crate::role_groups::{account, config, execute, group, people, sandbox, seed};

/// A group anyone may make, named like the Owners' role group ("Taskade
/// Owners") but with U+212A KELVIN SIGN for its `k`, is not the role group: its
/// members are no Owners. Read as Owners, cy (a Viewer made Editor) was planned
/// down from Owner, a downgrade the thresholds count; and zed, an account no one
/// in the directory has (which the plan leaves alone), passed for an Owner who
/// stays, so the last-Owner rule let the only real Owner, a leaver, go.
#[tokio::test]
async fn a_look_alike_of_a_role_group_gives_its_members_no_role() {
    let mut workspace = seed();
    workspace.accounts.push(account("zed"));
    workspace.groups.push(group(
        "g-look-alike",
        "Tas\u{212A}ade Owners",
        &["cy", "zed"],
    ));
    let sandbox = sandbox(workspace, false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut everyone = people();
    for p in &mut everyone {
        if p.id == "id-olga" {
            p.status = IdentityStatus::Suspended;
        }
    }
    let config = config(
        dir.path(),
        &everyone,
        sandbox.base_url().as_str(),
        GroupMembers::Listed,
    );

    let plan = execute(&config, Mode::Plan).await;
    let of = |account: &str| {
        plan.plan
            .actions
            .iter()
            .find(|a| a.kind.account_id() == Some(account))
            .unwrap_or_else(|| panic!("no action on {account}: {:#?}", plan.plan.actions))
    };
    match &of("acct-cy").kind {
        ActionKind::SetRole { from, to, .. } => {
            assert_eq!(
                (from.as_slice(), *to),
                (["Viewer".to_owned()].as_slice(), Role::Editor)
            );
        }
        other => panic!("{other:?}"),
    }
    let olga = of("acct-olga");
    assert!(
        matches!(olga.kind, ActionKind::Deactivate { .. }),
        "{olga:#?}"
    );
    assert_eq!(olga.held, Some(HoldReason::LastOwner), "{olga:#?}");
}

/// The configuration `crate::role_groups::config` wrote in `dir`, with the
/// Engineering mapping's workspace group named `name` instead.
fn with_workspace_group(dir: &std::path::Path, name: &str) -> Config {
    let path = dir.join("seatwarden.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    let renamed = toml.replace(
        "workspace_group = \"Engineering\"",
        &format!("workspace_group = \"{name}\""),
    );
    assert_ne!(renamed, toml);
    std::fs::write(&path, renamed).unwrap();
    Config::load_with_env(&path, Some(HashMap::new())).unwrap()
}

/// The plan's membership changes of the group `name`: (added, removed) account
/// ids, or created accounts' identity ids.
fn membership_changes(
    actions: &[seatwarden::model::Action],
    name: &str,
) -> (Vec<String>, Vec<String>) {
    let named = |group: &GroupRef| match group {
        GroupRef::Existing { display_name, .. } | GroupRef::Created { display_name } => {
            display_name == name
        }
    };
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for action in actions {
        match &action.kind {
            ActionKind::AddMembers { group, members } if named(group) => {
                added.extend(members.iter().map(|m| format!("{m:?}")));
            }
            ActionKind::RemoveMembers { group, members } if named(group) => {
                removed.extend(members.iter().cloned());
            }
            _ => {}
        }
    }
    (added, removed)
}

/// A mapping's workspace group typed with a decomposed accent (`E` and U+0301,
/// as macOS writes it) is the workspace's `Équipe` for the plan; against a
/// provider that never lists members (read by filter for the managed groups
/// only), its members were not read, so the group looked empty: everyone was
/// added again on every run, and a member no mapping grants any more was never
/// taken out.
#[tokio::test]
async fn a_managed_group_named_with_a_decomposed_accent_has_its_members_read() {
    let mut workspace = seed();
    for g in &mut workspace.groups {
        if g.id == "g-eng" {
            g.display_name = "\u{c9}quipe".into();
            // dee is not in Engineering: she is to be taken out.
            g.members.push("acct-dee".into());
        }
    }
    let sandbox = sandbox(workspace, true).await;
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &people(),
        sandbox.base_url().as_str(),
        GroupMembers::ByMemberFilter,
    );
    let config = with_workspace_group(dir.path(), "E\u{301}quipe");

    let plan = execute(&config, Mode::Plan).await;
    let (added, removed) = membership_changes(&plan.plan.actions, "\u{c9}quipe");
    assert_eq!(removed, ["acct-dee"], "{:#?}", plan.plan.actions);
    // eve and cy are members already; only ada, a new hire, is added.
    assert!(
        added.iter().all(|m| m.contains("id-ada")),
        "{added:?}: {:#?}",
        plan.plan.actions
    );
    let after: WorkspaceSnapshot = sandbox.snapshot();
    assert_eq!(after.groups.len(), 5, "nothing created by a plan");
}

/// A held create whose userName an account made since holds, while that
/// account's `externalId` names another person of the directory: it is theirs
/// (the next plan matches it to them by externalId), not the one the create
/// asked for. The approval pointed the create's held memberships at it all the
/// same, handing the other person the new hire's groups; a create that meets
/// 409 refuses such an account (`apply::claimable`), and so must the approval.
#[tokio::test]
async fn a_held_membership_is_not_given_to_an_account_another_person_owns_by_external_id() {
    let env = demo_env(&[]).await;
    let outcome = env
        .noah_held_with_memberships(&["Taskade Users", "Design"], 1)
        .await;

    let admin = env.client();
    admin.discover().await.unwrap();
    let someone_elses = AccountSpec {
        external_id: "00u1004".into(),
        ..noah_spec()
    };
    let account = admin.create_account(&someone_elses).await.unwrap();

    let approval = env.approve(outcome.run_id, &Only::All).await.unwrap();
    assert!(
        !env.members_of("Design").contains(&account.id),
        "{approval:?}"
    );
    assert_eq!(approval.applied.applied, 0, "{approval:?}");
    assert!(
        approval
            .refused
            .iter()
            .any(|(_, why)| why.contains("00u1004") && why.contains("externalId")),
        "{approval:?}"
    );
    env.sandbox.shutdown().await;
}
