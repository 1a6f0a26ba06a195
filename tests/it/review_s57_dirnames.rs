//! Session 57: names from a live directory that differ from the configuration
//! only in characters that do not show. Policy compares group names exactly, so
//! an Okta group "Taskade\u{200b} Users" (a zero-width space pasted in) or a
//! mapping group "Engineering\u{a0}" (a no-break space) is not the configured
//! group: read as it is, its members were deactivated or downgraded. Now what
//! would take access from them is held and reported, naming the directory group,
//! the configured name and key and what differs; everyone else is reconciled as
//! before. A userName or email holding such a character is not written to the
//! workspace: its create or rename is held with why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::config::Config;
use seatwarden::model::{Account, Action, WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::run::RunOutcome;
use wiremock::MockServer;

use crate::entra::{FakeGraph, graph_group, graph_user};
use crate::okta::{FakeOkta, LinkStyle, okta_group, okta_user};

pub(crate) const SCIM_TOKEN: &str = "s57-dirnames-scim-token";
const SSWS: &str = "s57-dirnames-okta-token";

pub(crate) fn account(id: &str, user_name: &str, external_id: &str, role: &str) -> Account {
    Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: Some(external_id.into()),
        // As `okta_user` names them: no attribute drift in the way.
        given_name: Some(format!("First{external_id}")),
        family_name: Some("Tester".into()),
        display_name: None,
        email: Some(user_name.into()),
        active: true,
        roles: vec![role.into()],
    }
}

/// Okta (`directory` is the `[directory]` body) against the sandbox at `url`:
/// scope "Taskade Users", "Engineering" gives Editor and the workspace group
/// "Engineering", thresholds out of the way.
fn config(dir: &Path, url: &str, directory: &str) -> Config {
    config_with(dir, url, directory, "")
}

/// [`config`] with `mappings` (TOML) after the "Engineering" mapping.
pub(crate) fn config_with(dir: &Path, url: &str, directory: &str, mappings: &str) -> Config {
    let path = dir.join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\n{directory}\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{SCIM_TOKEN}\"\n\n\
             [state]\npath = \"{}\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
             [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\n\
             role = \"Editor\"\n\n{mappings}\n\
             [safety]\nsettle = \"0s\"\nmax_deprovisions = 1000\nmax_deprovision_percent = 100\n\
             max_role_downgrades = 1000\nmax_role_downgrade_percent = 100\n\
             max_membership_removals = 1000\nmax_membership_removal_percent = 100\n",
            dir.join("state.db").display()
        ),
    )
    .unwrap();
    Config::load_with_env(&path, Some(Default::default())).unwrap()
}

fn groups(list: &[(&str, &str, &[&str])]) -> Vec<(serde_json::Value, Vec<String>)> {
    list.iter()
        .map(|(id, name, members)| {
            (
                okta_group(id, name),
                members.iter().map(|m| (*m).to_owned()).collect(),
            )
        })
        .collect()
}

/// Ada is in "Taskade Users" and "Engineering"; Bob only in "Taskade​ Users"
/// (a zero-width space after "Taskade"); Cy in "Taskade Users" and
/// "Engineering " with a no-break space at the end; Dee, who left every group,
/// is a real leaver; Erin is new, with a zero-width space in her login.
fn org() -> FakeOkta {
    let mut erin = okta_user("00u5", "erin\u{200b}@example.com", "ACTIVE");
    erin["profile"]["email"] = "erin@example.com".into();
    FakeOkta {
        users: vec![
            okta_user("00u1", "ada@example.com", "ACTIVE"),
            okta_user("00u2", "bob@example.com", "ACTIVE"),
            okta_user("00u3", "cy@example.com", "ACTIVE"),
            okta_user("00u4", "dee@example.com", "ACTIVE"),
            erin,
        ],
        groups: groups(&[
            ("00g1", "Taskade Users", &["00u1", "00u3", "00u5"]),
            ("00g2", "Taskade\u{200b} Users", &["00u2"]),
            ("00g3", "Engineering", &["00u1"]),
            ("00g4", "Engineering\u{a0}", &["00u3"]),
        ]),
        page_size: 200,
        style: LinkStyle::SeparateLines,
        app_users: Vec::new(),
        app_groups: Vec::new(),
        clock_offset: None,
    }
}

