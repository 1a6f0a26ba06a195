//! Files seatwarden writes for a person to keep — a backup of the state
//! database, an export written with `--output` — written whole or not at all.
//!
//! Each is written to a temporary file beside its name (`.NAME<mark>PID`, or
//! `-1`, `-2`… after it when that name is taken), created owner-only (0600)
//! before a byte is in it, synced, then moved to its name: a failed or
//! interrupted write leaves no half-written file under the name asked for (the
//! caller removes its temporary file on failure). An existing file is replaced
//! only when asked (`force`), and never when it is the state database itself or
//! one of the files beside it. A name that is a symbolic link is refused, with
//! where it leads: nothing is written through a link ([`refuse_link`]).
//!
//! A write killed midway (SIGKILL, a container stopped, a power cut) leaves its
//! temporary file: owner-only, but a whole or partial copy of what it wrote (a
//! database, every account's personal data). Each write first removes those
//! earlier writes to the same name left once they are a day old
//! ([`remove_stale_temporaries`]); a fresher one may be another write's under
//! way (a shared volume) and is left alone, as is any file not named as this
//! module names them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::private_file;

/// What a file is, in what is said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `the backup`, `the access export`: followed by the path in messages.
    pub what: &'static str,
    /// Between the name and the pid in the temporary file's name (`.backup-`).
    pub mark: &'static str,
    /// What the temporary files of killed writes are, plural: `copies of
    /// earlier backups`.
    pub leftovers: &'static str,
    /// Suffixes of files its writer may leave beside a temporary file
    /// (SQLite's `-journal`, `-wal`, `-shm` beside a backup's copy): a stale
    /// one is removed as the temporary file is.
    pub beside: &'static [&'static str],
}

#[derive(Debug, thiserror::Error)]
pub enum OutfileError {
    #[error(
        "{what} {} already exists; nothing was written: give another name, or --force to \
         replace it",
        .path.display()
    )]
    Exists { what: &'static str, path: PathBuf },

    /// The name is a folder (`export access -o reviews/`, as `backup` takes
    /// one): "already exists … --force" would offer to replace the folder.
    #[error(
        "{what} {} is a folder; nothing was written: give the name of a file in it",
        .path.display()
    )]
    Folder { what: &'static str, path: PathBuf },

    #[error(
        "{what} {} would replace the state database {} or a file beside it; give another \
         path",
        .path.display(), .database.display()
    )]
    OwnFile {
        what: &'static str,
        path: PathBuf,
        database: PathBuf,
    },

    /// The name is a symbolic link ([`refuse_link`]).
    #[error(
        "{what} {} is a symbolic link to {}: nothing was written; seatwarden writes no \
         file through a link (it may lead out of the folder named, for root anywhere): \
         give the path of the file itself, or remove the link",
        .link.display(), .points_to.display()
    )]
    Link {
        what: &'static str,
        link: PathBuf,
        points_to: PathBuf,
    },

    /// Creating, writing, syncing or moving the file failed.
    #[error("cannot write {what} {}: {source}{}", .path.display(), write_hint(source))]
    Write {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to do about a file that could not be written, where it is known.
pub(super) fn write_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::NotFound => "; its folder does not exist: create it first",
        std::io::ErrorKind::PermissionDenied => {
            "; the user seatwarden runs as may not write to its folder"
        }
        _ => super::read_only_hint(error),
    }
}

/// Files SQLite or seatwarden keep beside the database at `path`: SQLite's, and
/// the daemon's, the writers' and the senders' lock files (one replaced by a
/// rename is another file: a process holding the old one would lock nothing
/// the next one sees).
const SIDE_FILES: [&str; 6] = ["-wal", "-shm", "-journal", ".lock", ".writer", ".sender"];

pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `contents` to `path` as the module docs say: owner-only, whole or not
/// at all, an existing file replaced only with `force`, never the state
/// database at `database` or a file beside it.
pub fn write(
    path: &Path,
    contents: &[u8],
    force: bool,
    database: &Path,
    kind: Kind,
) -> Result<(), OutfileError> {
    use std::io::Write as _;
    let target = path.to_owned();
    refuse_link(&target, kind)?;
    refuse_own_file(database, &target, kind)?;
    if target.is_dir() {
        return Err(OutfileError::Folder {
            what: kind.what,
            path: target,
        });
    }
    if target.exists() && !force {
        return Err(OutfileError::Exists {
            what: kind.what,
            path: target,
        });
    }
    remove_stale_temporaries(&target, kind, &|_| false, std::time::SystemTime::now());
    // Written through the descriptor that made it: reopened by name, a link
    // the folder's owner swapped in for it meanwhile would be followed.
    let (temporary, mut file) = create_temporary(&target, kind)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| OutfileError::Write {
            what: kind.what,
            path: target.clone(),
            source,
        })
        .and_then(|()| put_in_place(&temporary, &target, force, kind));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Refuses a `path` that is a symbolic link, naming where it leads. Followed,
