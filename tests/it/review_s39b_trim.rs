//! Session 39's review of userNames compared trimmed everywhere matching compares
//! them: an approval's re-check of a held create that wants the userName a held
//! rename frees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::approval::{self, Only};
use seatwarden::model::{Account, ActionKind, WorkspaceSnapshot};
use seatwarden::run::{self, Mode, RunOptions};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

/// Bob's account still has "alice@ex.com " (white space kept by the workspace)
/// and is renamed to his new userName; Alice, a new hire, wants alice@ex.com,
/// which matching takes for the name that rename frees. Renames held by
/// `max_renames = 0`, approved together: the rename frees the name for her
/// create. The re-check compared the freed name untrimmed, so it took Bob's
/// account (not yet renamed) for hers and called her create obsolete.
#[tokio::test]
async fn a_held_create_waits_for_the_rename_that_frees_its_user_name_with_white_space() {
    let dir = tempfile::tempdir().unwrap();
    let bob = Account {
        id: "b1".into(),
        user_name: "alice@ex.com ".into(),
        external_id: Some("00u2".into()),
        given_name: Some("Bob".into()),
        family_name: Some("Builder".into()),
        display_name: Some("Bob Builder".into()),
        email: Some("bob.new@ex.com".into()),
        active: true,
        roles: vec!["viewer".into()],
    };
    let sandbox = crate::fixtures::sandbox(
        "t0ken",
        WorkspaceSnapshot {
            accounts: vec![bob],
            groups: Vec::new(),
        },
    )
    .await;
    let person = |id: &str, name: &str, given: &str, family: &str| {
        serde_json::json!({
            "id": id, "userName": name, "email": name, "givenName": given,
            "familyName": family, "displayName": format!("{given} {family}"),
            "status": "ACTIVE", "groups": []
        })
    };
    std::fs::write(
        dir.path().join("directory.json"),
        serde_json::json!({"users": [
            person("00u2", "bob.new@ex.com", "Bob", "Builder"),
            person("00u3", "alice@ex.com", "Alice", "Able"),
        ]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n\n\
             [safety]\nsettle = \"0s\"\nmax_renames = 0\n",
            sandbox.base_url()
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let client = || ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = || Store::open(&config.state.path).unwrap();
    let outcome = run::execute_with_options(
        &config,
        &run::directory_from_config(&config),
        &client(),
        store(),
        Mode::Reconcile,
        RunOptions::default(),
    )
    .await
    .unwrap();
    let create = outcome
        .plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::CreateAccount { .. }))
        .unwrap();
    assert!(create.held.is_some(), "{:#?}", outcome.plan.actions);
    assert!(
        outcome
            .plan
            .actions
            .iter()
            .any(|a| a.kind.renames() && a.held.is_some()),
        "{:#?}",
        outcome.plan.actions
    );

    let approval = approval::approve(
        &config,
        &client(),
        store(),
        outcome.run_id,
        &Only::All,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert!(approval.obsolete.is_empty(), "{:?}", approval.obsolete);
    assert!(approval.refused.is_empty(), "{:?}", approval.refused);
    assert_eq!(approval.applied.failed, 0);
    let accounts = sandbox.snapshot().accounts;
    assert!(
        accounts
            .iter()
            .any(|a| a.id == "b1" && a.user_name == "bob.new@ex.com"),
        "{accounts:#?}"
    );
    assert!(
        accounts
            .iter()
            .any(|a| a.user_name == "alice@ex.com" && a.external_id.as_deref() == Some("00u3")),
        "{accounts:#?}"
    );
    sandbox.shutdown().await;
}

/// A provider that compares userNames without the white space at their ends
/// answers `userName eq "alice@ex.com"` with the account it stored as
/// "alice@ex.com ": the client took that answer for no account (it compared the
/// names untrimmed), so a 409's look-up, a recovery, or `explain` found nothing
/// where matching sees the person's account.
#[tokio::test]
async fn a_user_name_filter_answered_with_white_space_at_an_end_finds_the_account() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1,
            "Resources": [{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "a1",
                "userName": "Alice@ex.com ",
                "active": true,
            }],
        })))
        .mount(&server)
        .await;
    let client = ScimClient::new(seatwarden::workspace::ScimSettings {
        base_url: format!("{}/scim/v2", server.uri()).parse().unwrap(),
        token: "t0ken".to_owned().into(),
        role_attribute: seatwarden::workspace::RoleAttribute::Roles,
        page_size: 100,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 1,
        requests_per_second: 0,
        timeout: std::time::Duration::from_secs(10),
        retry: seatwarden::retry::RetryPolicy::immediate(0),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap();
    let found = client
        .find_account_by_user_name("alice@ex.com")
        .await
        .unwrap();
    assert_eq!(found.map(|a| a.id).as_deref(), Some("a1"));
    let found = client
        .accounts_by_user_name(&["alice@ex.com".to_owned(), "bob@ex.com".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|(name, a)| (name.as_str(), a.id.as_str()))
            .collect::<Vec<_>>(),
        [("alice@ex.com", "a1")]
    );
}
