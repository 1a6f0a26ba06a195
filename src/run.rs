//! One reconciliation run, end to end: snapshot both sides, store them, compute
//! the desired state, plan, guard, and (in reconcile mode) apply and verify, then
//! store the drift report. `plan` and `reconcile --dry-run` stop before apply and
//! write nothing to the workspace; run by hand ([`preview_until`]), a Ctrl-C or
//! SIGTERM gives them up where they stand, before their plan is stored. A
//! reconcile's stop ([`RunOptions::stop`]: SIGINT or SIGTERM by hand, the daemon
//! stopping) gives it up the same way while it is still reading (discovery,
//! recovery, both snapshots, the re-check), before its plan is stored: nothing
//! was sent, so its reads are dropped mid-request ([`RunError::StoppedReading`]).
//! Once its apply began, the stop lets the writes sent finish and be verified,
//! and sends no more ([`RunError::Stopped`]). The two
//! sides are read concurrently, the directory snapshot is stored while the
//! workspace is still being read, and the workspace snapshot while the plan is
//! made from it.
//!
//! The safety net (issue 6, [`crate::safety`]) hooks in at fixed points: source
//! sanity once both sides are read (a rejected directory plans nothing), the
//! workspace sanity re-check after planning, the 24 h counts into the guard, the
//! settle window after it, and the circuit breaker around apply. [`RunOptions`]
//! carries the time those rules judge by, so tests move time without sleeping.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::apply::{self, ApplyError};
use crate::config::{Config, ConfigError};
use crate::directory::{Directory, DirectoryError};
use crate::guard;
use crate::model::{Action, ActionKind, HoldReason, Plan, WorkspaceSnapshot};
use crate::plan;
use crate::policy::{self, FxBuild};
use crate::report::{self, ActionOutcome, Outcome, Report, SafetyReport, Summary};
use crate::safety;
use crate::store::{RunId, RunKind, RunStatus, Store, StoreError};
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
    pub fn run_kind(self) -> RunKind {
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
    /// A file the configuration names for the directory (the export, a secret
    /// file) could not be read: with what to do about it
    /// ([`Config::directory_file_hint`]).
    #[error("reading the directory: {error}{hint}")]
    DirectoryFile {
        error: Box<DirectoryError>,
        hint: String,
    },
    #[error("reading the workspace: {0}")]
    Workspace(WorkspaceError),
    /// A read of the run was answered 401 or 403 (the first, discovery, or one
    /// later: a token revoked mid-run, one short of a scope for `/Groups`): no
    /// later request can do better, and only a human can fix the token.
    #[error("reading the workspace: {0}; {hint}", hint = crate::workspace::CHECK_TOKEN)]
    TokenRefused(WorkspaceError),
    /// A read of the run was answered 401 or 403 with a web page: a WAF, proxy
    /// or gateway in front of the workspace refused it, not the SCIM service,
    /// and the operator is told to check that rather than the token.
    #[error("reading the workspace: {0}; {hint}", hint = crate::workspace::CHECK_IN_FRONT)]
    RefusedInFront(WorkspaceError),
    /// A read of the run got no connection, or no answer in time, past its
    /// retries: a host or port mistyped in `workspace.url`, DNS, a firewall or a
    /// proxy, which the operator is told to check.
    #[error("reading the workspace: {0}; {hint}", hint = crate::workspace::CHECK_REACHABLE)]
    Unreachable(WorkspaceError),
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("applying the plan: {0}")]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Safety(#[from] safety::SafetyError),
    #[error("the state database lock was poisoned")]
    Poisoned,
    #[error("a background task of the run failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The digest or an alert could not be built or queued.
    #[error("{0}")]
    Notify(String),
    /// A sweep or retry pass could not read the accounts of some due deprovisions
    /// (a revoked token, a workspace that is down): what it could do is done, and
    /// the pass fails so that its repeated failures alert.
    #[error(
        "{} of {} due deprovisions could not read their account in the workspace; \
         first error: {}",
        .0.failed,
        .0.due,
        .0.first
    )]
    AccountsUnread(crate::sweep::UnreadAccounts),
    /// A sweep's directory read was incomplete: it opened no episode from it (no
    /// deprovision from a partial read), and fails so that a directory that keeps
    /// reading incomplete shows as the sweep job's repeated failures, not as
    /// sweeps that succeed while no leaver is detected.
    #[error(
        "the directory read was incomplete ({}: {} people read, fewer than it announced): \
         the sweep observed nothing from it; leavers wait for a complete read",
        .0.directory,
        .0.read
    )]
    DirectoryIncomplete(crate::sweep::IncompleteRead),
    /// A sweep or retry pass sent deactivations the workspace did not carry out:
    /// the episodes stay open and are tried again; the pass fails so that its
    /// repeated failures alert.
    #[error(
        "{} due deactivations failed in the workspace; first error: {}",
        .0.failed,
        .0.first
    )]
    DeprovisionsUnwritten(crate::sweep::UnwrittenDeprovisions),
    /// The process was stopping, or the stop had another `cause` (a reconcile
    /// past `schedule.reconcile_max_duration`, [`apply::StopSignal::stop_for`]):
    /// the writes already sent were finished and verified, the rest not sent.
    /// What becomes of those depends on the run ([`StoppedRun`]).
    #[error(
        "stopped before {}: {}; {} not sent, {}",
        .run.whole(),
        .cause.as_deref().unwrap_or("seatwarden was stopping"),
        crate::report::plural(*.unsent, "action was", "actions were"),
        .run.what_next()
    )]
    Stopped {
        unsent: usize,
        run: StoppedRun,
        cause: Option<String>,
    },
    /// A run given up while it was still reading, before its plan was stored: a
    /// `plan` or `reconcile --dry-run` by a signal (see [`preview_until`]), a
    /// reconcile by [`RunOptions::stop`] before its apply began, a sweep or retry
    /// pass by the daemon's stop before its first deactivation. Nothing was sent,
    /// so nothing was left undone but the run itself.
    #[error(
        "stopped while reading, before any write: nothing was written to the workspace \
         and nothing was planned"
    )]
    StoppedReading,
    /// The state database's runs were made against another workspace
    /// ([`same_workspace`]).
    #[error(
        "{} holds the links, journal, holds and deprovisioning ledger of the workspace at \
         {recorded}, but workspace.url is now {configured}: nothing was read or written. \
         Acting on one workspace with another's state would record leavers as verified \
         that it still has, and spend its thresholds and circuit breaker. Give a \
         rehearsal or a second workspace its own state.path; if this workspace itself \
         moved to {configured}, check the plan against it with `{command} plan \
         --workspace-moved` (records nothing), then run `{command} reconcile \
         --workspace-moved` once",
        state.display()
    )]
    OtherWorkspace {
        state: std::path::PathBuf,
        recorded: String,
        configured: String,
        command: String,
    },
}

/// Which run a stop cut short: what its unsent writes wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedRun {
    /// A reconcile: the next run plans what was not sent again.
    Reconcile,
    /// A sweep or retry pass: its leavers' episodes stay due in the ledger, and
    /// the next pass sends their deactivations.
    Deprovisioning,
}

