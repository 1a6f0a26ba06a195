//! The Okta connector against a wiremock org whose answers follow Okta's documented
//! shapes: user and group objects, `Link` paging (separate lines and comma-joined),
//! DEPROVISIONED users only through `search`, `X-Rate-Limit-*` headers and the
//! E0000047 429 body, app assignments, `filter=lastUpdated gt "…"`, and an OAuth
//! service app with `private_key_jwt`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use seatwarden::directory::{
    DirectoryChanges, DirectoryError, OktaAuth, OktaSettings, OktaSource, OktaUserName, Secret,
};
use seatwarden::http::Limits;
use seatwarden::model::IdentityStatus;
use seatwarden::retry::RetryPolicy;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "00a-ssws-test-token-value";

/// How a fake page links to the next.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LinkStyle {
    /// `Link: <self>; rel="self"` and `Link: <next>; rel="next"` as two lines.
    SeparateLines,
    /// Both in one comma-joined line.
    Joined,
}

pub fn okta_user(id: &str, login: &str, status: &str) -> Value {
    json!({
        "id": id,
        "status": status,
        "created": "2025-06-24T16:39:18.000Z",
        "activated": "2025-06-24T16:39:19.000Z",
        "statusChanged": "2025-06-24T16:39:19.000Z",
        "lastLogin": null,
        "lastUpdated": "2026-07-02T21:36:25.344Z",
        "passwordChanged": "2025-07-02T21:36:25.344Z",
        "type": {"id": "oty1abcdefGHIJKL0h7"},
        "profile": {
            "firstName": format!("First{id}"),
            "lastName": "Tester",
            "email": login,
            "login": login,
            "department": "Engineering",
            "mobilePhone": null
        },
        "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
        "_links": {"self": {"href": format!("https://acme.okta.com/api/v1/users/{id}")}}
    })
}

pub fn okta_group(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "created": "2025-02-06T13:50:07.000Z",
        "lastUpdated": "2025-02-06T13:50:07.000Z",
        "lastMembershipUpdated": "2026-11-21T17:31:57.000Z",
        "objectClass": ["okta:user_group"],
        "type": "OKTA_GROUP",
        "profile": {"name": name, "description": null},
        "_links": {
            "users": {"href": format!("https://acme.okta.com/api/v1/groups/{id}/users")}
        }
    })
}

fn query(req: &Request, name: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One page of `items` starting at the `after` cursor (an index here; Okta's is
/// opaque), with `Link` headers in `style` and rate-limit headers.
pub fn page(
    req: &Request,
    base: &str,
    items: &[Value],
    page_size: usize,
    style: LinkStyle,
) -> ResponseTemplate {
    let start: usize = query(req, "after").map_or(0, |a| a.parse().unwrap());
    let end = (start + page_size).min(items.len());
    // wiremock sees `http://localhost/…`; links name the org's own URL.
    let mut url: url::Url = format!("{base}{}", req.url.path()).parse().unwrap();
    url.set_query(req.url.query());
    let self_link = format!("<{url}>; rel=\"self\"");
    let mut response = ResponseTemplate::new(200)
        .set_body_json(Value::Array(items[start..end].to_vec()))
        .insert_header("content-type", "application/json")
        .insert_header("x-rate-limit-limit", "600")
        .insert_header("x-rate-limit-remaining", "599")
        .insert_header(
            "x-rate-limit-reset",
            (epoch_now() + 60).to_string().as_str(),
        );
    if end < items.len() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "after")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(pairs)
            .append_pair("after", &end.to_string());
        let next_link = format!("<{url}>; rel=\"next\"");
        response = match style {
            LinkStyle::SeparateLines => response
                .append_header("link", self_link.as_str())
                .append_header("link", next_link.as_str()),
            LinkStyle::Joined => {
                response.insert_header("link", format!("{self_link}, {next_link}").as_str())
            }
        };
    } else {
        response = response.insert_header("link", self_link.as_str());
    }
    response
}

/// An Okta org: users (the plain list hides DEPROVISIONED ones), groups with
/// members, optional app assignments.
#[derive(Clone)]
pub struct FakeOkta {
    pub users: Vec<Value>,
    /// (group, member ids)
    pub groups: Vec<(Value, Vec<String>)>,
    pub page_size: usize,
    pub style: LinkStyle,
    pub app_users: Vec<String>,
    pub app_groups: Vec<String>,
    /// Okta's clock against this host's, in its answers' `Date` (none: the real
    /// time the server stamps).
    pub clock_offset: Option<chrono::TimeDelta>,
}

/// `response` dated `offset` away from this host's clock.
fn dated(response: ResponseTemplate, offset: Option<chrono::TimeDelta>) -> ResponseTemplate {
    match offset {
        None => response,
        Some(offset) => {
            let at = std::time::SystemTime::from(chrono::Utc::now() + offset);
            response.insert_header("date", httpdate::fmt_http_date(at).as_str())
        }
    }
}

