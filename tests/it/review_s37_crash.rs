//! Crash safety, by really killing the process: `seatwarden reconcile` (and
//! `approve`) run as a child against the in-process sandbox and are SIGKILLed at
//! points chosen by what the sandbox has seen, not by sleeps: during the creates,
//! at a phase boundary, during the membership writes, during verification, in the
//! next run's recovery, during an approval, and during the very first run on a
//! fresh database. The next run must finish the work: the workspace converges, no
//! write that reached the workspace is made a second time, no account is created
//! twice, and the killed run's journal ends with nothing in flight, each row as
//! the workspace showed it when the process died.
//!
//! Two reconciles on one state database (started together on a fresh one, or the
//! second while the first writes, or while the first is killed): the second waits
//! for the writer lock, says so, and plans nothing once it runs, or finishes what
//! the killed one left. An approval cut off between its verified writes and the
//! ledger is settled by the next approval of the run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use seatwarden::apply::NOT_REACHED_INTERRUPTED;
use seatwarden::config::Config;
use seatwarden::model::{
    AccountRef, ActionKind, GroupRef, IdentityStatus, Plan, Role, WorkspaceSnapshot,
};
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions, SeenRequest};
use seatwarden::store::{ActionState, RunId, RunKind, RunRecord, RunStatus, Store};
use seatwarden::synth::{self, Synth, SynthSpec};

const TOKEN: &str = "crash-token";

/// Every request waits this long: a run of a few hundred writes takes about a
/// second, long enough to be killed where a test wants.
const LATENCY: Duration = Duration::from_millis(8);

/// The writes of the run, four at a time.
const CONCURRENCY: usize = 4;

/// A workspace a few hundred writes from converged, a configuration for it, and
/// the sandbox serving it, recording every request.
pub(crate) struct Scenario {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) sandbox: Sandbox,
    pub(crate) config: Config,
    /// `SEATWARDEN__…` overrides, for the binary and `config` alike.
    env: Vec<(String, String)>,
    /// Accounts the seed lacks: the creates the runs must make, once each.
    missing: usize,
}

/// The synthetic workspace of `data`, converged, then drifted: the last group is
/// gone (a create of it, and of its memberships); leavers are active again
/// (deactivations); every third active person has no account (creates and
/// memberships); of the rest, some have another role (role changes), some are in
/// none of their groups (membership adds) and some are in a group nothing grants
/// (membership removals). Returns it with the number of accounts missing.
fn drifted(data: &Synth) -> (WorkspaceSnapshot, usize) {
    let mut workspace = data.workspace.clone();
    let status: HashMap<&str, IdentityStatus> = data
        .directory
        .identities
        .iter()
        .map(|i| (i.id.as_str(), i.status))
        .collect();
    workspace.groups.pop();
    let mut removed = HashSet::new();
    let mut out_of_groups = HashSet::new();
    let mut extra = Vec::new();
    for account in &mut workspace.accounts {
        let n: usize = account.id[1..].parse().unwrap();
        let identity = account.external_id.as_deref().unwrap();
        if status[identity] != IdentityStatus::Active {
            account.active = true;
        } else if n.is_multiple_of(3) {
            removed.insert(account.id.clone());
        } else if n % 7 == 1 {
            let other = if account.roles == [Role::Viewer.as_str()] {
                Role::Editor
            } else {
                Role::Viewer
            };
            account.roles = vec![other.as_str().to_owned()];
        } else if n % 5 == 2 {
            out_of_groups.insert(account.id.clone());
        } else if n % 11 == 4 {
            extra.push(account.id.clone());
        }
    }
    workspace.accounts.retain(|a| !removed.contains(&a.id));
    for group in &mut workspace.groups {
        group
            .members
            .retain(|m| !removed.contains(m) && !out_of_groups.contains(m));
    }
    let first = &mut workspace.groups[0];
    for id in extra {
        if !first.members.contains(&id) {
            first.members.push(id);
        }
    }
    first.members.sort();
    (workspace, removed.len())
}

/// `people` of the synthetic directory in 12 groups, the workspace [`drifted`]
/// from it, and `env` on top of the usual configuration (no thresholds in the way).
pub(crate) async fn scenario(people: usize, env: &[(&str, &str)]) -> Scenario {
    scenario_with(people, env, LATENCY).await
}

