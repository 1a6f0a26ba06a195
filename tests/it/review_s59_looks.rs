//! Session 59, review of session 58's look-alike work (`safety.distinct_groups`,
//! the episodes of look-alike members, `check-config --connect`'s group
//! listings).
//!
//! - `check-config --connect` named only the first configured group a directory
//!   group looks like: "Taskade Users" configured as the scope group and as a
//!   mapping's group was said to be the scope group's look-alike alone, while a
//!   run holds what both would give. Warnings and notes now name every one.
//! - The warning of a SCIM group listing that ended short carried runs of 30
//!   spaces (a string continued without its `\`).
//! - A `safety.distinct_groups` entry that looks like a protected group
//!   (`safety.protected_groups`) silenced that look-alike without a word: its
//!   members are then not protected, and nothing is held for them. Loading the
//!   configuration now warns, naming the entry, the protected group and the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::config::Config;
use wiremock::MockServer;

use crate::review_s57_dirnames::SCIM_TOKEN;
use crate::review_s57_s57review as s57;
use crate::review_s58_lookalike::{scim_directory, scim_list};

/// A mapping that makes "Taskade Users", the scope group, a mapping's group too.
const EVERYONE: &str = "[[policy.mapping]]\ngroup = \"Taskade Users\"\n\
                        workspace_group = \"Everyone\"\nrole = \"Commenter\"\n";

/// `check-config --connect`'s directory line for the SCIM directory `idp`
/// ([`scim_directory`]) beside a sandbox workspace, configured with
/// `mappings` after the "Engineering" one and `distinct` (a TOML array) as
/// `safety.distinct_groups`.
async fn checked(idp: &MockServer, mappings: &str, distinct: &str) -> seatwarden::connect::Check {
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let directory = format!(
        "kind = \"scim\"\nurl = \"{}/scim/v2\"\ntoken = \"s59-idp-token\"\n",
        idp.uri()
    );
    let config = crate::review_s57_dirnames::config_with(
        dir.path(),
        sandbox.base_url().as_str(),
        &directory,
        mappings,
    );
    let path = dir.path().join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    // `[safety]` is the last table written.
    text.push_str(&format!("distinct_groups = {distinct}\n"));
    std::fs::write(&path, text).unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap_or(config);
    let checks = seatwarden::connect::check(&config).await;
    sandbox.shutdown().await;
    checks.into_iter().find(|c| c.side == "directory").unwrap()
}

/// A SCIM directory listing "Taskade Users", its look-alike "Taskade\u{200b}
/// Users" and "Engineering" in one page.
async fn directory_with_a_look_alike() -> MockServer {
    use wiremock::Mock;
    use wiremock::matchers::{method, path};
    let idp = scim_directory().await;
    let groups = serde_json::json!([
        {"id": "g1", "displayName": "Taskade Users"},
        {"id": "g2", "displayName": "Taskade\u{200b} Users"},
        {"id": "g3", "displayName": "Engineering"},
    ]);
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(scim_list(groups, 3))
        .mount(&idp)
        .await;
    idp
}

/// "Taskade Users" is the scope group and a mapping's group: the warning of
/// its look-alike names both keys, as a run holds what each would give (the
/// deactivation, and the removal from "Everyone"). Before, it named the scope
/// group alone.
#[tokio::test]
async fn check_config_connect_warns_of_every_configured_group_a_look_alike_resembles() {
    let idp = directory_with_a_look_alike().await;
    let checked = checked(&idp, EVERYONE, "[]").await;
    assert!(checked.passed(), "{}", checked.line());
    assert_eq!(checked.warnings.len(), 1, "{:#?}", checked.warnings);
    for part in [
        "\"Taskade\\u{200b} Users\"",
        "policy.scope_groups",
        "policy.mapping[1].group",
        "a zero-width space (U+200B)",
    ] {
        assert!(
            checked.warnings[0].contains(part),
            "{part} not in {:?}",
            checked.warnings
        );
    }
}

