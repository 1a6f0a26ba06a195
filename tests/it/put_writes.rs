//! Writes to a workspace that does not support PATCH (RFC 7644 §3.5.1 PUT
//! instead), and read-modify-writes guarded by `If-Match`: against the sandbox
//! with PATCH switched off and with concurrent writers staged, and against
//! wiremock for the wire details.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::model::{
    Account, Attribute, AttributeChange, Role, WorkspaceGroup, WorkspaceSnapshot,
};
use seatwarden::retry::{RetryPolicy, Transient};
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Sandbox, SandboxOptions};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::{
    GroupMembers, Pagination, RoleAttribute, ScimClient, ScimSettings, WorkspaceError,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "put-test-token";

fn settings(base: &str) -> ScimSettings {
    ScimSettings {
        base_url: base.parse().unwrap(),
        token: TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: Pagination::Auto,
        max_concurrency: 4,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry: RetryPolicy::immediate(3),
        managed_groups: Vec::new(),
        group_members: GroupMembers::Listed,
        ca_pem: None,
    }
}

fn account(i: usize) -> Account {
    Account {
        id: format!("u{i:04}"),
        user_name: format!("user{i}@example.com"),
        external_id: Some(format!("e{i}")),
        given_name: Some(format!("Given{i}")),
        family_name: Some("Family".into()),
        display_name: Some(format!("User {i}")),
        email: Some(format!("user{i}@example.com")),
        active: true,
        roles: vec!["Viewer".into()],
    }
}

/// Three accounts; group g1 holds u0000.
fn seed() -> WorkspaceSnapshot {
    WorkspaceSnapshot {
        accounts: (0..3).map(account).collect(),
        groups: vec![WorkspaceGroup {
            id: "g1".into(),
            display_name: "Engineering".into(),
            members: vec!["u0000".into()],
        }],
    }
}

async fn sandbox(seed: WorkspaceSnapshot, patch_supported: bool) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap();
    sandbox.set_patch_supported(patch_supported);
    sandbox
}

async fn discovered_client(sandbox: &Sandbox) -> ScimClient {
    let client = ScimClient::new(settings(sandbox.base_url().as_str())).unwrap();
    client.discover().await.unwrap();
    client
}

/// `GET {base}{path}` as the sandbox answers it, whole.
async fn read_raw(sandbox: &Sandbox, path: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!(
        "{}{path}",
        sandbox.base_url().as_str().trim_end_matches('/')
    );
    let response = reqwest::Client::builder()
        .tls_backend_rustls()
        .build()
        .unwrap()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

fn members_of(snapshot: &WorkspaceSnapshot, group: &str) -> Vec<String> {
    snapshot
        .groups
        .iter()
        .find(|g| g.id == group)
        .unwrap()
        .members
        .clone()
}

fn account_in<'a>(snapshot: &'a WorkspaceSnapshot, id: &str) -> &'a Account {
    snapshot.accounts.iter().find(|a| a.id == id).unwrap()
}

// ---------------------------------------------------------------- sandbox

/// The sandbox with PATCH switched off announces it and refuses PATCH with 501.
/// A client that never read `/ServiceProviderConfig` (the sweep's, the retry
/// job's) sends PATCH once, takes the 501 as "use PUT", reads the announcement
/// then (so its PUTs carry `If-Match`: a change made meanwhile stays), and
/// sends no further PATCH.
#[tokio::test]
async fn a_patch_answered_501_is_written_by_put_from_then_on() {
    let sandbox = sandbox(seed(), false).await;
    let config = read_raw(&sandbox, "/ServiceProviderConfig").await;
    assert_eq!(config["patch"]["supported"], false);
    assert_eq!(config["etag"]["supported"], true);
    let blind = ScimClient::new(settings(sandbox.base_url().as_str())).unwrap();
    sandbox.change_after_reads(
        "Users",
        "u0001",
        vec![json!([{"op": "replace", "path": "displayName", "value": "Changed elsewhere"}])],
    );
    blind.set_active("u0001", false).await.unwrap();
    let after = sandbox.snapshot();
    let user = account_in(&after, "u0001");
    assert!(!user.active);
    assert_eq!(user.display_name.as_deref(), Some("Changed elsewhere"));
    assert_eq!(sandbox.stats().patches, 1);
    assert_eq!(
        sandbox.stats().puts,
        2,
        "refused once by If-Match, then written"
    );
    blind.set_role("u0001", Role::Editor).await.unwrap();
    blind
        .add_members("g1", &["u0001".to_owned()])
        .await
        .unwrap();
    let after = sandbox.snapshot();
    assert_eq!(account_in(&after, "u0001").roles, ["Editor"]);
    assert_eq!(members_of(&after, "g1"), ["u0000", "u0001"]);
    assert_eq!(sandbox.stats().patches, 1, "no PATCH after the 501");
    sandbox.shutdown().await;
}