/// a link put in a folder its owner controls has the writer (root, with
/// `sudo seatwarden backup` or `export --output`) replace a file anywhere
/// (`/etc/passwd`, renamed over in its folder); and a link an operator keeps
/// (a `latest.db` beside dated copies) means a file elsewhere than the name
/// given. Renamed over instead, the link would be silently cut off. The final
/// move never follows one either ([`put_in_place`]: a rename or a hard link of
/// the name itself), so a link put there after this look is replaced, not
/// written through.
pub(super) fn refuse_link(path: &Path, kind: Kind) -> Result<(), OutfileError> {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(());
    }
    Err(OutfileError::Link {
        what: kind.what,
        link: path.to_owned(),
        points_to: std::fs::read_link(path).unwrap_or_default(),
    })
}

/// Refuses a `target` that is the database or one of [`SIDE_FILES`], existing or
/// not (a `-wal` written by hand would be read as the database's log), by any
/// path: a symbolic link, or the database's folder bind-mounted elsewhere.
pub(super) fn refuse_own_file(
    database: &Path,
    target: &Path,
    kind: Kind,
) -> Result<(), OutfileError> {
    let Ok(database) = database.canonicalize() else {
        return Ok(());
    };
    let folder = match target.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let (Ok(folder), Some(name)) = (folder.canonicalize(), target.file_name()) else {
        return Ok(());
    };
    let target = target.canonicalize().unwrap_or_else(|_| folder.join(name));
    let own = std::iter::once(database.clone())
        .chain(
            SIDE_FILES
                .iter()
                .map(|suffix| with_suffix(&database, suffix)),
        )
        .any(|file| file == target);
    // The database's folder reached by another path, which canonicalize does
    // not see through (a bind mount of it: a container's volume mounted twice,
    // a host path and the service's): the same folder, and one of its names.
    let own_name = |name: &std::ffi::OsStr| {
        database.file_name().is_some_and(|database| {
            std::iter::once(database.to_owned())
                .chain(SIDE_FILES.iter().map(|suffix| {
                    let mut side = database.to_owned();
                    side.push(suffix);
                    side
                }))
                .any(|own| own == name)
        })
    };
    let own = own
        || match (target.parent(), database.parent(), target.file_name()) {
            (Some(folder), Some(database_folder), Some(name)) => {
                own_name(name) && same_folder(folder, database_folder)
            }
            _ => false,
        };
    if own {
        return Err(OutfileError::OwnFile {
            what: kind.what,
            path: target,
            database,
        });
    }
    Ok(())
}

/// Whether `a` and `b` are one folder (device and inode), whatever their paths.
fn same_folder(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    a == b
}

/// `.NAME<mark>PID` beside `target`: same folder, so the final move is a rename
/// ([`create_temporary`] adds `-1`, `-2`… when it is taken).
fn temporary_path(target: &Path, kind: Kind) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(
        target
            .file_name()
            .unwrap_or(std::ffi::OsStr::new("seatwarden-state.db")),
    );
    name.push(format!("{}{}", kind.mark, std::process::id()));
    target.with_file_name(name)
}

/// Creates the temporary file, owner-only, under a name no one else uses:
/// [`temporary_path`], or that name with `-1`, `-2`… when a file has it
/// already. Such a file is the copy of a write killed midway by a process that
/// had the same pid (a container's or a CronJob's backup runs as pid 1 each
/// time) or one still being written beside it (a shared volume): it is left
/// alone, not taken for this write's, which would fail every later write to
/// that name until someone removed it by hand.
pub(super) fn create_temporary(
    target: &Path,
    kind: Kind,
) -> Result<(PathBuf, std::fs::File), OutfileError> {
    let first = temporary_path(target, kind);
    for attempt in 0..MAX_TEMPORARY_NAMES {
        let path = match attempt {
            0 => first.clone(),
            n => with_suffix(&first, &format!("-{n}")),
        };
        match private_file().create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(OutfileError::Write {
                    what: kind.what,
                    path: target.to_owned(),
                    source,
                });
            }
        }
    }
    Err(OutfileError::Write {
        what: kind.what,
        path: target.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{}, and that name with -1 to -{}, are taken by {} killed while they \
                 wrote: remove them",
                first.display(),
                MAX_TEMPORARY_NAMES - 1,
                kind.leftovers
            ),
        ),
    })
}

/// How many names [`create_temporary`] tries.
const MAX_TEMPORARY_NAMES: u32 = 100;

