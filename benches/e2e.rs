//! End-to-end benchmark: a full `reconcile` against the in-process sandbox
//! workspace, compared with its floor (issue 3).
//!
//! ```sh
//! cargo bench --bench e2e -- empty 10000          # workspace starts empty
//! cargo bench --bench e2e -- drift 10000          # workspace has 5% drift
//! cargo bench --bench e2e -- drift 10000 10       # … with 10% of requests answered 429/503
//! ```
//!
//! The floor is what any reconciler must spend on the same workspace at the same
//! concurrency: reading every page once, plus as many writes as the reconcile
//! made (measured by replaying that many `POST /Users` on a fresh sandbox with the
//! same seed). Peak memory is the whole process: seatwarden *and* the sandbox,
//! which holds the workspace in memory too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;

use seatwarden::model::{AccountSpec, WorkspaceSnapshot};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};

const TOKEN: &str = "bench-token";
const CONCURRENCY: usize = 8;
const PAGE: u32 = 1000;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn sandbox(seed: WorkspaceSnapshot, faults: Faults) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.into(),
            max_results: PAGE as usize,
            faults,
        },
        seed,
    )
    .await
    .unwrap()
}

fn client(sandbox: &Sandbox) -> ScimClient {
    ScimClient::new(ScimSettings {
        base_url: sandbox.base_url(),
        token: TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: PAGE,
        max_concurrency: CONCURRENCY,
        requests_per_second: 1_000_000,
        timeout: Duration::from_secs(30),
        retry: RetryPolicy::default(),
    })
    .unwrap()
}

/// Reads every page once, then makes `writes` creates at the same concurrency.
async fn floor(seed: WorkspaceSnapshot, writes: u64) -> f64 {
    let sandbox = sandbox(seed, Faults::default()).await;
    let client = client(&sandbox);
    let started = Instant::now();
    client.snapshot(&|_| {}).await.unwrap();
    futures::stream::iter(0..writes)
        .map(|n| {
            let client = client.clone();
            async move {
                client
                    .create_account(&AccountSpec {
                        user_name: format!("floor.{n}@example.com"),
                        external_id: format!("floor-{n}"),
                        given_name: Some("Floor".into()),
                        family_name: Some(format!("{n}")),
                        display_name: Some(format!("Floor {n}")),
                        email: Some(format!("floor.{n}@example.com")),
                        role: Some(seatwarden::model::Role::Viewer),
                    })
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    sandbox.shutdown().await;
    elapsed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let scenario = args
        .first()
        .map(String::as_str)
        .unwrap_or("drift")
        .to_owned();
    let people: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let fault_percent: f64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0.0);
    let data = synth::generate(&SynthSpec {
        people,
        groups: 20,
        drift_percent: 5.0,
        seed: 42,
    });
    let seed = match scenario.as_str() {
        "empty" => WorkspaceSnapshot::default(),
        "drift" => data.workspace.clone(),
        other => panic!("unknown scenario {other:?}; use `empty` or `drift`"),
    };
    let faults = Faults {
        rate_429: fault_percent / 200.0,
        rate_5xx: fault_percent / 200.0,
        retry_after_secs: 0,
        seed: 7,
        ..Faults::default()
    };
    let workspace = sandbox(seed.clone(), faults).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
    let mut toml = format!(
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\npage_size = {PAGE}\n\
         max_concurrency = {CONCURRENCY}\nrequests_per_second = 1000000\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [safety]\nmax_deprovisions = 1000000\nmax_deprovision_percent = 100\n\
         max_deprovisions_per_day = 1000000\nmax_membership_removals = 1000000\n\
         max_membership_removal_percent = 100\nmax_membership_removals_per_day = 1000000\n\
         max_role_downgrades = 1000000\nmax_role_downgrade_percent = 100\n\
         max_role_downgrades_per_day = 1000000\n\
         # The benchmark measures one run's throughput: no settle window.\nsettle = \"0s\"\n",
        workspace.base_url()
    );
    for (group, role) in &data.roles {
        toml.push_str(&format!(
            "\n[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"{group}\"\nrole = \"{role}\"\n"
        ));
    }
    std::fs::write(dir.path().join("seatwarden.toml"), toml).unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();

    let started = Instant::now();
    let outcome = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let stats = workspace.stats();
    let again = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    workspace.shutdown().await;
    let peak = peak_rss_mib();
    let floor_s = floor(seed, stats.writes).await;
    let s = &outcome.report.summary;
    println!(
        "{{\"bench\":\"e2e\",\"scenario\":\"{scenario}\",\"people\":{people},\"fault_percent\":{fault_percent},\
         \"wall_s\":{wall:.2},\"requests\":{},\"requests_per_s\":{:.0},\"writes\":{},\"floor_s\":{floor_s:.2},\
         \"ratio_to_floor\":{:.2},\"actions\":{},\"applied\":{},\"failed\":{},\"retries\":{},\
         \"faults_429\":{},\"faults_5xx\":{},\"second_plan_actions\":{},\"peak_rss_mib\":{peak:.0}}}",
        stats.requests,
        stats.requests as f64 / wall,
        stats.writes,
        wall / floor_s,
        s.actions_planned,
        s.actions_applied,
        s.actions_failed,
        s.retries,
        stats.faults_429,
        stats.faults_5xx,
        again.plan.actions.len(),
    );
}