/// Every kind of change a run makes goes through PUT when PATCH is off, and the
/// attributes not changed stay as they were.
#[tokio::test]
async fn without_patch_every_change_is_a_put() {
    let sandbox = sandbox(seed(), false).await;
    let client = discovered_client(&sandbox).await;
    client.set_active("u0001", false).await.unwrap();
    client.set_role("u0001", Role::Editor).await.unwrap();
    client
        .update_attributes(
            "u0001",
            &[
                AttributeChange {
                    attribute: Attribute::GivenName,
                    from: Some("Given1".into()),
                    to: Some("Grace".into()),
                },
                AttributeChange {
                    attribute: Attribute::DisplayName,
                    from: Some("User 1".into()),
                    to: None,
                },
                AttributeChange {
                    attribute: Attribute::Email,
                    from: Some("user1@example.com".into()),
                    to: Some("grace@example.com".into()),
                },
            ],
        )
        .await
        .unwrap();
    client
        .add_members("g1", &["u0001".to_owned(), "u0002".to_owned()])
        .await
        .unwrap();
    client
        .remove_members("g1", &["u0000".to_owned()])
        .await
        .unwrap();
    client.add_members("g1", &[]).await.unwrap();

    let after = sandbox.snapshot();
    let user = account_in(&after, "u0001");
    assert!(!user.active);
    assert_eq!(user.roles, ["Editor"]);
    assert_eq!(user.given_name.as_deref(), Some("Grace"));
    assert_eq!(user.family_name.as_deref(), Some("Family"), "kept");
    assert_eq!(user.display_name, None);
    assert_eq!(user.email.as_deref(), Some("grace@example.com"));
    assert_eq!(user.external_id.as_deref(), Some("e1"), "kept");
    assert_eq!(members_of(&after, "g1"), ["u0001", "u0002"]);
    let stats = sandbox.stats();
    assert_eq!(stats.patches, 0);
    assert_eq!(stats.puts, 5);
    sandbox.shutdown().await;
}

/// A whole reconcile against a workspace without PATCH converges, and sends no
/// PATCH.
#[tokio::test]
async fn a_reconcile_without_patch_converges_by_put() {
    let data = synth::generate(&SynthSpec {
        people: 300,
        groups: 6,
        drift_percent: 10.0,
        seed: 1,
    });
    let sandbox = sandbox(data.workspace.clone(), false).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        crate::fixtures::synth_config(dir.path(), &data, sandbox.base_url().as_ref(), TOKEN, 8);

    let first = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    crate::fixtures::assert_clean_reconcile(&first.report);
    let second = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    assert!(
        second.plan.is_empty(),
        "a converged workspace plans nothing, got {:#?}",
        second.plan.actions
    );
    crate::fixtures::assert_leavers_inactive(&data, &sandbox.snapshot());
    let stats = sandbox.stats();
    assert_eq!(stats.patches, 0, "{stats:?}");
    assert!(stats.puts > 0, "{stats:?}");
    sandbox.shutdown().await;
}

