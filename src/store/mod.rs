//! The SQLite state store: runs, directory and workspace snapshots keyed by run,
//! identity↔account links, the action journal (written before every workspace
//! write, design invariant 2), drift items and reports, and the mail outbox and
//! alert state (`outbox`), read by the digest and the access export (`export`).
//!
//! The store is synchronous and owns one connection; async callers wrap it in a
//! mutex or `spawn_blocking`. It logs only when it tightens a database file's
//! permissions on open, and stores no secrets: only directory and workspace
//! attributes, plans and results.
//!
//! Storage choices:
//! - file databases use WAL, `synchronous=FULL`, `foreign_keys=ON` and a 5 s busy
//!   timeout; writes take the lock up front (`BEGIN IMMEDIATE`). FULL because a
//!   journal row committed `in_flight` must survive a power loss: under NORMAL the
//!   last commits may roll back, and a write already sent would be unrecorded;
//! - the schema version is `PRAGMA user_version` (see [`migrations`]); a database
//!   newer than this binary is refused;
//! - timestamps are RFC 3339 UTC text with nine fraction digits (see `codec`);
//! - each snapshot is one JSON document per run and side (`directory_snapshots`,
//!   `workspace_snapshots`), and so is a plan's drift (`plan_drift`): written
//!   whole, read whole;
//! - JSON columns (snapshot bodies, `payload`, `result`, reports) are text;
//! - the directory snapshot's `complete` flag is on the run (`runs.directory_complete`),
//!   and so is the source check's refusal of it (`runs.directory_refused`), set
//!   before the run stores its workspace snapshot;
//! - the safety net's state (accepted directory sizes, audit trail, decisions on
//!   held actions, circuit breaker, settle-window sightings) is in `safety`, in
//!   tables that do not cascade from `runs`.
//!
//! Run as root, the database is opened only as a plain file of its folder's
//! owner, with its side files too, and never through a link
//! (`file_to_open`): the state folder is the service user's to change.
//!
//! `backup` takes a consistent copy while other processes write (`seatwarden
//! backup`); a copy restored in place of the file is opened like any database,
//! and migrated forward when an older build wrote it. `outfile` writes the files a
//! person keeps (that backup, an export's `--output`): beside their name, owner-only,
//! synced and renamed, never over the state database.

mod backup;
mod codec;
mod error;
pub mod migrations;
pub mod outfile;
mod snapshot;

mod daemon;
mod export;
mod journal;
mod outbox;
mod safety;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::model::{Action, LinkMethod, NewLink};

pub use backup::{Backup, BackupError, backup};
use codec::{Ts, ts};
pub use daemon::{JobRecord, OutboxBacklog, Pruned};
use error::Context;
pub use error::{StoreError, failure_hint, failure_hint_of, read_only_hint};
pub use journal::{AppliedElsewhere, ApprovedDeprovision, Rejected, RejectedApproval};
pub use outbox::{
    AlertRecord, AlertRecordState, AlertsSeen, DecidedHold, NewMessage, OutboxEntry, OutboxId,
    OutboxKind, OutboxState, OutboxWaiting,
};
pub use safety::{AuditEntry, AuditFilter, AuditRow, Decision, DecisionSummary, NewerRejection};
#[cfg(test)]
pub(crate) use writer::lock_error;
pub use writer::{
    Acquired, LockHolder, SenderLock, Senders, WriterLock, lock_file_hint, lock_file_path,
    lock_holder, lock_is_held, open_lock_file,
};

pub type RunId = i64;

/// How long a statement waits for another connection's lock before SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Plan,
    Reconcile,
    DryRun,
    /// The daemon's deprovisioning fast path.
    Sweep,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Plan => "plan",
            RunKind::Reconcile => "reconcile",
            RunKind::DryRun => "dry_run",
            RunKind::Sweep => "sweep",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run that ends with held or failed actions is still `Succeeded`: the run did
/// its job; its report says what is held or failing. `Failed` means the run itself
/// could not complete (a snapshot could not be read, the store failed, ...).
/// `Stopped` means the process was asked to stop (the daemon's SIGTERM): what
/// was sent is finished and verified, the rest is left for the next run. That is
/// no fault, so it is neither a failure in the digest nor a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub kind: RunKind,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// The error [`Store::close_interrupted_runs`] records on a run it closes.
pub const INTERRUPTED_RUN_ERROR: &str = "interrupted: the process stopped before the run finished";

impl RunRecord {
    /// Cut off, and closed since by [`Store::close_interrupted_runs`] (a later
    /// writer, whose recovery resolved what it left in flight).
    pub fn closed_as_interrupted(&self) -> bool {
        self.status == RunStatus::Failed && self.error.as_deref() == Some(INTERRUPTED_RUN_ERROR)
    }
}