/// [`scenario`], each request taking `latency`.
async fn scenario_with(people: usize, env: &[(&str, &str)], latency: Duration) -> Scenario {
    let data = synth::generate(&SynthSpec {
        people,
        groups: 12,
        drift_percent: 0.0,
        seed: 37,
    });
    let (seed, missing) = drifted(&data);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            faults: Faults {
                latency,
                ..Faults::default()
            },
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::synth_config(
        dir.path(),
        &data,
        sandbox.base_url().as_str(),
        TOKEN,
        CONCURRENCY,
    );
    // Its inline token would be warned about on every run's stderr.
    std::fs::set_permissions(
        dir.path().join("seatwarden.toml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(env.iter().cloned().collect()),
    )
    .unwrap();
    sandbox.record_requests();
    Scenario {
        dir,
        sandbox,
        config,
        env,
        missing,
    }
}

impl Scenario {
    /// The binary with `args`, in the scenario's folder; its stderr goes to
    /// `<name>.stderr` there.
    pub(crate) fn spawn(&self, args: &[&str], name: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(self.dir.path().join("seatwarden.toml"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("SEATWARDEN_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .env("SEATWARDEN_OPERATOR", "crash-test")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.stderr_path(name)).unwrap())
            .spawn()
            .unwrap()
    }

    fn stderr_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.stderr"))
    }

    pub(crate) fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.stderr_path(name)).unwrap_or_default()
    }

    pub(crate) fn store(&self) -> Store {
        Store::open(&self.config.state.path).unwrap()
    }

    /// Runs the binary with `args` to its end; its exit code.
    pub(crate) async fn run(&self, args: &[&str], name: &str) -> i32 {
        let child = self.spawn(args, name);
        let status = exit_of(child, name).await;
        status.code().unwrap_or(-1)
    }

    /// `reconcile` to its end, which must be a clean one (exit 0).
    pub(crate) async fn reconcile_to_the_end(&self, name: &str) {
        let code = self.run(&["reconcile"], name).await;
        assert_eq!(code, 0, "{name}: {}", self.stderr(name));
    }

    /// Kills `child` (SIGKILL) once `point` holds for the requests recorded,
    /// then waits until the sandbox handles none of its requests any more.
    /// Returns how many requests were recorded by then: all the dead process's.
    pub(crate) async fn kill_when(
        &self,
        mut child: Child,
        name: &str,
        point: impl Fn(&[SeenRequest]) -> bool,
    ) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if point(&self.sandbox.requests_seen()) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{name} ended ({status}) before its kill point: {}",
                    self.stderr(name)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no kill point in a minute"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{name} was not killed: {status}");
        self.settle().await
    }

    /// Waits until no request is being handled (a dead client's are dropped or
    /// answered); how many were recorded.
    async fn settle(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sandbox.requests_in_progress() > 0 {
            assert!(Instant::now() < deadline, "the sandbox never went idle");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.sandbox.requests_seen().len()
    }

    /// The plan a reconcile would make now, on a database of its own.
    async fn preview(&self) -> Plan {
        let mut config = self.config.clone();
        config.state.path = self.dir.path().join("preview.db");
        run::execute(
            &config,
            Store::open(&config.state.path).unwrap(),
            Mode::Plan,
        )
        .await
        .unwrap()
        .plan
    }

    /// The newest reconcile run, which must be running (a process killed
    /// mid-run left it so) or `status`.
    pub(crate) fn newest_reconcile(&self) -> RunId {
        self.store()
            .latest_run(&[RunKind::Reconcile])
            .unwrap()
            .expect("a reconcile run")
            .id
    }
}

/// `child`'s exit status, waited for off the runtime's threads (a minute at most).
async fn exit_of(mut child: Child, name: &str) -> ExitStatus {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name} did not finish within a minute");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap()
}

fn is_write(r: &SeenRequest) -> bool {
    matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
}

fn ok(r: &SeenRequest) -> bool {
    (200..300).contains(&r.status)
}

/// Writes the workspace took, in order.
fn writes(seen: &[SeenRequest]) -> impl Iterator<Item = &SeenRequest> {
    seen.iter().filter(|r| is_write(r) && ok(r))
}

pub(crate) fn count(seen: &[SeenRequest], method: &str, prefix: &str) -> usize {
    writes(seen)
        .filter(|r| r.method == method && r.path.starts_with(prefix))
        .count()
}

