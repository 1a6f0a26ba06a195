//! Review of the directory connectors as an IT engineer runs them against a real
//! Okta org, Entra tenant or Active Directory (session 40): statuses a security
//! team reads as "left", and reads that must not lose anyone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryChanges, OktaSource};
use seatwarden::model::IdentityStatus;
use wiremock::MockServer;

use crate::okta::{LinkStyle, settings, small_org, ssws};

/// Okta deactivates asynchronously: until every app is deprovisioned the user
/// keeps their status (ACTIVE here, so the plain list shows them and the
/// DEPROVISIONED search does not) with `transitioningToStatus: DEPROVISIONED`.
/// A deactivation cannot be undone: the leaver is deprovisioned now, in a full
/// read and in the sweep's delta, not once Okta has finished with every app.
#[tokio::test]
async fn an_okta_user_whose_deactivation_is_under_way_is_deprovisioned() {
    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    let bob = org.users.iter_mut().find(|u| u["id"] == "00u2").unwrap();
    bob["transitioningToStatus"] = "DEPROVISIONED".into();
    bob["lastUpdated"] = "2026-11-30T02:00:00.000Z".into();
    org.mount(&server).await;
    let source = OktaSource::new(settings(&server, ssws()));
    let status_of = |identities: &[seatwarden::model::Identity], id: &str| {
        identities
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.status)
            .unwrap_or_else(|| panic!("{id} missing"))
    };

    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(
        status_of(&snapshot.identities, "00u2"),
        IdentityStatus::Deprovisioned
    );
    assert_eq!(
        status_of(&snapshot.identities, "00u1"),
        IdentityStatus::Active
    );

    let DirectoryChanges::Full {
        cursor: Some(cursor),
        ..
    } = source.changes_since(None).await.unwrap()
    else {
        panic!("expected a full read with a cursor");
    };
    let mut json: serde_json::Value =
        serde_json::from_str(cursor.strip_prefix("okta-v2:").unwrap()).unwrap();
    json["at"] = "2026-11-30T01:00:00.000Z".into();
    let changes = source
        .changes_since(Some(&format!("okta-v2:{json}")))
        .await
        .unwrap();
    let DirectoryChanges::Delta { changed, .. } = changes else {
        panic!("expected a delta, got {changes:?}");
    };
    assert_eq!(status_of(&changed, "00u2"), IdentityStatus::Deprovisioned);
}

/// An Okta token endpoint that, like the org authorization server, grants only
/// the scopes the service app was granted (`granted`), refusing a request that
/// names any other with 400 `invalid_scope`; records each asked scope.
async fn mount_okta_token_endpoint(
    server: &MockServer,
    granted: &'static [&'static str],
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, Request, ResponseTemplate};
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/token"))
        .respond_with(move |req: &Request| {
            let scope = crate::okta::form(req)["scope"].clone();
            seen.lock().unwrap().push(scope.clone());
            let refused: Vec<&str> = scope.split(' ').filter(|s| !granted.contains(s)).collect();
            if refused.is_empty() {
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "access_token": "access-token-1",
                    "scope": scope
                }))
            } else {
                ResponseTemplate::new(400).set_body_json(serde_json::json!({
                    "error": "invalid_scope",
                    "error_description":
                        format!("The following scopes are not allowed: {}", refused.join(", "))
                }))
            }
        })
        .mount(server)
        .await;
    asked
}

fn service_app() -> seatwarden::directory::OktaAuth {
    seatwarden::directory::OktaAuth::PrivateKeyJwt {
        client_id: "0oa-service-app".into(),
        key_id: None,
        private_key: seatwarden::directory::Secret::File {
            key: "directory.private_key_file",
            path: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/keys/test-rsa-pkcs8.pem"),
        },
    }
}