fn workspace() -> WorkspaceSnapshot {
    WorkspaceSnapshot {
        accounts: vec![
            account("w1", "ada@example.com", "00u1", "Editor"),
            account("w2", "bob@example.com", "00u2", "Viewer"),
            account("w3", "cy@example.com", "00u3", "Editor"),
            account("w4", "dee@example.com", "00u4", "Viewer"),
        ],
        groups: vec![WorkspaceGroup {
            id: "wg-eng".into(),
            display_name: "Engineering".into(),
            members: vec!["w1".into(), "w3".into()],
        }],
    }
}

async fn reconcile_okta(fake: &FakeOkta) -> (RunOutcome, WorkspaceSnapshot) {
    let okta = MockServer::start().await;
    fake.mount(&okta).await;
    reconcile_with(
        workspace(),
        &format!(
            "kind = \"okta\"\nurl = \"{}\"\ntoken = \"{SSWS}\"\n",
            okta.uri()
        ),
    )
    .await
}

/// One reconcile of the sandbox seeded with `seed` from the `[directory]` body
/// `directory`; the outcome and the workspace after it.
async fn reconcile_with(
    seed: WorkspaceSnapshot,
    directory: &str,
) -> (RunOutcome, WorkspaceSnapshot) {
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, seed).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), sandbox.base_url().as_str(), directory);
    let outcome = crate::fixtures::reconcile(&config).await;
    let after = sandbox.snapshot();
    sandbox.shutdown().await;
    (outcome, after)
}

/// The actions of the plan for `identity`, as (kind name, hold rule, hold text).
fn actions_of<'p>(outcome: &'p RunOutcome, identity: &str) -> Vec<&'p Action> {
    outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.identity_id.as_deref() == Some(identity))
        .collect()
}

fn rule(action: &Action) -> Option<&'static str> {
    action.held.as_ref().map(|h| h.rule())
}

/// A zero-width space in a scope group's name and a no-break space after a
/// mapping group's: their members keep their access, held for a person to
/// look at, and the report names the Okta group, the configured one, its key
/// and what differs. Dee, in no group, is deactivated as before.
#[tokio::test]
async fn okta_groups_differing_only_in_hidden_characters_hold_what_they_would_take() {
    let (outcome, after) = reconcile_okta(&org()).await;
    let account = |id: &str| after.accounts.iter().find(|a| a.id == id).unwrap();

    // Bob: out of scope only because his group has a zero-width space.
    assert!(account("w2").active, "Bob was deactivated");
    let bob = actions_of(&outcome, "00u2");
    assert!(!bob.is_empty(), "{:#?}", outcome.plan.actions);
    for action in &bob {
        assert_eq!(rule(action), Some("look_alike_group"), "{action:?}");
        let why = action.held.as_ref().unwrap().to_string();
        for part in [
            "\"Taskade\\u{200b} Users\"",
            "\"Taskade Users\"",
            "policy.scope_groups",
            "a zero-width space (U+200B)",
        ] {
            assert!(why.contains(part), "{part} not in {why}");
        }
    }

    // Cy: without the Editor role and the workspace group only because of a
    // no-break space.
    assert_eq!(account("w3").roles, ["Editor"]);
    let engineering = after
        .groups
        .iter()
        .find(|g| g.display_name == "Engineering")
        .unwrap();
    assert!(engineering.members.contains(&"w3".to_owned()));
    let held_for_cy: Vec<&Action> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| format!("{:?}", a.kind).contains("\"w3\""))
        .collect();
    assert!(!held_for_cy.is_empty(), "{:#?}", outcome.plan.actions);
    for action in held_for_cy {
        assert_eq!(rule(action), Some("look_alike_group"), "{action:?}");
        let why = action.held.as_ref().unwrap().to_string();
        for part in [
            "\"Engineering\\u{a0}\"",
            "policy.mapping[0].group",
            "a no-break space (U+00A0)",
        ] {
            assert!(why.contains(part), "{part} not in {why}");
        }
    }

    // Dee left every group: deactivated, same day, as before.
    assert!(!account("w4").active, "the real leaver was held too");
    assert!(
        actions_of(&outcome, "00u4")
            .iter()
            .all(|a| a.held.is_none())
    );
    // Ada is untouched.
    assert!(account("w1").active);
    assert_eq!(account("w1").roles, ["Editor"]);

    // The report says it where people read it.
    let text =
        seatwarden::report::render_text(&outcome.report, chrono_tz::UTC, "seatwarden", false);
    for part in [
        "Taskade\\u{200b} Users",
        "policy.scope_groups",
        "U+200B",
        "U+00A0",
    ] {
        assert!(text.contains(part), "{part} not in the report:\n{text}");
    }
}

