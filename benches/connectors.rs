//! Directory connector benchmark (issue 7): a full snapshot of 50,000 users in 200
//! groups from a fake Okta and a fake Microsoft Graph, and `changes_since` with 10
//! changed users, counting requests and wall time.
//!
//! ```sh
//! cargo bench --bench connectors                 # 50000 users, 200 groups
//! cargo bench --bench connectors -- 50000 200
//! scripts/bench-ldap.sh                          # `-- ldap 50000 200` against a seeded slapd
//! cargo bench --bench connectors -- scim 50000 200   # a SCIM provider (the sandbox)
//! ```
//!
//! The fakes are small axum servers on loopback answering with pre-rendered JSON in
//! the providers' documented shapes (Okta: arrays + `Link` headers, limit 200 users /
//! 1000 members; Graph: `value` + `@odata.nextLink`, `$top` 999), so the time is
//! seatwarden's own cost plus loopback HTTP. Each user is in two groups (about 500
//! members per group); 1% are DEPROVISIONED and 1% SUSPENDED. No group is named by
//! the policy, so all 200 groups are expanded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Response, Uri};
use seatwarden::directory::{
    DirectoryChanges, EntraAuth, EntraSettings, EntraSource, LdapFlavor, LdapSettings, LdapSource,
    OktaAuth, OktaSettings, OktaSource, Secret,
};
use seatwarden::retry::RetryPolicy;

const CHANGED: usize = 10;
const CHANGED_AT: &str = "2026-11-30T02:00:00.000Z";
const OLD: &str = "2026-01-01T00:00:00.000Z";

struct Data {
    base: String,
    /// Okta user JSON, Graph user JSON, per user.
    okta_users: Vec<String>,
    graph_users: Vec<String>,
    /// The three Okta user listings, rendered once: plain (no DEPROVISIONED),
    /// `search=status eq "DEPROVISIONED"`, `filter=lastUpdated gt …`.
    okta_plain: Vec<String>,
    okta_deprovisioned: Vec<String>,
    okta_changed: Vec<String>,
    /// Member indices per group.
    members: Vec<Vec<usize>>,
    groups_of: Vec<Vec<usize>>,
    requests: AtomicU64,
}

fn build(users: usize, groups: usize) -> Data {
    let mut members = vec![Vec::new(); groups];
    let mut groups_of = Vec::with_capacity(users);
    let mut okta_users = Vec::with_capacity(users);
    let mut graph_users = Vec::with_capacity(users);
    let mut statuses = Vec::with_capacity(users);
    let mut updated = Vec::with_capacity(users);
    for n in 0..users {
        let status = match n % 100 {
            0 => "DEPROVISIONED",
            1 => "SUSPENDED",
            _ => "ACTIVE",
        };
        // The last CHANGED users changed after the benchmark's cursor.
        let last_updated = if n >= users - CHANGED {
            CHANGED_AT
        } else {
            OLD
        };
        statuses.push(status);
        updated.push(last_updated);
        let mut mine = Vec::new();
        for g in [n % groups, (n * 7 + 3) % groups] {
            if !mine.contains(&g) {
                mine.push(g);
                members[g].push(n);
            }
        }
        groups_of.push(mine);
        okta_users.push(
            serde_json::json!({
                "id": format!("00u{n:07}"),
                "status": status,
                "created": "2025-06-24T16:39:18.000Z",
                "activated": "2025-06-24T16:39:19.000Z",
                "statusChanged": "2025-06-24T16:39:19.000Z",
                "lastLogin": null,
                "lastUpdated": last_updated,
                "passwordChanged": null,
                "type": {"id": "oty1"},
                "profile": {
                    "firstName": format!("Given{n}"),
                    "lastName": "Person",
                    "email": format!("user{n}@example.com"),
                    "login": format!("user{n}@example.com"),
                    "department": "Engineering"
                },
                "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
                "_links": {"self": {"href": format!("https://acme.okta.com/api/v1/users/00u{n:07}")}}
            })
            .to_string(),
        );
        graph_users.push(
            serde_json::json!({
                "id": format!("u{n:07}"),
                "userPrincipalName": format!("user{n}@contoso.com"),
                "mail": format!("user{n}@contoso.com"),
                "givenName": format!("Given{n}"),
                "surname": "Person",
                "displayName": format!("Given{n} Person"),
                "accountEnabled": status == "ACTIVE",
                "department": "Engineering",
                "employeeId": null,
                "userType": "Member"
            })
            .to_string(),
        );
    }
    let pick = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..users)
            .filter(|&n| keep(n))
            .map(|n| okta_users[n].clone())
            .collect()
    };
    let okta_plain = pick(&|n| statuses[n] != "DEPROVISIONED");
    let okta_deprovisioned = pick(&|n| statuses[n] == "DEPROVISIONED");
    let okta_changed = pick(&|n| updated[n] == CHANGED_AT);
    Data {
        base: String::new(),
        okta_users,
        graph_users,
        okta_plain,
        okta_deprovisioned,
        okta_changed,
        members,
        groups_of,
        requests: AtomicU64::new(0),
    }
}

