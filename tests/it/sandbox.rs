//! The in-process SCIM workspace (`seatwarden::sandbox`): driven by our own
//! `ScimClient` and by raw HTTP for wire details, plus a whole reconcile run against
//! it and (ignored) an agreement check with scim2-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use seatwarden::model::{Account, AccountSpec, Attribute, AttributeChange, Role};
use seatwarden::model::{WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions, load_seed};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};
use serde_json::{Value, json};

const TOKEN: &str = "sandbox-test-token";

async fn start(seed: WorkspaceSnapshot, faults: Faults) -> Sandbox {
    start_with(seed, faults, true).await
}

async fn start_with(seed: WorkspaceSnapshot, faults: Faults, or_filters: bool) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            max_results: 1000,
            or_filters,
            faults,
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap()
}

fn client_for(url: &str, token: &str, page_size: u32) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url: url.parse().unwrap(),
        token: token.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size,
        pagination: seatwarden::workspace::Pagination::Auto,
        max_concurrency: 4,
        requests_per_second: 0,
        timeout: Duration::from_secs(30),
        retry: RetryPolicy::immediate(12),
        managed_groups: Vec::new(),
        group_members: seatwarden::workspace::GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap()
}

fn client(sandbox: &Sandbox, page_size: u32) -> ScimClient {
    client_for(sandbox.base_url().as_str(), TOKEN, page_size)
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

fn seed(n: usize) -> WorkspaceSnapshot {
    WorkspaceSnapshot {
        accounts: (0..n).map(account).collect(),
        groups: Vec::new(),
    }
}

fn spec(user_name: &str, external_id: &str, role: Option<Role>) -> AccountSpec {
    AccountSpec {
        user_name: user_name.into(),
        external_id: external_id.into(),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        display_name: Some("Ada Lovelace".into()),
        email: Some(user_name.to_lowercase()),
        role,
    }
}

/// Raw HTTP for wire details.
struct Raw {
    http: reqwest::Client,
    base: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Raw {
    fn new(sandbox: &Sandbox) -> Raw {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Raw {
            http: reqwest::Client::builder()
                .tls_backend_rustls()
                .build()
                .unwrap(),
            base: sandbox.base_url().as_str().trim_end_matches('/').to_owned(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        if_match: Option<&str>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/scim+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None, Some(TOKEN), None)
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body), Some(TOKEN), None)
            .await
    }

    async fn patch(&self, path: &str, ops: Value) -> Answer {
        self.patch_if(path, ops, None).await
    }

    async fn patch_if(&self, path: &str, ops: Value, if_match: Option<&str>) -> Answer {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": ops,
        });
        self.send(
            reqwest::Method::PATCH,
            path,
            Some(body),
            Some(TOKEN),
            if_match,
        )
        .await
    }

    /// `GET /Users?filter=…` (or /Groups), percent-encoded.
    async fn filter(&self, resource: &str, filter: &str) -> Answer {
        let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        self.get(&format!("/{resource}?filter={encoded}")).await
    }
}

