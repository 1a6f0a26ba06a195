//! End-to-end benchmark: a full `reconcile` against a SCIM workspace, compared
//! with its floor (issue 3).
//!
//! ```sh
//! cargo bench --bench e2e -- empty 10000               # in-process sandbox, starts empty
//! cargo bench --bench e2e -- drift 10000               # … with 5% drift
//! cargo bench --bench e2e -- drift 10000 10            # … with 10% of requests answered 429/503
//! cargo bench --bench e2e -- drift 10000 0 --repeat 3  # best of three, each on a fresh workspace
//! cargo bench --bench e2e -- drift 10000 0 --warm      # a scheduled run, not the first one
//! cargo bench --bench e2e -- drift 10000 0 --latency 20 # every request 20 ms slower, run and floor
//! cargo bench --bench e2e -- drift 10000 0 --paging cursor # a sandbox that pages by cursor only
//! scripts/bench-scim2.sh                               # 2k against PyPI scim2-server
//! ```
//!
//! `--server scim2` runs against the scim2-server at `SEATWARDEN_SCIM2_SERVER_URL`
//! (token in `SEATWARDEN_SCIM2_SERVER_TOKEN`), each run and each floor on a fresh
//! tenant seeded over SCIM (seeding is not timed), at 4 requests in flight and
//! pages of 100 (it speaks HTTP/1.0 with a listen backlog of 5).
//!
//! Every run starts from a fresh state database (the first run of a deployment:
//! every matched account gets its link), unless `--warm`: then the database holds
//! an earlier, untimed reconcile of another copy of the same workspace, as when
//! the daemon runs on its schedule.
//!
//! The floor is what any reconciler must spend on the same workspace at the same
//! concurrency: reading every page once, plus as many writes as the reconcile
//! made (measured by replaying that many `POST /Users` on a fresh workspace with
//! the same seed). With `--repeat K` the run and the floor are each measured K
//! times and the fastest of each is compared (the least disturbed by other work
//! on the machine); every measurement is printed. Runs and floors alternate. Peak
//! memory is the whole process after the first run, before any floor: with the
//! sandbox it includes the sandbox's copy of the workspace.
//!
//! `--latency MS` makes the sandbox answer every request of the run and of the
//! floor MS milliseconds late, as a remote workspace would (the untimed warm-up
//! run is not slowed). Without it, the sandbox answers at once in the same
//! process: the comparison then is of CPU work on this machine, and seatwarden's
//! own bookkeeping (journal, verification, report) weighs as much as a round trip.
//!
//! `cpus_s` and `floor_cpus_s` are the CPU time the process spent in each run and
//! floor (with the sandbox, the workspace's own work included; with scim2-server,
//! only seatwarden's), and `cpu_ratio_to_floor` is their medians' ratio. Other
//! work on the machine stretches wall times more than CPU times, so comparing two
//! builds by CPU time needs fewer runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;

use std::collections::HashMap;

use seatwarden::model::{AccountSpec, WorkspaceSnapshot};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions, SandboxPaging};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};
use seatwarden::workspace::{RoleAttribute, ScimClient, ScimSettings};

const TOKEN: &str = "bench-token";

/// Where the workspace lives.
#[derive(Clone)]
enum Target {
    /// How the sandbox pages: `--paging cursor` makes it page by cursor only, so
    /// the run and the floor both read one page after the other.
    Sandbox {
        paging: SandboxPaging,
    },
    Scim2 {
        base: String,
        token: String,
    },
}

impl Target {
    fn concurrency(&self) -> usize {
        match self {
            Target::Sandbox { .. } => 8,
            Target::Scim2 { .. } => 4,
        }
    }

    fn page(&self) -> u32 {
        match self {
            Target::Sandbox { .. } => 1000,
            Target::Scim2 { .. } => 100,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Sandbox {
                paging: SandboxPaging::Cursor,
            } => "sandbox, by cursor",
            Target::Sandbox { .. } => "sandbox",
            Target::Scim2 { .. } => "scim2-server",
        }
    }
}

/// A workspace seeded for one measurement.
struct Workspace {
    url: String,
    token: String,
    sandbox: Option<Sandbox>,
}