fn okta_group(g: usize) -> String {
    serde_json::json!({
        "id": format!("00g{g:05}"),
        "created": OLD, "lastUpdated": OLD, "lastMembershipUpdated": OLD,
        "objectClass": ["okta:user_group"], "type": "OKTA_GROUP",
        "profile": {"name": format!("Group {g}"), "description": null}
    })
    .to_string()
}

fn graph_group(g: usize) -> String {
    serde_json::json!({"id": format!("g{g:05}"), "displayName": format!("Group {g}")}).to_string()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// An Okta page: a JSON array and `Link` headers (self, and next while more).
fn okta_page(data: &Data, uri: &Uri, items: &[String], limit: usize) -> Response<Body> {
    let q = query(uri);
    let start: usize = q.get("after").map_or(0, |a| a.parse().unwrap());
    let end = (start + limit).min(items.len());
    let body = format!("[{}]", items[start..end].join(","));
    let mut response = Response::builder()
        .header("content-type", "application/json")
        .header("x-rate-limit-limit", "600")
        .header("x-rate-limit-remaining", "599")
        .header("x-rate-limit-reset", "4102444800")
        .header("link", format!("<{}{}>; rel=\"self\"", data.base, uri));
    if end < items.len() {
        let mut next = url::Url::parse(&format!("{}{}", data.base, uri.path())).unwrap();
        next.query_pairs_mut()
            .extend_pairs(q.iter().filter(|(k, _)| *k != "after"))
            .append_pair("after", &end.to_string());
        response = response.header("link", format!("<{next}>; rel=\"next\""));
    }
    response.body(Body::from(body)).unwrap()
}

fn graph_page(data: &Data, uri: &Uri, items: &[String], top: usize) -> Response<Body> {
    let q = query(uri);
    let start: usize = q.get("$skiptoken").map_or(0, |a| a.parse().unwrap());
    let end = (start + top).min(items.len());
    let next = if end < items.len() {
        let mut next = url::Url::parse(&format!("{}{}", data.base, uri.path())).unwrap();
        next.query_pairs_mut()
            .extend_pairs(q.iter().filter(|(k, _)| *k != "$skiptoken"))
            .append_pair("$skiptoken", &end.to_string());
        format!(",\"@odata.nextLink\":\"{next}\"")
    } else {
        String::new()
    };
    let body = format!(
        "{{\"@odata.context\":\"{}/v1.0/$metadata#users\",\"value\":[{}]{next}}}",
        data.base,
        items[start..end].join(",")
    );
    json_response(body)
}

fn json_response(body: String) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn index(id: &str, prefix: &str) -> usize {
    id.trim_start_matches(prefix).parse().unwrap()
}

async fn handle(State(data): State<Arc<Data>>, method: Method, uri: Uri) -> Response<Body> {
    data.requests.fetch_add(1, Ordering::Relaxed);
    let path = uri.path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q = query(&uri);
    let limit = |default: usize| q.get("limit").map_or(default, |l| l.parse().unwrap());
    match (method.as_str(), segments.as_slice()) {
        // ---- Okta ----
        ("GET", ["api", "v1", "users"]) => {
            let selected = if q.contains_key("search") {
                &data.okta_deprovisioned
            } else if let Some(f) = q.get("filter") {
                // lastUpdated gt "<cursor - overlap>": only the changed users are later.
                assert!(f.split('"').nth(1).unwrap() < CHANGED_AT, "{f}");
                &data.okta_changed
            } else {
                &data.okta_plain
            };
            okta_page(&data, &uri, selected, limit(200))
        }
        ("GET", ["api", "v1", "groups"]) => {
            let groups: Vec<String> = if q.contains_key("filter") {
                Vec::new()
            } else {
                (0..data.members.len()).map(okta_group).collect()
            };
            okta_page(&data, &uri, &groups, limit(200))
        }
        ("GET", ["api", "v1", "groups", id, "users"]) => {
            let g = index(id, "00g");
            let users: Vec<String> = data.members[g]
                .iter()
                .map(|&n| data.okta_users[n].clone())
                .collect();
            okta_page(&data, &uri, &users, limit(1000))
        }
        ("GET", ["api", "v1", "users", id, "groups"]) => {
            let n = index(id, "00u");
            let groups: Vec<String> = data.groups_of[n].iter().map(|&g| okta_group(g)).collect();
            okta_page(&data, &uri, &groups, limit(200))
        }
        // ---- Microsoft identity platform + Graph ----
        ("POST", [_, "oauth2", "v2.0", "token"]) => json_response(
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"bench-graph-token"}"#
                .to_owned(),
        ),
        ("GET", ["v1.0", "users"]) => match q.get("$filter") {
            Some(f) => {
                let users: Vec<String> = (0..data.graph_users.len())
                    .filter(|n| f.contains(&format!("'u{n:07}'")))
                    .map(|n| data.graph_users[n].clone())
                    .collect();
                graph_page(&data, &uri, &users, 999)
            }
            None => graph_page(&data, &uri, &data.graph_users, 999),
        },
        ("GET", ["v1.0", "groups"]) => {
            let groups: Vec<String> = (0..data.members.len()).map(graph_group).collect();
            graph_page(&data, &uri, &groups, 999)
        }
        ("GET", ["v1.0", "groups", id, "transitiveMembers"]) => {
            let g = index(id, "g");
            let members: Vec<String> = data.members[g]
                .iter()
                .map(|n| format!("{{\"@odata.type\":\"#microsoft.graph.user\",\"id\":\"u{n:07}\"}}"))
                .collect();
            graph_page(&data, &uri, &members, 999)
        }
        ("GET", ["v1.0", "users", id, "transitiveMemberOf"]) => {
            let n = index(id, "u");
            let groups: Vec<String> = data.groups_of[n].iter().map(|&g| graph_group(g)).collect();
            graph_page(&data, &uri, &groups, 999)
        }
        ("GET", ["v1.0", resource @ ("users" | "groups"), "delta"]) => {
            let token = q.get("$deltatoken").cloned().unwrap_or_default();
            let items: Vec<String> = if *resource == "users" && token == "since" {
                let users = data.graph_users.len();
                (users - CHANGED..users)
                    .map(|n| format!("{{\"@odata.type\":\"#microsoft.graph.user\",\"id\":\"u{n:07}\",\"accountEnabled\":false}}"))
                    .collect()
            } else {
                Vec::new()
            };
            json_response(format!(
                "{{\"@odata.context\":\"{0}/v1.0/$metadata#{resource}\",\"value\":[{1}],\
                 \"@odata.deltaLink\":\"{0}/v1.0/{resource}/delta?$deltatoken=next\"}}",
                data.base,
                items.join(",")
            ))
        }
        _ => Response::builder()
            .status(404)
            .body(Body::from(format!("no route for {method} {path}")))
            .unwrap(),
    }
}

