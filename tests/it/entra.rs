//! The Entra connector against a wiremock Microsoft Graph whose answers follow the
//! documented shapes: the v2.0 token endpoint, `$select`ed users with
//! `accountEnabled`, `@odata.nextLink` paging, `transitiveMembers`, service
//! principal `appRoleAssignedTo`, 429/503 with `Retry-After`, and `users/delta` /
//! `groups/delta` with `@removed`, `members@delta` and `@odata.deltaLink`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seatwarden::directory::{
    DirectoryChanges, DirectoryError, EntraAuth, EntraSettings, EntraSource, EntraUserName, Secret,
};
use seatwarden::http::Limits;
use seatwarden::model::IdentityStatus;
use seatwarden::retry::RetryPolicy;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::okta::{form, verify_assertion, within_a_minute};

const TENANT: &str = "0a1b2c3d-0000-4000-8000-00000000aaaa";
const CLIENT: &str = "11111111-2222-4333-8444-555555555555";
const SECRET: &str = "client~secret~value~never~logged";

pub fn graph_user(id: &str, upn: &str, enabled: bool) -> Value {
    json!({
        "id": id,
        "userPrincipalName": upn,
        "mail": upn,
        "givenName": format!("Given{id}"),
        "surname": "Tester",
        "displayName": format!("Given{id} Tester"),
        "accountEnabled": enabled,
        "department": "Sales",
        "employeeId": null,
        "userType": "Member"
    })
}

pub fn graph_group(id: &str, name: &str) -> Value {
    json!({"id": id, "displayName": name})
}

