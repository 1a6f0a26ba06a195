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
//! The holder writes one line into the file while it holds it ([`LockHolder`]:
//! pid, what it is, since when), so a writer that has to wait says at once whom
//! it waits for; a command run by hand waits a bounded time
//! ([`WriterLock::acquire_within`]), a daemon job as long as it takes.
//!
//! Lock files sit next to the database as it resolves ([`lock_file_path`]), not as
//! `state.path` spells it: two spellings of one database (a symlink to the file or
//! to its folder, `..`) must share one lock. One made as root takes the database
//! file's owner ([`open_lock_file`]), as SQLite's `-wal` and `-shm` do, so a
//! command run with `sudo` never leaves the service a lock file it cannot open.
//! A lock file itself is never followed: one that is a symbolic link or a hard
//! link (planted in the service user's folder for root to write and give away)
//! is refused (`status`, which only looks, neither follows nor reads it, and
//! finds it held by nobody, as nobody can take it). The open
//! itself refuses a symbolic link and never waits on a FIFO
//! (`UNFOLLOWED_FLAGS`): a check by path before it could be raced.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::StoreError;

/// Held for as long as it lives. Its holder is written into the lock file while
/// it is held ([`LockHolder`]), so a writer that has to wait can say who it waits
/// for, and emptied again when it is let go.
#[derive(Debug)]
pub struct WriterLock {
    /// `None` only from [`WriterLock::try_acquire`] where no lock file exists yet.
    _file: Option<File>,
    /// Whether this lock wrote its holder into the file (and so empties it at
    /// the end): [`WriterLock::try_acquire`] (`status`) writes nothing.
    wrote_holder: bool,
}

/// Who holds the writer lock, as its holder wrote it into the lock file: what a
/// waiting command shows at once, rather than seeming to hang.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    /// What holds it, for people: "the daemon's reconcile job",
    /// "`seatwarden approve` run by hand".
    pub what: String,
    pub since: DateTime<Utc>,
}

impl LockHolder {
    /// This process, holding the lock as `what` from now on.
    pub fn this_process(what: &str) -> LockHolder {
        LockHolder {
            pid: std::process::id(),
            what: what.to_owned(),
            since: Utc::now(),
        }
    }

    /// `the daemon's reconcile job (pid 4242), since 2026-12-04 14:40:05 +01:00 (CET)
    /// (12 min ago)`: on `tz`'s clock (`report.timezone` for people, UTC for logs).
    pub fn describe(&self, now: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
        format!(
            "{} (pid {}), since {} ({} ago)",
            self.what,
            self.pid,
            crate::model::clock_time(self.since, tz, "%Y-%m-%d %H:%M:%S"),
            crate::sla::latency_text(now - self.since)
        )
    }
}

/// The holder the lock file at `path` names, if it names one: an older version
/// wrote none, `status` writes none, and a holder caught while it writes its line
/// reads as none. Read as the lock is taken ([`open_unfollowed`], a plain file
/// only) and no further than a holder's line can reach: run as root, following
/// a link planted there to `/dev/zero` would read for ever.
pub fn lock_holder(path: &Path) -> Option<LockHolder> {
    use std::io::Read;
    let file = open_to_look(path).ok()??;
    let mut text = String::new();
    file.take(HOLDER_LINE_LIMIT)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(text.lines().next()?).ok()
}

/// How much of a lock file [`lock_holder`] reads: a holder's line (pid, a few
/// words, a time) is far shorter.
const HOLDER_LINE_LIMIT: u64 = 4096;

