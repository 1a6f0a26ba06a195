//! Session 61, second reading of the SCIM directory's nested Groups read by id
//! (RFC 7643 §4.2 members marked `"type": "Group"`): the Group a read answers
//! must be the one its parent names, or nesting (resolved by id) ties nothing
//! together. Each starts from ada, ben and cy provisioned from "Taskade Users"
//! ([`crate::scim_directory::three_provisioned`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::review_s61_conn::{all_active, group, mount_group_listing, mount_users, user_member};
use crate::scim_directory::{directory_failure, three_provisioned};

/// `GET /Groups/{asked}` answers the Group `answered_id` named `name` with `members`.
async fn mount_group_answering(
    idp: &MockServer,
    asked: &str,
    answered_id: &str,
    name: &str,
    members: serde_json::Value,
) {
    Mock::given(method("GET"))
        .and(path(format!("/scim/v2/Groups/{asked}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(group(
            idp,
            answered_id,
            name,
            Some(members),
        )))
        .mount(idp)
        .await;
}

/// "Taskade Users" holds ada and a nested Group "G2" the listing lacks; read
/// on its own, the provider answers it with the id "g2" (its GUIDs folded to
/// lower case, say). Nesting goes by id, so ben and cy, its members, were tied
/// to nothing and deactivated as out of scope. The run now fails naming the
/// request and both ids, and nobody loses access.
#[tokio::test]
async fn a_nested_group_answered_under_another_id_fails_the_run() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users(&idp, [Some(true); 3]).await;
    let nested = json!([user_member(&idp, "p1"), {"value": "G2", "type": "Group"}]);
    mount_group_listing(&idp, vec![group(&idp, "g1", "Taskade Users", Some(nested))]).await;
    let contractors = json!([user_member(&idp, "p2"), user_member(&idp, "p3")]);
    mount_group_answering(&idp, "G2", "g2", "Contractors", contractors).await;

    let error = directory_failure(&config).await.to_string();
    assert!(
        error.starts_with(&format!(
            "{}/scim/v2/Groups/G2: malformed response: Group \"Taskade Users\" has a member \
             \"G2\" marked as a Group, which the Groups listing does not hold; read on its own \
             it answered with the id \"g2\"",
            idp.uri()
        )),
        "{error}"
    );
    all_active(&workspace);
    workspace.shutdown().await;
}

/// Two nested Groups the listing lacks, each a member of the other, each
/// answered under another id than the one it is named by: every reference was
/// read again as a new Group, so the read never ended (a reconcile, and the
/// writer lock it holds, hung). It now ends at the first such answer.
#[tokio::test]
async fn a_cycle_of_nested_groups_answered_under_other_ids_ends() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users(&idp, [Some(true); 3]).await;
    let nested = json!([user_member(&idp, "p1"), {"value": "G2", "type": "Group"}]);
    mount_group_listing(&idp, vec![group(&idp, "g1", "Taskade Users", Some(nested))]).await;
    let g2 = json!([user_member(&idp, "p2"), {"value": "G3", "type": "Group"}]);
    mount_group_answering(&idp, "G2", "g2", "Contractors", g2).await;
    let g3 = json!([user_member(&idp, "p3"), {"value": "G2", "type": "Group"}]);
    mount_group_answering(&idp, "G3", "g3", "Vendors", g3).await;

    let error = tokio::time::timeout(Duration::from_secs(60), directory_failure(&config))
        .await
        .expect("the directory read ends")
        .to_string();
    assert!(error.contains("answered with the id \"g2\""), "{error}");
    all_active(&workspace);
    workspace.shutdown().await;
}
