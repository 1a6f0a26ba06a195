//! `seatwarden daemon`: the long-running worker.
//!
//! Jobs on the configured schedule (see [`crate::schedule`]):
//! - `reconcile` — the full run; its deprovisions join the SLA ledger; the
//!   retention of `deprovision.delete_after` is never judged by a wall clock
//!   stepped ahead while the daemon ran ([`retention_as_of`]);
//! - `sweep` — the deprovisioning fast path ([`crate::sweep`]);
//! - `retry` — every minute, ledger episodes whose next attempt is due (and what
//!   a cut-off writer left in flight); with neither it asks the workspace nothing;
//! - `prune` — daily, retention of runs, reports and closed episodes, then VACUUM
//!   (snapshots of all but the newest few runs are dropped after every reconcile),
//!   never counted from a wall clock stepped ahead while the daemon ran
//!   ([`pruning_as_of`]);
//! - `digest` — the drift digest email on `schedule.digest` (with `[report.email]`);
//! - `mail` — every minute, delivery of the outbox (alerts, digests) with backoff.
//!
//! With `schedule.dry_run` the daemon only observes: the reconcile job runs dry
//! runs ([`reconcile_mode`]) and the jobs that write to the workspace (sweep,
//! retry) are not scheduled ([`scheduled_jobs`]); the log, the `seatwarden_dry_run`
//! gauge and `status` say so ([`announce_mode`]). A SIGHUP switches it either way;
//! switched on, a sweep or retry pass that fired before it and still waits for the
//! writer locks is skipped ([`run_job`]), while one already writing finishes.
//!
//! Each slot the scheduler fires is kept in `daemon_state` (`fired_slot.<job>`)
//! and handed back at the next start, so a restart on a clock set back since does
//! not fire it again ([`schedule::FiredSlot`]).
//!
//! Alerts (plan held, sweep held, source fault, circuit open, overdue deprovision,
//! repeated job failures) are raised and resolved by [`notify`](mod@notify) from what the jobs
//! saw. A mail job whose due messages could none be sent fails; a sweep or retry
//! pass that got no answer from the workspace (a retry pass whose episodes wait
//! for their next attempt among them), and a mail job with nothing due, neither
//! end nor add to their job's failures in a row; a retry pass with nothing open
//! succeeds.
//!
//! Workspace writers (reconcile, sweep, retry, prune) take one async lock, so a
//! sweep never races a reconcile over the same accounts or journal rows; a job
//! still running at its next fire is skipped and counted. Each writer's wait for
//! the lock is logged as it starts and counted (`seatwarden_job_lock_wait_seconds`,
//! [`LONG_LOCK_WAIT`]), and kept in `daemon_state` while it lasts for
//! `seatwarden status` ([`LockWait`]; cleared at start, where a killed daemon left one). A sweep waiting behind a reconcile is the only one to see
//! a leaver disabled after that reconcile read the directory, so
//! `schedule.reconcile_max_duration` bounds a reconcile ([`time_limited`]): past
//! it, the run is stopped as SIGTERM stops it (below), recorded `stopped` with
//! the limit as its cause (the job `failed`: it did not converge), and the
//! waiting sweep runs.
//!
//! Every job first checks that the state database is still the file opened at
//! start ([`DatabaseFile`]): one deleted or replaced under the daemon fails the
//! jobs and `/readyz`, rather than be made again empty by the next job's open.
//!
//! The process: one instance per state database (a lock file next to it), an HTTP
//! listener ([`http`]) for `/healthz`, `/readyz`, `/metrics`, `/status` and the
//! optional `POST /reconcile`, systemd notifications (READY after the database and
//! listener are up, WATCHDOG from the scheduler loop, RELOADING/STOPPING), SIGHUP
//! to reload the configuration (a new scheduler loop, which catches up no job,
//! goes on from the old one's last look at the clock; an invalid configuration
//! is logged, shown as the unit's `STATUS=` until a reload succeeds, and changes
//! nothing: the old configuration and its loop go on; a successful one runs the
//! mail job at once with the messages waiting for their next attempt made due,
//! so a relay login fixed and reloaded is tried then, not an hour later; a job
//! keeps the configuration it started with, taken whole, [`Running`]), and
//! SIGTERM/SIGINT to stop: no new job starts (one still waiting for the writer
//! locks gives up at once), a running reconcile or sweep starts
//! no further write (those sent finish and are verified and journaled; the run
//! and its job are recorded `stopped`, neither success nor failure; a reconcile's
//! next run plans the rest again, and a sweep's or retry's leavers not reached
//! stay open in the ledger, due at once), running jobs get
//! [`STOP_GRACE`] to finish (a second signal ends the wait), and the journal
//! stays consistent either way because
//! every write was journaled before it was sent.

pub mod catalog;
pub mod http;
pub mod notify;
pub mod status;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::SecretString;

use crate::apply::{self, StopSignal};
use crate::config::{Config, ConfigError, DaemonSettings};
use crate::run::{self, Mode, RunError};
use crate::schedule::{self, Clock, JobCounters, JobSpec, Schedule, Scheduler, StartJob};
use crate::store::{RunStatus, Store, StoreError, WriterLock};
use crate::sweep;
use crate::workspace::ScimClient;

/// How long running jobs get to finish after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// After the stop, how long blocking work a job left behind (a VACUUM, a
/// snapshot being stored: no future to cancel) may go on before the process
/// exits regardless. Unbounded, a stop could outlast the service manager's
/// patience and end in SIGKILL. A transaction cut off rolls back at the next open.
pub const BLOCKING_STOP_GRACE: Duration = Duration::from_secs(5);

/// The longest a daemon takes to stop once signalled: the jobs' grace, the
/// HTTP requests' and the blocking work's. A service manager's stop timeout
/// (systemd's `TimeoutStopSec`) must be longer, or a clean stop is killed.
pub fn longest_stop() -> Duration {
    STOP_GRACE + http::ConnectionLimits::default().shutdown_grace + BLOCKING_STOP_GRACE
}

/// The jobs, by name (also their names in metrics, logs and the `jobs` table).
pub const RECONCILE: &str = "reconcile";
pub const SWEEP: &str = "sweep";
pub const RETRY: &str = "retry";
pub const PRUNE: &str = "prune";
pub const DIGEST: &str = "digest";
pub const MAIL: &str = "mail";

