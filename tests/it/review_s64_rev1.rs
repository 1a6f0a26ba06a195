//! Session 64, review of the session's merges: a stale `groups` on an active
//! account (an account an admin reactivated, say) fails the workspace read
//! with an error that says so, not only a provider cap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use seatwarden::config::Config;
use seatwarden::model::{Account, WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::run::{self, Mode};
use seatwarden::store::Store;

use crate::fixtures;

fn account(id: &str, user_name: &str, external_id: Option<&str>, active: bool) -> Account {
    Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: external_id.map(str::to_owned),
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active,
        roles: Vec::new(),
    }
}

/// A directory of Ada (00u1) in Engineering, mapped to the workspace group
/// Engineering; no settle window.
fn engineering_config(url: &str, dir: &std::path::Path) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        json!({"users": [{
            "id": "00u1", "userName": "ada@example.com", "email": "ada@example.com",
            "givenName": "Ada", "familyName": "Lovelace", "displayName": "Ada Lovelace",
            "status": "active", "groups": ["Engineering"]
        }]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t0ken\"\nrole_attribute = \"none\"\n\n\
             [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\n\
             role = \"Viewer\"\n\n[safety]\nsettle = \"0s\"\n"
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

/// Ghost's account (ws-2), nobody's, is active again (an admin reactivated
/// it) and its own `groups` still names Engineering, which does not hold it:
/// the provider left `groups` stale while it was deactivated. The workspace
/// read fails, as a capped group fails it, but the error no longer blames a
/// cap alone: it names the group, the account and its userName, the
/// endpoints to compare (`GET /Groups/g-eng`, `GET /Users/ws-2`), and says
/// the account's own `groups` may be stale. Nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_groups_on_an_active_account_is_named_as_a_cause_of_a_short_group() {
    let seed = WorkspaceSnapshot {
        accounts: vec![
            account("ws-1", "ada@example.com", Some("00u1"), true),
            account("ws-2", "ghost@example.com", None, true),
        ],
        groups: vec![WorkspaceGroup {
            id: "g-eng".into(),
            display_name: "Engineering".into(),
            members: vec!["ws-1".into()],
        }],
    };
    let sandbox = fixtures::sandbox("t0ken", seed).await;
    sandbox.name_stale_groups("ws-2", &["g-eng"]);
    let dir = tempfile::tempdir().unwrap();
    let config = engineering_config(sandbox.base_url().as_str(), dir.path());

    let error = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap_err()
    .to_string();
    for told in [
        "reading the workspace: GET /Groups/g-eng: malformed response: workspace group \
         \"Engineering\" shows 1 member",
        "accounts whose own groups name it are not among them",
        "account \"ws-2\" (ghost@example.com)",
        "the accounts' own groups are stale",
        "`GET /Users/ws-2`",
        "`GET /Groups/g-eng`",
        "workspace.group_members = \"by_member_filter\"",
    ] {
        assert!(error.contains(told), "{told:?} not in: {error}");
    }
    assert_eq!(sandbox.stats().writes, 0, "a write was sent");
    sandbox.shutdown().await;
}