impl Workspace {
    async fn start(target: &Target, seed: &WorkspaceSnapshot, faults: Faults, name: &str) -> Self {
        match target {
            Target::Sandbox { paging } => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let sandbox = Sandbox::start(
                    listener,
                    SandboxOptions {
                        token: TOKEN.into(),
                        max_results: target.page() as usize,
                        or_filters: true,
                        faults,
                        paging: *paging,
                        ..SandboxOptions::default()
                    },
                    seed.clone(),
                )
                .await
                .unwrap();
                Workspace {
                    url: sandbox.base_url().to_string(),
                    token: TOKEN.into(),
                    sandbox: Some(sandbox),
                }
            }
            Target::Scim2 { base, token } => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let url = format!(
                    "{}/bench-{name}-{}-{nanos}/v2",
                    base.trim_end_matches('/'),
                    std::process::id()
                );
                let workspace = Workspace {
                    url,
                    token: token.clone(),
                    sandbox: None,
                };
                seed_over_scim(&workspace.client(target), seed).await;
                workspace
            }
        }
    }

    fn client(&self, target: &Target) -> ScimClient {
        ScimClient::new(ScimSettings {
            base_url: self.url.parse().unwrap(),
            token: self.token.clone().into(),
            role_attribute: RoleAttribute::Roles,
            page_size: target.page(),
            pagination: seatwarden::workspace::Pagination::Auto,
            max_concurrency: target.concurrency(),
            requests_per_second: 1_000_000,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            managed_groups: Vec::new(),
            group_members: seatwarden::workspace::GroupMembers::Listed,
            ca_pem: None,
        })
        .unwrap()
    }

    async fn shutdown(self) {
        if let Some(sandbox) = self.sandbox {
            sandbox.shutdown().await;
        }
    }
}

/// Creates the seed's accounts and groups through SCIM (a server we cannot seed
/// directly), at the target's concurrency.
async fn seed_over_scim(client: &ScimClient, seed: &WorkspaceSnapshot) {
    client.discover().await.unwrap();
    let created: Vec<(String, String)> =
        futures::stream::iter(seed.accounts.iter().map(|account| {
            let client = client.clone();
            async move {
                let created = client
                    .create_account(&AccountSpec {
                        user_name: account.user_name.clone(),
                        external_id: account.external_id.clone().unwrap_or_default(),
                        given_name: account.given_name.clone(),
                        family_name: account.family_name.clone(),
                        display_name: account.display_name.clone(),
                        email: account.email.clone(),
                        role: account.role(),
                    })
                    .await
                    .unwrap();
                if !account.active {
                    client.set_active(&created.id, false).await.unwrap();
                }
                (account.id.clone(), created.id)
            }
        }))
        .buffer_unordered(4)
        .collect()
        .await;
    let ids: HashMap<String, String> = created.into_iter().collect();
    for group in &seed.groups {
        let created = client.create_group(&group.display_name).await.unwrap();
        let members: Vec<String> = group
            .members
            .iter()
            .filter_map(|m| ids.get(m).cloned())
            .collect();
        for chunk in members.chunks(500) {
            client.add_members(&created.id, chunk).await.unwrap();
        }
    }
}

/// Reads every page once, then makes `writes` creates at the same concurrency;
/// the wall time and the process's CPU time it took.
async fn floor(
    target: &Target,
    seed: &WorkspaceSnapshot,
    writes: u64,
    latency: Duration,
) -> (f64, f64) {
    let faults = Faults {
        latency,
        ..Faults::default()
    };
    let workspace = Workspace::start(target, seed, faults, "floor").await;
    let client = workspace.client(target);
    client.discover().await.unwrap();
    let started = Instant::now();
    let cpu_before = process_cpu_s();
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
        .buffer_unordered(target.concurrency())
        .collect::<Vec<()>>()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_s() - cpu_before;
    workspace.shutdown().await;
    (elapsed, cpu)
}

/// One reconcile on a fresh workspace and a fresh state database.
struct Measured {
    wall_s: f64,
    /// CPU time of the whole process (seatwarden and, with the sandbox, the
    /// workspace) during the run: less stretched than wall time by other work on
    /// the machine.
    cpu_s: f64,
    requests: u64,
    writes: u64,
    actions: usize,
    applied: usize,
    failed: usize,
    retries: u64,
    faults_429: u64,
    faults_5xx: u64,
    second_plan_actions: usize,
}