fn query(req: &Request, name: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One page of a collection: `$skiptoken` is an index here (opaque in Graph).
/// The members of group `group` that are not people, as Graph lists them beside
/// the users when a relation is read without an OData cast: a nested group (its
/// members are listed too, flattened), a device, a service principal, a contact.
fn not_people(group: &str) -> Vec<Value> {
    ["group", "device", "servicePrincipal", "orgContact"]
        .iter()
        .map(|kind| json!({"@odata.type": format!("#microsoft.graph.{kind}"), "id": format!("{kind}-in-{group}")}))
        .collect()
}

pub fn graph_page(req: &Request, base: &str, items: &[Value], size: usize) -> ResponseTemplate {
    let start: usize = query(req, "$skiptoken").map_or(0, |t| t.parse().unwrap());
    let end = (start + size).min(items.len());
    let mut body = json!({
        "@odata.context": format!("{base}/v1.0/$metadata#users"),
        "value": items[start..end].to_vec(),
    });
    if end < items.len() {
        let mut next: url::Url = format!("{base}{}", req.url.path()).parse().unwrap();
        let pairs: Vec<(String, String)> = req
            .url
            .query_pairs()
            .filter(|(k, _)| k != "$skiptoken")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        next.query_pairs_mut()
            .extend_pairs(pairs)
            .append_pair("$skiptoken", &end.to_string());
        body["@odata.nextLink"] = next.to_string().into();
    }
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/json;odata.metadata=minimal")
        .set_body_json(body)
}

/// A tenant: users, groups with (transitive) user members, app assignments.
#[derive(Clone)]
pub struct FakeGraph {
    pub users: Vec<Value>,
    /// Each group with its transitive members.
    pub groups: Vec<(Value, Vec<String>)>,
    /// Group ids whose direct members are fewer than the transitive ones (the
    /// rest came through a nested group); other groups' are the same.
    pub direct: HashMap<String, Vec<String>>,
    pub page_size: usize,
    /// (principalId, principalType)
    pub assignments: Vec<(String, &'static str)>,
    /// Relations list the directory objects that are not people too (nested
    /// groups, devices, service principals, contacts among a group's members;
    /// directory roles and administrative units among a user's memberships), as
    /// Graph does when they are read without an OData cast.
    pub others: bool,
}

impl FakeGraph {
    pub async fn mount(&self, server: &MockServer) {
        let base = server.uri();
        let issued = Arc::new(AtomicUsize::new(0));
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .respond_with(move |_: &Request| {
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                ResponseTemplate::new(200).set_body_json(json!({
                    "token_type": "Bearer",
                    "expires_in": 3599,
                    "ext_expires_in": 3599,
                    "access_token": format!("graph-token-{n}")
                }))
            })
            .mount(server)
            .await;
        let size = self.page_size;
        {
            let users = self.users.clone();
            let b = base.clone();
            Mock::given(method("GET"))
                .and(path("/v1.0/users"))
                .respond_with(move |req: &Request| {
                    let select = query(req, "$select").unwrap_or_default();
                    assert!(select.split(',').any(|f| f == "accountEnabled"), "{select}");
                    let selected: Vec<Value> = match query(req, "$filter") {
                        // id in ('a','b')
                        Some(f) => users
                            .iter()
                            .filter(|u| f.contains(&format!("'{}'", u["id"].as_str().unwrap())))
                            .cloned()
                            .collect(),
                        None => {
                            assert_eq!(query(req, "$top").as_deref(), Some("999"));
                            users.clone()
                        }
                    };
                    graph_page(req, &b, &selected, size)
                })
                .mount(server)
                .await;
        }
        {
            let groups: Vec<Value> = self.groups.iter().map(|(g, _)| g.clone()).collect();
            let b = base.clone();
            Mock::given(method("GET"))
                .and(path("/v1.0/groups"))
                .respond_with(move |req: &Request| graph_page(req, &b, &groups, size))
                .mount(server)
                .await;
        }
        {
            let members: HashMap<String, Vec<Value>> = self
                .groups
                .iter()
                .map(|(g, ids)| {
                    // As Graph lists a group's members without a cast: people,
                    // and other directory objects, which are nobody.
                    let mut users: Vec<Value> = if self.others {
                        not_people(g["id"].as_str().unwrap())
                    } else {
                        Vec::new()
                    };
                    users.extend(
                        ids.iter()
                            .map(|id| json!({"@odata.type": "#microsoft.graph.user", "id": id})),
                    );
                    (g["id"].as_str().unwrap().to_owned(), users)
                })
                .collect();
            let direct: HashMap<String, Vec<Value>> = members
                .iter()
                .map(|(id, users)| {
                    let others = if self.others {
                        not_people(id)
                    } else {
                        Vec::new()
                    };
                    let users = match self.direct.get(id) {
                        Some(ids) => others
                            .into_iter()
                            .chain(ids.iter().map(
                                |id| json!({"@odata.type": "#microsoft.graph.user", "id": id}),
                            ))
                            .collect(),
                        None => users.clone(),
                    };
                    (id.clone(), users)
                })
                .collect();
            let b = base.clone();
            Mock::given(method("GET"))
                .and(path_regex(r"^/v1.0/groups/[^/]+/transitiveMembers$"))
                .respond_with(move |req: &Request| {
                    let id = req.url.path().split('/').nth(3).unwrap();
                    graph_page(req, &b, &members[id], size)
                })
                .mount(server)
                .await;
            let b = base.clone();
            Mock::given(method("GET"))
                .and(path_regex(r"^/v1.0/groups/[^/]+/members$"))
                .respond_with(move |req: &Request| {
                    let id = req.url.path().split('/').nth(3).unwrap();
                    graph_page(req, &b, &direct[id], size)
                })
                .mount(server)
                .await;
        }
        {
            let member_of: HashMap<String, Vec<Value>> = self
                .users
                .iter()
                .map(|u| {
                    let id = u["id"].as_str().unwrap();
                    let mut groups: Vec<Value> = self
                        .groups
                        .iter()
                        .filter(|(_, ids)| ids.iter().any(|m| m == id))
                        .map(|(g, _)| {
                            let mut g = g.clone();
                            g["@odata.type"] = "#microsoft.graph.group".into();
                            g
                        })
                        .collect();
                    // Without a cast, directory roles and administrative units
                    // come too; named like every group, they must give no scope.
                    for (g, _) in self.groups.iter().filter(|_| self.others) {
                        let name = g["displayName"].clone();
                        groups.push(json!({
                            "@odata.type": "#microsoft.graph.directoryRole",
                            "id": format!("role-{}", g["id"].as_str().unwrap()),
                            "displayName": name,
                        }));
                        groups.push(json!({
                            "@odata.type": "#microsoft.graph.administrativeUnit",
                            "id": format!("au-{}", g["id"].as_str().unwrap()),
                            "displayName": g["displayName"].clone(),
                        }));
                    }
                    (id.to_owned(), groups)
                })
                .collect();
            let b = base.clone();
            Mock::given(method("GET"))
                .and(path_regex(r"^/v1.0/users/[^/]+/transitiveMemberOf$"))
                .respond_with(move |req: &Request| {
                    let id = req.url.path().split('/').nth(3).unwrap();
                    graph_page(req, &b, &member_of[id], size)
                })
                .mount(server)
                .await;
        }
        let b = base.clone();
        Mock::given(method("GET"))
            .and(path("/v1.0/servicePrincipals"))
            .and(query_param("$filter", "appId eq 'app-client-id'"))
            .respond_with(move |req: &Request| {
                graph_page(
                    req,
                    &b,
                    &[json!({"id": "sp-object-id", "appId": "app-client-id"})],
                    size,
                )
            })
            .mount(server)
            .await;
        let assignments: Vec<Value> = self
            .assignments
            .iter()
            .enumerate()
            .map(|(i, (principal, kind))| {
                json!({
                    "id": format!("assignment{i}"),
                    "deletedDateTime": null,
                    "appRoleId": "00000000-0000-0000-0000-000000000000",
                    "createdDateTime": "2025-02-19T10:00:00Z",
                    "principalDisplayName": principal,
                    "principalId": principal,
                    "principalType": kind,
                    "resourceDisplayName": "Taskade",
                    "resourceId": "sp-object-id"
                })
            })
            .collect();
        let b = base.clone();
        Mock::given(method("GET"))
            .and(path(
                "/v1.0/servicePrincipals/sp-object-id/appRoleAssignedTo",
            ))
            .respond_with(move |req: &Request| graph_page(req, &b, &assignments, size))
            .mount(server)
            .await;
    }
}

pub fn small_tenant() -> FakeGraph {
    let users = vec![
        graph_user("a1", "ada@contoso.com", true),
        graph_user("a2", "bob@contoso.com", true),
        graph_user("a3", "cy@contoso.com", false),
        graph_user("a4", "dee@contoso.com", true),
    ];
    let groups = vec![
        (graph_group("g1", "Taskade Users"), vec!["a1", "a2", "a3"]),
        // A nested group's members are flattened into transitiveMembers.
        (graph_group("g2", "Taskade Editors"), vec!["a1", "a4"]),
        (
            graph_group("g3", "All Company"),
            vec!["a1", "a2", "a3", "a4"],
        ),
    ]
    .into_iter()
    .map(|(g, ids)| (g, ids.into_iter().map(str::to_owned).collect()))
    .collect();
    FakeGraph {
        users,
        groups,
        direct: HashMap::new(),
        page_size: 2,
        assignments: Vec::new(),
        others: false,
    }
}

pub fn settings(server: &MockServer, auth: EntraAuth) -> EntraSettings {
    EntraSettings {
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        auth,
        app_id: None,
        graph_url: Some(server.uri().parse().unwrap()),
        login_url: Some(server.uri().parse().unwrap()),
        scope_groups: vec!["Taskade Users".into()],
        other_groups: vec!["Taskade Editors".into()],
        distinct_groups: Vec::new(),
        required_groups: Vec::new(),
        max_concurrency: 4,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry: RetryPolicy::immediate(3),
        include_guests: true,
        user_name: Default::default(),
        ca_file: None,
    }
}

pub(crate) fn secret() -> EntraAuth {
    EntraAuth::ClientSecret(Secret::Inline(SECRET.to_owned().into()))
}

type Row = (String, IdentityStatus, Vec<String>);

fn rows(snapshot: &seatwarden::model::DirectorySnapshot) -> Vec<Row> {
    snapshot
        .identities
        .iter()
        .map(|i| (i.id.clone(), i.status, i.groups.clone()))
        .collect()
}

fn expected_small_tenant() -> Vec<Row> {
    let g = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            "a1".into(),
            IdentityStatus::Active,
            g(&["Taskade Editors", "Taskade Users"]),
        ),
        ("a2".into(), IdentityStatus::Active, g(&["Taskade Users"])),
        (
            "a3".into(),
            IdentityStatus::Suspended,
            g(&["Taskade Users"]),
        ),
        ("a4".into(), IdentityStatus::Active, g(&["Taskade Editors"])),
    ]
}