/// Okta's org authorization server refuses a token request that names a scope
/// the service app was not granted. Without `app_id` nothing needs
/// `okta.apps.read`, and a security team granting the least privilege leaves it
/// out: asked for anyway, every read failed with `invalid_scope`. With `app_id`
/// it is asked for, since the app assignments need it.
#[tokio::test]
async fn an_okta_service_app_asks_only_for_the_scopes_its_reads_need() {
    let server = MockServer::start().await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let asked = mount_okta_token_endpoint(&server, &["okta.users.read", "okta.groups.read"]).await;
    let snapshot = OktaSource::new(settings(&server, service_app()))
        .snapshot()
        .await
        .unwrap();
    assert_eq!(
        crate::okta::statuses(&snapshot),
        crate::okta::expected_small_org()
    );
    assert_eq!(
        asked.lock().unwrap().clone(),
        vec!["okta.users.read okta.groups.read".to_owned()]
    );

    let server = MockServer::start().await;
    let mut org = small_org(LinkStyle::SeparateLines);
    org.app_users = vec!["00u6".into()];
    org.app_groups = vec!["00g2".into()];
    org.mount(&server).await;
    let asked = mount_okta_token_endpoint(
        &server,
        &["okta.users.read", "okta.groups.read", "okta.apps.read"],
    )
    .await;
    let mut s = settings(&server, service_app());
    s.app_id = Some("0oa1app".into());
    let snapshot = OktaSource::new(s).snapshot().await.unwrap();
    let ids: Vec<&str> = snapshot.identities.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["00u1", "00u6"]);
    assert_eq!(
        asked.lock().unwrap().clone(),
        vec!["okta.users.read okta.groups.read okta.apps.read".to_owned()]
    );
}

/// Delta links stored under another `graph_url` (a local stand-in used while
/// setting up, then the real Graph with the same state database) or another
/// `tenant_id` are not this configuration's to follow. Refused, they failed every
/// sweep ("stored delta link points outside graph_url") until someone edited the
/// state database; followed with this tenant's token, another tenant's link says
/// nothing about this one. Either way the sweep reads the whole directory and
/// stores links of its own, which the next sweep follows.
#[tokio::test]
async fn entra_delta_links_stored_for_another_graph_or_tenant_read_in_full() {
    use crate::entra::{cursor, mount_delta, secret, settings, small_tenant};
    use seatwarden::directory::EntraSource;
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(&server, "users", "latest", vec![vec![]]).await;
    mount_delta(&server, "groups", "latest", vec![vec![]]).await;
    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    mount_delta(&server, "users", "latest-next", vec![vec![]]).await;
    mount_delta(&server, "groups", "latest-next", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));

    let elsewhere = format!(
        "entra-v1:{}",
        serde_json::json!({
            "users": "https://graph.stand-in.invalid/v1.0/users/delta?$deltatoken=U1",
            "groups": "https://graph.stand-in.invalid/v1.0/groups/delta?$deltatoken=G1",
        })
    );
    let other_tenant = {
        let mut json: serde_json::Value = serde_json::from_str(
            cursor(&server, "U1", "G1")
                .strip_prefix("entra-v1:")
                .unwrap(),
        )
        .unwrap();
        json["tenant"] = "11111111-0000-4000-8000-00000000bbbb".into();
        format!("entra-v1:{json}")
    };
    for stored in [elsewhere, other_tenant] {
        let changes = source.changes_since(Some(&stored)).await.unwrap();
        let DirectoryChanges::Full {
            snapshot,
            cursor: Some(fresh),
        } = changes
        else {
            panic!("{stored}: expected a full read with a cursor, got {changes:?}");
        };
        assert_eq!(snapshot.identities.len(), 4, "{stored}");
        assert!(
            fresh.contains(&server.uri()) && fresh.contains("latest-next"),
            "{fresh}"
        );
        // Links of its own, which the next sweep follows as a delta.
        let next = source.changes_since(Some(&fresh)).await.unwrap();
        assert!(matches!(next, DirectoryChanges::Delta { .. }), "{next:?}");
    }
    // The other tenant's links were never followed.
    let requests = server.received_requests().await.unwrap();
    assert!(
        !requests
            .iter()
            .any(|r| r.url.query().is_some_and(|q| q.contains("deltatoken=U1"))),
        "another tenant's delta link was followed"
    );
}