/// A login with a zero-width space is not written to the workspace: the create
/// is held, naming the field and the character.
#[tokio::test]
async fn an_okta_login_with_a_zero_width_space_is_not_created_as_it_is() {
    let mut fake = org();
    fake.groups.retain(|(group, _)| group["id"] != "00g4");
    let (outcome, after) = reconcile_okta(&fake).await;
    assert!(
        !after
            .accounts
            .iter()
            .any(|a| a.user_name.contains('\u{200b}')),
        "{:#?}",
        after.accounts
    );
    let erin = actions_of(&outcome, "00u5");
    assert_eq!(erin.len(), 1, "{erin:#?}");
    assert_eq!(rule(erin[0]), Some("hidden_character"), "{:?}", erin[0]);
    let why = erin[0].held.as_ref().unwrap().to_string();
    for part in ["userName", "a zero-width space (U+200B)"] {
        assert!(why.contains(part), "{part} not in {why}");
    }
}

/// The silent case alone: the real "Taskade Users" is there, and Bob is only in
/// a copy of it with a zero-width space. The read was accepted and Bob, out of
/// scope to policy, deactivated; now his deactivation is held, and Dee's, a
/// real leaver's, goes as before.
#[tokio::test]
async fn a_zero_width_space_in_a_scope_group_no_longer_deactivates_its_members() {
    let mut fake = org();
    fake.groups.retain(|(group, _)| group["id"] != "00g4");
    let (outcome, after) = reconcile_okta(&fake).await;
    let account = |id: &str| after.accounts.iter().find(|a| a.id == id).unwrap();
    assert!(account("w2").active, "Bob was deactivated");
    assert!(!account("w4").active, "Dee was not");
    let bob = actions_of(&outcome, "00u2");
    assert!(
        bob.iter().all(|a| rule(a) == Some("look_alike_group")),
        "{bob:#?}"
    );
}

/// Graph: a group named "Taskade  Users" (two spaces) beside the real one, and
/// a userPrincipalName with a zero-width space. The same holds as from Okta.
#[tokio::test]
async fn entra_a_group_with_two_spaces_and_a_upn_with_a_hidden_character_are_held() {
    let graph = MockServer::start().await;
    let members = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
    FakeGraph {
        users: vec![
            graph_user("e1", "ada@example.com", true),
            graph_user("e2", "bob@example.com", true),
            graph_user("e3", "dee@example.com", true),
            graph_user("e4", "gus\u{200b}@example.com", true),
        ],
        groups: vec![
            (graph_group("g1", "Taskade Users"), members(&["e1", "e4"])),
            (graph_group("g2", "Taskade  Users"), members(&["e2"])),
            (graph_group("g3", "Engineering"), members(&["e1"])),
        ],
        direct: std::collections::HashMap::new(),
        page_size: 100,
        assignments: Vec::new(),
        others: false,
    }
    .mount(&graph)
    .await;
    let entra_account = |id: &str, user_name: &str, external_id: &str, role: &str| {
        let mut a = account(id, user_name, external_id, role);
        a.given_name = Some(format!("Given{external_id}"));
        a.display_name = Some(format!("Given{external_id} Tester"));
        a
    };
    let seed = WorkspaceSnapshot {
        accounts: vec![
            entra_account("w1", "ada@example.com", "e1", "Editor"),
            entra_account("w2", "bob@example.com", "e2", "Viewer"),
            entra_account("w3", "dee@example.com", "e3", "Viewer"),
        ],
        groups: vec![WorkspaceGroup {
            id: "wg-eng".into(),
            display_name: "Engineering".into(),
            members: vec!["w1".into()],
        }],
    };
    let (outcome, after) = reconcile_with(
        seed,
        &format!(
            "kind = \"entra\"\ntenant_id = \"0a1b2c3d-0000-4000-8000-00000000aaaa\"\n\
             client_id = \"11111111-2222-4333-8444-555555555555\"\n\
             client_secret = \"s57-graph-secret\"\ngraph_url = \"{0}\"\nlogin_url = \"{0}\"\n\
             requests_per_second = 0\n",
            graph.uri()
        ),
    )
    .await;
    let account = |id: &str| after.accounts.iter().find(|a| a.id == id).unwrap();
    assert!(account("w2").active, "Bob was deactivated");
    assert!(!account("w3").active, "Dee was not");
    let bob = actions_of(&outcome, "e2");
    assert!(!bob.is_empty());
    for action in bob {
        assert_eq!(rule(action), Some("look_alike_group"), "{action:?}");
        let why = action.held.as_ref().unwrap().to_string();
        assert!(why.contains("\"Taskade  Users\""), "{why}");
        assert!(why.contains("two spaces in a row"), "{why}");
    }
    let gus = actions_of(&outcome, "e4");
    assert_eq!(gus.len(), 1, "{gus:#?}");
    assert_eq!(rule(gus[0]), Some("hidden_character"), "{:?}", gus[0]);
    assert!(
        !after
            .accounts
            .iter()
            .any(|a| a.user_name.contains('\u{200b}')),
        "{:#?}",
        after.accounts
    );
}