/// How a bounded wait for the writer lock ended ([`WriterLock::acquire_within`]).
#[derive(Debug)]
pub enum Acquired {
    Taken(WriterLock),
    /// Still held when the patience ran out, by the holder the lock file names.
    Busy {
        holder: Option<LockHolder>,
    },
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
        let mut waiting = Some(waiting);
        let acquired =
            WriterLock::acquire_within(database, "a seatwarden process", None, |path, _| {
                if let Some(waiting) = waiting.take() {
                    waiting(path);
                }
            })?;
        match acquired {
            Acquired::Taken(lock) => Ok(lock),
            // Without a limit the wait only ends with the lock.
            Acquired::Busy { .. } => Err(lock_error(
                &Self::path(database),
                std::io::Error::from(std::io::ErrorKind::WouldBlock),
            )),
        }
    }

    /// Takes the lock as `what` (written into the lock file for whoever waits
    /// next), waiting at most `patience` (`None`: as long as it takes) while
    /// another writer holds it. `waiting` is called when it has to wait, with the
    /// holder the lock file names, and again whenever another holder takes over
    /// (the daemon's reconcile is done, its queued sweep goes first). For the
    /// command line, outside a runtime.
    pub fn acquire_within(
        database: &Path,
        what: &str,
        patience: Option<Duration>,
        mut waiting: impl FnMut(&Path, Option<&LockHolder>),
    ) -> Result<Acquired, StoreError> {
        let path = Self::path(database);
        let file = open(&path, database)?;
        match file.try_lock() {
            Ok(()) => return Ok(Acquired::Taken(WriterLock::holding(file, what))),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(source)) => return Err(lock_error(&path, source)),
        }
        let mut shown = lock_holder(&path);
        waiting(&path, shown.as_ref());
        if patience.is_some_and(|patience| patience.is_zero()) {
            return Ok(Acquired::Busy { holder: shown });
        }
        let deadline = patience.map(|patience| std::time::Instant::now() + patience);
        // Parked in the kernel's queue (`flock`), not polling: free, it is ours at
        // once. Through a second descriptor of the same open file, so the lock it
        // takes is `file`'s; after a timeout the thread keeps waiting, and lets the
        // lock go as soon as it has it, as it then holds the last descriptor.
        let parked = file
            .try_clone()
            .map_err(|source| lock_error(&path, source))?;
        let (sender, taken) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(parked.lock());
        });
        loop {
            let pause = deadline.map_or(POLL, |deadline| {
                deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .min(POLL)
            });
            match taken.recv_timeout(pause) {
                Ok(Ok(())) => return Ok(Acquired::Taken(WriterLock::holding(file, what))),
                Ok(Err(source)) => return Err(lock_error(&path, source)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(lock_error(
                        &path,
                        std::io::Error::other("the thread waiting for the lock ended"),
                    ));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let holder = lock_holder(&path);
            if deadline.is_some_and(|deadline| std::time::Instant::now() >= deadline) {
                return Ok(Acquired::Busy {
                    holder: holder.or(shown),
                });
            }
            if is_news(shown.as_ref(), holder.as_ref()) {
                waiting(&path, holder.as_ref());
                shown = holder;
            }
        }
    }

    /// Takes the lock only if no writer holds it. `status` holds it while it reads
    /// the runs: a run recorded as running while nobody writes was cut off.
    ///
    /// Never creates the lock file: a reader run as root (`sudo seatwarden status`)
    /// would leave one the service's own user cannot open, and every writing job
    /// would then fail. Without the file, no writer can be at work (each opens it
    /// first), so the lock counts as taken; so it does where the lock file is not
    /// a plain file, which every writer refuses ([`open_to_look`]).
    pub fn try_acquire(database: &Path) -> Result<Option<WriterLock>, StoreError> {
        let path = Self::path(database);
        let file = match open_to_look(&path) {
            Ok(Some(file)) => file,
            Ok(None) => {
                return Ok(Some(WriterLock {
                    _file: None,
                    wrote_holder: false,
                }));
            }
            Err(source) => return Err(lock_error(&path, source)),
        };
        match file.try_lock() {
            Ok(()) => Ok(Some(WriterLock {
                _file: Some(file),
                wrote_holder: false,
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(lock_error(&path, source)),
        }
    }

    /// [`WriterLock::acquire_within`] without blocking a runtime worker and without
    /// a limit: the daemon's jobs wait for a command run by hand (the scheduler
    /// counts the fires skipped meanwhile). `waiting` is called once, when it has
    /// to wait, with the holder the lock file names.
    pub async fn acquire(
        database: &Path,
        what: &str,
        waiting: impl FnOnce(&Path, Option<&LockHolder>),
    ) -> Result<WriterLock, StoreError> {
        let path = Self::path(database);
        let file = open(&path, database)?;
        let mut waiting = Some(waiting);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WriterLock::holding(file, what)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if let Some(waiting) = waiting.take() {
                        waiting(&path, lock_holder(&path).as_ref());
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(lock_error(&path, source));
                }
            }
        }
    }

    /// The lock just taken on `file`, its holder written into it. Best effort: a
    /// holder that cannot be written only leaves a waiter saying less.
    fn holding(file: File, what: &str) -> WriterLock {
        let line = serde_json::to_string(&LockHolder::this_process(what))
            .map(|mut line| {
                line.push('\n');
                line
            })
            .unwrap_or_default();
        let wrote_holder = file.set_len(0).is_ok() && write_at_start(&file, line.as_bytes());
        WriterLock {
            _file: Some(file),
            wrote_holder,
        }
    }
}

impl Drop for WriterLock {
    /// Empties the holder line before the lock goes (the file closes after this):
    /// a line left behind would name a process that no longer holds it.
    fn drop(&mut self) {
        if let (true, Some(file)) = (self.wrote_holder, &self._file) {
            let _ = file.set_len(0);
        }
    }
}

/// `<database>.sender`: every outbox delivery (the daemon's mail job,
/// `seatwarden send-mail`, `report --email`, `digest --email`) holds it shared
/// while it sends, so several send at once (each message under its own claim).
/// Whoever takes it exclusively knows that no sender is alive: a claim left on a
/// message then is a dead sender's (a `send-mail` killed by SIGKILL), and the
/// message is due at once instead of when the claim runs out (ten minutes to an
/// hour). The operating system lets it go when its holder dies, however it dies.
#[derive(Debug)]
pub struct SenderLock {
    file: File,
    path: PathBuf,
}

/// How [`SenderLock::take`] found the outbox's senders.
#[derive(Debug)]
pub enum Senders {
    /// No other sender is alive: every claim on a pending message is a dead
    /// one's. The lock is held exclusively until [`SenderLock::share`].
    Alone(SenderLock),
    /// Other senders are at work: their claims stand. Held shared.
    Others(SenderLock),
}

impl SenderLock {
    /// The sender lock file of `database`.
    pub fn path(database: &Path) -> PathBuf {
        lock_file_path(database, ".sender")
    }

    /// Takes the lock of `database`'s senders: alone (exclusive) when no other
    /// sender holds it, else shared beside them. Never waits for long: an
    /// exclusive holder only releases dead claims before sharing.
    pub async fn take(database: &Path) -> Result<Senders, StoreError> {
        let path = Self::path(database);
        let file = open(&path, database)?;
        match file.try_lock() {
            Ok(()) => return Ok(Senders::Alone(SenderLock { file, path })),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(source)) => return Err(lock_error(&path, source)),
        }
        loop {
            match file.try_lock_shared() {
                Ok(()) => return Ok(Senders::Others(SenderLock { file, path })),
                Err(std::fs::TryLockError::WouldBlock) => tokio::time::sleep(POLL / 20).await,
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(lock_error(&path, source));
                }
            }
        }
    }

    /// Held exclusively, shares it: other senders may start beside this one.
    pub fn share(self) -> Result<SenderLock, StoreError> {
        self.file
            .lock_shared()
            .map_err(|source| lock_error(&self.path, source))?;
        Ok(self)
    }
}