/// What a write that the workspace took changed, one key per effect: a create
/// by its (folded) name, a PATCH by each of its operations, a member add or
/// removal by its group and member. A key seen twice is a change made twice.
fn effects(r: &SeenRequest) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
    let ops = || r.body["Operations"].as_array().cloned().unwrap_or_default();
    match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/Users") => vec![format!("create user {}", text(&r.body["userName"]))],
        ("POST", "/Groups") => vec![format!("create group {}", text(&r.body["displayName"]))],
        ("PATCH", path) if path.starts_with("/Groups/") => ops()
            .iter()
            .flat_map(|op| match (op["op"].as_str(), op["path"].as_str()) {
                (Some("add"), Some("members")) => op["value"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| format!("{path} add {}", text(&m["value"])))
                    .collect(),
                (Some("remove"), Some(target)) if target.starts_with("members[value eq ") => {
                    let id = target.split('"').nth(1).unwrap_or_default();
                    vec![format!("{path} remove {}", id.to_lowercase())]
                }
                _ => vec![format!("{path} {op}")],
            })
            .collect(),
        ("PATCH", path) => ops()
            .iter()
            .map(|op| {
                format!(
                    "{path} {} {} {}",
                    text(&op["op"]),
                    text(&op["path"]),
                    op["value"]
                )
            })
            .collect(),
        (method, path) => vec![format!("{method} {path} {}", r.body)],
    }
}

/// The keys of every write in `seen` ([`effects`]).
pub(crate) fn all_effects(seen: &[SeenRequest]) -> Vec<String> {
    writes(seen).flat_map(effects).collect()
}

/// Whether `seen` shows the change a journaled action makes: `None` for a
/// membership change only partly made (more than one request) and for the kinds
/// not checked. Created groups and accounts are found in `workspace` as it ends.
fn shows(seen: &[String], kind: &ActionKind, workspace: &WorkspaceSnapshot) -> Option<bool> {
    let has = |key: String| seen.contains(&key);
    let group_id = |group: &GroupRef| match group {
        GroupRef::Existing { id, .. } => Some(id.clone()),
        GroupRef::Created { display_name } => workspace
            .groups
            .iter()
            .find(|g| g.display_name.eq_ignore_ascii_case(display_name))
            .map(|g| g.id.clone()),
    };
    let all_or_none = |keys: Vec<String>| {
        let made = keys.iter().filter(|key| seen.contains(key)).count();
        match made {
            0 => Some(false),
            n if n == keys.len() => Some(true),
            _ => None,
        }
    };
    match kind {
        ActionKind::Deactivate { account_id } => {
            Some(has(format!("/Users/{account_id} replace active false")))
        }
        ActionKind::CreateAccount { spec, .. } => Some(has(format!(
            "create user {}",
            spec.user_name.to_lowercase()
        ))),
        ActionKind::SetRole { account_id, .. } => {
            Some(seen.iter().any(|key| {
                key.starts_with(&format!("/Users/{account_id} ")) && key.contains("roles")
            }))
        }
        ActionKind::AddMembers { group, members } => {
            let group = group_id(group)?;
            let keys = members
                .iter()
                .map(|member| {
                    let id = match member {
                        AccountRef::Existing { id } => id.clone(),
                        AccountRef::Created { identity_id } => workspace
                            .accounts
                            .iter()
                            .find(|a| a.external_id.as_deref() == Some(identity_id.as_str()))?
                            .id
                            .clone(),
                    };
                    Some(format!("/Groups/{group} add {}", id.to_lowercase()))
                })
                .collect::<Option<Vec<String>>>()?;
            all_or_none(keys)
        }
        ActionKind::RemoveMembers { group, members } => {
            let group = group_id(group)?;
            all_or_none(
                members
                    .iter()
                    .map(|id| format!("/Groups/{group} remove {}", id.to_lowercase()))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// A killed run, and how many requests the sandbox had recorded once its
/// process was dead.
struct Killed {
    run: RunId,
    cut: usize,
}

/// What every crash leaves once a later run finished: the workspace converged,
/// each write the workspace took was taken once (a create, a deactivation, a role,
/// a member), as many accounts were created as were missing, nothing is left in
/// flight, and each killed run is recorded cut off, its rows as the workspace
/// showed them when its process died.
async fn assert_crash_safe(s: &Scenario, killed: &[Killed]) {
    let seen = s.sandbox.requests_seen();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for key in all_effects(&seen) {
        *counts.entry(key).or_default() += 1;
    }
    let mut twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    twice.sort();
    assert!(twice.is_empty(), "writes made more than once: {twice:?}");
    // A create sent again for an account that exists is a write made twice too,
    // refused (409) or not.
    let mut created = HashSet::new();
    for r in seen
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/Users")
    {
        let name = r.body["userName"].as_str().unwrap().to_lowercase();
        assert!(
            !created.contains(&name),
            "a create of {name} was sent after the account was made (HTTP {})",
            r.status
        );
        if ok(r) {
            created.insert(name);
        }
    }
    assert_eq!(created.len(), s.missing, "accounts created");
    let workspace = s.sandbox.snapshot();
    let mut names = HashSet::new();
    for account in &workspace.accounts {
        assert!(
            names.insert(account.user_name.to_lowercase()),
            "two accounts named {}",
            account.user_name
        );
    }

    let store = s.store();
    assert!(
        store.interrupted().unwrap().is_empty(),
        "rows left in flight"
    );
    for Killed { run, cut } in killed {
        let record = store.run(*run).unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Failed, "killed run {run}");
        assert!(
            record
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("interrupted")),
            "{record:?}"
        );
        let before_death: Vec<String> = all_effects(&seen[..*cut]);
        for row in store.journal(*run).unwrap() {
            let kind = &row.action.kind;
            let shown = shows(&before_death, kind, &workspace);
            match row.state {
                ActionState::Applied => assert_ne!(
                    shown,
                    Some(false),
                    "run {run} row {} is applied, but its write never reached the workspace",
                    row.action.seq
                ),
                ActionState::Failed => {
                    let error = row.last_error.as_deref().unwrap_or_default();
                    assert!(
                        error.starts_with(NOT_REACHED_INTERRUPTED),
                        "run {run} row {} failed: {error}",
                        row.action.seq
                    );
                    assert_ne!(
                        shown,
                        Some(true),
                        "run {run} row {} failed as not reached, but the workspace took it: {error}",
                        row.action.seq
                    );
                }
                ActionState::Planned => assert_ne!(
                    shown,
                    Some(true),
                    "run {run} row {} was never sent, but the workspace took it",
                    row.action.seq
                ),
                ActionState::Held => {}
                ActionState::InFlight => unreachable!("checked above"),
            }
        }
    }
    drop(store);

    let after = run::execute(&s.config, s.store(), Mode::Plan)
        .await
        .unwrap();
    assert!(
        after.plan.is_empty(),
        "not converged: {:#?}",
        after.plan.actions
    );
}

/// Write requests a plan makes: one per action, a membership change one per
/// hundred members.
fn write_requests(plan: &Plan) -> usize {
    plan.runnable()
        .map(|a| match &a.kind {
            ActionKind::AddMembers { members, .. } => members.len().div_ceil(100),
            ActionKind::RemoveMembers { members, .. } => members.len().div_ceil(100),
            _ => 1,
        })
        .sum()
}

/// Kills the first reconcile once `point` holds, runs the next to its end, and
/// checks [`assert_crash_safe`].
async fn killed_then_finished(name: &str, point: impl Fn(&[SeenRequest]) -> bool) {
    let s = scenario(400, &[]).await;
    let child = s.spawn(&["reconcile"], name);
    let cut = s.kill_when(child, name, point).await;
    let run = s.newest_reconcile();
    s.reconcile_to_the_end(&format!("{name}-next")).await;
    assert_crash_safe(&s, &[Killed { run, cut }]).await;
}

/// Killed after 40 of the creates were made: the creates answered but not yet
/// committed to the journal (they are committed once a second) are found by
/// their userName, and never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_creates() {
    killed_then_finished("creates", |seen| count(seen, "POST", "/Users") >= 40).await;
}

/// A reconcile of a fresh [`scenario`] killed after 40 creates; its run.
pub(crate) async fn killed_after_40_creates(s: &Scenario) -> RunId {
    let child = s.spawn(&["reconcile"], "killed");
    s.kill_when(child, "killed", |seen| count(seen, "POST", "/Users") >= 40)
        .await;
    s.newest_reconcile()
}

/// How many of `run`'s rows a recovery failed as never taken by the workspace.
pub(crate) fn cut_off_rows(s: &Scenario, run: RunId) -> usize {
    s.store()
        .journal(run)
        .unwrap()
        .iter()
        .filter(|row| {
            row.state == ActionState::Failed
                && row
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(NOT_REACHED_INTERRUPTED))
        })
        .count()
}