/// Snapshots kept by `prune`: the latest few runs' are enough for `explain`,
/// reports and comparisons; older ones are most of the database's size.
pub const SNAPSHOTS_KEPT: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another seatwarden daemon is already running on state database {} (lock file {} is held)",
        .database.display(), .lock.display()
    )]
    AlreadyRunning { database: PathBuf, lock: PathBuf },
    #[error(
        "cannot open lock file {} beside the state database (state.path): {source}{hint}",
        .path.display()
    )]
    LockFile {
        path: PathBuf,
        source: std::io::Error,
        /// What to do, where it is known ([`crate::store::lock_file_hint`]).
        hint: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot look at the state database {}: {source}", .path.display())]
    DatabaseFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Holds the single-instance lock for as long as it lives.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// The lock file of `database`, next to the file it resolves to: a second
    /// daemon on the same database through a symlink must find it taken.
    pub fn path_for(database: &Path) -> PathBuf {
        crate::store::lock_file_path(database, ".lock")
    }

    /// Takes `<database>.lock`; a second daemon fails within [`INSTANCE_LOCK_PATIENCE`].
    /// Not at once: `seatwarden status` looks whether a daemon runs by taking the
    /// lock shared for an instant, and a daemon starting in that instant must not
    /// give up.
    pub fn acquire(database: &Path) -> Result<InstanceLock, DaemonError> {
        let path = Self::path_for(database);
        let lock_file_error = |path: PathBuf, source: std::io::Error| DaemonError::LockFile {
            hint: crate::store::lock_file_hint(&path, &source),
            path,
            source,
        };
        // Given the database's owner when made as root (`sudo seatwarden daemon`
        // once by hand), so the service can start afterwards.
        let file = crate::store::open_lock_file(&path, database)
            .map_err(|source| lock_file_error(path.clone(), source))?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(InstanceLock { _file: file, path }),
                Err(std::fs::TryLockError::WouldBlock)
                    if started.elapsed() < INSTANCE_LOCK_PATIENCE =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(DaemonError::AlreadyRunning {
                        database: database.to_owned(),
                        lock: path,
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(lock_file_error(path, source));
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How long a starting daemon waits for the instance lock before it concludes
/// that another daemon holds it.
const INSTANCE_LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// Whether a daemon runs on `database`: whether its instance lock is held.
pub fn is_running(database: &Path) -> Result<bool, StoreError> {
    crate::store::lock_is_held(&InstanceLock::path_for(database))
}

/// State shared by the scheduler loop, the jobs and the HTTP handlers.
pub struct Shared {
    running: RwLock<Arc<Running>>,
    /// The daemon's own connection: the job records and the scheduler's reads.
    db: Mutex<Store>,
    /// The HTTP handlers' connection (`/metrics`, `/status`, `POST /reconcile`;
    /// `/readyz` has [`Shared::probes`]), and the scheduler loop's reads
    /// ([`scheduled_specs`]): on `db` they would queue behind a job
    /// record's write, which waits up to the busy timeout while a job's long
    /// transaction (a snapshot, a VACUUM) holds the write lock, and a probe's or
    /// scrape's timeout is short. In WAL mode their reads wait for no writer.
    reads: Mutex<Store>,
    /// `/readyz`'s connection: on `reads` it would queue behind `/metrics` and
    /// `/status`, which read more (the ledger, a report), and `/metrics` needs no
    /// token either. It tries the write lock without waiting.
    probes: Mutex<Store>,
    counters: BTreeMap<&'static str, Arc<JobCounters>>,
    /// Held by every job that writes to the workspace or prunes the database.
    writer: Arc<tokio::sync::Mutex<()>>,
    clock: Arc<dyn Clock>,
    tick: Duration,
    /// When the daemon started, on the monotonic clock: `last_tick` counts from it,
    /// so a wall clock stepped back cannot keep a dead loop looking alive, and one
    /// stepped forward cannot make a live one look dead.
    started: std::time::Instant,
    /// Milliseconds after `started` of the scheduler loop's last pass (liveness).
    last_tick: AtomicI64,
    /// The wall clock at start, and when that was on tokio's clock (the monotonic
    /// one, or a test's paused one that its `TokioClock` follows): the prune
    /// deletes nothing the time since could not have aged ([`pruning_as_of`]).
    wall_started: (DateTime<Utc>, tokio::time::Instant),
    /// Set at SIGTERM/SIGINT: no job starts, and a running reconcile starts no
    /// further write.
    stopping: StopSignal,
    metrics: Option<PrometheusHandle>,
    start: RwLock<Option<StartJob>>,
    /// Failed runs in a row, per job (for the repeated-failures alert).
    failures: Mutex<BTreeMap<&'static str, u32>>,
    /// The last success this daemon recorded per job: the wall time it wrote to
    /// `jobs`, and when that was on tokio's clock. `/readyz` places a success the
    /// wall clock now reads in its future by the time passed since (a clock
    /// stepped ahead, then back), which the wall times alone cannot tell.
    successes: Mutex<BTreeMap<&'static str, (DateTime<Utc>, tokio::time::Instant)>>,
    /// The jobs waiting for the writer locks now, each since when ([`LockWait`]),
    /// as `daemon_state` is to hold them for `seatwarden status`.
    lock_waits: Mutex<BTreeMap<&'static str, DateTime<Utc>>>,
    /// The state database as opened at start ([`Shared::database_lost`]).
    database: DatabaseFile,
    /// When `/readyz` last took the write lock to see that the database takes
    /// writes, and what it found ([`http::WRITE_PROBE_INTERVAL`]).
    write_probed: Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
    /// Set by a successful reload: the next mail job first makes the messages
    /// waiting for their next attempt due ([`mail_job`]).
    release_mail: AtomicBool,
}

/// The configuration the daemon runs: as loaded at start or by the last
/// successful reload, replaced whole. A job takes it once ([`Shared::running`])
/// and keeps it to its end, so it never pairs one load's `[schedule]` (its dry
/// run, its time limit) with another load's workspace, directory or thresholds:
/// a reload into dry run with a new directory must not let a reconcile write
/// from that directory, as one that read the two halves a moment apart would.
pub struct Running {
    pub config: Arc<Config>,
    pub settings: Arc<DaemonSettings>,
    /// `http.trigger_token_file`, read when the configuration was loaded.
    trigger_token: Option<SecretString>,
}

impl Running {
    fn new(
        config: Config,
        settings: DaemonSettings,
        trigger_token: Option<SecretString>,
    ) -> Running {
        Running {
            config: Arc::new(config),
            settings: Arc::new(settings),
            trigger_token,
        }
    }

    pub fn trigger_token(&self) -> Option<&SecretString> {
        self.trigger_token.as_ref()
    }
}

/// The state database file the daemon opened at start, by device and inode.
///
/// The daemon's own connection keeps a deleted file alive, so it alone would
/// notice nothing, while every job opens the path afresh: a database deleted
/// (a cleanup, a volume swapped) or replaced (`mv backup.db state.db`) under a
/// running daemon would have the next job make a new empty one, or work on
/// another file than `/status` and the job records, silently losing the open
/// deprovisions, held approvals, links, the 24 h threshold counts and an open
/// circuit breaker. So jobs and `/readyz` compare first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseFile {
    device: u64,
    inode: u64,
}

impl DatabaseFile {
    /// The file at `path` now (symlinks followed, as SQLite opens it).
    pub fn of(path: &Path) -> Result<DatabaseFile, DaemonError> {
        DatabaseFile::look(path).map_err(|source| DaemonError::DatabaseFile {
            path: path.to_owned(),
            source,
        })
    }

    fn look(path: &Path) -> std::io::Result<DatabaseFile> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path)?;
        Ok(DatabaseFile {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    /// Why the file at `path` is no longer this one, if it is not: gone, or
    /// another file in its place.
    pub fn lost_at(&self, path: &Path) -> Option<String> {
        match DatabaseFile::look(path) {
            Err(e) => Some(format!(
                "the state database {} is gone since the daemon started ({e}): no job runs, \
                 rather than begin again from an empty one that knows no open deprovision, \
                 held action or link; put it back (from a backup) and restart the daemon, \
                 or restart it to begin anew",
                path.display()
            )),
            Ok(now) if now != *self => Some(format!(
                "the state database {} is another file than the one the daemon opened at \
                 start (replaced, or moved and made again): no job runs on it; restart the \
                 daemon to use the new file",
                path.display()
            )),
            Ok(_) => None,
        }
    }
}

impl Shared {
    /// The configuration as one whole: what a job runs with from its start to
    /// its end.
    pub fn running(&self) -> Arc<Running> {
        match self.running.read() {
            Ok(running) => Arc::clone(&running),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The running configuration, for a reader that needs nothing of `[schedule]`
    /// along with it.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.running().config)
    }

    /// The running `[schedule]` settings, for a reader that needs nothing else of
    /// the configuration along with them.
    pub fn settings(&self) -> Arc<DaemonSettings> {
        Arc::clone(&self.running().settings)
    }

    fn replace_running(&self, running: Running) {
        let running = Arc::new(running);
        match self.running.write() {
            Ok(mut slot) => *slot = running,
            Err(poisoned) => *poisoned.into_inner() = running,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn with_db<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        match self.db.lock() {
            Ok(mut db) => f(&mut db),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// [`Shared::with_db`] on the HTTP handlers' connection ([`Shared::reads`]).
    fn with_reads<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        match self.reads.lock() {
            Ok(mut db) => f(&mut db),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// [`Shared::with_db`] on `/readyz`'s own connection ([`Shared::probes`]).
    fn with_probes<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        match self.probes.lock() {
            Ok(mut db) => f(&mut db),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Starts a job now unless it runs already (`POST /reconcile`).
    pub fn trigger(&self, name: &'static str) -> bool {
        self.start_with(name, schedule::start_now)
    }

    /// Starts a job now or, when it runs already, once more as soon as it ends
    /// ([`schedule::start_or_follow`]); returns whether it started now. Neither
    /// while stopping.
    pub fn trigger_or_follow(&self, name: &'static str) -> bool {
        self.start_with(name, schedule::start_or_follow)
    }

    fn start_with(
        &self,
        name: &'static str,
        start_job: fn(&'static str, &Arc<schedule::JobCounters>, &StartJob) -> bool,
    ) -> bool {
        if self.stopping.is_stopped() {
            return false;
        }
        let start = self.start.read().ok().and_then(|s| s.clone());
        match (start, self.counters.get(name)) {
            (Some(start), Some(counters)) => start_job(name, counters, &start),
            _ => false,
        }
    }

    /// Milliseconds since the daemon started, on the monotonic clock.
    fn uptime_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Why the state database at `state.path` is no longer the one opened at
    /// start, if it is not ([`DatabaseFile`]).
    pub fn database_lost(&self) -> Option<String> {
        self.database.lost_at(&self.config().state.path)
    }

    /// A new connection to the state database for a job: to the file opened at
    /// start, never a new one. A job checks the file before it begins, but the
    /// database may be deleted while it runs, and a plain open would then make
    /// an empty one at the path (the next job would call it "another file", and
    /// a restart would begin from it).
    pub fn open_store(&self) -> Result<Store, StoreError> {
        let refused = |lost| StoreError::NotTheDaemons(lost);
        if let Some(lost) = self.database_lost() {
            return Err(refused(lost));
        }
        let store = Store::open_existing(&self.config().state.path)
            .map_err(|e| self.database_lost().map_or(e, refused))?;
        // Replaced between the look and the open: this is the other file.
        match self.database_lost() {
            Some(lost) => Err(refused(lost)),
            None => Ok(store),
        }
    }

    /// The jobs waiting for the writer locks now, each since when ([`LockWait`]).
    pub fn lock_waits_now(&self) -> BTreeMap<&'static str, DateTime<Utc>> {
        self.lock_waits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Alive: the scheduler loop ran within three ticks.
    pub fn alive(&self) -> bool {
        let last = self.last_tick.load(Ordering::SeqCst);
        let age = self.uptime_ms().saturating_sub(last);
        let limit = i64::try_from(self.tick.as_millis()).unwrap_or(i64::MAX);
        age <= limit.saturating_mul(3).saturating_add(5_000)
    }
}

fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Up to two days: `deprovision.sla` is often a working day or a day
            // (1h by default), and "verified within the SLA" is a bucket's count.
            let seconds = [
                0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                14400.0, 28800.0, 43200.0, 86400.0, 172800.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    match metrics::set_global_recorder(recorder) {
                        Ok(()) => {
                            catalog::describe();
                            Some(handle)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics recorder not installed");
                            None
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not built");
                    None
                }
            }
        })
        .clone()
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

/// The scheduler's jobs from the settings, with when each last started. A job that
/// never ran runs at once (the first reconcile should not wait for its slot),
/// except the digest and the prune: a first start would otherwise email a digest
/// of nothing.
/// [`job_specs`] for the scheduler loop, at start and after each reload. Read
/// on the handlers' connection ([`Shared::with_reads`]), which never waits for
/// a writer: the daemon's own may be held by a job's record waiting (up to the
/// busy timeout, for each one queued) for the write lock a prune's VACUUM or a
/// reconcile's snapshot holds, and the loop waiting with it after a reload
/// neither ticks (the systemd watchdog, `/healthz`) nor fires any job.
fn scheduled_specs(
    shared: &Shared,
    settings: &DaemonSettings,
    now: DateTime<Utc>,
) -> Result<Vec<JobSpec>, StoreError> {
    shared.with_reads(|db| job_specs(settings, db, now))
}

fn job_specs(
    settings: &DaemonSettings,
    db: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<JobSpec>, StoreError> {
    let records = db.jobs()?;
    let last: BTreeMap<&str, DateTime<Utc>> = records
        .iter()
        .filter_map(|j| j.last_started_at.map(|at| (j.name.as_str(), at)))
        .collect();
    let stopped: Vec<&str> = records
        .iter()
        .filter(|j| j.last_status == Some(RunStatus::Stopped))
        .map(|j| j.name.as_str())
        .collect();
    scheduled_jobs(settings)
        .into_iter()
        .map(|(name, schedule)| {
            Ok(JobSpec {
                name,
                schedule,
                last_started: last
                    .get(name)
                    .copied()
                    .or_else(|| matches!(name, DIGEST | PRUNE).then_some(now)),
                stopped: stopped.contains(&name),
                fired: fired_slot(db, name)?,
            })
        })
        .collect()
}

/// The key in `daemon_state` of the slot `job` fired last (UTC, RFC 3339).
fn fired_slot_key(job: &str) -> String {
    format!("fired_slot.{job}")
}

/// The slot `job` fired last, as [`record_fired_slot`] kept it. One that does
/// not read as a time (edited by hand) is logged and taken as none: it must
/// not keep the daemon from starting.
fn fired_slot(db: &Store, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let key = fired_slot_key(job);
    let Some(text) = db.state_value(&key)? else {
        return Ok(None);
    };
    match DateTime::parse_from_rfc3339(&text) {
        Ok(at) => Ok(Some(at.to_utc())),
        Err(e) => {
            tracing::warn!(
                job,
                key,
                value = text,
                error = %e,
                "daemon_state holds no time for the slot this job fired last: ignored"
            );
            Ok(None)
        }
    }
}

/// Keeps the slot `job` fired in `daemon_state`, so that a daemon started on a
/// clock set back since does not fire it again ([`schedule::FiredSlot`]). Off
/// the scheduler loop's task: a prune's VACUUM can hold the database for seconds.
fn record_fired_slot(shared: &Arc<Shared>, job: &'static str, slot: DateTime<Utc>) {
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let key = fired_slot_key(job);
        let value = slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        if let Err(e) = shared.with_db(|db| db.set_state_value(&key, Some(&value))) {
            tracing::warn!(
                job,
                slot = %schedule::log_time(slot),
                error = %e,
                "cannot keep the slot this job fired in the state database: a restart on a \
                 clock set back before it may fire it again"
            );
        }
    });
}

/// Every job the daemon runs with these settings, with its schedule (evaluated on
/// `settings.timezone`), in the order they are listed.
pub fn scheduled_jobs(settings: &DaemonSettings) -> Vec<(&'static str, Schedule)> {
    let fixed = |pattern: &str| Schedule::parse(pattern).ok();
    // A dry run's daemon writes nothing: the sweep and the retry pass deactivate.
    let writes = !settings.dry_run;
    [
        (RECONCILE, Some(settings.reconcile.clone())),
        (SWEEP, Some(settings.sweep.clone()).filter(|_| writes)),
        (RETRY, fixed("* * * * *").filter(|_| writes)),
        (PRUNE, fixed("17 3 * * *")),
        (DIGEST, settings.digest.clone()),
        (MAIL, fixed("* * * * *")),
    ]
    .into_iter()
    .filter_map(|(name, schedule)| Some((name, schedule?)))
    .collect()
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<(), DaemonError> {
    // Handlers first: until they exist a SIGHUP (a `systemctl reload` queued during
    // start) would kill the process, and as a container's PID 1 a SIGTERM would be
    // ignored. Signals that arrive meanwhile wait in the streams.
    use tokio::signal::unix::{SignalKind, signal};
    let process_started = std::time::SystemTime::now();
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    // Its stderr is its log, even on a terminal: no progress lines in between.
    run::silence_progress();
    let settings = config.daemon_settings()?;
    config.check_credentials()?;
    let lock = InstanceLock::acquire(&config.state.path)?;
    tracing::debug!(lock = %lock.path().display(), "instance lock taken");
    let mut db = Store::open(&config.state.path)?;
    db.check_writable()?;
    let reads = Store::open_existing(&config.state.path)?;
    let probes = Store::open_existing(&config.state.path)?;
    for copy in run::remove_stale_preview_copies(&config.state.path) {
        tracing::info!(
            copy = %copy.display(),
            "removed a copy of the state database left behind by a killed `plan --workspace-moved`"
        );
    }
    // The file this daemon keeps its state in: one deleted or replaced under it
    // must stop the jobs, not be made again empty by the next one's open.
    let database = DatabaseFile::of(&config.state.path)?;
    // Only one daemon runs per database (the instance lock): a job still marked
    // running was cut off when the last one stopped.
    let reconcile_started = db
        .jobs()?
        .into_iter()
        .find(|job| job.name == RECONCILE && job.last_status == Some(RunStatus::Running))
        .and_then(|job| job.last_started_at);
    let interrupted = db.close_interrupted_jobs(clock.now())?;
    // A dry run holds no writer lock, so no writer closes one cut off: its job's is
    // closed here, else `status` showed it under way for good.
    if let Some(started) = reconcile_started
        && let Some(run) = db.close_interrupted_dry_run(started, clock.now())?
    {
        tracing::warn!(
            run,
            "the dry run the last daemon was cut off in marked failed (interrupted)"
        );
    }
    // Nor does any job wait for the writer lock yet: the waits a killed daemon
    // recorded are over.
    db.clear_lock_waits()?;
    if !interrupted.is_empty() {
        tracing::warn!(
            jobs = %interrupted.join(", "),
            "jobs the last daemon left running marked failed (interrupted)"
        );
    }
    let trigger_token = config.trigger_token()?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: settings.listen,
            source,
        })?;
    // With port 0 the system chose one: the log says which.
    let bound = listener.local_addr().unwrap_or(settings.listen);

    let tick = sd_notify::watchdog_enabled()
        .map(|w| (w / 2).min(Duration::from_secs(5)))
        .unwrap_or(Duration::from_secs(5));
    let counters: BTreeMap<&'static str, Arc<JobCounters>> =
        [RECONCILE, SWEEP, RETRY, PRUNE, DIGEST, MAIL]
            .into_iter()
            .map(|name| (name, Arc::new(JobCounters::default())))
            .collect();
    let metrics = install_metrics();
    catalog::register(&counters.keys().copied().collect::<Vec<_>>());
    metrics::gauge!("seatwarden_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // The wall clock, not the daemon's: a restart shows as a jump, as with
    // `process_start_time_seconds`.
    let started_secs = process_started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    metrics::gauge!("seatwarden_start_time_seconds").set(started_secs);
    // A crash loop shows in the failure counters, as in `status`: each job the
    // last daemon was cut off in counts once as failed.
    for name in interrupted {
        metrics::counter!("seatwarden_job_runs_total", catalog::JOB_LABEL => name, "status" => "failed")
            .increment(1);
    }
    restore_reconcile_gauges(&db, &settings);
    // After a restart the last successes are in the database: an alert on their age
    // need not wait for each job's next run. (A job that never succeeded has none.)
    for job in db.jobs()? {
        if let (Some(name), Some(at)) = (
            counters.keys().find(|name| **name == job.name),
            job.last_success_at,
        ) {
            metrics::gauge!("seatwarden_last_success_timestamp_seconds", catalog::JOB_LABEL => *name)
                .set(at.timestamp() as f64);
        }
    }
    let shared = Arc::new(Shared {
        running: RwLock::new(Arc::new(Running::new(config, settings, trigger_token))),
        db: Mutex::new(db),
        reads: Mutex::new(reads),
        probes: Mutex::new(probes),
        counters: counters.clone(),
        writer: Arc::new(tokio::sync::Mutex::new(())),
        clock: Arc::clone(&clock),
        tick,
        started: std::time::Instant::now(),
        last_tick: AtomicI64::new(0),
        wall_started: (clock.now(), tokio::time::Instant::now()),
        stopping: StopSignal::new(),
        metrics,
        start: RwLock::new(None),
        failures: Mutex::new(BTreeMap::new()),
        successes: Mutex::new(BTreeMap::new()),
        lock_waits: Mutex::new(BTreeMap::new()),
        database,
        write_probed: Mutex::new(None),
        release_mail: AtomicBool::new(false),
    });
    let start: StartJob = {
        let shared = Arc::clone(&shared);
        Arc::new(move |name| Box::pin(run_job(Arc::clone(&shared), name)))
    };
    if let Ok(mut slot) = shared.start.write() {
        *slot = Some(Arc::clone(&start));
    }

    let (http_stop, http_stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(http::serve(listener, Arc::clone(&shared), http_stopped));
    tracing::info!(listen = %bound, database = %shared.config().state.path.display(), "daemon started");
    announce_mode(&shared.settings());
    announce_certificates(&shared.config(), shared.now());
    notify(&[sd_notify::NotifyState::Ready]);

    let (_never, quiet) = tokio::sync::watch::channel(false);
    let mut previous_jobs: Option<Vec<JobSpec>> = None;
    // When the running loop last looked at the clock: a reload's loop goes on
    // from there ([`Scheduler::resumed_from`]).
    // (None before its first look: a SIGHUP queued during start leaves the
    // start's catch-ups to the loop built after it.)
    let looked: std::cell::Cell<Option<DateTime<Utc>>> = std::cell::Cell::new(None);
    'schedule: loop {
        let settings = shared.settings();
        let jobs = match (
            scheduled_specs(&shared, &settings, clock.now()),
            previous_jobs.take(),
        ) {
            (Ok(jobs), _) => jobs,
            // After a reload: running jobs must not be cut off by a failed read;
            // the schedule in force goes on.
            (Err(e), Some(previous)) => {
                tracing::error!(
                    error = %e,
                    "cannot read the jobs' last runs after a reload; keeping the running schedule"
                );
                // Their last starts are from before the reload: counted from then,
                // the fires since would look missed and run again at once (a second
                // digest). Counted from now, the next fires come on schedule.
                let now = clock.now();
                previous
                    .into_iter()
                    .map(|job| JobSpec {
                        last_started: Some(now),
                        stopped: false,
                        ..job
                    })
                    .collect()
            }
            (Err(e), None) => return Err(e.into()),
        };
        previous_jobs = Some(jobs.clone());
        let scheduler = Scheduler::with_counters(
            jobs,
            settings.timezone,
            Arc::clone(&clock),
            tick,
            counters.clone(),
        )
        .on_fire({
            let shared = Arc::clone(&shared);
            Arc::new(move |job, slot| record_fired_slot(&shared, job, slot))
        });
        let scheduler = match looked.get() {
            Some(since) => scheduler.resumed_from(since),
            None => scheduler,
        };
        let on_tick = |now: DateTime<Utc>| {
            looked.set(Some(now));
            shared.last_tick.store(shared.uptime_ms(), Ordering::SeqCst);
            notify(&[sd_notify::NotifyState::Watchdog]);
        };
        let running = scheduler.run(Arc::clone(&start), quiet.clone(), on_tick);
        tokio::pin!(running);
        // A failed reload changes nothing: the loop goes on as it was.
        loop {
            tokio::select! {
                _ = &mut running => break 'schedule,
                _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break 'schedule }
                _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break 'schedule }
                _ = hangup.recv() => if reload(&shared, &config_path) { break },
            }
        }
    }

    shared.stopping.stop();
    notify(&[sd_notify::NotifyState::Stopping]);
    // A second SIGTERM or SIGINT (Ctrl-C twice in a terminal) does not wait out
    // the grace, as a second Ctrl-C quits a `seatwarden reconcile` at once.
    // Meanwhile the process is alive and finishing its writes: /healthz goes on
    // answering 200 (the loop's ticks stopped with it), else a liveness probe
    // (Kubernetes, a container's HEALTHCHECK) would kill a daemon finishing
    // cleanly once the stop takes longer than three ticks.
    let finishing = async {
        loop {
            shared.last_tick.store(shared.uptime_ms(), Ordering::SeqCst);
            tokio::time::sleep(tick).await;
        }
    };
    let idle = tokio::select! {
        idle = schedule::wait_idle(&counters, STOP_GRACE) => idle,
        _ = terminate.recv() => false,
        _ = interrupt.recv() => false,
        () = finishing => false,
    };
    if !idle {
        let running: Vec<&str> = counters
            .iter()
            .filter(|(_, c)| c.is_running())
            .map(|(name, _)| *name)
            .collect();
        tracing::warn!(
            jobs = ?running,
            "jobs still running after the grace period or a second signal; stopping anyway: \
             a write already sent may be cut off before its result is recorded, and the next \
             start recovers the actions left in flight"
        );
    }
    let _ = http_stop.send(true);
    let _ = server.await;
    // The job starter refers back to `shared`, which keeps it: until it is let go
    // the daemon's own connection to the state database is never closed, and a
    // clean stop left the committed data in `state.db-wal` (a copy of `state.db`
    // alone, as a backup, lacked it). Let go, the last connection closes with
    // `shared` (or with a job cut off by the stop, when the runtime ends), and
    // SQLite folds the `-wal` file into the database.
    match shared.start.write() {
        Ok(mut slot) => *slot = None,
        Err(poisoned) => *poisoned.into_inner() = None,
    }
    drop(start);
    tracing::info!("daemon stopped");
    Ok(())
}

/// What the reconcile job runs: a dry run under `schedule.dry_run`.
pub fn reconcile_mode(settings: &DaemonSettings) -> Mode {
    if settings.dry_run {
        Mode::DryRun
    } else {
        Mode::Reconcile
    }
}

/// Says whether the daemon writes (`schedule.dry_run`), in the log and in the
/// `seatwarden_dry_run` gauge: a daemon left in dry run by mistake deprovisions
/// nobody, and monitoring must be able to tell.
fn announce_mode(settings: &DaemonSettings) {
    metrics::gauge!("seatwarden_dry_run").set(if settings.dry_run { 1.0 } else { 0.0 });
    if settings.dry_run {
        tracing::warn!(
            "dry run (schedule.dry_run = true): each reconcile plans and reports and writes \
             nothing to the workspace; the sweep and the retry pass are not scheduled, so \
             nobody who leaves is deactivated"
        );
    } else {
        tracing::info!("enforcing: reconciles and sweeps write to the workspace");
    }
}

/// Warns of each certificate file that runs out within
/// [`crate::certificate::WARN_BEFORE`] or has run out, at the start and at each
/// reload (the gauge `seatwarden_certificate_expiry_timestamp_seconds` is read at
/// each scrape): an expired Entra certificate credential stops every directory
/// read, and with it every deprovision.
fn announce_certificates(config: &Config, now: DateTime<Utc>) {
    let tz = config.report_timezone().unwrap_or(chrono_tz::UTC);
    for expiry in crate::certificate::of_config(config).into_iter().flatten() {
        match expiry.standing(now) {
            crate::certificate::Standing::Valid => {}
            crate::certificate::Standing::RunningOut => {
                tracing::warn!("certificate runs out soon: {}", expiry.describe(now, tz));
            }
            crate::certificate::Standing::Expired => {
                tracing::error!("certificate expired: {}", expiry.describe(now, tz));
            }
        }
    }
}

/// What a reload changes in `safety.exceptions`, one line each, for the log: an
/// exception keeps someone's access, so who got one, lost one, or had one moved
/// is on record with the reason.
fn exception_changes(old: &Config, new: &Config, now: DateTime<Utc>) -> Vec<String> {
    let (Ok(before), Ok(after)) = (old.exceptions(), new.exceptions()) else {
        return Vec::new();
    };
    let tz = new.report_timezone().unwrap_or(chrono_tz::UTC);
    let key = |e: &crate::model::Exception| crate::policy::fold_user_name(&e.user_name);
    let find = |list: &[crate::model::Exception], e: &crate::model::Exception| {
        list.iter().find(|other| key(other) == key(e)).cloned()
    };
    let until = |e: &crate::model::Exception| crate::report::local_minute(e.until, tz);
    // Quoted from the file as check-config lists them: made printable, so a line
    // break or an escape sequence in one forges no log line of its own.
    let shown = crate::report::printable_field;
    let mut changes = Vec::new();
    for e in &after {
        match find(&before, e) {
            None if e.until <= now => changes.push(format!(
                "safety.exceptions: {} was added with an end already past ({}): it keeps \
                 nothing",
                shown(&e.user_name),
                until(e)
            )),
            None => changes.push(format!(
                "safety.exceptions: {} is kept until {}: {}",
                shown(&e.user_name),
                until(e),
                shown(&e.reason)
            )),
            Some(was) if was.until != e.until || was.reason != e.reason => {
                changes.push(format!(
                    "safety.exceptions: {}'s exception now runs until {} (was {}): {}",
                    shown(&e.user_name),
                    until(e),
                    until(&was),
                    shown(&e.reason)
                ));
            }
            Some(_) => {}
        }
    }
    for e in &before {
        if find(&after, e).is_none() && e.until <= now {
            changes.push(format!(
                "safety.exceptions: {}'s exception, ended {}, was taken out",
                shown(&e.user_name),
                until(e)
            ));
        } else if find(&after, e).is_none() {
            changes.push(format!(
                "safety.exceptions: {}'s exception (until {}) was taken out: seatwarden \
                 manages the account again",
                shown(&e.user_name),
                until(e)
            ));
        }
    }
    changes
}

/// SIGHUP: load the configuration again; keep the running one if the new one is
/// invalid (`seatwarden_config_reload_failed` is 1 until a reload succeeds). The
/// state database path and listener stay as started. Whether the configuration
/// was replaced.
fn reload(shared: &Shared, path: &Path) -> bool {
    let mut reloading = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        reloading.push(now);
    }
    notify(&reloading);
    let loaded = Config::load(path).and_then(|config| {
        let settings = config.daemon_settings()?;
        config.check_credentials()?;
        let token = config.trigger_token()?;
        Ok((config, settings, token))
    });
    match loaded {
        Ok((mut config, mut settings, token)) => {
            let old = shared.running();
            if let Some(warning) = restart_only_changes(
                (&old.config.state.path, old.settings.listen),
                (&config.state.path, settings.listen),
            ) {
                tracing::warn!("{warning}");
            }
            for change in exception_changes(&old.config, &config, shared.now()) {
                tracing::info!("{change}");
            }
            config.state.path = old.config.state.path.clone();
            settings.listen = old.settings.listen;
            let mode_changed = old.settings.dry_run != settings.dry_run;
            shared.replace_running(Running::new(config, settings, token));
            let running = shared.running();
            if mode_changed {
                announce_mode(&running.settings);
            }
            metrics::gauge!("seatwarden_config_reload_failed").set(0.0);
            tracing::info!(config = %path.display(), "configuration reloaded");
            for warning in running.config.warnings() {
                tracing::warn!("{warning}");
            }
            announce_certificates(&running.config, shared.now());
            // The operator fixed the relay's login (or its URL, its CA) and
            // reloaded: the messages a refused login put off would otherwise wait
            // out its backoff, up to an hour. After any successful reload, not
            // only one that changed `[report.email]`: the password file is read
            // again at each delivery, so a rotated one changes no configuration,
            // nor does a fix on the relay's side. It costs one session: delivery
            // stops at the first refusal and puts the rest off again. The mail
            // job makes them due (a database write, off this loop) and runs now,
            // or, if it runs already (it may have passed the flag), once more
            // when it ends: with the reloaded login, as each run reads it.
            shared.release_mail.store(true, Ordering::SeqCst);
            shared.trigger_or_follow(MAIL);
            // Clears what a failed reload showed.
            notify(&[
                sd_notify::NotifyState::Status(""),
                sd_notify::NotifyState::Ready,
            ]);
            true
        }
        Err(e) => {
            // Until a reload succeeds: the file on disk is not what runs, and the
            // next restart would fail on it.
            metrics::gauge!("seatwarden_config_reload_failed").set(1.0);
            tracing::error!(
                config = %path.display(),
                error = %e,
                "configuration reload failed; keeping the running configuration"
            );
            // `systemctl reload` succeeds all the same (its `kill -HUP` did):
            // `systemctl status` is where the person who ran it looks next.
            let status = reload_failed_status(&e.to_string());
            notify(&[
                sd_notify::NotifyState::Status(&status),
                sd_notify::NotifyState::Ready,
            ]);
            false
        }
    }
}

/// The `STATUS=` of a failed reload (`error`): on one line, as the notification
/// protocol takes one assignment a line.
fn reload_failed_status(error: &str) -> String {
    let error = error.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "configuration reload failed, the configuration loaded before still runs \
         (seatwarden_config_reload_failed is 1 until a reload succeeds): {error}"
    )
}

/// What a reload keeps as started, of the keys that changed (`running` and
/// `reloaded`: `state.path` and `http.listen`), naming only those.
fn restart_only_changes(
    running: (&Path, std::net::SocketAddr),
    reloaded: (&Path, std::net::SocketAddr),
) -> Option<String> {
    let mut changed = Vec::new();
    if running.0 != reloaded.0 {
        changed.push("state.path");
    }
    if running.1 != reloaded.1 {
        changed.push("http.listen");
    }
    match changed.as_slice() {
        [] => None,
        [key] => Some(format!(
            "{key} changed: the change takes effect at the next restart"
        )),
        keys => Some(format!(
            "{} changed: the changes take effect at the next restart",
            keys.join(" and ")
        )),
    }
}

/// One job run: recorded in the `jobs` table and in metrics whatever happens.
async fn run_job(shared: Arc<Shared>, name: &'static str) {
    // While stopping no job starts, but for the mail job: one that begins now
    // was asked for before the stop ([`schedule::start_or_follow`], by a job
    // that ended while a mail run was under way and so delivered nothing
    // itself), and what it was asked to send goes out within the stop grace, as
    // a job ending during the stop delivers its own. It takes no writer lock.
    let stops_it = || shared.stopping.is_stopped() && name != MAIL;
    if stops_it() {
        return;
    }
    let waiting = shared.counters.get(name).map(|c| c.waiting());
    let asked = std::time::Instant::now();
    // A job still waiting for its turn at SIGTERM has begun nothing: it gives up
    // at once, rather than hold the stop for its whole grace (a command run by
    // hand can hold the writer lock for as long as it likes).
    let locked = tokio::select! {
        biased;
        () = shared.stopping.stopped(), if takes_writer_lock(name) => return,
        locked = take_writer_locks(&shared, name) => locked,
    };
    let (_writer, _writer_lock, lock_failure) = locked;
    drop(waiting);
    let waited = asked.elapsed();
    if stops_it() {
        return;
    }
    // What the job runs with, from here to its end, whatever a reload does
    // meanwhile: taken once its turn has come, so a reload while it waited counts.
    let running = shared.running();
    // A sweep or retry pass that fired before a reload into dry run, and waited
    // for the writer locks meanwhile (behind a reconcile, or a command run by
    // hand), would deactivate after it: the daemon only observes now.
    if matches!(name, SWEEP | RETRY) && running.settings.dry_run {
        tracing::info!(
            job = name,
            "job skipped: schedule.dry_run was turned on since it fired, and a daemon in \
             dry run writes nothing"
        );
        return;
    }
    // Every job opens the database by its path, which would make a new empty one
    // where it is gone: it fails instead, without a notifier (that would open it too).
    let lost = shared.database_lost();
    let lock_failure = lock_failure.or(lost.clone());
    let started = shared.now();
    let timer = std::time::Instant::now();
    record_job_start(&shared, name, started).await;
    log_start(name, waited);
    if takes_writer_lock(name) {
        metrics::histogram!("seatwarden_job_lock_wait_seconds", catalog::JOB_LABEL => name)
            .record(waited.as_secs_f64());
    }
    let notifier = notify::Notifier::from_config(&running.config)
        .filter(|_| lost.is_none())
        .map(Arc::new);
    let end = match lock_failure {
        Some(failure) => JobEnd::Failed(failure),
        None => match caught(dispatch(&shared, &running, name, notifier.as_deref())).await {
            Ok(end) => end,
            Err(panicked) => {
                // A writing daemon's job runs no dry run: one begun since is
                // someone's by hand, running on.
                if runs_dry_runs(name) && running.settings.dry_run {
                    close_dry_run_cut_off(&shared, name, started).await;
                }
                JobEnd::Failed(panicked)
            }
        },
    };
    // The writing is done: alerts and mail delivery (up to minutes against a relay
    // that does not answer) must not keep the next sweep waiting.
    drop(_writer_lock);
    drop(_writer);
    let finished = shared.now();
    let failures = match shared.failures.lock() {
        Ok(mut failures) => {
            let count = failures.entry(name).or_default();
            *count = end.failures_after(*count);
            *count
        }
        Err(_) => 0,
    };
    if let Some(notifier) = &notifier {
        alert_after_job(&shared, notifier, name, failures, &end, finished).await;
    }
    record_job_end(&shared, name, finished, &end).await;
    // Whatever this job queued goes out now, from the mail job's own task: a relay
    // that does not answer (minutes of timeouts and retries) then delays only mail,
    // not this job's next runs (the every-minute deprovision retry above all). A mail
    // job already running may have passed it: it runs once more when it ends.
    // While stopping no job starts (but a mail run asked for before the stop), so
    // it goes out here, within the stop grace.
    if let Some(notifier) = notifier.as_deref().filter(|_| name != MAIL)
        && !shared.trigger_or_follow(MAIL)
        && shared.stopping.is_stopped()
    {
        match shared.open_store() {
            Ok(mut store) => drop(notifier.deliver(&mut store, finished).await),
            Err(e) => tracing::error!(error = %e, "cannot open the state database for email"),
        }
    }
    metrics::histogram!("seatwarden_job_duration_seconds", catalog::JOB_LABEL => name)
        .record(timer.elapsed().as_secs_f64());
    metrics::counter!("seatwarden_job_runs_total", catalog::JOB_LABEL => name, "status" => end.status().as_str())
        .increment(1);
    match &end {
        JobEnd::Succeeded => {
            metrics::gauge!("seatwarden_last_success_timestamp_seconds", catalog::JOB_LABEL => name)
                .set(finished.timestamp() as f64);
            tracing::info!(job = name, "job finished");
        }
        JobEnd::Unreached => {
            metrics::gauge!("seatwarden_last_success_timestamp_seconds", catalog::JOB_LABEL => name)
                .set(finished.timestamp() as f64);
            tracing::info!(job = name, "{}", unreached_log(name));
        }
        JobEnd::Stopped(why) => tracing::warn!(job = name, reason = %why, "job stopped"),
        JobEnd::Failed(error) => tracing::error!(job = name, error = %error, "job failed"),
    }
}

/// The alerts after `name` ended as `end` at `finished`, its `failures` in a row
/// counted. From the blocking pool, as [`write_job_record`] says why: the mail
/// and digest jobs take no writer lock, and end while a reconcile may hold the
/// write lock storing its snapshot, or a prune running its VACUUM.
async fn alert_after_job(
    shared: &Arc<Shared>,
    notifier: &Arc<notify::Notifier>,
    name: &'static str,
    failures: u32,
    end: &JobEnd,
    finished: DateTime<Utc>,
) {
    let (shared, notifier, end) = (Arc::clone(shared), Arc::clone(notifier), end.clone());
    let alerted = tokio::task::spawn_blocking(move || {
        alert_after_job_now(&shared, &notifier, name, failures, &end, finished)
    });
    if let Err(e) = alerted.await {
        tracing::error!(job = name, error = %e, "the alerts after the job ended abnormally");
    }
}

/// [`alert_after_job`] on this thread.
fn alert_after_job_now(
    shared: &Shared,
    notifier: &notify::Notifier,
    name: &'static str,
    failures: u32,
    end: &JobEnd,
    finished: DateTime<Utc>,
) {
    match shared.open_store() {
        Ok(mut store) => {
            match end {
                JobEnd::Succeeded => notifier.after_job(&mut store, name, 0, None, finished),
                JobEnd::Failed(error) => {
                    notifier.after_job(&mut store, name, failures, Some(error), finished)
                }
                JobEnd::Stopped(_) | JobEnd::Unreached => {}
            }
            // Overdue deprovisions alert from the ledger after every job, failed
            // ones included: a sweep that cannot reach the workspace is exactly
            // when they must not go unreported.
            notifier.after_deprovisioning(&mut store, finished);
            // Resolutions held while their condition might come back are
            // sent once due, whether or not a job sees it again.
            notifier.resolve_due(&mut store, finished);
        }
        Err(e) => tracing::error!(error = %e, "cannot open the state database for email"),
    }
}

/// The work of the job `name`, its locks taken.
async fn dispatch(
    shared: &Arc<Shared>,
    running: &Arc<Running>,
    name: &'static str,
    notifier: Option<&notify::Notifier>,
) -> JobEnd {
    match name {
        RECONCILE => reconcile_job(shared, running, notifier).await,
        SWEEP => JobEnd::of_pass(
            sweep_job(shared, running, true, notifier).await,
            &running.config.state.path,
            &running.config.admin_command(),
        ),
        RETRY => JobEnd::of_pass(
            sweep_job(shared, running, false, notifier).await,
            &running.config.state.path,
            &running.config.admin_command(),
        ),
        PRUNE => {
            let running = Arc::clone(running);
            off_the_workers(shared, move |shared| prune_job(shared, &running)).await
        }
        DIGEST => {
            let notifier = notify::Notifier::from_config(&running.config);
            off_the_workers(shared, move |shared| digest_job(shared, notifier.as_ref())).await
        }
        MAIL => mail_job(shared, notifier).await,
        #[cfg(test)]
        tests::PANICKING => tests::panicking_job().await,
        #[cfg(test)]
        tests::DELETING_ITS_DATABASE => tests::deleting_its_database(shared),
        #[cfg(test)]
        tests::PANICKING_IN_A_DRY_RUN => tests::panicking_in_a_dry_run(shared).await,
        #[cfg(test)]
        tests::PANICKING_BESIDE_A_DRY_RUN_BY_HAND => {
            tests::panicking_beside_a_dry_run_by_hand(shared)
        }
        _ => JobEnd::Succeeded,
    }
}

/// A job that panics (a bug, here or in a library) ends as a failure like any
/// other: recorded in `jobs` with the panic's message (the `Err` here), counted
/// towards repeated failures and alerted on. Unwound past `run_job` instead, it
/// would leave its row "running" until its next run, count nothing, and send
/// nothing it queued. What it held unwinds with it: an open transaction rolls
/// back, and the daemon's locks read through a poisoned mutex.
async fn caught(job: impl std::future::Future<Output = JobEnd>) -> Result<JobEnd, String> {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(job)
        .catch_unwind()
        .await
        .map_err(|payload| {
            format!(
                "the job panicked, a bug in seatwarden (please report it with the log around \
                 this line): {}",
                crate::logging::panic_message(payload.as_ref())
            )
        })
}

/// Whether the job `name` runs the dry runs of a daemon in `schedule.dry_run`.
fn runs_dry_runs(name: &str) -> bool {
    match name {
        RECONCILE => true,
        #[cfg(test)]
        tests::PANICKING_IN_A_DRY_RUN | tests::PANICKING_BESIDE_A_DRY_RUN_BY_HAND => true,
        _ => false,
    }
}

/// Marks failed the dry run a job begun at `started` was in when it panicked.
/// A dry run holds no writer lock, so no writer closes one cut off, and the
/// daemon's start closes it only while its job is still marked running, which
/// a panic caught ([`caught`]) no longer leaves: it would read as under way for
/// good, and never be pruned. From the blocking pool ([`write_job_record`]).
async fn close_dry_run_cut_off(shared: &Arc<Shared>, name: &'static str, started: DateTime<Utc>) {
    let now = shared.now();
    let closed = write_job_record(shared, move |db| db.close_interrupted_dry_run(started, now));
    match closed.await {
        Ok(Some(run)) => tracing::warn!(
            job = name,
            run,
            "the dry run the job panicked in marked failed (interrupted)"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(
            job = name,
            error = %e,
            "cannot mark failed the dry run the job panicked in"
        ),
    }
}

/// How long a job may wait for the writer locks before its start is a warning.
/// A sweep held off this long (behind a long reconcile, or a command run by
/// hand) deactivates the leavers it finds that much later, and their SLA clocks
/// start only when it reads the directory: nothing else tells of the wait.
pub const LONG_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Whether the job `name` writes, and so waits for the writer locks: mail and the
/// digest only read and queue ([`take_writer_locks`]).
pub fn takes_writer_lock(name: &str) -> bool {
    !matches!(name, DIGEST | MAIL)
}

/// The log line of `name` starting after `waited` for the writer locks.
fn log_start(name: &'static str, waited: Duration) {
    let waited_secs = waited.as_secs();
    if waited >= LONG_LOCK_WAIT {
        tracing::warn!(
            job = name,
            waited_secs,
            "job started after waiting {waited_secs}s for the writer lock, held by another \
             job (a long reconcile: see schedule.reconcile_max_duration) or a seatwarden \
             command run by hand"
        );
    } else if waited >= Duration::from_secs(1) {
        tracing::info!(
            job = name,
            waited_secs,
            "job started after waiting for the writer lock"
        );
    } else {
        tracing::info!(job = name, "job started");
    }
}

/// Records in `jobs` that `name` started at `started` ([`write_job_record`]).
async fn record_job_start(shared: &Arc<Shared>, name: &'static str, started: DateTime<Utc>) {
    let recorded = write_job_record(shared, move |db| db.job_started(name, started)).await;
    if let Err(e) = recorded {
        tracing::error!(job = name, error = %e, "cannot record the job start");
    }
}

/// Writes a job record on the daemon's own connection from the blocking pool:
/// the write waits up to the busy timeout while another job's long transaction
/// (a reconcile storing its snapshot, a prune's VACUUM, a backup) holds the
/// write lock, and on an async worker that wait would stall every task queued
/// there (`/healthz`, the listener, the other jobs' HTTP calls).
async fn write_job_record<T: Send + 'static>(
    shared: &Arc<Shared>,
    write: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || shared.with_db(write)).await {
        Ok(written) => written.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the write's task ended abnormally: {e}")),
    }
}

/// Records how `name` ended at `finished` in `jobs`, and a success also in
/// [`Shared::successes`] (with the time on tokio's clock). Off the async
/// workers, as [`write_job_record`] says why.
async fn record_job_end(
    shared: &Arc<Shared>,
    name: &'static str,
    finished: DateTime<Utc>,
    end: &JobEnd,
) {
    let (status, message) = (end.status(), end.message().map(str::to_owned));
    let recorded = write_job_record(shared, move |db| {
        db.job_finished(name, finished, status, message.as_deref())
    })
    .await;
    if let Err(e) = recorded {
        tracing::error!(job = name, error = %e, "cannot record the job end");
        return;
    }
    if end.status() == RunStatus::Succeeded
        && let Ok(mut successes) = shared.successes.lock()
    {
        successes.insert(name, (finished, tokio::time::Instant::now()));
    }
}

/// The locks `name` runs under, waiting for them: the daemon's own (one job
/// writes at a time) and the writer lock shared with commands run by hand. Mail
/// and the digest only read and queue, and take neither, so an alert is not stuck
/// behind a long reconcile. A writer lock that cannot be taken (a lock file a
/// root-run command left with the wrong owner) is the job's failure, returned:
/// counted, alerted on and visible in `status`, not a silent skip of every
/// writing job.
async fn take_writer_locks(
    shared: &Arc<Shared>,
    name: &'static str,
) -> (
    Option<tokio::sync::OwnedMutexGuard<()>>,
    Option<WriterLock>,
    Option<String>,
) {
    if !takes_writer_lock(name) {
        return (None, None, None);
    }
    // Recorded for `status` once the job has to wait, cleared when this returns,
    // or when the job gives up waiting (stopping: this future is dropped).
    let mut wait = LockWait::new(shared, name);
    // An owned guard: a borrowed one held across the job's awaits trips the
    // compiler's Send inference for the spawned future (rust-lang/rust#102211).
    let writer = match Arc::clone(&shared.writer).try_lock_owned() {
        Ok(writer) => writer,
        // Another of the daemon's jobs writes (a sweep behind a long reconcile).
        Err(_) => {
            wait.begin();
            Arc::clone(&shared.writer).lock_owned().await
        }
    };
    let database = shared.config().state.path.clone();
    let what = format!("the daemon's {name} job");
    let taken = WriterLock::acquire(&database, &what, |path, holder| {
        wait.begin();
        // The holder's clock: it wrote when it took the lock, on the system's.
        let now = Utc::now();
        tracing::info!(
            job = name,
            lock = %path.display(),
            // A log line: in UTC, as logs are.
            holder = holder.map_or_else(
                || "unknown".to_owned(),
                |holder| holder.describe(now, chrono_tz::UTC)
            ),
            "waiting for a seatwarden command run by hand to finish"
        );
    })
    .await;
    match taken {
        Ok(lock) => (Some(writer), Some(lock), None),
        Err(e) => (
            Some(writer),
            None,
            Some(format!("cannot take the writer lock: {e}")),
        ),
    }
}

/// A daemon job's wait for the writer locks, shown by `seatwarden status` (another
/// process, reading `daemon_state`: `lock_wait.<job>`, [`Store::set_lock_wait`])
/// from when the job has to wait until it has the locks or gives up (this drops).
/// Otherwise only the log line at its start and `seatwarden_job_lock_wait_seconds`
/// tell of the wait, both after it: an operator asking why a leaver is not disabled
/// yet would see the sweep's last run and nothing of the one held off.
struct LockWait {
    shared: Arc<Shared>,
    name: &'static str,
    waiting: bool,
}

impl LockWait {
    fn new(shared: &Arc<Shared>, name: &'static str) -> LockWait {
        LockWait {
            shared: Arc::clone(shared),
            name,
            waiting: false,
        }
    }

    /// The job has to wait, since now (a second call keeps the first time: the
    /// wait for the daemon's own lock and then for a command's run on).
    fn begin(&mut self) {
        if self.waiting {
            return;
        }
        self.waiting = true;
        let since = self.shared.now();
        self.shared
            .lock_waits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.name, since);
        write_lock_wait(&self.shared, self.name);
    }
}

impl Drop for LockWait {
    fn drop(&mut self) {
        if !self.waiting {
            return;
        }
        self.shared
            .lock_waits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(self.name);
        write_lock_wait(&self.shared, self.name);
    }
}

/// Writes `name`'s wait as [`Shared::lock_waits`] holds it to `daemon_state`, off
/// the async workers (a prune's VACUUM can hold the database for seconds). Read
/// under the daemon's database lock, so that of a start and an end of a wait
/// written in either order the last one written is the state now.
fn write_lock_wait(shared: &Arc<Shared>, name: &'static str) {
    let shared = Arc::clone(shared);
    let write = move || {
        let written = shared.with_db(|db| {
            let since = shared
                .lock_waits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(name)
                .copied();
            db.set_lock_wait(name, since)
        });
        if let Err(e) = written {
            tracing::warn!(
                job = name,
                error = %e,
                "cannot record in the state database whether the job waits for the writer \
                 lock: `{} status` may not show it right",
                shared.config().admin_command()
            );
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(write)),
        Err(_) => write(),
    }
}

/// The log line of a job that ended [`JobEnd::Unreached`]. The mail job runs
/// after every other job and mostly finds nothing to send: a line saying a relay
/// was not reached would read, once a minute, as an outage that is not there.
fn unreached_log(job: &str) -> &'static str {
    if job == MAIL {
        "job finished: no message was due (the outbox is empty, or each message waits \
         for its next attempt); its failures in a row stand"
    } else {
        "job finished without an answer from the workspace (nothing due could be read, \
         or nothing was due: the episodes wait for their next attempt); its failures in \
         a row stand"
    }
}

/// How a job ended, for its record in `jobs`, its metrics and the
/// repeated-failure alert.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JobEnd {
    Succeeded,
    /// Failed at nothing, but never reached what its failures are about: a sweep
    /// or retry pass that got no answer from the workspace (down, with nothing
    /// due), a mail job with nothing due (a relay that is down is only tried when
    /// a message's backoff is over). A success that says nothing about the
    /// workspace or the relay, so it neither ends the job's failures in a row nor
    /// resolves their alert.
    Unreached,
    /// The daemon was stopping: the job sent nothing more and left the rest for
    /// its next run. Not a failure: a restart during a reconcile must not count
    /// towards the repeated-failure alert, nor clear it.
    Stopped(String),
    Failed(String),
}

impl JobEnd {
    /// A job's end; a failure of the state database at `state` for a reason of
    /// its file or disk (full, read-only, damaged) says which file and what to
    /// do ([`crate::store::failure_hint`]), in the log, `status` and the
    /// repeated-failure alert alike, its commands spelled with `admin_command`
    /// (`report.admin_command`).
    fn of(result: Result<(), RunError>, state: &std::path::Path, admin_command: &str) -> JobEnd {
        match result {
            Ok(()) => JobEnd::Succeeded,
            Err(e @ (RunError::Stopped { .. } | RunError::StoppedReading)) => {
                JobEnd::Stopped(e.to_string())
            }
            Err(e) => JobEnd::Failed(
                match crate::store::failure_hint_of(&e, state, admin_command) {
                    Some(hint) => format!("{e}; {hint}"),
                    None => e.to_string(),
                },
            ),
        }
    }

    /// A sweep or retry pass's end.
    fn of_pass(
        result: Result<PassReach, RunError>,
        state: &std::path::Path,
        admin_command: &str,
    ) -> JobEnd {
        match result {
            Ok(PassReach::Served | PassReach::NothingToRetry) => JobEnd::Succeeded,
            Ok(PassReach::Unreached) => JobEnd::Unreached,
            Ok(PassReach::Refused(message)) => JobEnd::Failed(message),
            Err(e) => JobEnd::of(Err(e), state, admin_command),
        }
    }

    /// The mail job's end: failed when messages were due and none could be sent.
    fn of_delivery(delivered: notify::Delivered) -> JobEnd {
        match delivered {
            notify::Delivered::NothingDue => JobEnd::Unreached,
            notify::Delivered::Sent(_) => JobEnd::Succeeded,
            notify::Delivered::Failed(why) => JobEnd::Failed(why),
        }
    }

    /// The job's failures in a row after this end, `before` it.
    fn failures_after(&self, before: u32) -> u32 {
        match self {
            JobEnd::Succeeded => 0,
            JobEnd::Failed(_) => before.saturating_add(1),
            // Neither says anything about whether the job works.
            JobEnd::Stopped(_) | JobEnd::Unreached => before,
        }
    }

    fn status(&self) -> RunStatus {
        match self {
            JobEnd::Succeeded | JobEnd::Unreached => RunStatus::Succeeded,
            JobEnd::Stopped(_) => RunStatus::Stopped,
            JobEnd::Failed(_) => RunStatus::Failed,
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            JobEnd::Succeeded | JobEnd::Unreached => None,
            JobEnd::Stopped(message) | JobEnd::Failed(message) => Some(message),
        }
    }
}

/// The reconcile job, under `schedule.reconcile_max_duration` ([`time_limited`]),
/// its time counted from now, under the writer lock the sweeps wait for. A
/// reconcile it stopped is recorded `stopped` with the limit as its cause (the
/// run was cut short as SIGTERM cuts it), and the job `failed`: unlike a
/// restart, a reconcile that cannot finish within its limit never converges the
/// workspace, and each one counts towards the repeated-failure alert.
async fn reconcile_job(
    shared: &Shared,
    running: &Running,
    notifier: Option<&notify::Notifier>,
) -> JobEnd {
    let (stop, _limit) = time_limited(&shared.stopping, running.settings.reconcile_max_duration);
    match (
        JobEnd::of(
            reconcile_run(shared, running, notifier, stop.clone()).await,
            &running.config.state.path,
            &running.config.admin_command(),
        ),
        stop.cause(),
    ) {
        // Given up while reading, the run's error does not say why.
        (JobEnd::Stopped(message), Some(cause)) if !message.contains(&cause) => {
            JobEnd::Failed(format!("{cause}: {message}"))
        }
        (JobEnd::Stopped(message), Some(_)) => JobEnd::Failed(message),
        (end, _) => end,
    }
}

async fn reconcile_run(
    shared: &Shared,
    running: &Running,
    notifier: Option<&notify::Notifier>,
    stop: StopSignal,
) -> Result<(), RunError> {
    let config = &running.config;
    let store = shared.open_store()?;
    let options = run::RunOptions {
        stop,
        retention_as_of: retention_as_of(shared, config.delete_after()),
        ..run::RunOptions::default()
    };
    let mode = reconcile_mode(&running.settings);
    // The connectors are made here, not in the run, so that the retries of a
    // run that failed are counted too: a directory or workspace throttled or down
    // until the run gave up is what the counter is for.
    let client = ScimClient::new(config.scim_settings()?)?;
    let directory = run::directory_from_config(config);
    let outcome =
        run::execute_with_options(config, &directory, &client, store, mode, options).await;
    metrics::counter!("seatwarden_retries_total")
        .increment(client.stats().retries.saturating_add(directory.retries()));
    let outcome = outcome?;
    metrics::histogram!("seatwarden_run_duration_seconds")
        .record((outcome.report.finished_at - outcome.report.started_at).as_seconds_f64());
    // A rejected directory plans nothing: its zeros would clear every drift alert
    // just when nothing can be trusted. The gauges keep the last trusted counts.
    // The drift left after the run, not the drift it found and fixed: an alert on
    // stale access must clear once the leaver's deactivation is verified.
    if outcome.report.safety.source_fault.is_none() {
        drift_gauges(&outcome.report);
    }
    safety_gauges(&outcome.report);
    for action in &outcome.report.actions {
        metrics::counter!(
            "seatwarden_actions_total",
            "kind" => action.op.clone(),
            "outcome" => action.outcome.as_str()
        )
        .increment(1);
    }
    // Leavers the sweep did not reach first (blocked behind this run, or only
    // matched by it) are the slow ones: without them the histogram flatters.
    for latency in &outcome.deprovision_latencies {
        metrics::histogram!("seatwarden_deprovision_latency_seconds")
            .record(latency.as_seconds_f64());
    }
    let now = shared.now();
    let mut store = shared.open_store()?;
    if let Some(notifier) = notifier {
        notifier.after_reconcile(&mut store, &outcome.report, now);
    }
    // Snapshots are most of the database: keep only the newest few after every
    // run, so the file does not grow by a day of snapshots between daily prunes.
    // (Freed pages are reused by the next snapshot; `prune` vacuums daily.) Only
    // housekeeping: a failure here does not fail a reconcile that did its work.
    if let Err(e) = store.prune_snapshots(SNAPSHOTS_KEPT) {
        tracing::warn!(error = %e, "cannot prune old snapshots; the daily prune tries again");
    }
    Ok(())
}

/// The stop a reconcile runs under: the daemon's `stopping`, and with a `limit`
/// (`schedule.reconcile_max_duration`) also that time from now, after which the
/// run is stopped as SIGTERM stops it (a run still reading is given up, one
/// applying sends no further write, those sent finish and are journaled; the run
/// is recorded `stopped` with the limit as its cause, and the next reconcile plans
/// the rest), so that the sweeps waiting behind its writer lock run: a leaver
/// disabled after its directory snapshot is only deactivated by a sweep. The
/// watch ends when the returned guard drops.
fn time_limited(
    stopping: &StopSignal,
    limit: Option<Duration>,
) -> (StopSignal, Option<AbortOnDrop>) {
    let Some(limit) = limit else {
        return (stopping.clone(), None);
    };
    let stop = StopSignal::new();
    let watch = {
        let (stopping, stop) = (stopping.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stopping.stopped() => stop.stop(),
                () = tokio::time::sleep(limit) => {
                    let cause = over_time_cause(limit);
                    tracing::warn!(
                        job = RECONCILE,
                        limit = %spoken_duration(limit),
                        "{cause}: stopping it as SIGTERM would (no further write; those sent \
                         finish and are journaled; the next reconcile plans the rest)"
                    );
                    stop.stop_for(cause);
                }
            }
        })
    };
    (stop, Some(AbortOnDrop(watch)))
}

/// Why a reconcile past `limit` was stopped, as its run and job record it.
fn over_time_cause(limit: Duration) -> String {
    format!(
        "the reconcile ran longer than schedule.reconcile_max_duration ({}), which lets \
         the deprovisioning sweeps waiting behind it run",
        spoken_duration(limit)
    )
}

/// `d` as a configuration would write it: `2h`, `1h30m`, `45s`.
fn spoken_duration(d: Duration) -> String {
    crate::config::span(chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `seatwarden_drift_items`: the drift `report`'s reconcile left.
fn drift_gauges(report: &crate::report::Report) {
    for (kind, count) in crate::report::count_by_kind_of(&crate::report::unfixed_drift(report)) {
        metrics::gauge!("seatwarden_drift_items", "kind" => kind.as_str()).set(count as f64);
    }
}

/// `seatwarden_safety_finding`: the reconcile's safety findings, 1 or 0, to alert
/// on (the circuit breaker has its own gauge).
fn safety_gauges(report: &crate::report::Report) {
    let safety = &report.safety;
    for (finding, found) in [
        ("source_fault", safety.source_fault.is_some()),
        ("workspace_listing_short", safety.workspace_listing_short),
        ("allow_over_threshold", safety.allow_over_threshold),
    ] {
        metrics::gauge!("seatwarden_safety_finding", "finding" => finding)
            .set(f64::from(u8::from(found)));
    }
    // A rejected directory plans nothing, so its plan lists no protected
    // account either: left as the last trusted reconcile told them, as the
    // drift gauges are, or their alerts would resolve for the outage and fire
    // again after it, with nothing settled. An incomplete directory read or a
    // short workspace listing lists only whom it shows: it raises them, and
    // lowers none.
    if safety.source_fault.is_none() {
        plan_finding_gauges(report, read_both_whole(safety));
    }
    // It keeps nothing: the person it was meant for loses access. Left as it
    // was by a run whose reads could not tell: 0 from it, the Prometheus alert
    // would resolve while the directory is down, and fire again after.
    if !safety.exceptions_naming_nobody_unknown {
        exceptions_naming_nobody_gauge(report);
    }
}

/// Whether a reconcile read the directory and the workspace whole: one that
/// did not (its directory read incomplete, its workspace listing short) does
/// not show every person or every account, so the findings only a plan tells
/// may lack some (a protected leaver whose account the listing left out).
fn read_both_whole(safety: &crate::report::SafetyReport) -> bool {
    !safety.directory_incomplete && !safety.workspace_listing_short
}

/// The safety findings only a plan tells, as `report`'s plan told them: each
/// found set to 1, and, `lower`, each not found to 0 (not from reads not
/// whole, [`read_both_whole`]: a protected leaver they leave out is still one).
fn plan_finding_gauges(report: &crate::report::Report, lower: bool) {
    let safety = &report.safety;
    set_plan_finding_gauges(
        !safety.protected_by_person.is_empty(),
        !safety.protected_leavers.is_empty(),
        lower,
    );
}

/// [`plan_finding_gauges`] from what was found: each found set to 1, and,
/// `lower`, each not found to 0.
fn set_plan_finding_gauges(protected_by_person: bool, protected_leavers: bool, lower: bool) {
    for (finding, found) in [
        // Accounts nothing deprovisions, renames or regroups, only because their
        // person is protected: worth an alert until someone settles each.
        ("protected_by_person", protected_by_person),
        // Someone who left keeps access through an account protected for good:
        // nothing seatwarden does ends it, and the sweep, which ends a protected
        // person's episode, raises no overdue for it.
        ("protected_leavers", protected_leavers),
    ] {
        if found || lower {
            metrics::gauge!("seatwarden_safety_finding", "finding" => finding)
                .set(f64::from(u8::from(found)));
        }
    }
}

/// `seatwarden_safety_finding{finding="exceptions_naming_nobody"}` as `report`
/// tells it.
fn exceptions_naming_nobody_gauge(report: &crate::report::Report) {
    let found = !report.safety.exceptions_naming_nobody.is_empty();
    metrics::gauge!("seatwarden_safety_finding", "finding" => "exceptions_naming_nobody")
        .set(f64::from(u8::from(found)));
}

/// The reconcile gauges as the last reconciles stored them, at start: absent
/// until the next reconcile ends (up to an interval after a restart), they
/// resolved every alert on them at each restart, which fired again later.
fn restore_reconcile_gauges(db: &Store, settings: &DaemonSettings) {
    let kind = reconcile_mode(settings).run_kind();
    let parsed = |read: Result<Option<String>, StoreError>| match read {
        Ok(Some(json)) => match serde_json::from_str::<crate::report::Report>(&json) {
            Ok(report) => Some(report),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the latest reconcile's report; its gauges wait for the next reconcile");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the latest reconcile's report; its gauges wait for the next reconcile");
            None
        }
    };
    let report = |trusted| parsed(db.latest_reconcile_report(kind, trusted));
    // From reads not whole ([`read_both_whole`]), the plan's findings only
    // raise: first as the newest reconcile that read both sides whole left
    // them, then raised by every reconcile since (not the newest alone: one
    // that listed a protected leaver the next did not show raised the running
    // daemon's gauge for good), as the running daemon keeps them.
    let plan_findings = |report: &crate::report::Report| {
        if !read_both_whole(&report.safety) {
            if let Some(whole) = parsed(db.latest_reconcile_report_read_whole(kind)) {
                plan_finding_gauges(&whole, true);
            }
            match db.incomplete_reads_listed_protected(kind) {
                Ok((by_person, leavers)) => set_plan_finding_gauges(by_person, leavers, false),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot read what the reconciles since the last whole reads listed as \
                     protected; the newest one's findings stand"
                ),
            }
        }
        plan_finding_gauges(report, read_both_whole(&report.safety));
    };
    if let Some(report) = report(false) {
        safety_gauges(&report);
        // Not told by the newest (its reads were not whole): as the last that
        // could tell left it, as the running daemon keeps it.
        if report.safety.exceptions_naming_nobody_unknown
            && let Some(told) = parsed(db.latest_report_telling_exceptions(kind))
        {
            exceptions_naming_nobody_gauge(&told);
        }
        // The newest is the trusted one unless it rejected its directory.
        if report.safety.source_fault.is_none() {
            drift_gauges(&report);
            plan_findings(&report);
            return;
        }
    }
    if let Some(report) = report(true) {
        drift_gauges(&report);
        plan_findings(&report);
    }
}

/// How far a sweep or retry pass got with the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PassReach {
    /// The workspace served at least one request.
    Served,
    /// Nothing was served, nor refused: down, or nothing asked ([`JobEnd::Unreached`]).
    Unreached,
    /// A retry pass with nothing to retry: no episode open (with an account), no
    /// action in flight, so nothing was asked ([`crate::sweep::SweepOutcome::idle`]).
    /// The job did all it had to: a success, which ends its failures in a row.
    NothingToRetry,
    /// Nothing was served and the token was refused (401/403): a configuration
    /// fault no later pass can get past, so the pass fails, with this message.
    Refused(String),
}

async fn sweep_job(
    shared: &Shared,
    running: &Running,
    read_directory: bool,
    notifier: Option<&notify::Notifier>,
) -> Result<PassReach, RunError> {
    let config = &running.config;
    let settings = &running.settings;
    let mut opened = shared.open_store()?;
    let client = ScimClient::new(config.scim_settings()?)?;
    run::same_workspace(&mut opened, config, &client, false, shared.now())?;
    let store = Arc::new(Mutex::new(opened));
    // The sweep discovers the workspace itself, once the directory is read and
    // its leavers are recorded: a workspace that is down must not delay that.
    let now = shared.now();
    // As a reconcile: after SIGTERM no further deactivation is sent; those not
    // sent stay open in the ledger ("not sent"), and the retry job sends them.
    let stop = shared.stopping.clone();
    let directory = config.sweep_directory();
    let sla = chrono_sla(settings);
    let (outcome, unsent) = if read_directory {
        let sweeping = sweep::sweep(config, &directory, &client, &store, now, sla);
        apply::until_stopped(stop, sweeping).await
    } else {
        // The directory's changes only when an attempt is due (see `sweep::retry`).
        let retrying = sweep::retry(config, &directory, &client, &store, now, sla);
        apply::until_stopped(stop, retrying).await
    };
    let directory_retries = directory.retries();
    // Counted whether the pass succeeded or not, the directory's with the
    // workspace's: a read throttled until it failed is what the counter is for.
    metrics::counter!("seatwarden_retries_total")
        .increment(client.stats().retries.saturating_add(directory_retries));
    let outcome = outcome?;
    // What the pass did is counted and alerted on before a failure is returned.
    for latency in &outcome.latencies {
        metrics::histogram!("seatwarden_deprovision_latency_seconds")
            .record(latency.as_seconds_f64());
    }
    // Most leavers are deactivated here, not by a reconcile: count them alike.
    if let (Some(run), Ok(store)) = (outcome.run_id, store.lock()) {
        for row in store.journal(run)? {
            metrics::counter!(
                "seatwarden_actions_total",
                "kind" => row.action.kind.name(),
                "outcome" => sweep::metric_outcome(&row)
            )
            .increment(1);
        }
    }
    if let (Some(notifier), Ok(mut store)) = (notifier, store.lock()) {
        notifier.after_sweep(&mut store, &outcome, now);
    }
    if outcome.detected + outcome.enforced + outcome.failed + outcome.not_sent + outcome.held > 0 {
        tracing::info!(
            detected = outcome.detected,
            cancelled = outcome.cancelled,
            ended_look_alike = outcome.ended_look_alike,
            enforced = outcome.enforced,
            already_done = outcome.already_done,
            failed = outcome.failed,
            not_sent = outcome.not_sent,
            held = outcome.held,
            excepted = outcome.excepted,
            "deprovisioning pass"
        );
    }
    // A 401 or 403 is an answer, and the outage rule counts it so (the workspace is
    // up), but it proves nothing works: a revoked token must neither end the job's
    // failures in a row nor pass for a success while nothing is due.
    // A retry pass that asked nothing because nothing is open is done; one whose
    // episodes wait for their next attempt (a back-off during an outage) reached
    // nothing, and its failures in a row stand as the last attempt left them.
    let nothing_open = outcome.idle == Some(0);
    let checked = outcome.checked();
    // Cut short by the stop, the pass is recorded as a stopped reconcile is (its
    // run is, by the sweep): not a success, nor a failure. A pass that failed
    // besides says so.
    if unsent > 0 && checked.is_ok() {
        return Err(RunError::Stopped {
            unsent,
            run: run::StoppedRun::Deprovisioning,
            cause: None,
        });
    }
    if client.served_answers() > 0 {
        return checked.map(|_| PassReach::Served);
    }
    if nothing_open {
        return checked.map(|_| PassReach::NothingToRetry);
    }
    if let Some(refusal) = client.auth_refusal() {
        let mut message = if client.auth_refused_in_front() {
            format!(
                "something in front of the workspace refused seatwarden's requests and \
                 nothing was served: {refusal}; {}",
                crate::workspace::CHECK_IN_FRONT
            )
        } else {
            format!(
                "the workspace refused seatwarden's token and served nothing: {refusal}; {}",
                crate::workspace::CHECK_TOKEN
            )
        };
        if let Err(e) = checked {
            message.push_str(&format!("; {e}"));
        }
        return Ok(PassReach::Refused(message));
    }
    checked.map(|_| PassReach::Unreached)
}

/// Delivers the outbox: failed when messages were due and none could be sent,
/// so the job's failures, their alert and its metrics show a relay that is down;
/// the minutes between (no message due during its backoff) do not end the streak.
/// After a successful reload ([`Shared::release_mail`]) it first makes the
/// messages waiting for their next attempt due, as `send-mail` does: a fixed
/// login is tried at once, not when the refused one's backoff ends.
async fn mail_job(shared: &Shared, notifier: Option<&notify::Notifier>) -> JobEnd {
    let release = shared.release_mail.swap(false, Ordering::SeqCst);
    // A reload sets the flag after it swapped the configuration: the notifier
    // this run was started with, made before the flag was taken, may hold the
    // login (or relay) the reload replaced, and would put the released messages
    // off again for the refused one's backoff.
    let reloaded;
    let notifier = if release {
        reloaded = notify::Notifier::from_config(&shared.config())
            .filter(|_| shared.database_lost().is_none());
        reloaded.as_ref()
    } else {
        notifier
    };
    let Some(notifier) = notifier else {
        return JobEnd::Succeeded;
    };
    match shared.open_store() {
        Ok(mut store) => {
            let now = shared.now();
            if release {
                match store.release_waiting(now) {
                    Ok(0) => {}
                    Ok(waiting) => tracing::info!(
                        messages = waiting,
                        "configuration reloaded: the messages waiting for their next delivery \
                         attempt are due now"
                    ),
                    Err(e) => {
                        // Tried again by the next mail job.
                        shared.release_mail.store(true, Ordering::SeqCst);
                        tracing::warn!(error = %e, "cannot make the waiting messages due after the reload");
                    }
                }
            }
            JobEnd::of_delivery(notifier.deliver(&mut store, now).await)
        }
        Err(e) => {
            if release {
                shared.release_mail.store(true, Ordering::SeqCst);
            }
            JobEnd::Failed(e.to_string())
        }
    }
}

/// Runs a job that is only database work (a prune's VACUUM, a digest parsing a
/// week of reports) on the blocking pool: on the async workers it would stall
/// `/healthz`, `/metrics` and the scheduler loop, which share them (two on two cores).
async fn off_the_workers(
    shared: &Arc<Shared>,
    job: impl FnOnce(&Shared) -> Result<(), RunError> + Send + 'static,
) -> JobEnd {
    let config = shared.config();
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || job(&shared)).await {
        Ok(result) => JobEnd::of(result, &config.state.path, &config.admin_command()),
        Err(e) => JobEnd::Failed(format!("the job's task ended abnormally: {e}")),
    }
}

