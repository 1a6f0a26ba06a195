//! Session 62, the workspace side of a capped Group: a SCIM workspace that
//! returns at most N of a Group's `members` (RFC 7644 pages resources, not an
//! attribute's values) with no marker, answered as RFC 7643/7644 shape it.
//! Ada (p1), Ben (p2) and Cy (p3) have accounts; their own `groups` (RFC 7643
//! §4.1.2) name the Groups they are in. Read short, a managed group's members
//! past the cap looked absent: a leaver of the group kept it (no removal
//! planned), a member was added again on every run, and a role group's member
//! past the cap read as holding no role.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use seatwarden::config::Config;
use seatwarden::model::{ActionKind, GroupRef};
use seatwarden::run::{self, Mode, RunError};
use seatwarden::store::{RunKind, RunStatus, Store};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::review_s61_conn::{group, mount_group_listing, user_member};
use crate::scim_directory::{THREE, list_response};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// The directory file: the three, active, in "Taskade Users" and in the
/// groups `groups` gives each (by index).
pub(crate) fn directory(groups: [&[&str]; 3]) -> Value {
    let users: Vec<Value> = THREE
        .iter()
        .zip(groups)
        .map(|((id, user_name), groups)| {
            let mut all = vec!["Taskade Users"];
            all.extend(groups);
            json!({
                "id": id, "userName": user_name, "email": user_name, "status": "active",
                "groups": all,
            })
        })
        .collect();
    json!({ "users": users })
}

