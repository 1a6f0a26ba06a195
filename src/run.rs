//! One reconciliation run, end to end: snapshot both sides, store them, compute
//! the desired state, plan, guard, and (in reconcile mode) apply and verify, then
//! store the drift report. `plan` and `reconcile --dry-run` stop before apply and
//! write nothing to the workspace.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::apply::{self, ApplyError};
use crate::config::{Config, ConfigError};
use crate::directory::{Directory, DirectoryError};
use crate::guard::{self, GuardInput};
use crate::model::{DirectorySnapshot, Plan, WorkspaceSnapshot};
use crate::plan;
use crate::policy;
use crate::report::{self, ActionOutcome, Outcome, Report, Summary};
use crate::store::{ActionState, RunId, RunKind, RunStatus, Store, StoreError};
use crate::workspace::{Progress, ScimClient, WorkspaceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read both sides, plan, store the plan; no workspace writes.
    Plan,
    /// Same as plan, recorded as a dry run of `reconcile`.
    DryRun,
    /// Plan, apply, verify.
    Reconcile,
}

impl Mode {
    fn run_kind(self) -> RunKind {
        match self {
            Mode::Plan => RunKind::Plan,
            Mode::DryRun => RunKind::DryRun,
            Mode::Reconcile => RunKind::Reconcile,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Plan => "plan",
            Mode::DryRun => "dry_run",
            Mode::Reconcile => "reconcile",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("reading the workspace: {0}")]
    Workspace(#[from] WorkspaceError),
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("applying the plan: {0}")]
    Apply(#[from] ApplyError),
    #[error("the state database lock was poisoned")]
    Poisoned,
}

impl crate::retry::Transient for RunError {
    fn is_transient(&self) -> bool {
        match self {
            RunError::Config(_) | RunError::Poisoned => false,
            RunError::Directory(e) => e.is_transient(),
            RunError::Workspace(e) => e.is_transient(),
            RunError::Store(e) => e.is_transient(),
            RunError::Apply(e) => e.is_transient(),
        }
    }
}

/// What a finished run leaves behind.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: RunId,
    pub plan: Plan,
    pub report: Report,
}

pub fn directory_from_config(config: &Config) -> Directory {
    config.directory()
}

/// Progress lines on stderr while snapshots are read; only when stderr is a TTY,
/// so logs and CI output stay clean.
fn progress_printer(enabled: bool) -> impl Fn(Progress) + Send + Sync {
    move |p: Progress| {
        if enabled {
            let total = p.total.map(|t| format!("/{t}")).unwrap_or_default();
            eprint!(
                "\r  reading workspace {}: {}{} objects, {} pages   ",
                p.what, p.objects, total, p.pages
            );
        }
    }
}

/// Runs the pipeline once against the configured directory and workspace.
pub async fn execute(config: &Config, store: Store, mode: Mode) -> Result<RunOutcome, RunError> {
    let client = ScimClient::new(config.scim_settings()?)?;
    let directory = directory_from_config(config);
    execute_with(config, &directory, &client, store, mode).await
}

/// [`execute`] with the connectors supplied (tests, demo).
pub async fn execute_with(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: Store,
    mode: Mode,
) -> Result<RunOutcome, RunError> {
    let store = Mutex::new(store);
    let started_at = Utc::now();
    let run_id = lock(&store)?.begin_run(mode.run_kind(), started_at)?;
    tracing::info!(run = run_id, mode = mode.as_str(), "run started");
    match pipeline(config, directory, client, &store, mode, run_id, started_at).await {
        Ok(outcome) => {
            lock(&store)?.finish_run(run_id, Utc::now(), RunStatus::Succeeded, None)?;
            tracing::info!(
                run = run_id,
                drift = outcome.report.summary.drift_total,
                applied = outcome.report.summary.actions_applied,
                failed = outcome.report.summary.actions_failed,
                held = outcome.report.summary.actions_held,
                "run finished"
            );
            Ok(outcome)
        }
        Err(error) => {
            let message = error.to_string();
            tracing::error!(run = run_id, error = %message, "run failed");
            if let Ok(mut store) = store.lock() {
                let _ = store.finish_run(run_id, Utc::now(), RunStatus::Failed, Some(&message));
            }
            Err(error)
        }
    }
}

fn lock(store: &Mutex<Store>) -> Result<std::sync::MutexGuard<'_, Store>, RunError> {
    store.lock().map_err(|_| RunError::Poisoned)
}