impl StoppedRun {
    fn whole(self) -> &'static str {
        match self {
            StoppedRun::Reconcile => "the whole plan was applied",
            StoppedRun::Deprovisioning => "every due deprovision was written",
        }
    }

    fn what_next(self) -> &'static str {
        match self {
            StoppedRun::Reconcile => "and the next run plans them again",
            StoppedRun::Deprovisioning => {
                "their leavers stay due, and the next sweep or retry pass sends them"
            }
        }
    }
}

impl RunError {
    /// A directory read's error, with what to do when it is about a file the
    /// configuration names.
    pub fn directory(config: &Config, error: DirectoryError) -> RunError {
        let hint = config.directory_file_hint(&error);
        if hint.is_empty() {
            RunError::Directory(error)
        } else {
            RunError::DirectoryFile {
                error: Box::new(error),
                hint,
            }
        }
    }
}

/// A read's 401 or 403 is the token's fault, whichever read of the run met it,
/// unless a web page said it (what is in front of the workspace refused it); a
/// read that reached nothing is the URL's or the network's.
impl From<WorkspaceError> for RunError {
    fn from(e: WorkspaceError) -> RunError {
        match e.status() {
            Some(401 | 403) if e.answered_by_web_page() => RunError::RefusedInFront(e),
            Some(401 | 403) => RunError::TokenRefused(e),
            _ if e.is_unreachable() => RunError::Unreachable(e),
            _ => RunError::Workspace(e),
        }
    }
}

impl crate::retry::Transient for RunError {
    fn is_transient(&self) -> bool {
        match self {
            RunError::Config(_)
            | RunError::Poisoned
            | RunError::Notify(_)
            | RunError::Task(_)
            | RunError::Stopped { .. }
            | RunError::StoppedReading
            | RunError::OtherWorkspace { .. } => false,
            RunError::Directory(e) => e.is_transient(),
            RunError::DirectoryFile { error, .. } => error.is_transient(),
            RunError::Workspace(e)
            | RunError::TokenRefused(e)
            | RunError::RefusedInFront(e)
            | RunError::Unreachable(e) => e.is_transient(),
            RunError::AccountsUnread(unread) => unread.transient,
            // People moving between pages: the next read is often whole.
            RunError::DirectoryIncomplete(_) => true,
            // Tried again by the retry job in any case.
            RunError::DeprovisionsUnwritten(_) => true,
            RunError::Store(e) => e.is_transient(),
            RunError::Apply(e) => e.is_transient(),
            RunError::Safety(e) => e.is_transient(),
        }
    }
}

/// What a finished run leaves behind.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: RunId,
    pub plan: Plan,
    pub report: Report,
    /// Detection-to-verification latency of each deprovision this reconcile
    /// verified (for the daemon's latency histogram; empty for a plan).
    pub deprovision_latencies: Vec<chrono::Duration>,
}

pub fn directory_from_config(config: &Config) -> Directory {
    config.directory()
}

/// The progress line on stderr while the workspace is read, rewritten in place
/// after each page; only when stderr is a TTY (and not in the daemon), so logs
/// and CI output stay clean. A reconcile shows it, `approve` while it lists
/// the workspace to re-check what it approves, and `check-config --connect`
/// while it lists a SCIM directory's every User and Group. A log line written
/// while it is shown (a retry, a refused cursor, a concurrent check's) ends it
/// first ([`crate::logging::progress_line_printed`]).
pub struct ReadProgress {
    shown: bool,
    /// `workspace`, or `directory` for a SCIM directory read with the same client.
    side: &'static str,
    printed: AtomicBool,
}

impl ReadProgress {
    /// Shown when stderr is a terminal, unless [`silence_progress`] was called.
    pub fn on_terminal() -> ReadProgress {
        ReadProgress::new(progress_shown(), "workspace")
    }

    /// [`ReadProgress::on_terminal`] for a SCIM directory's listings.
    pub fn of_directory_on_terminal() -> ReadProgress {
        ReadProgress::new(progress_shown(), "directory")
    }

    fn new(shown: bool, side: &'static str) -> ReadProgress {
        ReadProgress {
            shown,
            side,
            printed: AtomicBool::new(false),
        }
    }

    /// The listing's hook ([`ScimClient::snapshot_whole`]).
    pub fn page(&self, p: Progress) {
        if self.shown {
            self.printed.store(true, Ordering::Relaxed);
            eprint!("{}", self.line(p));
            crate::logging::progress_line_printed();
        }
    }

    /// What [`ReadProgress::page`] prints: `\r` first, so each page rewrites it.
    fn line(&self, p: Progress) -> String {
        let total = p.total.map(|t| format!("/{t}")).unwrap_or_default();
        format!(
            "\r  reading {} {}: {}{} objects, {} pages   ",
            self.side, p.what, p.objects, total, p.pages
        )
    }

    /// Ends the line once the read is done, so that what follows (the apply's
    /// own progress line) does not overwrite it.
    pub fn done(&self) {
        if self.printed.swap(false, Ordering::Relaxed) {
            crate::logging::end_progress_line();
        }
    }
}

/// A read that failed ends the line too: the error is printed after it.
impl Drop for ReadProgress {
    fn drop(&mut self) {
        self.done();
    }
}

/// Reads `directory`, saying so in the log (on stderr, which a terminal shows)
/// when the read starts and when it ends, with how many people and how long:
/// a large Okta, Graph or LDAP directory takes minutes, and without a line the
/// command looks hung. A reconcile's read says so, and `approve`'s when it reads
/// the directory beside the workspace. A read that fails says nothing more
/// here: its caller reports the error.
pub(crate) async fn read_directory(
    directory: &Directory,
) -> Result<crate::model::DirectorySnapshot, DirectoryError> {
    let source = directory.describe();
    tracing::info!(source = %source, "reading the directory");
    let started = Instant::now();
    let snapshot = directory.snapshot().await?;
    tracing::info!(
        identities = snapshot.identities.len(),
        source = %source,
        elapsed = %format!("{:.1}s", started.elapsed().as_secs_f64()),
        "directory read"
    );
    Ok(snapshot)
}

/// Progress of the apply phase on stderr, rewritten in place like the read's: the
/// writes answered (at most every [`PROGRESS_EVERY`], and the last one always),
/// then the start of the verification; or, in the recovery of a cut-off run, the
/// rows checked, as often. Returns the hook and whether it printed.
fn apply_progress_printer() -> (apply::ProgressHook, Arc<AtomicBool>) {
    let printed = Arc::new(AtomicBool::new(false));
    let last = Mutex::new(None);
    let hook: apply::ProgressHook = {
        let printed = Arc::clone(&printed);
        Arc::new(move |p: apply::ApplyProgress| match p {
            apply::ApplyProgress::Writing { done, total } => {
                let due = last
                    .lock()
                    .is_ok_and(|mut last| progress_due(&mut last, Instant::now(), done == total));
                if due {
                    printed.store(true, Ordering::Relaxed);
                    eprint!("\r  applying: {done}/{total} written   ");
                    crate::logging::progress_line_printed();
                }
            }
            apply::ApplyProgress::Verifying { changes } => {
                printed.store(true, Ordering::Relaxed);
                eprint!("\r  applying: verifying {changes} changes by reading them back   ");
                crate::logging::progress_line_printed();
            }
            apply::ApplyProgress::Recovering { checked, total } => {
                let due = last.lock().is_ok_and(|mut last| {
                    progress_due(&mut last, Instant::now(), checked == total)
                });
                if due {
                    printed.store(true, Ordering::Relaxed);
                    eprint!("\r  recovering: {checked}/{total} interrupted writes checked   ");
                    crate::logging::progress_line_printed();
                }
            }
        })
    };
    (hook, printed)
}

