//! Session 63, second reader of the capped-members changes: a workspace that
//! lists only active members of a group while a deactivated account's own
//! `groups` (RFC 7643 §4.1.2) still names it. Read as `review_s62_wsread`
//! reads a wiremock workspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use wiremock::MockServer;

use crate::review_s61_conn::mount_group_listing;
use crate::review_s62_wsread::{self as wsread, ENGINEERING, holding, mount_group_read};

/// Each action of `plan` as its name and the members it adds or removes.
fn actions(plan: &seatwarden::model::Plan) -> Vec<(String, Vec<String>)> {
    plan.actions
        .iter()
        .map(|a| {
            let members = match &a.kind {
                seatwarden::model::ActionKind::AddMembers { members, .. } => {
                    members.iter().map(|m| format!("{m:?}")).collect()
                }
                seatwarden::model::ActionKind::RemoveMembers { members, .. } => members.clone(),
                _ => Vec::new(),
            };
            (a.kind.name().to_owned(), members)
        })
        .collect()
}

/// Cy's account is deactivated in the workspace; the directory has him
/// active, but he left Engineering. The workspace group lists only its active
/// members (ada, ben) while cy's own `groups` names it. The plan reactivates
/// him and must take him out of Engineering: read from the group alone, he
/// came back with a group no mapping gives him, and the plan said nothing.
#[tokio::test]
async fn a_reactivated_account_left_out_of_a_managed_group_it_must_leave_is_removed() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let eng: &[(&str, &str)] = &[ENGINEERING];
    let mut users = wsread::users(&ws, "Viewer", [eng, eng, eng]);
    users[2]["active"] = json!(false);
    wsread::mount_users(&ws, users).await;
    let active_only = holding(&ws, "g-eng", "Engineering", &["p1", "p2"]);
    mount_group_listing(&ws, vec![active_only.clone()]).await;
    mount_group_read(&ws, active_only).await;
    let config = wsread::config(
        dir.path(),
        &ws,
        &wsread::directory([&["Engineering"], &["Engineering"], &[]]),
        "",
        "Viewer",
    );

    let plan = wsread::plan(&config).await;
    let actions = actions(&plan);
    assert!(
        actions.iter().any(|(name, _)| name == "reactivate"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("remove_members".to_owned(), vec!["p3".to_owned()])),
        "{actions:?}"
    );
}

/// Cy's account is deactivated, he is active in the directory and still in
/// Engineering, and so is his account by its own `groups`: reactivated, he
/// is not added again to a group he is in (the group listed only ada and ben).
#[tokio::test]
async fn a_reactivated_account_left_out_of_a_managed_group_it_is_in_is_not_added_again() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let eng: &[(&str, &str)] = &[ENGINEERING];
    let mut users = wsread::users(&ws, "Viewer", [eng, eng, eng]);
    users[2]["active"] = json!(false);
    wsread::mount_users(&ws, users).await;
    let active_only = holding(&ws, "g-eng", "Engineering", &["p1", "p2"]);
    mount_group_listing(&ws, vec![active_only.clone()]).await;
    mount_group_read(&ws, active_only).await;
    let config = wsread::config(
        dir.path(),
        &ws,
        &wsread::directory([&["Engineering"]; 3]),
        "",
        "Viewer",
    );

    let plan = wsread::plan(&config).await;
    let actions = actions(&plan);
    assert_eq!(
        actions,
        [("reactivate".to_owned(), Vec::new())],
        "{:#?}",
        plan.actions
    );
}