/// `status` after a reconcile killed mid-apply whose rows a recovery resolved
/// (here `approve`'s, with no reconcile since, which closed the run): the rows
/// the workspace never took are "cut off", not "failed" writes the workspace
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_a_killed_reconciles_unreached_rows_as_cut_off() {
    let s = scenario(400, &[]).await;
    let run = killed_after_40_creates(&s).await;
    // Its recovery resolves the rows; there is nothing held to approve.
    s.run(&["approve", &run.to_string()], "approve").await;
    assert!(s.store().interrupted().unwrap().is_empty());
    let cut_off = cut_off_rows(&s, run);
    assert!(cut_off > 0);

    let output = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(s.dir.path().join("seatwarden.toml"))
        .arg("status")
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();

    let out = String::from_utf8_lossy(&output.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with(&format!(
            "Last reconcile: run {run} interrupted (its process stopped before it finished; \
             its writes resolved since): "
        )) && line.contains(&format!(
            ": {cut_off} cut off before the workspace took them (the next reconcile plans them \
             again), "
        )) && line.contains(&format!(", {cut_off} cut off"))
            && !line.contains(" failed,")
            && !line.contains(" failed;"),
        "{line}"
    );
}

/// `report --run N` for a reconcile killed mid-apply (no report stored) said only
/// that it failed; it says from the journal what reached the workspace now, once
/// the next run's recovery has resolved its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_killed_reconcile_says_what_it_wrote() {
    let s = scenario(400, &[]).await;
    let run = killed_after_40_creates(&s).await;
    s.reconcile_to_the_end("next").await;
    let applied = s
        .store()
        .journal(run)
        .unwrap()
        .iter()
        .filter(|row| row.state == ActionState::Applied)
        .count();
    let cut_off = cut_off_rows(&s, run);
    assert!(applied >= 40 && cut_off > 0, "{applied} {cut_off}");

    let code = s
        .run(&["report", "--run", &run.to_string()], "report")
        .await;

    let err = s.stderr("report");
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "run {run} (reconcile) was interrupted: the process stopped before it finished \
             (started "
        )) && err.contains("; closed at ")
            && err.contains(&format!(". Its writes: {applied} applied, "))
            && err.contains(&format!(
                ", {cut_off} cut off before the workspace took them (the next run plans them again)"
            ))
            // Those are not writes the workspace refused.
            && !err.contains(" failed,"),
        "{err}"
    );
}