async fn serve(mut data: Data) -> Arc<Data> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    data.base = format!("http://{}", listener.local_addr().unwrap());
    let data = Arc::new(data);
    let app = Router::new().fallback(handle).with_state(Arc::clone(&data));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    data
}

fn report(provider: &str, what: &str, requests: u64, elapsed: Duration, extra: serde_json::Value) {
    let mut line = serde_json::json!({
        "bench": "connectors",
        "provider": provider,
        "what": what,
        "requests": requests,
        "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
    });
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    println!("{line}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("ldap") {
        let users: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(50_000);
        let groups: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200);
        return ldap(users, groups).await;
    }
    if args.first().map(String::as_str) == Some("scim") {
        let users: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(50_000);
        let groups: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200);
        return scim(users, groups).await;
    }
    let users: usize = args.first().and_then(|n| n.parse().ok()).unwrap_or(50_000);
    let groups: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let data = serve(build(users, groups)).await;
    let url: url::Url = data.base.parse().unwrap();

    // ---- Okta ----
    let okta = |concurrency: usize| {
        OktaSource::new(OktaSettings {
            url: url.clone(),
            auth: OktaAuth::Ssws(Secret::Inline("bench-ssws".to_owned().into())),
            app_id: None,
            scope_groups: Vec::new(),
            other_groups: Vec::new(),
            distinct_groups: Vec::new(),
            required_groups: Vec::new(),
            max_concurrency: concurrency,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            overlap: Duration::from_secs(300),
            user_name: Default::default(),
            ca_file: None,
        })
    };
    let source = okta(8);
    let started = Instant::now();
    let snapshot = source.snapshot().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(snapshot.identities.len(), users);
    let requests = source.stats().requests;
    // Okta's documented per-minute limits: /api/v1/users 600, /api/v1/groups 600.
    let user_requests = (users - users / 100).div_ceil(200) + (users / 100).div_ceil(200);
    report(
        "okta",
        "snapshot",
        requests,
        elapsed,
        serde_json::json!({
            "users": users, "groups": groups, "max_concurrency": 8,
            "user_list_requests": user_requests,
            "rate_limit_floor_seconds": 0,
            "note": "every bucket stays under its 600/min window; the floor is latency: the user list pages sequentially (cursor)",
        }),
    );
    let cursor = "okta-v1:2026-11-30T01:00:00.000Z";
    let source = okta(8);
    let started = Instant::now();
    let changes = source.changes_since(Some(cursor)).await.unwrap();
    let elapsed = started.elapsed();
    let DirectoryChanges::Delta { changed, .. } = changes else {
        panic!("expected a delta");
    };
    assert_eq!(changed.len(), CHANGED);
    report(
        "okta",
        "changes_since",
        source.stats().requests,
        elapsed,
        serde_json::json!({"changed": changed.len()}),
    );

    // ---- Entra ----
    let entra = |rps: u32| {
        EntraSource::new(EntraSettings {
            tenant_id: "bench-tenant".into(),
            client_id: "bench-client".into(),
            auth: EntraAuth::ClientSecret(Secret::Inline("bench-secret".to_owned().into())),
            app_id: None,
            graph_url: Some(url.clone()),
            login_url: Some(url.clone()),
            scope_groups: Vec::new(),
            other_groups: Vec::new(),
            distinct_groups: Vec::new(),
            required_groups: Vec::new(),
            max_concurrency: 4,
            requests_per_second: rps,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            include_guests: true,
            user_name: Default::default(),
            ca_file: None,
        })
    };
    for rps in [50, 0] {
        let source = entra(rps);
        let started = Instant::now();
        let snapshot = source.snapshot().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(snapshot.identities.len(), users);
        let requests = source.stats().requests;
        // Graph directory read budget for a tenant over 500 users: 8,000 resource
        // units per 10 s; GET users 2 units, transitiveMembers 5.
        let user_pages = users.div_ceil(999) as u64;
        let member_pages: u64 = data
            .members
            .iter()
            .map(|m| m.len().max(1).div_ceil(999) as u64)
            .sum();
        let units = user_pages * 2 + groups.div_ceil(999) as u64 * 2 + member_pages * 5;
        report(
            "entra",
            "snapshot",
            requests,
            elapsed,
            serde_json::json!({
                "users": users, "groups": groups, "max_concurrency": 4,
                "requests_per_second": rps,
                "resource_units": units,
                "rate_limit_floor_seconds": (units.saturating_sub(1) / 8000) * 10,
            }),
        );
    }
    let source = entra(50);
    let base = &data.base;
    let cursor = format!(
        "entra-v1:{}",
        serde_json::json!({
            "users": format!("{base}/v1.0/users/delta?$deltatoken=since"),
            "groups": format!("{base}/v1.0/groups/delta?$deltatoken=since"),
        })
    );
    let started = Instant::now();
    let changes = source.changes_since(Some(&cursor)).await.unwrap();
    let elapsed = started.elapsed();
    let DirectoryChanges::Delta { changed, .. } = changes else {
        panic!("expected a delta");
    };
    assert_eq!(changed.len(), CHANGED);
    report(
        "entra",
        "changes_since",
        source.stats().requests,
        elapsed,
        serde_json::json!({"changed": changed.len(), "token_requests": 1}),
    );
    println!(
        "{}",
        serde_json::json!({"bench": "connectors", "fake_server_requests": data.requests.load(Ordering::Relaxed)})
    );
}