/// Writes `name` (a configuration for `workspace`) into `dir` and loads it; every
/// configuration in `dir` shares the state database `dir/seatwarden.db`.
fn configure(
    dir: &std::path::Path,
    name: &str,
    target: &Target,
    workspace: &Workspace,
    data: &synth::Synth,
) -> seatwarden::config::Config {
    let mut toml = format!(
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"{}\"\ntoken = \"{}\"\npage_size = {}\n\
         max_concurrency = {}\nrequests_per_second = 1000000\ntimeout = \"60s\"\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [safety]\nmax_deprovisions = 1000000\nmax_deprovision_percent = 100\n\
         max_deprovisions_per_day = 1000000\nmax_membership_removals = 1000000\n\
         max_membership_removal_percent = 100\nmax_membership_removals_per_day = 1000000\n\
         max_role_downgrades = 1000000\nmax_role_downgrade_percent = 100\n\
         max_role_downgrades_per_day = 1000000\nmax_renames = 1000000\n\
         max_rename_percent = 100\nmax_renames_per_day = 1000000\n\
         # The benchmark measures one run's throughput: no settle window.\nsettle = \"0s\"\n",
        workspace.url,
        workspace.token,
        target.page(),
        target.concurrency(),
    );
    for (group, role) in &data.roles {
        toml.push_str(&format!(
            "\n[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"{group}\"\nrole = \"{role}\"\n"
        ));
    }
    std::fs::write(dir.join(name), toml).unwrap();
    seatwarden::config::Config::load_with_env(&dir.join(name), Some(Default::default())).unwrap()
}

