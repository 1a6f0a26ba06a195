//! The store's one error type. Every variant says what failed and where (the table,
//! the run, the action, the database path), never the data involved: no values from
//! rows appear in messages, so nothing sensitive can leak through an error.

use std::path::PathBuf;

use rusqlite::ErrorCode;

use super::{ActionState, RunId, RunStatus};

/// What to do when the database file could not be created: its folder is
/// missing, its user may not write there, or the file system is read-only to
/// seatwarden ([`read_only_hint`]).
fn create_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            "; its folder does not exist: create it, writable by the user seatwarden runs \
             as (systemd's StateDirectory= does for the service), or point state.path \
             elsewhere"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; the user seatwarden runs as may not write to its folder: give it the folder \
             (chown), or point state.path elsewhere"
        }
        _ => read_only_hint(error),
    }
}

/// What to do when the state database or a lock file next to it cannot be
/// written because the file system is read-only there: the shipped unit's
/// `ProtectSystem=strict` makes everything but its StateDirectory read-only, as
/// `docker run --read-only` does all but the volume, and "Read-only file system"
/// alone names neither. Empty for any other error.
pub fn read_only_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => {
            "; the file system is read-only there, as seatwarden sees it: under the \
             systemd unit (ProtectSystem=strict) only /var/lib/seatwarden (its \
             StateDirectory) is writable, in a container only the volume: keep state.path \
             there, or make the folder writable (ReadWritePaths= in a drop-in)"
        }
        _ => "",
    }
}

/// What to do about [`StoreError::RootRefusesFile`]: run the command as the
/// user that owns the state folder, which may follow its own links.
fn root_refusal_hint(uid: u32) -> String {
    if uid == 0 {
        "run the command as the user the service runs as (`sudo -u '#UID' seatwarden …`, \
         `sudo seatwarden-admin …` under systemd), or point state.path at the file itself"
            .to_owned()
    } else {
        format!(
            "run the command as the user the service runs as: `sudo -u '#{uid}' seatwarden …` \
             (`sudo seatwarden-admin …` under systemd)"
        )
    }
}

/// What to do when SQLite refuses the state database at `path` with `code` for a
/// reason of the file or its disk; `None` for any other code. Said after the
/// error by the commands and the daemon's job failures: what was sent to the
/// workspace is journaled, so the run that follows resumes without sending it
/// twice, once the cause is fixed. The `backup` a damaged database's hint names
/// is spelled with `admin_command` (`report.admin_command`, which the store
/// does not know): the hint reaches `status` and the repeated-failure alert,
/// read by people who do not know how seatwarden is run on its host.
pub fn failure_hint(
    code: ErrorCode,
    path: &std::path::Path,
    admin_command: &str,
) -> Option<String> {
    let path = path.display();
    Some(match code {
        ErrorCode::DiskFull => format!(
            "the disk holding the state database {path} is full: free space there (the \
             database and its -wal grow with every run), then run it again; what was \
             already sent is journaled and is not sent twice"
        ),
        ErrorCode::ReadOnly => format!(
            "the state database {path} cannot be written: give the user seatwarden runs as \
             write access to it, its -wal and -shm and its folder (chown), or mount it \
             read-write, then run it again"
        ),
        ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => format!(
            "the state database {path} is damaged: stop the daemon, move the file aside \
             with its -wal and -shm, and restore the last backup (`{admin_command} backup` \
             made it; see \"Backing up and restoring the state\" in the README)"
        ),
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => format!(
            "another process held a write transaction on the state database {path} \
             longer than the busy timeout (a sqlite3 shell left in a transaction?): end \
             it, then run it again"
        ),
        ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => format!(
            "the state database {path} (or its -wal, -shm or folder) could not be read \
             or written: check the disk, its free space and the file's permissions"
        ),
        _ => return None,
    })
}

