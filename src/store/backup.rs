//! `seatwarden backup`: a consistent copy of the state database, taken while the
//! daemon runs.
//!
//! Copying the file with `cp` while the daemon writes can give a torn copy (the
//! database, its `-wal` and its `-shm` read at different moments). Instead the copy
//! is SQLite's `VACUUM INTO`, one read transaction: under WAL it sees the last
//! committed state and neither waits for nor blocks a writer (a transaction held
//! open by a daemon job is simply not in the copy). The source is opened without
//! migrating it (a migration would take the write lock and change the file being
//! backed up); it must be a seatwarden database no newer than this binary.
//!
//! The copy is written to a temporary file next to the destination
//! (`.NAME.backup-PID`, or `-1`, `-2`… after it when a killed backup left that
//! name), created owner-only (0600) before SQLite writes a byte, then checked (it opens,
//! `PRAGMA integrity_check` says `ok`, its schema version is the source's) and
//! made a single self-contained file (`journal_mode=DELETE`: no `-wal` to carry
//! along), synced, and only then moved to the destination: a failed or interrupted
//! backup leaves no half-written file under the name asked for. An existing
//! destination is replaced only when asked (`force`), and never when it is the
//! state database itself or one of the files beside it. A destination that is a
//! symbolic link is refused, never written through (`outfile::refuse_link`).
//!
//! A backup killed while it wrote leaves its temporary copy (a whole copy of the
//! database). Each backup removes those left for its name (or, into a folder,
//! for any `seatwarden-state-<time>.db`) once they are a day old, before it
//! copies: a fresher one may be another backup's under way (the sweep is
//! `outfile`'s, which exports share).
//!
//! Paths stay `Path`s: SQLite's `VACUUM INTO` alone takes a name as text, and a
//! destination that is not UTF-8 is refused, never written under another name.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::outfile::{self, Kind, OutfileError, with_suffix, write_hint};
use super::{BUSY_TIMEOUT, StoreError, file_to_open, migrations, refuse_foreign, refused_link};

/// A backup, in what is said about it and its temporary copy's name.
const BACKUP: Kind = Kind {
    what: "the backup",
    mark: TEMPORARY_MARK,
    leftovers: "copies of earlier backups",
    beside: &["-journal", "-wal", "-shm"],
};

/// What [`backup`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The file written (the destination, or a new file in it when it is a folder).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its schema version (the source's).
    pub schema_version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The source could not be opened or read (missing, not a database, damaged).
    #[error(
        "cannot read the state database {path} to back it up: {source}{}",
        damaged_hint(source)
    )]
    Source {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The source is another program's database, or newer than this binary.
    #[error(transparent)]
    Refused(#[from] StoreError),

    /// The source is an SQLite file with no seatwarden schema in it.
    #[error(
        "{} is not a seatwarden state database: it has no tables and no seatwarden \
         schema version; nothing to back up",
        .path.display()
    )]
    Empty { path: PathBuf },

    /// The file could not be placed: it exists (without `force`), it is the
    /// state database or beside it, a link to no file, or it failed to be written.
    #[error(transparent)]
    File(#[from] OutfileError),

    /// SQLite's `VACUUM INTO` takes the file name as text: a path that is not
    /// UTF-8 would be written under another name (its bytes replaced by U+FFFD),
    /// in another folder or none.
    #[error(
        "the backup path {} is not UTF-8 (its other bytes are shown as \u{FFFD}), \
         and SQLite takes the name of the copy as text: nothing was written; give a \
         UTF-8 path",
        .path.display()
    )]
    NotUtf8 { path: PathBuf },

    /// Creating, syncing or moving the backup file failed.
    #[error("cannot write the backup {}: {source}{}", .path.display(), write_hint(source))]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Root asked to write the backup in the service's folders
    /// ([`root_in_the_services_folders`]): refused before anything is written.
    #[error(
        "not writing the backup {} as root: it would be written in a folder that belongs \
         to uid {uid}, the owner of the state database (the user the service runs as), and \
         root does not write a copy of the database by name where another user can swap \
         a link in; write it in a folder of root's, or run the command as that user \
         (`sudo -u '#{uid}' seatwarden backup …`)",
        .path.display()
    )]
    RootInServiceFolder { path: PathBuf, uid: u32 },

    /// `VACUUM INTO` failed.
    #[error("copying the state database {} into {} failed: {source}{}", .database.display(), .path.display(), damaged_hint(source))]
    Copy {
        database: PathBuf,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The copy did not pass its check; it was removed.
    #[error("the backup {} failed its check ({detail}); it was removed, nothing was written", .path.display())]
    Check { path: PathBuf, detail: String },
}

