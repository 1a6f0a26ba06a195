//! Session 58: the follow-ups of session 57's look-alike group handling.
//!
//! - A deprovisioning episode opened before the person was put in a group that
//!   only looks like the scope group ends, as no episode opens for a new leaver
//!   in that group: the sweep enforced it when it fell due, while the reconcile
//!   held the same deprovision for a person to decide.
//! - `safety.distinct_groups` declares a directory group that only looks like a
//!   configured one another group ("Founder's Club" beside "Founders Club"):
//!   its members are reconciled as any unrelated group's, nothing held for it
//!   run after run, a file export carrying it is not refused, and
//!   `check-config --connect` says so. An entry no directory group could be
//!   named, or that is a configured group itself, is refused at load; one that
//!   looks like no configured group is warned about.
//! - Joiners (ZWJ, ZWNJ) are hidden in a userName wherever one is compared or
//!   written: the configuration refused them in group names only where no
//!   script writes them, and took them so in `safety.protected` too.
//! - `check-config --connect` lists an LDAP or SCIM directory's groups too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::config::Config;
use seatwarden::sla::{LedgerChanges, LossReason, NewEntry};
use seatwarden::store::Store;
use wiremock::MockServer;

use crate::review_s57_dirnames::SCIM_TOKEN;
use crate::review_s57_s57review as s57;

/// [`s57::config`] with `distinct` (a TOML array) as `safety.distinct_groups`.
fn config_declaring(dir: &std::path::Path, url: &str, okta: &str, distinct: &str) -> Config {
    s57::config(dir, url, okta);
    let path = dir.join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[safety]"));
    // `[safety]` is the last table written.
    text.push_str(&format!("distinct_groups = {distinct}\n"));
    std::fs::write(&path, text).unwrap();
    Config::load_with_env(&path, Some(Default::default())).unwrap()
}

/// Bob (`00u2`, account `w2`) is only in "Taskade\u{200b} Users" (a zero-width
/// space), a look-alike of the scope group; a reconcile linked him and held his
/// deactivation. Then his episode is opened as a sweep had opened it when he
/// left "Taskade Users", before he was put in the look-alike: detected two hours
/// ago, due one hour ago. The sandbox, the Okta server and the store's directory
/// are returned to keep them alive.
pub(crate) async fn bob_with_an_episode_due() -> (
    Config,
    seatwarden::sandbox::Sandbox,
    MockServer,
    tempfile::TempDir,
) {
    let okta = MockServer::start().await;
    s57::org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = s57::config(dir.path(), sandbox.base_url().as_str(), &okta.uri());
    crate::fixtures::reconcile(&config).await;
    let now = Utc::now();
    let mut store = Store::open(&config.state.path).unwrap();
    store
        .update_ledger(
            &LedgerChanges {
                open: vec![NewEntry {
                    identity_id: "00u2".into(),
                    account_id: Some("w2".into()),
                    user_name: "bob@example.com".into(),
                    reason: LossReason::OutOfScope,
                    detected_at: now - Duration::hours(2),
                    due_at: now - Duration::hours(1),
                }],
                ..LedgerChanges::default()
            },
            now - Duration::hours(2),
        )
        .unwrap();
    (config, sandbox, okta, dir)
}

pub(crate) fn bob_active(sandbox: &seatwarden::sandbox::Sandbox) -> bool {
    let after = sandbox.snapshot();
    after.accounts.iter().find(|a| a.id == "w2").unwrap().active
}

pub(crate) fn bob_episode_open(config: &Config) -> bool {
    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history("00u2", 1).unwrap();
    history.first().is_some_and(|e| e.is_open())
}

/// The daemon's sweep run now against `config`'s directory and workspace
/// (an hour's grace), with the store and client a retry pass after it uses.
pub(crate) async fn sweep_now(
    config: &Config,
) -> (
    seatwarden::sweep::SweepOutcome,
    Arc<Mutex<Store>>,
    seatwarden::workspace::ScimClient,
) {
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let outcome = seatwarden::sweep::sweep(
        config,
        &config.directory(),
        &client,
        &store,
        Utc::now(),
        Duration::hours(1),
    )
    .await
    .unwrap();
    (outcome, store, client)
}