/// [`failure_hint`] for the first SQLite error among `error` and its causes.
pub fn failure_hint_of(
    error: &(dyn std::error::Error + 'static),
    path: &std::path::Path,
    admin_command: &str,
) -> Option<String> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(code) = error
            .downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
        {
            return failure_hint(code, path, admin_command);
        }
        cause = error.source();
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or configured.
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The file at the daemon's `state.path` is no longer the database it opened
    /// at start (deleted, or replaced): a job refuses it rather than make or use
    /// another ([`crate::daemon::DatabaseFile`]). Why, in full.
    #[error("{0}")]
    NotTheDaemons(String),

    /// The database file could not be created (a missing directory, no permission).
    #[error(
        "cannot create the state database {path}: {source}{}",
        create_hint(source)
    )]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A preview copy of the state database (`plan --workspace-moved`) that
    /// root would make in the folder of another user (the service's): refused
    /// before a byte is copied (`Store::copy_to`).
    #[error(
        "not making the preview copy {path} as root: the state database's folder (or the \
         database) belongs to uid {uid} (gid {gid}), the user the service runs as, and root \
         does not write a copy of the database by name in a folder another user controls (a \
         link swapped in would send it elsewhere; a copy a killed command left would stay \
         root's); run the command as that user: `sudo -u '#{uid}' seatwarden …`"
    )]
    RootCopyInOthersFolder { path: PathBuf, uid: u32, gid: u32 },

    /// Root asked to open the state database at `path` where `file` (the
    /// database or a file SQLite keeps beside it) is a symbolic link or another
    /// user's than its folder's owner: refused before SQLite opens anything
    /// (`store::root_checked`). `uid` is the user to run the command as; 0
    /// when none is known.
    #[error(
        "refusing to open the state database {} as root: {} {why}; root opens the state \
         database only as a plain file of its folder's owner (in a folder the service's \
         user controls, a link or a file put there would have root write wherever it \
         leads); {}",
        .path.display(), .file.display(), root_refusal_hint(*uid)
    )]
    RootRefusesFile {
        path: PathBuf,
        file: PathBuf,
        why: String,
        uid: u32,
    },

    /// The file is an SQLite database with tables but no seatwarden schema version:
    /// another program's. Migrating would add seatwarden's tables beside its own
    /// and make it owner-only.
    #[error(
        "{} is not a seatwarden state database: it holds other tables ({tables}) and no \
         seatwarden schema version; point state.path at a new file or an existing \
         seatwarden database",
        .path.display()
    )]
    Foreign { path: PathBuf, tables: String },

    /// The database was written by a newer seatwarden.
    #[error(
        "the state database {path} has schema version {found}, newer than this binary \
         supports (version {supported}); run a newer seatwarden or use another \
         database file"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },

    /// A schema migration failed; it was rolled back, the database is unchanged.
    #[error("migrating the state database {path} to schema version {version} failed: {source}")]
    Migration {
        path: String,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },

    /// The file database did not switch to write-ahead logging (e.g. a network file
    /// system without shared memory).
    #[error("the state database {path} cannot use WAL journaling (journal_mode is {mode:?})")]
    NoWal { path: PathBuf, mode: String },

    /// A statement failed; `context` names the operation, table and run.
    #[error("{context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },

    /// Encoding a value as JSON for a JSON column failed.
    #[error("{context}: cannot encode as JSON: {source}")]
    Encode {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    /// A stored value could not be decoded (a JSON column, a timestamp, an enum).
    #[error("corrupt row in {table} (run {run}): {detail}")]
    Corrupt {
        table: &'static str,
        run: RunId,
        detail: String,
    },

    #[error("run {run} does not exist in the state database ({context})")]
    UnknownRun { run: RunId, context: &'static str },

    #[error("run {run} is already {status}; only a running run can be finished")]
    RunNotRunning { run: RunId, status: RunStatus },

    #[error("finishing run {run}: the final status must be succeeded or failed, not running")]
    FinalStatusRequired { run: RunId },

    #[error("run {run} already has a saved plan in actions/plan_drift; a plan is saved once")]
    PlanExists { run: RunId },

    #[error("no journal row for action {seq} of run {run} in actions")]
    NoSuchAction { run: RunId, seq: u32 },

    /// A lock file next to the database (the writer's, the senders' or the
    /// daemon's) could not be opened or locked. `hint` says what to do where it
    /// is known ([`crate::store::lock_file_hint`]): a file another user owns
    /// names the `chown` to run.
    #[error("the lock file {path}: {source}{hint}")]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        hint: String,
    },

    /// SQLite's `VACUUM INTO` takes the file name as text: a copy whose path is
    /// not UTF-8 would be written under another name (its bytes replaced by
    /// U+FFFD), in another folder or none. Refused before anything is created.
    #[error(
        "the copy of the state database {} is not a UTF-8 path (its other bytes are \
         shown as \u{FFFD}), and SQLite takes the name of the copy as text: nothing \
         was written; give state.path a UTF-8 path",
        .path.display()
    )]
    NotUtf8 { path: PathBuf },

    /// The relay took message `id`, and its row could not be marked `sent`.
    #[error("message {id} was sent, but the outbox could not record it ({source}): {next}")]
    NotMarked {
        id: super::OutboxId,
        next: &'static str,
        #[source]
        source: Box<StoreError>,
    },

    #[error("action {seq} of run {run} is {from}; it cannot be marked {to}")]
    InvalidTransition {
        run: RunId,
        seq: u32,
        from: ActionState,
        to: ActionState,
    },
}

impl StoreError {
    /// True when another connection holds a lock (SQLITE_BUSY / SQLITE_LOCKED) even
    /// after the 5 s busy timeout: the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        let source = match self {
            StoreError::NotMarked { source, .. } => return source.is_transient(),
            StoreError::Open { source, .. }
            | StoreError::Migration { source, .. }
            | StoreError::Sqlite { source, .. } => source,
            _ => return false,
        };
        matches!(
            source.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    }
}

impl crate::retry::Transient for StoreError {
    fn is_transient(&self) -> bool {
        StoreError::is_transient(self)
    }
}

/// Attaches "what and where" to a rusqlite result.
pub(crate) trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    /// A damaged database's hint reaches `status` and the repeated-failure
    /// alert: the `backup` it names is spelled as `report.admin_command` says
    /// people run seatwarden, not always `seatwarden backup`.
    #[test]
    fn a_damaged_databases_hint_names_the_configured_backup_command() {
        const ADMIN: &str = "sudo -u sw seatwarden --config /etc/sw.toml";
        let damaged = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".into()),
        );
        let hint = super::failure_hint_of(
            &damaged,
            std::path::Path::new("/var/lib/seatwarden/state.db"),
            ADMIN,
        )
        .unwrap_or_default();
        assert!(
            hint.contains(&format!(
                "restore the last backup (`{ADMIN} backup` made it;"
            )),
            "{hint}"
        );
    }
}
