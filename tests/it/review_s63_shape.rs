//! Session 63, the capped-members check (session 62) against providers that
//! are consistent and must not fail every run, answered as RFC 7643/7644
//! shape them: one that leaves deactivated Users (`active: false`) out of a
//! Group's `members` while their own `groups` (§4.1.2) still name it, and one
//! whose Users name a Group they are in only through a nested Group
//! (`type: "indirect"`). The directory side starts from ada, ben and cy
//! provisioned from "Taskade Users" ([`three_provisioned`]); the workspace
//! side reads a wiremock workspace as `review_s62_wsread` does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use wiremock::MockServer;

use crate::review_s61_conn::{group, mount_group_listing, user_member};
use crate::review_s62_wsread::{self as wsread, ENGINEERING, holding, mount_group_read};
use crate::scim_directory::{THREE, list_response, reconcile, three_provisioned};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// An entry of a User's own `groups` (RFC 7643 §4.1.2): the Group `id`
/// (`name`), `kind` "direct" or "indirect".
fn named_group(server: &MockServer, id: &str, name: &str, kind: &str) -> Value {
    json!({
        "value": id, "display": name, "type": kind,
        "$ref": format!("{}/scim/v2/Groups/{id}", server.uri()),
    })
}

/// The three as RFC 7643 §8.2 shows a User, `active` as given, each naming
/// the Groups `groups` gives it ((id, name, type)).
fn people(server: &MockServer, active: [bool; 3], groups: [&[(&str, &str, &str)]; 3]) -> Value {
    let users: Vec<Value> = THREE
        .iter()
        .zip(active)
        .zip(groups)
        .map(|(((id, user_name), active), groups)| {
            let groups: Vec<Value> = groups
                .iter()
                .map(|(group, name, kind)| named_group(server, group, name, kind))
                .collect();
            json!({
                "schemas": [USER_SCHEMA],
                "id": id, "userName": user_name, "active": active, "groups": groups,
                "meta": {"resourceType": "User", "location": format!("{}/scim/v2/Users/{id}", server.uri())},
            })
        })
        .collect();
    json!(users)
}

async fn mount_people(server: &MockServer, users: Value) {
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/scim/v2/Users"))
        .respond_with(list_response(users))
        .mount(server)
        .await;
}

const G1: (&str, &str, &str) = ("g1", "Taskade Users", "direct");

fn active_of(workspace: &seatwarden::sandbox::Sandbox) -> Vec<(String, bool)> {
    let mut accounts: Vec<(String, bool)> = workspace
        .snapshot()
        .accounts
        .into_iter()
        .map(|a| (a.user_name, a.active))
        .collect();
    accounts.sort();
    accounts
}

/// Cy is deactivated in the directory (`active: false`); the provider leaves
/// him out of "Taskade Users"' `members`, in the listing and read on its own,
/// while his own `groups` still names it, as providers that list only enabled
/// members do. A suspended person loses access whatever their groups say, so
/// the run goes on and deactivates him. Every run failed as a capped Group.
#[tokio::test]
async fn a_deactivated_user_left_out_of_a_groups_members_is_no_cap() {
    let idp = MockServer::start().await;
    let (workspace, _dir, config) = three_provisioned(&idp).await;
    idp.reset().await;
    mount_people(&idp, people(&idp, [true, true, false], [&[G1]; 3])).await;
    let enabled = group(
        &idp,
        "g1",
        "Taskade Users",
        Some(json!([user_member(&idp, "p1"), user_member(&idp, "p2")])),
    );
    mount_group_listing(&idp, vec![enabled.clone()]).await;
    mount_group_read(&idp, enabled).await;

    let outcome = reconcile(&config).await;
    assert_eq!(
        active_of(&workspace),
        [
            ("ada@example.com".to_owned(), true),
            ("ben@example.com".to_owned(), true),
            ("cy@example.com".to_owned(), false),
        ]
    );
    let deactivation = outcome
        .report
        .drift
        .iter()
        .find(|d| d.user_name == "cy@example.com")
        .unwrap();
    assert_eq!(
        deactivation.detail,
        "identity is suspended in the directory; account is still active"
    );
    workspace.shutdown().await;
}