impl FakeOkta {
    pub async fn mount(&self, server: &MockServer) {
        let base = server.uri();
        let clock = self.clock_offset;
        let users = self.users.clone();
        let (size, style) = (self.page_size, self.style);
        Mock::given(method("GET"))
            .and(path("/api/v1/users"))
            .respond_with({
                let b = base.clone();
                move |req: &Request| {
                    let search = query(req, "search");
                    let filter = query(req, "filter");
                    let selected: Vec<Value> = users
                        .iter()
                        .filter(|u| {
                            let status = u["status"].as_str().unwrap();
                            match (&search, &filter) {
                                (Some(s), _) => {
                                    assert_eq!(s, r#"status eq "DEPROVISIONED""#);
                                    status == "DEPROVISIONED"
                                }
                                (None, Some(f)) => match f.strip_prefix("id eq ") {
                                    // id eq "…": that user, whatever the status.
                                    Some(id) => u["id"] == id.trim_matches('"'),
                                    // lastUpdated gt "…": compare the timestamps.
                                    None => {
                                        let after = f.split('"').nth(1).unwrap();
                                        u["lastUpdated"].as_str().unwrap() > after
                                    }
                                },
                                // Okta omits DEPROVISIONED users from a plain list.
                                (None, None) => status != "DEPROVISIONED",
                            }
                        })
                        .cloned()
                        .collect();
                    dated(page(req, &b, &selected, size, style), clock)
                }
            })
            .mount(server)
            .await;
        let groups: Vec<Value> = self.groups.iter().map(|(g, _)| g.clone()).collect();
        Mock::given(method("GET"))
            .and(path("/api/v1/groups"))
            .respond_with({
                let b = base.clone();
                move |req: &Request| {
                    let selected: Vec<Value> = match query(req, "filter") {
                        Some(f) => {
                            let after = f.split('"').nth(1).unwrap().to_owned();
                            groups
                                .iter()
                                .filter(|g| {
                                    g["lastMembershipUpdated"].as_str().unwrap() > after.as_str()
                                        || g["lastUpdated"].as_str().unwrap() > after.as_str()
                                })
                                .cloned()
                                .collect()
                        }
                        None => groups.clone(),
                    };
                    dated(page(req, &b, &selected, size, style), clock)
                }
            })
            .mount(server)
            .await;
        // One group by id; a deleted (or never created) one answers 404.
        let by_id: HashMap<String, Value> = self
            .groups
            .iter()
            .map(|(g, _)| (g["id"].as_str().unwrap().to_owned(), g.clone()))
            .collect();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/groups/[^/]+$"))
            .respond_with(move |req: &Request| {
                let id = req.url.path().split('/').nth(4).unwrap();
                match by_id.get(id) {
                    Some(group) => dated(
                        ResponseTemplate::new(200)
                            .set_body_json(group)
                            .insert_header("content-type", "application/json"),
                        clock,
                    ),
                    None => not_found(id, "UserGroup"),
                }
            })
            .mount(server)
            .await;
        let members: HashMap<String, Vec<Value>> = self
            .groups
            .iter()
            .map(|(g, ids)| {
                let users = ids
                    .iter()
                    .map(|id| {
                        self.users
                            .iter()
                            .find(|u| u["id"] == id.as_str())
                            .cloned()
                            .unwrap()
                    })
                    .collect();
                (g["id"].as_str().unwrap().to_owned(), users)
            })
            .collect();
        let member_groups: HashMap<String, Vec<Value>> = self
            .users
            .iter()
            .map(|u| {
                let id = u["id"].as_str().unwrap();
                let groups = self
                    .groups
                    .iter()
                    .filter(|(_, ids)| ids.iter().any(|m| m == id))
                    .map(|(g, _)| g.clone())
                    .collect();
                (id.to_owned(), groups)
            })
            .collect();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/groups/[^/]+/users$"))
            .respond_with({
                let b = base.clone();
                move |req: &Request| {
                    let id = req.url.path().split('/').nth(4).unwrap();
                    match members.get(id) {
                        Some(users) => dated(page(req, &b, users, size, style), clock),
                        None => not_found(id, "UserGroup"),
                    }
                }
            })
            .mount(server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/users/[^/]+/groups$"))
            .respond_with({
                let b = base.clone();
                move |req: &Request| {
                    let id = req.url.path().split('/').nth(4).unwrap();
                    dated(page(req, &b, &member_groups[id], size, style), clock)
                }
            })
            .mount(server)
            .await;
        let app_users: Vec<Value> = self
            .app_users
            .iter()
            .map(|id| {
                json!({
                    "id": id,
                    "externalId": null,
                    "created": "2025-06-24T16:39:18.000Z",
                    "lastUpdated": "2025-06-24T16:39:18.000Z",
                    "scope": "USER",
                    "status": "ACTIVE",
                    "statusChanged": "2025-06-24T16:39:18.000Z",
                    "syncState": "DISABLED",
                    "credentials": {"userName": format!("{id}@example.com")},
                    "profile": {},
                    "_links": {"user": {"href": format!("https://acme.okta.com/api/v1/users/{id}")}}
                })
            })
            .collect();
        Mock::given(method("GET"))
            .and(path("/api/v1/apps/0oa1app/users"))
            .respond_with({
                let b = base.clone();
                move |req: &Request| dated(page(req, &b, &app_users, size, style), clock)
            })
            .mount(server)
            .await;
        let app_groups: Vec<Value> = self
            .app_groups
            .iter()
            .map(|id| {
                json!({
                    "id": id,
                    "lastUpdated": "2025-06-24T16:39:18.000Z",
                    "priority": 0,
                    "profile": {},
                    "_links": {"group": {"href": format!("https://acme.okta.com/api/v1/groups/{id}")}}
                })
            })
            .collect();
        Mock::given(method("GET"))
            .and(path("/api/v1/apps/0oa1app/groups"))
            .respond_with({
                let b = base.clone();
                move |req: &Request| dated(page(req, &b, &app_groups, size, style), clock)
            })
            .mount(server)
            .await;
    }
}

/// Okta's 404 for an id it does not know (`kind`: `UserGroup`, `User`).
fn not_found(id: &str, kind: &str) -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(json!({
        "errorCode": "E0000007",
        "errorSummary": format!("Not found: Resource not found: {id} ({kind})"),
        "errorLink": "E0000007",
        "errorId": "oaeXYZ",
        "errorCauses": []
    }))
}

/// Six people: four active, one suspended, one deprovisioned; three groups.
pub fn small_org(style: LinkStyle) -> FakeOkta {
    let users = vec![
        okta_user("00u1", "ada@example.com", "ACTIVE"),
        okta_user("00u2", "bob@example.com", "ACTIVE"),
        okta_user("00u3", "cy@example.com", "SUSPENDED"),
        okta_user("00u4", "dee@example.com", "DEPROVISIONED"),
        okta_user("00u5", "eve@example.com", "LOCKED_OUT"),
        okta_user("00u6", "fay@example.com", "STAGED"),
    ];
    let groups = vec![
        (
            okta_group("00g1", "Taskade Users"),
            vec!["00u1", "00u2", "00u3", "00u5"],
        ),
        (okta_group("00g2", "Taskade Editors"), vec!["00u1"]),
        (
            okta_group("00g3", "Everyone"),
            vec!["00u1", "00u2", "00u3", "00u5", "00u6"],
        ),
    ]
    .into_iter()
    .map(|(g, ids)| (g, ids.into_iter().map(str::to_owned).collect()))
    .collect();
    FakeOkta {
        users,
        groups,
        page_size: 2,
        style,
        app_users: Vec::new(),
        app_groups: Vec::new(),
        clock_offset: None,
    }
}

pub fn settings(server: &MockServer, auth: OktaAuth) -> OktaSettings {
    OktaSettings {
        url: server.uri().parse().unwrap(),
        auth,
        app_id: None,
        scope_groups: vec!["Taskade Users".into()],
        other_groups: vec!["Taskade Editors".into()],
        distinct_groups: Vec::new(),
        required_groups: Vec::new(),
        max_concurrency: 4,
        timeout: Duration::from_secs(10),
        retry: RetryPolicy::immediate(3),
        overlap: Duration::from_secs(300),
        user_name: Default::default(),
        ca_file: None,
    }
}

pub(crate) fn ssws() -> OktaAuth {
    OktaAuth::Ssws(Secret::Inline(TOKEN.to_owned().into()))
}

/// The cursor a full read of `org` (under [`settings`], then `configure`) leaves,
/// set back to Okta's time `at`: the groups of interest are recorded as that
/// read saw them.
async fn cursor_after_full_read(
    org: &FakeOkta,
    configure: impl Fn(&mut OktaSettings),
    at: &str,
) -> String {
    let server = MockServer::start().await;
    org.mount(&server).await;
    let mut s = settings(&server, ssws());
    configure(&mut s);
    let changes = OktaSource::new(s).changes_since(None).await.unwrap();
    let DirectoryChanges::Full {
        cursor: Some(cursor),
        ..
    } = changes
    else {
        panic!("expected a full snapshot with a cursor, got {changes:?}");
    };
    cursor_at(&cursor, at)
}

/// `cursor` with its time set to `at`.
fn cursor_at(cursor: &str, at: &str) -> String {
    let mut json: Value = serde_json::from_str(cursor.strip_prefix("okta-v2:").unwrap()).unwrap();
    json["at"] = at.into();
    format!("okta-v2:{json}")
}

/// The cursor a full read of the untouched [`small_org`] leaves, at
/// 2026-11-30T01:00Z.
async fn small_org_cursor() -> String {
    cursor_after_full_read(
        &small_org(LinkStyle::SeparateLines),
        |_| {},
        "2026-11-30T01:00:00.000Z",
    )
    .await
}

pub(crate) fn statuses(
    snapshot: &seatwarden::model::DirectorySnapshot,
) -> Vec<(String, IdentityStatus, Vec<String>)> {
    snapshot
        .identities
        .iter()
        .map(|i| (i.id.clone(), i.status, i.groups.clone()))
        .collect()
}

pub(crate) fn expected_small_org() -> Vec<(String, IdentityStatus, Vec<String>)> {
    let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            "00u1".into(),
            IdentityStatus::Active,
            groups(&["Taskade Editors", "Taskade Users"]),
        ),
        (
            "00u2".into(),
            IdentityStatus::Active,
            groups(&["Taskade Users"]),
        ),
        (
            "00u3".into(),
            IdentityStatus::Suspended,
            groups(&["Taskade Users"]),
        ),
        ("00u4".into(), IdentityStatus::Deprovisioned, groups(&[])),
        (
            "00u5".into(),
            IdentityStatus::Active,
            groups(&["Taskade Users"]),
        ),
        ("00u6".into(), IdentityStatus::Suspended, groups(&[])),
    ]
}