/// Killed during the creates just after a batch of them was committed (links and
/// results, once a second): the recovery finds accounts both linked and not yet,
/// and claims each for its person once. Requests take 60 ms, so the phase of 127
/// creates, four at a time, lasts about two seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_creates_after_a_batch_was_recorded() {
    let s = scenario_with(400, &[], Duration::from_millis(60)).await;
    let child = s.spawn(&["reconcile"], "creates");
    let recorded = || -> usize {
        let Ok(conn) = rusqlite::Connection::open_with_flags(
            &s.config.state.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) else {
            return 0;
        };
        conn.query_row(
            "SELECT count(*) FROM actions WHERE kind = 'create_account' AND result IS NOT NULL",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_or(0, |n| usize::try_from(n).unwrap())
    };
    // Killed while creates beyond the recorded batch are out: a child starved of
    // CPU (a loaded machine) could have recorded every create it had sent.
    let cut = s
        .kill_when(child, "creates", |seen| {
            let recorded = recorded();
            recorded > 0 && count(seen, "POST", "/Users") > recorded
        })
        .await;
    let seen = s.sandbox.requests_seen();
    let (recorded, created) = (recorded(), count(&seen[..cut], "POST", "/Users"));
    assert!(
        0 < recorded && recorded < created,
        "{recorded} of {created} creates recorded when killed"
    );
    let run = s.newest_reconcile();
    s.sandbox.set_faults(Faults {
        latency: LATENCY,
        ..Faults::default()
    });
    s.reconcile_to_the_end("creates-next").await;
    assert_crash_safe(&s, &[Killed { run, cut }]).await;
}

/// Killed as the phase of groups ends and the creates begin: the group made,
/// its id perhaps not journaled yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_phases() {
    killed_then_finished("between-phases", |seen| count(seen, "POST", "/Groups") >= 1).await;
}

/// Killed after three membership writes, some of them to the group the run
/// created, for members it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_membership_writes() {
    killed_then_finished("memberships", |seen| count(seen, "PATCH", "/Groups/") >= 3).await;
}

/// Killed while it verifies: every write was made and none is journaled applied
/// yet. The next run's recovery finds each of them done, and sends none again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_verification() {
    let s = scenario(400, &[]).await;
    let expected = write_requests(&s.preview().await);
    let child = s.spawn(&["reconcile"], "verification");
    // The last writes and every read after them are slow: the run is surely
    // still verifying when a read is seen waiting.
    let slowed = std::sync::atomic::AtomicBool::new(false);
    let cut = s
        .kill_when(child, "verification", |seen| {
            let written = writes(seen).count();
            if written + CONCURRENCY >= expected
                && !slowed.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                s.sandbox.set_faults(Faults {
                    latency: Duration::from_millis(400),
                    ..Faults::default()
                });
            }
            written >= expected && s.sandbox.requests_in_progress() > 0
        })
        .await;
    s.sandbox.set_faults(Faults {
        latency: LATENCY,
        ..Faults::default()
    });
    let run = s.newest_reconcile();
    let journal = s.store().journal(run).unwrap();
    assert!(
        journal
            .iter()
            .filter(|row| row.state != ActionState::Held)
            .all(|row| row.state == ActionState::InFlight),
        "killed in verification, every write is in flight: {journal:?}"
    );
    s.reconcile_to_the_end("verification-next").await;
    assert_crash_safe(&s, &[Killed { run, cut }]).await;
    // Every write was made by the killed run: the next one found them done.
    let after_kill = s.sandbox.requests_seen();
    assert_eq!(
        writes(&after_kill[cut..]).count(),
        0,
        "the run after the kill wrote again"
    );
    let journal = s.store().journal(run).unwrap();
    assert!(
        journal.iter().all(|row| row.state == ActionState::Applied),
        "{journal:?}"
    );
}