/// The same provider, cy a member of the protected "IT Admins": read from
/// the Group alone he would no longer be in it, and lose its protection.
/// His own `groups` counts him in, and his account is left alone.
#[tokio::test]
async fn a_deactivated_user_left_out_of_a_protected_group_stays_protected() {
    let idp = MockServer::start().await;
    let (workspace, dir, _) = three_provisioned(&idp).await;
    let config = crate::scim_directory::small_config(
        dir.path(),
        &idp,
        &workspace,
        "page_size = 2\n",
        "max_deprovision_percent = 100\nmax_directory_shrink_percent = 100\n\
         protected_groups = [\"IT Admins\"]\n",
    );
    idp.reset().await;
    let admins = ("g9", "IT Admins", "direct");
    mount_people(
        &idp,
        people(&idp, [true, true, false], [&[G1], &[G1], &[G1, admins]]),
    )
    .await;
    let everyone = json!(THREE.map(|(id, _)| user_member(&idp, id)));
    mount_group_listing(
        &idp,
        vec![
            group(&idp, "g1", "Taskade Users", Some(everyone)),
            group(&idp, "g9", "IT Admins", Some(json!([]))),
        ],
    )
    .await;
    mount_group_read(&idp, group(&idp, "g9", "IT Admins", Some(json!([])))).await;

    let outcome = reconcile(&config).await;
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    assert!(active_of(&workspace).iter().all(|(_, active)| *active));
    workspace.shutdown().await;
}

/// "Taskade Users" holds ada and the Group "Contractors" (g2), which holds
/// ben and cy; their own `groups` name g2 as "direct" and g1 as "indirect"
/// (RFC 7643 §4.1.2: through nested groups). Through g2, g1 holds them: no
/// cap, nothing changes. Also with g2 listed without its `members` (read on
/// its own).
#[tokio::test]
async fn a_user_in_a_group_only_through_a_nested_group_is_no_cap() {
    for listed_with_members in [true, false] {
        let idp = MockServer::start().await;
        let (workspace, _dir, config) = three_provisioned(&idp).await;
        idp.reset().await;
        let g2 = ("g2", "Contractors", "direct");
        let through_g2 = ("g1", "Taskade Users", "indirect");
        mount_people(
            &idp,
            people(
                &idp,
                [true; 3],
                [&[G1], &[g2, through_g2], &[g2, through_g2]],
            ),
        )
        .await;
        let nested = json!({
            "value": "g2", "$ref": format!("{}/scim/v2/Groups/g2", idp.uri()), "type": "Group",
        });
        let contractors = json!([user_member(&idp, "p2"), user_member(&idp, "p3")]);
        mount_group_listing(
            &idp,
            vec![
                group(
                    &idp,
                    "g1",
                    "Taskade Users",
                    Some(json!([user_member(&idp, "p1"), nested])),
                ),
                group(
                    &idp,
                    "g2",
                    "Contractors",
                    listed_with_members.then(|| contractors.clone()),
                ),
            ],
        )
        .await;
        mount_group_read(&idp, group(&idp, "g2", "Contractors", Some(contractors))).await;

        let outcome = reconcile(&config).await;
        assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
        assert!(active_of(&workspace).iter().all(|(_, active)| *active));
        workspace.shutdown().await;
    }
}

/// The workspace side: cy left the company (suspended in the directory
/// file) and his account is deactivated; the workspace leaves deactivated
/// accounts out of "Engineering"'s `members` while his own `groups` still
/// names it. Nothing is to change (an inactive person's memberships are left
/// alone), and every run failed as a capped group.
#[tokio::test]
async fn a_deactivated_account_left_out_of_a_managed_group_is_no_cap() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let eng: &[(&str, &str)] = &[ENGINEERING];
    let mut users = wsread::users(&ws, "Viewer", [eng, eng, eng]);
    users[2]["active"] = json!(false);
    wsread::mount_users(&ws, users).await;
    let enabled = holding(&ws, "g-eng", "Engineering", &["p1", "p2"]);
    mount_group_listing(&ws, vec![enabled.clone()]).await;
    mount_group_read(&ws, enabled).await;
    let mut people = wsread::directory([&["Engineering"]; 3]);
    people["users"][2]["status"] = json!("suspended");
    let config = wsread::config(dir.path(), &ws, &people, "", "Viewer");

    let plan = wsread::plan(&config).await;
    assert!(plan.is_empty(), "{:#?}", plan.actions);
}