/// A delta page that names the next page (or the delta link) but carries no
/// `value` array (`null`, or left out by a gateway): taken as "no changes on this
/// page", its changes (a leaver's `accountEnabled: false`) were lost while the
/// stored link moved past them, so no sweep saw them until a full reconcile.
/// The read fails instead, naming the endpoint, and the cursor stays.
#[tokio::test]
async fn an_entra_delta_page_without_a_value_array_fails_the_sweep_read() {
    use crate::entra::{cursor, mount_delta, secret, settings, small_tenant};
    use seatwarden::directory::EntraSource;
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, ResponseTemplate};
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$deltatoken", "U1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "@odata.context": format!("{base}/v1.0/$metadata#users"),
            "@odata.nextLink": format!("{base}/v1.0/users/delta?$skiptoken=U1-page1"),
            "value": null
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$skiptoken", "U1-page1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "@odata.context": format!("{base}/v1.0/$metadata#users"),
            "@odata.deltaLink": format!("{base}/v1.0/users/delta?$deltatoken=U1-next"),
            "value": []
        })))
        .mount(&server)
        .await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let error = source
        .changes_since(Some(&cursor(&server, "U1", "G1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("/v1.0/users/delta") && error.contains("without a \"value\" array"),
        "{error}"
    );
}

/// An app registration missing a Graph permission gets 403
/// `Authorization_RequestDenied`, "Insufficient privileges to complete the
/// operation.", which names no permission: the engineer setting it up was left
/// to guess which of the three the failing read needs. The error says it.
#[tokio::test]
async fn an_entra_403_names_the_graph_permission_the_read_needs() {
    use crate::entra::{secret, settings, small_tenant};
    use seatwarden::directory::EntraSource;
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, ResponseTemplate};
    let denied = || {
        ResponseTemplate::new(403).set_body_json(serde_json::json!({"error": {
            "code": "Authorization_RequestDenied",
            "message": "Insufficient privileges to complete the operation.",
            "innerError": {
                "date": "2026-12-04T18:00:00",
                "request-id": "5b3a1c2e-0000-4000-8000-000000000001",
                "client-request-id": "5b3a1c2e-0000-4000-8000-000000000001"
            }
        }}))
    };
    for (denied_path, permission) in [
        (
            r"^/v1\.0/groups/[^/]+/transitiveMembers$",
            "GroupMember.Read.All",
        ),
        (r"^/v1\.0/users$", "User.Read.All"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path_regex(denied_path))
            .respond_with(denied())
            .with_priority(1)
            .mount(&server)
            .await;
        small_tenant().mount(&server).await;
        let error = EntraSource::new(settings(&server, secret()))
            .snapshot()
            .await
            .unwrap_err();
        assert!(!error.is_transient());
        let text = error.to_string();
        assert!(
            text.contains("HTTP 403")
                && text.contains("Insufficient privileges")
                && text.contains(&format!("application permission {permission}")),
            "{denied_path}: {text}"
        );
    }
    // With app_id, the service principal's assignments need Application.Read.All.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals"))
        .respond_with(denied())
        .with_priority(1)
        .mount(&server)
        .await;
    small_tenant().mount(&server).await;
    let mut s = settings(&server, secret());
    s.app_id = Some("00000000-0000-4000-8000-0000000000a1".into());
    let text = EntraSource::new(s)
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("Application.Read.All"), "{text}");
}

/// Okta refuses a read the credential may not make with 403 `E0000006`, "You do
/// not have permission to perform the requested action", which names neither
/// scope nor role. The error says what the refused read needs: for a service
/// app its scope and an admin role, for an API token its creator's admin role.
#[tokio::test]
async fn an_okta_403_says_what_the_refused_read_needs() {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, ResponseTemplate};
    let denied = || {
        ResponseTemplate::new(403).set_body_json(serde_json::json!({
            "errorCode": "E0000006",
            "errorSummary": "You do not have permission to perform the requested action",
            "errorLink": "E0000006",
            "errorId": "oae-sample",
            "errorCauses": []
        }))
    };
    // A service app without okta.groups.read: the group members are refused.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/groups/[^/]+/users$"))
        .respond_with(denied())
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    mount_okta_token_endpoint(&server, &["okta.users.read", "okta.groups.read"]).await;
    let text = OktaSource::new(settings(&server, service_app()))
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("HTTP 403 (E0000006)")
            && text.contains("scope okta.groups.read")
            && text.contains("admin role"),
        "{text}"
    );
    // An API token whose admin may not list users.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v1/users$"))
        .respond_with(denied())
        .with_priority(1)
        .mount(&server)
        .await;
    small_org(LinkStyle::SeparateLines).mount(&server).await;
    let error = OktaSource::new(settings(&server, ssws()))
        .snapshot()
        .await
        .unwrap_err();
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("HTTP 403 (E0000006)")
            && text.contains("API token")
            && text.contains("read users"),
        "{text}"
    );
}