/// Where one journaled action stands.
///
/// ```text
/// Planned ──► InFlight ──► Applied
///               ▲  │
///               │  ▼
///              Failed          Held (never started; waits for approval)
/// ```
/// `InFlight` may be re-entered (a resumed action after a crash) and counts another
/// attempt each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    Planned,
    InFlight,
    Applied,
    Failed,
    Held,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Planned => "planned",
            ActionState::InFlight => "in_flight",
            ActionState::Applied => "applied",
            ActionState::Failed => "failed",
            ActionState::Held => "held",
        }
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the action journal. The action's position is `action.seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub run: RunId,
    pub action: Action,
    pub state: ActionState,
    /// How many times the action was marked in flight.
    pub attempts: u32,
    /// The most recent failure; kept after a later success, for the report. On
    /// an applied row, a note on how it was done instead
    /// ([`crate::apply::ALREADY_GONE`]: its account was already deleted).
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Where one journaled action stands, without the action itself: what a report
/// needs from the journal when the plan is still in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionProgress {
    pub seq: u32,
    pub state: ActionState,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLink {
    pub identity_id: String,
    pub account_id: String,
    pub method: LinkMethod,
    pub linked_at: DateTime<Utc>,
}

/// Of a run `r`: a reconcile [`Store::unsucceeded_reconciles_with_deprovisions`]
/// lists, which every writer asks again for its unrecorded deprovisions. The
/// prune keeps the episodes ended since such a run began
/// ([`Store::prune_before`]): they are what tells it who is back.
pub(crate) const ASKED_AGAIN: &str = "r.kind = 'reconcile' AND r.status IN ('failed', 'stopped')
     AND r.id > coalesce((SELECT max(id) FROM runs
                          WHERE kind = 'reconcile' AND status = 'succeeded'), 0)
     AND EXISTS (SELECT 1 FROM actions
                 WHERE run_id = r.id AND state = 'applied'
                   AND kind IN ('deactivate', 'delete'))";

/// The state database. One connection; not `Sync` (wrap it in a mutex to share).
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const RUN_COLUMNS: &str = "id, kind, status, started_at, finished_at, error";

fn run_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: row.get(0)?,
        kind: row.get(1)?,
        status: row.get(2)?,
        started_at: row.get::<_, Ts>(3)?.0,
        finished_at: row.get::<_, Option<Ts>>(4)?.map(|t| t.0),
        error: row.get(5)?,
    })
}

/// Options that create a file only its owner can read and write (on Unix; the
/// lock files and the database's first creation use them).
pub fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// The largest `-wal` file kept after a checkpoint (`PRAGMA journal_size_limit`).
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// `PRAGMA journal_mode = wal`, tried again while another connection holds the
/// file: SQLite answers the change `SQLITE_BUSY` at once, without waiting as the
/// busy timeout does for other statements, when another process opens the same
/// new database at that moment (a daemon's first start, a command beside it).
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            answer => return answer,
        }
    }
}

/// Refuses another program's database: schema version 0 (seatwarden's migrations
/// set it in the transaction that creates the tables, so none of its databases
/// has tables at 0) with tables in it. An empty file, or a new one, is migrated.
fn refuse_foreign(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    // One statement, so one snapshot: read apart, the version could be read
    // before another process's migration committed and the tables after it, and
    // seatwarden's own new database looked like another program's.
    let mut statement = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table'
               AND (SELECT user_version FROM pragma_user_version) = 0
             ORDER BY name LIMIT 4",
        )
        .map_err(error)?;
    let tables: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(error)?;
    if tables.is_empty() {
        return Ok(());
    }
    let mut named = tables
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > 3 {
        named.push_str(", …");
    }
    Err(StoreError::Foreign {
        path: path.to_owned(),
        tables: named,
    })
}

/// Makes the database at `path` and its `-wal` and `-shm` files, where they exist,
/// readable and writable by their owner only (0600) when the group or others have
/// any access: a database created by a version that did not restrict it (or
/// copied in under a loose umask) is tightened on the next open. A file that
/// cannot be changed (owned by another user) is left as it is, with a warning.
#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        let Some((metadata, unfollowed)) = look_unfollowed(&file) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&unfollowed.path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::info!(
                file = %file.display(),
                was = format_args!("{mode:04o}"),
                "the state database was readable by other users; made it readable by its owner only (0600)"
            ),
            Err(e) => tracing::warn!(
                file = %file.display(),
                mode = format_args!("{mode:04o}"),
                error = %e,
                "the state database is readable by other users and its mode cannot be changed"
            ),
        }
    }
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

/// A file to change the mode of, named so that no link is followed to it:
/// on Linux `/proc/self/fd/N` of an `O_PATH | O_NOFOLLOW` descriptor, kept
/// open as long as this lives. By its own name, a link the folder's owner
/// swapped in between the look and the change had the change follow out of
/// the state folder (as root, to any file). `O_PATH`, because closing any
/// other descriptor of the database or its `-shm` would drop the POSIX
/// locks SQLite's connections in this process hold on it; an `O_PATH` one
/// holds and drops none.
#[cfg(unix)]
struct Unfollowed {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    _opened: std::fs::File,
}