/// The sweep ends Bob's episode instead of deactivating him; a retry pass after
/// it finds nothing to enforce. Before, the sweep deactivated him at once (the
/// episode was due), while a reconcile held the same deactivation.
#[tokio::test]
async fn an_episode_opened_before_a_scope_look_alike_is_not_enforced_by_the_sweep() {
    let (config, sandbox, _okta, _dir) = bob_with_an_episode_due().await;
    let (_, store, client) = sweep_now(&config).await;
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert!(bob_active(&sandbox), "the sweep deactivated Bob");
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
    sandbox.shutdown().await;
}

/// A reconcile, the only observation without the daemon, ends the episode too
/// (and holds the deactivation, as for a new leaver): the retry job, which
/// reads no directory, has nothing of Bob's to enforce.
#[tokio::test]
async fn a_reconcile_ends_an_episode_its_look_alike_hold_would_leave_to_the_retry_job() {
    let (config, sandbox, _okta, _dir) = bob_with_an_episode_due().await;
    let outcome = crate::fixtures::reconcile(&config).await;
    let bob: Vec<_> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.identity_id.as_deref() == Some("00u2"))
        .collect();
    assert!(
        !bob.is_empty()
            && bob
                .iter()
                .all(|a| a.held.as_ref().map(|h| h.rule()) == Some("look_alike_group")),
        "{bob:#?}"
    );
    assert!(!bob_episode_open(&config), "Bob's episode is still open");
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    seatwarden::sweep::enforce(&config, &client, &store, Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    assert!(bob_active(&sandbox), "the retry job deactivated Bob");
    sandbox.shutdown().await;
}

/// Bob's only group, "Taskade\u{200b} Users", is declared another group: he
/// is a leaver like any other, deactivated by the run, with his episode
/// verified; nothing is held as a look-alike. Before, the key was refused
/// (unknown field) and every run held his deactivation until approved.
#[tokio::test]
async fn a_look_alike_declared_distinct_is_reconciled_as_an_unrelated_group() {
    let okta = MockServer::start().await;
    s57::org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_declaring(
        dir.path(),
        sandbox.base_url().as_str(),
        &okta.uri(),
        r#"["Taskade\u200B Users"]"#,
    );
    let outcome = crate::fixtures::reconcile(&config).await;
    let held: Vec<_> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.identity_id.as_deref() == Some("00u2"))
        .filter(|a| a.held.is_some())
        .collect();
    assert!(held.is_empty(), "{held:#?}");
    assert!(!bob_active(&sandbox), "Bob kept access");
    let store = Store::open(&config.state.path).unwrap();
    let episode = store.deprovision_history("00u2", 1).unwrap();
    assert!(
        episode.first().is_some_and(|e| e.verified_at.is_some()),
        "{episode:#?}"
    );
    sandbox.shutdown().await;
}

/// `check-config --connect` says the declared group is settled (a note naming
/// it, the configured group and the key) rather than warn of it; the other
/// look-alike ("Engineering\u{a0}") is still warned of.
#[tokio::test]
async fn check_config_connect_notes_a_look_alike_declared_distinct() {
    let okta = MockServer::start().await;
    s57::org().mount(&okta).await;
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_declaring(
        dir.path(),
        sandbox.base_url().as_str(),
        &okta.uri(),
        r#"["Taskade\u200B Users"]"#,
    );
    let checks = seatwarden::connect::check(&config).await;
    sandbox.shutdown().await;
    let directory = checks.iter().find(|c| c.side == "directory").unwrap();
    assert!(directory.passed(), "{}", directory.line());
    assert_eq!(directory.warnings.len(), 1, "{:#?}", directory.warnings);
    assert!(
        directory.warnings[0].contains("\"Engineering\\u{a0}\""),
        "{:#?}",
        directory.warnings
    );
    assert_eq!(directory.notes.len(), 1, "{:#?}", directory.notes);
    for part in [
        "\"Taskade\\u{200b} Users\"",
        "\"Taskade Users\" (policy.scope_groups)",
        "a zero-width space (U+200B)",
        "safety.distinct_groups",
    ] {
        assert!(
            directory.notes[0].contains(part),
            "{part} not in {:?}",
            directory.notes
        );
    }
}