/// Whether `holder`, read now, is worth saying after `shown`: another holder
/// than the one last shown (one that could not be read, say caught while it
/// writes its line, is no news).
fn is_news(shown: Option<&LockHolder>, holder: Option<&LockHolder>) -> bool {
    match (shown, holder) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(shown), Some(holder)) => (shown.pid, shown.since) != (holder.pid, holder.since),
    }
}

#[cfg(unix)]
fn write_at_start(file: &File, bytes: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, 0).is_ok()
}

#[cfg(not(unix))]
fn write_at_start(mut file: &File, bytes: &[u8]) -> bool {
    use std::io::{Seek, Write};
    file.rewind().is_ok() && file.write_all(bytes).is_ok()
}

/// Whether a process holds the lock on `path` (a writer's or a daemon's lock
/// file). Looks with a shared lock, released at once, and never creates the file:
/// without it (or with something there that is not a plain file, which every
/// holder refuses), no holder can exist.
pub fn lock_is_held(path: &Path) -> Result<bool, StoreError> {
    let file = match open_to_look(path) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(false),
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

fn open(path: &Path, database: &Path) -> Result<File, StoreError> {
    open_lock_file(path, database).map_err(|source| lock_error(path, source))
}

/// Opens the lock file at `path` beside `database`, made owner-only where it is
/// missing.
///
/// One made as root (`sudo seatwarden approve`, `sudo seatwarden send-mail`) is
/// given the owner (user and group) of the database file, as SQLite gives its
/// `-wal` and `-shm`: left to root, the service's own user could not open it,
/// and every job of the daemon would fail until someone chowned it. That it is
/// root's when just made is how root is recognised, without a libc call. A
/// root-owned one an older version left is given over too whenever root opens
/// it; one that cannot be (not root after all) is used as it is, as it opened.
/// Without a database file yet there is no owner to follow: the file stays
/// root's, as the database root then makes will be.
///
/// Run as root, a database the store would refuse to root
/// ([`StoreError::RootRefusesFile`]) is refused here first. A lock file that
/// is not a plain file of its own (a symbolic link, a hard link, anything but
/// a regular file) is refused: the state folder is the
/// service user's, and root following what was planted there would empty the
/// file it leads to for the holder's line and give it the database's owner.
pub fn open_lock_file(path: &Path, database: &Path) -> std::io::Result<File> {
    // As root, the database is looked at before its lock file is made: the
    // lock file sits beside the file a `state.db` link resolves to
    // ([`lock_file_path`]), so a link the service's user put there had root
    // make `<anything>.writer` in any folder, given that file's owner.
    if super::runs_as_root() {
        #[cfg(unix)]
        {
            let checked = super::root_checked(database, true).map_err(|refused| {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, refused.to_string())
            })?;
            // `path` was worked out before this look, following a `state.db`
            // link that may have been there then and swapped for a plain file
            // since: a lock file anywhere but beside the database checked
            // is where such a link led.
            if path.parent() != checked.parent() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "not beside the state database {} as root checked it (a link in the \
                         state folder changed while this command started): nothing was \
                         made; run the command again, and remove a link there you did not \
                         put there",
                        checked.display()
                    ),
                ));
            }
        }
    }
    let (file, made) = open_or_make(path)?;
    #[cfg(unix)]
    refuse_unless_plain(&file, path)?;
    #[cfg(unix)]
    if let Err(e) = give_to_database_owner(&file, database)
        && made
    {
        return Err(std::io::Error::new(
            e.kind(),
            format!("made as root, it could not be given the state database's owner: {e}"),
        ));
    }
    #[cfg(not(unix))]
    let _ = (made, database);
    Ok(file)
}