#[tokio::test]
async fn snapshot_selects_account_enabled_pages_and_reads_transitive_members() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let source = EntraSource::new(settings(&server, secret()));
    let snapshot = source.snapshot().await.unwrap();
    assert!(snapshot.complete);
    assert_eq!(rows(&snapshot), expected_small_tenant());
    let ada = &snapshot.identities[0];
    assert_eq!(ada.user_name, "ada@contoso.com");
    assert_eq!(ada.email.as_deref(), Some("ada@contoso.com"));
    assert_eq!(ada.family_name.as_deref(), Some("Tester"));
    assert_eq!(ada.department.as_deref(), Some("Sales"));

    let requests = server.received_requests().await.unwrap();
    let token_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect();
    assert_eq!(token_requests.len(), 1, "the token is cached");
    let f = form(token_requests[0]);
    assert_eq!(f["grant_type"], "client_credentials");
    assert_eq!(f["client_id"], CLIENT);
    assert_eq!(f["client_secret"], SECRET);
    assert_eq!(f["scope"], format!("{}/.default", server.uri()));
    for r in requests.iter().filter(|r| r.method.as_str() == "GET") {
        assert_eq!(
            r.headers.get("authorization").unwrap(),
            "Bearer graph-token-1"
        );
    }
    // "All Company" is not named by the policy: not expanded.
    assert!(
        !requests
            .iter()
            .any(|r| r.url.path().contains("/groups/g3/"))
    );
    // The second page of users came from @odata.nextLink.
    assert!(
        requests.iter().any(
            |r| r.url.path() == "/v1.0/users" && query(r, "$skiptoken").as_deref() == Some("2")
        )
    );
}

/// `user_name_attribute = "mail"`: where UPNs are not email addresses, the
/// workspace userName is `mail`; a user without a mailbox (a sync service account,
/// a break-glass admin) keeps the UPN: failing the read for one account would stop
/// every deprovisioning.
#[tokio::test]
async fn the_user_name_can_be_the_mail_instead_of_the_upn() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    for user in &mut tenant.users {
        let upn = user["userPrincipalName"]
            .as_str()
            .unwrap()
            .replace("@contoso.com", "@contoso.onmicrosoft.com");
        user["userPrincipalName"] = json!(upn);
    }
    tenant.clone().mount(&server).await;
    let by_mail = EntraSettings {
        user_name: EntraUserName::Mail,
        ..settings(&server, secret())
    };
    let snapshot = EntraSource::new(by_mail.clone()).snapshot().await.unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
    assert_eq!(snapshot.identities[0].user_name, "ada@contoso.com");
    let by_upn = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(
        by_upn.identities[0].user_name,
        "ada@contoso.onmicrosoft.com"
    );

    let server = MockServer::start().await;
    tenant.users[1]["mail"] = Value::Null;
    tenant.mount(&server).await;
    let snapshot = EntraSource::new(EntraSettings {
        graph_url: Some(server.uri().parse().unwrap()),
        login_url: Some(server.uri().parse().unwrap()),
        ..by_mail
    })
    .snapshot()
    .await
    .unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
    let names: Vec<&str> = snapshot
        .identities
        .iter()
        .map(|i| i.user_name.as_str())
        .collect();
    assert_eq!(
        names[..2],
        ["ada@contoso.com", "bob@contoso.onmicrosoft.com"]
    );
    assert_eq!(snapshot.identities[1].email, None);
}

#[tokio::test]
async fn app_scope_expands_group_assignments() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.assignments = vec![
        ("a2".into(), "User"),
        ("g2".into(), "Group"),
        ("sp-other".into(), "ServicePrincipal"),
    ];
    tenant.mount(&server).await;
    let mut s = settings(&server, secret());
    s.app_id = Some("app-client-id".into());
    let snapshot = EntraSource::new(s).snapshot().await.unwrap();
    let ids: Vec<&str> = snapshot.identities.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["a1", "a2", "a4"]);
}

/// An assigned group that `/groups` does not list would take its members out of
/// scope as if they had left: the snapshot fails instead.
#[tokio::test]
async fn an_assigned_group_missing_from_the_group_listing_fails_the_snapshot() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.assignments = vec![("g2".into(), "Group"), ("g7".into(), "Group")];
    tenant.mount(&server).await;
    let mut s = settings(&server, secret());
    s.app_id = Some("app-client-id".into());
    let error = EntraSource::new(s)
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"g7\""), "{error}");
    assert!(error.contains("directory.app_id"), "{error}");
    assert!(!error.contains("\"g2\""), "{error}");
}

/// An app assignment of a group covers its direct members only: Entra does not
/// cascade it to nested groups. dee is in "Taskade Editors" (g2) only through a
/// nested group, so with g2 assigned she is not in the app's scope; the group's
/// name still reaches its nested members for the policy.
#[tokio::test]
async fn app_scope_counts_direct_members_of_assigned_groups_only() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.assignments = vec![("a2".into(), "User"), ("g2".into(), "Group")];
    tenant.direct.insert("g2".into(), vec!["a1".into()]);
    tenant.mount(&server).await;
    let mut s = settings(&server, secret());
    s.app_id = Some("app-client-id".into());
    let snapshot = EntraSource::new(s).snapshot().await.unwrap();
    let ids: Vec<&str> = snapshot.identities.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["a1", "a2"],
        "dee is assigned through nesting only"
    );

    // Without app scope, dee still carries g2's name through the nesting.
    let mut s = settings(&server, secret());
    s.other_groups = vec!["Taskade Editors".into()];
    let snapshot = EntraSource::new(s).snapshot().await.unwrap();
    let dee = snapshot.identities.iter().find(|i| i.id == "a4").unwrap();
    assert_eq!(dee.groups, ["Taskade Editors"]);
}

