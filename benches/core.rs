//! Benchmarks for the pure core and the snapshot ingest (issue 2's goals).
//!
//! One measurement per process, so peak memory (VmHWM) belongs to that size alone:
//!
//! ```sh
//! cargo bench --bench core -- plan 100000      # desired state + plan + guard
//! cargo bench --bench core -- ingest 100000    # workspace snapshot into SQLite
//! cargo bench --bench core -- retention 10000  # database size after 30 days of the daemon
//! scripts/bench.sh                             # every size, as in BENCHMARKS.md
//! ```
//!
//! Data comes from `seatwarden::synth` (deterministic for the seed) with 5% drift.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use seatwarden::guard::{self, GuardInput, GuardSettings};
use seatwarden::model::{Link, Role};
use seatwarden::plan::{self, DeprovisionAction, PlanSettings};
use seatwarden::policy::{self, Mapping, PolicySettings, Protected, UnmatchedAccounts};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// FNV-1a over everything written to it.
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let what = args.first().map(String::as_str).unwrap_or("plan");
    let people: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let groups = 20;
    let spec = SynthSpec {
        people,
        groups,
        drift_percent: 5.0,
        seed: 42,
    };
    let generated = Instant::now();
    let data = synth::generate(&spec);
    let generate_s = generated.elapsed().as_secs_f64();

    match what {
        "plan" => {
            let policy_settings = PolicySettings {
                scope_groups: vec!["Taskade Users".into()],
                default_role: Role::Viewer,
                mappings: data
                    .roles
                    .iter()
                    .map(|(group, role)| Mapping {
                        group: group.clone(),
                        workspace_group: group.clone(),
                        role: *role,
                    })
                    .collect(),
                manage_roles: true,
            };
            let plan_settings = PlanSettings {
                deprovision: DeprovisionAction::Deactivate,
                retention: Default::default(),
                unmatched_accounts: UnmatchedAccounts::Report,
                manage_roles: true,
                protected: Protected::new(&["breakglass@example.com".to_owned()]),
                admin_command: seatwarden::model::DEFAULT_ADMIN_COMMAND.to_owned(),
            };
            // Links as a previous run would have stored them: every matched account.
            let links: Vec<Link> = data
                .workspace
                .accounts
                .iter()
                .filter_map(|a| {
                    a.external_id.as_ref().map(|id| Link {
                        identity_id: id.clone(),
                        account_id: a.id.clone(),
                    })
                })
                .collect();
            // Peak so far: the generated snapshots and links, before the core runs.
            let input_peak = peak_rss_mib();
            let started = Instant::now();
            let desired = policy::desired_state(&data.directory, &policy_settings);
            let planned = plan::plan(
                &desired,
                &data.directory,
                &data.workspace,
                &links,
                &[],
                &plan_settings,
            );
            let guarded = guard::guard(
                planned,
                &data.workspace,
                &GuardSettings {
                    max_deprovisions: usize::MAX,
                    max_deprovision_percent: 100.0,
                    min_population_for_percent: 0,
                    ..GuardSettings::unlimited()
                },
                &GuardInput {
                    directory_complete: true,
                    managed_accounts: links.len(),
                    ..GuardInput::default()
                },
            );
            let plan_s = started.elapsed().as_secs_f64();
            let peak = peak_rss_mib();
            // A digest of the whole plan (actions, drift, new links, as JSON), taken
            // after the peak is read, so changes to the core can be checked to plan
            // exactly the same thing.
            let mut digest = Fnv(0xcbf2_9ce4_8422_2325);
            serde_json::to_writer(&mut digest, &guarded).unwrap();
            println!(
                "{{\"bench\":\"plan\",\"people\":{people},\"accounts\":{},\"actions\":{},\"drift\":{},\"generate_s\":{generate_s:.3},\"plan_s\":{plan_s:.3},\"input_peak_rss_mib\":{input_peak:.0},\"peak_rss_mib\":{peak:.0},\"plan_digest\":\"{:016x}\"}}",
                data.workspace.accounts.len(),
                guarded.actions.len(),
                guarded.drift.len(),
                digest.0
            );
        }
        "ingest" => {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("bench.db")).unwrap();
            let run = store
                .begin_run(seatwarden::store::RunKind::Plan, chrono::Utc::now())
                .unwrap();
            let memberships: usize = data.workspace.groups.iter().map(|g| g.members.len()).sum();
            let started = Instant::now();
            store.save_workspace_snapshot(run, &data.workspace).unwrap();
            let ingest_s = started.elapsed().as_secs_f64();
            println!(
                "{{\"bench\":\"ingest\",\"accounts\":{},\"groups\":{},\"memberships\":{memberships},\"ingest_s\":{ingest_s:.3},\"peak_rss_mib\":{:.0}}}",
                data.workspace.accounts.len(),
                data.workspace.groups.len(),
                peak_rss_mib()
            );
        }
        "retention" => retention(people, &data),
        other => {
            eprintln!("unknown benchmark {other:?}; use `plan N`, `ingest N` or `retention N`");
            std::process::exit(2);
        }
    }
}