/// One reconcile on a fresh workspace. The state database is fresh too (a first
/// run), or with `warm` it holds an earlier reconcile of another copy of the same
/// workspace: links, snapshots and journal already there, as for a scheduled run.
async fn reconcile(
    target: &Target,
    data: &synth::Synth,
    seed: &WorkspaceSnapshot,
    faults: Faults,
    warm: bool,
) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
    if warm {
        let earlier = Workspace::start(target, seed, Faults::default(), "warm-up").await;
        let config = configure(dir.path(), "warm-up.toml", target, &earlier, data);
        let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
        run::execute_with(
            &config,
            &run::directory_from_config(&config),
            &client,
            Store::open(&config.state.path).unwrap(),
            Mode::Reconcile,
        )
        .await
        .unwrap();
        earlier.shutdown().await;
    }
    let workspace = Workspace::start(target, seed, faults, "run").await;
    let config = configure(dir.path(), "seatwarden.toml", target, &workspace, data);
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = run::directory_from_config(&config);

    let started = Instant::now();
    let cpu_before = process_cpu_s();
    let outcome = run::execute_with(
        &config,
        &directory,
        &client,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s() - cpu_before;
    let (requests, writes, faults_429, faults_5xx) = match &workspace.sandbox {
        Some(sandbox) => {
            let stats = sandbox.stats();
            (
                stats.requests,
                stats.writes,
                stats.faults_429,
                stats.faults_5xx,
            )
        }
        None => (client.stats().requests, client.write_requests(), 0, 0),
    };
    let again = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Plan,
    )
    .await
    .unwrap();
    workspace.shutdown().await;
    let s = &outcome.report.summary;
    Measured {
        wall_s,
        cpu_s,
        requests,
        writes,
        actions: s.actions_planned,
        applied: s.actions_applied,
        failed: s.actions_failed,
        retries: s.retries,
        faults_429,
        faults_5xx,
        second_plan_actions: again.plan.actions.len(),
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User and system CPU time of this process so far, all threads (those that have
/// ended included), from `/proc/self/stat`, whose clock ticks (`USER_HZ`) are
/// 10 ms on x86 and ARM Linux.
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn joined(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut positional = Vec::new();
    let mut repeat = 1_usize;
    let mut warm = false;
    let mut latency = Duration::ZERO;
    let mut target = Target::Sandbox {
        paging: SandboxPaging::Index,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--warm" => warm = true,
            "--latency" => {
                let ms = args.next().and_then(|n| n.parse().ok());
                latency = Duration::from_millis(ms.expect("--latency takes milliseconds"));
            }
            "--paging" => {
                let paging = match args.next().as_deref() {
                    Some("index") => SandboxPaging::Index,
                    Some("cursor") => SandboxPaging::Cursor,
                    other => panic!("unknown paging {other:?}; use `index` or `cursor`"),
                };
                target = Target::Sandbox { paging };
            }
            "--repeat" => repeat = args.next().and_then(|n| n.parse().ok()).unwrap_or(1).max(1),
            "--server" => match args.next().as_deref() {
                Some("scim2") => {
                    let env = |name: &str| {
                        std::env::var(name).unwrap_or_else(|_| {
                            panic!("{name} is not set; scripts/bench-scim2.sh starts scim2-server")
                        })
                    };
                    target = Target::Scim2 {
                        base: env("SEATWARDEN_SCIM2_SERVER_URL"),
                        token: env("SEATWARDEN_SCIM2_SERVER_TOKEN"),
                    };
                }
                Some("sandbox") => {
                    target = Target::Sandbox {
                        paging: SandboxPaging::Index,
                    }
                }
                other => panic!("unknown server {other:?}; use `sandbox` or `scim2`"),
            },
            _ => positional.push(arg),
        }
    }
    let scenario = positional
        .first()
        .cloned()
        .unwrap_or_else(|| "drift".into());
    let people: usize = positional
        .get(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let fault_percent: f64 = positional
        .get(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    if (fault_percent > 0.0 || !latency.is_zero()) && matches!(target, Target::Scim2 { .. }) {
        panic!("fault injection and --latency need the sandbox");
    }
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
        latency,
        ..Faults::default()
    };

    // Runs and floors alternate, so a server that slows down as it fills up (a
    // long-lived scim2-server keeps every tenant) weighs on both alike. The floor
    // replays the first run's writes: with the same seed every run makes the same.
    let first = reconcile(&target, &data, &seed, faults, warm).await;
    let peak = peak_rss_mib();
    let writes = first.writes;
    let mut runs = vec![first];
    let mut measured_floors = vec![floor(&target, &seed, writes, latency).await];
    for _ in 1..repeat {
        runs.push(reconcile(&target, &data, &seed, faults, warm).await);
        measured_floors.push(floor(&target, &seed, writes, latency).await);
    }
    let floors: Vec<f64> = measured_floors.iter().map(|f| f.0).collect();
    let floor_cpus: Vec<f64> = measured_floors.iter().map(|f| f.1).collect();
    let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
    let cpus: Vec<f64> = runs.iter().map(|r| r.cpu_s).collect();
    let best = runs
        .iter()
        .min_by(|a, b| a.wall_s.total_cmp(&b.wall_s))
        .unwrap();
    let floor_s = floors.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{{\"bench\":\"e2e\",\"server\":\"{}\",\"scenario\":\"{scenario}\",\"people\":{people},\
         \"fault_percent\":{fault_percent},\"latency_ms\":{},\"warm\":{warm},\"concurrency\":{},\"page_size\":{},\"repeat\":{repeat},\
         \"wall_s\":{:.2},\"walls_s\":[{}],\"requests\":{},\"requests_per_s\":{:.0},\"writes\":{},\
         \"floor_s\":{floor_s:.2},\"floors_s\":[{}],\"ratio_to_floor\":{:.2},\"actions\":{},\"applied\":{},\
         \"failed\":{},\"retries\":{},\"faults_429\":{},\"faults_5xx\":{},\"second_plan_actions\":{},\
         \"cpus_s\":[{}],\"floor_cpus_s\":[{}],\"cpu_ratio_to_floor\":{:.2},\"peak_rss_mib\":{peak:.0}}}",
        target.name(),
        latency.as_millis(),
        target.concurrency(),
        target.page(),
        best.wall_s,
        joined(&walls),
        best.requests,
        best.requests as f64 / best.wall_s,
        best.writes,
        joined(&floors),
        best.wall_s / floor_s,
        best.actions,
        best.applied,
        best.failed,
        best.retries,
        best.faults_429,
        best.faults_5xx,
        runs.iter()
            .map(|r| r.second_plan_actions)
            .max()
            .unwrap_or(0),
        joined(&cpus),
        joined(&floor_cpus),
        median(&cpus) / median(&floor_cpus),
    );
}