#[tokio::test]
async fn throttling_429_and_503_are_retried_after_retry_after() {
    let server = MockServer::start().await;
    let throttled = json!({"error": {
        "code": "TooManyRequests",
        "message": "Too many requests.",
        "innerError": {"date": "2026-11-30T01:00:00", "request-id": "r1", "client-request-id": "c1"}
    }});
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .set_body_json(throttled.clone()),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "0")
                .set_body_json(json!({"error": {"code": "serviceNotAvailable", "message": "Service unavailable"}})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    small_tenant().mount(&server).await;
    let source = EntraSource::new(settings(&server, secret()));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
    assert_eq!(source.stats().retries, 2);
}

#[tokio::test]
async fn a_5xx_mid_snapshot_is_an_error_never_a_partial_snapshot() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"error": {"code": "generalException", "message": "General exception while processing"}}),
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    small_tenant().mount(&server).await;
    let error = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(error.is_transient());
    assert_eq!(error.status(), Some(500));
    assert!(error.to_string().contains("generalException"), "{error}");
}

#[tokio::test]
async fn a_rejected_secret_is_a_permanent_error_without_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": format!("AADSTS7000215: Invalid client secret provided: {SECRET}"),
            "error_codes": [7000215],
            "timestamp": "2026-11-30 01:00:00Z",
            "trace_id": "t",
            "correlation_id": "c"
        })))
        .mount(&server)
        .await;
    let error = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("invalid_client") && text.contains("oauth2/v2.0/token"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
}

/// A token endpoint that keeps answering 503 is asked once per attempt of the
/// request that needs the token, not once per attempt of a retry loop nested in
/// each of those (attempts², 16 here).
#[tokio::test]
async fn a_token_endpoint_answering_503_is_retried_at_one_level() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({
            "error": "temporarily_unavailable",
            "error_description": "AADSTS50196: The server terminated an operation because \
                                  it encountered a client request loop.",
            "error_codes": [50196],
            "timestamp": "2026-11-30 01:00:00Z",
            "trace_id": "t",
            "correlation_id": "c"
        })))
        .mount(&server)
        .await;
    let settings = settings(&server, secret());
    let attempts = settings.retry.max_retries + 1;
    let error = EntraSource::new(settings).snapshot().await.unwrap_err();
    assert_eq!(error.status(), Some(503), "{error}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("oauth2/v2.0/token"), "{error}");
    let tokens = server.received_requests().await.unwrap().len();
    // The user list and the group list start at once, each with its own attempts.
    assert!(
        (attempts..=2 * attempts).contains(&tokens),
        "{tokens} token requests for {attempts} attempts"
    );
}

#[tokio::test]
async fn an_expired_token_mid_snapshot_is_refreshed_once() {
    let server = MockServer::start().await;
    // graph-token-1 stops working after two requests.
    let used = Arc::new(AtomicUsize::new(0));
    {
        let used = used.clone();
        Mock::given(method("GET"))
            .and(wiremock::matchers::header(
                "authorization",
                "Bearer graph-token-1",
            ))
            .and(move |_: &Request| used.fetch_add(1, Ordering::SeqCst) >= 2)
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
                "code": "InvalidAuthenticationToken",
                "message": "Lifetime validation failed, the token is expired."
            }})))
            .with_priority(1)
            .mount(&server)
            .await;
    }
    small_tenant().mount(&server).await;
    let source = EntraSource::new(settings(&server, secret()));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
    let requests = server.received_requests().await.unwrap();
    let tokens = requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(tokens, 2);
}

fn key_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys"))
}

#[tokio::test]
async fn certificate_credentials_send_a_signed_assertion_with_the_thumbprint() {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(None));
    {
        let seen = seen.clone();
        Mock::given(method("POST"))
            .and(path(format!("/{TENANT}/oauth2/v2.0/token")))
            .respond_with(move |req: &Request| {
                *seen.lock().unwrap() = Some(form(req));
                ResponseTemplate::new(200).set_body_json(json!({
                    "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                    "access_token": "graph-token-1"
                }))
            })
            .with_priority(1)
            .mount(&server)
            .await;
    }
    small_tenant().mount(&server).await;
    let auth = EntraAuth::Certificate {
        certificate: Secret::File {
            key: "directory.certificate_file",
            path: key_dir().join("test-cert.pem"),
        },
        private_key: Secret::File {
            key: "directory.private_key_file",
            path: key_dir().join("test-rsa-pkcs8.pem"),
        },
    };
    EntraSource::new(settings(&server, auth))
        .snapshot()
        .await
        .unwrap();
    let f = seen.lock().unwrap().clone().unwrap();
    assert!(!f.contains_key("client_secret"));
    assert_eq!(f["client_id"], CLIENT);
    assert_eq!(f["grant_type"], "client_credentials");
    assert_eq!(
        f["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let (header, claims) = verify_assertion(&f["client_assertion"]);
    let x5t = std::fs::read_to_string(key_dir().join("test-cert.x5t")).unwrap();
    assert_eq!(header["x5t"], x5t.trim());
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], CLIENT);
    assert_eq!(claims["sub"], CLIENT);
    assert_eq!(
        claims["aud"],
        format!("{}/{TENANT}/oauth2/v2.0/token", server.uri())
    );
}

