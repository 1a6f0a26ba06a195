//! `check-config --connect` reads each directory connector's first page as a run
//! reads it: what passes the check is what a run accepts. Okta and Entra as
//! wiremock servers answering with their documented shapes (`okta.rs`,
//! `entra.rs`), a SCIM directory as a wiremock SCIM service provider, and LDAP
//! as `ldap_ad.rs`'s fake Active Directory. For each, an answer a run refuses
//! (an Okta user without `status`, a Graph user without `accountEnabled`, a
//! SCIM User with a blank `userName`, an AD user without `accountExpires`)
//! fails the probe with the run's own error, naming the request and the
//! problem; what a run skips (a guest with `include_guests = false`) passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{Directory, EntraSource, OktaSource, ScimDirectorySettings};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An Okta org answering every listing a probe reads (users, groups, the
/// app's users and groups) with one page holding `users`, `groups`, and one
/// assignment each.
async fn okta_org(users: Vec<Value>, groups: Vec<Value>) -> MockServer {
    let server = MockServer::start().await;
    let page = |items: Vec<Value>| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_json(Value::Array(items))
    };
    let app_user = json!({
        "id": "00u1", "externalId": null, "scope": "USER", "status": "ACTIVE",
        "credentials": {"userName": "ada@example.com"}
    });
    let app_group = json!({"id": "00g1", "priority": 0, "profile": {}});
    for (route, items) in [
        ("/api/v1/users", users),
        ("/api/v1/groups", groups),
        ("/api/v1/apps/0oa1app/users", vec![app_user]),
        ("/api/v1/apps/0oa1app/groups", vec![app_group]),
    ] {
        Mock::given(method("GET"))
            .and(path(route))
            .respond_with(page(items))
            .mount(&server)
            .await;
    }
    server
}

async fn okta_probe(users: Vec<Value>, groups: Vec<Value>) -> Result<Vec<String>, String> {
    use crate::okta::{settings, ssws};
    let server = okta_org(users, groups).await;
    let mut s = settings(&server, ssws());
    s.app_id = Some("0oa1app".into());
    Directory::Okta(OktaSource::new(s))
        .probe(&|_| {})
        .await
        .map_err(|e| e.to_string())
}

/// Okta: a user without `status`, or without `profile.login` and `email`, a
/// group without `profile.name`: each fails the probe as it fails a run,
/// naming the request; Okta's own shapes pass.
#[tokio::test]
async fn okta_pages_a_run_refuses_fail_the_probe() {
    use crate::okta::{okta_group, okta_user};
    let ada = okta_user("00u1", "ada@example.com", "ACTIVE");
    let group = okta_group("00g1", "Taskade Users");
    let proven = okta_probe(vec![ada.clone()], vec![group.clone()])
        .await
        .unwrap();
    assert_eq!(proven.len(), 6, "{proven:?}");

    let mut no_status = ada.clone();
    no_status.as_object_mut().unwrap().remove("status");
    let text = okta_probe(vec![no_status], vec![group.clone()])
        .await
        .unwrap_err();
    assert!(
        text.starts_with("GET /api/v1/users?limit=1: malformed response:")
            && text.contains("missing field `status`"),
        "{text}"
    );

    let mut no_login = ada.clone();
    no_login["profile"]["login"] = Value::Null;
    no_login["profile"]["email"] = Value::Null;
    let text = okta_probe(vec![no_login], vec![group.clone()])
        .await
        .unwrap_err();
    assert_eq!(
        text,
        "GET /api/v1/users: malformed response: user \"00u1\" has no profile.login"
    );

    let mut unnamed = group;
    unnamed["profile"] = json!({"description": null});
    let text = okta_probe(vec![ada], vec![unnamed]).await.unwrap_err();
    assert_eq!(
        text,
        "GET /api/v1/groups: malformed response: group \"00g1\" has no profile.name"
    );
}

/// The line `check-config --connect` prints for it: the directory FAILED, with
/// the request and what is wrong in the page.
#[tokio::test]
async fn the_failed_line_names_the_request_and_the_problem() {
    use crate::okta::{okta_group, okta_user};
    let mut no_status = okta_user("00u1", "ada@example.com", "ACTIVE");
    no_status.as_object_mut().unwrap().remove("status");
    let server = okta_org(vec![no_status], vec![okta_group("00g1", "Taskade Users")]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"okta\"\nurl = \"{}\"\ntoken = \"00a-ssws\"\n\n\
             [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t\"\n",
            server.uri()
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    let checks = seatwarden::connect::check(&config).await;
    let line = checks[0].line();
    assert!(
        line.starts_with(&format!(
            "directory  FAILED okta {}: GET /api/v1/users?limit=1: malformed response: \
             expected a JSON array of objects: missing field `status`",
            server.uri()
        )),
        "{line}"
    );
}

/// A Graph tenant answering a token and one page of `users` and `groups`.
async fn graph_tenant(users: Vec<Value>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/[^/]+/oauth2/v2\.0/token$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": "graph-token-1"
        })))
        .mount(&server)
        .await;
    for (collection, items) in [
        ("users", users),
        (
            "groups",
            vec![crate::entra::graph_group("g1", "Taskade Users")],
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/v1.0/{collection}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{collection}"),
                "value": items
            })))
            .mount(&server)
            .await;
    }
    server
}