/// Fails unless `file`, opened at `path`, is a regular file with one link and
/// `path` names it itself (not through a symbolic link). Checked on what was
/// opened, before anything is written to it or its owner changed.
#[cfg(unix)]
fn refuse_unless_plain(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let opened = file.metadata()?;
    let at_path = std::fs::symlink_metadata(path)?;
    let plain = opened.file_type().is_file()
        && opened.nlink() == 1
        && at_path.file_type().is_file()
        && (at_path.dev(), at_path.ino()) == (opened.dev(), opened.ino());
    if plain {
        return Ok(());
    }
    Err(not_a_plain_file())
}

fn not_a_plain_file() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, NotAPlainFile)
}

/// The refusal of a lock file that is not a plain file, told apart from other
/// errors by its type ([`is_not_a_plain_file`]).
#[derive(Debug)]
struct NotAPlainFile;

impl std::fmt::Display for NotAPlainFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "not a plain file (a symbolic link, a hard link or not a regular file): a lock \
             file is never followed; remove it, and the next command makes it again",
        )
    }
}

impl std::error::Error for NotAPlainFile {}

fn is_not_a_plain_file(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<NotAPlainFile>())
}

/// Fails when something other than a regular file is at `path`, before it is
/// opened: opening a FIFO planted there for writing would wait for a reader for
/// ever, and a command run as root would hang instead of refusing it. The open
/// itself refuses it too ([`UNFOLLOWED_FLAGS`]: the path can
/// change between this look and the open); [`refuse_unless_plain`] still
/// checks what was opened.
fn refuse_what_is_not_a_file(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(found) if !found.file_type().is_file() => Err(not_a_plain_file()),
        _ => Ok(()),
    }
}

