//! Review of the deprovisioning sweep's directory deltas (session 52): Graph
//! answers whose shape the connector cannot use must fail the read, naming the
//! request and what was wrong, rather than be read as "nothing more" while the
//! stored delta link (or a listing taken as whole) moves past a leaver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryChanges, EntraSource};
use serde_json::json;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::entra::{cursor, graph_user, mount_delta, secret, settings, small_tenant};

/// One `groups/delta` page (for `$deltatoken=G1`) holding `group`, the last of
/// its round.
async fn mount_group_page(server: &MockServer, group: serde_json::Value) {
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/delta"))
        .and(query_param("$deltatoken", "G1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [group],
            "@odata.deltaLink": format!("{base}/v1.0/groups/delta?$deltatoken=G1-next"),
        })))
        .mount(server)
        .await;
}

/// A group's `members@delta` that is not an array (a proxy's rewrite, a shape
/// this version does not know) was skipped without a word: a removal from the
/// scope group in it was never seen, and the stored link moved past it, so the
/// leaver kept the workspace until the next reconcile. It fails the read,
/// naming the request, the group and the field.
#[tokio::test]
async fn an_entra_group_delta_whose_members_delta_is_not_an_array_fails_the_read() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    mount_group_page(
        &server,
        json!({
            "@odata.type": "#microsoft.graph.group",
            "id": "g1",
            "members@delta": {
                "@odata.type": "#microsoft.graph.user",
                "id": "a2",
                "@removed": {"reason": "deleted"}
            }
        }),
    )
    .await;
    let source = EntraSource::new(settings(&server, secret()));
    let changes = source
        .changes_since(Some(&cursor(&server, "U1", "G1")))
        .await;
    let error = match changes {
        Err(error) => error.to_string(),
        Ok(changes) => panic!("a members@delta that is not an array was read: {changes:?}"),
    };
    assert!(
        error.contains("/v1.0/groups/delta")
            && error.contains("members@delta")
            && error.contains("g1"),
        "{error}"
    );
}

/// A group's `displayName` that is not a string was read as the empty name: a
/// group renamed to a name of interest (a look-alike scope group) went unseen.
/// It fails the read, naming the group and the field.
#[tokio::test]
async fn an_entra_group_delta_whose_display_name_is_not_a_string_fails_the_read() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    mount_group_page(
        &server,
        json!({
            "@odata.type": "#microsoft.graph.group",
            "id": "g9",
            "displayName": {"value": "Taskade Users"}
        }),
    )
    .await;
    // The cursor records the groups of interest (g1, g2) as a full read leaves
    // it: another group's change alone keeps the delta.
    let base = server.uri();
    let cursor = format!(
        "entra-v1:{}",
        json!({
            "users": format!("{base}/v1.0/users/delta?$deltatoken=U1"),
            "groups": format!("{base}/v1.0/groups/delta?$deltatoken=G1"),
            "interest": ["g1", "g2"],
            "names": ["taskade editors", "taskade users"],
            "hidden": [],
        })
    );
    let source = EntraSource::new(settings(&server, secret()));
    let error = source
        .changes_since(Some(&cursor))
        .await
        .map(|changes| format!("read: {changes:?}"))
        .unwrap_or_else(|e| e.to_string());
    assert!(
        error.contains("/v1.0/groups/delta")
            && error.contains("displayName")
            && error.contains("g9"),
        "{error}"
    );
}

/// An `@odata.nextLink` that is not a string was taken for the end of the
/// listing: a full read cut after its first page looked whole, and the linked
/// people on the pages not read looked deleted to the sweep (deactivated while
/// still employed). It fails the read, naming the request.
#[tokio::test]
async fn an_entra_next_link_that_is_not_a_string_fails_the_read() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param_is_missing("$filter"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [graph_user("a1", "ada@contoso.com", true)],
            "@odata.nextLink": {"href": format!("{base}/v1.0/users?$skiptoken=1")},
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    let source = EntraSource::new(settings(&server, secret()));
    let read = source.snapshot().await;
    let error = match read {
        Err(error) => error.to_string(),
        Ok(snapshot) => panic!(
            "a listing cut at a nextLink that is not a string was read whole: {:?}",
            snapshot
                .identities
                .iter()
                .map(|i| &i.id)
                .collect::<Vec<_>>()
        ),
    };
    assert!(
        error.contains("/v1.0/users") && error.contains("@odata.nextLink"),
        "{error}"
    );

    // In a delta round too: the pages after it would be dropped.
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/v1.0/users/delta"))
        .and(query_param("$deltatoken", "U1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [],
            "@odata.nextLink": 2,
            "@odata.deltaLink": format!("{base}/v1.0/users/delta?$deltatoken=U1-next"),
        })))
        .mount(&server)
        .await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let changes = source
        .changes_since(Some(&cursor(&server, "U1", "G1")))
        .await;
    let error = match changes {
        Err(error) => error.to_string(),
        Ok(changes) => panic!("a delta round ended at a malformed nextLink: {changes:?}"),
    };
    assert!(
        error.contains("/v1.0/users/delta") && error.contains("@odata.nextLink"),
        "{error}"
    );
}

/// A delta link to another origin was refused as "@odata.nextLink points to
/// another origin": the error named a link the page did not have. It names the
/// `@odata.deltaLink`.
#[tokio::test]
async fn an_entra_delta_link_to_another_origin_is_named_as_the_delta_link() {
    let server = MockServer::start().await;
    small_tenant().mount(&server).await;
    mount_delta(&server, "users", "U1", vec![vec![]]).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/delta"))
        .and(query_param("$deltatoken", "G1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [],
            "@odata.deltaLink": "https://graph.elsewhere.invalid/v1.0/groups/delta?$deltatoken=x",
        })))
        .mount(&server)
        .await;
    let source = EntraSource::new(settings(&server, secret()));
    let changes = source
        .changes_since(Some(&cursor(&server, "U1", "G1")))
        .await;
    let error = match changes {
        Err(error) => error.to_string(),
        Ok(DirectoryChanges::Delta { cursor, .. }) => panic!("followed: {cursor}"),
        Ok(changes) => panic!("{changes:?}"),
    };
    assert!(
        error.contains("/v1.0/groups/delta")
            && error.contains("@odata.deltaLink points to another origin"),
        "{error}"
    );
}
