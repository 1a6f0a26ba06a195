//! Review (s43) of the sweep's incremental directory reads (`changes_since`) as a
//! security engineer asks of them: which ways of losing access does a change read
//! miss, or report wrongly, between two full reconciles?
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{DirectoryChanges, EntraSource};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::entra::{FakeGraph, mount_delta, secret, settings, small_tenant};

/// `small_tenant` with "Taskade Users" (g1), the scope group, a Microsoft 365
/// group with hidden membership: a1, a2 and a3 are its members.
fn hidden_scope_group() -> FakeGraph {
    let mut tenant = small_tenant();
    for (group, _) in &mut tenant.groups {
        if group["id"] == "g1" {
            group["visibility"] = json!("HiddenMembership");
            group["groupTypes"] = json!(["Unified"]);
        } else {
            group["visibility"] = json!("Public");
        }
    }
    tenant
}

/// What Graph answers an app without `Member.Read.Hidden`, silently: the hidden
/// group lists no member, and a2's memberships leave it out.
async fn take_member_read_hidden_away(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/g1/transitiveMembers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": []})))
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/a2/transitiveMemberOf"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"@odata.type": "#microsoft.graph.group", "id": "g3", "displayName": "All Company"}
        ]})))
        .with_priority(1)
        .mount(server)
        .await;
}

/// a2's department changed: `users/delta` lists them, and the sweep re-reads
/// their groups.
fn a2_changed() -> Vec<Vec<serde_json::Value>> {
    vec![vec![json!({
        "@odata.type": "#microsoft.graph.user",
        "id": "a2",
        "department": "Marketing"
    })]]
}

/// A full read fails loudly when a hidden-membership scope group lists no member
/// (the app lacks `Member.Read.Hidden`), but the sweep's delta did not: once the
/// permission was taken away after its cursor was stored (consent granted again
/// with a shorter list, say), it went on following delta links for ever. Graph
/// leaves the hidden group out of a re-read user's `transitiveMemberOf`, so any
/// member whose record changed looked out of scope and was deactivated within
/// minutes, and removals from the group never showed in `groups/delta`. The
/// cursor now records the hidden groups of interest, and each delta round lists
/// their members as the full read does: without the permission the sweep fails,
/// naming it, as the reconcile does.
#[tokio::test]
async fn an_entra_delta_fails_like_a_full_read_once_hidden_membership_is_unreadable() {
    let server = MockServer::start().await;
    hidden_scope_group().mount(&server).await;
    mount_delta(&server, "users", "latest", vec![vec![]]).await;
    mount_delta(&server, "groups", "latest", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let DirectoryChanges::Full { cursor, .. } = source.changes_since(None).await.unwrap() else {
        panic!("a first call reads the whole directory");
    };
    let cursor = cursor.unwrap();
    assert!(
        cursor.contains(r#""hidden":[{"id":"g1","name":"Taskade Users"}]"#),
        "{cursor}"
    );

    // With the permission, a delta round reads as before.
    mount_delta(&server, "users", "latest-next", a2_changed()).await;
    mount_delta(&server, "groups", "latest-next", vec![vec![]]).await;
    let changes = source.changes_since(Some(&cursor)).await.unwrap();
    let DirectoryChanges::Delta {
        changed,
        cursor: next,
        ..
    } = changes
    else {
        panic!("expected a delta, got {changes:?}");
    };
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, "a2");
    assert!(
        changed[0].groups.iter().any(|g| g == "Taskade Users"),
        "{changed:?}"
    );
    assert!(
        next.contains(r#""hidden":[{"id":"g1","name":"Taskade Users"}]"#),
        "the next cursor carries the hidden groups on: {next}"
    );

    // The permission taken away: the next round fails, naming it, rather than
    // report a2 out of scope.
    take_member_read_hidden_away(&server).await;
    let error = source.changes_since(Some(&cursor)).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("Member.Read.Hidden") && text.contains("\"Taskade Users\""),
        "{text}"
    );
}

/// A cursor stored by an older version does not say which groups of interest
/// have hidden membership: the sweep reads the whole directory once (which fails
/// loudly without `Member.Read.Hidden`) rather than follow it blind.
#[tokio::test]
async fn an_entra_cursor_that_does_not_record_hidden_groups_reads_in_full_once() {
    let server = MockServer::start().await;
    hidden_scope_group().mount(&server).await;
    take_member_read_hidden_away(&server).await;
    mount_delta(&server, "users", "U1", a2_changed()).await;
    mount_delta(&server, "groups", "G1", vec![vec![]]).await;
    mount_delta(&server, "users", "latest", vec![vec![]]).await;
    mount_delta(&server, "groups", "latest", vec![vec![]]).await;
    let base = server.uri();
    let older = format!(
        "entra-v1:{}",
        json!({
            "users": format!("{base}/v1.0/users/delta?$deltatoken=U1"),
            "groups": format!("{base}/v1.0/groups/delta?$deltatoken=G1"),
            "interest": ["g1", "g2"],
            "names": ["taskade editors", "taskade users"],
        })
    );
    let source = EntraSource::new(settings(&server, secret()));
    let error = source.changes_since(Some(&older)).await.unwrap_err();
    assert!(error.to_string().contains("Member.Read.Hidden"), "{error}");
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests
            .iter()
            .all(|r| r.url.path() != "/v1.0/users/a2/transitiveMemberOf"),
        "the delta was followed"
    );
}

/// A hidden-membership group of interest deleted since the last full read (a
/// mapping group, which the directory may lack) answers its member listing 404:
/// the round reads the whole directory, as for any group of interest deleted,
/// instead of failing every sweep on a listing that will never answer again.
#[tokio::test]
async fn an_entra_hidden_group_of_interest_deleted_since_reads_in_full() {
    let server = MockServer::start().await;
    let mut tenant = small_tenant();
    for (group, _) in &mut tenant.groups {
        if group["id"] == "g2" {
            group["visibility"] = json!("HiddenMembership");
            group["groupTypes"] = json!(["Unified"]);
        }
    }
    tenant.mount(&server).await;
    mount_delta(&server, "users", "latest", vec![vec![]]).await;
    mount_delta(&server, "groups", "latest", vec![vec![]]).await;
    let source = EntraSource::new(settings(&server, secret()));
    let DirectoryChanges::Full { cursor, .. } = source.changes_since(None).await.unwrap() else {
        panic!("a first call reads the whole directory");
    };
    let cursor = cursor.unwrap();
    assert!(
        cursor.contains(r#""hidden":[{"id":"g2","name":"Taskade Editors"}]"#),
        "{cursor}"
    );

    // "Taskade Editors" deleted.
    Mock::given(method("GET"))
        .and(path("/v1.0/groups/g2/transitiveMembers"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": "Request_ResourceNotFound",
            "message": "Resource 'g2' does not exist or one of its queried reference-property objects are not present."
        }})))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/groups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [
            {"id": "g1", "displayName": "Taskade Users"},
            {"id": "g3", "displayName": "All Company"}
        ]})))
        .with_priority(1)
        .mount(&server)
        .await;
    mount_delta(&server, "users", "latest-next", vec![vec![]]).await;
    mount_delta(
        &server,
        "groups",
        "latest-next",
        vec![vec![json!({
            "@odata.type": "#microsoft.graph.group",
            "id": "g2",
            "@removed": {"reason": "changed"}
        })]],
    )
    .await;
    let changes = source.changes_since(Some(&cursor)).await.unwrap();
    let DirectoryChanges::Full { cursor, .. } = changes else {
        panic!("expected a full read, got {changes:?}");
    };
    assert!(cursor.unwrap().contains(r#""hidden":[]"#));
}