/// `ldap USERS GROUPS`: snapshots of the slapd `scripts/bench-ldap.sh` seeded
/// (`SEATWARDEN_LDAP_URL`, `SEATWARDEN_LDAP_CA`), over plain LDAP and StartTLS.
async fn ldap(users: usize, groups: usize) {
    let url = std::env::var("SEATWARDEN_LDAP_URL")
        .unwrap_or_else(|_| panic!("SEATWARDEN_LDAP_URL is not set: run scripts/bench-ldap.sh"));
    let ca = std::env::var("SEATWARDEN_LDAP_CA")
        .ok()
        .map(std::path::PathBuf::from);
    let settings = |start_tls: bool| LdapSettings {
        url: url.clone(),
        start_tls,
        ca_file: if start_tls { ca.clone() } else { None },
        bind_dn: "cn=seatwarden,ou=services,dc=example,dc=com".to_owned(),
        bind_password: Secret::Inline("interop-bind-secret".to_owned().into()),
        base_dn: "ou=people,dc=example,dc=com".to_owned(),
        group_base_dn: "ou=groups,dc=example,dc=com".to_owned(),
        flavor: LdapFlavor::OpenLdap,
        user_filter: LdapFlavor::OpenLdap.default_user_filter("mail"),
        group_filter: LdapFlavor::OpenLdap.default_group_filter().to_owned(),
        disabled_filter: None,
        id_attribute: LdapFlavor::OpenLdap.default_id_attribute().to_owned(),
        user_name_attribute: LdapFlavor::OpenLdap
            .default_user_name_attribute()
            .to_owned(),
        page_size: 500,
        scope_groups: Vec::new(),
        other_groups: Vec::new(),
        distinct_groups: Vec::new(),
        required_groups: Vec::new(),
        timeout: Duration::from_secs(60),
        retry: RetryPolicy::default(),
    };
    for start_tls in [false, true] {
        let source = LdapSource::new(settings(start_tls));
        let started = Instant::now();
        let snapshot = source.snapshot().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(snapshot.identities.len(), users);
        let memberships: usize = snapshot.identities.iter().map(|i| i.groups.len()).sum();
        let locked = snapshot
            .identities
            .iter()
            .filter(|i| i.status != seatwarden::model::IdentityStatus::Active)
            .count();
        report(
            "ldap (slapd)",
            if start_tls {
                "snapshot, StartTLS"
            } else {
                "snapshot"
            },
            // One search for users, one for groups, in pages of 500.
            (users.div_ceil(500) + groups.div_ceil(500)) as u64,
            elapsed,
            serde_json::json!({
                "users": users, "groups": groups, "memberships": memberships,
                "suspended": locked, "peak_rss_mib": peak_rss_mib(),
            }),
        );
    }
}

