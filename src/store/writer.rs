//! The writer lock: `<database>.writer`, an advisory file lock held by whoever
//! writes to the workspace through this state database — a daemon job
//! (reconcile, sweep, retry, prune) or `seatwarden reconcile`, `approve`, `reject`,
//! `resume` and `link` from a shell — so two writers never run at once.
//!
//! Above all for the recovery at the start of a reconcile, sweep or retry pass:
//! it takes every journal row left in flight for one a dead process left behind.
//! With another writer alive those rows are its live writes; resolving them as
//! interrupted would fail them under it and send them a second time. The lock is the operating system's
//! (`flock`), so it is released when its holder dies, however it dies.
//!
//! Lock files sit next to the database as it resolves ([`lock_file_path`]), not as
//! `state.path` spells it: two spellings of one database (a symlink to the file or
//! to its folder, `..`) must share one lock.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StoreError;

/// Held for as long as it lives.
#[derive(Debug)]
pub struct WriterLock {
    /// `None` only from [`WriterLock::try_acquire`] where no lock file exists yet.
    _file: Option<File>,
}

/// How often a waiting writer looks again.
const POLL: Duration = Duration::from_millis(200);

impl WriterLock {
    /// The lock file of `database`.
    pub fn path(database: &Path) -> PathBuf {
        lock_file_path(database, ".writer")
    }

    /// Takes the lock, waiting as long as another writer holds it; `waiting` is
    /// called once, when it has to wait. For the command line, outside a runtime.
    pub fn acquire_blocking(
        database: &Path,
        waiting: impl FnOnce(&Path),
    ) -> Result<WriterLock, StoreError> {
        let path = Self::path(database);
        let file = open(&path)?;
        match file.try_lock() {
            Ok(()) => return Ok(WriterLock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => waiting(&path),
            Err(std::fs::TryLockError::Error(source)) => return Err(lock_error(&path, source)),
        }
        file.lock().map_err(|source| lock_error(&path, source))?;
        Ok(WriterLock { _file: Some(file) })
    }

    /// Takes the lock only if no writer holds it. `status` holds it while it reads
    /// the runs: a run recorded as running while nobody writes was cut off.
    ///
    /// Never creates the lock file: a reader run as root (`sudo seatwarden status`)
    /// would leave one the service's own user cannot open, and every writing job
    /// would then fail. Without the file, no writer can be at work (each opens it
    /// first), so the lock counts as taken.
    pub fn try_acquire(database: &Path) -> Result<Option<WriterLock>, StoreError> {
        let path = Self::path(database);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(WriterLock { _file: None }));
            }
            Err(source) => return Err(lock_error(&path, source)),
        };
        match file.try_lock() {
            Ok(()) => Ok(Some(WriterLock { _file: Some(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(lock_error(&path, source)),
        }
    }

    /// [`WriterLock::acquire_blocking`] without blocking a runtime worker.
    pub async fn acquire(
        database: &Path,
        waiting: impl FnOnce(&Path),
    ) -> Result<WriterLock, StoreError> {
        let path = Self::path(database);
        let file = open(&path)?;
        let mut waiting = Some(waiting);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WriterLock { _file: Some(file) }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if let Some(waiting) = waiting.take() {
                        waiting(&path);
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(lock_error(&path, source));
                }
            }
        }
    }
}

/// Whether a process holds the lock on `path` (a writer's or a daemon's lock
/// file). Looks with a shared lock, released at once, and never creates the file:
/// without it, no holder can exist.
pub fn lock_is_held(path: &Path) -> Result<bool, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(lock_error(path, source)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(source)) => Err(lock_error(path, source)),
    }
}

/// `database` with `suffix` appended, after following every symlink in its path.
///
/// The file may not exist yet (before the first run), or be a symlink to a file
/// that does not: then its folder is resolved and a dangling link followed by
/// hand, so the lock is where the database will be. A path that resolves nowhere
/// (its folder missing) is kept as written: opening the lock file fails on it.
pub fn lock_file_path(database: &Path, suffix: &str) -> PathBuf {
    let mut name = resolve(database).into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// How many dangling symlinks in a row [`resolve`] follows: the kernel's own
/// limit (`MAXSYMLINKS`), beyond which it would refuse the path as a loop.
const MAX_LINKS: usize = 40;

fn resolve(database: &Path) -> PathBuf {
    if let Ok(resolved) = std::fs::canonicalize(database) {
        return resolved;
    }
    let mut path = database.to_owned();
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        path = match path.parent() {
            Some(folder) => folder.join(target),
            None => target,
        };
    }
    let Some(name) = path.file_name() else {
        return path;
    };
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    match std::fs::canonicalize(folder) {
        Ok(folder) => folder.join(name),
        Err(_) => path,
    }
}

fn open(path: &Path) -> Result<File, StoreError> {
    super::private_file()
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| lock_error(path, source))
}

fn lock_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::LockFile {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_second_writer_waits_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        let first =
            WriterLock::acquire_blocking(&database, |_| panic!("free")).expect("first writer");
        let mut waited = false;
        let second = WriterLock::acquire(&database, |path| {
            assert!(path.ends_with("state.db.writer"));
            waited = true;
        });
        let second = tokio::time::timeout(Duration::from_secs(2), second).await;
        assert!(second.is_err(), "the second writer must wait");
        drop(first);
        let mut waited_again = false;
        WriterLock::acquire(&database, |_| waited_again = true)
            .await
            .unwrap();
        assert!(!waited_again, "free once the first is gone");
        assert!(waited);
    }

    #[test]
    fn trying_takes_the_lock_only_when_no_writer_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        let writer = WriterLock::acquire_blocking(&database, |_| panic!("free")).unwrap();
        assert!(WriterLock::try_acquire(&database).unwrap().is_none());
        drop(writer);
        let held = WriterLock::try_acquire(&database).unwrap();
        assert!(held.is_some());
        assert!(WriterLock::try_acquire(&database).unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_database_shares_the_lock_of_its_target() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let database = real.join("state.db");
        let linked_folder = dir.path().join("linked-folder");
        symlink(&real, &linked_folder).unwrap();
        let linked_file = dir.path().join("linked.db");
        symlink(&database, &linked_file).unwrap();
        let dotted = real.join("..").join("real").join("state.db");
        // Before the first run the database file does not exist yet.
        for spelling in [&linked_folder.join("state.db"), &linked_file, &dotted] {
            assert_eq!(WriterLock::path(spelling), WriterLock::path(&database));
        }
        let writer = WriterLock::acquire_blocking(&database, |_| panic!("free")).unwrap();
        for spelling in [&linked_folder.join("state.db"), &linked_file, &dotted] {
            assert!(WriterLock::try_acquire(spelling).unwrap().is_none());
        }
        drop(writer);
        std::fs::write(&database, b"").unwrap();
        let writer = WriterLock::acquire_blocking(&linked_file, |_| panic!("free")).unwrap();
        assert!(WriterLock::try_acquire(&database).unwrap().is_none());
        assert!(lock_is_held(&WriterLock::path(&linked_folder.join("state.db"))).unwrap());
        drop(writer);
    }

    #[test]
    fn a_database_in_a_missing_folder_keeps_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("missing").join("state.db");
        assert_eq!(
            WriterLock::path(&database),
            dir.path().join("missing").join("state.db.writer")
        );
    }

    #[test]
    fn trying_creates_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        assert!(WriterLock::try_acquire(&database).unwrap().is_some());
        assert!(!WriterLock::path(&database).exists());
    }
}