#[tokio::test]
async fn snapshot_pages_with_separate_link_lines_and_sees_deprovisioned_users() {
    let server = MockServer::start().await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let snapshot = source.snapshot().await.unwrap();
    assert!(snapshot.complete);
    assert_eq!(statuses(&snapshot), expected_small_org());
    let ada = &snapshot.identities[0];
    assert_eq!(ada.user_name, "ada@example.com");
    assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
    assert_eq!(ada.given_name.as_deref(), Some("First00u1"));
    assert_eq!(ada.family_name.as_deref(), Some("Tester"));
    assert_eq!(ada.department.as_deref(), Some("Engineering"));

    let requests = server.received_requests().await.unwrap();
    for r in &requests {
        assert_eq!(
            r.headers.get("authorization").unwrap(),
            &format!("SSWS {TOKEN}")
        );
    }
    // limit set high on every list; the DEPROVISIONED search was made.
    assert!(requests.iter().all(|r| query(r, "limit").is_some()));
    assert!(requests.iter().any(|r| r.url.path() == "/api/v1/users"
        && query(r, "limit").as_deref() == Some("200")
        && query(r, "search").as_deref() == Some(r#"status eq "DEPROVISIONED""#)));
    // Only the groups the policy names are expanded ("Everyone" is not).
    assert!(
        !requests
            .iter()
            .any(|r| r.url.path() == "/api/v1/groups/00g3/users")
    );
    // Page 2 of the plain user list was followed through the Link header.
    assert!(requests.iter().any(|r| r.url.path() == "/api/v1/users"
        && query(r, "after").as_deref() == Some("2")
        && query(r, "search").is_none()));
}

#[tokio::test]
async fn snapshot_pages_with_one_comma_joined_link_line() {
    let server = MockServer::start().await;
    small_org(LinkStyle::Joined).mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
}

/// `user_name_attribute = "email"`: where logins are not email addresses, the
/// workspace userName is the profile's email; a user without one keeps the login
/// (failing the read for one account would stop every deprovisioning).
#[tokio::test]
async fn the_user_name_can_be_the_email_instead_of_the_login() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::Joined);
    for user in &mut org.users {
        let profile = user["profile"].as_object_mut().unwrap();
        let login = profile["login"]
            .as_str()
            .unwrap()
            .replace("@example.com", "");
        profile.insert("login".into(), json!(login));
    }
    org.mount(&server).await;
    let by_email = OktaSettings {
        user_name: OktaUserName::Email,
        ..settings(&server, ssws())
    };
    let snapshot = OktaSource::new(by_email.clone()).snapshot().await.unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    let ada = &snapshot.identities[0];
    assert_eq!(ada.user_name, "ada@example.com");
    assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
    let by_login = OktaSource::new(settings(&server, ssws()))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(by_login.identities[0].user_name, "ada");

    let server = MockServer::start().await;
    org.users[1]["profile"]
        .as_object_mut()
        .unwrap()
        .remove("email");
    org.mount(&server).await;
    let snapshot = OktaSource::new(OktaSettings {
        url: server.uri().parse().unwrap(),
        ..by_email
    })
    .snapshot()
    .await
    .unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    let names: Vec<&str> = snapshot
        .identities
        .iter()
        .map(|i| i.user_name.as_str())
        .collect();
    assert_eq!(names[..2], ["ada@example.com", "bob"]);
    assert_eq!(snapshot.identities[1].email, None);
}

#[tokio::test]
async fn a_missing_scope_group_is_an_error_not_an_empty_scope() {
    let server = MockServer::start().await;
    small_org(LinkStyle::Joined).mount(&server).await;
    let mut s = settings(&server, ssws());
    s.scope_groups = vec!["Taskade Userz".into()];
    let error = OktaSource::new(s).snapshot().await.unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    assert!(error.to_string().contains("Taskade Userz"), "{error}");
    assert!(!error.to_string().contains("the directory has"), "{error}");
    // Policy compares scope groups exactly: a case variant is missing too, and the
    // error names the spelling to use.
    let mut s = settings(&server, ssws());
    s.scope_groups = vec!["taskade users".into()];
    let error = OktaSource::new(s).snapshot().await.unwrap_err();
    assert!(
        error.to_string().contains(
            "scope group \"taskade users\" is not an Okta group (profile.name) \
             (the directory has \"Taskade Users\": scope groups are compared exactly)"
        ),
        "{error}"
    );
}

/// A protected group Okta does not have is refused (a typo would take its
/// members' protection away); a mapping group it does not have is not.
#[tokio::test]
async fn a_missing_protected_group_is_an_error_a_missing_mapping_group_is_not() {
    let server = MockServer::start().await;
    small_org(LinkStyle::Joined).mount(&server).await;
    let snapshot = |protected: &[&str], mapped: &[&str]| {
        let mut s = settings(&server, ssws());
        s.required_groups = protected
            .iter()
            .map(|g| seatwarden::directory::RequiredGroup::protected(g))
            .collect();
        s.other_groups = mapped
            .iter()
            .chain(protected)
            .map(|g| (*g).to_owned())
            .collect();
        async move { OktaSource::new(s).snapshot().await }
    };
    let error = snapshot(&["Taskade Editorz"], &["Taskade Editors"])
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("\"Taskade Editorz\"") && message.contains("safety.protected_groups"),
        "{message}"
    );
    // Names compare as policy compares them: without regard to case.
    let people = snapshot(&["taskade editors"], &[]).await.unwrap();
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
    assert!(in_editors("00u1"), "{:?}", people.identities);
    assert!(!in_editors("00u2"), "{:?}", people.identities);
    assert!(snapshot(&[], &["Nobody Mapped"]).await.is_ok());
}

/// An Okta group imported from AD may share its name with an Okta group: the
/// read is refused rather than merging the members of both under one name.
#[tokio::test]
async fn two_groups_answering_to_a_configured_name_are_refused() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::Joined);
    org.groups
        .push((okta_group("00g9", "TASKADE USERS"), vec!["00u6".to_owned()]));
    org.mount(&server).await;
    let error = OktaSource::new(settings(&server, ssws()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("\"00g1\"") && message.contains("\"00g9\""),
        "{message}"
    );
}

#[tokio::test]
async fn app_scope_keeps_assigned_users_and_members_of_assigned_groups() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    org.app_users = vec!["00u6".into()];
    org.app_groups = vec!["00g2".into()];
    org.mount(&server).await;
    let mut s = settings(&server, ssws());
    s.app_id = Some("0oa1app".into());
    let snapshot = OktaSource::new(s).snapshot().await.unwrap();
    let ids: Vec<&str> = snapshot.identities.iter().map(|i| i.id.as_str()).collect();
    // 00u6 directly, 00u1 through the assigned group "Taskade Editors".
    assert_eq!(ids, vec!["00u1", "00u6"]);
}