/// What to do when SQLite says the source is damaged or not a database at all.
fn damaged_hint(error: &rusqlite::Error) -> &'static str {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            "; the file is damaged or is not a seatwarden state database: check \
             state.path, and restore the last good backup if it is damaged (README, \
             \"Backing up and restoring the state\")"
        }
        _ => "",
    }
}

/// The name given to a backup written into a folder: the time it was taken, UTC.
fn file_name_in_folder(now: chrono::DateTime<chrono::Utc>) -> String {
    format!("seatwarden-state-{}.db", now.format("%Y%m%dT%H%M%SZ"))
}

/// The uid of the state database's owner when this process runs as root, that
/// owner is another user (the service's), and `target` would be written in a
/// folder that user owns (or inside one: it could rename the folders below
/// it). SQLite writes the temporary copy there by name (`VACUUM INTO`), and
/// the folder's owner could swap a symbolic link in for the empty file first:
/// root would write a copy of a database that user writes to wherever the link
/// leads (`/root/.ssh/authorized_keys`), as `plan --workspace-moved`'s copy
/// would (`Store::copy_to`). Root is told by `/proc/self`'s owner; where there
/// is no `/proc`, nothing is refused.
#[cfg(unix)]
fn root_in_the_services_folders(database: &Path, target: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let as_root = std::fs::metadata("/proc/self").is_ok_and(|own| own.uid() == 0);
    let service = std::fs::metadata(database).ok()?.uid();
    if !as_root || service == 0 {
        return None;
    }
    let folder = match target.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let folder = folder.canonicalize().ok()?;
    folder
        .ancestors()
        .filter_map(|ancestor| std::fs::metadata(ancestor).ok())
        .any(|owned| owned.uid() == service)
        .then_some(service)
}

/// Removes a temporary copy and whatever SQLite left beside it.
fn remove_temporary(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}

/// Creates `folder` (and its parents) for backups, owner-only (0700) on Unix: a
/// DEST written as a folder (`backups/`) that does not exist yet.
fn private_folder(folder: &Path) -> Result<(), BackupError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(folder).map_err(|source| BackupError::Write {
        path: folder.to_owned(),
        source,
    })
}