/// A delta round: pages of `value`, the last with `@odata.deltaLink`.
pub(crate) async fn mount_delta(
    server: &MockServer,
    resource: &str,
    token: &str,
    pages: Vec<Vec<Value>>,
) {
    let base = server.uri();
    let n = pages.len();
    for (i, items) in pages.into_iter().enumerate() {
        let mut body = json!({
            "@odata.context": format!("{base}/v1.0/$metadata#{resource}"),
            "value": items,
        });
        if i + 1 < n {
            body["@odata.nextLink"] = format!(
                "{base}/v1.0/{resource}/delta?$skiptoken={token}-page{}",
                i + 1
            )
            .into();
        } else {
            body["@odata.deltaLink"] =
                format!("{base}/v1.0/{resource}/delta?$deltatoken={token}-next").into();
        }
        let matcher = if i == 0 {
            query_param("$deltatoken", token.to_owned())
        } else {
            query_param("$skiptoken", format!("{token}-page{i}"))
        };
        // Without `return=minimal` Graph repeats every unchanged property with
        // its old value, and a rename cannot be seen.
        Mock::given(method("GET"))
            .and(path(format!("/v1.0/{resource}/delta")))
            .and(matcher)
            .and(header("prefer", "return=minimal"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(server)
            .await;
    }
}

/// What `source` reports since the delta links `U1` and `G1` mounted on `server`.
async fn since_u1_g1(
    source: &EntraSource,
    server: &MockServer,
) -> Result<DirectoryChanges, DirectoryError> {
    source
        .changes_since(Some(&cursor(server, "U1", "G1")))
        .await
}

/// A cursor as a full read with `settings` leaves it, without the ids of the
/// groups of interest (every group's change counts): the names configured and
/// no group with hidden membership among them.
pub(crate) fn cursor(server: &MockServer, users: &str, groups: &str) -> String {
    let base = server.uri();
    format!(
        "entra-v1:{}",
        json!({
            "users": format!("{base}/v1.0/users/delta?$deltatoken={users}"),
            "groups": format!("{base}/v1.0/groups/delta?$deltatoken={groups}"),
            "names": ["taskade editors", "taskade users"],
            "hidden": [],
        })
    )
}

/// Relations are read without an OData cast (which Graph takes for an advanced
/// query): what is not a person among a group's members, and what is not a group
/// among a user's memberships (a directory role named like a mapped group), is
/// left out, in a snapshot and in a delta.
#[tokio::test]
async fn directory_objects_that_are_not_people_or_groups_give_no_scope() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.others = true;
    tenant.mount(&server).await;
    let source = EntraSource::new(settings(&server, secret()));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| !r.url.path().contains("microsoft.graph.")),
        "an OData cast was sent"
    );

    mount_delta(
        &server,
        "users",
        "U1",
        vec![vec![
            json!({"@odata.type": "#microsoft.graph.user", "id": "a2", "accountEnabled": true}),
        ]],
    )
    .await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    let changes = since_u1_g1(&source, &server).await.unwrap();
    let DirectoryChanges::Delta { changed, .. } = changes else {
        panic!("expected a delta, got {changes:?}");
    };
    let changed: Vec<Row> = changed
        .iter()
        .map(|i| (i.id.clone(), i.status, i.groups.clone()))
        .collect();
    assert_eq!(
        changed,
        vec![(
            "a2".into(),
            IdentityStatus::Active,
            vec!["Taskade Users".into()]
        )]
    );
}

#[tokio::test]
async fn delta_reports_removals_and_merges_a_group_split_over_pages() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    // Now: a2 disabled; a4 joined "Taskade Users".
    tenant.users[1]["accountEnabled"] = false.into();
    tenant.groups[0].1.push("a4".into());
    tenant.mount(&server).await;
    mount_delta(
        &server,
        "users",
        "U1",
        vec![vec![
            json!({"@odata.type": "#microsoft.graph.user", "id": "a2", "accountEnabled": false}),
            json!({"@odata.type": "#microsoft.graph.user", "id": "gone1", "@removed": {"reason": "deleted"}}),
            json!({"@odata.type": "#microsoft.graph.user", "id": "gone2", "@removed": {"reason": "changed"}}),
        ]],
    )
    .await;
    // "Taskade Users" appears on two pages with different member slices.
    mount_delta(
        &server,
        "groups",
        "G1",
        vec![
            vec![json!({
                "@odata.type": "#microsoft.graph.group",
                "id": "g1",
                "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "a4"}]
            })],
            vec![json!({
                "@odata.type": "#microsoft.graph.group",
                "id": "g1",
                "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "gone1", "@removed": {"reason": "deleted"}}
                ]
            })],
        ],
    )
    .await;
    let source = EntraSource::new(settings(&server, secret()));
    let changes = since_u1_g1(&source, &server).await.unwrap();
    let DirectoryChanges::Delta {
        changed,
        removed,
        cursor: next,
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    assert_eq!(removed, vec!["gone1".to_owned(), "gone2".to_owned()]);
    let changed: Vec<Row> = changed
        .iter()
        .map(|i| (i.id.clone(), i.status, i.groups.clone()))
        .collect();
    assert_eq!(
        changed,
        vec![
            (
                "a2".into(),
                IdentityStatus::Suspended,
                vec!["Taskade Users".into()]
            ),
            (
                "a4".into(),
                IdentityStatus::Active,
                vec!["Taskade Editors".into(), "Taskade Users".into()]
            ),
        ]
    );
    assert!(
        next.contains("U1-next") && next.contains("G1-next"),
        "{next}"
    );
    // token + 3 delta pages + 1 user lookup + transitiveMemberOf for a2 (1 page)
    // and a4 (3 groups, pages of 2 here): a handful, not a snapshot.
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests.len(),
        8,
        "{:#?}",
        requests
            .iter()
            .map(|r| r.url.to_string())
            .collect::<Vec<_>>()
    );
}

