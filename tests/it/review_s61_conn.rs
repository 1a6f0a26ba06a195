//! Session 61, the SCIM directory against RFC 7643/7644-shaped answers: Group
//! `members` returned only on request, Users with and without `active`, and a
//! nested Group the Groups listing lacks. Each starts from ada, ben and cy
//! provisioned from "Taskade Users" ([`three_provisioned`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::scim_directory::{
    THREE, directory_failure, list_response, reconcile, three_provisioned,
};

const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// RFC 7643 §8.1-shaped Users, each with `active` as `active` gives it
/// (`None`: the attribute left out).
pub(crate) async fn mount_users(idp: &MockServer, active: [Option<bool>; 3]) {
    let users: Vec<Value> = THREE
        .iter()
        .zip(active)
        .map(|((id, user_name), active)| {
            let mut user = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id, "userName": user_name,
                "meta": {"resourceType": "User", "location": format!("{}/scim/v2/Users/{id}", idp.uri())},
            });
            if let Some(active) = active {
                user["active"] = json!(active);
            }
            user
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(json!(users)))
        .mount(idp)
        .await;
}

/// The provider answering afresh: the three Users with `active` as given (none
/// when `None`), all of them in "Taskade Users".
pub(crate) async fn answer_with_active(idp: &MockServer, active: [Option<bool>; 3]) {
    idp.reset().await;
    mount_users(idp, active).await;
    mount_group_listing(
        idp,
        vec![group(idp, "g1", "Taskade Users", Some(everyone(idp)))],
    )
    .await;
}

/// A Group as RFC 7643 §8.4 shows one, with `members` when given.
pub(crate) fn group(idp: &MockServer, id: &str, name: &str, members: Option<Value>) -> Value {
    let mut group = json!({
        "schemas": [GROUP_SCHEMA], "id": id, "displayName": name,
        "meta": {"resourceType": "Group", "location": format!("{}/scim/v2/Groups/{id}", idp.uri())},
    });
    if let Some(members) = members {
        group["members"] = members;
    }
    group
}

/// A User member of a Group, as RFC 7643 §8.4 shows one.
pub(crate) fn user_member(idp: &MockServer, id: &str) -> Value {
    json!({"value": id, "$ref": format!("{}/scim/v2/Users/{id}", idp.uri()), "type": "User"})
}

fn everyone(idp: &MockServer) -> Value {
    json!(
        THREE
            .iter()
            .map(|(id, _)| user_member(idp, id))
            .collect::<Vec<_>>()
    )
}

pub(crate) async fn mount_group_listing(idp: &MockServer, groups: Vec<Value>) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list_response(json!(groups)))
        .mount(idp)
        .await;
}

/// `GET /Groups/{id}` without `attributes` answers `plain`; with
/// `attributes=members`, `asked`.
async fn mount_group_reads(idp: &MockServer, id: &str, plain: Value, asked: Value) {
    Mock::given(method("GET"))
        .and(path(format!("/scim/v2/Groups/{id}")))
        .and(query_param_is_missing("attributes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(plain))
        .mount(idp)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/scim/v2/Groups/{id}")))
        .and(query_param("attributes", "members"))
        .respond_with(ResponseTemplate::new(200).set_body_json(asked))
        .mount(idp)
        .await;
}

pub(crate) fn all_active(workspace: &seatwarden::sandbox::Sandbox) {
    let accounts = workspace.snapshot().accounts;
    assert_eq!(accounts.len(), 3);
    assert!(accounts.iter().all(|a| a.active), "{accounts:?}");
}

/// A provider whose Group schema returns `members` only on request (RFC 7643
/// §7 `returned: "request"`): absent from the listing and from a plain read,
/// there when asked with `attributes=members` (RFC 7644 §3.4.2.5). No User
/// names its groups. Read as empty, everyone would be deactivated; the run
/// asks for the members and changes nothing.
#[tokio::test]
async fn group_members_returned_only_on_request_are_asked_for() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users(&idp, [Some(true); 3]).await;
    let bare = group(&idp, "g1", "Taskade Users", None);
    mount_group_listing(&idp, vec![bare.clone()]).await;
    mount_group_reads(
        &idp,
        "g1",
        bare,
        json!({"schemas": [GROUP_SCHEMA], "id": "g1", "members": everyone(&idp)}),
    )
    .await;

    let outcome = reconcile(&config).await;
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    all_active(&workspace);
    workspace.shutdown().await;
}

/// The same provider showing no Group's members even when asked: nothing
/// tells an empty group from hidden members, so the run fails naming the
/// request, and nobody loses access.
#[tokio::test]
async fn group_members_never_shown_even_when_asked_fail_the_run() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users(&idp, [Some(true); 3]).await;
    let bare = group(&idp, "g1", "Taskade Users", None);
    mount_group_listing(&idp, vec![bare.clone()]).await;
    mount_group_reads(&idp, "g1", bare.clone(), bare).await;

    let error = directory_failure(&config).await.to_string();
    assert!(
        error.starts_with(&format!(
            "{}/scim/v2/Groups/g1?attributes=members: malformed response: Group \"Taskade \
             Users\" came without a members attribute, in the listing, read on its own and \
             asked for with attributes=members, and no Group of the provider shows any member",
            idp.uri()
        )),
        "{error}"
    );
    all_active(&workspace);
    workspace.shutdown().await;
}

