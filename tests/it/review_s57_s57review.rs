//! Session 57, review of the look-alike group holds (`git diff 742dd83 45ff10a`).
//!
//! - A look-alike of a *mapping* group gives nobody scope: an active person
//!   removed from the real scope group who is still in "Engineering" written with
//!   a no-break space is a real leaver, deactivated the same day, not held for a
//!   person (the design's first duty).
//! - A deactivation a person approved after a look-alike hold is a deprovision
//!   like any other: the ledger records it verified (latency, metrics), and a
//!   send that failed stays an open episode the retry job enforces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::config::Config;
use seatwarden::model::{ActionKind, WorkspaceGroup, WorkspaceSnapshot};
use wiremock::MockServer;

use crate::okta::{FakeOkta, LinkStyle, okta_group, okta_user};
use crate::review_s57_dirnames::{SCIM_TOKEN, account};

const SSWS: &str = "s57-review-okta-token";

/// The Okta org at `okta` against the sandbox at `url`, configured as in
/// [`crate::review_s57_dirnames`].
pub(crate) fn config(dir: &Path, url: &str, okta: &str) -> Config {
    config_with(dir, url, okta, "")
}

/// [`config`] with `mappings` (TOML) after the "Engineering" mapping.
fn config_with(dir: &Path, url: &str, okta: &str, mappings: &str) -> Config {
    let directory = format!("kind = \"okta\"\nurl = \"{okta}\"\ntoken = \"{SSWS}\"\n");
    crate::review_s57_dirnames::config_with(dir, url, &directory, mappings)
}

/// Ada is in "Taskade Users" and "Engineering". Dee was removed from "Taskade
/// Users" (she left) but is still in "Engineering" written with a no-break space
/// at its end. Bob is only in "Taskade Users" with a zero-width space.
pub(crate) fn org() -> FakeOkta {
    let group = |id: &str, name: &str, members: &[&str]| {
        (
            okta_group(id, name),
            members.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>(),
        )
    };
    FakeOkta {
        users: vec![
            okta_user("00u1", "ada@example.com", "ACTIVE"),
            okta_user("00u2", "bob@example.com", "ACTIVE"),
            okta_user("00u4", "dee@example.com", "ACTIVE"),
        ],
        groups: vec![
            group("00g1", "Taskade Users", &["00u1"]),
            group("00g2", "Taskade\u{200b} Users", &["00u2"]),
            group("00g3", "Engineering", &["00u1"]),
            group("00g4", "Engineering\u{a0}", &["00u4"]),
        ],
        page_size: 200,
        style: LinkStyle::SeparateLines,
        app_users: Vec::new(),
        app_groups: Vec::new(),
        clock_offset: None,
    }
}

pub(crate) fn workspace() -> WorkspaceSnapshot {
    WorkspaceSnapshot {
        accounts: vec![
            account("w1", "ada@example.com", "00u1", "Editor"),
            account("w2", "bob@example.com", "00u2", "Viewer"),
            account("w4", "dee@example.com", "00u4", "Editor"),
        ],
        groups: vec![WorkspaceGroup {
            id: "wg-eng".into(),
            display_name: "Engineering".into(),
            members: vec!["w1".into(), "w4".into()],
        }],
    }
}

/// Dee is out of scope: a look-alike of a mapping group cannot have put her in
/// it, so her deactivation is not held for a person and is sent by this run,
/// with its ledger episode. Before, it was held (`look_alike_group`, naming
/// `policy.mapping[0].group`) every run, no episode open: a leaver kept access.
#[tokio::test]
async fn a_leaver_in_a_look_alike_of_a_mapping_group_is_deactivated_the_same_day() {
    let okta = MockServer::start().await;
    org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), sandbox.base_url().as_str(), &okta.uri());
    let outcome = crate::fixtures::reconcile(&config).await;
    let after = sandbox.snapshot();
    sandbox.shutdown().await;

    let dee: Vec<_> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.identity_id.as_deref() == Some("00u4"))
        .collect();
    assert!(
        dee.iter().all(|a| a.held.is_none()),
        "the leaver's deprovision was held: {dee:#?}"
    );
    let account = |id: &str| after.accounts.iter().find(|a| a.id == id).unwrap();
    assert!(!account("w4").active, "the leaver kept access");
    // Bob, out of scope only for a look-alike of the scope group, is still held.
    assert!(account("w2").active, "Bob was deactivated");
    let store = seatwarden::store::Store::open(&config.state.path).unwrap();
    let dee_episode = store.deprovision_history("00u4", 1).unwrap();
    assert!(
        dee_episode.first().is_some_and(|e| e.verified_at.is_some()),
        "{dee_episode:#?}"
    );
}