/// An assigned group the group listing does not show would drop its members
/// out of scope, so they would look deleted: the snapshot fails instead.
#[tokio::test]
async fn an_assigned_group_missing_from_the_group_listing_fails_the_snapshot() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    org.app_users = vec!["00u6".into()];
    org.app_groups = vec!["00g2".into(), "00g7".into()];
    org.mount(&server).await;
    let mut s = settings(&server, ssws());
    s.app_id = Some("0oa1app".into());
    let error = OktaSource::new(s).snapshot().await.unwrap_err().to_string();
    assert!(error.contains("\"00g7\""), "{error}");
    assert!(error.contains("directory.app_id"), "{error}");
    assert!(!error.contains("\"00g2\""), "{error}");
}

fn rate_limited() -> ResponseTemplate {
    // The documented 429: E0000047, with the window's reset (already past here,
    // so the test does not wait).
    ResponseTemplate::new(429)
        .insert_header("x-rate-limit-limit", "600")
        .insert_header("x-rate-limit-remaining", "0")
        .insert_header("x-rate-limit-reset", (epoch_now() - 1).to_string().as_str())
        .set_body_json(json!({
            "errorCode": "E0000047",
            "errorSummary": "API call exceeded rate limit due to too many requests.",
            "errorLink": "E0000047",
            "errorId": "sampleQPivGUj_ND5v78vbYWW",
            "errorCauses": []
        }))
}

#[tokio::test]
async fn a_429_waits_for_the_reset_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/groups"))
        .respond_with(rate_limited())
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::Joined).mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    assert_eq!(source.stats().retries, 2);
}