/// How old a temporary file is before [`remove_stale_temporaries`] takes it for
/// a killed write's: a write under way changes its file all along.
pub(super) const STALE_TEMPORARY: std::time::Duration =
    std::time::Duration::from_secs(24 * 60 * 60);

/// Removes, beside `target`, the temporary files killed writes of this `kind`
/// left for the same name (`.NAME<mark>PID`, `-N` after it, and
/// [`Kind::beside`] files beside them), or for any name `also_for` accepts (a
/// backup into a folder: any name such a backup gives), once they are a day old
/// ([`STALE_TEMPORARY`]) at `now`. Left, they piled up with every killed write
/// (a volume filled with copies of the database until every backup failed;
/// copies of every account's personal data beside a kept export). A fresher one
/// may be another write's under way (a shared volume) and is left alone, as is
/// any other file, a symbolic link or what it leads to. Done before the write,
/// so one that then fails (the volume full of them) still clears them; a file
/// that cannot be removed is logged.
pub(super) fn remove_stale_temporaries(
    target: &Path,
    kind: Kind,
    also_for: &dyn Fn(&str) -> bool,
    now: std::time::SystemTime,
) {
    let Some(name) = target.file_name().and_then(|name| name.to_str()) else {
        return;
    };
    let folder = match target.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(folder) else {
        // A folder that may be written but not listed: nothing to find.
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(candidate) = file_name.to_str() else {
            continue;
        };
        if !is_temporary_of(candidate, name, kind, also_for) {
            continue;
        }
        // The entry itself, never what a link leads to.
        let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let old = metadata
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_TEMPORARY);
        if !metadata.is_file() || !old {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => tracing::info!(
                file = %entry.path().display(),
                "removed the temporary file a write of {} killed over a day ago left",
                kind.what
            ),
            Err(e) => tracing::warn!(
                file = %entry.path().display(),
                error = %e,
                "the temporary file a write of {} killed over a day ago left could not be removed",
                kind.what
            ),
        }
    }
}

/// Whether `candidate` is the name of a temporary file of `kind` for `name`
/// (`.NAME<mark>PID`, `.NAME<mark>PID-N`, either with one of [`Kind::beside`]
/// after it), or for a name `also_for` accepts.
pub(super) fn is_temporary_of(
    candidate: &str,
    name: &str,
    kind: Kind,
    also_for: &dyn Fn(&str) -> bool,
) -> bool {
    let Some(rest) = candidate.strip_prefix('.') else {
        return false;
    };
    let Some((written, pid)) = rest.rsplit_once(kind.mark) else {
        return false;
    };
    let same_name = written == name || also_for(written);
    let pid = kind
        .beside
        .iter()
        .find_map(|side| pid.strip_suffix(side))
        .unwrap_or(pid);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let numbered = match pid.split_once('-') {
        Some((pid, n)) => digits(pid) && digits(n),
        None => digits(pid),
    };
    same_name && numbered
}

/// Moves the written and synced `temporary` to `target`: replacing it only with
/// `force`, and otherwise failing if it appeared meanwhile (a hard link refuses
/// an existing name; a file system without hard links gets a check before the
/// rename).
pub(super) fn put_in_place(
    temporary: &Path,
    target: &Path,
    force: bool,
    kind: Kind,
) -> Result<(), OutfileError> {
    let write_error = |source| OutfileError::Write {
        what: kind.what,
        path: target.to_owned(),
        source,
    };
    let exists = || OutfileError::Exists {
        what: kind.what,
        path: target.to_owned(),
    };
    if force {
        std::fs::rename(temporary, target).map_err(write_error)?;
    } else {
        match std::fs::hard_link(temporary, target) {
            Ok(()) => {
                let _ = std::fs::remove_file(temporary);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
            Err(_) if !target.exists() => {
                std::fs::rename(temporary, target).map_err(write_error)?;
            }
            Err(_) => return Err(exists()),
        }
    }
    // The new name survives a power cut only once its folder is synced. A
    // folder that cannot be opened for that (one the user may write to but not
    // list: a drop box for backups) or a file system that will not sync one
    // does not undo a file written whole, synced and in place: said, not failed
    // (failed, a nightly backup in such a folder was reported lost every night,
    // "may not write to its folder", beside the file it had written). SQLite
    // does the same with its own folder syncs.
    #[cfg(unix)]
    if let Some(folder) = target.parent() {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        if let Err(e) = std::fs::File::open(folder).and_then(|dir| dir.sync_all()) {
            tracing::warn!(
                file = %target.display(),
                folder = %folder.display(),
                error = %e,
                "{} is written, but its folder could not be synced: a power cut in the \
                 next seconds could lose its name",
                kind.what
            );
        }
    }
    Ok(())
}