/// `groups/delta` covers every group in the tenant: devices joining Intune's
/// dynamic groups change nobody's groups and cost no whole read; a nested group
/// joining one does.
#[tokio::test]
async fn delta_ignores_device_members_but_not_nested_groups() {
    let member_change = |members: Value| {
        vec![vec![json!({
            "@odata.type": "#microsoft.graph.group",
            "id": "g3",
            "members@delta": members,
        })]]
    };
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    mount_delta(
        &server,
        "groups",
        "G1",
        member_change(json!([
            {"@odata.type": "#microsoft.graph.device", "id": "d1"},
            {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "sp1", "@removed": {"reason": "deleted"}},
            {"@odata.type": "#microsoft.graph.orgContact", "id": "c1"},
            {"@odata.type": "#microsoft.graph.user", "id": "a4"},
        ])),
    )
    .await;
    let changes = since_u1_g1(&EntraSource::new(settings(&server, secret())), &server)
        .await
        .unwrap();
    let DirectoryChanges::Delta {
        changed, removed, ..
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    assert!(removed.is_empty(), "{removed:?}");
    let ids: Vec<&str> = changed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a4"]);

    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    mount_delta(
        &server,
        "groups",
        "G1",
        member_change(json!([{"@odata.type": "#microsoft.graph.group", "id": "g2"}])),
    )
    .await;
    let changes = since_u1_g1(&EntraSource::new(settings(&server, secret())), &server)
        .await
        .unwrap();
    assert!(
        matches!(changes, DirectoryChanges::Full { .. }),
        "{changes:?}"
    );

    // Renamed while a device or a person joined: still a rename, which changes
    // the group names of members the delta does not list.
    for joined in ["#microsoft.graph.device", "#microsoft.graph.user"] {
        let server = MockServer::start().await;
        small_tenant().mount(&server).await;
        mount_delta(&server, "users", "U1", vec![vec![]]).await;
        mount_delta(
            &server,
            "groups",
            "G1",
            vec![vec![json!({
                "@odata.type": "#microsoft.graph.group",
                "id": "g1",
                "displayName": "Taskade Members",
                "members@delta": [{"@odata.type": joined, "id": "a4"}],
            })]],
        )
        .await;
        let changes = since_u1_g1(&EntraSource::new(settings(&server, secret())), &server)
            .await
            .unwrap();
        assert!(
            matches!(changes, DirectoryChanges::Full { .. }),
            "{joined}: {changes:?}"
        );
    }
}

/// Groups are created, renamed and deleted all day in a tenant with Microsoft 365
/// groups and Teams: only those whose id (at the last full read) or new name is
/// one the configuration uses read the whole directory again.
#[tokio::test]
async fn only_groups_of_interest_that_change_read_the_whole_directory() {
    let base_cursor = |server: &MockServer, names: &[&str]| {
        let base = server.uri();
        format!(
            "entra-v1:{}",
            json!({
                "users": format!("{base}/v1.0/users/delta?$deltatoken=U1"),
                "groups": format!("{base}/v1.0/groups/delta?$deltatoken=G1"),
                "interest": ["g1", "g2"],
                "names": names,
                "hidden": [],
            })
        )
    };
    // As `settings` configures them, folded and sorted.
    let configured = ["taskade editors", "taskade users"];
    let cases = [
        (
            "a new team",
            json!({"id": "g9", "displayName": "Marketing Offsite"}),
            false,
        ),
        (
            "another group renamed",
            json!({"id": "g3", "displayName": "Everyone"}),
            false,
        ),
        (
            "another group deleted",
            json!({"id": "g3", "@removed": {"reason": "deleted"}}),
            false,
        ),
        (
            "a group of interest renamed",
            json!({"id": "g1", "displayName": "Taskade Members"}),
            true,
        ),
        (
            "a group of interest deleted",
            json!({"id": "g2", "@removed": {"reason": "deleted"}}),
            true,
        ),
        (
            "a new group named as one of interest",
            json!({"id": "g8", "displayName": "taskade editors"}),
            true,
        ),
    ];
    // Ids taken for other names (the configuration was reloaded since): they say
    // nothing, and any group's change reads the whole directory.
    let cases = cases
        .into_iter()
        .map(|(what, group, full)| (what, group, full, &configured[..]));
    let stale = [(
        "a new team after a reload",
        json!({"id": "g9", "displayName": "Marketing Offsite"}),
        true,
        &["taskade users"][..],
    )];
    for (what, group, full, names) in cases.chain(stale) {
        let server = MockServer::start().await;
        small_tenant().mount(&server).await;
        mount_delta(&server, "users", "U1", vec![vec![]]).await;
        let mut group = group;
        group["@odata.type"] = "#microsoft.graph.group".into();
        mount_delta(&server, "groups", "G1", vec![vec![group]]).await;
        // A cursor taken for other names reads in full with fresh links.
        mount_delta(&server, "users", "latest", vec![vec![]]).await;
        mount_delta(&server, "groups", "latest", vec![vec![]]).await;
        let source = EntraSource::new(settings(&server, secret()));
        let changes = source
            .changes_since(Some(&base_cursor(&server, names)))
            .await;
        match (full, changes) {
            (false, Ok(DirectoryChanges::Delta { cursor, .. })) => {
                assert!(
                    cursor.contains(r#""interest":["g1","g2"]"#),
                    "{what}: {cursor}"
                );
            }
            (true, Ok(DirectoryChanges::Full { .. })) => {}
            (_, other) => panic!("{what}: {other:?}"),
        }
    }

    // A full read stores the ids of the groups of interest for the next round.
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(&server, "users", "latest", vec![vec![]]).await;
    mount_delta(&server, "groups", "latest", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let DirectoryChanges::Full { cursor, .. } = source.changes_since(None).await.unwrap() else {
        panic!("a first call reads the whole directory");
    };
    let cursor = cursor.unwrap();
    assert!(
        cursor.contains(r#""interest":["g1","g2"],"names":["taskade editors","taskade users"]"#),
        "{cursor}"
    );
}

#[tokio::test]
async fn an_expired_delta_token_falls_back_to_a_full_snapshot() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    // As documented for identity resources: 400 syncStateNotFound.
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$deltatoken", "OLD"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "code": "syncStateNotFound",
            "message": "The sync state generation is not found. The delta token is expired and data must be synchronized again."
        }})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/delta"))
        .and(query_param("$deltatoken", "OLDG"))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({"error": {
            "code": "resyncRequired",
            "message": "Resync required."
        }})))
        .mount(&server)
        .await;
    mount_delta(&server, "users", "latest", vec![vec![]]).await;
    mount_delta(&server, "groups", "latest", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let changes = source
        .changes_since(Some(&cursor(&server, "OLD", "OLDG")))
        .await
        .unwrap();
    let DirectoryChanges::Full { snapshot, cursor } = changes else {
        panic!("expected a full snapshot");
    };
    assert_eq!(rows(&snapshot), expected_small_tenant());
    let cursor = cursor.unwrap();
    assert!(cursor.contains("latest-next"), "{cursor}");
    // The fresh links were taken with $deltatoken=latest and the user $select.
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().any(|r| r.url.path() == "/v1.0/users/delta"
        && query(r, "$deltatoken").as_deref() == Some("latest")
        && query(r, "$select").is_some_and(|s| s.contains("accountEnabled"))));
}