/// A file export may carry a group declared distinct beside the configured
/// one: read, its member out of scope like anyone in an unrelated group.
/// Before, the export was refused ("is not \"Founders Club\" … differs from it
/// only in the quote '").
#[tokio::test]
async fn a_file_export_with_a_group_declared_distinct_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.json"),
        serde_json::json!({"users": [
            {"id": "p1", "userName": "ada@example.com", "status": "ACTIVE",
             "groups": ["Founders Club"]},
            {"id": "p2", "userName": "bob@example.com", "status": "ACTIVE",
             "groups": ["Founder's Club"]},
        ]})
        .to_string(),
    )
    .unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
         [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken = \"t\"\n\
         [policy]\nscope_groups = [\"Founders Club\"]\n\
         [safety]\ndistinct_groups = [\"Founder's Club\"]\n",
    )
    .unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
    assert!(
        config
            .warnings()
            .iter()
            .all(|w| !w.contains("distinct_groups"))
    );
    let snapshot = config.directory().snapshot().await.unwrap();
    let bob = snapshot.identities.iter().find(|i| i.id == "p2").unwrap();
    assert_eq!(bob.groups, ["Founder's Club"]);
}

/// At load: an entry that is a configured group itself (case aside), or that
/// no directory group could be named, is refused naming the key and the file;
/// one that looks like no configured group is warned about, naming both.
#[test]
fn distinct_groups_entries_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
    let path = dir.path().join("seatwarden.toml");
    let load = |distinct: &str| {
        std::fs::write(
            &path,
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
                 [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken = \"t\"\n\
                 [policy]\nscope_groups = [\"Founders Club\"]\n\
                 [safety]\ndistinct_groups = {distinct}\n"
            ),
        )
        .unwrap();
        Config::load_with_env(&path, Some(Default::default()))
    };
    for (distinct, says) in [
        (
            r#"["Founder's Club", "founders club"]"#,
            "\"founders club\" is \"Founders Club\" (policy.scope_groups) itself",
        ),
        (
            r#"["\u00A0\u200B"]"#,
            "is not a group name a directory could have",
        ),
        (r#"["Founders\nClub"]"#, "a line break"),
    ] {
        let error = load(distinct).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("safety.distinct_groups["), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(says), "{says} not in {error}");
    }
    let config = load(r#"["Founder's Club", "Finance"]"#).unwrap();
    let warnings: Vec<String> = config
        .warnings()
        .into_iter()
        .filter(|w| w.contains("distinct_groups"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    for part in [
        "safety.distinct_groups[1] = \"Finance\"",
        &path.display().to_string(),
        "changes nothing",
    ] {
        assert!(warnings[0].contains(part), "{part} not in {}", warnings[0]);
    }
}

/// A zero-width non-joiner inside a Persian word is taken in a group name (it
/// is how the word is written) but refused in `safety.protected` and an
/// exception's `user_name`, as in any userName: a run holds a create or rename
/// that would write it (`hidden_character`), so a protection so written kept an
/// account seatwarden never makes. Before, both loaded.
#[test]
fn a_joiner_is_refused_in_a_protected_user_name_and_taken_in_a_group_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
    let path = dir.path().join("seatwarden.toml");
    let persian = "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}";
    let load = |safety: &str| {
        std::fs::write(
            &path,
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
                 [workspace]\nurl = \"https://workspace.example/scim/v2\"\ntoken = \"t\"\n\
                 [safety]\n{safety}\n"
            ),
        )
        .unwrap();
        Config::load_with_env(&path, Some(Default::default())).map(|_| ())
    };
    load(&format!("protected_groups = [\"{persian}\"]")).unwrap();
    for (safety, key) in [
        (
            format!("protected = [\"{persian}@example.com\"]"),
            "safety.protected",
        ),
        (
            format!(
                "[[safety.exceptions]]\nuser_name = \"{persian}@example.com\"\n\
                 until = \"2099-01-01\"\nreason = \"audit\""
            ),
            "safety.exceptions[0].user_name",
        ),
    ] {
        let error = load(&safety).unwrap_err().to_string();
        for part in [
            format!("key `{key}`"),
            path.display().to_string(),
            "a zero-width non-joiner (U+200C)".to_owned(),
        ] {
            assert!(error.contains(&part), "{part} not in {error}");
        }
    }
}