/// `check-config --connect` lists Okta's groups and names each that differs
/// from a configured group only in what does not show: the directory group, the
/// configured name and its key, and what differs. The check still passes: a run
/// holds what those groups would take, and reconciles everyone else.
#[tokio::test]
async fn check_config_connect_names_the_look_alike_groups() {
    let okta = MockServer::start().await;
    org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        sandbox.base_url().as_str(),
        &format!(
            "kind = \"okta\"\nurl = \"{}\"\ntoken = \"{SSWS}\"\n",
            okta.uri()
        ),
    );
    let checks = seatwarden::connect::check(&config).await;
    sandbox.shutdown().await;
    let directory = checks.iter().find(|c| c.side == "directory").unwrap();
    assert!(directory.passed(), "{}", directory.line());
    assert_eq!(directory.warnings.len(), 2, "{:#?}", directory.warnings);
    let all = directory.warnings.join("\n");
    for part in [
        "\"Taskade\\u{200b} Users\" is not \"Taskade Users\" (policy.scope_groups)",
        "a zero-width space (U+200B)",
        "\"Engineering\\u{a0}\" is not \"Engineering\" (policy.mapping[0].group)",
        "a no-break space (U+00A0)",
    ] {
        assert!(all.contains(part), "{part} not in {all}");
    }
}

/// The daemon's sweep, which deactivates leavers between reconciles, does not
/// take Bob for one either: it opens no episode for a person in a look-alike
/// group, and its passes (hours later, past any SLA) leave his account active.
#[tokio::test]
async fn the_sweep_opens_no_episode_for_a_look_alike_groups_members() {
    use std::sync::{Arc, Mutex};
    let mut fake = org();
    fake.groups.retain(|(group, _)| group["id"] != "00g4");
    let okta = MockServer::start().await;
    fake.mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        sandbox.base_url().as_str(),
        &format!(
            "kind = \"okta\"\nurl = \"{}\"\ntoken = \"{SSWS}\"\n",
            okta.uri()
        ),
    );
    crate::fixtures::reconcile(&config).await;
    let store = Arc::new(Mutex::new(
        seatwarden::store::Store::open(&config.state.path).unwrap(),
    ));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    for hours in [0, 3] {
        seatwarden::sweep::sweep(
            &config,
            &directory,
            &client,
            &store,
            chrono::Utc::now() + chrono::Duration::hours(hours),
            chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    }
    let episodes = store.lock().unwrap().current_deprovisions().unwrap();
    assert!(
        !episodes.iter().any(|e| e.identity_id == "00u2"),
        "{episodes:#?}"
    );
    let after = sandbox.snapshot();
    sandbox.shutdown().await;
    let bob = after.accounts.iter().find(|a| a.id == "w2").unwrap();
    assert!(bob.active, "the sweep deactivated Bob");
}

/// A look-alike that really is another group: `approve` sends what was held,
/// and Bob's account is deactivated.
#[tokio::test]
async fn approving_a_look_alike_hold_sends_it() {
    let mut fake = org();
    fake.groups.retain(|(group, _)| group["id"] != "00g4");
    let okta = MockServer::start().await;
    fake.mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        sandbox.base_url().as_str(),
        &format!(
            "kind = \"okta\"\nurl = \"{}\"\ntoken = \"{SSWS}\"\n",
            okta.uri()
        ),
    );
    let outcome = crate::fixtures::reconcile(&config).await;
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
    let bob = after.accounts.iter().find(|a| a.id == "w2").unwrap();
    assert!(!bob.active, "the approved deactivation was not sent");
}