/// The lock file at `path`, and whether this call made it: a file it made is
/// owned by the user this process runs as.
fn open_or_make(path: &Path) -> std::io::Result<(File, bool)> {
    // Made, or opened as it is; removed between the two (a test's folder being
    // cleared), tried again a few times, then opened as the other writers open it.
    for _ in 0..3 {
        let mut make = super::private_file();
        make.create_new(true);
        match open_unfollowed(make, path) {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        refuse_what_is_not_a_file(path)?;
        match open_unfollowed(super::private_file(), path) {
            Ok(file) => return Ok((file, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    refuse_what_is_not_a_file(path)?;
    let mut make_or_open = super::private_file();
    make_or_open.create(true).truncate(false);
    open_unfollowed(make_or_open, path).map(|file| (file, false))
}

/// `open` flags that make it refuse a symbolic link at the path's last
/// component (`O_NOFOLLOW`: `ELOOP`) and return at once on a FIFO
/// (`O_NONBLOCK`: a writer gets `ENXIO`, a reader opens it, then refused as not
/// a regular file). Without them a check by path and the open after it are two
/// looks: a link to a FIFO (or to a device, whose opening can act, say a
/// watchdog) swapped in between was followed by root, which hung or opened it
/// before the check on the opened file refused it. `O_NONBLOCK` changes nothing
/// else on a regular file (`flock` waits or not by its own flag).
#[cfg(unix)]
const UNFOLLOWED_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;
#[cfg(not(unix))]
const UNFOLLOWED_FLAGS: i32 = 0;

/// "No such device or address": what opening a FIFO for writing without
/// waiting answers when nobody reads it.
#[cfg(unix)]
const ENXIO: i32 = libc::ENXIO;
#[cfg(not(unix))]
const ENXIO: i32 = -1;

/// "Too many levels of symbolic links": `O_NOFOLLOW`'s refusal (std's name
/// for it, `ErrorKind::FilesystemLoop`, is not stable yet).
#[cfg(unix)]
const ELOOP: i32 = libc::ELOOP;
#[cfg(not(unix))]
const ELOOP: i32 = -1;

/// Opens the lock file at `path` with `options`, never following a symbolic
/// link there nor waiting on a FIFO ([`UNFOLLOWED_FLAGS`]); what was there
/// instead of a file is refused as [`not_a_plain_file`], naming no other error.
fn open_unfollowed(mut options: std::fs::OpenOptions, path: &Path) -> std::io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(UNFOLLOWED_FLAGS);
    }
    options.open(path).map_err(|error| {
        // ELOOP: a symbolic link there (the flag's refusal); ENXIO: a FIFO
        // nobody reads, a socket or a device with nothing behind it; either
        // way, what was there was no file, even if a file is there again now.
        let refused_by_the_flags =
            UNFOLLOWED_FLAGS != 0 && matches!(error.raw_os_error(), Some(ELOOP | ENXIO));
        let not_a_file = refused_by_the_flags
            || error.kind() != std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(path).is_ok_and(|found| !found.file_type().is_file());
        if not_a_file {
            not_a_plain_file()
        } else {
            error
        }
    })
}

/// Options to read a lock file without creating or changing it.
fn readable() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    options
}

/// The lock file at `path` opened to see whether it is held (`status`,
/// `/readyz`): never made, followed or waited on. `None` where it is missing
/// or not a plain file: every writer refuses that one, so nobody holds it, and
/// `status`, which shows the job that failed on it, must go on answering.
fn open_to_look(path: &Path) -> std::io::Result<Option<File>> {
    let looked = open_unfollowed(readable(), path).and_then(|file| {
        #[cfg(unix)]
        refuse_unless_plain(&file, path)?;
        Ok(file)
    });
    match looked {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || is_not_a_plain_file(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives `file`, a lock file, the owner of `database` when root owns it and
/// not the database (`fchown` on the open file: nothing put at its path
/// meanwhile is changed instead).
#[cfg(unix)]
fn give_to_database_owner(file: &File, database: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let lock = file.metadata()?;
    if lock.uid() != 0 {
        return Ok(());
    }
    let Ok(owner) = std::fs::metadata(database) else {
        return Ok(());
    };
    if (owner.uid(), owner.gid()) == (lock.uid(), lock.gid()) {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))
}

/// What to do about a lock file at `path` that could not be opened or locked:
/// the read-only hint ([`super::read_only_hint`]), else, where the file belongs
/// to another user than the database beside it (one root made with an older
/// version, or that could not be given over), the `chown` that gives it the
/// database's owner, which the service runs as. Empty when neither applies.
///
/// The `chown` is named only for a plain file (a regular file with one link,
/// looked at without following a link), and with `-h`: a lock file refused as
/// a symbolic or hard link to a root-owned file (`/etc/shadow`) planted in the
/// service's folder must not come with the command that would give that file
/// to the service, nor one swapped in before root runs it.
pub fn lock_file_hint(path: &Path, error: &std::io::Error) -> String {
    let read_only = super::read_only_hint(error);
    if !read_only.is_empty() {
        return read_only.to_owned();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // A lock file is always `<database>.<suffix>` ([`lock_file_path`]).
        let database = path.with_extension("");
        if let (Ok(lock), Ok(owner)) = (
            std::fs::symlink_metadata(path),
            std::fs::metadata(&database),
        ) && lock.file_type().is_file()
            && lock.nlink() == 1
            && (lock.uid(), lock.gid()) != (owner.uid(), owner.gid())
        {
            return format!(
                "; it belongs to uid {} (gid {}), not to the owner of the state database {} \
                 (uid {}, gid {}), the user the service runs as: run `chown -h {}:{} {}` as \
                 root (an older seatwarden run as root left its lock files to root)",
                lock.uid(),
                lock.gid(),
                database.display(),
                owner.uid(),
                owner.gid(),
                owner.uid(),
                owner.gid(),
                shell_word(path)
            );
        }
    }
    String::new()
}

/// `path` as one word for a shell command to copy ([`crate::model::shell_word`]).
fn shell_word(path: &Path) -> String {
    crate::model::shell_word(&path.display().to_string())
}

pub(crate) fn lock_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::LockFile {
        hint: lock_file_hint(path, &source),
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// As root, a lock file path worked out while `state.db` was a link into
    /// another folder, the link since swapped for a plain file (so the
    /// database passes root's check): nothing is made where the link led.
    /// Before, the check passed and root made `<anything>.writer` there.
    #[cfg(unix)]
    #[test]
    fn root_makes_no_lock_file_away_from_the_database_it_checked() {
        if !crate::store::runs_as_root() {
            eprintln!("skipped: needs root (as in CI)");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let database = state.path().join("state.db");
        std::fs::write(&database, b"").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let lock = elsewhere.path().join("roots.file.writer");
        let refused = open_lock_file(&lock, &database).unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{refused}"
        );
        assert!(
            refused
                .to_string()
                .contains("not beside the state database"),
            "{refused}"
        );
        assert!(!lock.exists(), "root made {}", lock.display());
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_writer_waits_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        let first =
            WriterLock::acquire_blocking(&database, |_| panic!("free")).expect("first writer");
        let mut waited = false;
        let second = WriterLock::acquire(&database, "the daemon's sweep job", |path, _| {
            assert!(path.ends_with("state.db.writer"));
            waited = true;
        });
        let second = tokio::time::timeout(Duration::from_secs(2), second).await;
        assert!(second.is_err(), "the second writer must wait");
        drop(first);
        let mut waited_again = false;
        WriterLock::acquire(&database, "the daemon's sweep job", |_, _| {
            waited_again = true
        })
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

    /// A FIFO planted at a lock file's path is refused before it is opened:
    /// opened for writing, it would wait for a reader for ever, and a command
    /// run as root would hang. Before, `open_lock_file` never returned.
    #[cfg(unix)]
    #[test]
    fn a_fifo_at_a_lock_files_path_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        std::fs::write(&database, b"").unwrap();
        let lock = WriterLock::path(&database);
        let made = std::process::Command::new("mkfifo")
            .arg(&lock)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", lock.display());
        let (sent, answer) = std::sync::mpsc::channel();
        let (lock_path, database_path) = (lock.clone(), database.clone());
        std::thread::spawn(move || {
            let opened = open_lock_file(&lock_path, &database_path).map(drop);
            let _ = sent.send(opened);
        });
        let opened = answer
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("open_lock_file waited on the FIFO");
        let error = opened.unwrap_err();
        assert!(error.to_string().starts_with("not a plain file"), "{error}");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }

    /// The flags [`open_unfollowed`] adds are this platform's: a symlink at the
    /// path is refused by the open itself, and a FIFO opened for writing
    /// returns at once.
    #[cfg(unix)]
    #[test]
    fn unfollowed_opens_refuse_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        use std::os::unix::fs::OpenOptionsExt;
        let error = readable()
            .custom_flags(UNFOLLOWED_FLAGS)
            .open(&link)
            .unwrap_err();
        assert_eq!(error.raw_os_error(), Some(ELOOP), "{error}");
    }

    /// What `what` returns, run on a thread of its own; the test fails when it
    /// takes over 10 s (it waits on a FIFO).
    fn within_seconds<T: Send + 'static>(what: impl FnOnce() -> T + Send + 'static) -> T {
        let (sent, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sent.send(what());
        });
        answer
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("waited on a FIFO at the lock file's path")
    }

    /// `status` (as root too) looks at the lock files without creating them:
    /// a FIFO planted at one is not opened for reading and waited on for a
    /// writer that never comes, but found held by nobody (every writer refuses
    /// it), so `status` answers and shows the jobs that failed on it. Before,
    /// `status` hung.
    #[cfg(unix)]
    #[test]
    fn a_fifo_at_a_lock_files_path_is_never_waited_on_by_whoever_only_looks() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        std::fs::write(&database, b"").unwrap();
        let lock = WriterLock::path(&database);
        let made = std::process::Command::new("mkfifo")
            .arg(&lock)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", lock.display());
        let path = lock.clone();
        assert!(!within_seconds(move || lock_is_held(&path).unwrap()));
        let free = within_seconds(move || WriterLock::try_acquire(&database).unwrap().is_some());
        assert!(free, "nobody can hold a lock file every writer refuses");
        let path = lock.clone();
        assert_eq!(within_seconds(move || lock_holder(&path)), None);
    }

    /// A lock file that is a symbolic link is not followed by a command that
    /// only looks either: the file it leads to (held by whoever planted it, or
    /// `/dev/zero`, which a root `status` read for ever) is neither locked nor
    /// read, and nobody holds the lock, as every writer refuses it. Before,
    /// `status` reported the holder the linked file named.
    #[cfg(unix)]
    #[test]
    fn a_symlinked_lock_file_is_not_followed_by_whoever_only_looks() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        std::fs::write(&database, b"").unwrap();
        let elsewhere = dir.path().join("elsewhere");
        let line = serde_json::to_string(&LockHolder::this_process("a planted holder")).unwrap();
        std::fs::write(&elsewhere, format!("{line}\n")).unwrap();
        let planted = File::open(&elsewhere).unwrap();
        planted.lock().unwrap();
        let lock = WriterLock::path(&database);
        std::os::unix::fs::symlink(&elsewhere, &lock).unwrap();

        assert_eq!(lock_holder(&lock), None);
        assert!(!lock_is_held(&lock).unwrap());
        assert!(WriterLock::try_acquire(&database).unwrap().is_some());
    }

    /// A link to a FIFO swapped in at a lock file's path between the look by
    /// path and the open is refused by the open, never waited on. Before, the
    /// open followed it: a command run as root hung (within a few hundred
    /// tries here; the owner of the state folder can keep swapping for as long
    /// as it takes).
    #[cfg(unix)]
    #[test]
    fn a_link_to_a_fifo_swapped_in_after_the_look_is_never_waited_on() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        std::fs::write(&database, b"").unwrap();
        let lock = WriterLock::path(&database);
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        std::fs::write(&lock, b"").unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, lock, dir) = (stop.clone(), lock.clone(), dir.path().to_owned());
            std::thread::spawn(move || {
                let (file, link) = (dir.join("a-file"), dir.join("a-link"));
                while !stop.load(Ordering::Relaxed) {
                    std::fs::write(&file, b"").unwrap();
                    std::fs::rename(&file, &lock).unwrap();
                    std::os::unix::fs::symlink(dir.join("fifo"), &link).unwrap();
                    std::fs::rename(&link, &lock).unwrap();
                }
            })
        };
        let (lock_path, database_path) = (lock.clone(), database.clone());
        let opened = std::sync::mpsc::channel();
        let (sent, answer) = opened;
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if let Err(error) = open_lock_file(&lock_path, &database_path)
                    && error.kind() != std::io::ErrorKind::InvalidInput
                {
                    let _ = sent.send(Err(error.to_string()));
                    return;
                }
            }
            let _ = sent.send(Ok(()));
        });
        let outcome = answer.recv_timeout(std::time::Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        if outcome.is_err() {
            // Let the stuck open go: it waits for a reader of the FIFO.
            let _reader = open_unfollowed(readable(), &fifo);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        outcome
            .expect("open_lock_file waited on a FIFO reached through a link")
            .unwrap();
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
        // Root takes no lock through a linked database file (the store's root
        // rule), only through a linked folder; any other user takes either.
        let through = if crate::store::runs_as_root() {
            let refused = WriterLock::acquire_blocking(&linked_file, |_| panic!("free"));
            assert!(
                refused.is_err_and(|e| e.to_string().contains("refusing to open")),
                "root through a linked file"
            );
            linked_folder.join("state.db")
        } else {
            linked_file
        };
        let writer = WriterLock::acquire_blocking(&through, |_| panic!("free")).unwrap();
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

    /// The holder writes who it is into the lock file, so a writer that has to
    /// wait says who holds it (a command seeming to hang was all an operator had);
    /// the line goes with the lock.
    #[test]
    fn the_holder_names_itself_in_the_lock_file_while_it_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        let path = WriterLock::path(&database);
        let before = Utc::now();
        let Acquired::Taken(lock) = WriterLock::acquire_within(
            &database,
            "the daemon's reconcile job",
            Some(Duration::ZERO),
            |_, _| panic!("free"),
        )
        .unwrap() else {
            panic!("free")
        };
        let holder = lock_holder(&path).expect("a holder line");
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.what, "the daemon's reconcile job");
        assert!(holder.since >= before - chrono::Duration::seconds(1));
        let said = holder.describe(holder.since + chrono::Duration::minutes(12), chrono_tz::UTC);
        assert!(
            said.starts_with(&format!(
                "the daemon's reconcile job (pid {}), since ",
                std::process::id()
            )) && said.ends_with(" UTC (12 min ago)"),
            "{said}"
        );
        drop(lock);
        assert_eq!(
            lock_holder(&path),
            None,
            "no holder named once it is let go"
        );
        // `status` looks without naming itself, and leaves the file as it is.
        let looked = WriterLock::try_acquire(&database).unwrap().unwrap();
        drop(looked);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    /// Since when the holder holds the lock is a time people read: on the report
    /// clock with its offset, as every other one, not in UTC alone.
    #[test]
    fn the_holder_is_described_on_the_report_clock() {
        let holder = LockHolder {
            pid: 4242,
            what: "the daemon's reconcile job".into(),
            since: DateTime::parse_from_rfc3339("2026-12-04T13:40:05Z")
                .unwrap()
                .to_utc(),
        };
        let now = holder.since + chrono::Duration::minutes(12);
        assert_eq!(
            holder.describe(now, chrono_tz::Asia::Kolkata),
            "the daemon's reconcile job (pid 4242), since 2026-12-04 19:10:05 +05:30 (IST) \
             (12 min ago)"
        );
        assert_eq!(
            holder.describe(now, chrono_tz::UTC),
            "the daemon's reconcile job (pid 4242), since 2026-12-04 13:40:05 UTC (12 min ago)"
        );
    }

    /// A bounded wait gives up with the holder the lock file names, having said
    /// at once who holds it (not only after the wait), and takes the lock once it
    /// is free.
    #[test]
    fn a_bounded_wait_names_the_holder_at_once_and_gives_up_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        let held = WriterLock::acquire_within(
            &database,
            "the command `seatwarden approve`",
            None,
            |_, _| panic!("free"),
        )
        .unwrap();
        let mut said = Vec::new();
        let started = std::time::Instant::now();
        let acquired = WriterLock::acquire_within(
            &database,
            "the command `seatwarden reconcile`",
            Some(Duration::from_millis(600)),
            |_, holder| said.push((started.elapsed(), holder.cloned())),
        )
        .unwrap();
        let waited = started.elapsed();
        let Acquired::Busy { holder } = acquired else {
            panic!("taken while held")
        };
        assert_eq!(
            holder.map(|h| h.what).as_deref(),
            Some("the command `seatwarden approve`")
        );
        assert!(waited >= Duration::from_millis(600), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(said.len(), 1, "said once for one holder: {said:?}");
        assert!(
            said[0].0 < Duration::from_millis(100),
            "said at once: {said:?}"
        );
        drop(held);
        // The thread the timed-out wait left parked takes the lock for an instant.
        let free = WriterLock::acquire_within(
            &database,
            "the command `seatwarden reconcile`",
            Some(Duration::from_secs(5)),
            |_, _| {},
        )
        .unwrap();
        assert!(matches!(free, Acquired::Taken(_)));
    }

    /// Another holder taking over while one waits is news; the same one, or a
    /// line caught half-written, is not.
    #[test]
    fn only_another_holder_is_news() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = LockHolder {
            pid: 10,
            what: "the daemon's reconcile job".into(),
            since: at,
        };
        let b = LockHolder {
            what: "the daemon's sweep job".into(),
            since: at + chrono::Duration::seconds(90),
            ..a.clone()
        };
        assert!(!is_news(None, None));
        assert!(is_news(None, Some(&a)));
        assert!(!is_news(Some(&a), Some(&a)));
        assert!(!is_news(Some(&a), None));
        assert!(is_news(Some(&a), Some(&b)));
    }

    #[test]
    fn trying_creates_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("state.db");
        assert!(WriterLock::try_acquire(&database).unwrap().is_some());
        assert!(!WriterLock::path(&database).exists());
    }
}