/// Not every run fails for an empty group: "Break Glass" (protected) is
/// really empty and this provider leaves empty `members` out (RFC 7643 §2.5),
/// while "Taskade Users" shows its members. The run goes on; nobody changes.
#[tokio::test]
async fn an_empty_group_left_out_by_a_provider_that_shows_members_is_empty() {
    let idp = MockServer::start().await;
    let (workspace, dir, _config) = three_provisioned(&idp).await;
    let config = crate::scim_directory::small_config(
        dir.path(),
        &idp,
        &workspace,
        "page_size = 2\n",
        "max_deprovision_percent = 100\nmax_directory_shrink_percent = 100\n\
         protected_groups = [\"Break Glass\"]\n",
    );
    idp.reset().await;
    mount_users(&idp, [Some(true); 3]).await;
    let break_glass = group(&idp, "g9", "Break Glass", None);
    mount_group_listing(
        &idp,
        vec![
            group(&idp, "g1", "Taskade Users", Some(everyone(&idp))),
            break_glass.clone(),
        ],
    )
    .await;
    mount_group_reads(&idp, "g9", break_glass.clone(), break_glass).await;

    let outcome = reconcile(&config).await;
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    all_active(&workspace);
    workspace.shutdown().await;
}

/// `active` is optional (RFC 7643 §4.1.1): ben's User comes without it while
/// ada's and cy's carry it (cy's `false`). Whether ben is enabled cannot be
/// told: the run fails naming his User, and cy is not deactivated on a
/// snapshot that could not be read whole.
#[tokio::test]
async fn a_user_without_active_among_users_with_it_fails_the_run() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    answer_with_active(&idp, [Some(true), None, Some(false)]).await;

    let error = directory_failure(&config).await.to_string();
    assert_eq!(
        error,
        format!(
            "{}/scim/v2/Users/p2: malformed response: User \"p2\" (ben@example.com) came \
             without an active attribute while 2 other Users of the listing have one: whether \
             they are enabled cannot be told, and read either way someone would keep or lose \
             access wrongly; map active for every User, or set directory.missing_active to \
             \"active\" or \"inactive\" (what the provider's absent active means)",
            idp.uri()
        )
    );
    all_active(&workspace);
    workspace.shutdown().await;
}

/// "Taskade Users" holds ada and the Group "Contractors" (RFC 7643 §4.2:
/// `type: "Group"`), which the Groups listing lacks. Contractors is read on
/// its own and ben and cy, in scope through it, keep their access.
#[tokio::test]
async fn a_nested_group_missing_from_the_listing_is_read_by_id() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users(&idp, [Some(true); 3]).await;
    let nested = json!([
        user_member(&idp, "p1"),
        {"value": "g2", "$ref": format!("{}/scim/v2/Groups/g2", idp.uri()), "type": "Group"},
    ]);
    mount_group_listing(&idp, vec![group(&idp, "g1", "Taskade Users", Some(nested))]).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(group(
            &idp,
            "g2",
            "Contractors",
            Some(json!([user_member(&idp, "p2"), user_member(&idp, "p3")])),
        )))
        .expect(1)
        .mount(&idp)
        .await;

    let outcome = reconcile(&config).await;
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    all_active(&workspace);
    workspace.shutdown().await;
}

/// The same nested Group, not found on its own either (404): its members
/// cannot be known, so the run fails naming it, and nobody loses access.
#[tokio::test]
async fn a_nested_group_that_cannot_be_read_fails_the_run() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users(&idp, [Some(true); 3]).await;
    mount_group_listing(
        &idp,
        vec![group(
            &idp,
            "g1",
            "Taskade Users",
            Some(json!([user_member(&idp, "p1"), {"value": "g2", "type": "Group"}])),
        )],
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g2"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "404", "detail": "Resource g2 not found",
        })))
        .mount(&idp)
        .await;

    let error = directory_failure(&config).await.to_string();
    assert!(
        error.starts_with(&format!(
            "{}/scim/v2/Groups/g2: malformed response: Group \"Taskade Users\" has a member \
             \"g2\" marked as a Group",
            idp.uri()
        )),
        "{error}"
    );
    all_active(&workspace);
    workspace.shutdown().await;
}

/// The workspace side: a managed group whose provider returns `members` only
/// on request (absent from the listing and a plain read) is asked for with
/// `attributes=members`. Read as empty, its members would be added again on
/// every run and an add never verified.
#[tokio::test]
async fn a_managed_workspace_group_with_members_only_on_request_is_asked_for() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(json!([crate::review_s39_scim::user(1)])))
        .mount(&server)
        .await;
    let bare = json!({"schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Engineering"});
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(list_response(json!([bare.clone()])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .and(query_param_is_missing("attributes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(bare))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .and(query_param("attributes", "members"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "schemas": [GROUP_SCHEMA], "id": "g1",
            "members": [{"value": "u1", "type": "User"}],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = crate::review_s39_scim::client_with(&server, |s| {
        s.managed_groups = vec!["Engineering".to_owned()];
    });
    let snapshot = client.snapshot(&|_| {}).await.unwrap();
    assert_eq!(snapshot.groups.len(), 1);
    assert_eq!(snapshot.groups[0].display_name, "Engineering");
    assert_eq!(snapshot.groups[0].members, ["u1"]);
}