/// Runs `work` with the apply's progress line ([`apply_progress_printer`]) on
/// stderr when it is a terminal, as a reconcile shows it: for `approve`, whose
/// apply of a thousand held deprovisions is as long.
pub(crate) async fn with_apply_progress<F: std::future::Future>(work: F) -> F::Output {
    if !progress_shown() || apply::progress_is_heard() {
        return work.await;
    }
    let (hook, printed) = apply_progress_printer();
    let output = apply::with_progress(hook, work).await;
    if printed.load(Ordering::Relaxed) {
        crate::logging::end_progress_line();
    }
    output
}

/// The apply's progress line is rewritten at most this often: a few times a second
/// is plenty to read, and a terminal redrawing for each of 5,000 writes is not free.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Whether a progress line is due at `now` after the one printed at `last` (then
/// `last` becomes `now`): the first, the `last_one`, and the others
/// [`PROGRESS_EVERY`] apart.
fn progress_due(last: &mut Option<Instant>, now: Instant, last_one: bool) -> bool {
    let due = last_one || last.is_none_or(|at| now.saturating_duration_since(at) >= PROGRESS_EVERY);
    if due {
        *last = Some(now);
    }
    due
}

/// Set by the daemon: its runs print no progress, on a terminal either (its stderr
/// is its log).
static PROGRESS_OFF: AtomicBool = AtomicBool::new(false);

/// No progress lines from the runs of this process (the daemon).
pub fn silence_progress() {
    PROGRESS_OFF.store(true, Ordering::Relaxed);
}

/// Whether progress lines are printed: on a terminal, unless [`silence_progress`]
/// was called.
fn progress_shown() -> bool {
    std::io::stderr().is_terminal() && !PROGRESS_OFF.load(Ordering::Relaxed)
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
    execute_with_options(
        config,
        directory,
        client,
        store,
        mode,
        RunOptions::default(),
    )
    .await
}

/// Per-run choices beyond the mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The time the safety rules judge by (24 h window, settle window, circuit
    /// cool-down) and the run records (its start and end, the deprovision
    /// ledger's detections and verifications); `None`: the clock. Tests pass it
    /// to move time without sleeping. What the apply journals as it writes keeps
    /// the clock's time.
    pub now: Option<DateTime<Utc>>,
    /// `reconcile --allow-over-threshold`: thresholds hold nothing this run (the
    /// caller records who asked in the audit trail).
    pub allow_over_threshold: bool,
    /// `reconcile --accept-directory`: a directory that shrank more than
    /// `max_directory_shrink_percent` is accepted this run and becomes the new
    /// baseline (an empty one never is). Audited.
    pub accept_directory: bool,
    /// Set when the process is stopping (the daemon's SIGTERM; SIGINT or SIGTERM
    /// during a `reconcile` or `resume` run by hand). Set before the apply began,
    /// the run is given up where it stands, its reads dropped mid-request (a read
    /// waiting a minute for its retry included): nothing was sent, so nothing is
    /// lost; it stores no plan and no report, and ends with
    /// [`RunError::StoppedReading`]. Set once the apply began, the apply starts no
    /// further write and retries none (a write waiting for its retry is not sent
    /// again), lets those sent finish and be journaled, the run stores its report
    /// (the actions not sent as not run) and ends with [`RunError::Stopped`].
    pub stop: apply::StopSignal,
    /// `reconcile --workspace-moved`: the workspace this state database belongs
    /// to is now at `workspace.url` ([`same_workspace`]). Audited.
    pub workspace_moved: bool,
    /// The latest time the retention clocks of `deprovision.delete_after` are
    /// judged at (`None`: `now`). The daemon sets it when its wall clock moved
    /// more than a day further than the time it has seen pass
    /// (`daemon::pruning_as_of`): a clock stepped weeks ahead would otherwise have
    /// deactivated accounts deleted before their retention ran out, and a
    /// deletion is not undone by setting the clock right. Clocks started by such a
    /// run start at `now` (later, never earlier: a deletion only waits longer).
    pub retention_as_of: Option<DateTime<Utc>>,
}

/// Under the writer lock, before a writing run begins, and in `approve` after its
/// recovery: see [`Store::close_interrupted_runs`].
/// A reconcile cut off after its deprovisions were verified and before it
/// recorded them in the ledger has them recorded now
/// ([`crate::sweep::record_cut_off_applied`]): its rows are applied, not in
/// flight, so no recovery sees them, and no later run plans them again. So has
/// one that ended by itself and could not record them (the disk full).
pub(crate) fn close_interrupted_runs(
    store: &mut Store,
    at: DateTime<Utc>,
    sla: chrono::Duration,
    admin_command: &str,
) -> Result<(), StoreError> {
    let closed = store.close_interrupted_runs(at)?;
    if !closed.is_empty() {
        tracing::warn!(
            runs = closed.len(),
            "runs cut off before they finished marked failed; their in-flight actions are recovered"
        );
    }
    // Not only the runs closed now: a reconcile that failed or stopped by
    // itself wrote its deprovisions into the ledger as it ended, and a write
    // refused then (a full disk) left them out for good, its rows applied and
    // its accounts inactive. Those recorded already are skipped.
    let mut reconciles: BTreeSet<RunId> = closed
        .into_iter()
        .filter(|(_, kind)| *kind == RunKind::Reconcile)
        .map(|(run, _)| run)
        .collect();
    reconciles.extend(store.unsucceeded_reconciles_with_deprovisions()?);
    let reconciles: Vec<RunId> = reconciles.into_iter().collect();
    crate::sweep::record_cut_off_applied(store, &reconciles, sla, admin_command)?;
    Ok(())
}

/// The `daemon_state` key of the SCIM base URL the state database's runs were
/// made against.
pub const WORKSPACE_KEY: &str = "workspace_url";

/// Refuses a state database whose runs were made against another workspace than
/// `client`'s ([`RunError::OtherWorkspace`]): its links, journal, holds, 24 h
/// counts, circuit breaker and deprovisioning ledger are that workspace's. A
/// rehearsal against a sandbox with the production `state.path` would mark
/// leavers verified that production still has active, and spend its thresholds.
/// The first contact records the URL; `moved` (`reconcile --workspace-moved`,
/// audited) records the new one, and so does a run on a database that holds
/// nothing of the recorded workspace ([`Store::holds_workspace_state`]).
pub fn same_workspace(
    store: &mut Store,
    config: &Config,
    client: &ScimClient,
    moved: bool,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let url = client.base_url();
    match store.state_value(WORKSPACE_KEY)? {
        Some(recorded) if recorded == url => Ok(()),
        Some(recorded) if moved => {
            tracing::warn!(from = %recorded, to = %url, "the workspace moved: this state database now belongs to the new URL");
            // Audited first: a move is never recorded without its audit entry.
            safety::audit(
                store,
                "workspace_moved",
                None,
                format!("workspace moved from {recorded} to {url}"),
                now,
            )?;
            Ok(store.set_state_value(WORKSPACE_KEY, Some(url))?)
        }
        // Runs that never read the recorded workspace (its URL was mistyped, say)
        // left nothing of it to protect: the database takes the URL now given.
        Some(recorded) if !store.holds_workspace_state()? => {
            tracing::info!(from = %recorded, to = %url, "the state database holds nothing of the workspace it recorded: it now belongs to the new URL");
            Ok(store.set_state_value(WORKSPACE_KEY, Some(url))?)
        }
        Some(recorded) => Err(RunError::OtherWorkspace {
            state: config.state.path.clone(),
            recorded,
            configured: url.to_owned(),
            command: config.admin_command(),
        }),
        None => Ok(store.set_state_value(WORKSPACE_KEY, Some(url))?),
    }
}

