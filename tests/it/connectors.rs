//! End to end from each fake identity provider (wiremock Okta, wiremock Graph) to
//! the in-process SCIM workspace, through `run::execute` with a configuration of
//! `kind = "okta"` / `kind = "entra"`: the run converges, a second run plans
//! nothing, leavers end up inactive; and a provider failing mid-snapshot fails the
//! run without a single workspace write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::directory::{Directory, EntraAuth, EntraSource, OktaAuth, OktaSource, Secret};
use seatwarden::model::IdentityStatus;
use seatwarden::run::{self, Mode, RunError};
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions};
use seatwarden::store::Store;
use seatwarden::synth::{self, Synth, SynthSpec};
use seatwarden::workspace::ScimClient;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::entra::{FakeGraph, graph_group, graph_user};
use crate::okta::{FakeOkta, LinkStyle, okta_group, okta_user};

const SCIM_TOKEN: &str = "e2e-scim-token";
const SSWS: &str = "e2e-okta-api-token";
const GRAPH_SECRET: &str = "e2e-graph-client-secret";

fn data() -> Synth {
    synth::generate(&SynthSpec {
        people: 120,
        groups: 4,
        drift_percent: 10.0,
        seed: 7,
    })
}

async fn sandbox(data: &Synth) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: SCIM_TOKEN.to_owned(),
            max_results: 1000,
            or_filters: true,
            faults: Faults::default(),
            ..SandboxOptions::default()
        },
        data.workspace.clone(),
    )
    .await
    .unwrap()
}

/// Every directory group name with the ids of its members.
fn groups_of(data: &Synth) -> Vec<(String, Vec<String>)> {
    let mut names: Vec<String> = data
        .directory
        .identities
        .iter()
        .flat_map(|i| i.groups.clone())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let members = data
                .directory
                .identities
                .iter()
                .filter(|i| i.groups.contains(&name))
                .map(|i| i.id.clone())
                .collect();
            (name, members)
        })
        .collect()
}

pub fn okta_org(data: &Synth, page_size: usize) -> FakeOkta {
    let users = data
        .directory
        .identities
        .iter()
        .map(|i| {
            let status = match i.status {
                IdentityStatus::Active => "ACTIVE",
                IdentityStatus::Suspended => "SUSPENDED",
                IdentityStatus::Deprovisioned => "DEPROVISIONED",
            };
            let mut u = okta_user(&i.id, &i.user_name, status);
            u["profile"]["email"] = i.email.clone().into();
            u["profile"]["firstName"] = i.given_name.clone().into();
            u["profile"]["lastName"] = i.family_name.clone().into();
            u["profile"]["displayName"] = i.display_name.clone().into();
            u["profile"]["department"] = i.department.clone().into();
            u
        })
        .collect();
    let groups = groups_of(data)
        .into_iter()
        .enumerate()
        .map(|(n, (name, members))| (okta_group(&format!("00g{n}"), &name), members))
        .collect();
    FakeOkta {
        users,
        groups,
        page_size,
        style: LinkStyle::SeparateLines,
        app_users: Vec::new(),
        app_groups: Vec::new(),
        clock_offset: None,
    }
}

pub fn graph_tenant(data: &Synth, page_size: usize) -> FakeGraph {
    let users = data
        .directory
        .identities
        .iter()
        .map(|i| {
            let mut u = graph_user(&i.id, &i.user_name, i.status == IdentityStatus::Active);
            u["mail"] = i.email.clone().into();
            u["givenName"] = i.given_name.clone().into();
            u["surname"] = i.family_name.clone().into();
            u["displayName"] = i.display_name.clone().into();
            u["department"] = i.department.clone().into();
            u
        })
        .collect();
    let groups = groups_of(data)
        .into_iter()
        .enumerate()
        .map(|(n, (name, members))| (graph_group(&format!("g{n}"), &name), members))
        .collect();
    FakeGraph {
        users,
        groups,
        direct: std::collections::HashMap::new(),
        page_size,
        assignments: Vec::new(),
        others: false,
    }
}

/// Reconciles twice through `run::execute` and checks convergence and leavers.
async fn converge(data: &Synth, sandbox: &Sandbox, directory_toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::fixtures::synth_config_with_directory(
        dir.path(),
        data,
        sandbox.base_url().as_ref(),
        SCIM_TOKEN,
        8,
        directory_toml,
    );
    crate::fixtures::assert_converges(&config).await;
    let after = sandbox.snapshot();
    crate::fixtures::assert_leavers_inactive(data, &after);
}