/// Bob's deactivation, held because his only group looks like the scope group,
/// is approved by a person: the ledger records it verified, as any approved
/// deprovision. Before, the journal row still said `look_alike_group` and the
/// ledger skipped it: no episode, no latency, nothing for the retry job had the
/// send failed.
#[tokio::test]
async fn an_approved_look_alike_deactivation_is_recorded_in_the_ledger() {
    let okta = MockServer::start().await;
    org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), sandbox.base_url().as_str(), &okta.uri());
    let outcome = crate::fixtures::reconcile(&config).await;
    assert!(
        outcome
            .plan
            .actions
            .iter()
            .any(|a| a.identity_id.as_deref() == Some("00u2")
                && a.held.as_ref().map(|h| h.rule()) == Some("look_alike_group")),
        "{:#?}",
        outcome.plan.actions
    );
    let before = seatwarden::store::Store::open(&config.state.path)
        .unwrap()
        .deprovision_history("00u2", 1)
        .unwrap();
    assert!(
        before.is_empty(),
        "an episode opened for a held look-alike: {before:#?}"
    );
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::approval::approve(
        &config,
        &client,
        seatwarden::store::Store::open(&config.state.path).unwrap(),
        outcome.run_id,
        &seatwarden::approval::Only::All,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let after = sandbox.snapshot();
    sandbox.shutdown().await;
    assert!(!after.accounts.iter().find(|a| a.id == "w2").unwrap().active);
    let history = seatwarden::store::Store::open(&config.state.path)
        .unwrap()
        .deprovision_history("00u2", 1)
        .unwrap();
    assert!(
        history
            .first()
            .is_some_and(|e| e.verified_at.is_some() && e.account_id.as_deref() == Some("w2")),
        "the approved deactivation is not in the ledger: {history:#?}"
    );
}

/// Cy is in "Taskade Users" and "Engineering" written with a no-break space, and
/// left "Sales" (another mapping) in the directory: her removal from the
/// workspace group "Sales" goes, as the look-alike of "Engineering" could not
/// have kept her in it; her removal from "Engineering", which it could have, is
/// held. Before, every removal of hers was held, whatever the group.
#[tokio::test]
async fn a_mapping_look_alike_holds_only_the_workspace_group_it_gives() {
    let mut fake = org();
    fake.users
        .push(okta_user("00u3", "cy@example.com", "ACTIVE"));
    fake.groups[0].1.push("00u3".into());
    fake.groups[3].1.push("00u3".into());
    fake.groups
        .push((okta_group("00g5", "Sales"), vec!["00u1".to_owned()]));
    let okta = MockServer::start().await;
    fake.mount(&okta).await;
    let mut seed = workspace();
    seed.accounts
        .push(account("w3", "cy@example.com", "00u3", "Viewer"));
    seed.groups[0].members.push("w3".into());
    seed.groups.push(WorkspaceGroup {
        id: "wg-sales".into(),
        display_name: "Sales".into(),
        members: vec!["w3".into()],
    });
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, seed).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        sandbox.base_url().as_str(),
        &okta.uri(),
        "[[policy.mapping]]\ngroup = \"Sales\"\nworkspace_group = \"Sales\"\nrole = \"Viewer\"\n",
    );
    let outcome = crate::fixtures::reconcile(&config).await;
    let after = sandbox.snapshot();
    sandbox.shutdown().await;
    let removal_from = |group: &str| {
        outcome
            .plan
            .actions
            .iter()
            .find(|a| match &a.kind {
                ActionKind::RemoveMembers { group: g, members } => {
                    g.display_name() == group && members.contains(&"w3".to_owned())
                }
                _ => false,
            })
            .unwrap_or_else(|| panic!("no removal from {group}: {:#?}", outcome.plan.actions))
    };
    assert_eq!(
        removal_from("Sales").held,
        None,
        "{:#?}",
        outcome.plan.actions
    );
    assert_eq!(
        removal_from("Engineering").held.as_ref().map(|h| h.rule()),
        Some("look_alike_group")
    );
    let members_of = |group: &str| {
        after
            .groups
            .iter()
            .find(|g| g.display_name == group)
            .unwrap()
            .members
            .clone()
    };
    assert!(!members_of("Sales").contains(&"w3".to_owned()));
    assert!(members_of("Engineering").contains(&"w3".to_owned()));
}