/// A throwaway copy of the state database, removed (with its `-wal` and `-shm`)
/// when dropped: see [`moved_preview`]. Its file is locked while it lives, so a
/// copy a killed process left behind is told apart from one in use and removed
/// by a later command ([`remove_stale_preview_copies`]).
#[derive(Debug)]
pub struct PreviewCopy {
    path: std::path::PathBuf,
    /// The URL the state database stays bound to.
    pub recorded: String,
    /// The copy's file, locked; let go (after the files are removed) on drop.
    _lock: std::fs::File,
}

impl Drop for PreviewCopy {
    fn drop(&mut self) {
        let _ = remove_copy_files(&self.path);
    }
}

/// What names a preview copy of the state database at `state`: the database's
/// file name, this, and the process id of the preview that made it.
const PREVIEW_COPY_MARK: &str = ".moved-preview-";

/// The copy at `path` and its `-wal` and `-shm`; gone already is fine. Whether
/// the copy itself was removed here (not by someone else, and not refused: a
/// user who may read the state folder but not change it).
fn remove_copy_files(path: &std::path::Path) -> bool {
    let mut removed = false;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let gone = std::fs::remove_file(std::path::PathBuf::from(name)).is_ok();
        removed |= suffix.is_empty() && gone;
    }
    removed
}

/// How long a preview copy may stay empty and unlocked: the moment between its
/// creation and its lock ([`Store::copy_to`]), so that one being made is not
/// taken for one left behind.
const PREVIEW_COPY_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the preview copies of the state database at `state` (beside it,
/// `<database>.moved-preview-<pid>`, with their `-wal` and `-shm`) that a
/// `plan --workspace-moved` killed before it could remove them left behind:
/// each whose lock can be taken, so no running process uses it (and, were it
/// still empty, made over a minute ago). A copy holds a whole state database (the
/// directory's people, the ledger), so none is left to linger. Returns the copies
/// removed; a folder that cannot be listed removes none.
pub fn remove_stale_preview_copies(state: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Some(file_name) = state.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let folder = match state.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let prefix = format!("{file_name}{PREVIEW_COPY_MARK}");
    let copies: std::collections::BTreeSet<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let pid = name.strip_prefix(&prefix)?;
            let pid = pid
                .strip_suffix("-wal")
                .or_else(|| pid.strip_suffix("-shm"))
                .unwrap_or(pid);
            (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("{prefix}{pid}"))
        })
        .collect();
    let mut removed = Vec::new();
    for name in copies {
        let path = folder.join(&name);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            // Its `-wal` or `-shm` alone: what a removal cut off left.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = remove_copy_files(&path);
                continue;
            }
            // Root's (an older version ran the preview with `sudo` and was
            // killed): its lock cannot be looked at, but the process its name
            // gives is gone, and the folder is ours to remove it from.
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied
                    && name
                        .strip_prefix(prefix.as_str())
                        .is_some_and(maker_is_gone) =>
            {
                if remove_copy_files(&path) {
                    removed.push(path);
                }
                continue;
            }
            Err(_) => continue,
        };
        // Held by the preview that made it (or one that is making it).
        if file.try_lock().is_err() {
            continue;
        }
        let settled = file.metadata().is_ok_and(|meta| {
            meta.len() > 0
                || meta
                    .modified()
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age > PREVIEW_COPY_GRACE)
        });
        if settled && remove_copy_files(&path) {
            removed.push(path);
        }
    }
    removed
}

/// Whether the process `pid` (a preview copy's maker) no longer runs, as
/// `/proc` shows; never where there is no `/proc` to tell (the copy is kept).
fn maker_is_gone(pid: &str) -> bool {
    std::path::Path::new("/proc/self").exists() && !std::path::Path::new("/proc").join(pid).exists()
}

/// `plan --workspace-moved` and `reconcile --dry-run --workspace-moved`: the plan
/// against the new `workspace.url`, read before the move is recorded, so that a
/// mistyped URL (another tenant's) is seen in the plan (every account unmatched)
/// before it binds anything. When the state database is bound to another URL and
/// holds that workspace's state, the preview runs on a copy of it (beside it,
/// removed afterwards) bound to the new URL: matched with the stored links, held
/// and settling as a reconcile would, and nothing of it stored where it stays: no
/// binding, no audit entry, no snapshot (which `explain`, `export` and `link`
/// would read as the workspace's), no settle-window sighting, no report.
/// Otherwise (same URL, first contact, nothing held of the recorded one) the
/// store is handed back as it is, and the run binds as any run does.
pub fn moved_preview(
    store: Store,
    config: &Config,
    client: &ScimClient,
) -> Result<(Store, Option<PreviewCopy>), RunError> {
    let url = client.base_url();
    let recorded = match store.state_value(WORKSPACE_KEY)? {
        Some(recorded) if recorded != url && store.holds_workspace_state()? => recorded,
        _ => return Ok((store, None)),
    };
    let mut name = config.state.path.as_os_str().to_owned();
    name.push(format!("{PREVIEW_COPY_MARK}{}", std::process::id()));
    let path = std::path::PathBuf::from(name);
    // Copies left behind (a preview killed by a second Ctrl-C), this process
    // id's among them, are no one's.
    remove_stale_preview_copies(&config.state.path);
    let lock = store.copy_to(&path)?;
    let copy = PreviewCopy {
        path,
        recorded,
        _lock: lock,
    };
    drop(store);
    let mut scratch = Store::open(&copy.path)?;
    scratch.set_state_value(WORKSPACE_KEY, Some(url))?;
    Ok((scratch, Some(copy)))
}

/// [`execute_with`] with [`RunOptions`].
pub async fn execute_with_options(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: Store,
    mode: Mode,
    options: RunOptions,
) -> Result<RunOutcome, RunError> {
    execute_until(
        config,
        directory,
        client,
        store,
        mode,
        options,
        std::future::pending(),
    )
    .await
}

/// `plan` and `reconcile --dry-run` run by hand: [`execute_with_options`], given
/// up where it stands once `interrupted` resolves (the first Ctrl-C or SIGTERM),
/// unless its plan is stored by then. Neither writes to the workspace, so there
/// is nothing to finish: the reads are dropped mid-request. Each snapshot is
/// stored in one transaction, whole or not at all, and one being stored is
/// waited for; the run is recorded `stopped`, with no plan and no report, and
/// ends with [`RunError::StoppedReading`]. A reconcile is given up this way by
/// [`RunOptions::stop`] only until its plan is stored; after, the stop lets the
/// writes sent finish.
pub async fn preview_until(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: Store,
    mode: Mode,
    options: RunOptions,
    interrupted: impl std::future::Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    execute_until(config, directory, client, store, mode, options, interrupted).await
}