/// Killed during the creates, then the next run killed in its recovery (its
/// first reads): the third run recovers both and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_creates_then_during_recovery() {
    let s = scenario(400, &[]).await;
    let child = s.spawn(&["reconcile"], "first");
    let cut = s
        .kill_when(child, "first", |seen| count(seen, "POST", "/Users") >= 60)
        .await;
    let run = s.newest_reconcile();
    let child = s.spawn(&["reconcile"], "second");
    s.kill_when(child, "second", |seen| {
        seen[cut..].iter().filter(|r| r.method == "GET").count() >= 3
    })
    .await;
    let second = s.newest_reconcile();
    s.reconcile_to_the_end("third").await;
    assert_crash_safe(&s, &[Killed { run, cut }]).await;
    let record = s.store().run(second).unwrap().unwrap();
    assert_ne!(record.status, RunStatus::Running, "{record:?}");
}

/// The deactivations held by a threshold, approved, the approval killed after
/// eight of them: approving again sends each of the others once, and none twice.
/// The sandbox holds the approval's ninth write and those after it until the
/// kill, so the approval cannot run to its end before a busy machine schedules
/// the test (18 deactivations take it a tenth of a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_an_approval() {
    let s = scenario(400, &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "5")]).await;
    let code = s.run(&["reconcile"], "held").await;
    assert_eq!(code, 3, "{}", s.stderr("held"));
    let run = s.newest_reconcile();
    let held: Vec<String> = s
        .store()
        .journal(run)
        .unwrap()
        .into_iter()
        .filter(|row| row.state == ActionState::Held)
        .map(|row| match row.action.kind {
            ActionKind::Deactivate { account_id } => account_id,
            other => panic!("held: {other:?}"),
        })
        .collect();
    assert!(held.len() > 10, "{held:?}");
    let start = s.sandbox.requests_seen().len();
    s.sandbox.hold_writes_from(9);
    let child = s.spawn(&["approve", &run.to_string()], "approve");
    let cut = s
        .kill_when(child, "approve", |_| s.sandbox.writes_held() > 0)
        .await;
    s.sandbox.release_writes();
    assert_eq!(
        count(&s.sandbox.requests_seen()[start..cut], "PATCH", "/Users/"),
        8,
        "the killed approval's deactivations"
    );
    let code = s.run(&["approve", &run.to_string()], "approve-again").await;
    assert_eq!(code, 0, "{}", s.stderr("approve-again"));
    let seen = s.sandbox.requests_seen();
    let deactivated: Vec<String> = all_effects(&seen[start..])
        .into_iter()
        .filter(|key| key.ends_with(" replace active false"))
        .collect();
    let mut expected: Vec<String> = held
        .iter()
        .map(|id| format!("/Users/{id} replace active false"))
        .collect();
    let mut deactivated = deactivated;
    deactivated.sort();
    expected.sort();
    assert_eq!(deactivated, expected, "each held deactivation sent once");
    let journal = s.store().journal(run).unwrap();
    assert!(
        journal.iter().all(|row| row.state == ActionState::Applied),
        "{journal:?}"
    );
    assert_crash_safe(&s, &[]).await;
}

/// Where [`killed_during_the_first_run_on_a_fresh_database`] kills.
#[derive(Debug, Clone, Copy)]
enum FirstKill {
    /// This long after the database file appears (opening it, setting it up).
    File(u64),
    /// This long after its write-ahead log has content: the migrations are
    /// being written, uncommitted.
    Wal(u64),
    /// As its first request comes in: migrated, its run begun.
    FirstRequest,
}