/// A configuration for the workspace `ws` from the directory file `people`:
/// "Engineering" mapped to the workspace group "Engineering" with `role`, and
/// `workspace` keys added.
pub(crate) fn config(
    dir: &std::path::Path,
    ws: &MockServer,
    people: &Value,
    workspace: &str,
    role: &str,
) -> Config {
    std::fs::write(dir.join("directory.json"), people.to_string()).unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{}/scim/v2\"\ntoken = \"t0ken\"\n{workspace}\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
             [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\n\
             role = \"{role}\"\n\n\
             [safety]\nsettle = \"0s\"\n",
            ws.uri()
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

/// RFC 7643 §8.2-shaped Users, linked by `externalId`, each with `role` in
/// `roles` and naming in its own `groups` the Groups `groups` gives it (id,
/// name).
pub(crate) fn users(ws: &MockServer, role: &str, groups: [&[(&str, &str)]; 3]) -> Value {
    let users: Vec<Value> = THREE
        .iter()
        .zip(groups)
        .map(|((id, user_name), groups)| {
            let groups: Vec<Value> = groups
                .iter()
                .map(|(group, name)| {
                    json!({
                        "value": group, "display": name, "type": "direct",
                        "$ref": format!("{}/scim/v2/Groups/{group}", ws.uri()),
                    })
                })
                .collect();
            json!({
                "schemas": [USER_SCHEMA],
                "id": id, "externalId": id, "userName": user_name, "active": true,
                "emails": [{"value": user_name, "type": "work", "primary": true}],
                "roles": [{"value": role, "primary": true}],
                "groups": groups,
                "meta": {"resourceType": "User", "location": format!("{}/scim/v2/Users/{id}", ws.uri())},
            })
        })
        .collect();
    json!(users)
}

pub(crate) async fn mount_users(ws: &MockServer, users: Value) {
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(users))
        .mount(ws)
        .await;
}

/// A Group with the User members `ids`.
pub(crate) fn holding(ws: &MockServer, id: &str, name: &str, ids: &[&str]) -> Value {
    let members: Vec<Value> = ids.iter().map(|id| user_member(ws, id)).collect();
    group(ws, id, name, Some(json!(members)))
}

/// `GET /Groups/{id}` answers `read`.
pub(crate) async fn mount_group_read(ws: &MockServer, read: Value) {
    let id = read["id"].as_str().unwrap().to_owned();
    Mock::given(method("GET"))
        .and(path(format!("/scim/v2/Groups/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(read))
        .mount(ws)
        .await;
}

pub(crate) const ENGINEERING: (&str, &str) = ("g-eng", "Engineering");

pub(crate) async fn plan(config: &Config) -> seatwarden::model::Plan {
    run::execute(config, Store::open(&config.state.path).unwrap(), Mode::Plan)
        .await
        .unwrap()
        .plan
}

/// The GETs of `at` that began a read of it (a listing's first page).
pub(crate) fn reads_of(received: &[wiremock::Request], at: &str) -> usize {
    received
        .iter()
        .filter(|r| {
            r.method.as_str() == "GET"
                && r.url.path() == at
                && r.url
                    .query_pairs()
                    .all(|(k, v)| k != "startIndex" || v == "1")
        })
        .count()
}

/// Cy left Engineering; the workspace group still holds him, but the listing
/// caps its `members` at two. Read on its own, "Engineering" shows all three,
/// and his removal is planned. It was never planned: he kept the group.
#[tokio::test]
async fn a_managed_group_capped_in_the_listing_is_read_on_its_own() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let eng: &[(&str, &str)] = &[ENGINEERING];
    mount_users(&ws, users(&ws, "Viewer", [eng, eng, eng])).await;
    mount_group_listing(
        &ws,
        vec![holding(&ws, "g-eng", "Engineering", &["p1", "p2"])],
    )
    .await;
    mount_group_read(
        &ws,
        holding(&ws, "g-eng", "Engineering", &["p1", "p2", "p3"]),
    )
    .await;
    let config = config(
        dir.path(),
        &ws,
        &directory([&["Engineering"], &["Engineering"], &[]]),
        "",
        "Viewer",
    );

    let plan = plan(&config).await;
    let kinds: Vec<&ActionKind> = plan.actions.iter().map(|a| &a.kind).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [ActionKind::RemoveMembers {
                group: GroupRef::Existing { id, .. },
                members,
            }] if id == "g-eng" && members == &["p3".to_owned()]
        ),
        "{kinds:#?}"
    );
}

/// The cap holds on a read of its own too: Cy, in Engineering in the
/// directory and in the workspace, looked absent from it, and an add of him
/// was planned (and sent) on every run. The run now fails before any write,
/// naming the request, how many accounts are missing and the first, and
/// what to set; it is recorded as failed, the binary exits 1 with it and
/// `status` shows the reconcile failed. The workspace is read twice first (a
/// member removed between the Users and the Groups listings is not a cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_group_capped_everywhere_fails_the_run() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let eng: &[(&str, &str)] = &[ENGINEERING];
    mount_users(&ws, users(&ws, "Viewer", [eng, eng, eng])).await;
    let capped = holding(&ws, "g-eng", "Engineering", &["p1", "p2"]);
    mount_group_listing(&ws, vec![capped.clone()]).await;
    mount_group_read(&ws, capped).await;
    let config = config(
        dir.path(),
        &ws,
        &directory([&["Engineering"]; 3]),
        "",
        "Viewer",
    );

    let error = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RunError::Workspace(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(
            "reading the workspace: GET /Groups/g-eng: malformed response: workspace group \
             \"Engineering\" shows 2 members, in the listing and read on its own, yet 1 of the \
             3 accounts whose own groups name it are not among them (account \"p3\" \
             (cy@example.com)), in two reads of the workspace"
        ),
        "{message}"
    );
    assert!(
        message.contains("workspace.group_members = \"by_member_filter\""),
        "{message}"
    );
    let received = ws.received_requests().await.unwrap();
    assert!(
        received.iter().all(|r| r.method.as_str() == "GET"),
        "a write was sent"
    );
    assert_eq!(reads_of(&received, "/scim/v2/Users"), 2);
    assert_eq!(reads_of(&received, "/scim/v2/Groups/g-eng"), 2);
    let store = Store::open(&config.state.path).unwrap();
    let last = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(last.status, RunStatus::Failed);
    assert_eq!(last.error.as_deref(), Some(message.as_str()));
    drop(store);

    // The binary says so: exit 1, the error on stderr, and `status` shows it.
    let (code, _, stderr) = crate::review_s60_walk::run(dir.path(), &[], &["reconcile"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&message), "{stderr}");
    let (code, stdout, stderr) = crate::review_s60_walk::run(dir.path(), &[], &["status"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Last reconcile: run 2 failed"), "{stdout}");
}

/// Roles by group: "Taskade Editors" holds all three, capped at two in the
/// listing. Cy read as holding no role, and a role change to Editor was
/// planned for him on every run; read on its own, the group shows him.
#[tokio::test]
async fn a_role_group_capped_in_the_listing_is_read_on_its_own() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let both: &[(&str, &str)] = &[ENGINEERING, ("g-ed", "Taskade Editors")];
    mount_users(&ws, users(&ws, "Viewer", [both, both, both])).await;
    mount_group_listing(
        &ws,
        vec![
            holding(&ws, "g-eng", "Engineering", &["p1", "p2", "p3"]),
            holding(&ws, "g-ed", "Taskade Editors", &["p1", "p2"]),
            holding(&ws, "g-view", "Taskade Viewers", &[]),
        ],
    )
    .await;
    mount_group_read(
        &ws,
        holding(&ws, "g-ed", "Taskade Editors", &["p1", "p2", "p3"]),
    )
    .await;
    let config = config(
        dir.path(),
        &ws,
        &directory([&["Engineering"]; 3]),
        "role_attribute = \"groups\"\n\
         role_groups = { Editor = \"Taskade Editors\", Viewer = \"Taskade Viewers\" }\n",
        "Editor",
    );

    let plan = plan(&config).await;
    assert!(plan.is_empty(), "{:#?}", plan.actions);
}

/// Cy was removed from Engineering between the Users listing (his `groups`
/// still named it) and the Groups listing: a second read of the workspace
/// shows the removal on both sides, and the run goes on; nothing is planned.
#[tokio::test]
async fn a_member_removed_between_the_two_listings_is_no_cap() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let eng: &[(&str, &str)] = &[ENGINEERING];
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(list_response(users(&ws, "Viewer", [eng, eng, eng])))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&ws)
        .await;
    mount_users(&ws, users(&ws, "Viewer", [eng, eng, &[]])).await;
    let removed = holding(&ws, "g-eng", "Engineering", &["p1", "p2"]);
    mount_group_listing(&ws, vec![removed.clone()]).await;
    mount_group_read(&ws, removed).await;
    let config = config(
        dir.path(),
        &ws,
        &directory([&["Engineering"], &["Engineering"], &[]]),
        "",
        "Viewer",
    );

    let plan = plan(&config).await;
    assert!(plan.is_empty(), "{:#?}", plan.actions);
    let received = ws.received_requests().await.unwrap();
    assert_eq!(reads_of(&received, "/scim/v2/Users"), 2);
}

/// Users that carry no `groups` tell nothing of a cap: the workspace is read
/// once, no group on its own, as before (README, `workspace.group_members`).
#[tokio::test]
async fn without_the_users_groups_a_cap_goes_unseen() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut without = users(&ws, "Viewer", [&[], &[], &[]]);
    for user in without.as_array_mut().unwrap() {
        user.as_object_mut().unwrap().remove("groups");
    }
    mount_users(&ws, without).await;
    mount_group_listing(
        &ws,
        vec![holding(&ws, "g-eng", "Engineering", &["p1", "p2"])],
    )
    .await;
    let config = config(
        dir.path(),
        &ws,
        &directory([&["Engineering"], &["Engineering"], &[]]),
        "",
        "Viewer",
    );

    let plan = plan(&config).await;
    assert!(plan.is_empty(), "{:#?}", plan.actions);
    let received = ws.received_requests().await.unwrap();
    assert_eq!(reads_of(&received, "/scim/v2/Users"), 1);
    assert_eq!(reads_of(&received, "/scim/v2/Groups/g-eng"), 0);
}