async fn execute_until(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: Store,
    mode: Mode,
    options: RunOptions,
    interrupted: impl std::future::Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    let store = Arc::new(Mutex::new(store));
    // What the run records (its start and end, the ledger's detections and
    // verifications, its plan's and links' times) is on the clock its safety
    // rules judge by: a run at a simulated `now` stamped with the wall clock
    // would open episodes its own 24 h window, its sweeps and its approvals
    // (all at that `now`) take for years old or not yet begun. Only the stage
    // timings logged are of the wall clock.
    let wall_start = Utc::now();
    let simulated = options.now;
    let clock = move || simulated.unwrap_or_else(Utc::now);
    let started_at = simulated.unwrap_or(wall_start);
    let run_id = {
        let mut store = lock(&store)?;
        same_workspace(
            &mut store,
            config,
            client,
            options.workspace_moved,
            started_at,
        )?;
        if mode == Mode::Reconcile {
            close_interrupted_runs(
                &mut store,
                started_at,
                crate::sweep::configured_sla(config),
                &config.admin_command(),
            )?;
        }
        store.begin_run(mode.run_kind(), started_at)?
    };
    tracing::info!(run = run_id, mode = mode.as_str(), "run started");
    // The runs whose in-flight rows this run's recovery resolved: cut off.
    let mut cut_off = BTreeSet::new();
    let stop = options.stop.clone();
    // Set by the pipeline as it stores its plan: see `given_up` below.
    let plan_stored = AtomicBool::new(false);
    // Boxed: this future is as large as the whole run's.
    let pipeline = Box::pin(pipeline(
        config,
        directory,
        client,
        &store,
        mode,
        run_id,
        wall_start,
        options,
        &mut cut_off,
        &plan_stored,
    ));
    // Given up by `interrupted` or the stop only while `plan_stored` is unset: until
    // then the run has sent nothing, and has nothing to finish. The pipeline sets it
    // just before it stores its plan, with no await between its last read and its
    // apply, so a run given up stored no plan and sent nothing. A plan or dry run
    // stores its report with no await after: it finishes within the same poll. A reconcile's
    // apply, once begun, is stopped by `options.stop` alone, which lets the writes
    // sent finish. Given up before, no further part is stored; a snapshot being
    // stored on the blocking pool holds the store's lock until it is whole, which
    // the run's end below waits for (one queued but not begun yet is stored whole
    // after it: the runtime waits for the blocking pool before the process exits).
    let given_up = async {
        tokio::select! {
            () = interrupted => {}
            () = stop.stopped() => {}
        }
        if plan_stored.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        biased;
        result = pipeline => result,
        () = given_up => Err(RunError::StoppedReading),
    };
    // Every reconcile feeds the same-day deprovisioning ledger, whether the daemon
    // or a person ran it, and whether it finished or failed: a run that fails after
    // its writes (storing the report, say) has deactivated people all the same, and
    // its journal rows are applied, not in flight, so no recovery records them
    // later. Its own error is what is returned.
    let result = if mode == Mode::Reconcile {
        let sla = crate::sweep::configured_sla(config);
        // Then the deprovisions a cut-off run held, or did not get to apply,
        // that this run saw again count from when that run saw them: the runs
        // this run's recovery found cut off, and those closed as interrupted since
        // the last reconcile that was not, whose rows another writer (`approve`,
        // a sweep) recovered first. Else an `approve` in between restarted the
        // leavers' SLA at this run's start.
        let recorded =
            crate::sweep::record_reconcile(config, &store, run_id, started_at, clock(), sla)
                .and_then(|latencies| {
                    let mut store = lock(&store)?;
                    let mut cut_off = cut_off.clone();
                    cut_off.extend(store.interrupted_reconciles_before(run_id)?);
                    crate::sweep::backdate_cut_off(&mut store, &cut_off)?;
                    Ok(latencies)
                });
        tracing::debug!(
            elapsed_ms = since(wall_start),
            "deprovisioning ledger updated"
        );
        match (result, recorded) {
            (Ok(mut outcome), Ok(latencies)) => {
                outcome.deprovision_latencies.extend(latencies);
                // Disputed leavers first: an episode of one still listed is not
                // ended below. The run did its work either way.
                if let Err(e) = lock(&store).and_then(|mut store| {
                    Ok(crate::sweep::record_disputed(
                        &mut store,
                        &outcome.report,
                        &outcome.plan.disputed_leavers,
                        started_at,
                        clock(),
                        sla,
                        &config.admin_command(),
                    )?)
                }) {
                    tracing::warn!(
                        run = run_id,
                        error = %e,
                        "cannot record the disputed leavers in the deprovision ledger; the next run tries again"
                    );
                }
                // Housekeeping of the ledger: the run did its work either way.
                if let Err(e) = lock(&store).and_then(|mut store| {
                    Ok(crate::sweep::end_accountless(
                        &mut store,
                        &outcome.report,
                        &outcome.plan.disputed_leavers,
                        clock(),
                    )?)
                }) {
                    tracing::warn!(
                        run = run_id,
                        error = %e,
                        "cannot end the deprovision episodes left without an account; the next run tries again"
                    );
                }
                Ok(outcome)
            }
            (Ok(_), Err(error)) => Err(error),
            (Err(error), Ok(_)) => Err(error),
            (Err(error), Err(ledger)) => {
                tracing::error!(
                    run = run_id,
                    error = %ledger,
                    "the failed run's deprovisions could not be recorded in the ledger; the next reconcile, sweep or approve records them"
                );
                Err(error)
            }
        }
    } else {
        result
    };
    // Finished either way: a run left `running` would be shown as the last
    // reconcile for good and never pruned.
    match result {
        Ok(outcome) => {
            lock(&store)?.finish_run(run_id, clock(), RunStatus::Succeeded, None)?;
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
            let mut message = error.to_string();
            // A reconcile given up while reading by a stop with a cause (its time
            // limit) records why: "stopped while reading" alone reads as SIGTERM.
            if let (RunError::StoppedReading, Some(cause)) = (&error, stop.cause()) {
                message = format!("{cause}: {message}");
            }
            let status = if matches!(error, RunError::Stopped { .. }) {
                tracing::warn!(run = run_id, error = %message, "run stopped");
                RunStatus::Stopped
            } else if matches!(error, RunError::StoppedReading) {
                // Asked for by whoever ran it, and nothing was left undone; a
                // reconcile's work waits for the next run all the same.
                if mode == Mode::Reconcile {
                    tracing::warn!(run = run_id, error = %message, "run stopped");
                } else {
                    tracing::info!(run = run_id, error = %message, "run stopped");
                }
                RunStatus::Stopped
            } else {
                tracing::error!(run = run_id, error = %message, "run failed");
                RunStatus::Failed
            };
            if let Ok(mut store) = store.lock() {
                let _ = store.finish_run(run_id, clock(), status, Some(&message));
            }
            Err(error)
        }
    }
}