#[tokio::test]
async fn okta_to_scim_end_to_end() {
    let data = data();
    let okta = MockServer::start().await;
    okta_org(&data, 25).mount(&okta).await;
    let sandbox = sandbox(&data).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("okta-token");
    std::fs::write(&token_file, SSWS).unwrap();
    converge(
        &data,
        &sandbox,
        &format!(
            "kind = \"okta\"\nurl = \"{}\"\ntoken_file = \"{}\"\n",
            okta.uri(),
            token_file.display()
        ),
    )
    .await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn entra_to_scim_end_to_end() {
    let data = data();
    let graph = MockServer::start().await;
    graph_tenant(&data, 25).mount(&graph).await;
    let sandbox = sandbox(&data).await;
    converge(
        &data,
        &sandbox,
        &format!(
            "kind = \"entra\"\ntenant_id = \"0a1b2c3d-0000-4000-8000-00000000aaaa\"\n\
             client_id = \"11111111-2222-4333-8444-555555555555\"\n\
             client_secret = \"{GRAPH_SECRET}\"\ngraph_url = \"{0}\"\nlogin_url = \"{0}\"\n\
             requests_per_second = 0\n",
            graph.uri()
        ),
    )
    .await;
    sandbox.shutdown().await;
}

/// A provider that fails mid-snapshot fails the run: nothing is written, so
/// nobody is deprovisioned on the strength of a partial directory.
async fn failing_run_writes_nothing(directory: Directory, data: &Synth) {
    let sandbox = sandbox(data).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        crate::fixtures::synth_config(dir.path(), data, sandbox.base_url().as_ref(), SCIM_TOKEN, 8);
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let result = run::execute_with(
        &config,
        &directory,
        &client,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await;
    match result {
        Err(RunError::Directory(e)) => {
            assert_eq!(e.status(), Some(500), "{e}");
        }
        other => panic!("expected a directory error, got {other:?}"),
    }
    assert_eq!(sandbox.stats().writes, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn okta_5xx_mid_snapshot_fails_the_run_without_deprovisioning() {
    let data = data();
    let okta = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .and(query_param("after", "50"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({
            "errorCode": "E0000009", "errorSummary": "Internal Server Error",
            "errorLink": "E0000009", "errorId": "x", "errorCauses": []
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&okta)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/users"))
        .and(query_param("after", "50"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "errorCode": "E0000009", "errorSummary": "Internal Server Error",
            "errorLink": "E0000009", "errorId": "x", "errorCauses": []
        })))
        .with_priority(2)
        .mount(&okta)
        .await;
    okta_org(&data, 25).mount(&okta).await;
    let mut settings = crate::okta::settings(
        &okta,
        OktaAuth::Ssws(Secret::Inline(SSWS.to_owned().into())),
    );
    settings.other_groups = data.group_names.clone();
    failing_run_writes_nothing(Directory::Okta(OktaSource::new(settings)), &data).await;
}

#[tokio::test]
async fn entra_5xx_mid_snapshot_fails_the_run_without_deprovisioning() {
    let data = data();
    let graph = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users"))
        .and(query_param("$skiptoken", "50"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"error": {"code": "generalException", "message": "General exception"}}),
        ))
        .with_priority(1)
        .mount(&graph)
        .await;
    graph_tenant(&data, 25).mount(&graph).await;
    let mut settings = crate::entra::settings(
        &graph,
        EntraAuth::ClientSecret(Secret::Inline(GRAPH_SECRET.to_owned().into())),
    );
    settings.other_groups = data.group_names.clone();
    failing_run_writes_nothing(Directory::Entra(EntraSource::new(settings)), &data).await;
}

/// The scenario with one active person moved from every group into "Break
/// Glass", a group the policy names nowhere, and their account as it was.
fn breakglass_scenario() -> (Synth, seatwarden::model::Account) {
    let mut data = data();
    let (identity, account) = data
        .directory
        .identities
        .iter()
        .enumerate()
        .filter(|(_, i)| i.status == IdentityStatus::Active)
        .find_map(|(n, i)| {
            data.workspace
                .accounts
                .iter()
                .find(|a| {
                    a.active
                        && a.external_id.as_deref() == Some(i.id.as_str())
                        && !a.roles.iter().any(|r| r == "Owner")
                })
                .map(|a| (n, a.clone()))
        })
        .unwrap();
    data.directory.identities[identity].groups = vec!["Break Glass".to_owned()];
    (data, account)
}

/// With `safety.protected_groups` naming "Break Glass" (in lower case: the
/// setting is compared without case), the connector must read that group, or its
/// members look out of scope and are deactivated.
async fn assert_protected_group_keeps_its_members(
    data: &Synth,
    before: &seatwarden::model::Account,
    directory_toml: &str,
) {
    let sandbox = sandbox(data).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::fixtures::synth_config_with_directory(
        dir.path(),
        data,
        sandbox.base_url().as_ref(),
        SCIM_TOKEN,
        8,
        directory_toml,
    );
    config.safety.protected_groups = vec!["break glass".to_owned()];
    let outcome = crate::fixtures::assert_converges(&config).await;
    let quoted_id = format!("{:?}", before.id);
    for action in &outcome.plan.actions {
        assert!(
            !format!("{:?}", action.kind).contains(&quoted_id),
            "a protected account is never in a plan: {action:?}"
        );
    }
    let after = sandbox.snapshot();
    let account = after.accounts.iter().find(|a| a.id == before.id).unwrap();
    assert!(account.active, "the break-glass account was deactivated");
    assert_eq!(account.roles, before.roles);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn okta_reads_protected_groups() {
    let (data, before) = breakglass_scenario();
    let okta = MockServer::start().await;
    okta_org(&data, 25).mount(&okta).await;
    let toml = format!(
        "kind = \"okta\"\nurl = \"{}\"\ntoken = \"{SSWS}\"\n",
        okta.uri()
    );
    assert_protected_group_keeps_its_members(&data, &before, &toml).await;
}

#[tokio::test]
async fn entra_reads_protected_groups() {
    let (data, before) = breakglass_scenario();
    let graph = MockServer::start().await;
    graph_tenant(&data, 25).mount(&graph).await;
    let toml = format!(
        "kind = \"entra\"\ntenant_id = \"0a1b2c3d-0000-4000-8000-00000000aaaa\"\n\
         client_id = \"11111111-2222-4333-8444-555555555555\"\n\
         client_secret = \"{GRAPH_SECRET}\"\ngraph_url = \"{0}\"\nlogin_url = \"{0}\"\n\
         requests_per_second = 0\n",
        graph.uri()
    );
    assert_protected_group_keeps_its_members(&data, &before, &toml).await;
}