/// Copies the state database at `database` to `destination` (a file, or a folder
/// to write `seatwarden-state-<UTC time>.db` into, created owner-only when it is
/// written with a trailing `/` and missing), consistently while other processes
/// write to it. See the module docs.
pub fn backup(database: &Path, destination: &Path, force: bool) -> Result<Backup, BackupError> {
    // The path's own bytes: a lossy conversion first would read another path.
    let folder_named = destination
        .as_os_str()
        .as_encoded_bytes()
        .last()
        .is_some_and(|&byte| std::path::is_separator(char::from(byte)));
    if folder_named && !destination.exists() {
        private_folder(destination)?;
    }
    let in_folder = destination.is_dir();
    let named = if in_folder {
        destination.join(file_name_in_folder(chrono::Utc::now()))
    } else {
        destination.to_owned()
    };
    let target = named;
    outfile::refuse_link(&target, BACKUP)?;
    if target.to_str().is_none() {
        return Err(BackupError::NotUtf8 { path: target });
    }
    outfile::refuse_own_file(database, &target, BACKUP)?;
    if target.exists() && !force {
        return Err(OutfileError::Exists {
            what: BACKUP.what,
            path: target,
        }
        .into());
    }
    remove_stale_temporaries(&target, in_folder, std::time::SystemTime::now());

    let source = open_source(database)?;
    let version = source_version(&source, database)?;

    #[cfg(unix)]
    if let Some(uid) = root_in_the_services_folders(database, &target) {
        return Err(BackupError::RootInServiceFolder { path: target, uid });
    }
    // SQLite writes the copy by name (`VACUUM INTO`), opening it without
    // following a link (`O_NOFOLLOW`): the descriptor is not needed.
    let (temporary, _) = outfile::create_temporary(&target, BACKUP)?;
    let written = copy_and_check(&source, database, &temporary, &target, version).and_then(|()| {
        outfile::put_in_place(&temporary, &target, force, BACKUP).map_err(Into::into)
    });
    if written.is_err() {
        remove_temporary(&temporary);
    }
    written?;
    let bytes = std::fs::metadata(&target)
        .map_err(|source| BackupError::Write {
            path: target.clone(),
            source,
        })?
        .len();
    Ok(Backup {
        path: target,
        bytes,
        schema_version: version,
    })
}