/// A recovery's read that failed is a read of the run, before any plan: a refused
/// token (a provider may answer `/ServiceProviderConfig` to anyone, so discovery
/// passes and `/Users` refuses) or a workspace out of reach says what to check,
/// as the run's own reads do, not "applying the plan".
fn recovery_error(error: ApplyError) -> RunError {
    match error {
        ApplyError::Workspace(e) => RunError::from(e),
        other => RunError::Apply(other),
    }
}

/// [`ScimClient::discover`], a 401 or 403 told apart: the token is at fault.
async fn discover(client: &ScimClient) -> Result<(), RunError> {
    Ok(client.discover().await?)
}

/// Milliseconds since `start`, for the stage timings logged at debug level.
fn since(start: DateTime<Utc>) -> i64 {
    (Utc::now() - start).num_milliseconds()
}

fn lock(store: &Mutex<Store>) -> Result<std::sync::MutexGuard<'_, Store>, RunError> {
    store.lock().map_err(|_| RunError::Poisoned)
}

#[allow(clippy::too_many_arguments)]
async fn pipeline(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    mode: Mode,
    run_id: RunId,
    wall_start: DateTime<Utc>,
    options: RunOptions,
    cut_off: &mut BTreeSet<RunId>,
    plan_stored: &AtomicBool,
) -> Result<RunOutcome, RunError> {
    // The run's start, and its clock, as `execute_until` records them.
    let now = options.now.unwrap_or(wall_start);
    let simulated = options.now;
    let clock = move || simulated.unwrap_or_else(Utc::now);
    // The directory's retries are counted in the report beside the workspace's;
    // a source handed to several runs counts from here.
    let directory_retries = directory.retries();
    // Role groups read for checks last one pass: a client handed to several runs
    // must not carry one run's reads into the next.
    client.forget_role_groups();
    if options.allow_over_threshold {
        safety::audit(
            &mut *lock(store)?,
            "allow_over_threshold",
            Some(run_id),
            format!("{} run with thresholds overridden", mode.as_str()),
            now,
        )?;
    }
    let show_progress = progress_shown();
    // A reconcile asks `/ServiceProviderConfig` before it recovers: the recovery's
    // first read of a dead or refusing workspace would spend a whole retry window
    // and then fail with an error about `/Users`, where this fails at once with
    // the one the operator can act on. Rows left in flight stay for the next run.
    let discovered = mode == Mode::Reconcile;
    if discovered {
        discover(client).await?;
    }
    let (recovered, recovered_latencies) = if mode == Mode::Reconcile {
        // A phase cut off early leaves thousands of rows, minutes of reads at a
        // provider's rate limit: without a line, a terminal looks hung.
        // Boxed: held in either branch below, it doubled in the pipeline's future,
        // which overflowed a debug build's test thread.
        let admin_command = config.admin_command();
        let recovering = Box::pin(apply::recover(client, store, &admin_command));
        let recovered = if show_progress && !apply::progress_is_heard() {
            let (hook, printed) = apply_progress_printer();
            let recovered = apply::with_progress(hook, recovering).await;
            if printed.load(Ordering::Relaxed) {
                crate::logging::end_progress_line();
            }
            recovered
        } else {
            recovering.await
        }
        .map_err(recovery_error)?;
        cut_off.extend(recovered.runs.iter().copied());
        let latencies = crate::sweep::record_recovered(
            &mut *lock(store)?,
            &recovered,
            clock(),
            crate::sweep::configured_sla(config),
            &config.admin_command(),
        )?;
        (recovered.resolved, latencies)
    } else {
        (0, Vec::new())
    };
    tracing::debug!(
        elapsed_ms = since(wall_start),
        recovered,
        "interrupted actions resolved"
    );

    // Both sides are read at once. While the workspace is still being read, the
    // directory snapshot is stored and the links are loaded on the blocking pool:
    // against a remote workspace that costs no time at all.
    let read_directory = async {
        let snapshot = Arc::new(
            read_directory(directory)
                .await
                .map_err(|e| RunError::directory(config, e))?,
        );
        let saving = {
            let store = Arc::clone(store);
            let snapshot = Arc::clone(&snapshot);
            tokio::task::spawn_blocking(move || -> Result<_, RunError> {
                let mut store = lock(&store)?;
                store.save_directory_snapshot(run_id, &snapshot)?;
                let links: Vec<crate::model::Link> = store
                    .links()?
                    .into_iter()
                    .map(|l| crate::model::Link {
                        identity_id: l.identity_id,
                        account_id: l.account_id,
                    })
                    .collect();
                Ok((links, store.disputed_candidates()?))
            })
        };
        let (links, remembered) = saving.await??;
        tracing::debug!(
            elapsed_ms = since(wall_start),
            "directory snapshot stored, links and remembered disputes loaded"
        );
        Ok::<_, RunError>((snapshot, links, remembered))
    };
    let read_workspace = async {
        if !discovered {
            discover(client).await?;
        }
        let read_progress = ReadProgress::new(show_progress, "workspace");
        let progress = |p: Progress| read_progress.page(p);
        let (mut snapshot, mut whole) = client.snapshot_whole(&progress).await?;
        if !whole {
            // Objects moved between pages while they were read (push SCIM creating
            // or deleting meanwhile), or the provider stopped early. Planned from
            // it, an account it left out looks missing: a false `missing_account`
            // in the report, and a create that meets 409 and is linked.
            tracing::warn!(
                "the workspace listing ended short of its totalResults; reading it again"
            );
            (snapshot, whole) = client.snapshot_whole(&progress).await?;
            if !whole {
                tracing::warn!(
                    "the workspace listing ended short again; planning with it (an account it \
                     left out is reported missing, and its create is linked on 409)"
                );
            }
        }
        read_progress.done();
        tracing::info!(
            accounts = snapshot.accounts.len(),
            groups = snapshot.groups.len(),
            "workspace read"
        );
        Ok::<_, RunError>((snapshot, whole))
    };
    let ((directory_snapshot, links, remembered), (workspace_snapshot, workspace_whole)) =
        tokio::try_join!(read_directory, read_workspace)?;
    tracing::debug!(elapsed_ms = since(wall_start), "snapshots read");

    let source_fault = safety::check_source(
        &mut *lock(store)?,
        run_id,
        &directory_snapshot,
        config,
        options.accept_directory,
        if mode == Mode::Reconcile {
            safety::SourceCheck::Record
        } else {
            safety::SourceCheck::Preview
        },
        now,
    )?;

    // Read before the snapshot is stored: that holds the store meanwhile.
    let retention_now = options.retention_as_of.map_or(now, |as_of| as_of.min(now));
    let mut plan_settings =
        safety::plan_settings_at(config, &directory_snapshot, &*lock(store)?, retention_now)?;
    if retention_now != now {
        // Only the retention clocks wait for a clock stepped ahead; an exception
        // ends at the time the clock shows, as in the sweep.
        let protected = safety::plan_settings(config, &directory_snapshot, now).protected;
        plan_settings.protected =
            safety::with_departed(protected, &directory_snapshot, &*lock(store)?)?;
    }
    // The workspace snapshot is stored on the blocking pool while the plan is made
    // from it: on a first run over 100k accounts each takes a few hundred ms.
    let workspace_snapshot = Arc::new(workspace_snapshot);
    let saving = {
        let store = Arc::clone(store);
        let snapshot = Arc::clone(&workspace_snapshot);
        tokio::task::spawn_blocking(move || -> Result<(), RunError> {
            lock(&store)?.save_workspace_snapshot(run_id, &snapshot)?;
            Ok(())
        })
    };
    // Not from a directory the source check rejected, nor from a workspace
    // listing cut short: who they leave out may be there. Unknown, not none,
    // which would resolve the alert a whole read raised.
    let exceptions_naming_nobody = plan_settings
        .protected
        .exceptions_naming_nobody(&directory_snapshot, &workspace_snapshot)
        .filter(|nobody| nobody.is_empty() || (source_fault.is_none() && workspace_whole));
    let desired = policy::desired_state(&directory_snapshot, &config.policy_settings());
    let make_plan = |workspace: &WorkspaceSnapshot| {
        plan::plan(
            &desired,
            &directory_snapshot,
            workspace,
            &links,
            &remembered,
            &plan_settings,
        )
    };
    // A rejected directory plans nothing at all.
    let first_plan = source_fault
        .is_none()
        .then(|| make_plan(&workspace_snapshot));
    tracing::debug!(elapsed_ms = since(wall_start), "plan made");
    saving.await??;
    // The saving task has dropped its handle by now, so this does not copy.
    let mut workspace_snapshot =
        Arc::try_unwrap(workspace_snapshot).unwrap_or_else(|shared| (*shared).clone());
    tracing::debug!(elapsed_ms = since(wall_start), "snapshot stored, plan made");
    let (planned, recheck) = safety::plan_checked(
        client,
        store,
        run_id,
        first_plan,
        &mut workspace_snapshot,
        make_plan,
    )
    .await?;
    tracing::debug!(elapsed_ms = since(wall_start), "workspace re-checked");
    // Deprovisions a person approved whose write failed since: the approval
    // decided over the look-alike hold and the thresholds, and is not asked
    // for again.
    let approved = safety::approved_deprovision_accounts(&*lock(store)?)?;
    // Only an approval of a look-alike hold answered what such a hold asks.
    let approved_look_alike = safety::approved_look_alike_deprovision_accounts(&*lock(store)?)?;
    // Before the guard, whose thresholds do not count what this holds.
    let planned = safety::hold_look_alikes(
        planned,
        config,
        &directory_snapshot,
        &links,
        &approved_look_alike,
    );
    let managed = managed_accounts(&workspace_snapshot, &links, &planned);
    let input = safety::guard_input(
        &*lock(store)?,
        now,
        directory_snapshot.complete,
        managed,
        options.allow_over_threshold,
    )?;
    let guarded = guard::guard_approved(
        planned,
        &workspace_snapshot,
        &safety::guard_settings(config, &desired),
        &input,
        &approved,
    );
    let guarded = safety::hold_unconfirmed(guarded, &recheck);
    let out_of_sight = lock(store)?.creates_out_of_sight(crate::apply::OUT_OF_SIGHT)?;
    let guarded = safety::hold_out_of_sight(guarded, &out_of_sight);
    tracing::debug!(elapsed_ms = since(wall_start), "plan guarded");
    // From here the run is not given up (see `execute_until`): no await comes
    // before its plan is stored, and its apply is stopped only by `options.stop`.
    plan_stored.store(true, Ordering::SeqCst);
    let guarded = {
        let mut store = lock(store)?;
        let guarded = if source_fault.is_some() {
            guarded
        } else {
            safety::settle(&mut store, guarded, config, now)?
        };
        tracing::debug!(elapsed_ms = since(wall_start), "settle window checked");
        store.save_plan(run_id, &guarded, clock())?;
        if mode == Mode::Reconcile {
            let retention = &plan_settings.retention;
            if plan_settings.deprovision == plan::DeprovisionAction::Delete
                && retention.delete_after > chrono::TimeDelta::zero()
            {
                let changes = safety::clock_changes(
                    &retention.deactivated_since,
                    &guarded.retained,
                    &workspace_snapshot,
                    source_fault.is_none() && directory_snapshot.complete,
                    workspace_whole,
                );
                store.update_deactivated(&changes.start, &changes.forget, now)?;
            } else {
                store.clear_deactivated()?;
            }
            // Only what both sides read whole show: a person a partial read left
            // out, or an account a short listing did, is not forgotten.
            if source_fault.is_none() && directory_snapshot.complete && workspace_whole {
                store.replace_disputed_candidates(&guarded.disputed_candidates)?;
            }
        }
        // With writes to make, apply stores the matched links while it verifies.
        if mode == Mode::Reconcile && guarded.runnable().next().is_none() {
            store.upsert_links(&guarded.new_links, clock())?;
        }
        guarded
    };

    tracing::debug!(
        elapsed_ms = since(wall_start),
        actions = guarded.actions.len(),
        "plan stored"
    );
    let mut circuit_report = None;
    // Actions a stop kept from being sent (see `RunOptions::stop`).
    let mut stopped_unsent = 0;
    if mode == Mode::Reconcile && guarded.runnable().next().is_some() {
        let page = config.workspace.page_size.max(1) as usize;
        // What a listing after this plan's creates costs.
        let (new_accounts, new_groups) =
            guarded
                .runnable()
                .fold((0, 0), |(accounts, groups), action| match action.kind {
                    ActionKind::CreateAccount { .. } => (accounts + 1, groups),
                    ActionKind::CreateGroup { .. } => (accounts, groups + 1),
                    _ => (accounts, groups),
                });
        let relist_requests = (workspace_snapshot.accounts.len() + new_accounts).div_ceil(page)
            + (workspace_snapshot.groups.len() + new_groups).div_ceil(page)
            + 2;
        let applying = safety::apply_with_circuit(
            config,
            client,
            store,
            run_id,
            &guarded,
            relist_requests,
            now,
        );
        let applying = apply::until_stopped(options.stop.clone(), applying);
        let (applied, unsent) = if show_progress && !apply::progress_is_heard() {
            let (hook, printed) = apply_progress_printer();
            let applied = apply::with_progress(hook, applying).await;
            if printed.load(Ordering::Relaxed) {
                crate::logging::end_progress_line();
            }
            applied
        } else {
            applying.await
        };
        circuit_report = applied?;
        stopped_unsent = unsent;
    }

    tracing::debug!(elapsed_ms = since(wall_start), "applied and verified");
    let report = build_report(
        config,
        directory,
        store,
        run_id,
        mode,
        (now, clock()),
        ReportCounts {
            identities: directory_snapshot.identities.len(),
            accounts: workspace_snapshot.accounts.len(),
            managed_accounts: managed,
            retries: client
                .stats()
                .retries
                .saturating_add(directory.retries().saturating_sub(directory_retries)),
            recovered,
        },
        &guarded,
    )?;
    let mut report = report;
    let directory_incomplete = !directory_snapshot.complete && source_fault.is_none();
    report.safety = SafetyReport {
        source_fault,
        circuit: circuit_report,
        allow_over_threshold: options.allow_over_threshold,
        workspace_listing_short: !workspace_whole,
        actions_waiting: guarded
            .held()
            .filter(|a| a.held.as_ref().is_some_and(HoldReason::is_waiting))
            .count(),
        disputed_leavers: guarded
            .disputed_leavers
            .iter()
            .map(|l| l.user_name.clone())
            .collect(),
        protected_by_person: guarded.protected_by_person.clone(),
        excepted: guarded.excepted.clone(),
        protected_leavers: guarded.protected_leavers.clone(),
        exceptions_naming_nobody_unknown: exceptions_naming_nobody.is_none(),
        exceptions_naming_nobody: exceptions_naming_nobody.unwrap_or_default(),
        directory_incomplete,
    };
    tracing::debug!(elapsed_ms = since(wall_start), "report built");
    lock(store)?.save_report(run_id, &report.to_stored_json())?;
    tracing::debug!(elapsed_ms = since(wall_start), "report stored");
    // What was sent is verified, journaled and reported (and the circuit stored);
    // the run is not complete, so it is not recorded as a success.
    if stopped_unsent > 0 {
        return Err(RunError::Stopped {
            unsent: stopped_unsent,
            run: StoppedRun::Reconcile,
            cause: options.stop.cause(),
        });
    }
    // Freeing both snapshots and the links took about 8 ms at 10k people (perf); the
    // run's outcome need not wait for it. (The desired state borrows from the
    // directory snapshot, and holds little of its own.)
    drop(desired);
    let leftovers = (directory_snapshot, workspace_snapshot, links, plan_settings);
    tokio::task::spawn_blocking(move || drop(leftovers));
    Ok(RunOutcome {
        run_id,
        plan: guarded,
        report,
        deprovision_latencies: recovered_latencies,
    })
}