#[tokio::test]
async fn a_scope_group_missing_from_the_tenant_is_an_error() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let mut s = settings(&server, secret());
    s.scope_groups = vec!["Nobody".into()];
    let error = EntraSource::new(s).snapshot().await.unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
}

/// A protected group the tenant does not have is refused (a typo would take its
/// members' protection away); a mapping group it does not have is not.
#[tokio::test]
async fn a_protected_group_missing_from_the_tenant_is_an_error() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let snapshot = |protected: &[&str], mapped: &[&str]| {
        let mut s = settings(&server, secret());
        s.required_groups = protected
            .iter()
            .map(|g| seatwarden::directory::RequiredGroup::protected(g))
            .collect();
        s.other_groups = mapped
            .iter()
            .chain(protected)
            .map(|g| (*g).to_owned())
            .collect();
        async move { EntraSource::new(s).snapshot().await }
    };
    let error = snapshot(&["IT Adminz"], &["Taskade Editors"])
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("\"IT Adminz\"") && message.contains("safety.protected_groups"),
        "{message}"
    );
    let people = snapshot(&["TASKADE EDITORS"], &[]).await.unwrap();
    let in_editors = |id: &str| {
        people
            .identities
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("{id} not read"))
            .groups
            .iter()
            .any(|g| g.eq_ignore_ascii_case("Taskade Editors"))
    };
    assert!(in_editors("a1"), "{:?}", people.identities);
    assert!(!in_editors("a2"), "{:?}", people.identities);
    assert!(snapshot(&[], &["Nobody Mapped"]).await.is_ok());
}

/// Entra does not keep displayName unique and any user may create a Microsoft
/// 365 group: a look-alike of a configured group is refused, not merged into it.
#[tokio::test]
async fn two_groups_answering_to_a_configured_name_are_refused() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.groups.push((
        graph_group("g9", "taskade editors"),
        vec!["a2".to_owned(), "a4".to_owned()],
    ));
    tenant.mount(&server).await;
    let error = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("\"Taskade Editors\"")
            && message.contains("\"g2\"")
            && message.contains("\"g9\""),
        "{message}"
    );

    // The sweep's delta re-reads a changed person's groups: a person in both is
    // refused there too.
    let source = EntraSource::new(settings(&server, secret()));
    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    mount_delta(
        &server,
        "groups",
        "G1",
        vec![vec![json!({
            "@odata.type": "#microsoft.graph.group",
            "id": "g3",
            "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "a4"}],
        })]],
    )
    .await;
    let error = since_u1_g1(&source, &server).await.unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");

    // A look-alike of a group nobody configured changes nothing.
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant
        .groups
        .push((graph_group("g9", "ALL COMPANY"), vec!["a2".to_owned()]));
    tenant.mount(&server).await;
    let snapshot = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
}

/// B2B guests are people of the directory unless `include_guests = false`; then
/// they are in no read, and a guest the sweep's delta re-reads counts as gone.
#[tokio::test]
async fn guests_are_left_out_when_the_configuration_says_so() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    let mut guest = graph_user("a5", "eve_partner.com#EXT#@contoso.onmicrosoft.com", true);
    guest["userType"] = "Guest".into();
    tenant.users.push(guest);
    tenant.groups[0].1.push("a5".into());
    tenant.mount(&server).await;
    let with_guests = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap();
    assert!(with_guests.identities.iter().any(|i| i.id == "a5"));

    let without = |server: &MockServer| {
        EntraSource::new(EntraSettings {
            include_guests: false,
            ..settings(server, secret())
        })
    };
    let snapshot = without(&server).snapshot().await.unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());

    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    mount_delta(
        &server,
        "groups",
        "G1",
        vec![vec![json!({
            "@odata.type": "#microsoft.graph.group",
            "id": "g1",
            "members@delta": [
                {"@odata.type": "#microsoft.graph.user", "id": "a5"},
                {"@odata.type": "#microsoft.graph.user", "id": "a4"},
            ],
        })]],
    )
    .await;
    let changes = since_u1_g1(&without(&server), &server).await.unwrap();
    let DirectoryChanges::Delta {
        changed, removed, ..
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    let ids: Vec<&str> = changed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a4"]);
    assert_eq!(removed, ["a5"]);
}

#[tokio::test]
async fn a_delta_with_many_changes_reads_a_snapshot_instead() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let many: Vec<Value> = (0..300)
        .map(|n| json!({"@odata.type": "#microsoft.graph.user", "id": format!("x{n}"), "accountEnabled": true}))
        .collect();
    mount_delta(&server, "users", "U1", vec![many]).await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    let changes = since_u1_g1(&EntraSource::new(settings(&server, secret())), &server)
        .await
        .unwrap();
    let DirectoryChanges::Full { snapshot, cursor } = changes else {
        panic!("expected a full snapshot");
    };
    assert_eq!(rows(&snapshot), expected_small_tenant());
    // The links of this delta round carry on.
    assert!(cursor.unwrap().contains("U1-next"));
}

/// Limits as in production but for `max_pages` pages a listing.
fn pages_cap(max_pages: u64) -> Limits {
    Limits {
        max_pages,
        ..Limits::default()
    }
}