/// The workspace side of a nested group: "Engineering" holds ada and the
/// group "Platform" (listed without its `members`, a group no mapping
/// manages); ben's and cy's own `groups` name Platform "direct" and
/// Engineering "indirect". The plan reads a managed group's own members,
/// so what a User is in only through nesting says nothing of a cap: ben and
/// cy are added to Engineering as direct members. The run failed as a capped
/// group.
#[tokio::test]
async fn an_account_in_a_managed_group_only_through_a_nested_group_is_no_cap() {
    let ws = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = ("g-plat", "Platform");
    let users = wsread::users(&ws, "Viewer", [&[ENGINEERING], &[platform], &[platform]]);
    let mut users = users;
    for user in users.as_array_mut().unwrap().iter_mut().skip(1) {
        user["groups"].as_array_mut().unwrap().push(named_group(
            &ws,
            "g-eng",
            "Engineering",
            "indirect",
        ));
    }
    wsread::mount_users(&ws, users).await;
    let nested = json!({
        "value": "g-plat", "$ref": format!("{}/scim/v2/Groups/g-plat", ws.uri()), "type": "Group",
    });
    mount_group_listing(
        &ws,
        vec![
            group(
                &ws,
                "g-eng",
                "Engineering",
                Some(json!([user_member(&ws, "p1"), nested])),
            ),
            group(&ws, "g-plat", "Platform", None),
        ],
    )
    .await;
    let config = wsread::config(
        dir.path(),
        &ws,
        &wsread::directory([&["Engineering"]; 3]),
        "",
        "Viewer",
    );

    let plan = wsread::plan(&config).await;
    let added: Vec<String> = plan
        .actions
        .iter()
        .flat_map(|a| match &a.kind {
            seatwarden::model::ActionKind::AddMembers { members, .. } => {
                members.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(added.len(), 2, "{:#?}", plan.actions);
    assert_eq!(plan.actions.len(), 1, "{:#?}", plan.actions);
}

/// The sandbox names each User's groups (RFC 7643 §4.1.2), so a run against
/// it checks every managed and role group for a cap, and never finds one:
/// the synthetic workspace converges as before. Capped at two members a
/// group (`Faults::members_cap`), the next run fails before any write,
/// naming `GET /Groups/{id}` and how many accounts are missing.
#[tokio::test]
async fn a_sandbox_that_caps_members_fails_the_run_before_any_write() {
    let data = seatwarden::synth::generate(&seatwarden::synth::SynthSpec {
        people: 40,
        groups: 3,
        drift_percent: 10.0,
        seed: 63,
    });
    let workspace = crate::fixtures::sandbox("t0ken", data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        crate::fixtures::synth_config(dir.path(), &data, workspace.base_url().as_ref(), "t0ken", 4);
    let users = users_listed(&workspace).await;
    assert!(
        users
            .iter()
            .any(|u| u["groups"].as_array().is_some_and(|g| !g.is_empty())),
        "no User names a group"
    );
    crate::fixtures::assert_converges(&config).await;

    workspace.set_faults(seatwarden::sandbox::Faults {
        members_cap: Some(2),
        ..seatwarden::sandbox::Faults::default()
    });
    let writes = workspace.stats().writes;
    let error = seatwarden::run::execute(
        &config,
        seatwarden::store::Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Reconcile,
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("reading the workspace: GET /Groups/")
            && message.contains(" shows 2 members, in the listing and read on its own, yet "),
        "{message}"
    );
    assert_eq!(workspace.stats().writes, writes, "a write was sent");
    workspace.shutdown().await;
}

/// The same cap on a sandbox read as the SCIM directory: the snapshot fails
/// naming the Group's URL, and the workspace is not written to.
#[tokio::test]
async fn a_scim_directory_that_caps_members_fails_the_snapshot() {
    let people = ["p1", "p2", "p3"];
    let seed = seatwarden::model::WorkspaceSnapshot {
        accounts: THREE
            .iter()
            .map(|(id, user_name)| seatwarden::model::Account {
                id: (*id).to_owned(),
                user_name: (*user_name).to_owned(),
                external_id: None,
                given_name: None,
                family_name: None,
                display_name: None,
                email: Some((*user_name).to_owned()),
                active: true,
                roles: Vec::new(),
            })
            .collect(),
        groups: vec![seatwarden::model::WorkspaceGroup {
            id: "g1".into(),
            display_name: "Taskade Users".into(),
            members: people.map(str::to_owned).to_vec(),
        }],
    };
    let idp = crate::fixtures::sandbox("idp-token", seed).await;
    let workspace = crate::fixtures::sandbox("t0ken", Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("idp-token"), "idp-token").unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{}\"\ntoken_file = \"idp-token\"\n\
             requests_per_second = 0\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
             [safety]\nsettle = \"0s\"\n",
            idp.base_url(),
            workspace.base_url()
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    idp.set_faults(seatwarden::sandbox::Faults {
        members_cap: Some(2),
        ..seatwarden::sandbox::Faults::default()
    });

    let error = crate::scim_directory::directory_failure(&config)
        .await
        .to_string();
    assert!(
        error.starts_with(&format!(
            "{}/Groups/g1: malformed response: Group \"Taskade Users\" shows 2 members, in \
             the listing and read on its own, yet 1 of the 3 Users whose own groups name it \
             are not among them (User \"p3\" (cy@example.com) the first)",
            idp.base_url().as_str().trim_end_matches('/')
        )),
        "{error}"
    );
    assert_eq!(workspace.stats().writes, 0);

    // Uncapped, the same provider is read whole and all three are provisioned.
    idp.set_faults(seatwarden::sandbox::Faults::default());
    crate::fixtures::assert_clean_reconcile(&reconcile(&config).await.report);
    assert_eq!(workspace.snapshot().accounts.len(), 3);
    idp.shutdown().await;
    workspace.shutdown().await;
}

/// The first page of Users the sandbox lists.
async fn users_listed(workspace: &seatwarden::sandbox::Sandbox) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/Users", workspace.base_url()))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["Resources"].as_array().unwrap().clone()
}