#[tokio::test]
async fn a_5xx_mid_snapshot_is_an_error_never_a_partial_snapshot() {
    let server = MockServer::start().await;
    // Page 2 of the user list keeps failing.
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .and(wiremock::matchers::query_param("after", "2"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "errorCode": "E0000009",
            "errorSummary": "Internal Server Error",
            "errorLink": "E0000009",
            "errorId": "oaeInternal",
            "errorCauses": []
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let error = source.snapshot().await.unwrap_err();
    assert!(error.is_transient());
    assert_eq!(error.status(), Some(500));
    let text = error.to_string();
    assert!(
        text.contains("/api/v1/users") && text.contains("E0000009"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn an_invalid_token_is_a_permanent_error_without_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "errorCode": "E0000011",
            "errorSummary": format!("Invalid token provided: SSWS {TOKEN}"),
            "errorLink": "E0000011",
            "errorId": "oaeBad",
            "errorCauses": []
        })))
        .mount(&server)
        .await;
    let error = OktaSource::new(settings(&server, ssws()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(text.contains("E0000011"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn the_token_file_is_read_at_use() {
    let server = MockServer::start().await;
    small_org(LinkStyle::Joined).mount(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("okta-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let auth = OktaAuth::Ssws(Secret::File {
        key: "directory.token_file",
        path: file.clone(),
    });
    let source = OktaSource::new(settings(&server, auth));
    source.snapshot().await.unwrap();
    std::fs::remove_file(&file).unwrap();
    let error = source.snapshot().await.unwrap_err();
    assert!(
        error.to_string().contains("directory.token_file"),
        "{error}"
    );
}

#[tokio::test]
async fn changes_since_reads_only_users_updated_after_the_cursor_minus_the_overlap() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    // 00u2 was suspended a minute before the cursor (inside the overlap); 00u4's
    // change is old.
    org.users[1]["status"] = "SUSPENDED".into();
    org.users[1]["lastUpdated"] = "2026-11-30T00:59:00.000Z".into();
    org.users[3]["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
    for u in org.users.iter_mut().filter(|u| u["id"] != "00u2") {
        u["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
    }
    org.mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let changes = source
        .changes_since(Some(&small_org_cursor().await))
        .await
        .unwrap();
    let DirectoryChanges::Delta {
        changed,
        removed,
        cursor,
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    assert!(cursor.starts_with("okta-v2:"), "{cursor}");
    assert!(removed.is_empty());
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, "00u2");
    assert_eq!(changed[0].status, IdentityStatus::Suspended);
    assert_eq!(changed[0].groups, vec!["Taskade Users".to_owned()]);
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests.iter().any(|r| query(r, "filter").as_deref()
            == Some(r#"lastUpdated gt "2026-11-30T00:55:00.000Z""#))
    );
    // groups filter + users filter + one user's groups + the two groups of
    // interest, each by id.
    assert_eq!(
        requests.len(),
        5,
        "{:?}",
        requests
            .iter()
            .map(|r| r.url.to_string())
            .collect::<Vec<_>>()
    );
}

/// `lastUpdated` is Okta's time: the cursor follows Okta's clock (from its answers'
/// `Date`) where it is behind this host's, so a host clock running ahead of
/// Okta's does not skip the changes made in between. Where `Date` says Okta is
/// ahead, the cursor goes no further than the overlap the next read steps back:
/// a `Date` wrongly ahead (a proxy stamping its local time as GMT, 3 hours; a
/// clock set years wrong) would have every sweep read nothing new until Okta's
/// clock caught up. A host truly behind re-reads the difference instead.
#[tokio::test]
async fn the_delta_cursor_is_okta_time_whatever_this_hosts_clock_says() {
    let overlap = chrono::TimeDelta::minutes(5);
    for (hours, trusted) in [
        (-2, chrono::TimeDelta::hours(-2)),
        (3, overlap),
        (24 * 3650, overlap),
    ] {
        let server = MockServer::start().await;
        let mut org = small_org(LinkStyle::SeparateLines);
        let offset = chrono::TimeDelta::hours(hours);
        org.clock_offset = Some(offset);
        org.mount(&server).await;
        let source = OktaSource::new(settings(&server, ssws()));
        let before = chrono::Utc::now();
        let changes = source.changes_since(None).await.unwrap();
        let after = chrono::Utc::now();
        let DirectoryChanges::Full {
            cursor: Some(cursor),
            ..
        } = changes
        else {
            panic!("expected a full snapshot with a cursor");
        };
        let json: Value = serde_json::from_str(cursor.strip_prefix("okta-v2:").unwrap()).unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(json["at"].as_str().unwrap())
            .unwrap()
            .to_utc();
        // `Date` has one-second resolution and is read after it was stamped: the
        // cursor may be up to a second early, never late.
        assert!(
            at >= before + trusted - chrono::TimeDelta::seconds(2) && at <= after + trusted,
            "{hours} h: cursor {at}, local {before}..{after}"
        );
    }
}

#[tokio::test]
async fn changes_since_falls_back_to_a_snapshot_when_a_policy_group_changed_membership() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    for u in &mut org.users {
        u["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
    }
    for (g, _) in &mut org.groups {
        g["lastMembershipUpdated"] = "2026-01-01T00:00:00.000Z".into();
    }
    org.groups[0].0["lastMembershipUpdated"] = "2026-11-30T01:02:00.000Z".into();
    org.mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let changes = source
        .changes_since(Some(&small_org_cursor().await))
        .await
        .unwrap();
    let DirectoryChanges::Full { snapshot, cursor } = changes else {
        panic!("expected a full snapshot");
    };
    assert_eq!(statuses(&snapshot), expected_small_org());
    assert!(cursor.unwrap().starts_with("okta-v2:"));
    // The first call has no cursor: a full snapshot too.
    assert!(matches!(
        source.changes_since(None).await.unwrap(),
        DirectoryChanges::Full {
            cursor: Some(_),
            ..
        }
    ));
}

fn key_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys"))
}

/// Checks an RS256 JWT against the test key; returns (header, claims).
pub fn verify_assertion(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let public = std::fs::read(key_dir().join("test-rsa-public.der")).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the assertion is signed with the configured key");
    let decode =
        |p: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
    (decode(parts[0]), decode(parts[1]))
}

/// Matches requests carrying `token` once it has been used `good` times.
struct ExpiredAfter {
    token: &'static str,
    good: usize,
    seen: AtomicUsize,
}

impl wiremock::Match for ExpiredAfter {
    fn matches(&self, req: &Request) -> bool {
        let carries = req
            .headers
            .get("authorization")
            .is_some_and(|v| v == self.token);
        carries && self.seen.fetch_add(1, Ordering::SeqCst) >= self.good
    }
}

pub fn form(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&req.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn oauth_service_app_signs_a_client_assertion_caches_the_token_and_refreshes_on_401() {
    let server = MockServer::start().await;
    let issued = Arc::new(AtomicUsize::new(0));
    let forms = Arc::new(Mutex::new(Vec::new()));
    {
        let issued = issued.clone();
        let forms = forms.clone();
        let token_url = format!("{}/oauth2/v1/token", server.uri());
        Mock::given(method("POST"))
            .and(path("/oauth2/v1/token"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .respond_with(move |req: &Request| {
                let f = form(req);
                let (head, claims) = verify_assertion(&f["client_assertion"]);
                assert_eq!(head["alg"], "RS256");
                assert_eq!(head["kid"], "key-1");
                assert_eq!(claims["iss"], "0oa-service-app");
                assert_eq!(claims["sub"], "0oa-service-app");
                assert_eq!(claims["aud"], token_url.as_str());
                let (iat, exp) = (
                    claims["iat"].as_u64().unwrap(),
                    claims["exp"].as_u64().unwrap(),
                );
                assert!(exp > iat && exp - iat <= 3600);
                assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
                forms.lock().unwrap().push(f);
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                ResponseTemplate::new(200).set_body_json(json!({
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "access_token": format!("access-token-{n}"),
                    "scope": "okta.users.read okta.groups.read okta.apps.read"
                }))
            })
            .mount(&server)
            .await;
    }
    // The first token expires after three requests: 401 for it from then on.
    Mock::given(method("GET"))
        .and(ExpiredAfter {
            token: "Bearer access-token-1",
            good: 3,
            seen: AtomicUsize::new(0),
        })
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header(
                    "www-authenticate",
                    "Bearer authorization_uri=\"http://acme.okta.com/oauth2/v1/authorize\", \
                     realm=\"http://acme.okta.com\", scope=\"okta.users.read\", \
                     error=\"invalid_token\", error_description=\"The access token is invalid.\", \
                     resource=\"/api/v1/users\"",
                )
                .set_body_json(json!({
                    "errorCode": "invalid_token",
                    "errorSummary": "The access token is invalid.",
                    "errorLink": "invalid_token",
                    "errorId": "sampleAbc",
                    "errorCauses": []
                })),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let auth = OktaAuth::PrivateKeyJwt {
        client_id: "0oa-service-app".into(),
        key_id: Some("key-1".into()),
        private_key: Secret::File {
            key: "directory.private_key_file",
            path: key_dir().join("test-rsa-pkcs8.pem"),
        },
    };
    let source = OktaSource::new(settings(&server, auth));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    // One token at first (cached across concurrent requests), one after the 401.
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    let forms = forms.lock().unwrap().clone();
    assert_eq!(forms[0]["grant_type"], "client_credentials");
    // No app_id: okta.apps.read is not asked for.
    assert_eq!(forms[0]["scope"], "okta.users.read okta.groups.read");
    assert_eq!(
        forms[0]["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let requests = server.received_requests().await.unwrap();
    let with = |token: &str| {
        requests
            .iter()
            .filter(|r| r.headers.get("authorization").is_some_and(|v| v == token))
            .count()
    };
    assert!(with("Bearer access-token-1") > 3);
    assert!(with("Bearer access-token-2") > 0);
}

/// The directory connectors share the workspace client's rule: an untrusted
/// certificate is a permanent error, not retried through the backoff.
#[tokio::test]
async fn an_untrusted_certificate_fails_at_once_and_says_so() {
    let (url, connections) = crate::fixtures::untrusted_tls_server();
    let mut settings = settings(&MockServer::start().await, ssws());
    settings.url = url.parse().unwrap();
    let error = OktaSource::new(settings).snapshot().await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    // Three listings start at once (users, deprovisioned users, groups): one
    // handshake each at most, none retried.
    let handshakes = connections.load(Ordering::SeqCst);
    assert!((1..=3).contains(&handshakes), "{handshakes} handshakes");
}

/// A token endpoint that keeps answering 503 is asked once per attempt of the
/// request that needs the token, not once per attempt of a retry loop nested in
/// each of those (attempts², 16 here); and each attempt signs a new assertion, as
/// Okta refuses a `jti` it has seen.
#[tokio::test]
async fn a_token_endpoint_answering_503_is_retried_at_one_level() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/token"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({
            "errorCode": "E0000010",
            "errorSummary": "Service is in read only mode",
            "errorLink": "E0000010",
            "errorId": "sampleXyz",
            "errorCauses": []
        })))
        .mount(&server)
        .await;
    let auth = OktaAuth::PrivateKeyJwt {
        client_id: "0oa-service-app".into(),
        key_id: Some("key-1".into()),
        private_key: Secret::File {
            key: "directory.private_key_file",
            path: key_dir().join("test-rsa-pkcs8.pem"),
        },
    };
    let settings = settings(&server, auth);
    let attempts = settings.retry.max_retries + 1;
    let error = OktaSource::new(settings).snapshot().await.unwrap_err();
    assert_eq!(error.status(), Some(503), "{error}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("oauth2/v1/token"), "{error}");
    let requests = server.received_requests().await.unwrap();
    let tokens = requests.len();
    // Three listings start at once (users, deprovisioned users, groups), each with
    // its own attempts.
    assert!(
        (attempts..=3 * attempts).contains(&tokens),
        "{tokens} token requests for {attempts} attempts"
    );
    let jtis: std::collections::HashSet<String> = requests
        .iter()
        .map(|r| {
            let (_, claims) = verify_assertion(&form(r)["client_assertion"]);
            claims["jti"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), tokens, "an assertion is never sent twice");
}

#[tokio::test]
async fn requests_wait_for_the_reset_when_the_rate_limit_is_used_up() {
    let server = MockServer::start().await;
    // /api/v1/groups answers its first page with no requests left in the window
    // (reset one second ahead) and counts any request sent before the reset.
    let window_ends = Arc::new(Mutex::new(None::<u64>));
    let early = Arc::new(AtomicUsize::new(0));
    {
        let base = server.uri();
        let groups: Vec<Value> = small_org(LinkStyle::Joined)
            .groups
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        let window_ends = window_ends.clone();
        let early = early.clone();
        Mock::given(method("GET"))
            .and(path("/api/v1/groups"))
            .respond_with(move |req: &Request| {
                let mut ends = window_ends.lock().unwrap();
                let now = epoch_now();
                if let Some(end) = *ends
                    && now < end
                {
                    early.fetch_add(1, Ordering::SeqCst);
                    return rate_limited();
                }
                let reset = now + 1;
                *ends = Some(reset);
                page(req, &base, &groups, 2, LinkStyle::Joined)
                    .insert_header("x-rate-limit-remaining", "0")
                    .insert_header("x-rate-limit-reset", reset.to_string().as_str())
            })
            .with_priority(1)
            .mount(&server)
            .await;
    }
    small_org(LinkStyle::Joined).mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    assert_eq!(
        early.load(Ordering::SeqCst),
        0,
        "a request ran into the limit"
    );
    assert_eq!(source.stats().retries, 0);
}

#[tokio::test]
async fn changes_since_reads_a_snapshot_when_too_many_users_changed() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::Joined);
    org.page_size = 200;
    for (g, _) in &mut org.groups {
        g["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
        g["lastMembershipUpdated"] = "2026-01-01T00:00:00.000Z".into();
    }
    for n in 0..300 {
        let mut u = okta_user(&format!("00x{n}"), &format!("x{n}@example.com"), "ACTIVE");
        u["lastUpdated"] = "2026-11-30T01:30:00.000Z".into();
        org.users.push(u);
    }
    org.mount(&server).await;
    let changes = OktaSource::new(settings(&server, ssws()))
        .changes_since(Some(&small_org_cursor().await))
        .await
        .unwrap();
    let DirectoryChanges::Full { snapshot, .. } = changes else {
        panic!("expected a full snapshot");
    };
    assert_eq!(snapshot.identities.len(), 306);
    // No per-user group requests were made.
    let requests = server.received_requests().await.unwrap();
    assert!(
        !requests.iter().any(
            |r| r.url.path().ends_with("/groups") && r.url.path().starts_with("/api/v1/users/")
        )
    );
}

#[tokio::test]
async fn paging_links_to_another_host_or_back_to_a_read_page_are_refused() {
    for (next, why) in [
        (
            "https://evil.example/api/v1/users?after=2".to_owned(),
            "another origin",
        ),
        (String::new(), "repeats"), // filled in below: the same page again
    ] {
        let server = MockServer::start().await;
        let next = if next.is_empty() {
            format!("{}/api/v1/users?after=loop", server.uri())
        } else {
            next
        };
        Mock::given(method("GET"))
            .and(path("/api/v1/users"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!([okta_user("00u1", "ada@example.com", "ACTIVE")]))
                    .insert_header("link", format!("<{next}>; rel=\"next\"").as_str()),
            )
            .mount(&server)
            .await;
        small_org(LinkStyle::Joined).mount(&server).await;
        let error = OktaSource::new(settings(&server, ssws()))
            .snapshot()
            .await
            .unwrap_err();
        assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
        assert!(error.to_string().contains(why), "{error}");
    }
}

/// Limits as in production but for `max_pages` pages a listing.
fn pages_cap(max_pages: u64) -> Limits {
    Limits {
        max_pages,
        ..Limits::default()
    }
}

/// `read`'s result; a listing that does not stop at the cap fails the test
/// instead of hanging it.
pub async fn within_a_minute<T>(read: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the listing did not stop at the page cap")
}

/// A listing that never ends: every page is empty and links to a new `after`.
fn endless(base: String) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static {
    move |req: &Request| {
        let after: u64 = query(req, "after").map_or(0, |a| a.parse().unwrap());
        let mut next: url::Url = format!("{base}{}", req.url.path()).parse().unwrap();
        let pairs: Vec<(String, String)> = req
            .url
            .query_pairs()
            .filter(|(k, _)| k != "after")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        next.query_pairs_mut()
            .extend_pairs(pairs)
            .append_pair("after", &(after + 1).to_string());
        ResponseTemplate::new(200)
            .set_body_json(json!([]))
            .insert_header("link", format!("<{next}>; rel=\"next\"").as_str())
    }
}

/// Users, the DEPROVISIONED search, groups, a group's members and the delta's
/// filtered users: each listing that keeps handing out fresh `next` links fails
/// once it has read the cap's pages, naming the listing and the cap, and never
/// asks for the page past it.
#[tokio::test]
async fn a_listing_that_never_ends_fails_at_the_page_cap() {
    for (endpoint, listing) in [
        ("/api/v1/users", "GET /api/v1/users?limit=200"),
        ("/api/v1/groups", "GET /api/v1/groups?limit=200"),
        (
            "/api/v1/groups/00g1/users",
            "GET /api/v1/groups/00g1/users?limit=1000",
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(endpoint))
            .respond_with(endless(server.uri()))
            .mount(&server)
            .await;
        small_org(LinkStyle::SeparateLines).mount(&server).await;
        let source = OktaSource::with_limits(settings(&server, ssws()), pages_cap(4));
        let mut errors = vec![within_a_minute(source.snapshot()).await.unwrap_err()];
        if endpoint == "/api/v1/users" {
            let cursor = small_org_cursor().await;
            errors.push(
                within_a_minute(source.changes_since(Some(&cursor)))
                    .await
                    .unwrap_err(),
            );
        }
        for error in errors {
            assert!(
                matches!(error, DirectoryError::Malformed { .. }),
                "{endpoint}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains("after 4 pages"), "{message}");
            assert!(message.contains(listing), "{message}");
        }
        let requests = server.received_requests().await.unwrap();
        let past_the_cap = requests
            .iter()
            .filter(|r| r.url.path() == endpoint)
            .filter(|r| query(r, "after").is_some_and(|a| a.parse::<u64>().unwrap() >= 4))
            .count();
        assert_eq!(past_the_cap, 0, "{endpoint}");
    }
}

/// The cap counts pages read: a listing of exactly that many pages is whole.
#[tokio::test]
async fn a_listing_as_long_as_the_page_cap_is_read_whole() {
    let server = MockServer::start().await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    // Five listed users and the five members of "Everyone" are three pages of 2.
    let snapshot = OktaSource::with_limits(settings(&server, ssws()), pages_cap(3))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
    let error = OktaSource::with_limits(settings(&server, ssws()), pages_cap(2))
        .snapshot()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("after 2 pages"), "{error}");
}

/// An answer past the body limit fails the read as malformed, naming the
/// endpoint and the limit, and is not asked again.
#[tokio::test]
async fn an_answer_over_the_body_limit_is_refused() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    org.groups[2].0["profile"]["description"] = "x".repeat(5000).into();
    org.mount(&server).await;
    let limits = Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let error = OktaSource::with_limits(settings(&server, ssws()), limits)
        .snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
    let message = error.to_string();
    // "Everyone" is on the second page of groups.
    assert!(
        message.contains("GET /api/v1/groups?limit=200&after=2"),
        "{message}"
    );
    assert!(message.contains("larger than 4096 bytes"), "{message}");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path() == "/api/v1/groups")
            .filter(|r| query(r, "after").as_deref() == Some("2"))
            .count(),
        1
    );
    // The other pages are under the limit: the same org reads whole without the
    // long description.
    let server = MockServer::start().await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let snapshot = OktaSource::with_limits(settings(&server, ssws()), limits)
        .snapshot()
        .await
        .unwrap();
    assert_eq!(statuses(&snapshot), expected_small_org());
}

/// An id that is a dot segment would send the request elsewhere once the URL is
/// normalised (`/api/v1/groups/../users` lists every user as the group's
/// members, `/api/v1/users/../groups` every group as the user's): refused before
/// any request is built.
#[tokio::test]
async fn ids_that_are_dot_segments_are_refused() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    org.groups[0].0["id"] = "..".into();
    org.mount(&server).await;
    let error = OktaSource::new(settings(&server, ssws()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("GET /api/v1/groups/{id}/users"),
        "{message}"
    );
    assert!(message.contains("\"..\""), "{message}");

    // A changed user's groups in a delta.
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    for u in &mut org.users {
        u["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
    }
    org.users[1]["id"] = ".".into();
    org.users[1]["lastUpdated"] = "2026-11-30T00:59:00.000Z".into();
    for (_, members) in &mut org.groups {
        for id in members.iter_mut().filter(|id| *id == "00u2") {
            *id = ".".into();
        }
    }
    org.mount(&server).await;
    let error = OktaSource::new(settings(&server, ssws()))
        .changes_since(Some(&small_org_cursor().await))
        .await
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Malformed { .. }), "{error}");
    assert!(
        error.to_string().contains("GET /api/v1/users/{id}/groups"),
        "{error}"
    );

    // A configured app id: a settings error, before its assignments are asked.
    let server = MockServer::start().await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let mut s = settings(&server, ssws());
    s.app_id = Some("..".into());
    let error = OktaSource::new(s).snapshot().await.unwrap_err();
    assert!(matches!(error, DirectoryError::Settings(_)), "{error}");
    assert!(error.to_string().contains("directory.app_id"), "{error}");
    let requests = server.received_requests().await.unwrap();
    assert!(
        !requests
            .iter()
            .any(|r| r.url.path().starts_with("/api/v1/apps")),
        "{requests:?}"
    );
}

/// [`small_org`] where nothing changed after 2026-11-30T01:00Z but the profile of
/// 00u2 (ACTIVE, in "Taskade Users"), at 01:02: an employee who stays.
fn org_where_one_profile_changed() -> FakeOkta {
    let mut org = small_org(LinkStyle::SeparateLines);
    for u in &mut org.users {
        u["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
    }
    org.users[1]["lastUpdated"] = "2026-11-30T01:02:00.000Z".into();
    org.users[1]["profile"]["department"] = "Sales".into();
    for (g, _) in &mut org.groups {
        g["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
        g["lastMembershipUpdated"] = "2026-01-01T00:00:00.000Z".into();
    }
    org
}

/// `settings` plus "IT Admins" in `safety.protected_groups`.
fn with_protected_it_admins(s: &mut OktaSettings) {
    s.other_groups.push("IT Admins".into());
    s.required_groups
        .push(seatwarden::directory::RequiredGroup::protected("IT Admins"));
}

/// [`org_where_one_profile_changed`] with 00u2 also in "IT Admins" (00g4).
fn org_with_it_admins() -> FakeOkta {
    let mut org = org_where_one_profile_changed();
    let mut admins = okta_group("00g4", "IT Admins");
    admins["lastUpdated"] = "2026-01-01T00:00:00.000Z".into();
    admins["lastMembershipUpdated"] = "2026-01-01T00:00:00.000Z".into();
    org.groups.push((admins, vec!["00u2".to_owned()]));
    org
}

/// Reads the delta of `org` from `cursor` under `settings` then `configure`.
async fn delta_of(
    org: &FakeOkta,
    configure: impl Fn(&mut OktaSettings),
    cursor: &str,
) -> (Result<DirectoryChanges, DirectoryError>, MockServer) {
    let server = MockServer::start().await;
    org.mount(&server).await;
    let mut s = settings(&server, ssws());
    configure(&mut s);
    let changes = OktaSource::new(s).changes_since(Some(cursor)).await;
    (changes, server)
}

/// A scope group renamed after the cursor was taken: its members' groups no longer
/// name it, and a delta would show 00u2 (whose profile changed) out of scope, a
/// leaver. The cursor knows the group's id: the call reads in full, and fails as a
/// reconcile does. Whether Okta's `lastUpdated` index already shows the rename or
/// not. A protected group renamed away fails the same way (its members would
/// lose their protection).
#[tokio::test]
async fn a_group_of_interest_renamed_since_the_cursor_fails_the_delta_like_a_full_read() {
    let cursor = small_org_cursor().await;
    for renamed_at in ["2026-11-30T01:03:00.000Z", "2026-01-01T00:00:00.000Z"] {
        let mut org = org_where_one_profile_changed();
        org.groups[0].0["profile"]["name"] = "Taskade Staff".into();
        org.groups[0].0["lastUpdated"] = renamed_at.into();
        let (changes, _server) = delta_of(&org, |_| {}, &cursor).await;
        let error = changes.unwrap_err();
        assert!(
            matches!(error, DirectoryError::Scope { .. }),
            "{renamed_at}: {error}"
        );
        assert!(
            error.to_string().contains(r#"scope group "Taskade Users""#),
            "{error}"
        );
    }

    let cursor = cursor_after_full_read(
        &org_with_it_admins(),
        with_protected_it_admins,
        "2026-11-30T01:00:00.000Z",
    )
    .await;
    let mut org = org_with_it_admins();
    org.groups[3].0["profile"]["name"] = "Former IT Admins".into();
    org.groups[3].0["lastUpdated"] = "2026-11-30T01:03:00.000Z".into();
    let (changes, _server) = delta_of(&org, with_protected_it_admins, &cursor).await;
    let error = changes.unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    assert!(
        error.to_string().contains("safety.protected_groups"),
        "{error}"
    );
}

/// A scope or protected group deleted after the cursor was taken (its id answers
/// 404): the call reads in full and fails; a mapping group deleted reads in full
/// too, which a missing mapping group does not fail.
#[tokio::test]
async fn a_group_of_interest_deleted_since_the_cursor_reads_in_full() {
    let cursor = small_org_cursor().await;
    let mut org = org_where_one_profile_changed();
    org.groups.remove(0);
    let (changes, server) = delta_of(&org, |_| {}, &cursor).await;
    let error = changes.unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    assert!(
        error.to_string().contains(r#"scope group "Taskade Users""#),
        "{error}"
    );
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r.url.path() == "/api/v1/groups/00g1"),
        "the deletion is found by the group's id"
    );

    let cursor = cursor_after_full_read(
        &org_with_it_admins(),
        with_protected_it_admins,
        "2026-11-30T01:00:00.000Z",
    )
    .await;
    let mut org = org_with_it_admins();
    org.groups.remove(3);
    let (changes, _server) = delta_of(&org, with_protected_it_admins, &cursor).await;
    let error = changes.unwrap_err();
    assert!(matches!(error, DirectoryError::Scope { .. }), "{error}");
    assert!(
        error.to_string().contains("safety.protected_groups"),
        "{error}"
    );

    // "Taskade Editors" only maps a role: the full read goes through without it.
    let mut org = org_where_one_profile_changed();
    org.groups.remove(1);
    let (changes, _server) = delta_of(&org, |_| {}, &small_org_cursor().await).await;
    let DirectoryChanges::Full { snapshot, cursor } = changes.unwrap() else {
        panic!("expected a full snapshot");
    };
    let ada = snapshot.identities.iter().find(|i| i.id == "00u1").unwrap();
    assert_eq!(ada.groups, vec!["Taskade Users".to_owned()]);
    // The new cursor records the groups there are now.
    let json: Value =
        serde_json::from_str(cursor.unwrap().strip_prefix("okta-v2:").unwrap()).unwrap();
    assert_eq!(
        json["groups"],
        json!([{"id": "00g1", "name": "Taskade Users"}])
    );
}

/// A group the configuration does not name renamed: nobody's groups of interest
/// changed, and the delta goes on (only the groups of interest are asked for).
#[tokio::test]
async fn an_unrelated_group_renamed_keeps_the_delta() {
    let mut org = org_where_one_profile_changed();
    org.groups[2].0["profile"]["name"] = "All Staff".into();
    org.groups[2].0["lastUpdated"] = "2026-11-30T01:03:00.000Z".into();
    let (changes, server) = delta_of(&org, |_| {}, &small_org_cursor().await).await;
    let DirectoryChanges::Delta {
        changed,
        removed,
        cursor,
    } = changes.unwrap()
    else {
        panic!("expected a delta");
    };
    assert!(removed.is_empty());
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, "00u2");
    assert_eq!(changed[0].status, IdentityStatus::Active);
    assert_eq!(changed[0].groups, vec!["Taskade Users".to_owned()]);
    // The groups of interest are carried on to the next cursor.
    let json: Value = serde_json::from_str(cursor.strip_prefix("okta-v2:").unwrap()).unwrap();
    assert_eq!(
        json["groups"],
        json!([
            {"id": "00g1", "name": "Taskade Users"},
            {"id": "00g2", "name": "Taskade Editors"}
        ])
    );
    let mut asked: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .filter(|p| p.starts_with("/api/v1/groups/"))
        .collect();
    asked.sort();
    assert_eq!(asked, vec!["/api/v1/groups/00g1", "/api/v1/groups/00g2"]);
}

/// An `okta-v1:` cursor (the time alone, from before the groups were recorded)
/// reads in full once, which fails on a scope group renamed in the meantime, and
/// leaves a cursor that gives deltas. With no group named there is nothing to
/// record, and it still gives a delta. A cursor taken for other configured group
/// names reads in full too.
#[tokio::test]
async fn an_old_cursor_reads_in_full_once_then_deltas_follow() {
    const OLD: &str = "okta-v1:2026-11-30T01:00:00.000Z";
    let mut renamed = org_where_one_profile_changed();
    renamed.groups[0].0["profile"]["name"] = "Taskade Staff".into();
    let (changes, _server) = delta_of(&renamed, |_| {}, OLD).await;
    assert!(
        matches!(changes, Err(DirectoryError::Scope { .. })),
        "{changes:?}"
    );

    let org = org_where_one_profile_changed();
    let (changes, _server) = delta_of(&org, |_| {}, OLD).await;
    let DirectoryChanges::Full {
        cursor: Some(cursor),
        ..
    } = changes.unwrap()
    else {
        panic!("expected a full snapshot with a cursor");
    };
    assert!(cursor.starts_with("okta-v2:"), "{cursor}");
    let cursor = cursor_at(&cursor, "2026-11-30T01:00:00.000Z");
    let (changes, _server) = delta_of(&org, |_| {}, &cursor).await;
    let DirectoryChanges::Delta { changed, .. } = changes.unwrap() else {
        panic!("expected a delta");
    };
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, "00u2");

    let nothing_named = |s: &mut OktaSettings| {
        s.scope_groups.clear();
        s.other_groups.clear();
    };
    let (changes, _server) = delta_of(&org, nothing_named, OLD).await;
    let DirectoryChanges::Delta { changed, .. } = changes.unwrap() else {
        panic!("expected a delta");
    };
    assert_eq!(changed.len(), 1);

    let (changes, _server) = delta_of(
        &org,
        |s| s.other_groups.push("Everyone".into()),
        &small_org_cursor().await,
    )
    .await;
    assert!(
        matches!(changes, Ok(DirectoryChanges::Full { .. })),
        "{changes:?}"
    );
}

/// A changed user deleted between the listing and the request for their groups
/// (404): when a filter on their id finds nobody, they are reported removed (a
/// deleted user is a leaver) and the others are read as usual. A 404 the filter
/// does not confirm (the user is still listed) fails the call.
#[tokio::test]
async fn a_changed_user_whose_groups_answer_404_is_removed_when_confirmed_gone() {
    let mut org = org_where_one_profile_changed();
    org.users[0]["lastUpdated"] = "2026-11-30T01:02:00.000Z".into();
    let cursor = small_org_cursor().await;

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users/00u2/groups"))
        .respond_with(not_found("00u2", "User"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .and(query_param("filter", r#"id eq "00u2""#))
        .respond_with({
            let base = server.uri();
            move |req: &Request| page(req, &base, &[], 200, LinkStyle::SeparateLines)
        })
        .with_priority(1)
        .mount(&server)
        .await;
    org.mount(&server).await;
    let changes = OktaSource::new(settings(&server, ssws()))
        .changes_since(Some(&cursor))
        .await
        .unwrap();
    let DirectoryChanges::Delta {
        changed, removed, ..
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    assert_eq!(removed, vec!["00u2".to_owned()]);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, "00u1");

    // Still there by its id: the 404 is not taken for a deletion.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users/00u2/groups"))
        .respond_with(not_found("00u2", "User"))
        .with_priority(1)
        .mount(&server)
        .await;
    org.mount(&server).await;
    let error = OktaSource::new(settings(&server, ssws()))
        .changes_since(Some(&cursor))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .any(|r| query(r, "filter").as_deref() == Some(r#"id eq "00u2""#))
    );
}

/// The sweep end to end: after a reconcile and a first sweep (whose cursor records
/// the groups of interest), the scope group is renamed in Okta and three people in
/// it change their profiles. The sweep fails on the missing scope group, as a
/// reconcile does: no episode opens and nothing is written to the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_scope_group_fails_the_sweep_and_deactivates_nobody() {
    use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions};
    use seatwarden::store::Store;
    use seatwarden::workspace::ScimClient;

    let data = seatwarden::synth::generate(&seatwarden::synth::SynthSpec {
        people: 120,
        groups: 4,
        drift_percent: 10.0,
        seed: 7,
    });
    let okta = MockServer::start().await;
    let mut org = crate::connectors::okta_org(&data, 25);
    org.mount(&okta).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: "sweep-scim-token".to_owned(),
            max_results: 1000,
            or_filters: true,
            faults: Faults::default(),
            ..SandboxOptions::default()
        },
        data.workspace.clone(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config_with_directory(
        dir.path(),
        &data,
        sandbox.base_url().as_ref(),
        "sweep-scim-token",
        8,
        &format!(
            "kind = \"okta\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            okta.uri()
        ),
    );
    crate::fixtures::assert_converges(&config).await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let sweep = || {
        seatwarden::sweep::sweep(
            &config,
            &directory,
            &client,
            &store,
            chrono::Utc::now(),
            chrono::Duration::hours(1),
        )
    };
    // The first sweep reads in full and leaves a cursor.
    sweep().await.unwrap();

    let stayers: Vec<String> = data
        .directory
        .identities
        .iter()
        .filter(|i| {
            i.status == IdentityStatus::Active && i.groups.iter().any(|g| g == "Taskade Users")
        })
        .take(3)
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(stayers.len(), 3);
    for user in &mut org.users {
        if stayers.iter().any(|id| user["id"] == id.as_str()) {
            user["lastUpdated"] = "2099-01-01T00:00:00.000Z".into();
            user["profile"]["department"] = "Renamed Team".into();
        }
    }
    let scope = org
        .groups
        .iter_mut()
        .find(|(g, _)| g["profile"]["name"] == "Taskade Users")
        .unwrap();
    scope.0["profile"]["name"] = "Taskade Staff".into();
    scope.0["lastUpdated"] = "2099-01-01T00:00:00.000Z".into();
    okta.reset().await;
    org.mount(&okta).await;

    let writes = sandbox.stats().writes;
    let error = sweep().await.unwrap_err();
    assert!(
        error.to_string().contains(r#"scope group "Taskade Users""#),
        "{error}"
    );
    assert_eq!(sandbox.stats().writes, writes, "nothing was written");
    assert!(
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .is_empty(),
        "no episode opened"
    );
    sandbox.shutdown().await;
}