fn prune_job(shared: &Shared, running: &Running) -> Result<(), RunError> {
    let settings = &running.settings;
    let retention = chrono::Duration::from_std(settings.retention).unwrap_or(chrono::Duration::MAX);
    let (wall_started, at) = shared.wall_started;
    let as_of = match pruning_as_of(shared.now(), wall_started, at.elapsed()) {
        Ok(now) => now,
        Err((seen, ahead)) => {
            tracing::warn!(
                clock = %schedule::log_time(shared.now()),
                pruning_as_of = %schedule::log_time(seen),
                "the wall clock moved {} further than this daemon has run since it started: \
                 a clock set ahead would prune history still within schedule.retention, so \
                 the prune counts the retention from the time the daemon has seen pass; \
                 if the clock is right (the machine was suspended), a restart lets the \
                 prune catch up",
                crate::config::span(ahead)
            );
            seen
        }
    };
    let before = as_of - retention;
    let mut store = shared.open_store()?;
    let pruned = store.prune_before(before)?;
    let snapshots = store.prune_snapshots(SNAPSHOTS_KEPT)?;
    if pruned.total() + snapshots > 0 {
        store.vacuum()?;
    }
    tracing::info!(
        runs = pruned.runs,
        episodes = pruned.episodes,
        messages = pruned.messages,
        snapshots,
        "pruned"
    );
    Ok(())
}

