//! Session 60, connectors against the providers' documented behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::scim_directory::{THREE, directory_failure, list_response, three_provisioned};

/// A SCIM directory whose Groups come without `members`, in the listing and
/// read on their own, while each User's own `groups` (RFC 7643 §4.1.2, shaped
/// as §8.2's full User shows it) names the scope group: read as an empty
/// group, everyone would fall out of scope and be deactivated. The run fails
/// naming the Group and who names it, and nobody loses access.
#[tokio::test]
async fn a_scope_group_shown_without_members_that_users_name_fails_the_run() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    let group_ref = format!("{}/scim/v2/Groups/g1", idp.uri());
    let users: Vec<serde_json::Value> = THREE
        .iter()
        .map(|(id, user_name)| {
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id, "userName": user_name, "active": true,
                "groups": [{
                    "value": "g1", "$ref": group_ref,
                    "display": "Taskade Users", "type": "direct",
                }],
                "meta": {"resourceType": "User"},
            })
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(json!(users)))
        .mount(&idp)
        .await;
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g1", "displayName": "Taskade Users",
        "meta": {"resourceType": "Group"},
    });
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list_response(json!([group])))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(group))
        .mount(&idp)
        .await;

    let error = directory_failure(&config).await.to_string();
    assert!(
        error.starts_with(&format!(
            "{}/scim/v2/Groups/g1: malformed response: Group \"Taskade Users\" shows no \
             members, in the listing or read on its own, yet the groups of User \"p1\" \
             (ada@example.com) and 2 other Users name it",
            idp.uri()
        )),
        "{error}"
    );
    let accounts = workspace.snapshot().accounts;
    assert_eq!(accounts.len(), 3);
    assert!(accounts.iter().all(|a| a.active), "{accounts:?}");
    workspace.shutdown().await;
}