/// The file at `file` itself (a link is not followed: its own metadata),
/// and how to name it for a change ([`Unfollowed`]).
#[cfg(target_os = "linux")]
fn look_unfollowed(file: &Path) -> Option<(std::fs::Metadata, Unfollowed)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(file)
        .ok()?;
    let metadata = opened.metadata().ok()?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
    Some((
        metadata,
        Unfollowed {
            path,
            _opened: opened,
        },
    ))
}

/// Elsewhere the file is looked at and changed by name (a link swapped in
/// between would be followed: no `O_PATH`).
#[cfg(all(unix, not(target_os = "linux")))]
fn look_unfollowed(file: &Path) -> Option<(std::fs::Metadata, Unfollowed)> {
    let metadata = std::fs::symlink_metadata(file).ok()?;
    Some((
        metadata,
        Unfollowed {
            path: file.to_owned(),
        },
    ))
}

/// Whether this process runs as root: the owner of its `/proc` entry (the
/// crate forbids `unsafe`, so no `geteuid`). Where there is no `/proc`, it
/// does not, and nothing is refused.
pub(crate) fn runs_as_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|own| own.uid() == 0)
    }
    #[cfg(not(unix))]
    false
}

/// The files SQLite keeps beside a database.
const SQLITE_SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The file to hand SQLite for the state database at `path`, and whether
/// SQLite must refuse a symbolic link in its path (`SQLITE_OPEN_NOFOLLOW`).
///
/// Run by the service's own user, `path` as it is, links followed: that user
/// reaches nothing through a link it could not open by name, and an
/// administrator's `state.db` linked onto another disk keeps working.
///
/// Run as root ([`runs_as_root`]: `sudo seatwarden status`, `approve`,
/// `backup`) on a folder another user controls, following is how that user
/// gets root to write where it cannot: a `state.db` (or `-wal`, `-shm`,
/// `-journal`) linked to another SQLite file root can write would be migrated
/// and written into, one linked to any file chmod-ed and overwritten by the
/// log. So root resolves the folder alone (a link root made to it, systemd's
/// `/var/lib/seatwarden` → `private/seatwarden`, is followed once, here),
/// refuses a database or side file that is a link or is not its folder
/// owner's ([`StoreError::RootRefusesFile`]), and opens with NOFOLLOW: a link
/// swapped in after this look is refused by SQLite itself (which opens the
/// side files with `O_NOFOLLOW` too), not followed.
fn file_to_open(path: &Path, create: bool) -> Result<(PathBuf, bool), StoreError> {
    if !runs_as_root() {
        return Ok((path.to_owned(), false));
    }
    #[cfg(unix)]
    {
        root_checked(path, create).map(|file| (file, true))
    }
    #[cfg(not(unix))]
    {
        let _ = create;
        Ok((path.to_owned(), false))
    }
}

/// [`file_to_open`] as root: the database's path with its folder resolved,
/// once the database and its side files, where they exist, are plain files of
/// the folder's owner. A folder that cannot be resolved (missing) is left to
/// the open, which fails on it with its own message.
#[cfg(unix)]
fn root_checked(path: &Path, create: bool) -> Result<PathBuf, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let (Some(name), Ok(folder)) = (path.file_name(), folder.canonicalize()) else {
        return Ok(path.to_owned());
    };
    let Ok((folder_owner, folder_group)) =
        std::fs::metadata(&folder).map(|folder| (folder.uid(), folder.gid()))
    else {
        return Ok(path.to_owned());
    };
    let database = folder.join(name);
    let refuse = |file: &Path, why: String, uid: u32| StoreError::RootRefusesFile {
        path: path.to_owned(),
        file: file.to_owned(),
        why,
        uid,
    };
    let files = std::iter::once(database.clone()).chain(
        SQLITE_SIDE_FILES
            .iter()
            .map(|suffix| outfile::with_suffix(&database, suffix)),
    );
    for file in files {
        let Ok(found) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        if found.file_type().is_symlink() {
            let leads_to = std::fs::read_link(&file).unwrap_or_default();
            let uid = if folder_owner != 0 {
                folder_owner
            } else {
                std::fs::metadata(&file).map_or(0, |target| target.uid())
            };
            return Err(refuse(
                &file,
                format!("is a symbolic link (to {})", leads_to.display()),
                uid,
            ));
        }
        if found.uid() != folder_owner {
            let mut why = format!(
                "belongs to uid {}, and its folder {} to uid {folder_owner}",
                found.uid(),
                folder.display()
            );
            // Root's own file of one link: left by a command root ran there
            // before it was refused (an older seatwarden made the database
            // root's). The service's user cannot open it either, so "run as
            // that user" alone is a dead end. A hard link (more than one) may
            // be any file of root's: never to be given away.
            if found.uid() == 0 && found.nlink() == 1 {
                why.push_str(&format!(
                    " (root's own file, which the service's user cannot open either: if it \
                     is the state database's, give it back with `chown \
                     {folder_owner}:{folder_group} {}`)",
                    crate::model::shell_word(&file.to_string_lossy())
                ));
            }
            return Err(refuse(&file, why, folder_owner.max(found.uid())));
        }
    }
    if create && folder_owner != 0 && std::fs::symlink_metadata(&database).is_err() {
        return Err(refuse(
            &database,
            format!(
                "does not exist yet, and root would make it root's in a folder of uid \
                 {folder_owner}, where the service could not open it"
            ),
            folder_owner,
        ));
    }
    Ok(database)
}