/// Killed as the very first run opens its new database, at points from the
/// file's appearance through its migrations (all of them, in one transaction,
/// are written to the write-ahead log before they commit) to its first request:
/// each time, the next start migrates, runs and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_first_run_on_a_fresh_database() {
    use FirstKill::*;
    for at in [
        File(0),
        File(2),
        Wal(0),
        Wal(1),
        Wal(3),
        Wal(8),
        FirstRequest,
    ] {
        let s = scenario(60, &[]).await;
        let database = s.config.state.path.clone();
        let mut wal = database.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let mut child = s.spawn(&["reconcile"], "first");
        let deadline = Instant::now() + Duration::from_secs(30);
        let wait_for = |ready: &dyn Fn() -> bool, child: &mut Child| {
            while !ready() {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "{at:?}: {}",
                    s.stderr("first")
                );
                assert!(Instant::now() < deadline, "{at:?} never came");
                std::thread::yield_now();
            }
        };
        let cut = match at {
            File(ms) | Wal(ms) => {
                if let File(_) = at {
                    wait_for(&|| database.exists(), &mut child);
                } else {
                    wait_for(
                        &|| std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
                        &mut child,
                    );
                }
                std::thread::sleep(Duration::from_millis(ms));
                child.kill().unwrap();
                child.wait().unwrap();
                s.settle().await
            }
            FirstRequest => s.kill_when(child, "first", |seen| !seen.is_empty()).await,
        };
        s.reconcile_to_the_end("next").await;
        // The killed run may have got as far as recording itself (run 1), or not.
        let newest = s.newest_reconcile();
        let killed: Vec<Killed> = if newest > 1 {
            vec![Killed { run: 1, cut }]
        } else {
            Vec::new()
        };
        assert_crash_safe(&s, &killed).await;
    }
}

/// A cron job and a person start `reconcile` on one state database: the second
/// waits for the first's writer lock, says so, and, run once the first is done,
/// finds nothing to do. Never both write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reconcile_waits_for_the_first() {
    let s = scenario(400, &[]).await;
    let first = s.spawn(&["reconcile"], "first");
    let deadline = Instant::now() + Duration::from_secs(60);
    while writes(&s.sandbox.requests_seen()).count() < 10 {
        assert!(Instant::now() < deadline, "the first run never wrote");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let second = s.spawn(&["reconcile"], "second");
    let (first, second) = tokio::join!(exit_of(first, "first"), exit_of(second, "second"));
    assert_eq!(first.code(), Some(0), "{}", s.stderr("first"));
    assert_eq!(second.code(), Some(0), "{}", s.stderr("second"));
    let waited = s.stderr("second");
    assert!(
        waited
            .contains("waiting: another seatwarden process holds the state database's writer lock"),
        "{waited}"
    );
    ran_one_after_the_other(&s);
    assert_crash_safe(&s, &[]).await;
}

/// The last two reconciles ran one after the other: the first succeeded, the
/// second began once it had ended and found nothing to write. The first's run.
fn ran_one_after_the_other(s: &Scenario) -> RunRecord {
    let store = s.store();
    let second = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    let first = store.run(second.id - 1).unwrap().unwrap();
    assert_eq!(first.status, RunStatus::Succeeded);
    assert!(
        second.started_at >= first.finished_at.unwrap(),
        "the second run began before the first ended: {first:?} {second:?}"
    );
    assert!(store.journal(second.id).unwrap().is_empty());
    first
}

/// Two reconciles started in the same instant on a state database that does not
/// exist yet: one takes the writer lock (which one is a race), the other waits,
/// and once it runs finds nothing to do. Both exit 0; nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reconciles_started_at_once_on_a_fresh_database() {
    let s = scenario(400, &[]).await;
    assert!(!s.config.state.path.exists());
    let one = s.spawn(&["reconcile"], "one");
    let other = s.spawn(&["reconcile"], "other");
    let (one, other) = tokio::join!(exit_of(one, "one"), exit_of(other, "other"));
    assert_eq!(one.code(), Some(0), "{}", s.stderr("one"));
    assert_eq!(other.code(), Some(0), "{}", s.stderr("other"));
    let first = ran_one_after_the_other(&s);
    assert!(!s.store().journal(first.id).unwrap().is_empty());
    assert_crash_safe(&s, &[]).await;
}