/// The state database after 30 days of the daemon's default schedule: 48 reconciles
/// a day, each saving both snapshots, its plan (the first run's full drift, then ten
/// actions a run, as in a converged workspace with a trickle of changes) and its
/// report and dropping all but the newest 3 runs' snapshots, with the daily `prune`
/// job (30-day retention, then VACUUM) — exactly the store calls the daemon makes.
fn retention(people: usize, data: &synth::Synth) {
    use chrono::{Duration, TimeZone, Utc};
    use seatwarden::store::{RunKind, RunStatus};
    let policy_settings = PolicySettings {
        scope_groups: vec!["Taskade Users".into()],
        default_role: Role::Viewer,
        mappings: Vec::new(),
        manage_roles: true,
    };
    let desired = policy::desired_state(&data.directory, &policy_settings);
    let full = plan::plan(
        &desired,
        &data.directory,
        &data.workspace,
        &[],
        &[],
        &PlanSettings {
            deprovision: DeprovisionAction::Deactivate,
            retention: Default::default(),
            unmatched_accounts: UnmatchedAccounts::Report,
            manage_roles: true,
            protected: Protected::new(&[]),
            admin_command: seatwarden::model::DEFAULT_ADMIN_COMMAND.to_owned(),
        },
    );
    let mut trickle = full.clone();
    trickle.actions.truncate(10);
    trickle.drift.truncate(10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let days = 31;
    let started = Instant::now();
    let mut largest = 0u64;
    for day in 0..days {
        for slot in 0..48 {
            let at = start + Duration::days(day) + Duration::minutes(30 * slot);
            let run = store.begin_run(RunKind::Reconcile, at).unwrap();
            store.save_directory_snapshot(run, &data.directory).unwrap();
            store.save_workspace_snapshot(run, &data.workspace).unwrap();
            let plan = if day == 0 && slot == 0 {
                &full
            } else {
                &trickle
            };
            store.save_plan(run, plan, at).unwrap();
            let report = serde_json::json!({"run_id": run, "drift": plan.drift}).to_string();
            store.save_report(run, &report).unwrap();
            store
                .finish_run(run, at, RunStatus::Succeeded, None)
                .unwrap();
            // As the daemon's reconcile job: snapshots of the newest 3 runs kept.
            store.prune_snapshots(3).unwrap();
        }
        // The daily prune job at the end of the day.
        let now = start + Duration::days(day + 1);
        largest = largest.max(file_size(&path));
        store.prune_before(now - Duration::days(30)).unwrap();
        store.prune_snapshots(3).unwrap();
        store.vacuum().unwrap();
    }
    let size = file_size(&path);
    println!(
        "{{\"bench\":\"retention\",\"people\":{people},\"days\":{days},\"runs\":{},\"db_mib_after_prune\":{:.1},\"db_mib_peak_before_daily_prune\":{:.1},\"wall_s\":{:.1}}}",
        days * 48,
        size as f64 / 1048576.0,
        largest as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
}

fn file_size(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}