/// The time a prune counts `schedule.retention` back from: `now`, unless the wall
/// clock has moved more than a day further since the daemon started at
/// `wall_started` than the monotonic clock (`running_for`): a clock stepped years
/// ahead (a bad time server, a restored VM) would otherwise have the prune delete
/// every run, report and closed episode at once, and the clock set right again
/// brings none back. Then `Err` with the time the daemon has seen pass (its start
/// on the wall clock, plus how long it has run, plus that day) and how far the
/// clock moved beyond how long the daemon has run. A clock already wrong when the daemon started is not
/// seen so (it looks like downtime).
fn pruning_as_of(
    now: DateTime<Utc>,
    wall_started: DateTime<Utc>,
    running_for: Duration,
) -> Result<DateTime<Utc>, (DateTime<Utc>, chrono::Duration)> {
    let running_for = chrono::Duration::from_std(running_for).unwrap_or(chrono::Duration::MAX);
    let Some(passed) = wall_started.checked_add_signed(running_for) else {
        return Ok(now);
    };
    match passed.checked_add_signed(chrono::Duration::days(1)) {
        Some(seen) if now > seen => Err((seen, now - passed)),
        _ => Ok(now),
    }
}

/// The latest time a reconcile judges the retention clocks of
/// `deprovision.delete_after` at ([`run::RunOptions::retention_as_of`]): `None`
/// while the wall clock agrees with the time this daemon has seen pass, else
/// that time, as for the prune ([`pruning_as_of`]). Stepped weeks ahead, the clock
/// would have deactivated accounts deleted before their retention ran out; a
/// deletion is not undone by setting the clock right. Only with a retention
/// period (`delete_after`): nothing else is judged by it.
fn retention_as_of(shared: &Shared, delete_after: Option<Duration>) -> Option<DateTime<Utc>> {
    delete_after.filter(|period| !period.is_zero())?;
    let now = shared.now();
    let (wall_started, at) = shared.wall_started;
    let (seen, ahead) = pruning_as_of(now, wall_started, at.elapsed()).err()?;
    tracing::warn!(
        clock = %schedule::log_time(now),
        retention_as_of = %schedule::log_time(seen),
        "the wall clock moved {} further than this daemon has run since it started: \
         deactivated accounts are deleted (deprovision.delete_after) only once their \
         retention has run out by the time the daemon has seen pass; if the clock is \
         right (the machine was suspended), a restart lets the deletions catch up",
        crate::config::span(ahead)
    );
    Some(seen)
}