fn assert_scim_error(answer: &Answer, status: u16, scim_type: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(
        answer.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    assert_eq!(answer.body["status"], json!(status.to_string()));
    assert_eq!(
        answer.body["scimType"].as_str(),
        scim_type,
        "{}",
        answer.body
    );
    assert!(answer.body["detail"].is_string());
}

fn user_names(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sandbox_requires_a_bearer_token() {
    let sandbox = start(seed(1), Faults::default()).await;
    let raw = Raw::new(&sandbox);
    for token in [None, Some("wrong")] {
        for path in [
            "/Users",
            "/Users/u0000",
            "/Groups",
            "/ServiceProviderConfig",
        ] {
            let answer = raw
                .send(reqwest::Method::GET, path, None, token, None)
                .await;
            assert_scim_error(&answer, 401, None);
        }
    }
    assert_eq!(raw.get("/Users").await.status, 200);
    let wrong = client_for(sandbox.base_url().as_str(), "wrong", 100);
    assert_eq!(wrong.discover().await.unwrap_err().status(), Some(401));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_creates_gets_and_pages_with_correct_totals() {
    let sandbox = start(seed(0), Faults::default()).await;
    let scim = client(&sandbox, 7);
    scim.discover().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        let created = scim
            .create_account(&spec(
                &format!("Person{i:02}@Example.com"),
                &format!("x{i}"),
                Some(Role::Editor),
            ))
            .await
            .unwrap();
        assert_eq!(created.roles, vec!["Editor"]);
        assert!(created.active);
        ids.push(created.id);
    }
    let got = scim.get_account(&ids[3]).await.unwrap().unwrap();
    assert_eq!(got.user_name, "Person03@Example.com");
    assert_eq!(got.email.as_deref(), Some("person03@example.com"));
    assert_eq!(got.given_name.as_deref(), Some("Ada"));
    assert!(scim.get_account("nope").await.unwrap().is_none());

    let raw = Raw::new(&sandbox);
    let created = raw
        .post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "raw@example.com"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("{}/Users/{id}", raw.base)
    );
    assert_eq!(created.headers["etag"].to_str().unwrap(), "W/\"1\"");
    assert_eq!(created.body["meta"]["version"], "W/\"1\"");
    assert_eq!(
        created.headers["content-type"].to_str().unwrap(),
        "application/scim+json"
    );

    // 26 users, pages of 10.
    let mut seen = Vec::new();
    for (start, len) in [(1, 10), (11, 10), (21, 6), (27, 0)] {
        let page = raw
            .get(&format!("/Users?startIndex={start}&count=10"))
            .await;
        assert_eq!(page.status, 200);
        assert_eq!(page.body["totalResults"], 26);
        assert_eq!(page.body["startIndex"], start);
        assert_eq!(page.body["itemsPerPage"], len);
        seen.extend(user_names(&page.body));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 26, "pages neither overlap nor skip");
    let zero = raw.get("/Users?count=0").await;
    assert_eq!(zero.body["totalResults"], 26);
    assert_eq!(zero.body["Resources"], json!([]));
    let all = raw.get("/Users").await;
    assert_eq!(all.body["itemsPerPage"], 26, "default count is maxResults");

    let spc = raw.get("/ServiceProviderConfig").await;
    assert_eq!(spc.body["filter"]["maxResults"], 1000);
    assert_eq!(spc.body["patch"]["supported"], true);
    assert_eq!(spc.body["etag"]["supported"], true);
    assert_eq!(raw.get("/ResourceTypes").await.body["totalResults"], 2);
    let schemas = raw.get("/Schemas").await.body;
    assert_eq!(schemas["totalResults"], 2);
    // What /Schemas says is unique is what a create or rename to a taken name
    // meets with 409 `uniqueness` (userNames, and group names as in Taskade).
    let uniqueness = |schema: &str, attribute: &str| -> String {
        let schema = schemas["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == schema)
            .unwrap();
        let found = schema["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == attribute)
            .unwrap();
        found["uniqueness"].as_str().unwrap().to_owned()
    };
    assert_eq!(uniqueness("User", "userName"), "server");
    assert_eq!(uniqueness("User", "displayName"), "none");
    assert_eq!(uniqueness("Group", "displayName"), "server");
    assert_eq!(
        raw.get("/ResourceTypes/User").await.body["endpoint"],
        "/Users"
    );

    // The client pages through 7 at a time and finds everyone.
    let snapshot = scim.snapshot(&|_| {}).await.unwrap();
    assert_eq!(snapshot.accounts.len(), 26);
    assert_eq!(sandbox.snapshot().accounts.len(), 26);
    let direct = sandbox.snapshot();
    let mut by_client = snapshot.accounts.clone();
    by_client.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(by_client, direct.accounts);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_user_names_are_unique_case_insensitively() {
    let sandbox = start(seed(2), Faults::default()).await;
    let scim = client(&sandbox, 100);
    scim.create_account(&spec("Ada@Example.com", "a", None))
        .await
        .unwrap();
    let err = scim
        .create_account(&spec("ada@EXAMPLE.com", "b", None))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");

    let raw = Raw::new(&sandbox);
    let dup = raw
        .post("/Users", json!({"userName": "USER0@example.com"}))
        .await;
    assert_scim_error(&dup, 409, Some("uniqueness"));
    // Renaming onto a taken name is a conflict too, and changes nothing.
    let rename = raw
        .patch(
            "/Users/u0001",
            json!([{"op": "replace", "path": "userName", "value": "user0@EXAMPLE.com"}]),
        )
        .await;
    assert_scim_error(&rename, 409, Some("uniqueness"));
    let snapshot = sandbox.snapshot();
    let u1 = snapshot.accounts.iter().find(|a| a.id == "u0001").unwrap();
    assert_eq!(u1.user_name, "user1@example.com");
    // A user may change the case of its own name.
    let own = raw
        .patch(
            "/Users/u0001",
            json!([{"op": "replace", "path": "userName", "value": "USER1@example.com"}]),
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_scim_error(
        &raw.post("/Users", json!({"displayName": "x"})).await,
        400,
        Some("invalidValue"),
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_filters_eq_and_and_value_paths() {
    let mut seed = seed(5);
    seed.accounts[2].user_name = r#"odd"name\here@example.com"#.into();
    seed.accounts[3].external_id = Some("e1".into());
    seed.groups = vec![
        WorkspaceGroup {
            id: "g1".into(),
            display_name: "Engineering".into(),
            members: vec!["u0001".into(), "u0002".into()],
        },
        WorkspaceGroup {
            id: "g2".into(),
            display_name: "Design".into(),
            members: vec!["u0002".into()],
        },
    ];
    let sandbox = start(seed, Faults::default()).await;
    let raw = Raw::new(&sandbox);

    let found = raw
        .filter("Users", r#"userName eq "USER4@Example.COM""#)
        .await;
    assert_eq!(found.body["totalResults"], 1);
    assert_eq!(user_names(&found.body), vec!["user4@example.com"]);
    let found = raw.filter("Users", r#"externalId eq "e1""#).await;
    assert_eq!(
        user_names(&found.body),
        vec!["user1@example.com", "user3@example.com"]
    );
    // externalId is case-exact.
    let found = raw.filter("Users", r#"externalId eq "E1""#).await;
    assert_eq!(found.body["totalResults"], 0);
    assert_eq!(found.body["Resources"], json!([]));
    let found = raw
        .filter(
            "Users",
            r#"externalId eq "e1" and userName eq "user3@example.com""#,
        )
        .await;
    assert_eq!(user_names(&found.body), vec!["user3@example.com"]);
    let found = raw.filter("Users", r#"displayName eq "user 4""#).await;
    assert_eq!(user_names(&found.body), vec!["user4@example.com"]);
    let found = raw
        .filter("Users", r#"userName eq "odd\"name\\here@example.com""#)
        .await;
    assert_eq!(
        user_names(&found.body),
        vec![r#"odd"name\here@example.com"#]
    );

    let groups = raw
        .filter("Groups", r#"displayName eq "engineering""#)
        .await;
    assert_eq!(groups.body["totalResults"], 1);
    assert_eq!(groups.body["Resources"][0]["id"], "g1");
    let groups = raw.filter("Groups", r#"members[value eq "u0002"]"#).await;
    assert_eq!(groups.body["totalResults"], 2);
    let groups = raw
        .filter(
            "Groups",
            r#"members[value eq "u0002"] and displayName eq "Design""#,
        )
        .await;
    assert_eq!(groups.body["totalResults"], 1);
    assert_eq!(groups.body["Resources"][0]["id"], "g2");
    let lean = raw.get("/Groups?excludedAttributes=members").await;
    assert!(lean.body["Resources"][0].get("members").is_none());
    assert!(lean.body["Resources"][0].get("displayName").is_some());

    // `or`, with `and` binding tighter; a resource two alternatives select is
    // listed once, in id order.
    let found = raw
        .filter(
            "Users",
            r#"id eq "u0004" or userName eq "USER1@example.com" or id eq "u0001" or id eq "nobody""#,
        )
        .await;
    assert_eq!(found.body["totalResults"], 2);
    assert_eq!(
        user_names(&found.body),
        vec!["user1@example.com", "user4@example.com"]
    );
    let found = raw
        .filter(
            "Users",
            r#"(externalId eq "e1" or externalId eq "e4") and displayName eq "User 3""#,
        )
        .await;
    assert_eq!(user_names(&found.body), vec!["user3@example.com"]);
    // displayName has no index: the whole table is scanned for that alternative.
    let found = raw
        .filter("Users", r#"displayName eq "User 0" or id eq "u0003""#)
        .await;
    assert_eq!(
        user_names(&found.body),
        vec!["user0@example.com", "user3@example.com"]
    );
    let groups = raw
        .filter("Groups", r#"members[value eq "u0001" or value eq "u0002"]"#)
        .await;
    let ids: Vec<&Value> = groups.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["id"])
        .collect();
    assert_eq!(ids, vec!["g1", "g2"]);

    for bad in [
        r#"userName co "user""#,
        r#"userName eq "a" or"#,
        r#"nickName eq "x""#,
        r#"userName eq "unterminated"#,
    ] {
        assert_scim_error(&raw.filter("Users", bad).await, 400, Some("invalidFilter"));
    }

    // Our client's lookups go through the same filters.
    let scim = client(&sandbox, 100);
    let found = scim
        .find_account_by_user_name(r#"ODD"name\here@example.com"#)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "u0002");
    let group = scim.find_group_by_name("Design").await.unwrap().unwrap();
    assert_eq!(group.members, vec!["u0002"]);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_can_refuse_or_like_an_eq_only_provider() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            or_filters: false,
            ..SandboxOptions::default()
        },
        seed(3),
    )
    .await
    .unwrap();
    let raw = Raw::new(&sandbox);
    let refused = raw
        .filter("Users", r#"id eq "u0001" or id eq "u0002""#)
        .await;
    assert_scim_error(&refused, 400, Some("invalidFilter"));
    let found = raw
        .filter(
            "Users",
            r#"id eq "u0001" and userName eq "user1@example.com""#,
        )
        .await;
    assert_eq!(user_names(&found.body), vec!["user1@example.com"]);
    sandbox.shutdown().await;
}

/// `members_hidden`: groups as AWS IAM Identity Center serves them. Every answer
/// shows `"members": []`; the `members` filters AWS documents find the groups;
/// one naming a User that does not exist is 404. The members are kept.
#[tokio::test]
async fn sandbox_can_hide_members_like_aws() {
    let mut seed = seed(3);
    seed.groups = vec![
        WorkspaceGroup {
            id: "g1".into(),
            display_name: "Engineering".into(),
            members: vec!["u0001".into(), "u0002".into()],
        },
        WorkspaceGroup {
            id: "g2".into(),
            display_name: "Design".into(),
            members: vec!["u0002".into()],
        },
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            or_filters: false,
            members_hidden: true,
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap();
    let raw = Raw::new(&sandbox);
    let ids = |list: &Value| -> Vec<String> {
        list["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                assert_eq!(g["members"], json!([]), "{g}");
                g["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let listed = raw.get("/Groups").await;
    assert_eq!(ids(&listed.body), vec!["g1", "g2"]);
    let read = raw.get("/Groups/g1").await;
    assert_eq!(read.body["members"], json!([]));
    let found = raw.filter("Groups", r#"members.value eq "u0002""#).await;
    assert_eq!(ids(&found.body), vec!["g1", "g2"]);
    let found = raw.filter("Groups", r#"members.value eq "u0000""#).await;
    assert_eq!(found.status, 200);
    assert!(ids(&found.body).is_empty());
    let found = raw
        .filter("Groups", r#"id eq "g2" and members eq "u0002""#)
        .await;
    assert_eq!(ids(&found.body), vec!["g2"]);
    let found = raw
        .filter("Groups", r#"id eq "g2" and members eq "u0001""#)
        .await;
    assert!(ids(&found.body).is_empty());
    let missing = raw.filter("Groups", r#"members.value eq "nobody""#).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let patched = raw
        .patch(
            "/Groups/g2",
            json!([{"op": "add", "path": "members", "value": [{"value": "u0000"}]}]),
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.body["members"], json!([]));
    let group = |id: &str| {
        sandbox
            .snapshot()
            .groups
            .into_iter()
            .find(|g| g.id == id)
            .unwrap()
    };
    assert_eq!(group("g2").members, vec!["u0000", "u0002"]);
    assert_eq!(group("g1").members, vec!["u0001", "u0002"]);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_patches_users_and_groups() {
    let mut seed = seed(4);
    seed.groups = vec![WorkspaceGroup {
        id: "g1".into(),
        display_name: "Engineering".into(),
        members: vec!["u0000".into()],
    }];
    let sandbox = start(seed, Faults::default()).await;
    let raw = Raw::new(&sandbox);
    let scim = client(&sandbox, 100);

    // Entra style: "Replace", a string boolean, no path.
    let answer = raw
        .patch(
            "/Users/u0001",
            json!([{"op": "Replace", "value": {"active": "False", "name.givenName": "Grace"}}]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["active"], false);
    assert_eq!(answer.body["name"]["givenName"], "Grace");
    assert_eq!(
        answer.body["name"]["familyName"], "Family",
        "merge, not wipe"
    );
    let answer = raw
        .patch(
            "/Users/u0001",
            json!([{"op": "replace", "path": "active", "value": "True"}]),
        )
        .await;
    assert_eq!(answer.body["active"], true);

    // The client's own writes.
    scim.set_active("u0002", false).await.unwrap();
    scim.set_role("u0002", Role::Maintainer).await.unwrap();
    scim.update_attributes(
        "u0002",
        &[
            AttributeChange {
                attribute: Attribute::Email,
                from: None,
                to: Some("new@example.com".into()),
            },
            AttributeChange {
                attribute: Attribute::DisplayName,
                from: None,
                to: None,
            },
            AttributeChange {
                attribute: Attribute::FamilyName,
                from: None,
                to: Some("Hopper".into()),
            },
        ],
    )
    .await
    .unwrap();
    let after = scim.get_account("u0002").await.unwrap().unwrap();
    assert!(!after.active);
    assert_eq!(after.roles, vec!["Maintainer"]);
    assert_eq!(after.email.as_deref(), Some("new@example.com"));
    assert_eq!(after.display_name, None);
    assert_eq!(after.family_name.as_deref(), Some("Hopper"));

    // add appends to multi-valued attributes; remove with a value filter.
    let answer = raw
        .patch(
            "/Users/u0003",
            json!([
                {"op": "add", "path": "roles", "value": [{"value": "Editor"}]},
                {"op": "add", "path": "emails", "value": [{"value": "home@example.com", "type": "home"}]},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@example.com"},
                {"op": "remove", "path": "roles[value eq \"Viewer\"]"},
                {"op": "remove", "path": "externalId"}
            ]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["roles"], json!([{"value": "Editor"}]));
    assert_eq!(answer.body["emails"].as_array().unwrap().len(), 2);
    assert!(answer.body.get("externalId").is_none());
    let account = &sandbox.snapshot().accounts[3];
    assert_eq!(account.email.as_deref(), Some("w@example.com"));

    // Bad PATCHes change nothing.
    for (ops, scim_type) in [
        (json!([{"op": "remove"}]), "noTarget"),
        (
            json!([{"op": "frobnicate", "path": "active", "value": true}]),
            "invalidSyntax",
        ),
        (
            json!([{"op": "replace", "path": "nickName", "value": "x"}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "active", "value": "maybe"}]),
            "invalidValue",
        ),
        // Read-only attributes exist: changing one is a mutability error
        // (RFC 7644 §3.5.2), not a path the server does not know.
        (
            json!([{"op": "replace", "path": "id", "value": "u9999"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "meta.version", "value": "W/\"1\""}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "active", "value": false},
                   {"op": "remove", "path": "userName"}]),
            "invalidValue",
        ),
    ] {
        assert_scim_error(&raw.patch("/Users/u0000", ops).await, 400, Some(scim_type));
    }
    assert!(sandbox.snapshot().accounts[0].active, "PATCH is atomic");

    // Members: add (duplicates are fine), remove by filter, unknown ids refused.
    scim.add_members("g1", &["u0001".into(), "u0002".into(), "u0000".into()])
        .await
        .unwrap();
    scim.remove_members("g1", &["u0000".into(), "not-a-member".into()])
        .await
        .unwrap();
    let group = scim.get_group("g1").await.unwrap().unwrap();
    assert_eq!(group.members, vec!["u0001", "u0002"]);
    let err = scim
        .add_members("g1", &["u0003".into(), "ghost".into()])
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(
        sandbox.snapshot().groups[0].members,
        vec!["u0001", "u0002"],
        "a refused PATCH adds nobody"
    );
    assert_eq!(
        raw.filter("Groups", r#"members[value eq "u0003"]"#)
            .await
            .body["totalResults"],
        0,
        "nor indexes anybody"
    );
    let answer = raw
        .patch(
            "/Groups/g1",
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u0001"}]},
                   {"op": "replace", "path": "displayName", "value": "Eng"}]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["displayName"], "Eng");
    assert_eq!(answer.body["members"][0]["value"], "u0002");
    let answer = raw
        .patch(
            "/Groups/g1",
            json!([{"op": "replace", "path": "members", "value": [{"value": "u0003"}]}]),
        )
        .await;
    assert_eq!(
        answer.body["members"],
        json!([{"value": "u0003", "$ref": format!("{}/Users/u0003", raw.base), "type": "User"}])
    );
    let created = scim.create_group("Design").await.unwrap();
    assert!(created.members.is_empty());
    assert_scim_error(
        &raw.post("/Groups", json!({"displayName": "design"})).await,
        409,
        Some("uniqueness"),
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_etags_and_if_match() {
    let sandbox = start(seed(2), Faults::default()).await;
    let raw = Raw::new(&sandbox);
    let first = raw.get("/Users/u0000").await;
    let tag = first.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(first.body["meta"]["version"], tag.as_str());

    let op = json!([{"op": "replace", "path": "displayName", "value": "Renamed"}]);
    let ok = raw.patch_if("/Users/u0000", op.clone(), Some(&tag)).await;
    assert_eq!(ok.status, 200);
    let new_tag = ok.headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_tag, tag, "a change bumps the version");
    assert_eq!(ok.body["meta"]["version"], new_tag.as_str());

    let stale = raw.patch_if("/Users/u0000", op.clone(), Some(&tag)).await;
    assert_scim_error(&stale, 412, None);
    // The same change again is no change: the version stays.
    let same = raw.patch_if("/Users/u0000", op, Some(&new_tag)).await;
    assert_eq!(same.headers["etag"].to_str().unwrap(), new_tag);
    let any = raw
        .send(
            reqwest::Method::DELETE,
            "/Users/u0001",
            None,
            Some(TOKEN),
            Some("W/\"99\""),
        )
        .await;
    assert_scim_error(&any, 412, None);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_delete_then_404_and_members_are_cleaned_up() {
    let mut seed = seed(3);
    seed.groups = vec![WorkspaceGroup {
        id: "g1".into(),
        display_name: "Engineering".into(),
        members: vec!["u0000".into(), "u0001".into()],
    }];
    let sandbox = start(seed, Faults::default()).await;
    let scim = client(&sandbox, 100);
    let raw = Raw::new(&sandbox);
    scim.delete_account("u0000").await.unwrap();
    assert!(scim.get_account("u0000").await.unwrap().is_none());
    assert_scim_error(&raw.get("/Users/u0000").await, 404, None);
    let again = raw
        .send(
            reqwest::Method::DELETE,
            "/Users/u0000",
            None,
            Some(TOKEN),
            None,
        )
        .await;
    assert_scim_error(&again, 404, None);
    assert_eq!(sandbox.snapshot().groups[0].members, vec!["u0001"]);
    let gone = raw
        .send(
            reqwest::Method::DELETE,
            "/Groups/g1",
            None,
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(gone.status, 204);
    assert!(scim.get_group("g1").await.unwrap().is_none());
    assert_eq!(
        raw.filter("Groups", r#"members[value eq "u0001"]"#)
            .await
            .body["totalResults"],
        0
    );
    let stats = sandbox.stats();
    assert_eq!(stats.writes, 2);
    assert!(stats.requests >= 7);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_429s_are_retried_by_the_client() {
    let sandbox = start(
        seed(500),
        Faults {
            rate_429: 0.3,
            retry_after_secs: 1,
            seed: 42,
            ..Faults::default()
        },
    )
    .await;
    // RetryPolicy::immediate caps Retry-After at 50 ms, so this stays quick.
    let scim = client(&sandbox, 50);
    scim.discover().await.unwrap();
    let snapshot = scim.snapshot(&|_| {}).await.unwrap();
    assert_eq!(snapshot.accounts.len(), 500);
    let stats = sandbox.stats();
    assert!(stats.faults_429 > 0, "{stats:?}");
    assert_eq!(stats.faults_5xx, 0);
    assert_eq!(stats.resets, 0);
    assert!(
        scim.stats().retries >= stats.faults_429,
        "{:?}",
        scim.stats()
    );

    // Raw: the 429 carries Retry-After and a SCIM error body.
    let raw = Raw::new(&sandbox);
    sandbox.set_faults(Faults {
        rate_429: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    });
    let limited = raw.get("/Users").await;
    assert_scim_error(&limited, 429, None);
    assert_eq!(limited.headers["retry-after"].to_str().unwrap(), "7");
    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        ..Faults::default()
    });
    assert_scim_error(&raw.get("/Users").await, 503, None);
    sandbox.set_faults(Faults::default());
    assert_eq!(raw.get("/Users?count=1").await.status, 200);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_resets_and_5xx_are_retried_by_the_client() {
    let sandbox = start(
        seed(300),
        Faults {
            rate_reset: 0.2,
            rate_5xx: 0.1,
            latency: Duration::from_millis(1),
            seed: 9,
            ..Faults::default()
        },
    )
    .await;
    let scim = client(&sandbox, 20);
    let snapshot = scim.snapshot(&|_| {}).await.unwrap();
    assert_eq!(snapshot.accounts.len(), 300);
    for i in 0..20 {
        scim.set_active(&format!("u{i:04}"), false).await.unwrap();
    }
    let stats = sandbox.stats();
    assert!(stats.resets > 0 && stats.faults_5xx > 0, "{stats:?}");
    assert!(scim.stats().retries >= stats.resets + stats.faults_5xx);
    let inactive = sandbox
        .snapshot()
        .accounts
        .iter()
        .filter(|a| !a.active)
        .count();
    assert_eq!(inactive, 20);

    // A reset really is a connection error for a plain HTTP client.
    sandbox.set_faults(Faults {
        rate_reset: 1.0,
        ..Faults::default()
    });
    let raw = Raw::new(&sandbox);
    let result = raw
        .http
        .get(format!("{}/Users", raw.base))
        .bearer_auth(TOKEN)
        .send()
        .await;
    let failed = match result {
        Err(_) => true,
        Ok(response) => response.text().await.is_err(),
    };
    assert!(failed, "a reset must not look like a complete response");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_seed_file_loads_scim_resources() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.json");
    std::fs::write(
        &path,
        json!({
            "users": [
                {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "a1",
                 "userName": "ada@example.com", "active": "false", "externalId": "p1",
                 "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
                 "roles": [{"value": "Owner", "primary": true}], "name": {"givenName": "Ada"},
                 "meta": {"resourceType": "User"}},
                {"userName": "bob@example.com"}
            ],
            "groups": [{"id": "g1", "displayName": "Engineering", "members": [{"value": "a1"}]}]
        })
        .to_string(),
    )
    .unwrap();
    let seed = load_seed(&path).unwrap();
    assert_eq!(seed.accounts.len(), 2);
    assert_eq!(seed.accounts[0].roles, vec!["Owner"]);
    assert!(!seed.accounts[0].active);
    assert_eq!(seed.accounts[0].given_name.as_deref(), Some("Ada"));
    assert_eq!(seed.accounts[1].id, "seed-user-2");
    let sandbox = start(seed.clone(), Faults::default()).await;
    assert_eq!(sandbox.snapshot(), seed);
    sandbox.shutdown().await;

    std::fs::write(&path, "{\"users\": [{\"id\": \"x\"}]}").unwrap();
    let err = load_seed(&path).unwrap_err().to_string();
    assert!(err.contains("userName is required"), "{err}");
    assert!(load_seed(&dir.path().join("missing.json")).is_err());

    // A file of another shape is refused, naming the file and the key, rather
    // than seeding an empty workspace a rehearsal would plan to fill.
    for (text, needle) in [
        (
            r#"{"Resources": [], "totalResults": 0}"#,
            "\"Resources\" is a SCIM ListResponse",
        ),
        (
            r#"{"users": [], "Groups": [], "people": []}"#,
            "unknown top-level key \"people\"",
        ),
        ("{}", "neither \"users\" nor \"groups\""),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = load_seed(&path).unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.contains(&path.display().to_string()),
            "{text}: {err}"
        );
    }
    std::fs::write(&path, r#"{"Users": []}"#).unwrap();
    assert_eq!(
        load_seed(&path).unwrap(),
        Default::default(),
        "an empty workspace, said so"
    );

    // A seed that contradicts itself is refused at start.
    let mut bad = seed_with_duplicate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Sandbox::start(listener, SandboxOptions::default(), bad.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    bad.accounts.truncate(1);
    bad.groups = vec![WorkspaceGroup {
        id: "g".into(),
        display_name: "G".into(),
        members: vec!["ghost".into()],
    }];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(
        Sandbox::start(listener, SandboxOptions::default(), bad)
            .await
            .is_err()
    );
}

fn seed_with_duplicate() -> WorkspaceSnapshot {
    let mut seed = seed(2);
    seed.accounts[1].user_name = seed.accounts[0].user_name.to_uppercase();
    seed
}

#[tokio::test]
async fn sandbox_reconcile_converges_end_to_end() {
    let stats = reconcile_against(Faults::default(), true).await;
    assert_eq!(stats.faults_429 + stats.faults_5xx + stats.resets, 0);
    assert_eq!(stats.or_filters_refused, 0);
}

/// Verification falls back to reading object by object when the workspace refuses
/// `id eq … or …` filters: its first filter is refused, and it sends no other.
/// Pages of 10 and 10 ms a request make a fresh listing (34 pages) cost far more
/// than the filtered reads, so verification goes by filter and meets the refusal
/// (against a workspace with no latency the choice could go either way).
#[tokio::test]
async fn sandbox_reconcile_converges_without_or_filters() {
    let stats = reconcile_against_with(
        Faults {
            latency: Duration::from_millis(10),
            ..Faults::default()
        },
        false,
        |config| config.workspace.page_size = 10,
    )
    .await;
    assert_eq!(
        stats.or_filters_refused, 1,
        "one `or` filter, refused, then none: {stats:?}"
    );
}

#[tokio::test]
async fn sandbox_reconcile_converges_through_faults() {
    // Retry-After: 0, so the default retry policy the config builds waits only its
    // own backoff.
    let stats = reconcile_against(
        Faults {
            rate_429: 0.1,
            rate_5xx: 0.03,
            rate_reset: 0.03,
            retry_after_secs: 0,
            seed: 5,
            ..Faults::default()
        },
        true,
    )
    .await;
    assert!(stats.faults_429 > 0, "{stats:?}");
}

/// Seeds the sandbox with a synthetic drifted workspace, reconciles it with the
/// whole pipeline, and checks convergence; returns the sandbox's stats.
async fn reconcile_against(faults: Faults, or_filters: bool) -> seatwarden::sandbox::SandboxStats {
    reconcile_against_with(faults, or_filters, |_| {}).await
}

/// [`reconcile_against`] with the configuration changed by `tweak` first.
async fn reconcile_against_with(
    faults: Faults,
    or_filters: bool,
    tweak: impl FnOnce(&mut seatwarden::config::Config),
) -> seatwarden::sandbox::SandboxStats {
    let data = synth::generate(&SynthSpec {
        people: 300,
        groups: 6,
        drift_percent: 10.0,
        seed: 1,
    });
    let sandbox = start_with(data.workspace.clone(), faults, or_filters).await;
    let url = sandbox.base_url();

    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::fixtures::synth_config(dir.path(), &data, url.as_ref(), TOKEN, 8);
    tweak(&mut config);

    let first = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    crate::fixtures::assert_clean_reconcile(&first.report);
    assert!(sandbox.stats().writes > 0);

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

    let after = sandbox.snapshot();
    crate::fixtures::assert_leavers_inactive(&data, &after);
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    stats
}

// ---- Agreement with scim2-server ----

/// Runs the same client operations against a SCIM server and returns what it ends
/// up holding.
async fn scripted(scim: &ScimClient) -> WorkspaceSnapshot {
    scim.discover().await.unwrap();
    let mut ids = BTreeMap::new();
    for (name, role) in [
        ("alice@example.com", Role::Owner),
        ("bob@example.com", Role::Editor),
        ("carol@example.com", Role::Viewer),
        ("dave@example.com", Role::Viewer),
        ("erin@example.com", Role::Commenter),
    ] {
        let created = scim
            .create_account(&spec(name, &format!("ext-{name}"), Some(role)))
            .await
            .unwrap();
        ids.insert(name, created.id);
    }
    let dup = scim
        .create_account(&spec("ALICE@example.com", "other", None))
        .await
        .unwrap_err();
    assert!(dup.is_conflict(), "{dup}");
    let bob = scim
        .find_account_by_user_name("BOB@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.id, ids["bob@example.com"]);
    assert!(
        scim.find_account_by_user_name("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    scim.set_role(&bob.id, Role::Maintainer).await.unwrap();
    scim.set_active(&ids["carol@example.com"], false)
        .await
        .unwrap();
    scim.update_attributes(
        &ids["alice@example.com"],
        &[AttributeChange {
            attribute: Attribute::GivenName,
            from: None,
            to: Some("Alicia".into()),
        }],
    )
    .await
    .unwrap();
    scim.delete_account(&ids["erin@example.com"]).await.unwrap();

    let group = scim.create_group("Engineering").await.unwrap();
    scim.add_members(
        &group.id,
        &[
            ids["alice@example.com"].clone(),
            ids["bob@example.com"].clone(),
            ids["carol@example.com"].clone(),
        ],
    )
    .await
    .unwrap();
    scim.remove_members(&group.id, &[ids["bob@example.com"].clone()])
        .await
        .unwrap();
    let found = scim
        .find_group_by_name("Engineering")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, group.id);
    scim.create_group("Design").await.unwrap();
    // Paging two at a time.
    scim.snapshot(&|_| {}).await.unwrap()
}

/// The snapshot with ids replaced by userNames, sorted.
fn modulo_ids(snapshot: WorkspaceSnapshot) -> WorkspaceSnapshot {
    let names: HashMap<String, String> = snapshot
        .accounts
        .iter()
        .map(|a| (a.id.clone(), a.user_name.clone()))
        .collect();
    let mut accounts: Vec<Account> = snapshot
        .accounts
        .into_iter()
        .map(|a| Account {
            id: String::new(),
            ..a
        })
        .collect();
    accounts.sort_by(|a, b| a.user_name.cmp(&b.user_name));
    let mut groups: Vec<WorkspaceGroup> = snapshot
        .groups
        .into_iter()
        .map(|g| {
            let mut members: Vec<String> = g
                .members
                .iter()
                .map(|m| names.get(m).cloned().unwrap_or_else(|| format!("?{m}")))
                .collect();
            members.sort();
            WorkspaceGroup {
                id: String::new(),
                display_name: g.display_name,
                members,
            }
        })
        .collect();
    groups.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    WorkspaceSnapshot { accounts, groups }
}

#[tokio::test]
#[ignore = "needs scim2-server: SEATWARDEN_SCIM2_SERVER_URL / SEATWARDEN_SCIM2_SERVER_TOKEN"]
async fn interop_sandbox_agrees_with_scim2_server() {
    let url = std::env::var("SEATWARDEN_SCIM2_SERVER_URL")
        .expect("SEATWARDEN_SCIM2_SERVER_URL is not set");
    let token = std::env::var("SEATWARDEN_SCIM2_SERVER_TOKEN")
        .expect("SEATWARDEN_SCIM2_SERVER_TOKEN is not set");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tenant = format!(
        "{}/agree-{}-{nanos}/v2",
        url.trim_end_matches('/'),
        std::process::id()
    );
    let theirs = scripted(&client_for(&tenant, &token, 2)).await;

    let sandbox = start(WorkspaceSnapshot::default(), Faults::default()).await;
    let ours = scripted(&client(&sandbox, 2)).await;
    // The client's listing (in the sandbox's id order) is what the sandbox holds.
    assert_eq!(ours, sandbox.snapshot());

    let (theirs, ours) = (modulo_ids(theirs), modulo_ids(ours));
    assert_eq!(ours.accounts.len(), 4);
    assert_eq!(ours, theirs);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_serves_a_large_workspace() {
    let mut seed = seed(20_000);
    seed.groups = vec![WorkspaceGroup {
        id: "g1".into(),
        display_name: "Everyone".into(),
        members: seed.accounts.iter().map(|a| a.id.clone()).collect(),
    }];
    let sandbox = start(seed, Faults::default()).await;
    let scim = client(&sandbox, 1000);
    scim.discover().await.unwrap();
    let started = std::time::Instant::now();
    let snapshot = scim.snapshot(&|_| {}).await.unwrap();
    eprintln!("listed 20k accounts in {:?}", started.elapsed());
    assert_eq!(snapshot.accounts.len(), 20_000);
    assert_eq!(snapshot.groups[0].members.len(), 20_000);
    let started = std::time::Instant::now();
    for i in 0..200 {
        let found = scim
            .find_account_by_user_name(&format!("USER{}@example.com", i * 97))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, format!("u{:04}", i * 97));
        scim.set_active(&found.id, false).await.unwrap();
    }
    eprintln!("200 lookups + writes in {:?}", started.elapsed());
    assert_eq!(sandbox.stats().writes, 200);
    sandbox.shutdown().await;
}

/// One raw HTTP/1.1 request with the given `Host` and the sandbox's token; the
/// status and the body. Raw, because HTTP clients set Host from the URL.
async fn with_host(sandbox: &Sandbox, host: &str, target: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = sandbox.base_url();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {}{target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n",
        url.path()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn sandbox_answers_only_a_loopback_host() {
    let sandbox = start(seed(1), Faults::default()).await;
    let port = sandbox.base_url().port().unwrap();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        "127.0.0.2".to_owned(),
        format!("[::1]:{port}"),
    ] {
        let (status, body) = with_host(&sandbox, &host, "/Users").await;
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(body["totalResults"], 1, "{host}");
    }
    // A DNS name rebound to 127.0.0.1 by a web page, and look-alikes: refused even
    // with the right token, and nothing of the workspace in the answer.
    for host in [
        format!("rebind.example:{port}"),
        "localhost.example".to_owned(),
        "127.0.0.1.nip.io".to_owned(),
        format!("127.0.0.1:{port}x"),
        "[::2]".to_owned(),
    ] {
        let (status, body) = with_host(&sandbox, &host, "/Users").await;
        assert_eq!(status, 421, "{host}: {body}");
        assert_eq!(
            body["schemas"],
            json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
            "{host}"
        );
        assert!(!body.to_string().contains("user0@example.com"), "{body}");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn sandbox_refuses_deep_nesting_instead_of_overflowing_the_stack() {
    let sandbox = start(seed(1), Faults::default()).await;
    let raw = Raw::new(&sandbox);
    // 33 levels: one past the cap.
    let nested = format!(
        r#"{}userName eq "user0@example.com"{}"#,
        "(".repeat(33),
        ")".repeat(33)
    );
    assert_scim_error(
        &raw.filter("Users", &nested).await,
        400,
        Some("invalidFilter"),
    );
    let ok = format!(
        r#"{}userName eq "user0@example.com"{}"#,
        "(".repeat(32),
        ")".repeat(32)
    );
    assert_eq!(raw.filter("Users", &ok).await.body["totalResults"], 1);
    // Unencoded, so the request line stays under the URI limit: enough levels to
    // overflow a task's stack were the parser to recurse into all of them.
    let (status, body) = with_host(
        &sandbox,
        "127.0.0.1",
        &format!("/Users?filter={}", "(".repeat(40_000)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["scimType"], "invalidFilter", "{body}");
    // A PATCH path's value filter is parsed the same way; bodies may be large.
    let deep_path = format!("emails[{}", "(".repeat(200_000));
    let answer = raw
        .patch("/Users/u0000", json!([{"op": "remove", "path": deep_path}]))
        .await;
    assert_scim_error(&answer, 400, Some("invalidPath"));
    // The server is still there.
    assert_eq!(raw.get("/Users").await.status, 200);
    sandbox.shutdown().await;
}

/// `seatwarden sandbox` without `--token`: the token it prints on stderr, and the
/// child (killed on drop) with its URL.
fn sandbox_command_without_token() -> (KillChild, String, String) {
    use std::io::BufRead;
    let mut child = KillChild(
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args(["sandbox", "--port", "0"])
            .env_remove("SEATWARDEN_SANDBOX_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // Kept open and drained: the sandbox dies writing to a closed stderr.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let words: Vec<&str> = line.split_whitespace().collect();
    let url = words
        .iter()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let token = words
        .windows(3)
        .find(|w| w[0] == "bearer" && w[1] == "token")
        .map(|w| w[2].to_owned())
        .unwrap_or_else(|| panic!("no token in {line:?}"));
    (child, url, token)
}

struct KillChild(std::process::Child);

impl Drop for KillChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sandbox_command_makes_a_random_token_when_none_is_given() {
    let (_first, url, token) = sandbox_command_without_token();
    assert!(token.len() >= 32, "{token}");
    let (_second, _, other) = sandbox_command_without_token();
    assert_ne!(token, other, "each sandbox has its own token");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_backend_rustls()
        .build()
        .unwrap();
    let status = |token: String| {
        let request = http.get(format!("{url}/Users")).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(token).await, 200);
    assert_eq!(status("sandbox-token".to_owned()).await, 401);
    assert_eq!(status(other).await, 401);
}