/// Accounts linked (or matched this run) to a directory identity that the
/// workspace still has: the population the percentage thresholds are computed
/// against. `explain` counts with it too.
pub(crate) fn managed_accounts(
    workspace: &WorkspaceSnapshot,
    links: &[crate::model::Link],
    plan: &Plan,
) -> usize {
    // Two sets of every account id on a first run (200k strings at 100k people),
    // hashed with the plan's hasher: SipHash cost 20-40 ms of that run's guard stage.
    let existing: HashSet<&str, FxBuild> =
        workspace.accounts.iter().map(|a| a.id.as_str()).collect();
    links
        .iter()
        .map(|l| l.account_id.as_str())
        .chain(plan.new_links.iter().map(|l| l.account_id.as_str()))
        .filter(|id| existing.contains(id))
        .collect::<HashSet<_, FxBuild>>()
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
    (started_at, finished_at): (DateTime<Utc>, DateTime<Utc>),
    counts: ReportCounts,
    plan: &Plan,
) -> Result<Report, RunError> {
    // The plan is in memory; only where each action stands comes from the journal.
    let progress = lock(store)?.journal_progress(run_id)?;
    let admin_command = config.admin_command();
    let by_seq: HashMap<u32, &Action> = plan.actions.iter().map(|a| (a.seq, a)).collect();
    let actions: Vec<ActionOutcome> = progress
        .into_iter()
        .map(|entry| {
            let action = by_seq.get(&entry.seq).ok_or_else(|| StoreError::Corrupt {
                table: "actions",
                run: run_id,
                detail: format!("journaled action {} is not in the run's plan", entry.seq),
            })?;
            let outcome = Outcome::journaled(entry.state, entry.last_error.as_deref());
            let error = match (&action.held, entry.last_error) {
                (Some(hold), _) => Some(hold.describe(&admin_command).to_string()),
                (None, error) => error,
            };
            Ok(ActionOutcome {
                seq: entry.seq,
                op: action.kind.name().to_owned(),
                reason: action.reason,
                subject: action.subject.clone(),
                detail: action.detail.clone(),
                outcome,
                attempts: entry.attempts,
                error,
                waiting: action
                    .held
                    .as_ref()
                    .is_some_and(crate::model::HoldReason::is_waiting),
                settle_window: action.held.as_ref().and_then(report::SettleWindow::of),
                deactivated_since: report::deactivated_since_of(&action.kind),
            })
        })
        .collect::<Result<_, StoreError>>()?;
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
        finished_at,
        directory: directory.describe(),
        workspace: config.workspace.url.clone(),
        summary,
        drift: plan.drift.clone(),
        actions,
        safety: SafetyReport::default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{PROGRESS_EVERY, progress_due};

    /// The first line, then one per [`PROGRESS_EVERY`], and the last one always.
    #[test]
    fn progress_lines_are_throttled_but_the_last_one_is_printed() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut last = None;
        assert!(progress_due(&mut last, at(0), false), "the first");
        assert!(!progress_due(&mut last, at(10), false));
        assert!(!progress_due(&mut last, at(249), false));
        assert!(
            progress_due(&mut last, at(250), false),
            "{PROGRESS_EVERY:?} later"
        );
        assert!(!progress_due(&mut last, at(400), false));
        assert!(progress_due(&mut last, at(401), true), "the last write");
        assert!(
            !progress_due(&mut last, at(500), false),
            "counted from the last"
        );
    }

    /// A copy left behind (its lock free, written) goes with its `-wal` and
    /// `-shm`, as does a `-shm` whose copy is gone; a copy whose lock is held (a
    /// preview running), one still empty and new (being made), another
    /// database's and a name that is no process id's stay, and one that cannot
    /// be removed is not counted as removed.
    #[test]
    fn stale_preview_copies_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("state.db", "db");
        for name in [
            "state.db.moved-preview-41",
            "state.db.moved-preview-41-wal",
            "state.db.moved-preview-41-shm",
            "state.db.moved-preview-42-shm",
            "state.db.moved-preview-43",
            "state.db.moved-preview-notes",
            "other.db.moved-preview-45",
        ] {
            write(name, "copy");
        }
        write("state.db.moved-preview-44", "");
        // One that cannot be removed (here a folder; for a user who may not
        // change the state folder, any) is not said to be.
        std::fs::create_dir(dir.path().join("state.db.moved-preview-46")).unwrap();
        let held = std::fs::File::open(dir.path().join("state.db.moved-preview-43")).unwrap();
        held.try_lock().unwrap();

        let removed = super::remove_stale_preview_copies(&state);

        assert_eq!(removed, [dir.path().join("state.db.moved-preview-41")]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "other.db.moved-preview-45",
                "state.db",
                "state.db.moved-preview-43",
                "state.db.moved-preview-44",
                "state.db.moved-preview-46",
                "state.db.moved-preview-notes",
            ]
        );
        drop(held);
        assert_eq!(
            super::remove_stale_preview_copies(&state),
            [dir.path().join("state.db.moved-preview-43")]
        );
    }

    /// The copy a preview plans in is locked from before it is written until
    /// the preview lets it go, so a later command never takes it for one left
    /// behind while it is in use.
    #[test]
    fn a_preview_copy_is_locked_while_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("state.db")).unwrap();
        let copy = dir.path().join("state.db.moved-preview-7");
        let lock = store.copy_to(&copy).unwrap();
        assert!(std::fs::metadata(&copy).unwrap().len() > 0);
        assert!(super::remove_stale_preview_copies(&dir.path().join("state.db")).is_empty());
        assert!(copy.exists());
        drop(lock);
        assert_eq!(
            super::remove_stale_preview_copies(&dir.path().join("state.db")),
            std::slice::from_ref(&copy)
        );
        assert!(!copy.exists());
    }
}