/// The same look-alike declared another group: the note names both keys it
/// settles. Before, it named the scope group alone.
#[tokio::test]
async fn check_config_connect_notes_every_configured_group_a_declared_group_resembles() {
    let idp = directory_with_a_look_alike().await;
    let checked = checked(&idp, EVERYONE, r#"["Taskade\u200B Users"]"#).await;
    assert!(checked.passed(), "{}", checked.line());
    assert!(checked.warnings.is_empty(), "{:#?}", checked.warnings);
    assert_eq!(checked.notes.len(), 1, "{:#?}", checked.notes);
    for part in [
        "\"Taskade\\u{200b} Users\"",
        "policy.scope_groups",
        "policy.mapping[1].group",
        "safety.distinct_groups",
    ] {
        assert!(
            checked.notes[0].contains(part),
            "{part} not in {:?}",
            checked.notes
        );
    }
}

/// The warning of a listing that ended short reads as one sentence: no run of
/// spaces from the source's indentation. Before, it held four runs of 30.
#[tokio::test]
async fn the_cut_short_listing_warning_has_no_runs_of_spaces() {
    use wiremock::Mock;
    use wiremock::matchers::{method, path, query_param};
    let idp = scim_directory().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .and(query_param("startIndex", "1"))
        .respond_with(scim_list(
            serde_json::json!([{"id": "g1", "displayName": "Taskade Users"}]),
            4,
        ))
        .with_priority(1)
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(scim_list(serde_json::json!([]), 4))
        .with_priority(2)
        .mount(&idp)
        .await;
    let checked = checked(&idp, "", "[]").await;
    let short: Vec<&String> = checked
        .warnings
        .iter()
        .filter(|w| w.contains("ended short"))
        .collect();
    assert_eq!(short.len(), 1, "{:#?}", checked.warnings);
    assert!(!short[0].contains("  "), "{:?}", short[0]);
    assert!(
        short[0].contains("ended short of the totalResults it announced (1 listed)"),
        "{:?}",
        short[0]
    );
}

/// A `safety.distinct_groups` entry that looks like a protected group is
/// taken (the operator's declaration stands) but warned about at load, naming
/// the entry, the protected group, its key and the file: its members are not
/// protected and nothing is held for them. An entry that looks like a scope
/// group only is not warned about. Before, both loaded without a word.
#[test]
fn a_distinct_entry_like_a_protected_group_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
         [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken = \"t\"\n\
         [policy]\nscope_groups = [\"Founders Club\"]\n\
         [safety]\nprotected_groups = [\"Break Glass\", \"IT Admins\"]\n\
         distinct_groups = [\"Founder's Club\", \"IT\\u00A0Admins\"]\n",
    )
    .unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
    let warnings: Vec<String> = config
        .warnings()
        .into_iter()
        .filter(|w| w.contains("distinct_groups"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    for part in [
        "safety.distinct_groups[1] = \"IT\\u{a0}Admins\"",
        "\"IT Admins\" (safety.protected_groups)",
        "a no-break space (U+00A0)",
        "not protected",
        &path.display().to_string(),
    ] {
        assert!(warnings[0].contains(part), "{part} not in {}", warnings[0]);
    }
}

/// A reconcile run after Bob's approved look-alike deactivation failed
/// ([`crate::review_s58_review3::bob_approved_and_failed`]), written to the
/// store, that holds the same deactivation again for another rule (an
/// incomplete directory read: a reconcile no longer holds an approved
/// deprovision as a look-alike's again), undecided. Returns the run.
pub(crate) fn bob_held_again_by_a_newer_run(config: &Config) -> seatwarden::store::RunId {
    use chrono::Utc;
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::store::{RunKind, RunStatus, Store};
    let mut store = Store::open(&config.state.path).unwrap();
    let at = Utc::now();
    let run = store.begin_run(RunKind::Reconcile, at).unwrap();
    let plan = Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::Deactivate {
                account_id: "w2".into(),
            },
            reason: DriftKind::StaleAccess,
            subject: "bob@example.com".into(),
            identity_id: Some("00u2".into()),
            detail: "out of scope".into(),
            held: Some(HoldReason::IncompleteDirectory),
        }],
        ..Plan::default()
    };
    store.save_plan(run, &plan, at).unwrap();
    store
        .finish_run(run, at, RunStatus::Succeeded, None)
        .unwrap();
    run
}

/// Carol rejects `run`'s held deactivation of Bob a second from now: after
/// the approval of it, so the newest decision about Bob.
pub(crate) fn carol_rejects_bob_in(config: &Config, run: seatwarden::store::RunId) {
    use chrono::{Duration, Utc};
    use seatwarden::store::{Decision, Store};
    Store::open(&config.state.path)
        .unwrap()
        .record_decisions(
            run,
            &[(0, Decision::Rejected, None)],
            "carol",
            Utc::now() + Duration::seconds(1),
        )
        .unwrap();
}

/// Bob's look-alike deactivation was approved and its write failed (its
/// episode open for the retry job); a later run held it for another rule
/// ([`bob_held_again_by_a_newer_run`]) and a person rejected it: the newest
/// decision stands, so the next sweep ends the episode as a look-alike hold's,
/// and neither it nor the retry job deactivates Bob. Before, the older
/// approval kept the episode and the sweep sent the deactivation the newer
/// decision had refused.
#[tokio::test]
async fn a_rejection_after_an_approval_lets_the_sweep_end_a_look_alike_episode() {
    use crate::review_s58_lookalike::{bob_active, bob_episode_open, sweep_now};
    use crate::review_s58_review3::bob_approved_and_failed;
    use chrono::{Duration, Utc};
    let (config, sandbox, _okta, _dir) = bob_approved_and_failed().await;
    let run = bob_held_again_by_a_newer_run(&config);
    assert!(bob_episode_open(&config), "the approved episode is kept");
    carol_rejects_bob_in(&config, run);
    let (_, store, client) = sweep_now(&config).await;
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    let active = bob_active(&sandbox);
    sandbox.shutdown().await;
    assert!(active, "Bob deactivated after the rejection");
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
}
