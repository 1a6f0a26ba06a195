//! Session 62, the SCIM directory against RFC 7643/7644-shaped answers: a
//! Group whose `members` the provider caps, a member with no `type` that is a
//! Group the listing lacks. Each starts from ada, ben and cy provisioned from
//! "Taskade Users" ([`three_provisioned`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::review_s61_conn::{all_active, group, mount_group_listing, user_member};
use crate::scim_directory::{
    THREE, directory_failure, list_response, reconcile, three_provisioned,
};

/// RFC 7643 §8.2-shaped Users, all active, each naming in its own `groups`
/// (§4.1.2) the Group "g1" ("Taskade Users").
async fn mount_users_in_g1(idp: &MockServer) {
    let users: Vec<Value> = THREE
        .iter()
        .map(|(id, user_name)| {
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id, "userName": user_name, "active": true,
                "groups": [{
                    "value": "g1", "display": "Taskade Users", "type": "direct",
                    "$ref": format!("{}/scim/v2/Groups/g1", idp.uri()),
                }],
                "meta": {"resourceType": "User", "location": format!("{}/scim/v2/Users/{id}", idp.uri())},
            })
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(json!(users)))
        .mount(idp)
        .await;
}

/// "Taskade Users" with the members `ids`.
fn taskade_users(idp: &MockServer, ids: &[&str]) -> Value {
    let members: Vec<Value> = ids.iter().map(|id| user_member(idp, id)).collect();
    group(idp, "g1", "Taskade Users", Some(json!(members)))
}

/// A provider that returns at most two members of a Group, in the listing
/// and on a read of its own, with no marker (RFC 7644 pages resources, not
/// an attribute's values). Every User's own `groups` names "Taskade Users":
/// cy, past the cap, would have been read out of scope and deactivated. The
/// run fails naming the Group and how many are missing; nobody changes.
#[tokio::test]
async fn a_group_whose_members_the_provider_caps_fails_the_run() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users_in_g1(&idp).await;
    let capped = taskade_users(&idp, &["p1", "p2"]);
    mount_group_listing(&idp, vec![capped.clone()]).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(capped))
        .mount(&idp)
        .await;

    let error = directory_failure(&config).await.to_string();
    assert!(
        error.starts_with(&format!(
            "{}/scim/v2/Groups/g1: malformed response: Group \"Taskade Users\" shows 2 \
             members, in the listing and read on its own, yet 1 of the 3 Users whose own \
             groups name it are not among them (User \"p3\" (cy@example.com) the first), in \
             two reads of the directory",
            idp.uri()
        )),
        "{error}"
    );
    all_active(&workspace);
    workspace.shutdown().await;
}

/// The same cap in the listing only: "Taskade Users" read on its own shows
/// all three, and the run goes on with them; nobody changes.
#[tokio::test]
async fn a_group_capped_only_in_the_listing_is_read_on_its_own() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_users_in_g1(&idp).await;
    mount_group_listing(&idp, vec![taskade_users(&idp, &["p1", "p2"])]).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(taskade_users(&idp, &["p1", "p2", "p3"])),
        )
        .mount(&idp)
        .await;

    let outcome = reconcile(&config).await;
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    all_active(&workspace);
    workspace.shutdown().await;
}

/// RFC 7643 §4.2 makes a member's `type` optional: "Taskade Users" holds ada
/// and "g2" with only a `value`, a Group the Groups listing lacks. It is read
/// by id as a Group ("Contractors", ben and cy), who keep their access; read
/// as nobody, both would have been deactivated. A `value` that is no User and
/// no Group (404, a User deleted since) is taken as no one and the run goes on.
#[tokio::test]
async fn an_untyped_member_that_is_a_group_the_listing_lacks_is_read_by_id() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    crate::review_s61_conn::mount_users(&idp, [Some(true); 3]).await;
    let members = json!([user_member(&idp, "p1"), {"value": "g2"}, {"value": "p9"}]);
    mount_group_listing(
        &idp,
        vec![group(&idp, "g1", "Taskade Users", Some(members))],
    )
    .await;
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
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/p9"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "404", "detail": "Resource p9 not found",
        })))
        .expect(1)
        .mount(&idp)
        .await;

    let outcome = reconcile(&config).await;
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    all_active(&workspace);
    workspace.shutdown().await;
}

/// `check-config --connect` refuses what the first run would: ben's User
/// comes without `active` while ada's and cy's carry it (RFC 7643 §4.1.1
/// makes it optional), and the check fails naming him and
/// `directory.missing_active`. Before, one User read proved nothing of it and
/// the check passed. The same provider sending `active` for all passes.
#[tokio::test]
async fn check_config_connect_refuses_users_with_and_without_active() {
    for (active, passes) in [
        ([Some(true), None, Some(false)], false),
        ([Some(true), Some(true), Some(false)], true),
    ] {
        let idp = MockServer::start().await;
        crate::review_s61_conn::mount_users(&idp, active).await;
        mount_group_listing(&idp, vec![taskade_users(&idp, &["p1", "p2", "p3"])]).await;
        let checked = crate::review_s58_lookalike::checked_scim_directory(&idp).await;
        let line = checked.line();
        assert_eq!(checked.passed(), passes, "{line}");
        if !passes {
            for part in [
                "/scim/v2/Users/p2: malformed response: User \"p2\" (ben@example.com) came \
                 without an active attribute while 2 other Users of the listing have one",
                "set directory.missing_active to \"active\" or \"inactive\"",
            ] {
                assert!(line.contains(part), "{part} not in {line}");
            }
        }
    }
}

/// Members hidden for one Group only: "Taskade Users" comes without a
/// `members` attribute in the listing, read on its own and asked for with
/// `attributes=members`, while "Engineering" shows its member and "Break
/// Glass" (protected, really empty) comes with `"members": []`, this
/// provider's empty group. Before, another Group showing members made
/// "Taskade Users" empty and all three were deactivated; the run fails
/// naming the request, and nobody changes.
#[tokio::test]
async fn members_hidden_for_one_group_of_a_provider_that_sends_empty_lists_fail_the_run() {
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
    crate::review_s61_conn::mount_users(&idp, [Some(true); 3]).await;
    let hidden = group(&idp, "g1", "Taskade Users", None);
    mount_group_listing(
        &idp,
        vec![
            hidden.clone(),
            group(
                &idp,
                "g5",
                "Engineering",
                Some(json!([user_member(&idp, "p1")])),
            ),
            group(&idp, "g9", "Break Glass", Some(json!([]))),
        ],
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(hidden))
        .mount(&idp)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups/g9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(group(
            &idp,
            "g9",
            "Break Glass",
            Some(json!([])),
        )))
        .mount(&idp)
        .await;

    let error = directory_failure(&config).await.to_string();
    assert!(
        error.starts_with(&format!(
            "{}/scim/v2/Groups/g1?attributes=members: malformed response: Group \"Taskade \
             Users\" came without a members attribute, in the listing, read on its own and \
             asked for with attributes=members, while this provider sends Group \"Break \
             Glass\" with \"members\": [] (its way to say empty)",
            idp.uri()
        )),
        "{error}"
    );
    all_active(&workspace);
    workspace.shutdown().await;
}