/// Someone changes the account between seatwarden's read and its PUT: the PUT
/// carries the read's version, is refused with 412, and is rebuilt from a fresh
/// read, so the other change stays.
#[tokio::test]
async fn a_change_between_read_and_put_is_not_lost() {
    let sandbox = sandbox(seed(), false).await;
    let client = discovered_client(&sandbox).await;
    sandbox.change_after_reads(
        "Users",
        "u0001",
        vec![json!([{"op": "replace", "path": "displayName", "value": "Changed elsewhere"}])],
    );
    client.set_role("u0001", Role::Editor).await.unwrap();
    let after = sandbox.snapshot();
    let user = account_in(&after, "u0001");
    assert_eq!(user.roles, ["Editor"]);
    assert_eq!(user.display_name.as_deref(), Some("Changed elsewhere"));
    assert_eq!(sandbox.stats().puts, 2, "refused once, then written");

    // The same for a group's members: a member added meanwhile stays.
    sandbox.change_after_reads(
        "Groups",
        "g1",
        vec![json!([{"op": "add", "path": "members", "value": [{"value": "u0002"}]}])],
    );
    client
        .add_members("g1", &["u0001".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        members_of(&sandbox.snapshot(), "g1"),
        ["u0000", "u0001", "u0002"]
    );
    assert_eq!(sandbox.stats().puts, 4);
    sandbox.shutdown().await;
}

/// A resource changed again after the second read too: the write fails, not
/// transient, naming the endpoint; nothing of seatwarden's change is written.
#[tokio::test]
async fn a_second_412_fails_and_names_the_endpoint() {
    let sandbox = sandbox(seed(), false).await;
    let client = discovered_client(&sandbox).await;
    sandbox.change_after_reads(
        "Users",
        "u0001",
        vec![
            json!([{"op": "replace", "path": "displayName", "value": "First"}]),
            json!([{"op": "replace", "path": "displayName", "value": "Second"}]),
        ],
    );
    let err = client.set_active("u0001", false).await.unwrap_err();
    assert_eq!(err.status(), Some(412), "{err}");
    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(
        message.starts_with("PUT /Users/u0001: HTTP 412"),
        "{message}"
    );
    assert!(message.contains("twice"), "{message}");
    let after = sandbox.snapshot();
    let user = account_in(&after, "u0001");
    assert!(user.active);
    assert_eq!(user.display_name.as_deref(), Some("Second"));
    assert_eq!(sandbox.stats().puts, 2);
    sandbox.shutdown().await;
}

/// The email update reads the account to keep its other addresses, then
/// PATCHes `emails` whole: an address added in between must survive, so the
/// PATCH carries `If-Match` and is rebuilt after a 412.
#[tokio::test]
async fn an_address_added_during_an_email_update_is_kept() {
    let sandbox = sandbox(seed(), true).await;
    let client = discovered_client(&sandbox).await;
    sandbox.change_after_reads(
        "Users",
        "u0001",
        vec![json!([{
            "op": "add",
            "path": "emails",
            "value": [{"value": "home@example.net", "type": "home"}],
        }])],
    );
    client
        .update_attributes(
            "u0001",
            &[AttributeChange {
                attribute: Attribute::Email,
                from: Some("user1@example.com".into()),
                to: Some("new@example.com".into()),
            }],
        )
        .await
        .unwrap();
    let user = read_raw(&sandbox, "/Users/u0001").await;
    let mut emails: Vec<&str> = user["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    emails.sort_unstable();
    assert_eq!(emails, ["home@example.net", "new@example.com"]);
    let stats = sandbox.stats();
    assert_eq!(stats.patches, 2, "refused once, then written");
    assert_eq!(stats.puts, 0);
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------- wire

async fn mount_config(server: &MockServer, config: Value) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(config))
        .mount(server)
        .await;
}

async fn writes(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() != "GET")
        .collect()
}