/// Entra: a user without `accountEnabled` fails the probe as it fails a run;
/// a guest without it passes when guests are left out, as a run skips it.
#[tokio::test]
async fn an_entra_user_a_run_refuses_fails_the_probe_and_a_skipped_guest_does_not() {
    use crate::entra::{graph_user, secret, settings};
    let mut user = graph_user("a1", "ada@contoso.com", true);
    user.as_object_mut().unwrap().remove("accountEnabled");
    let server = graph_tenant(vec![user.clone()]).await;
    let text = Directory::Entra(EntraSource::new(settings(&server, secret())))
        .probe(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "GET /v1.0/users: malformed response: user \"a1\" has no accountEnabled"
    );

    user["userType"] = json!("Guest");
    let server = graph_tenant(vec![user]).await;
    let mut s = settings(&server, secret());
    s.include_guests = false;
    let proven = Directory::Entra(EntraSource::new(s.clone()))
        .probe(&|_| {})
        .await
        .unwrap();
    assert_eq!(proven.len(), 3, "{proven:?}");
    s.include_guests = true;
    let text = Directory::Entra(EntraSource::new(s))
        .probe(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("has no accountEnabled"), "{text}");
}

/// A SCIM directory whose first page of Users holds one with a blank
/// `userName`: the probe fails as a run does, naming the User.
#[tokio::test]
async fn a_scim_directory_user_with_a_blank_user_name_fails_the_probe() {
    let server = MockServer::start().await;
    let list = |resources: Vec<Value>| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/scim+json")
            .set_body_json(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": resources.len(),
                "startIndex": 1,
                "itemsPerPage": resources.len(),
                "Resources": resources,
            }))
    };
    Mock::given(method("GET"))
        .and(path("/scim/v2/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": 100},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": []
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list(vec![json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "u2",
            "userName": "  ",
            "active": true,
            "emails": [{"value": "ben@example.com", "type": "work", "primary": true}],
            "meta": {"resourceType": "User"}
        })]))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list(Vec::new()))
        .mount(&server)
        .await;
    let settings = ScimDirectorySettings {
        url: format!("{}/scim/v2", server.uri()).parse().unwrap(),
        token: seatwarden::directory::Secret::Inline("idp-token".to_owned().into()),
        page_size: 100,
        pagination: Default::default(),
        max_concurrency: 2,
        requests_per_second: 0,
        timeout: std::time::Duration::from_secs(10),
        retry: seatwarden::retry::RetryPolicy::immediate(0),
        scope_groups: Vec::new(),
        other_groups: Vec::new(),
        distinct_groups: Vec::new(),
        required_groups: Vec::new(),
        ca_file: None,
        missing_active: Default::default(),
    };
    let source = seatwarden::directory::ScimDirectorySource::new(settings);
    let run = source.snapshot().await.unwrap_err().to_string();
    let text = Directory::Scim(source)
        .probe(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(text, run, "the probe fails as the run does");
    assert!(
        text.ends_with("/scim/v2/Users/u2: malformed response: User \"u2\" has an empty userName (email \"ben@example.com\")"),
        "{text}"
    );
}

/// LDAP (the fake Active Directory): the probe asks for the attributes a run
/// asks for and reads the entry found as a run does: a user without
/// `accountExpires` fails it, naming the entry; the whole fake passes.
#[tokio::test]
async fn an_ldap_user_a_run_refuses_fails_the_probe() {
    use crate::ldap_ad::{Fake, USERS_BASE, asked_of, source, start_fake, withholding};
    let (port, asked) = start_fake(Fake::default()).await;
    let proven = Directory::Ldap(source(port)).probe(&|_| {}).await.unwrap();
    assert_eq!(proven.len(), 3, "{proven:?}");
    let searched = asked_of(&asked, USERS_BASE);
    assert!(
        searched[0].iter().any(|a| a == "accountExpires")
            && searched[0].iter().any(|a| a == "objectGUID"),
        "{searched:?}"
    );

    let (port, _) = start_fake(withholding("accountExpires")).await;
    let text = Directory::Ldap(source(port))
        .probe(&|_| {})
        .await
        .unwrap_err()
        .to_string();
    let run = source(port).snapshot().await.unwrap_err().to_string();
    assert_eq!(text, run, "the probe fails as the run does");
    assert!(
        text.contains("user \"CN=Ada Lovelace") && text.contains("no accountExpires"),
        "{text}"
    );
}