/// The source, opened read-write (a reader of a WAL database needs its `-shm`)
/// but never created and never migrated.
fn open_source(database: &Path) -> Result<Connection, BackupError> {
    let error = |source| BackupError::Source {
        path: database.to_owned(),
        source,
    };
    // As root, never through a link or into another user's file (`Store::open`).
    let (file, no_follow) = file_to_open(database, false)?;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if no_follow {
        flags |= OpenFlags::SQLITE_OPEN_NOFOLLOW;
    }
    let conn = Connection::open_with_flags(&file, flags).map_err(|source| {
        match refused_link(database, &file, source) {
            StoreError::Open { source, .. } => error(source),
            refused => BackupError::Refused(refused),
        }
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    Ok(conn)
}

/// The source's schema version: one of seatwarden's, no newer than this binary's.
fn source_version(conn: &Connection, database: &Path) -> Result<i64, BackupError> {
    match refuse_foreign(conn, database) {
        // Not a database at all, or a damaged one: said with what to do.
        Err(StoreError::Open { path, source }) => return Err(BackupError::Source { path, source }),
        other => other?,
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| BackupError::Source {
            path: database.to_owned(),
            source,
        })?;
    if version == 0 {
        return Err(BackupError::Empty {
            path: database.to_owned(),
        });
    }
    if version > migrations::LATEST {
        return Err(StoreError::TooNew {
            path: database.display().to_string(),
            found: version,
            supported: migrations::LATEST,
        }
        .into());
    }
    Ok(version)
}

/// Between a backup's name and the pid in its temporary copy's name.
const TEMPORARY_MARK: &str = ".backup-";

/// Removes, beside `target`, the temporary copies killed backups left for the
/// same name, or with `in_folder` for any name a backup into the folder gives
/// (`seatwarden-state-<time>.db`), once they are a day old
/// ([`outfile::remove_stale_temporaries`], which exports use too). Each is a
/// whole copy of the database: left, they filled the backup volume until every
/// backup failed.
fn remove_stale_temporaries(target: &Path, in_folder: bool, now: std::time::SystemTime) {
    outfile::remove_stale_temporaries(
        target,
        BACKUP,
        &|name| in_folder && is_folder_file_name(name),
        now,
    );
}

/// Whether `name` is one [`file_name_in_folder`] gives.
fn is_folder_file_name(name: &str) -> bool {
    name.strip_prefix("seatwarden-state-")
        .and_then(|rest| rest.strip_suffix(".db"))
        .is_some_and(|stamp| chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").is_ok())
}

fn copy_and_check(
    source: &Connection,
    database: &Path,
    temporary: &Path,
    target: &Path,
    version: i64,
) -> Result<(), BackupError> {
    // SQLite takes the name as text: one that is not UTF-8 is refused, never
    // converted into another name (checked on the destination already).
    let Some(into) = temporary.to_str() else {
        return Err(BackupError::NotUtf8 {
            path: temporary.to_owned(),
        });
    };
    source
        .execute("VACUUM INTO ?1", [into])
        .map_err(|source| BackupError::Copy {
            database: database.to_owned(),
            path: target.to_owned(),
            source,
        })?;
    let check = |detail: String| BackupError::Check {
        path: target.to_owned(),
        detail,
    };
    let copy = Connection::open_with_flags(temporary, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| check(format!("it does not open: {e}")))?;
    // One file to keep and restore, whatever mode the copy came out in.
    let mode: String = copy
        .pragma_update_and_check(None, "journal_mode", "delete", |row| row.get(0))
        .map_err(|e| check(format!("it does not open: {e}")))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(check(format!("its journal mode stayed {mode}")));
    }
    let verdict: String = copy
        .query_row("PRAGMA integrity_check(1)", [], |row| row.get(0))
        .map_err(|e| check(format!("integrity_check failed: {e}")))?;
    if verdict != "ok" {
        return Err(check(format!("integrity_check says: {verdict}")));
    }
    let copied: i64 = copy
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| check(format!("its schema version cannot be read: {e}")))?;
    if copied != version {
        return Err(check(format!(
            "its schema version is {copied}, the state database's {version}"
        )));
    }
    copy.close()
        .map_err(|(_, e)| check(format!("it does not close: {e}")))?;
    let write_error = |source| BackupError::Write {
        path: temporary.to_owned(),
        source,
    };
    std::fs::File::open(temporary)
        .and_then(|file| file.sync_all())
        .map_err(write_error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A database as the build with schema `version` left it.
    fn database_at(path: &Path, version: i64) {
        let mut conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &migrations::MIGRATIONS[..usize::try_from(version).unwrap()] {
            tx.execute_batch(migration).unwrap();
        }
        tx.execute(
            "INSERT INTO links (identity_id, account_id, method, linked_at)
             VALUES ('00u1', 'ws-1', 'user_name', '2026-01-01T00:00:00.000000000Z')",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    }

    /// A backup of an older build's database is that database, as it was (the
    /// backup migrates nothing); restored, this build migrates it forward on open
    /// and reads its rows.
    #[test]
    fn an_older_builds_backup_is_kept_as_is_and_migrated_when_restored() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        database_at(&database, 1);
        let copy = dir.path().join("copy.db");
        let written = backup(&database, &copy, false).unwrap();
        assert_eq!(written.schema_version, 1);
        assert_eq!(written.path, copy);
        assert_eq!(written.bytes, std::fs::metadata(&copy).unwrap().len());
        let version = |path: &Path| -> i64 {
            Connection::open(path)
                .unwrap()
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .unwrap()
        };
        assert_eq!(version(&database), 1, "the backup migrated its source");
        assert_eq!(version(&copy), 1);

        let restored = Store::open(&copy).unwrap();
        assert_eq!(restored.schema_version().unwrap(), migrations::LATEST);
        let links = restored.links().unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].account_id, "ws-1");
    }

    /// A database from a newer build is refused, as every command refuses it.
    #[test]
    fn a_newer_builds_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        database_at(&database, migrations::LATEST);
        Connection::open(&database)
            .unwrap()
            .pragma_update(None, "user_version", migrations::LATEST + 1)
            .unwrap();
        let copy = dir.path().join("copy.db");
        let error = backup(&database, &copy, false).unwrap_err();
        assert!(
            matches!(error, BackupError::Refused(StoreError::TooNew { found, .. }) if found == migrations::LATEST + 1),
            "{error}"
        );
        assert!(!copy.exists());
    }

    /// A missing state database is not created by a backup.
    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        let error = backup(&database, &dir.path().join("copy.db"), false).unwrap_err();
        assert!(matches!(error, BackupError::Source { .. }), "{error}");
        assert!(error.to_string().contains("state.db"), "{error}");
        assert!(!database.exists());
    }
}