async fn pipeline(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: &Mutex<Store>,
    mode: Mode,
    run_id: RunId,
    started_at: DateTime<Utc>,
) -> Result<RunOutcome, RunError> {
    let recovered = if mode == Mode::Reconcile {
        apply::recover(client, store).await?
    } else {
        0
    };

    let directory_snapshot: DirectorySnapshot = directory.snapshot().await?;
    tracing::info!(identities = directory_snapshot.identities.len(), source = %directory.describe(), "directory read");
    client.discover().await?;
    let show_progress = std::io::stderr().is_terminal();
    let workspace_snapshot: WorkspaceSnapshot =
        client.snapshot(&progress_printer(show_progress)).await?;
    if show_progress {
        eprintln!();
    }
    tracing::info!(
        accounts = workspace_snapshot.accounts.len(),
        groups = workspace_snapshot.groups.len(),
        "workspace read"
    );

    let links = {
        let mut store = lock(store)?;
        store.save_directory_snapshot(run_id, &directory_snapshot)?;
        store.save_workspace_snapshot(run_id, &workspace_snapshot)?;
        store.links()?
    };
    let links: Vec<crate::model::Link> = links
        .into_iter()
        .map(|l| crate::model::Link {
            identity_id: l.identity_id,
            account_id: l.account_id,
        })
        .collect();

    let desired = policy::desired_state(&directory_snapshot, &config.policy_settings());
    let planned = plan::plan(
        &desired,
        &directory_snapshot,
        &workspace_snapshot,
        &links,
        &config.plan_settings(),
    );
    let managed = managed_accounts(&workspace_snapshot, &links, &planned);
    let guarded = guard::guard(
        planned,
        &workspace_snapshot,
        &config.guard_settings(),
        &GuardInput {
            directory_complete: directory_snapshot.complete,
            managed_accounts: managed,
        },
    );
    {
        let mut store = lock(store)?;
        store.save_plan(run_id, &guarded, Utc::now())?;
        if mode == Mode::Reconcile {
            store.upsert_links(&guarded.new_links, Utc::now())?;
        }
    }

    if mode == Mode::Reconcile && guarded.runnable().next().is_some() {
        let page = config.workspace.page_size.max(1) as usize;
        let relist_requests = workspace_snapshot.accounts.len().div_ceil(page)
            + workspace_snapshot.groups.len().div_ceil(page)
            + 2;
        let summary = apply::apply(
            client,
            store,
            run_id,
            &guarded,
            config.workspace.max_concurrency,
            relist_requests,
        )
        .await?;
        tracing::info!(
            applied = summary.applied,
            failed = summary.failed,
            "plan applied"
        );
    }

    let report = build_report(
        config,
        directory,
        store,
        run_id,
        mode,
        started_at,
        ReportCounts {
            identities: directory_snapshot.identities.len(),
            accounts: workspace_snapshot.accounts.len(),
            managed_accounts: managed,
            retries: client.stats().retries,
            recovered,
        },
        &guarded,
    )?;
    lock(store)?.save_report(run_id, &report.to_json())?;
    Ok(RunOutcome {
        run_id,
        plan: guarded,
        report,
    })
}

/// Accounts linked (or matched this run) to a directory identity: the population
/// the percentage thresholds are computed against.
fn managed_accounts(
    workspace: &WorkspaceSnapshot,
    links: &[crate::model::Link],
    plan: &Plan,
) -> usize {
    let existing: HashSet<&str> = workspace.accounts.iter().map(|a| a.id.as_str()).collect();
    links
        .iter()
        .map(|l| l.account_id.as_str())
        .chain(plan.new_links.iter().map(|l| l.account_id.as_str()))
        .filter(|id| existing.contains(id))
        .collect::<HashSet<_>>()
        .len()
}

struct ReportCounts {
    identities: usize,
    accounts: usize,
    managed_accounts: usize,
    retries: u64,
    recovered: usize,
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    config: &Config,
    directory: &Directory,
    store: &Mutex<Store>,
    run_id: RunId,
    mode: Mode,
    started_at: DateTime<Utc>,
    counts: ReportCounts,
    plan: &Plan,
) -> Result<Report, RunError> {
    let journal = lock(store)?.journal(run_id)?;
    let actions: Vec<ActionOutcome> = journal
        .iter()
        .map(|entry| {
            let outcome = match entry.state {
                ActionState::Applied => Outcome::Applied,
                ActionState::Failed => Outcome::Failed,
                ActionState::Held => Outcome::Held,
                ActionState::Planned | ActionState::InFlight => Outcome::NotRun,
            };
            let error = match (&entry.action.held, &entry.last_error) {
                (Some(hold), _) => Some(hold.to_string()),
                (None, Some(e)) => Some(e.clone()),
                _ => None,
            };
            ActionOutcome {
                seq: entry.action.seq,
                op: entry.action.kind.name().to_owned(),
                reason: entry.action.reason,
                subject: entry.action.subject.clone(),
                detail: entry.action.detail.clone(),
                outcome,
                attempts: entry.attempts,
                error,
            }
        })
        .collect();
    let count = |o: Outcome| actions.iter().filter(|a| a.outcome == o).count();
    let (applied, failed, held, not_run) = (
        count(Outcome::Applied),
        count(Outcome::Failed),
        count(Outcome::Held),
        count(Outcome::NotRun),
    );
    let summary = Summary {
        identities: counts.identities,
        accounts: counts.accounts,
        managed_accounts: counts.managed_accounts,
        drift_total: plan.drift.len(),
        drift_by_kind: report::count_by_kind(&plan.drift),
        actions_planned: actions.len(),
        actions_applied: applied,
        actions_failed: failed,
        actions_held: held,
        actions_not_run: not_run,
        retries: counts.retries,
        recovered: counts.recovered,
        converged: applied == actions.len(),
    };
    Ok(Report {
        schema_version: report::SCHEMA_VERSION,
        run_id,
        mode: mode.as_str().to_owned(),
        started_at,
        finished_at: Utc::now(),
        directory: directory.describe(),
        workspace: config.workspace.url.clone(),
        summary,
        drift: plan.drift.clone(),
        actions,
    })
}