fn if_match(request: &Request) -> Option<String> {
    request
        .headers
        .get("if-match")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The PUT is the resource as read with the change applied: attributes
/// seatwarden does not manage (an extension, `x-custom`) untouched, `meta` and
/// the read-only `groups` left out, and the version in `If-Match` (the `ETag`
/// header, as for the User; else `meta.version`, as for the Group). Without `etag.supported` no `If-Match` is sent.
#[tokio::test]
async fn a_put_replaces_the_resource_as_read() {
    let server = MockServer::start().await;
    mount_config(
        &server,
        json!({"patch": {"supported": false}, "etag": {"supported": true}}),
    )
    .await;
    let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "W/\"7\"")
                .set_body_json(json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ext],
                    "id": "u1",
                    "userName": "ada@example.com",
                    "Active": true,
                    "name": {"givenName": "Ada", "familyName": "Lovelace"},
                    "x-custom": [1, 2],
                    ext: {"department": "R&D"},
                    "groups": [{"value": "g1"}],
                    "meta": {"resourceType": "User"},
                })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "g1",
            "displayName": "Engineering",
            "externalId": "okta-g1",
            "members": [
                {"value": "u1", "$ref": "https://x/Users/u1", "display": "Ada"},
                {"value": "u2"},
            ],
            "meta": {"version": "W/\"3\""},
        })))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "x"})))
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&format!("{}/scim/v2", server.uri()))).unwrap();
    client.discover().await.unwrap();
    client.set_active("u1", false).await.unwrap();
    client
        .update_attributes(
            "u1",
            &[AttributeChange {
                attribute: Attribute::FamilyName,
                from: Some("Lovelace".into()),
                to: Some("King".into()),
            }],
        )
        .await
        .unwrap();
    client
        .add_members("g1", &["u3".to_owned(), "u2".to_owned()])
        .await
        .unwrap();
    client
        .remove_members("g1", &["u1".to_owned()])
        .await
        .unwrap();

    let sent = writes(&server).await;
    assert!(sent.iter().all(|r| r.method.as_str() == "PUT"));
    let bodies: Vec<Value> = sent
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        bodies[0],
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ext],
            "id": "u1",
            "userName": "ada@example.com",
            "active": false,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "x-custom": [1, 2],
            ext: {"department": "R&D"},
        })
    );
    assert_eq!(
        bodies[1]["name"],
        json!({"givenName": "Ada", "familyName": "King"})
    );
    assert_eq!(
        bodies[1]["Active"], true,
        "as read: the mock keeps no state"
    );
    assert_eq!(
        bodies[2],
        json!({
            "id": "g1",
            "displayName": "Engineering",
            "externalId": "okta-g1",
            "members": [
                {"value": "u1", "$ref": "https://x/Users/u1", "display": "Ada"},
                {"value": "u2"},
                {"value": "u3"},
            ],
        })
    );
    assert_eq!(bodies[3]["members"], json!([{"value": "u2"}]));
    let tags: Vec<Option<String>> = sent.iter().map(if_match).collect();
    assert_eq!(
        tags,
        [
            Some("W/\"7\"".to_owned()),
            Some("W/\"7\"".to_owned()),
            Some("W/\"3\"".to_owned()),
            Some("W/\"3\"".to_owned()),
        ]
    );

    // No ETag support announced: the same PUT, without If-Match.
    let server = MockServer::start().await;
    mount_config(&server, json!({"patch": {"supported": false}})).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "W/\"7\"")
                .set_body_json(json!({"id": "u1", "userName": "a", "active": true})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&format!("{}/scim/v2", server.uri()))).unwrap();
    client.discover().await.unwrap();
    client.set_role("u1", Role::Owner).await.unwrap();
    let sent = writes(&server).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(if_match(&sent[0]), None);
    assert_eq!(
        serde_json::from_slice::<Value>(&sent[0].body).unwrap(),
        json!({"id": "u1", "userName": "a", "active": true,
               "roles": [{"value": "Owner", "primary": true}]})
    );
}

/// With PATCH supported, ETags announced, a change that needs no read is one
/// PATCH as before: no read, no `If-Match`.
#[tokio::test]
async fn with_patch_a_change_without_a_read_is_a_plain_patch() {
    let server = MockServer::start().await;
    mount_config(
        &server,
        json!({"patch": {"supported": true}, "etag": {"supported": true}}),
    )
    .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&format!("{}/scim/v2", server.uri()))).unwrap();
    client.discover().await.unwrap();
    client.set_active("u1", false).await.unwrap();
    client.add_members("g1", &["u2".to_owned()]).await.unwrap();
    let all = server.received_requests().await.unwrap();
    let methods: Vec<&str> = all.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "PATCH", "PATCH"]);
    assert!(all.iter().all(|r| if_match(r).is_none()));
}