/// The key in `daemon_state` of the instant the last digest covered up to.
const DIGEST_COVERED_UNTIL: &str = "digest_covered_until";
/// The key in `daemon_state` of the instant the last digest's period started:
/// with [`DIGEST_COVERED_UNTIL`], the period the next digest's trend compares with.
const DIGEST_COVERED_FROM: &str = "digest_covered_from";

/// The digest covers the time since the last one ended (a day the first time; at
/// most a week, after a long stop). It starts where the last one's period ended,
/// not when its job finished: a run that finished while a digest was being built
/// would otherwise be in neither.
fn digest_job(shared: &Shared, notifier: Option<&notify::Notifier>) -> Result<(), RunError> {
    let Some(notifier) = notifier else {
        tracing::warn!("schedule.digest is set but [report.email] is not: no digest sent");
        return Ok(());
    };
    let now = shared.now();
    let mut store = shared.open_store()?;
    let (period, covered) = digest_periods(&store, now)?;
    // One transaction: a digest queued without its period advanced would be
    // followed by a second one covering the same period.
    let state = digest_state(now, period);
    let state: Vec<(&str, &str)> = state.iter().map(|(k, v)| (*k, v.as_str())).collect();
    notifier
        .queue_digest(&mut store, now, period, covered, &state)
        .map_err(|e| RunError::Notify(format!("building the digest: {e}")))?;
    Ok(())
}

/// The period a digest built at `now` covers (the time since the last one
/// ended), and what the last one covered, which its trend compares with: as the
/// last digest recorded it ([`digest_state`]), `None` before any did.
fn digest_periods(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<(chrono::Duration, Option<crate::report::digest::Span>), RunError> {
    let instant = |key| -> Result<Option<DateTime<Utc>>, RunError> {
        Ok(store
            .state_value(key)?
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|at| at.with_timezone(&Utc)))
    };
    let covered_until = instant(DIGEST_COVERED_UNTIL)?;
    // Recorded since this key was; before, the trend takes the period of this
    // one's length just before it.
    let covered = instant(DIGEST_COVERED_FROM)?
        .zip(covered_until)
        .map(|(start, end)| crate::report::digest::Span { start, end });
    // Before this key existed: the last digest job's success.
    let last = match covered_until {
        Some(at) => Some(at),
        None => store
            .jobs()?
            .into_iter()
            .find(|j| j.name == DIGEST)
            .and_then(|j| j.last_success_at),
    };
    Ok((digest_period(last, now), covered))
}