/// The error of opening `file` (the state database at `path`): SQLite's
/// refusal of a symbolic link (`SQLITE_OPEN_NOFOLLOW`: one put there after
/// [`root_checked`] looked) said as root's refusal, any other as it is.
fn refused_link(path: &Path, file: &Path, source: rusqlite::Error) -> StoreError {
    /// `SQLITE_CANTOPEN_SYMLINK`: `SQLITE_CANTOPEN | (6 << 8)`.
    const CANTOPEN_SYMLINK: std::ffi::c_int = rusqlite::ffi::SQLITE_CANTOPEN | (6 << 8);
    match &source {
        rusqlite::Error::SqliteFailure(error, _) if error.extended_code == CANTOPEN_SYMLINK => {
            StoreError::RootRefusesFile {
                path: path.to_owned(),
                file: file.to_owned(),
                why: "is a symbolic link, or a folder on its path is".to_owned(),
                uid: 0,
            }
        }
        _ => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

impl Store {
    /// Opens (creating if missing) the database at `path` and migrates it. A new
    /// database is made readable by its owner only (SQLite gives its `-wal` and
    /// `-shm` files the same mode), and an existing one that the group or others
    /// can read is made so ([`restrict_permissions`]): it holds both snapshots,
    /// the leavers' ledger and the outbox, and a command run from a shell has a
    /// umask that would let every local user read them.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, true)
    }

    /// Opens the database at `path` only if a file is there: never makes a new
    /// one. For the daemon's jobs, which must not begin again from an empty
    /// database where the one they run on was deleted under them.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let (file, no_follow) = file_to_open(path, create)?;
        if create && !file.exists() {
            match private_file().create_new(true).open(&file) {
                Ok(_) => {}
                // Made by another process meanwhile: SQLite opens it as it is.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StoreError::Create {
                        path: path.to_owned(),
                        source: e,
                    });
                }
            }
        }
        let mut flags = if create {
            OpenFlags::default()
        } else {
            // Without CREATE, SQLite fails on a missing file where it would
            // otherwise make one, and nothing can delete it between a check and
            // the open.
            OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE
        };
        if no_follow {
            flags |= OpenFlags::SQLITE_OPEN_NOFOLLOW;
        }
        let conn = Connection::open_with_flags(&file, flags)
            .map_err(|source| refused_link(path, &file, source))?;
        // Before the first read: another process creating or migrating the same
        // new file (a daemon's first start, `seatwarden status` beside it) holds
        // its lock for a moment, which is waited for, not an error.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        refuse_foreign(&conn, path)?;
        restrict_permissions(&file);
        let mut store = Store {
            conn,
            path: Some(path.to_owned()),
        };
        store.configure().map_err(open_error)?;
        let mode = enable_wal(&store.conn).map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        store.migrate()?;
        Ok(store)
    }

    /// A private, empty, migrated database that lives as long as the `Store`.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        let mut store = Store { conn, path: None };
        store.configure().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        self.conn.pragma_update(None, "foreign_keys", true)?;
        // Not NORMAL: see the module docs (an in-flight row lost to a power cut).
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        // 32 MiB page cache: a 100k-account snapshot fits without spilling mid-write.
        self.conn.pragma_update(None, "cache_size", -32_768)?;
        // A `-wal` file grown by a large write (a snapshot, VACUUM) is cut back to
        // 64 MiB at the next checkpoint that resets it, rather than kept at its peak.
        self.conn
            .pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        self.conn.set_prepared_statement_cache_capacity(64);
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let shown = self.display_path();
        migrations::migrate(&mut self.conn, &shown)
    }

    fn display_path(&self) -> String {
        self.path
            .as_deref()
            .map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string())
    }

    /// The database file; `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .context(|| format!("reading the schema version of {}", self.display_path()))
    }

    /// Takes and releases the write lock: fails when the file is read-only or another
    /// process holds the lock past the busy timeout (then `is_transient()`).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let context = || format!("checking that {} is writable", self.display_path());
        // BEGIN IMMEDIATE succeeds on a read-only connection; ask explicitly.
        if self.conn.is_readonly(rusqlite::MAIN_DB).context(context)? {
            return Err(StoreError::Sqlite {
                context: context(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                    Some("the database is open read-only".to_owned()),
                ),
            });
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .context(context)?;
        self.conn.execute_batch("ROLLBACK").context(context)
    }

    /// [`Store::check_writable`] without waiting: for a readiness probe, which must
    /// answer within the orchestrator's timeout (often a second) while a job holds
    /// the write lock for longer (a big snapshot, the nightly VACUUM). A lock held
    /// by another writer means the database takes writes, so busy counts as ready.
    pub fn probe_writable(&self) -> Result<(), StoreError> {
        let context = || format!("checking that {} is writable", self.display_path());
        self.conn.busy_timeout(Duration::ZERO).context(context)?;
        let checked = match self.check_writable() {
            Err(StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            }) if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
            {
                Ok(())
            }
            other => other,
        };
        self.conn.busy_timeout(BUSY_TIMEOUT).context(context)?;
        checked
    }

    /// Runs `f` inside one write transaction: every journal update it makes commits
    /// together (or not at all, if `f` fails). Many small updates cost one commit.
    /// For single-statement updates (`mark_*`, `record_result`); methods that open
    /// their own transaction (snapshots, plans, links) cannot run inside it.
    pub fn batch<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let context = || "starting a batch of journal updates".to_owned();
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .context(context)?;
        match f(self) {
            Ok(value) => {
                self.conn
                    .execute_batch("COMMIT")
                    .context(|| "committing a batch of journal updates".to_owned())?;
                Ok(value)
            }
            Err(error) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(error)
            }
        }
    }

    fn write_tx(
        &mut self,
        context: impl FnOnce() -> String,
    ) -> Result<rusqlite::Transaction<'_>, StoreError> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context(context)
    }

    // ---- runs -------------------------------------------------------------------

    pub fn begin_run(&mut self, kind: RunKind, at: DateTime<Utc>) -> Result<RunId, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO runs (kind, status, started_at) VALUES (?1, 'running', ?2)",
            )
            .and_then(|mut stmt| stmt.insert(params![kind, ts(at)]))
            .context(|| format!("starting a {kind} run in runs"))
    }

    /// Marks failed the reconciles and sweeps still `running`: the caller holds the
    /// writer lock, which every such run holds until it finishes, so these were cut
    /// off (killed, a crash, the daemon's stop grace running out). Left running, a
    /// run would never be pruned and would read as still going. Their journaled
    /// actions are not touched: `apply::recover` resolves those. Returns the runs
    /// it closed.
    pub fn close_interrupted_runs(
        &mut self,
        at: DateTime<Utc>,
    ) -> Result<Vec<(RunId, RunKind)>, StoreError> {
        let context = || "closing interrupted runs in runs".to_owned();
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE runs SET status = 'failed', finished_at = ?1, error = ?2
                 WHERE status = 'running' AND kind IN ('reconcile', 'sweep')
                 RETURNING id, kind",
            )
            .context(context)?;
        let closed = stmt
            .query_map(params![ts(at), INTERRUPTED_RUN_ERROR], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .context(context)?
            .collect::<Result<Vec<(RunId, RunKind)>, _>>()
            .context(context)?;
        Ok(closed)
    }

    /// The reconciles before `run` closed as interrupted
    /// ([`RunRecord::closed_as_interrupted`]) since the last reconcile before it
    /// that was not (one that finished, failed or stopped by itself), oldest first:
    /// cut off, and recorded nothing in the ledger, whoever closed them since (an
    /// `approve`, a sweep, `run` itself as it began).
    pub fn interrupted_reconciles_before(&self, run: RunId) -> Result<Vec<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs
                 WHERE kind = 'reconcile' AND id < ?1 AND status = 'failed' AND error = ?2
                   AND id > coalesce((SELECT max(id) FROM runs
                                      WHERE kind = 'reconcile' AND id < ?1
                                        AND status != 'running'
                                        AND NOT (status = 'failed' AND error IS ?2)), 0)
                 ORDER BY id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![run, INTERRUPTED_RUN_ERROR], |row| row.get(0))?
                    .collect()
            })
            .context(|| format!("reading the reconciles interrupted before run {run} from runs"))
    }

    /// The reconciles that ended without succeeding (failed, stopped, closed as
    /// interrupted) since the last one that succeeded, oldest first, and only
    /// those with a deprovision applied: each wrote its deprovisions into the
    /// ledger as it ended, unless that write failed too (the disk full by
    /// then), and nothing else would ([`crate::sweep::record_cut_off_applied`]).
    pub fn unsucceeded_reconciles_with_deprovisions(&self) -> Result<Vec<RunId>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT id FROM runs AS r WHERE {ASKED_AGAIN} ORDER BY id"
            ))
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .context(|| "reading the reconciles that did not succeed from runs".to_owned())
    }

    /// Ends a running run. `status` must be final; a run is finished once.
    pub fn finish_run(
        &mut self,
        run: RunId,
        at: DateTime<Utc>,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if status == RunStatus::Running {
            return Err(StoreError::FinalStatusRequired { run });
        }
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4
                 WHERE id = ?1 AND status = 'running'",
            )
            .and_then(|mut stmt| stmt.execute(params![run, status, ts(at), error]))
            .context(|| format!("finishing run {run} in runs"))?;
        if changed == 1 {
            return Ok(());
        }
        match self.run(run)? {
            None => Err(StoreError::UnknownRun {
                run,
                context: "finishing it",
            }),
            Some(record) => Err(StoreError::RunNotRunning {
                run,
                status: record.status,
            }),
        }
    }

    pub fn run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
            .and_then(|mut stmt| stmt.query_row([run], run_record).optional())
            .context(|| format!("reading run {run} from runs"))
    }

    /// `run` as recorded, and whether it was cut off: recorded as running while
    /// nobody holds this database's writer lock. A reconcile or sweep holds that
    /// lock from its start to its end, so only theirs can be told; a plan recorded
    /// as running may be under way or dead, and is never called cut off (nor is
    /// any run of an in-memory store). `status` tells the last reconcile by the
    /// same rule.
    pub fn run_and_whether_cut_off(
        &self,
        run: RunId,
    ) -> Result<Option<(RunRecord, bool)>, StoreError> {
        let Some(record) = self.run(run)? else {
            return Ok(None);
        };
        let holds_the_writer_lock = matches!(record.kind, RunKind::Reconcile | RunKind::Sweep);
        let Some(database) = self.path() else {
            return Ok(Some((record, false)));
        };
        if record.status != RunStatus::Running || !holds_the_writer_lock {
            return Ok(Some((record, false)));
        }
        // Held for one read only: a writer starting meanwhile waits for it.
        let Some(_idle) = WriterLock::try_acquire(database)? else {
            return Ok(Some((record, false)));
        };
        // Under the lock no run starts or ends: read again.
        Ok(self.run(run)?.map(|record| {
            let cut_off = record.status == RunStatus::Running;
            (record, cut_off)
        }))
    }

    /// The newest run (highest id) of any of `kinds`; any kind when `kinds` is empty.
    pub fn latest_run(&self, kinds: &[RunKind]) -> Result<Option<RunRecord>, StoreError> {
        let context = || {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            format!(
                "finding the latest run of kinds [{}] in runs",
                names.join(", ")
            )
        };
        if kinds.is_empty() {
            return self
                .conn
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT 1"
                ))
                .and_then(|mut stmt| stmt.query_row([], run_record).optional())
                .context(context);
        }
        let placeholders = vec!["?"; kinds.len()].join(", ");
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE kind IN ({placeholders})
                 ORDER BY id DESC LIMIT 1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(rusqlite::params_from_iter(kinds), run_record)
                    .optional()
            })
            .context(context)
    }

    /// The newest reconcile that stored its plan (journal rows, drift) or its
    /// report: the one whose held actions wait for a decision. A newer one that
    /// failed or was stopped before it planned (the directory unreachable, say)
    /// replaced none of them, and must not hide them.
    pub fn latest_planned_reconcile(&self) -> Result<Option<RunRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs AS r
                 WHERE r.kind = 'reconcile'
                   AND (EXISTS (SELECT 1 FROM reports WHERE run_id = r.id)
                        OR EXISTS (SELECT 1 FROM actions WHERE run_id = r.id)
                        OR EXISTS (SELECT 1 FROM plan_drift WHERE run_id = r.id))
                 ORDER BY r.id DESC LIMIT 1"
            ))
            .and_then(|mut stmt| stmt.query_row([], run_record).optional())
            .context(|| "finding the latest reconcile that planned in runs".to_owned())
    }

    /// Deletes runs older than `run` (lower ids) and, by cascade, their snapshots,
    /// journal, drift items and reports. Runs with actions still in flight are kept:
    /// a restart must be able to resume them. Returns how many runs were deleted.
    pub fn prune_runs_before(&mut self, run: RunId) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM runs WHERE id < ?1 AND NOT EXISTS (
                     SELECT 1 FROM actions
                     WHERE actions.run_id = runs.id AND actions.state = 'in_flight')",
            )
            .and_then(|mut stmt| stmt.execute([run]))
            .context(|| format!("pruning runs before run {run} from runs"))
    }

    /// Errors with [`StoreError::UnknownRun`] unless `run` exists.
    fn require_run(conn: &Connection, run: RunId, context: &'static str) -> Result<(), StoreError> {
        let exists = conn
            .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
            .and_then(|mut stmt| stmt.exists([run]))
            .context(|| format!("looking up run {run} in runs ({context})"))?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::UnknownRun { run, context })
        }
    }

    // ---- links ------------------------------------------------------------------

    /// Every stored link, ordered by identity id.
    pub fn links(&self) -> Result<Vec<StoredLink>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT identity_id, account_id, method, linked_at FROM links
                 ORDER BY identity_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    Ok(StoredLink {
                        identity_id: row.get(0)?,
                        account_id: row.get(1)?,
                        method: codec::link_method(row, 2)?,
                        linked_at: row.get::<_, Ts>(3)?.0,
                    })
                })?
                .collect()
            })
            .context(|| "reading links".to_owned())
    }

    /// Identities whose last attempted create failed because the account exists
    /// out of sight (`error_marker` in its error; see `apply::OUT_OF_SIGHT`).
    pub fn creates_out_of_sight(
        &self,
        error_marker: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT DISTINCT a.identity_id FROM actions a
                 WHERE a.kind = 'create_account' AND a.state = 'failed'
                   AND a.identity_id IS NOT NULL AND instr(a.last_error, ?1) > 0
                   AND NOT EXISTS (
                       SELECT 1 FROM actions b
                       WHERE b.identity_id = a.identity_id AND b.kind = 'create_account'
                         AND b.state = 'applied' AND b.run_id > a.run_id)",
            )
            .and_then(|mut stmt| {
                stmt.query_map([error_marker], |row| row.get::<_, String>(0))?
                    .collect()
            })
            .context(|| "reading creates refused out of sight from actions".to_owned())
    }

    /// The identity `account_id` is linked to, if any.
    pub fn identity_linked_to(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT identity_id FROM links WHERE account_id = ?1")
            .and_then(|mut stmt| stmt.query_row([account_id], |row| row.get(0)).optional())
            .context(|| format!("reading the link of account {account_id}"))
    }

    /// Stores `links` in one transaction. The identity id is the key: a new link for
    /// an identity replaces its old one. An account has at most one link: a new link
    /// to an account replaces any other identity's link to it. Re-stating an existing
    /// link keeps its original method and `linked_at`.
    pub fn upsert_links(&mut self, links: &[NewLink], at: DateTime<Utc>) -> Result<(), StoreError> {
        let context = || "storing links".to_owned();
        let tx = self.write_tx(context)?;
        Self::write_links(&tx, links, at)?;
        tx.commit().context(context)
    }

    /// [`Store::upsert_links`] without a transaction of its own: for a
    /// [`Store::batch`], as `seatwarden link` stores its link with its ledger
    /// changes and audit row, whole or not at all.
    pub fn upsert_links_in_batch(
        &mut self,
        links: &[NewLink],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Self::write_links(&self.conn, links, at)
    }

    fn write_links(
        conn: &rusqlite::Connection,
        links: &[NewLink],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let context = || "storing links".to_owned();
        let at = ts(at);
        let mut unlink = conn
            .prepare_cached("DELETE FROM links WHERE account_id = ?1 AND identity_id <> ?2")
            .context(context)?;
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO links (identity_id, account_id, method, linked_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (identity_id) DO UPDATE
                    SET account_id = excluded.account_id,
                        method = excluded.method,
                        linked_at = excluded.linked_at
                    WHERE links.account_id <> excluded.account_id",
            )
            .context(context)?;
        for link in links {
            let values = params![link.identity_id, link.account_id, link.method.as_str(), at];
            // Most links are new and conflict with nothing, so the unlink runs
            // only when the account is still linked to another identity (the
            // upsert then fails on `account_id`'s uniqueness and changes
            // nothing): on a first run over 100k accounts, that halves the
            // statements.
            match upsert.execute(values) {
                Err(e) if is_unique_violation(&e) => {
                    unlink
                        .execute(params![link.account_id, link.identity_id])
                        .context(context)?;
                    upsert.execute(values).context(context)?;
                }
                other => {
                    other.context(context)?;
                }
            }
        }
        Ok(())
    }

    /// Forgets the link to `account_id`, one statement: `seatwarden unlink` runs
    /// it in a [`Store::batch`] with its ledger change and audit row, so the
    /// decision is stored whole or not at all.
    pub fn remove_link_to_account(&mut self, account_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM links WHERE account_id = ?1")
            .and_then(|mut stmt| stmt.execute([account_id]))
            .map(|_| ())
            .context(|| format!("removing the link to account {account_id} from links"))
    }

    /// Forgets the links to these accounts (they were deleted from the workspace).
    pub fn remove_links_to_accounts(&mut self, account_ids: &[String]) -> Result<(), StoreError> {
        let context = || "removing links to deleted accounts from links".to_owned();
        let tx = self.write_tx(context)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM links WHERE account_id = ?1")
                .context(context)?;
            for account_id in account_ids {
                delete.execute([account_id]).context(context)?;
            }
        }
        tx.commit().context(context)
    }

    // ---- reports ----------------------------------------------------------------

    /// Stores (or replaces) the run's report; `report_json` must be valid JSON.
    pub fn save_report(&mut self, run: RunId, report_json: &str) -> Result<(), StoreError> {
        Self::require_run(&self.conn, run, "saving its report")?;
        self.conn
            .prepare_cached(
                "INSERT INTO reports (run_id, json) VALUES (?1, ?2)
                 ON CONFLICT (run_id) DO UPDATE SET json = excluded.json",
            )
            .and_then(|mut stmt| stmt.execute(params![run, report_json]))
            .context(|| format!("saving the report of run {run} in reports"))?;
        Ok(())
    }

    /// The report of the newest run of `kind` that succeeded (a reconcile, or a
    /// dry run for a daemon in `schedule.dry_run`), or, `trusted`, of the newest
    /// such one that rejected no directory (no `safety.source_fault`): what the
    /// daemon's reconcile gauges showed before a restart.
    pub fn latest_reconcile_report(
        &self,
        kind: RunKind,
        trusted: bool,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT reports.json FROM reports JOIN runs ON runs.id = reports.run_id
                 WHERE runs.kind = ?1 AND runs.status = 'succeeded'
                   AND (NOT ?2 OR json_extract(reports.json, '$.safety.source_fault') IS NULL)
                 ORDER BY reports.run_id DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![kind.as_str(), trusted], |row| row.get(0))
                    .optional()
            })
            .context(|| format!("reading the latest {}'s report from reports", kind.as_str()))
    }

    /// The report of the newest run of `kind` that succeeded from a directory
    /// read whole and not refused and a workspace listed whole (no
    /// `safety.source_fault`, no `safety.directory_incomplete`, no
    /// `safety.workspace_listing_short`): the findings only a plan tells as it
    /// last told them all, which the daemon's gauges restart from.
    pub fn latest_reconcile_report_read_whole(
        &self,
        kind: RunKind,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT reports.json FROM reports JOIN runs ON runs.id = reports.run_id
                 WHERE runs.kind = ?1 AND runs.status = 'succeeded'
                   AND json_extract(reports.json, '$.safety.source_fault') IS NULL
                   AND json_extract(reports.json, '$.safety.directory_incomplete') IS NULL
                   AND json_extract(reports.json, '$.safety.workspace_listing_short') IS NULL
                 ORDER BY reports.run_id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([kind.as_str()], |row| row.get(0)).optional())
            .context(|| {
                format!(
                    "reading the latest {}'s report from a whole directory read from reports",
                    kind.as_str()
                )
            })
    }

    /// Whether any succeeded run of `kind` since the newest one that read both
    /// sides whole ([`Store::latest_reconcile_report_read_whole`]), its
    /// directory read incomplete or its workspace listing short (and its
    /// directory not refused), listed accounts protected by person,
    /// and whether any listed protected leavers: what such runs raised the
    /// daemon's gauges to, which only a whole read lowers again. Read from the
    /// stored reports without parsing them whole: a directory that reads
    /// incomplete for days leaves hundreds.
    pub fn incomplete_reads_listed_protected(
        &self,
        kind: RunKind,
    ) -> Result<(bool, bool), StoreError> {
        self.conn
            .prepare_cached(
                "SELECT
                   COALESCE(MAX(COALESCE(json_array_length(reports.json,
                       '$.safety.protected_by_person'), 0) > 0), 0),
                   COALESCE(MAX(COALESCE(json_array_length(reports.json,
                       '$.safety.protected_leavers'), 0) > 0), 0)
                 FROM reports JOIN runs ON runs.id = reports.run_id
                 WHERE runs.kind = ?1 AND runs.status = 'succeeded'
                   AND json_extract(reports.json, '$.safety.source_fault') IS NULL
                   AND (json_extract(reports.json, '$.safety.directory_incomplete') = 1
                        OR json_extract(reports.json, '$.safety.workspace_listing_short') = 1)
                   AND reports.run_id > COALESCE((
                       SELECT whole.run_id FROM reports AS whole
                         JOIN runs AS whole_run ON whole_run.id = whole.run_id
                       WHERE whole_run.kind = ?1 AND whole_run.status = 'succeeded'
                         AND json_extract(whole.json, '$.safety.source_fault') IS NULL
                         AND json_extract(whole.json, '$.safety.directory_incomplete') IS NULL
                         AND json_extract(whole.json, '$.safety.workspace_listing_short')
                             IS NULL
                       -- Newest first, stopping at the first: not every report parsed.
                       ORDER BY whole.run_id DESC LIMIT 1
                   ), 0)",
            )
            .and_then(|mut stmt| {
                stmt.query_row([kind.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
            })
            .context(|| {
                format!(
                    "reading what the {}s since the last whole directory read listed as \
                     protected from reports",
                    kind.as_str()
                )
            })
    }

    /// The newest stored report of a succeeded reconcile of `kind` that could
    /// tell whether an exception names nobody (its reads were whole and
    /// accepted: `safety.exceptions_naming_nobody_unknown` is absent).
    pub fn latest_report_telling_exceptions(
        &self,
        kind: RunKind,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT reports.json FROM reports JOIN runs ON runs.id = reports.run_id
                 WHERE runs.kind = ?1 AND runs.status = 'succeeded'
                   AND json_extract(reports.json, '$.safety.exceptions_naming_nobody_unknown')
                       IS NULL
                 ORDER BY reports.run_id DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![kind.as_str()], |row| row.get(0))
                    .optional()
            })
            .context(|| format!("reading the latest {}'s report from reports", kind.as_str()))
    }

    pub fn report(&self, run: RunId) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT json FROM reports WHERE run_id = ?1")
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("reading the report of run {run} from reports"))
    }
}

/// A `UNIQUE` or `PRIMARY KEY` constraint refused the statement.
fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error().map(|e| e.extended_code),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}