/// A provider that never shows a group's members cannot have a group replaced
/// from a read: refused before anything is sent.
#[tokio::test]
async fn without_patch_groups_with_hidden_members_are_not_replaced() {
    let server = MockServer::start().await;
    mount_config(&server, json!({"patch": {"supported": false}})).await;
    let mut s = settings(&format!("{}/scim/v2", server.uri()));
    s.group_members = GroupMembers::ByMemberFilter;
    let client = ScimClient::new(s).unwrap();
    client.discover().await.unwrap();
    let err = client
        .add_members("g1", &["u2".to_owned()])
        .await
        .unwrap_err();
    assert!(matches!(err, WorkspaceError::NotSent { .. }), "{err}");
    assert!(err.to_string().starts_with("PUT /Groups/g1"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// Changes to one group made side by side (a run's additions and removals in
/// one phase) each read the group and PUT it back whole: taken one after the
/// other, none undoes another and none is refused, however many there are.
#[tokio::test]
async fn side_by_side_changes_to_one_group_all_land() {
    let sandbox = sandbox(seed(), false).await;
    let client = discovered_client(&sandbox).await;
    let (one, two, zero) = (
        ["u0001".to_owned()],
        ["u0002".to_owned()],
        ["u0000".to_owned()],
    );
    let (a, b, c, d) = tokio::join!(
        client.add_members("g1", &one),
        client.add_members("g1", &two),
        client.remove_members("g1", &zero),
        client.set_active("u0001", false),
    );
    for result in [a, b, c, d] {
        result.unwrap();
    }
    let (snapshot, _) = client.snapshot_whole(&|_| {}).await.unwrap();
    let mut members = members_of(&snapshot, "g1");
    members.sort();
    assert_eq!(members, ["u0001", "u0002"]);
    assert!(!account_in(&snapshot, "u0001").active);
}

/// A provider that refuses `If-Match` with the very version it just answered
/// (a strict server and a weak tag): after the 412 the version read again is
/// the same, so nothing changed in between, and the change is written without
/// `If-Match` instead of never.
#[tokio::test]
async fn a_provider_refusing_its_own_tag_still_gets_the_change() {
    let server = MockServer::start().await;
    mount_config(
        &server,
        json!({"patch": {"supported": false}, "etag": {"supported": true}}),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users/u1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "W/\"7\"")
                .set_body_json(json!({"id": "u1", "userName": "ada@example.com", "active": true})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(wiremock::matchers::header_exists("if-match"))
        .respond_with(
            ResponseTemplate::new(412)
                .set_body_json(json!({"status": "412", "detail": "precondition failed"})),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "u1"})))
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&format!("{}/scim/v2", server.uri()))).unwrap();
    client.discover().await.unwrap();
    client.set_active("u1", false).await.unwrap();
    let sent = writes(&server).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(if_match(&sent[0]).as_deref(), Some("W/\"7\""));
    assert_eq!(if_match(&sent[1]), None);
    let body: Value = serde_json::from_slice(&sent[1].body).unwrap();
    assert_eq!(body["active"], false);
}

/// A group read without its members while members seen in it are to be
/// removed: the PUT would drop every member the read left out, so nothing is
/// sent.
#[tokio::test]
async fn a_group_read_without_members_is_not_replaced_to_remove_some() {
    let server = MockServer::start().await;
    mount_config(&server, json!({"patch": {"supported": false}})).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "g1", "displayName": "Engineering"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "g1"})))
        .mount(&server)
        .await;
    let client = ScimClient::new(settings(&format!("{}/scim/v2", server.uri()))).unwrap();
    client.discover().await.unwrap();
    let err = client
        .remove_members("g1", &["u1".to_owned()])
        .await
        .unwrap_err();
    assert!(matches!(err, WorkspaceError::NotSent { .. }), "{err:?}");
    assert!(err.to_string().contains("without its members"), "{err}");
    assert!(writes(&server).await.is_empty());
    // Only gaining members, a group read empty is taken as empty.
    client.add_members("g1", &["u2".to_owned()]).await.unwrap();
    assert_eq!(writes(&server).await.len(), 1);
}