/// The `daemon_state` a digest built at `now` over `period` records with its
/// message: the span it covered, for the next one's period and trend.
fn digest_state(now: DateTime<Utc>, period: chrono::Duration) -> [(&'static str, String); 2] {
    [
        (DIGEST_COVERED_FROM, (now - period).to_rfc3339()),
        (DIGEST_COVERED_UNTIL, now.to_rfc3339()),
    ]
}

/// The period a digest built at `now` covers after one that covered up to `last`:
/// exactly the time since, so digests scheduled more often than hourly do not
/// count the same runs twice (at least a minute, at most a week). A `last` more
/// than an hour ahead of the clock was recorded by a clock since stepped back:
/// the time since is not known, and a day is taken, as for a first digest (at a
/// minute the digest of the day left out every run of it).
fn digest_period(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> chrono::Duration {
    last.filter(|at| *at - now <= crate::circuit::CLOCK_STEP_MARGIN)
        .map(|at| now - at)
        .unwrap_or(chrono::Duration::days(1))
        .clamp(chrono::Duration::minutes(1), chrono::Duration::days(7))
}

fn chrono_sla(settings: &DaemonSettings) -> chrono::Duration {
    chrono::Duration::from_std(settings.sla).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The running daemon's PROTECTED LEAVERS gauge, reconcile after reconcile:
    /// one whose directory read was incomplete (it does not show who was
    /// deleted), or whose workspace listing ended short (it does not show
    /// every account), raises it and never lowers it; whole reads do both. The
    /// restart's restore is tested in `review_s57_s56diff`; this is the path
    /// every reconcile of a running daemon takes.
    #[test]
    fn an_incomplete_directory_read_raises_the_protected_leaver_gauge_and_never_lowers_it() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let read = |leavers: usize, directory_incomplete: bool, workspace_listing_short: bool| {
            let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
                .unwrap()
                .to_utc();
            let leaver = |n: usize| crate::model::ProtectedLeaver {
                account_id: format!("w{n}"),
                user_name: format!("admin{n}@example.com"),
                identity_id: format!("00u{n}"),
                why: "identity is deleted from the directory".into(),
            };
            crate::report::Report {
                schema_version: crate::report::SCHEMA_VERSION,
                run_id: 7,
                mode: "reconcile".into(),
                started_at: at,
                finished_at: at,
                directory: "file directory.json".into(),
                workspace: "https://ws.example/scim/v2".into(),
                summary: Default::default(),
                drift: Vec::new(),
                actions: Vec::new(),
                safety: crate::report::SafetyReport {
                    protected_leavers: (0..leavers).map(leaver).collect(),
                    directory_incomplete,
                    workspace_listing_short,
                    ..Default::default()
                },
            }
        };
        let gauge = || {
            let rendered = handle.render();
            rendered
                .lines()
                .find_map(|line| {
                    line.strip_prefix("seatwarden_safety_finding{finding=\"protected_leavers\"} ")
                })
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no protected_leavers gauge in {rendered}"))
        };
        let report =
            |leavers: usize, directory_incomplete: bool| read(leavers, directory_incomplete, false);
        metrics::with_local_recorder(&recorder, || {
            safety_gauges(&report(1, false));
            assert_eq!(gauge(), "1");
            safety_gauges(&report(0, true));
            assert_eq!(gauge(), "1", "lowered by an incomplete read");
            safety_gauges(&report(0, false));
            assert_eq!(gauge(), "0");
            safety_gauges(&report(1, true));
            assert_eq!(gauge(), "1", "not raised by an incomplete read");
            // The accounts a short workspace listing left out are not shown.
            safety_gauges(&read(0, false, true));
            assert_eq!(gauge(), "1", "lowered by a short workspace listing");
            safety_gauges(&read(0, false, false));
            assert_eq!(gauge(), "0");
            safety_gauges(&read(1, false, true));
            assert_eq!(gauge(), "1", "not raised by a short workspace listing");
        });
    }

    /// The limit in a stopped run's cause reads as the configuration writes it.
    #[test]
    fn a_time_limit_is_spoken_as_configured() {
        for (secs, millis, spoken) in [(7_200, 0, "2h"), (5_400, 0, "1h30m"), (45, 0, "45s")] {
            let limit = Duration::from_secs(secs) + Duration::from_millis(millis);
            assert_eq!(spoken_duration(limit), spoken);
        }
        assert!(
            over_time_cause(Duration::from_secs(7_200))
                .contains("schedule.reconcile_max_duration (2h)")
        );
    }

    /// Two spellings of one database, through a symlink to the file or to its
    /// folder, share one instance lock: a second daemon on it is refused.
    #[cfg(unix)]
    #[test]
    fn a_second_daemon_through_a_symlink_is_refused() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let database = real.join("state.db");
        std::fs::write(&database, b"").unwrap();
        let linked_folder = dir.path().join("linked-folder");
        symlink(&real, &linked_folder).unwrap();
        let linked_file = dir.path().join("linked.db");
        symlink(&database, &linked_file).unwrap();

        let mut spellings = vec![
            (database.clone(), linked_file.clone()),
            (linked_folder.join("state.db"), database.clone()),
            (linked_file.clone(), linked_folder.join("state.db")),
        ];
        // Root takes no lock through a linked database file (the store's
        // root rule), only through a linked folder.
        if crate::store::runs_as_root() {
            let refused = InstanceLock::acquire(&linked_file).unwrap_err();
            assert!(
                refused.to_string().contains("refusing to open"),
                "{refused}"
            );
            spellings = vec![
                (database.clone(), linked_folder.join("state.db")),
                (linked_folder.join("state.db"), database.clone()),
            ];
        }
        for (first, second) in spellings {
            let held = InstanceLock::acquire(&first).unwrap();
            assert!(is_running(&second).unwrap(), "{second:?} after {first:?}");
            let refused = InstanceLock::acquire(&second).unwrap_err();
            assert!(
                matches!(refused, DaemonError::AlreadyRunning { .. }),
                "{refused}"
            );
            drop(held);
        }
    }

    /// The state database is told apart from one deleted or replaced under the
    /// daemon by its inode, not its path.
    #[test]
    fn a_database_deleted_or_replaced_since_the_start_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        std::fs::write(&database, b"one").unwrap();
        let opened = DatabaseFile::of(&database).unwrap();
        assert_eq!(opened.lost_at(&database), None);
        std::fs::write(&database, b"written in place").unwrap();
        assert_eq!(opened.lost_at(&database), None, "the same file, written to");
        let backup = dir.path().join("backup.db");
        std::fs::write(&backup, b"two").unwrap();
        std::fs::rename(&backup, &database).unwrap();
        let replaced = opened.lost_at(&database).expect("replaced");
        assert!(
            replaced.contains("is another file than the one"),
            "{replaced}"
        );
        std::fs::remove_file(&database).unwrap();
        let gone = opened.lost_at(&database).expect("gone");
        assert!(gone.contains("is gone since the daemon started"), "{gone}");
    }

    /// A prune counts the retention from the wall clock, unless that clock moved
    /// more than a day further than the daemon has run since its start: stepped
    /// five years ahead after two days' running, the prune counts from the start
    /// plus those two days plus one (and deletes nothing younger than that less
    /// the retention); a clock that ran true, or a little ahead, is taken as is.
    #[test]
    fn a_clock_stepped_ahead_while_the_daemon_runs_does_not_age_the_history() {
        let started = DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc();
        let days = chrono::Duration::days;
        let two_days = std::time::Duration::from_secs(2 * 86_400);
        let now = started + days(2);
        assert_eq!(pruning_as_of(now, started, two_days), Ok(now));
        let a_little_ahead = now + chrono::Duration::hours(20);
        assert_eq!(
            pruning_as_of(a_little_ahead, started, two_days),
            Ok(a_little_ahead)
        );
        let years_ahead = now + days(5 * 365);
        assert_eq!(
            pruning_as_of(years_ahead, started, two_days),
            Err((started + days(3), days(5 * 365)))
        );
        // Stepped back: the wall clock is what it is.
        let behind = started - days(1);
        assert_eq!(pruning_as_of(behind, started, two_days), Ok(behind));
    }

    /// A clock that reads what a test sets.
    struct SetClock(Mutex<DateTime<Utc>>);

    impl Clock for SetClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn a_reload_logs_each_exception_added_moved_or_taken_out() {
        use crate::config::ExceptionConfig;
        let dir = tempfile::tempdir().unwrap();
        let shared = shared_in(dir.path(), Arc::new(SetClock(Mutex::new(Utc::now()))));
        let entry = |user_name: &str, until: &str, reason: &str| ExceptionConfig {
            user_name: user_name.to_owned(),
            until: until.to_owned(),
            reason: reason.to_owned(),
        };
        let mut old = (*shared.config()).clone();
        old.safety.exceptions = vec![
            entry("dana@example.com", "2026-12-15", "handover"),
            entry("erin@example.com", "2026-12-20T12:00:00Z", "notice period"),
            entry("finn@example.com", "2026-12-31", "legal hold"),
        ];
        let mut new = old.clone();
        new.safety.exceptions = vec![
            entry("DANA@example.com", "2026-12-15", "handover"),
            entry(
                "erin@example.com",
                "2027-01-10T12:00:00Z",
                "notice period, extended",
            ),
            entry("gus@example.com", "2026-12-18T09:00:00Z", "audit"),
        ];
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            exception_changes(&old, &new, at("2026-12-10T00:00:00Z")),
            [
                "safety.exceptions: erin@example.com's exception now runs until 2027-01-10 \
                 12:00 UTC (was 2026-12-20 12:00 UTC): notice period, extended",
                "safety.exceptions: gus@example.com is kept until 2026-12-18 09:00 UTC: audit",
                "safety.exceptions: finn@example.com's exception (until 2027-01-01 00:00 UTC) \
                 was taken out: seatwarden manages the account again",
            ]
        );
        assert!(exception_changes(&new, &new, at("2026-12-10T00:00:00Z")).is_empty());
        // Seen after the ends: an entry added already ended keeps nothing, and
        // one taken out after its end gives nothing back.
        assert_eq!(
            exception_changes(&old, &new, at("2027-02-01T00:00:00Z")),
            [
                "safety.exceptions: erin@example.com's exception now runs until 2027-01-10 \
                 12:00 UTC (was 2026-12-20 12:00 UTC): notice period, extended",
                "safety.exceptions: gus@example.com was added with an end already past \
                 (2026-12-18 09:00 UTC): it keeps nothing",
                "safety.exceptions: finn@example.com's exception, ended 2027-01-01 00:00 UTC, \
                 was taken out",
            ]
        );
    }

    /// The reload's lines quote the file's user_name and reason: a line break or
    /// an escape sequence in either (a TOML string may hold any) must not forge
    /// a log line of its own or drive the terminal of whoever reads the log;
    /// check-config's listing of the same entries lets neither through.
    #[test]
    fn a_reload_logs_an_exception_with_control_characters_made_printable() {
        use crate::config::ExceptionConfig;
        let dir = tempfile::tempdir().unwrap();
        let shared = shared_in(dir.path(), Arc::new(SetClock(Mutex::new(Utc::now()))));
        let old = (*shared.config()).clone();
        let mut new = old.clone();
        new.safety.exceptions = vec![ExceptionConfig {
            user_name: "dana@example.com\u{1b}[2K".to_owned(),
            until: "2026-12-15".to_owned(),
            reason: "handover\nERROR seatwarden: sweep failed \u{202e}".to_owned(),
        }];
        let now = Utc::now();
        let mut changes = exception_changes(&old, &new, now);
        changes.extend(exception_changes(&new, &old, now));
        assert_eq!(changes.len(), 2);
        for line in &changes {
            assert!(
                !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{line:?}"
            );
        }
    }

    /// A job name only the tests run: its work panics, as a bug would.
    pub(super) const PANICKING: &str = "panicking";

    pub(super) async fn panicking_job() -> JobEnd {
        let holders: Vec<&str> = Vec::new();
        JobEnd::Failed(holders[3].to_owned())
    }

    /// A job name only the tests run: it begins a dry run, as the reconcile
    /// job of a daemon in `schedule.dry_run` does, and panics in it.
    pub(super) const PANICKING_IN_A_DRY_RUN: &str = "panicking in a dry run";

    pub(super) async fn panicking_in_a_dry_run(shared: &Shared) -> JobEnd {
        let now = shared.now();
        shared
            .with_db(|db| db.begin_run(crate::store::RunKind::DryRun, now))
            .unwrap();
        panic!("a bug in the middle of a dry run");
    }

    /// A job name only the tests run: it panics before its run begins, as the
    /// reconcile job does on a bug in making its connectors, while a dry run
    /// run by hand (`seatwarden dry-run`, which takes no writer lock) has begun
    /// meanwhile.
    pub(super) const PANICKING_BESIDE_A_DRY_RUN_BY_HAND: &str = "panicking beside a dry run";

    pub(super) fn panicking_beside_a_dry_run_by_hand(shared: &Shared) -> JobEnd {
        let mut by_hand = Store::open_existing(&shared.config().state.path).unwrap();
        by_hand
            .begin_run(crate::store::RunKind::DryRun, shared.now())
            .unwrap();
        panic!("a bug before the job's run began");
    }

    /// A daemon that writes runs no dry run of its own: a job of its that
    /// panics leaves alone the dry run someone runs by hand beside it. Taken
    /// for the job's own (the first dry run begun since the job started), it
    /// was marked failed (interrupted) while it ran, and its end and report
    /// were then never recorded.
    #[tokio::test]
    async fn a_writing_daemons_panicking_job_leaves_a_dry_run_by_hand_running() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SetClock(Mutex::new(Utc::now())));
        let shared = Arc::new(shared_in(dir.path(), clock));
        assert!(!shared.settings().dry_run);
        run_job(Arc::clone(&shared), PANICKING_BESIDE_A_DRY_RUN_BY_HAND).await;
        let running = shared.with_db(|db| db.running_runs()).unwrap();
        assert_eq!(running.len(), 1, "the dry run by hand runs on: {running:?}");
    }

    /// `POST /reconcile` joining the reconcile under way names its run. A reload
    /// that turned `schedule.dry_run` on (or off) while it ran changes nothing
    /// of that run's kind: looked for by the kind the new settings run, it was
    /// not found (`run_id` null), or a dry run by hand was named in its place.
    #[test]
    fn a_reconcile_joined_after_a_reload_into_dry_run_is_named_by_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let shared = shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now))));
        assert!(!shared.settings().dry_run);
        let run = shared
            .with_db(|db| {
                db.job_started(RECONCILE, now)?;
                db.begin_run(crate::store::RunKind::Reconcile, now)
            })
            .unwrap();
        let running = shared.running();
        shared.replace_running(Running {
            config: Arc::clone(&running.config),
            settings: Arc::new(DaemonSettings {
                dry_run: true,
                ..(*running.settings).clone()
            }),
            trigger_token: None,
        });
        assert_eq!(http::reconcile_in_progress(&shared), (true, Some(run)));
    }

    /// A dry run holds no writer lock: no writer closes one cut off, and the
    /// daemon's start closed it only while its job was still marked running.
    /// Its job now ends recorded failed after a panic, so the dry run it was
    /// in was left "running" for good (never pruned, never counted): it is
    /// closed failed as the job ends.
    #[tokio::test]
    async fn the_dry_run_a_panicking_job_was_in_is_closed_failed() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SetClock(Mutex::new(Utc::now())));
        let shared = Arc::new(shared_in(dir.path(), clock));
        let running = shared.running();
        shared.replace_running(Running {
            config: Arc::clone(&running.config),
            settings: Arc::new(DaemonSettings {
                dry_run: true,
                ..(*running.settings).clone()
            }),
            trigger_token: None,
        });
        run_job(Arc::clone(&shared), PANICKING_IN_A_DRY_RUN).await;
        let running = shared.with_db(|db| db.running_runs()).unwrap();
        assert!(running.is_empty(), "{running:?}");
        let dry_run = shared
            .with_db(|db| db.latest_run(&[crate::store::RunKind::DryRun]))
            .unwrap()
            .unwrap();
        assert_eq!(dry_run.status, RunStatus::Failed);
        assert!(dry_run.finished_at.is_some());
    }

    /// A job whose work panics ends recorded as failed, with the panic's
    /// message, counted towards the repeated-failure alert each time, and runs
    /// again at its next start: not left "running" in `jobs` and uncounted.
    #[tokio::test]
    async fn a_job_that_panics_is_recorded_failed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SetClock(Mutex::new(Utc::now())));
        let shared = Arc::new(shared_in(dir.path(), clock));
        for runs in 1..=2 {
            run_job(Arc::clone(&shared), PANICKING).await;
            let jobs = shared.with_db(|db| db.jobs()).unwrap();
            let job = jobs.iter().find(|j| j.name == PANICKING).unwrap();
            assert_eq!(job.last_status, Some(RunStatus::Failed));
            assert!(job.last_finished_at.is_some());
            let error = job.last_error.as_deref().unwrap();
            assert!(error.contains("the job panicked"), "{error}");
            assert!(error.contains("index out of bounds"), "{error}");
            assert_eq!(shared.failures.lock().unwrap()[PANICKING], runs);
        }
    }

    /// A job during which the state database is deleted (a cleanup, a volume
    /// swapped), its `-wal` and `-shm` files too.
    pub(super) const DELETING_ITS_DATABASE: &str = "deleting its database";

    pub(super) fn deleting_its_database(shared: &Shared) -> JobEnd {
        let database = shared.config().state.path.clone();
        for suffix in ["", "-wal", "-shm"] {
            let mut path = database.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
        JobEnd::Succeeded
    }

    /// The state database deleted while a job runs: what runs after it (the
    /// alerts made after every job, on a connection of their own) does not make
    /// an empty one at its path, which the next job would refuse as "another
    /// file" and a restart would begin from, knowing no open deprovision.
    #[tokio::test]
    async fn a_database_deleted_during_a_job_is_not_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(shared_in(
            dir.path(),
            Arc::new(SetClock(Mutex::new(Utc::now()))),
        ));
        // With mail, so that alerts are looked for after the job.
        set_config(&shared, mailing_config(dir.path(), 9, ""));
        let database = dir.path().join("state.db");
        run_job(Arc::clone(&shared), DELETING_ITS_DATABASE).await;
        assert!(!database.exists(), "made again after the job");
        let refused = shared.open_store().err().unwrap().to_string();
        assert!(
            refused.contains("is gone since the daemon started"),
            "{refused}"
        );
        assert!(!database.exists(), "made again by a job's open");
    }

    /// What a reload does to the configuration, the rest of it as it was.
    fn set_config(shared: &Shared, config: Arc<Config>) {
        let running = shared.running();
        shared.replace_running(Running {
            config,
            settings: Arc::clone(&running.settings),
            trigger_token: running.trigger_token.clone(),
        });
    }

    /// A reload replaces the configuration, the `[schedule]` settings and the
    /// trigger token as one: a reader (a job starting, `/status`) never pairs a
    /// dry run from one file with the rest of another. Reloads alternate between
    /// a file in dry run with one token and a file writing with another, while
    /// two threads read what runs.
    #[test]
    fn a_reader_never_sees_half_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(shared_in(
            dir.path(),
            Arc::new(SetClock(Mutex::new(Utc::now()))),
        ));
        let path = dir.path().join("seatwarden.toml");
        std::fs::write(dir.path().join("token-dry"), "dry\n").unwrap();
        std::fs::write(dir.path().join("token-writes"), "writes\n").unwrap();
        let file = |dry_run: bool| {
            let token = if dry_run { "token-dry" } else { "token-writes" };
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
                 [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\n\
                 [state]\npath = \"state.db\"\n\
                 [schedule]\ndry_run = {dry_run}\n\
                 [http]\ntrigger_token_file = \"{token}\"\n"
            )
        };
        std::fs::write(&path, file(true)).unwrap();
        assert!(reload(&shared, &path));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let shared = Arc::clone(&shared);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut seen = BTreeMap::<bool, u64>::new();
                    while !done.load(Ordering::SeqCst) {
                        let running = shared.running();
                        let dry_run = running.settings.dry_run;
                        assert_eq!(running.config.schedule.dry_run, dry_run);
                        let token = running
                            .trigger_token()
                            .map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned());
                        let expected = if dry_run { "dry" } else { "writes" };
                        assert_eq!(token.as_deref(), Some(expected));
                        *seen.entry(dry_run).or_default() += 1;
                    }
                    seen
                })
            })
            .collect();
        for round in 0..40 {
            std::fs::write(&path, file(round % 2 == 0)).unwrap();
            assert!(reload(&shared, &path), "round {round}");
        }
        done.store(true, Ordering::SeqCst);
        for reader in readers {
            let seen = reader.join().unwrap();
            assert!(!seen.is_empty(), "the reader read");
        }
        assert!(!shared.settings().dry_run, "the last file read writes");
    }

    /// Another connection holding the state database's write lock, as a job's long
    /// transaction does (a reconcile storing a 100k snapshot, a prune's VACUUM, a
    /// backup), until dropped.
    fn hold_the_write_lock(shared: &Shared) -> rusqlite::Connection {
        let holder = rusqlite::Connection::open(&shared.config().state.path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        holder
    }

    /// A job's record is written on the daemon's own connection, which waits up
    /// to the busy timeout (5 s) while a job's long transaction holds the write
    /// lock (the mail job starts every minute, whatever else runs). `/readyz`
    /// must answer meanwhile (a probe's timeout is often 1 s), not queue behind
    /// that wait for the daemon's connection.
    #[test]
    fn readiness_answers_while_a_job_record_waits_for_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let shared = Arc::new(shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now)))));
        let mut db = Store::open(&shared.config().state.path).unwrap();
        db.job_started(RECONCILE, now).unwrap();
        db.job_finished(RECONCILE, now, RunStatus::Succeeded, None)
            .unwrap();
        drop(db);
        let holder = hold_the_write_lock(&shared);
        let (answered, first) = std::sync::mpsc::channel();
        let recording = {
            let (shared, answered) = (Arc::clone(&shared), answered.clone());
            std::thread::spawn(move || {
                let recorded = shared.with_db(|db| db.job_started(MAIL, now));
                answered.send("job record").unwrap();
                recorded
            })
        };
        // Until the record has the daemon's connection (and waits for the lock).
        while !recording.is_finished() && shared.db.try_lock().is_ok() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let probing = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let ready = http::readiness(&shared);
                answered.send("readiness").unwrap();
                ready
            })
        };
        assert_eq!(
            first.recv().unwrap(),
            "readiness",
            "/readyz waited for the daemon's connection while a job record waited for the \
             write lock"
        );
        drop(holder);
        assert_eq!(probing.join().unwrap(), Ok(()), "busy counts as writable");
        recording.join().unwrap().unwrap();
    }

    /// The job records are written from the blocking pool: waiting there for a
    /// long transaction's write lock (up to the busy timeout) on an async worker
    /// would stall every task queued on it (`/healthz`, the listener, other jobs'
    /// HTTP calls): here, the one other task of a single-threaded runtime.
    #[tokio::test]
    async fn a_job_record_waiting_for_the_write_lock_leaves_the_async_worker_free() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let shared = Arc::new(shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now)))));
        let holder = hold_the_write_lock(&shared);
        let recording = {
            let shared = Arc::clone(&shared);
            async move { record_job_start(&shared, MAIL, now).await }
        };
        assert_eq!(
            first_of(holder, recording).await,
            "other task",
            "the job record held the async worker while it waited for the write lock"
        );
        let jobs = shared.with_db(|db| db.jobs()).unwrap();
        assert!(jobs.iter().any(|job| job.name == MAIL), "{jobs:?}");
    }

    /// As the job records, the dry run a panicking job leaves open is closed
    /// from the blocking pool.
    #[tokio::test]
    async fn closing_a_cut_off_dry_run_leaves_the_async_worker_free() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let shared = Arc::new(shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now)))));
        let run = shared
            .with_db(|db| db.begin_run(crate::store::RunKind::DryRun, now))
            .unwrap();
        let holder = hold_the_write_lock(&shared);
        let closing = {
            let shared = Arc::clone(&shared);
            async move { close_dry_run_cut_off(&shared, RECONCILE, now).await }
        };
        assert_eq!(
            first_of(holder, closing).await,
            "other task",
            "closing the dry run held the async worker while it waited for the write lock"
        );
        let running = shared.with_db(|db| db.running_runs()).unwrap();
        assert!(!running.iter().any(|r| r.id == run), "closed");
    }

    /// The alerts after a job are written from the blocking pool too: the third
    /// failure in a row of the mail job (a relay down) during a reconcile's long
    /// snapshot write queues its alert while the write lock is held.
    #[tokio::test]
    async fn alerting_after_a_job_leaves_the_async_worker_free() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let shared = Arc::new(shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now)))));
        let path = dir.path().join("seatwarden.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(
            "[report.email]\nsmtp_url = \"smtp://127.0.0.1:9\"\nfrom = \"sw@example.com\"\n\
             to = [\"sec@example.com\"]\n",
        );
        std::fs::write(&path, text).unwrap();
        let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
        let notifier = Arc::new(notify::Notifier::from_config(&config).unwrap());
        let holder = hold_the_write_lock(&shared);
        let alerting = {
            let shared = Arc::clone(&shared);
            let failed = JobEnd::Failed("relay down".to_owned());
            async move {
                alert_after_job(
                    &shared,
                    &notifier,
                    MAIL,
                    notify::REPEATED_FAILURES,
                    &failed,
                    now,
                )
                .await
            }
        };
        assert_eq!(
            first_of(holder, alerting).await,
            "other task",
            "the alert held the async worker while it waited for the write lock"
        );
    }

    /// Which ends first on this single-threaded runtime: `write`, begun while
    /// `holder` holds the write lock, or another task that starts once `write`
    /// has begun. The lock is let go after, and `write` awaited.
    async fn first_of(
        holder: rusqlite::Connection,
        write: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> &'static str {
        let (answered, first) = std::sync::mpsc::channel();
        let (begun, begins) = tokio::sync::oneshot::channel();
        let writing = {
            let answered = answered.clone();
            tokio::spawn(async move {
                begun.send(()).unwrap();
                write.await;
                answered.send("write").unwrap();
            })
        };
        begins.await.unwrap();
        answered.send("other task").unwrap();
        let first = first.recv().unwrap();
        drop(holder);
        writing.await.unwrap();
        first
    }

    /// After a reload the scheduler loop reads the jobs' last runs while a job's
    /// record may hold the daemon's own connection, waiting (up to the busy
    /// timeout, for each record queued) for the write lock a prune's VACUUM or a
    /// reconcile's snapshot holds. Read there, the loop stalled with it: no tick
    /// (the systemd watchdog, `/healthz`), no job fired.
    #[test]
    fn the_schedule_is_read_while_a_job_record_waits_for_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let shared = Arc::new(shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now)))));
        let recording = shared.db.lock().unwrap();
        let (answered, answer) = std::sync::mpsc::channel();
        let scheduling = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let specs = scheduled_specs(&shared, &shared.settings(), now).map(|s| s.len());
                answered.send(specs.map_err(|e| e.to_string())).unwrap();
            })
        };
        let read = answer.recv_timeout(Duration::from_secs(10));
        drop(recording);
        scheduling.join().unwrap();
        assert!(
            matches!(read, Ok(Ok(n)) if n > 0),
            "the scheduler loop waited for the daemon's own connection: {read:?}"
        );
    }

    /// `/readyz` answers while `/metrics` or `/status` read on the handlers'
    /// connection: those need no token and read more (the ledger, a report), and
    /// 64 of them at once (the listener's cap) queued a probe behind them all.
    #[test]
    fn readiness_answers_while_the_other_handlers_read() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let shared = Arc::new(shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now)))));
        let reading = shared.reads.lock().unwrap();
        let (answered, answer) = std::sync::mpsc::channel();
        let probing = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || answered.send(http::readiness(&shared)).unwrap())
        };
        let ready = answer.recv_timeout(Duration::from_secs(60));
        drop(reading);
        probing.join().unwrap();
        assert_eq!(
            ready,
            Ok(Err("no reconcile has succeeded yet".to_owned())),
            "/readyz waited for the other handlers' reads"
        );
    }

    /// `/readyz` takes the write lock to see that the database takes writes at
    /// most once per [`http::WRITE_PROBE_INTERVAL`]: a flood of requests (they
    /// need no token) would otherwise hold it back to back, and every job's
    /// write waits for it.
    #[tokio::test(start_paused = true)]
    async fn readiness_takes_the_write_lock_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared_in(dir.path(), Arc::new(SetClock(Mutex::new(Utc::now()))));
        let probed_at = || {
            shared
                .write_probed
                .lock()
                .unwrap()
                .as_ref()
                .map(|(at, _)| *at)
        };
        let started = tokio::time::Instant::now();
        for _ in 0..50 {
            let _ = http::readiness(&shared);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(probed_at(), Some(started), "one look for the first 500 ms");
        tokio::time::advance(http::WRITE_PROBE_INTERVAL).await;
        let _ = http::readiness(&shared);
        assert_eq!(
            probed_at(),
            Some(tokio::time::Instant::now()),
            "looked again after the interval"
        );
    }

    /// The daemon's shared state on the configuration in `dir` (a file directory,
    /// `state.db`), on `clock`, as `run` makes it at start.
    fn shared_in(dir: &Path, clock: Arc<SetClock>) -> Shared {
        std::fs::write(dir.join("directory.json"), r#"{"users":[]}"#).unwrap();
        let path = dir.join("seatwarden.toml");
        std::fs::write(
            &path,
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
             [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\n\
             [state]\npath = \"state.db\"\n",
        )
        .unwrap();
        let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
        let settings = config.daemon_settings().unwrap();
        let db = Store::open(&config.state.path).unwrap();
        let reads = Store::open_existing(&config.state.path).unwrap();
        let probes = Store::open_existing(&config.state.path).unwrap();
        let database = DatabaseFile::of(&config.state.path).unwrap();
        let clock: Arc<dyn Clock> = clock;
        Shared {
            running: RwLock::new(Arc::new(Running::new(config, settings, None))),
            db: Mutex::new(db),
            reads: Mutex::new(reads),
            probes: Mutex::new(probes),
            counters: BTreeMap::new(),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            tick: Duration::from_secs(5),
            started: std::time::Instant::now(),
            last_tick: AtomicI64::new(0),
            wall_started: (clock.now(), tokio::time::Instant::now()),
            clock,
            stopping: StopSignal::new(),
            metrics: None,
            start: RwLock::new(None),
            failures: Mutex::new(BTreeMap::new()),
            successes: Mutex::new(BTreeMap::new()),
            lock_waits: Mutex::new(BTreeMap::new()),
            database,
            write_probed: Mutex::new(None),
            release_mail: AtomicBool::new(false),
        }
    }

    /// `/readyz` after the wall clock is stepped back three hours (reconcile every
    /// 30 minutes): a success recorded before the step, now in the clock's
    /// future, keeps the daemon ready only as long as the time passed since it
    /// allows, not until the clock catches up with it; one just before the step
    /// keeps it ready, as on a true clock.
    #[tokio::test(start_paused = true)]
    async fn readiness_after_the_clock_steps_back_counts_the_time_passed() {
        let dir = tempfile::tempdir().unwrap();
        let at = |t: &str| {
            DateTime::parse_from_rfc3339(&format!("2026-12-01T{t}:00Z"))
                .unwrap()
                .to_utc()
        };
        let clock = Arc::new(SetClock(Mutex::new(at("10:00"))));
        let shared = shared_in(dir.path(), Arc::clone(&clock));
        let succeeded = |when| {
            let mut db = Store::open(&shared.config().state.path).unwrap();
            db.job_started(RECONCILE, when).unwrap();
            db.job_finished(RECONCILE, when, RunStatus::Succeeded, None)
                .unwrap();
        };
        let minutes = |m: u64| tokio::time::advance(Duration::from_secs(m * 60));
        // 10:30 the last success; at 13:00 the clock is set back three hours to
        // 10:00, and the runs since 10:30 have failed.
        succeeded(at("10:30"));
        minutes(180).await;
        *clock.0.lock().unwrap() = at("10:00");
        let why = http::readiness(&shared).unwrap_err();
        assert!(why.contains("have passed"), "{why}");
        // A success ten minutes before the step (12:50, which the clock reads
        // 09:50 now): ready, and 50 minutes on still.
        succeeded(at("12:50"));
        assert_eq!(http::readiness(&shared), Ok(()));
        minutes(50).await;
        *clock.0.lock().unwrap() = at("10:50");
        assert_eq!(http::readiness(&shared), Ok(()));
        // The 13:00 and 13:30 runs failed: overdue at 14:40 (the clock 11:40).
        minutes(50).await;
        *clock.0.lock().unwrap() = at("11:40");
        let why = http::readiness(&shared).unwrap_err();
        assert!(why.contains("have passed"), "{why}");
        // A true clock reads the same: ready 10 minutes after that success.
        *clock.0.lock().unwrap() = at("13:00");
        assert_eq!(http::readiness(&shared), Ok(()));
    }

    /// `/readyz` after the wall clock is stepped six hours ahead and, a quarter
    /// of an hour later, back again, two days after the daemon started: the
    /// reconcile that succeeded in between, recorded in the clock's future, counts
    /// when it was by the time passed since, not at the daemon's start two days
    /// ago (not ready until the next success).
    #[tokio::test(start_paused = true)]
    async fn readiness_after_a_step_ahead_and_back_counts_a_success_when_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let at = |day: u32, t: &str| {
            DateTime::parse_from_rfc3339(&format!("2026-12-{day:02}T{t}:00Z"))
                .unwrap()
                .to_utc()
        };
        let clock = Arc::new(SetClock(Mutex::new(at(1, "10:00"))));
        let shared = Arc::new(shared_in(dir.path(), Arc::clone(&clock)));
        let minutes = |m: u64| tokio::time::advance(Duration::from_secs(m * 60));
        // Two days on, at 10:10, the clock jumps to 16:10; the reconcile succeeds
        // at 16:20 by it; at 16:25 it is set right, to 10:25.
        minutes(2 * 24 * 60 + 10).await;
        *clock.0.lock().unwrap() = at(3, "16:10");
        minutes(10).await;
        *clock.0.lock().unwrap() = at(3, "16:20");
        shared
            .with_db(|db| db.job_started(RECONCILE, at(3, "16:19")))
            .unwrap();
        record_job_end(&shared, RECONCILE, at(3, "16:20"), &JobEnd::Succeeded).await;
        minutes(5).await;
        *clock.0.lock().unwrap() = at(3, "10:25");
        assert_eq!(http::readiness(&shared), Ok(()));
        // It counts at 10:20: the 10:30 and 11:00 runs failing, overdue after
        // 11:30.
        minutes(60).await;
        *clock.0.lock().unwrap() = at(3, "11:25");
        assert_eq!(http::readiness(&shared), Ok(()));
        minutes(10).await;
        *clock.0.lock().unwrap() = at(3, "11:35");
        let why = http::readiness(&shared).unwrap_err();
        assert!(why.contains("have passed"), "{why}");
    }

    /// A sweep (and the retry pass, the same job) on a state database whose runs
    /// were made against another workspace sends nothing and reads nothing: it
    /// fails naming both URLs, as a reconcile does.
    #[tokio::test]
    async fn a_sweep_refuses_the_state_of_another_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc();
        let shared = shared_in(dir.path(), Arc::new(SetClock(Mutex::new(now))));
        let mut store = Store::open(&shared.config().state.path).unwrap();
        store
            .set_state_value(
                run::WORKSPACE_KEY,
                Some("http://127.0.0.1:9/rehearsal/scim/v2"),
            )
            .unwrap();
        // That workspace's state: a link (a database that holds nothing of it
        // takes the configured URL instead).
        store
            .upsert_links(
                &[crate::model::NewLink {
                    identity_id: "00u1".to_owned(),
                    account_id: "ws-1".to_owned(),
                    method: crate::model::LinkMethod::Manual,
                }],
                now,
            )
            .unwrap();
        drop(store);
        for read_directory in [true, false] {
            match sweep_job(&shared, &shared.running(), read_directory, None).await {
                Err(RunError::OtherWorkspace {
                    recorded,
                    configured,
                    ..
                }) => {
                    assert_eq!(recorded, "http://127.0.0.1:9/rehearsal/scim/v2");
                    assert_eq!(configured, "https://scim.example.com/scim/v2");
                }
                other => panic!("{read_directory}: {other:?}"),
            }
        }
    }

    /// The daemon's prune, its wall clock stepped five years ahead moments after
    /// it started, deletes none of the week-old runs (retention 30 days): it
    /// counts from the time the daemon has seen pass. With the clock right, 40
    /// days on, they go.
    #[test]
    fn the_prune_keeps_the_history_when_the_clock_is_stepped_years_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let started = DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc();
        let clock = Arc::new(SetClock(Mutex::new(started)));
        let shared = shared_in(dir.path(), Arc::clone(&clock));
        let mut store = Store::open(&shared.config().state.path).unwrap();
        let week_ago = started - chrono::Duration::days(7);
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let run = store
                    .begin_run(crate::store::RunKind::Plan, week_ago)
                    .unwrap();
                store
                    .finish_run(run, week_ago, RunStatus::Succeeded, None)
                    .unwrap();
                run
            })
            .collect();
        let stored = |store: &Store| {
            runs.iter()
                .filter(|run| store.run(**run).unwrap().is_some())
                .count()
        };

        *clock.0.lock().unwrap() = started + chrono::Duration::days(5 * 365);
        prune_job(&shared, &shared.running()).unwrap();
        assert_eq!(stored(&store), 3, "pruned on a clock five years ahead");

        // The same prune on a daemon started with the clock right, 40 days on.
        let later = Arc::new(SetClock(Mutex::new(started + chrono::Duration::days(40))));
        let shared = shared_in(dir.path(), later);
        prune_job(&shared, &shared.running()).unwrap();
        assert_eq!(stored(&store), 0, "older than the retention");
    }

    /// A reconcile judges the retention of `deprovision.delete_after` by the time
    /// the daemon has seen pass once its wall clock was stepped weeks ahead (a
    /// deletion is not undone by setting the clock right), and by the clock while
    /// it runs true; without a retention period nothing is bounded.
    #[test]
    fn a_clock_stepped_weeks_ahead_does_not_age_the_retention_clocks() {
        let dir = tempfile::tempdir().unwrap();
        let started = DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc();
        let clock = Arc::new(SetClock(Mutex::new(started)));
        let shared = shared_in(dir.path(), Arc::clone(&clock));
        let thirty_days = Some(Duration::from_secs(30 * 86_400));
        let hour = chrono::Duration::hours(1);
        *clock.0.lock().unwrap() = started + hour;
        assert_eq!(retention_as_of(&shared, thirty_days), None, "a true clock");

        *clock.0.lock().unwrap() = started + chrono::Duration::weeks(6);
        let as_of = retention_as_of(&shared, thirty_days).expect("bounded");
        let day = started + chrono::Duration::days(1);
        assert!(day <= as_of && as_of < day + hour, "{as_of}");
        assert_eq!(retention_as_of(&shared, None), None, "deactivates only");
        assert_eq!(
            retention_as_of(&shared, Some(Duration::ZERO)),
            None,
            "deletes at once: no clock to age"
        );
    }

    /// Consecutive digests cover consecutive periods, however often they run.
    #[test]
    fn a_digest_covers_the_time_since_the_last_one() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let minutes = chrono::Duration::minutes;
        assert_eq!(digest_period(Some(now - minutes(15)), now), minutes(15));
        assert_eq!(digest_period(None, now), chrono::Duration::days(1));
        assert_eq!(
            digest_period(Some(now - chrono::Duration::days(30)), now),
            chrono::Duration::days(7)
        );
        assert_eq!(digest_period(Some(now), now), minutes(1));
        // The last one covered up to a time a clock since stepped back put a
        // year ahead: this one covers a day, as a first one does, not the
        // minute that left every run of the day out of it.
        assert_eq!(
            digest_period(Some(now + chrono::Duration::days(365)), now),
            chrono::Duration::days(1)
        );
        // A step back of seconds just after the last one: a minute still.
        assert_eq!(
            digest_period(Some(now + chrono::Duration::seconds(5)), now),
            minutes(1)
        );
    }

    /// Each digest records what it covered, and the next one's trend compares
    /// with exactly that: across the end of summer time a daily 08:00 digest
    /// covered 25 hours, and the one after it is compared with those 25 hours,
    /// not with a window of its own 24 that no digest ever reported.
    #[test]
    fn the_next_digest_compares_with_what_the_last_one_covered() {
        use crate::report::digest::Span;
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let mut store = Store::open_in_memory().unwrap();
        let mut digest = |now| {
            let (period, covered) = digest_periods(&store, now).unwrap();
            for (key, value) in digest_state(now, period) {
                store.set_state_value(key, Some(&value)).unwrap();
            }
            (period, covered)
        };
        // Saturday 08:00 CEST: the first digest, nothing recorded before it.
        let (period, covered) = digest(at("2026-10-24T06:00:00Z"));
        assert_eq!((period, covered), (chrono::Duration::days(1), None));
        // Sunday 08:00 CET: 25 hours, compared with Saturday's day.
        let (period, covered) = digest(at("2026-10-25T07:00:00Z"));
        assert_eq!(period, chrono::Duration::hours(25));
        assert_eq!(
            covered,
            Some(Span {
                start: at("2026-10-23T06:00:00Z"),
                end: at("2026-10-24T06:00:00Z"),
            })
        );
        // Monday 08:00 CET: 24 hours, compared with Sunday's 25.
        let (period, covered) = digest(at("2026-10-26T07:00:00Z"));
        assert_eq!(period, chrono::Duration::hours(24));
        assert_eq!(
            covered,
            Some(Span {
                start: at("2026-10-24T06:00:00Z"),
                end: at("2026-10-25T07:00:00Z"),
            })
        );
    }

    /// On a fresh state database the reconcile and the sweep run at once; the
    /// digest and the prune wait for their slot (a first start emailed a digest of
    /// nothing).
    #[test]
    fn a_first_start_runs_the_reconcile_at_once_and_waits_for_the_digest() {
        let every = |pattern: &str| Schedule::parse(pattern).unwrap();
        let settings = DaemonSettings {
            timezone: chrono_tz::UTC,
            reconcile: every("*/30 * * * *"),
            sweep: every("*/5 * * * *"),
            digest: Some(every("0 8 * * 1-5")),
            retention: std::time::Duration::from_secs(86_400),
            reconcile_max_duration: None,
            dry_run: false,
            sla: std::time::Duration::from_secs(3_600),
            listen: "127.0.0.1:0".parse().unwrap(),
        };
        let db = Store::open_in_memory().unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-01T09:13:00Z")
            .unwrap()
            .to_utc();
        let jobs = job_specs(&settings, &db, now).unwrap();
        let missed = |name: &str| {
            let job = jobs.iter().find(|j| j.name == name).unwrap();
            schedule::missed(&job.schedule, chrono_tz::UTC, job.last_started, now)
        };
        assert!(missed(RECONCILE));
        assert!(missed(SWEEP));
        assert!(!missed(DIGEST));
        assert!(!missed(PRUNE));
    }

    /// A job whose last run was stopped (SIGTERM) is marked so, and runs at
    /// start; one that failed, or was cut off by a crash, waits for its slot (a
    /// reconcile that kills the daemon must not run again at every restart).
    #[test]
    fn a_job_stopped_by_the_last_daemon_runs_at_start() {
        let every = |pattern: &str| Schedule::parse(pattern).unwrap();
        let settings = DaemonSettings {
            timezone: chrono_tz::UTC,
            reconcile: every("0 2 * * *"),
            sweep: every("*/5 * * * *"),
            digest: None,
            retention: std::time::Duration::from_secs(86_400),
            reconcile_max_duration: None,
            dry_run: false,
            sla: std::time::Duration::from_secs(3_600),
            listen: "127.0.0.1:0".parse().unwrap(),
        };
        let mut db = Store::open_in_memory().unwrap();
        let started = DateTime::parse_from_rfc3339("2026-12-01T02:00:00Z")
            .unwrap()
            .to_utc();
        let minute = chrono::Duration::minutes(1);
        db.job_started(RECONCILE, started).unwrap();
        db.job_finished(
            RECONCILE,
            started + minute,
            RunStatus::Stopped,
            Some("SIGTERM"),
        )
        .unwrap();
        db.job_started(SWEEP, started).unwrap();
        db.job_started(RETRY, started).unwrap();
        db.job_finished(RETRY, started + minute, RunStatus::Failed, Some("HTTP 503"))
            .unwrap();
        // The last daemon was killed with the sweep running.
        assert_eq!(
            db.close_interrupted_jobs(started + minute).unwrap(),
            [SWEEP]
        );
        let jobs = job_specs(&settings, &db, started + minute * 2).unwrap();
        let stopped: Vec<&str> = jobs.iter().filter(|j| j.stopped).map(|j| j.name).collect();
        assert_eq!(stopped, [RECONCILE]);
        let reconcile = jobs.iter().find(|j| j.name == RECONCILE).unwrap();
        assert_eq!(reconcile.last_started, Some(started));
    }

    /// The slot each job fired last, kept in `daemon_state`, comes back with its
    /// job at the next start; one that does not read as a time is none.
    #[test]
    fn the_slot_a_job_fired_last_comes_back_at_the_next_start() {
        let every = |pattern: &str| Schedule::parse(pattern).unwrap();
        let settings = DaemonSettings {
            timezone: chrono_tz::UTC,
            reconcile: every("0 2 * * *"),
            sweep: every("*/5 * * * *"),
            digest: Some(every("0 8 * * *")),
            retention: std::time::Duration::from_secs(86_400),
            reconcile_max_duration: None,
            dry_run: false,
            sla: std::time::Duration::from_secs(3_600),
            listen: "127.0.0.1:0".parse().unwrap(),
        };
        let mut db = Store::open_in_memory().unwrap();
        let eight = DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .unwrap()
            .to_utc();
        let key = fired_slot_key(DIGEST);
        db.set_state_value(&key, Some(&eight.to_rfc3339())).unwrap();
        db.set_state_value(&fired_slot_key(SWEEP), Some("yesterday"))
            .unwrap();
        let now = eight - chrono::Duration::seconds(2);
        let jobs = job_specs(&settings, &db, now).unwrap();
        let fired = |name: &str| jobs.iter().find(|j| j.name == name).unwrap().fired;
        assert_eq!(fired(DIGEST), Some(eight));
        assert_eq!(fired(SWEEP), None);
        assert_eq!(fired(RECONCILE), None);
    }

    /// A sweep or retry pass that got no answer from the workspace (down, with
    /// nothing due) is no sign that it works again: the failures in a row stand,
    /// where a pass that reached it ends them.
    #[test]
    fn a_pass_that_did_not_reach_the_workspace_keeps_the_failures_in_a_row() {
        let state = std::path::Path::new("state.db");
        assert_eq!(
            JobEnd::of_pass(Ok(PassReach::Unreached), state, "seatwarden"),
            JobEnd::Unreached
        );
        assert_eq!(
            JobEnd::of_pass(Ok(PassReach::Served), state, "seatwarden"),
            JobEnd::Succeeded
        );
        assert_eq!(
            JobEnd::of_pass(Ok(PassReach::NothingToRetry), state, "seatwarden"),
            JobEnd::Succeeded
        );
        assert_eq!(
            JobEnd::of_pass(
                Ok(PassReach::Refused("HTTP 401".into())),
                state,
                "seatwarden"
            ),
            JobEnd::Failed("HTTP 401".into())
        );
        assert_eq!(JobEnd::Unreached.failures_after(3), 3);
        assert_eq!(JobEnd::Unreached.status(), RunStatus::Succeeded);
        assert_eq!(JobEnd::Succeeded.failures_after(3), 0);
        assert_eq!(JobEnd::Failed("HTTP 503".into()).failures_after(3), 4);
        assert_eq!(JobEnd::Stopped("stopping".into()).failures_after(3), 3);
    }

    /// A job that failed on a full disk said "database or disk is full" in its
    /// log line, `status` and the repeated-failure alert: not which file, nor
    /// what to do.
    #[test]
    fn a_job_failed_by_a_full_disk_names_the_state_database() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let failed = RunError::Apply(crate::apply::ApplyError::Store(StoreError::Sqlite {
            context: "marking action 3 of run 9 applied in actions".into(),
            source: full,
        }));
        let JobEnd::Failed(message) = JobEnd::of(
            Err(failed),
            std::path::Path::new("/var/lib/seatwarden/state.db"),
            crate::model::DEFAULT_ADMIN_COMMAND,
        ) else {
            panic!("not failed");
        };
        assert!(
            message.contains("database or disk is full; the disk holding the state database /var/lib/seatwarden/state.db is full"),
            "{message}"
        );
        // Damaged, its hint names the `backup` that made the copy to restore,
        // spelled as people run seatwarden (the message reaches `status` and
        // the repeated-failure alert).
        const ADMIN: &str = "sudo -u sw seatwarden --config /etc/sw.toml";
        let damaged = RunError::Store(StoreError::Sqlite {
            context: "reading the links".into(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some("database disk image is malformed".into()),
            ),
        });
        let JobEnd::Failed(message) = JobEnd::of(
            Err(damaged),
            std::path::Path::new("/var/lib/seatwarden/state.db"),
            ADMIN,
        ) else {
            panic!("not failed");
        };
        assert!(
            message.contains(&format!("(`{ADMIN} backup` made it;")),
            "{message}"
        );
    }

    /// The mail job, run after every job, mostly has nothing to send: its log
    /// line says so, not that a relay (or the workspace) could not be reached,
    /// which an operator would take for an outage; a pass the workspace did not
    /// answer says that.
    #[test]
    fn an_empty_outbox_is_not_logged_as_an_unreachable_relay() {
        let mail = unreached_log(MAIL);
        assert!(
            mail.starts_with("job finished: no message was due"),
            "{mail}"
        );
        assert!(!mail.contains("reach") && !mail.contains("relay"), "{mail}");
        for pass in [SWEEP, RETRY] {
            assert!(
                unreached_log(pass).contains("without an answer from the workspace"),
                "{pass}"
            );
        }
    }

    /// A reload (a relay login fixed) that arrives while the mail job delivers,
    /// which has passed the reload's flag: the job runs once more when it ends,
    /// makes the waiting messages due and tries them with the reloaded login, not
    /// with the refused one the job started with, which would only be refused
    /// again and put off for its backoff. It used to wait for the next minute's
    /// fire, and for the whole backoff when the refusal put the message off.
    #[test]
    fn a_reload_during_the_mail_job_is_delivered_with_the_reloaded_login() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared {
            counters: BTreeMap::from([(MAIL, Arc::new(schedule::JobCounters::default()))]),
            ..shared_in(dir.path(), Arc::new(SetClock(Mutex::new(Utc::now()))))
        });
        let start: StartJob = {
            let shared = Arc::clone(&shared);
            Arc::new(move |name| Box::pin(run_job(Arc::clone(&shared), name)))
        };
        *shared.start.write().unwrap() = Some(start);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let path = dir.path().join("seatwarden.toml");
        let fixed = base64::engine::general_purpose::STANDARD.encode("\0relay\0fixed");
        let reloader = Arc::clone(&shared);
        let reload_dir = dir.path().to_owned();
        let reload_path = path.clone();
        let (port, _) = smtp_relay(move |verb, line| match verb {
            "AUTH" if line.contains(&fixed) => Some(b"235 2.7.0 Authentication successful\r\n"),
            "AUTH" => {
                // The login is fixed and the daemon reloaded while this pass runs.
                std::fs::write(reload_dir.join("relay-password"), "fixed\n").unwrap();
                let config = Config::load_with_env(&reload_path, Some(Default::default())).unwrap();
                set_config(&reloader, Arc::new(config));
                reloader.release_mail.store(true, Ordering::SeqCst);
                let _runtime = handle.enter();
                assert!(!reloader.trigger_or_follow(MAIL), "the job runs");
                Some(b"535 5.7.8 Username and Password not accepted\r\n")
            }
            _ => None,
        });
        std::fs::write(dir.path().join("relay-password"), "rotated-away\n").unwrap();
        set_config(
            &shared,
            mailing_config(
                dir.path(),
                port,
                "username = \"relay\"\npassword_file = \"relay-password\"\n",
            ),
        );
        queue_overdue_alert(&shared);
        let outbox = || {
            Store::open(&shared.config().state.path)
                .unwrap()
                .outbox()
                .unwrap()
        };
        let sent = runtime.block_on(async {
            assert!(shared.trigger_or_follow(MAIL));
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if outbox()[0].state == crate::store::OutboxState::Sent {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        });
        assert!(sent, "{:?}", outbox());
        assert_eq!(shared.counters[MAIL].started.load(Ordering::SeqCst), 2);
        assert!(!shared.release_mail.load(Ordering::SeqCst));
    }

    /// A mail run started (its notifier made) before a reload, that takes the
    /// reload's release after it: it delivers through the reloaded relay, not
    /// the replaced one, which would put the released messages off again for
    /// its backoff and leave the run the reload asked for nothing due.
    #[test]
    fn a_mail_run_taking_a_reloads_release_delivers_with_the_reloaded_settings() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared_in(dir.path(), Arc::new(SetClock(Mutex::new(Utc::now()))));
        let with_relay = |port: u16| mailing_config(dir.path(), port, "");
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        set_config(&shared, with_relay(gone));
        let started_with = notify::Notifier::from_config(&shared.config()).unwrap();
        queue_overdue_alert(&shared);
        // The reload: the new relay, then the release.
        let (port, taken) = accepting_relay();
        set_config(&shared, with_relay(port));
        shared.release_mail.store(true, Ordering::SeqCst);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let end = runtime.block_on(mail_job(&shared, Some(&started_with)));
        let outbox = Store::open(&shared.config().state.path)
            .unwrap()
            .outbox()
            .unwrap();
        assert_eq!(
            outbox[0].state,
            crate::store::OutboxState::Sent,
            "{end:?} {outbox:?}"
        );
        assert_eq!(taken.load(Ordering::SeqCst), 1);
    }

    /// The configuration of [`shared_in`] mailing through the relay on `port`,
    /// with `login` (`[report.email]` lines such as `username = …`) added;
    /// written to `dir`'s `seatwarden.toml` and loaded.
    fn mailing_config(dir: &Path, port: u16, login: &str) -> Arc<Config> {
        let path = dir.join("seatwarden.toml");
        std::fs::write(
            &path,
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
                 [workspace]\nurl = \"https://scim.example.com/scim/v2\"\ntoken = \"t\"\n\
                 [state]\npath = \"state.db\"\n\
                 [report.email]\nsmtp_url = \"smtp://127.0.0.1:{port}\"\n\
                 from = \"seatwarden@example.com\"\nto = [\"it-security@example.com\"]\n{login}"
            ),
        )
        .unwrap();
        Arc::new(Config::load_with_env(&path, Some(Default::default())).unwrap())
    }

    /// A relay on a port of its own that takes every message it is given;
    /// counts them. `reply` answers a verb other than EHLO, DATA and QUIT (its
    /// line given too), `None` for the ordinary `250`: an AUTH, say.
    fn smtp_relay(
        reply: impl Fn(&str, &str) -> Option<&'static [u8]> + Send + 'static,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&taken);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let _ = stream.write_all(b"220 relay.example.com ESMTP\r\n");
                let mut line = String::new();
                let mut data = false;
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if data {
                        if line == ".\r\n" {
                            data = false;
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = stream.write_all(b"250 2.0.0 queued\r\n");
                        }
                        line.clear();
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-relay.example.com\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => b"221 2.0.0 Bye\r\n",
                        other => reply(other, &line).unwrap_or(b"250 2.1.0 OK\r\n"),
                    };
                    if stream.write_all(answer).is_err() || verb == "QUIT" {
                        break;
                    }
                    line.clear();
                }
            }
        });
        (port, taken)
    }

    /// [`smtp_relay`] taking every message without a login.
    fn accepting_relay() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        smtp_relay(|_, _| None)
    }

    /// An overdue alert in `shared`'s outbox, due now.
    fn queue_overdue_alert(shared: &Shared) {
        Store::open(&shared.config().state.path)
            .unwrap()
            .enqueue_message(
                &crate::store::NewMessage {
                    kind: crate::store::OutboxKind::Alert,
                    subject: "deprovision of ada@example.com is overdue".to_owned(),
                    from: "seatwarden@example.com".to_owned(),
                    to: vec!["it-security@example.com".to_owned()],
                    text: "t".to_owned(),
                    html: "<p>h</p>".to_owned(),
                    in_reply_to: None,
                },
                shared.now(),
            )
            .unwrap();
    }

    /// A job that ends while the mail job runs asks it for one more run (the
    /// running one may have passed what the job queued), and delivers nothing
    /// itself. When the daemon is stopped before that run begins, the run must
    /// still deliver, within the stop grace: no other delivery comes before the
    /// next start (an alert about an overdue deprovision, sent days later or
    /// never when the daemon is stopped for good).
    #[test]
    fn mail_asked_for_before_a_stop_goes_out_during_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (port, taken) = accepting_relay();
        let shared = Arc::new(Shared {
            counters: BTreeMap::from([(MAIL, Arc::new(schedule::JobCounters::default()))]),
            ..shared_in(dir.path(), Arc::new(SetClock(Mutex::new(Utc::now()))))
        });
        set_config(&shared, mailing_config(dir.path(), port, ""));
        // The mail run under way when the other job ends: it has passed the
        // outbox already, and ends once let go.
        let (let_go, held) = tokio::sync::oneshot::channel::<()>();
        let held = Mutex::new(Some(held));
        let start: StartJob = {
            let shared = Arc::clone(&shared);
            Arc::new(move |name| match held.lock().unwrap().take() {
                Some(held) => Box::pin(async move {
                    let _ = held.await;
                }),
                None => Box::pin(run_job(Arc::clone(&shared), name)),
            })
        };
        *shared.start.write().unwrap() = Some(start);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outbox = || {
            Store::open(&shared.config().state.path)
                .unwrap()
                .outbox()
                .unwrap()
        };
        let idle = runtime.block_on(async {
            assert!(shared.trigger_or_follow(MAIL), "the mail run under way");
            // What the other job queued as it ended, and its ask for a mail run.
            queue_overdue_alert(&shared);
            assert!(!shared.trigger_or_follow(MAIL), "the mail job runs");
            // SIGTERM, then the run under way ends.
            shared.stopping.stop();
            let_go.send(()).unwrap();
            schedule::wait_idle(&shared.counters, Duration::from_secs(60)).await
        });
        assert!(idle, "the mail job ended within the grace");
        assert_eq!(shared.counters[MAIL].started.load(Ordering::SeqCst), 2);
        assert_eq!(
            outbox()[0].state,
            crate::store::OutboxState::Sent,
            "{:?}",
            outbox()
        );
        assert_eq!(taken.load(Ordering::SeqCst), 1);
    }

    /// A relay that is down fails the mail job when a message is due, and the
    /// minutes of its backoff in between (nothing due) do not end the streak, or
    /// it would never reach the repeated-failures alert.
    #[test]
    fn a_mail_job_fails_when_nothing_due_could_be_sent() {
        use notify::Delivered;
        let down = JobEnd::of_delivery(Delivered::Failed("connection refused".into()));
        assert_eq!(down, JobEnd::Failed("connection refused".into()));
        let backoff = JobEnd::of_delivery(Delivered::NothingDue);
        let streak = [&down, &backoff, &down, &backoff, &down]
            .into_iter()
            .fold(0, |failures, end| end.failures_after(failures));
        assert_eq!(streak, 3);
        let sent = JobEnd::of_delivery(Delivered::Sent(crate::mail::Delivery::default()));
        assert_eq!(sent.failures_after(streak), 0);
    }

    /// A reload names only the restart-only keys that changed.
    #[test]
    fn a_reload_names_only_the_restart_only_keys_that_changed() {
        let db = Path::new("/var/lib/seatwarden/state.db");
        let moved = Path::new("/srv/seatwarden/state.db");
        let listen: std::net::SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let other: std::net::SocketAddr = "127.0.0.1:9465".parse().unwrap();
        assert_eq!(restart_only_changes((db, listen), (db, listen)), None);
        assert_eq!(
            restart_only_changes((db, listen), (db, other)).as_deref(),
            Some("http.listen changed: the change takes effect at the next restart")
        );
        assert_eq!(
            restart_only_changes((db, listen), (moved, listen)).as_deref(),
            Some("state.path changed: the change takes effect at the next restart")
        );
        assert_eq!(
            restart_only_changes((db, listen), (moved, other)).as_deref(),
            Some("state.path and http.listen changed: the changes take effect at the next restart")
        );
    }

    /// A state database (or its lock file) on a file system that is read-only
    /// to seatwarden, as everything but /var/lib/seatwarden is under the
    /// shipped unit's `ProtectSystem=strict`: the error says so and what to do,
    /// where "Read-only file system (os error 30)" alone named neither.
    #[test]
    fn a_read_only_state_folder_names_the_sandbox_and_the_way_out() {
        let read_only = || std::io::Error::from_raw_os_error(30);
        let path = PathBuf::from("/srv/seatwarden/state.db.lock");
        let errors = [
            DaemonError::LockFile {
                path: path.clone(),
                hint: crate::store::lock_file_hint(&path, &read_only()),
                source: read_only(),
            }
            .to_string(),
            crate::store::lock_error(&path, read_only()).to_string(),
            StoreError::Create {
                path: PathBuf::from("/srv/seatwarden/state.db"),
                source: read_only(),
            }
            .to_string(),
        ];
        for error in errors {
            assert!(
                error.contains("ProtectSystem=strict")
                    && error.contains("/var/lib/seatwarden")
                    && error.contains("ReadWritePaths="),
                "{error}"
            );
        }
        // Other failures keep their own words.
        let denied = DaemonError::LockFile {
            hint: crate::store::lock_file_hint(&path, &std::io::Error::from_raw_os_error(13)),
            path,
            source: std::io::Error::from_raw_os_error(13),
        }
        .to_string();
        assert!(!denied.contains("ProtectSystem"), "{denied}");
    }
}