/// A SCIM provider holding `users` people (1% inactive), each in two of `groups`
/// groups: seatwarden's sandbox in this process, answering at once. The time is
/// seatwarden's reading plus the sandbox's serving, on the same two cores.
async fn scim(users: usize, group_count: usize) {
    use seatwarden::directory::{ScimDirectorySettings, ScimDirectorySource};
    use seatwarden::model::{Account, WorkspaceGroup, WorkspaceSnapshot};
    use seatwarden::sandbox::{Sandbox, SandboxOptions};

    let accounts: Vec<Account> = (0..users)
        .map(|n| Account {
            id: format!("u{n:07}"),
            user_name: format!("user{n}@example.com"),
            external_id: Some(format!("hr-{n}")),
            given_name: Some(format!("Given{n}")),
            family_name: Some("Family".to_owned()),
            display_name: Some(format!("Given{n} Family")),
            email: Some(format!("user{n}@example.com")),
            active: n % 100 != 0,
            roles: Vec::new(),
        })
        .collect();
    let groups: Vec<WorkspaceGroup> = (0..group_count)
        .map(|g| WorkspaceGroup {
            id: format!("g{g:04}"),
            display_name: format!("Group {g}"),
            members: (0..users)
                .filter(|n| n % group_count == g || (n / group_count) % group_count == g)
                .map(|n| format!("u{n:07}"))
                .collect(),
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: "bench-scim".to_owned(),
            ..SandboxOptions::default()
        },
        WorkspaceSnapshot { accounts, groups },
    )
    .await
    .unwrap();
    for (page_size, max_concurrency) in [(100, 4), (1000, 4)] {
        let before = sandbox.stats().requests;
        let source = ScimDirectorySource::new(ScimDirectorySettings {
            url: sandbox.base_url(),
            token: Secret::Inline("bench-scim".to_owned().into()),
            page_size,
            pagination: seatwarden::workspace::Pagination::Auto,
            max_concurrency,
            requests_per_second: 0,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            scope_groups: Vec::new(),
            other_groups: Vec::new(),
            distinct_groups: Vec::new(),
            required_groups: Vec::new(),
            ca_file: None,
            missing_active: Default::default(),
        });
        let started = Instant::now();
        let snapshot = source.snapshot().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(snapshot.identities.len(), users);
        assert!(snapshot.complete);
        let suspended = snapshot
            .identities
            .iter()
            .filter(|i| i.status != seatwarden::model::IdentityStatus::Active)
            .count();
        report(
            "scim",
            "snapshot",
            sandbox.stats().requests - before,
            elapsed,
            serde_json::json!({
                "users": users, "groups": group_count, "page_size": page_size,
                "max_concurrency": max_concurrency, "suspended": suspended,
                "peak_rss_mib": peak_rss_mib(),
            }),
        );
    }
    sandbox.shutdown().await;
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