/// A collection that never ends: every page is empty and its `@odata.nextLink`
/// names a new `$skiptoken`.
fn endless(base: String) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static {
    move |req: &Request| {
        let token: u64 = query(req, "$skiptoken").map_or(0, |t| t.parse().unwrap());
        let mut next: url::Url = format!("{base}{}", req.url.path()).parse().unwrap();
        let pairs: Vec<(String, String)> = req
            .url
            .query_pairs()
            .filter(|(k, _)| k != "$skiptoken")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        next.query_pairs_mut()
            .extend_pairs(pairs)
            .append_pair("$skiptoken", &(token + 1).to_string());
        ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": format!("{base}/v1.0/$metadata#users"),
            "value": [],
            "@odata.nextLink": next.to_string(),
        }))
    }
}

/// Users, groups, transitive members, direct members of an assigned group, the
/// app's assignments and a delta round: each that keeps handing out fresh
/// `@odata.nextLink`s (a faulty endpoint, or a graph_url pointing at something
/// else) fails once it has read the cap's pages, naming the listing and the cap,
/// and never asks for the page past it.
#[tokio::test]
async fn a_listing_that_never_ends_fails_at_the_page_cap() {
    for (endpoint, listing) in [
        ("/v1.0/users", "GET /v1.0/users?$select="),
        (
            "/v1.0/groups",
            "GET /v1.0/groups?$select=id,displayName,visibility&$top=999",
        ),
        (
            "/v1.0/groups/g1/transitiveMembers",
            "GET /v1.0/groups/g1/transitiveMembers?$select=id&$top=999",
        ),
        (
            "/v1.0/groups/g2/members",
            "GET /v1.0/groups/g2/members?$select=id&$top=999",
        ),
        (
            "/v1.0/servicePrincipals/sp-object-id/appRoleAssignedTo",
            "GET /v1.0/servicePrincipals/sp-object-id/appRoleAssignedTo?$top=999",
        ),
        ("/v1.0/users/delta", "GET /v1.0/users/delta?$deltatoken=U1"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(endpoint))
            .respond_with(endless(server.uri()))
            .mount(&server)
            .await;
        let mut tenant = small_tenant();
        tenant.assignments = vec![("a2".into(), "User"), ("g2".into(), "Group")];
        tenant.mount(&server).await;
        let mut s = settings(&server, secret());
        s.app_id = Some("app-client-id".into());
        let error = if endpoint == "/v1.0/users/delta" {
            mount_delta(&server, "groups", "G1", vec![vec![]]).await;
            s.app_id = None;
            let source = EntraSource::with_limits(s, pages_cap(4));
            within_a_minute(since_u1_g1(&source, &server))
                .await
                .unwrap_err()
        } else {
            within_a_minute(EntraSource::with_limits(s, pages_cap(4)).snapshot())
                .await
                .unwrap_err()
        };
        assert!(
            matches!(error, DirectoryError::Malformed { .. }),
            "{endpoint}: {error}"
        );
        let message = error.to_string();
        assert!(message.contains("after 4 pages"), "{message}");
        assert!(message.contains(listing), "{message}");
        let requests = server.received_requests().await.unwrap();
        let past_the_cap = requests
            .iter()
            .filter(|r| r.url.path() == endpoint)
            .filter(|r| query(r, "$skiptoken").is_some_and(|t| t.parse::<u64>().unwrap() >= 4))
            .count();
        assert_eq!(past_the_cap, 0, "{endpoint}");
    }
}

/// The cap counts pages read: a listing of exactly that many pages is whole.
#[tokio::test]
async fn a_listing_as_long_as_the_page_cap_is_read_whole() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    // Four users, three groups and four members of "All Company": two pages of 2.
    let snapshot = EntraSource::with_limits(settings(&server, secret()), pages_cap(2))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
    let error = EntraSource::with_limits(settings(&server, secret()), pages_cap(1))
        .snapshot()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("after 1 pages"), "{error}");
}

/// An answer past the body limit fails the read as malformed, naming the
/// endpoint and the limit, and is not asked again.
#[tokio::test]
async fn an_answer_over_the_body_limit_is_refused() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.groups[2].0["description"] = "x".repeat(5000).into();
    tenant.mount(&server).await;
    let limits = Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let error = EntraSource::with_limits(settings(&server, secret()), limits)
        .snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
    let message = error.to_string();
    // "All Company" is on the second page of groups.
    assert!(message.contains("GET /v1.0/groups?"), "{message}");
    assert!(message.contains("skiptoken=2"), "{message}");
    assert!(message.contains("larger than 4096 bytes"), "{message}");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path() == "/v1.0/groups")
            .filter(|r| query(r, "$skiptoken").as_deref() == Some("2"))
            .count(),
        1
    );
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let snapshot = EntraSource::with_limits(settings(&server, secret()), limits)
        .snapshot()
        .await
        .unwrap();
    assert_eq!(rows(&snapshot), expected_small_tenant());
}

/// An id that is a dot segment would send the request elsewhere once the URL is
/// normalised (`/groups/../transitiveMembers/…` is not that group's members):
/// refused before any request is built.
#[tokio::test]
async fn ids_that_are_dot_segments_are_refused() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    tenant.groups[0].0["id"] = "..".into();
    tenant.mount(&server).await;
    let error = EntraSource::new(settings(&server, secret()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("GET /v1.0/groups/{id}/transitiveMembers"),
        "{message}"
    );
    assert!(message.contains("\"..\""), "{message}");

    // The app's service principal as Graph named it.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"id": "%2e", "appId": "app-client-id"}]
        })))
        .mount(&server)
        .await;
    small_tenant().mount(&server).await;
    let mut s = settings(&server, secret());
    s.app_id = Some("app-client-id".into());
    let error = EntraSource::new(s).snapshot().await.unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
    assert!(error.to_string().contains("appRoleAssignedTo"), "{error}");

    // A configured tenant id: a settings error, before a token is asked for.
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let mut s = settings(&server, secret());
    s.tenant_id = "..".into();
    let error = EntraSource::new(s).snapshot().await.unwrap_err();
    assert!(matches!(error, DirectoryError::Settings(_)), "{error}");
    assert!(error.to_string().contains("directory.tenant_id"), "{error}");
    assert!(server.received_requests().await.unwrap().is_empty());
}