/// A SCIM list response of `resources`, announcing `total` results.
pub(crate) fn scim_list(resources: serde_json::Value, total: usize) -> wiremock::ResponseTemplate {
    let count = resources.as_array().map_or(0, Vec::len);
    wiremock::ResponseTemplate::new(200)
        .insert_header("content-type", "application/scim+json")
        .set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "startIndex": 1,
            "itemsPerPage": count,
            "Resources": resources,
        }))
}

/// A SCIM directory provider at `/scim/v2` answering discovery and one user,
/// Ada; the caller mounts its `/Groups`.
pub(crate) async fn scim_directory() -> MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": 100},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": []
        })))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(scim_list(
            serde_json::json!([{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "u1",
                "userName": "ada@example.com",
                "active": true,
            }]),
            1,
        ))
        .mount(&idp)
        .await;
    idp
}

/// `check-config --connect`'s directory line for the SCIM directory `idp`
/// ([`scim_directory`]), beside a sandbox workspace.
pub(crate) async fn checked_scim_directory(idp: &MockServer) -> seatwarden::connect::Check {
    let sandbox = crate::fixtures::sandbox(SCIM_TOKEN, s57::workspace()).await;
    let dir = tempfile::tempdir().unwrap();
    let directory = format!(
        "kind = \"scim\"\nurl = \"{}/scim/v2\"\ntoken = \"s58-idp-token\"\n",
        idp.uri()
    );
    let config = crate::review_s57_dirnames::config_with(
        dir.path(),
        sandbox.base_url().as_str(),
        &directory,
        "",
    );
    let checks = seatwarden::connect::check(&config).await;
    sandbox.shutdown().await;
    checks.into_iter().find(|c| c.side == "directory").unwrap()
}

/// A SCIM directory's groups are listed for `check-config --connect` as Okta's
/// and Entra's are (`GET /Groups?attributes=displayName`, no members), and a
/// look-alike of a configured group is warned of. Before, LDAP and SCIM
/// directories were not listed: the first word of it was a run's hold.
#[tokio::test]
async fn check_config_connect_lists_a_scim_directorys_groups() {
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
    let checked = checked_scim_directory(&idp).await;
    assert!(checked.passed(), "{}", checked.line());
    assert_eq!(checked.warnings.len(), 1, "{:#?}", checked.warnings);
    for part in [
        "\"Taskade\\u{200b} Users\" is not \"Taskade Users\" (policy.scope_groups)",
        "a zero-width space (U+200B)",
    ] {
        assert!(
            checked.warnings[0].contains(part),
            "{part} not in {:?}",
            checked.warnings
        );
    }
    let asked_names_only = idp.received_requests().await.unwrap().iter().any(|r| {
        r.url.path() == "/scim/v2/Groups"
            && r.url
                .query_pairs()
                .any(|(k, v)| k == "attributes" && v == "displayName")
    });
    assert!(asked_names_only, "no GET /Groups?attributes=displayName");
}

/// LDAP: every group's cn under `group_base_dn` matching `group_filter`,
/// asked with `cn` alone (a large group's members are not read for a name).
#[tokio::test]
async fn an_ldap_directorys_group_names_are_listed_with_their_cn_alone() {
    use crate::ldap_ad::{Fake, asked_of, source, start_fake};
    let (port, asked) = start_fake(Fake::default()).await;
    let names = seatwarden::directory::Directory::Ldap(source(port))
        .group_names(&|_| {})
        .await
        .unwrap()
        .expect("LDAP groups are listed")
        .names;
    for name in ["All Staff", "IT Admins"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    let searched = asked_of(&asked, "OU=Groups,DC=corp,DC=example,DC=com");
    assert!(!searched.is_empty());
    assert!(
        searched.iter().all(|attributes| attributes == &["cn"]),
        "{searched:?}"
    );
}