/// The same, the first killed while the second waits for it: its lock goes with
/// its process, and the second recovers what the first left in flight and
/// finishes the work. Which requests were the dead one's is not told apart here
/// (the second starts the moment the first dies), so its rows are not checked
/// one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_waiting_for_one_that_is_killed_finishes_its_work() {
    let s = scenario(400, &[]).await;
    let first = s.spawn(&["reconcile"], "first");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&s.sandbox.requests_seen(), "POST", "/Users") < 30 {
        assert!(Instant::now() < deadline, "the first run never created");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let run = s.newest_reconcile();
    let second = s.spawn(&["reconcile"], "second");
    let waiting = s.stderr_path("second");
    while !std::fs::read_to_string(&waiting)
        .unwrap_or_default()
        .contains("waiting: another seatwarden process holds")
    {
        assert!(Instant::now() < deadline, "the second run never waited");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.kill_when(first, "first", |_| true).await;
    let second = exit_of(second, "second").await;
    assert_eq!(second.code(), Some(0), "{}", s.stderr("second"));
    let record = s.store().run(run).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    assert!(
        s.store()
            .journal(run)
            .unwrap()
            .iter()
            .all(|row| row.state != ActionState::InFlight)
    );
    assert_crash_safe(&s, &[]).await;
}

/// An approval cut off after its deactivations were verified and journaled
/// applied, before it recorded them in the ledger. That window lies between two
/// commits of one process, too narrow to kill in from outside: the state it
/// leaves is made here as `approve` makes it (decisions, rows released, in
/// flight, the writes, applied). Approving the run again finds nothing left to
/// decide on, and records those deprovisions: without it their episodes stayed
/// open (a reconcile plans nothing for inactive accounts, and no recovery sees
/// applied rows), went overdue an hour later and alerted about people with no
/// access left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_cut_off_before_its_ledger_is_recorded_by_the_next() {
    let s = scenario(400, &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "5")]).await;
    let code = s.run(&["reconcile"], "held").await;
    assert_eq!(code, 3, "{}", s.stderr("held"));
    let run = s.newest_reconcile();
    let held: Vec<(u32, String, String)> = s
        .store()
        .journal(run)
        .unwrap()
        .into_iter()
        .filter(|row| row.state == ActionState::Held)
        .map(|row| match row.action.kind {
            ActionKind::Deactivate { account_id } => {
                (row.action.seq, account_id, row.action.identity_id.unwrap())
            }
            other => panic!("held: {other:?}"),
        })
        .collect();
    let open = |s: &Scenario| -> Vec<String> {
        s.store()
            .current_deprovisions()
            .unwrap()
            .into_iter()
            .filter(|e| e.is_open())
            .map(|e| e.identity_id)
            .collect()
    };
    let mut leavers: Vec<String> = held
        .iter()
        .map(|(_, _, identity)| identity.clone())
        .collect();
    leavers.sort();
    let mut waiting = open(&s);
    waiting.sort();
    assert_eq!(waiting, leavers, "the held leavers' episodes are open");

    let seqs: Vec<u32> = held.iter().map(|(seq, _, _)| *seq).collect();
    let now = chrono::Utc::now();
    {
        let mut store = s.store();
        let approved: Vec<_> = seqs
            .iter()
            .map(|seq| (*seq, seatwarden::store::Decision::Approved, None))
            .collect();
        store
            .record_decisions(run, &approved, "crash-test", now)
            .unwrap();
        store.release_held(run, &seqs, now).unwrap();
        store.mark_all_in_flight(run, &seqs, now).unwrap();
    }
    let client = seatwarden::workspace::ScimClient::new(s.config.scim_settings().unwrap()).unwrap();
    for (_, account, _) in &held {
        client.set_active(account, false).await.unwrap();
    }
    s.store()
        .mark_all_applied(run, &seqs, chrono::Utc::now())
        .unwrap();
    // The process dies here, before the ledger.

    let code = s.run(&["approve", &run.to_string()], "approve").await;
    let said = s.stderr("approve");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("has no held actions"), "{said}");
    assert_eq!(open(&s), Vec::<String>::new(), "episodes left open");
    let verified = s
        .store()
        .current_deprovisions()
        .unwrap()
        .into_iter()
        .filter(|e| e.verified_at.is_some())
        .count();
    assert_eq!(verified, held.len());
    // Once: approving again changes nothing more.
    assert_eq!(s.run(&["approve", &run.to_string()], "again").await, 1);
    assert_eq!(
        s.store().current_deprovisions().unwrap().len(),
        held.len(),
        "no episode opened or recorded twice"
    );
    assert_crash_safe(&s, &[]).await;

    // Six of them active again (an admin, say), deactivations held again by a
    // newer run: new episodes, opened after the old rows were applied, which
    // those old writes do not settle.
    let again: Vec<&(u32, String, String)> = held.iter().take(6).collect();
    for (_, account, _) in &again {
        client.set_active(account, true).await.unwrap();
    }
    let code = s.run(&["reconcile"], "held-again").await;
    assert_eq!(code, 3, "{}", s.stderr("held-again"));
    let mut leaving: Vec<String> = again
        .iter()
        .map(|(_, _, identity)| identity.clone())
        .collect();
    leaving.sort();
    let mut waiting = open(&s);
    waiting.sort();
    assert_eq!(waiting, leaving);
    assert_eq!(s.run(&["approve", &run.to_string()], "old").await, 1);
    let mut waiting = open(&s);
    waiting.sort();
    assert_eq!(
        waiting, leaving,
        "the old approval settled the new episodes"
    );
}
