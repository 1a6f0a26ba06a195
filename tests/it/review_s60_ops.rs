//! Session 60's review of operations details.
//!
//! - A command run as root (`sudo seatwarden approve`, `resume`, `send-mail`)
//!   against the service's state database left the lock files it made beside
//!   it (`.writer`, `.sender`, the daemon's `.lock`) to root, mode 0600: the
//!   service, running as its own user, could not open them, and every job
//!   failed until someone chowned them. Now a lock file made as root takes the
//!   database file's owner, as SQLite's `-wal` and `-shm` do, and one an older
//!   version left to root is given over the next time root opens it; the
//!   service's error names the file and the `chown` to run.
//! - A file seatwarden writes for a person (an export, a backup) was refused
//!   over the database, its `-wal`, `.lock` or `.writer`, but not over its
//!   `.sender`: `--force` replaced the senders' lock with an export.
//!
//! The ownership tests need root (CI runs them as root) and say so when skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use seatwarden::store::outfile::{Kind, OutfileError};
use seatwarden::store::{SenderLock, Store, WriterLock};

use crate::fixtures::seatwarden_in;
use crate::review_s59_walk::configured;

/// The user the service runs as in these tests: `nobody`.
const SERVICE: u32 = 65534;

/// Whether this process runs as root (the owner of its /proc entry).
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Whether the test can run; says why not when it cannot.
pub(crate) fn root_or_skip(test: &str) -> bool {
    let root = running_as_root();
    if !root {
        eprintln!(
            "skipped {test}: it needs root (as in CI) to make files owned by another user \
             and to run the binary as that user"
        );
    }
    root
}

/// A configured folder with its state database made, the folder and every file
/// in it given to [`SERVICE`], as `/var/lib/seatwarden` is the service's.
pub(crate) fn service_owned_state() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    configured(dir.path(), b"");
    let database = dir.path().join("state.db");
    drop(Store::open(&database).unwrap());
    std::os::unix::fs::chown(dir.path(), Some(SERVICE), Some(SERVICE)).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(SERVICE), Some(SERVICE)).unwrap();
    }
    (dir, database)
}

/// `seatwarden ARGS` on `dir`'s configuration as the service's user: its exit
/// code and stderr.
pub(crate) fn as_service(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .env("HOME", dir)
        .uid(SERVICE)
        .gid(SERVICE)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid())
}

/// Root runs `resume --no-run` (it takes the writer lock) on the service's
/// database, and takes the senders' and the daemon's locks: each lock file it
/// made is the database owner's, and the service then runs the same command.
/// Before, all three were root's, and the service's command failed with
/// "Permission denied".
#[tokio::test]
async fn lock_files_a_root_command_makes_belong_to_the_databases_owner() {
    if !root_or_skip("lock_files_a_root_command_makes_belong_to_the_databases_owner") {
        return;
    }
    let (dir, database) = service_owned_state();
    let (code, err) = seatwarden_in(dir.path(), &[], &["resume", "--no-run"]);
    assert_eq!(code, Some(0), "{err}");
    drop(SenderLock::take(&database).await.unwrap());
    drop(seatwarden::daemon::InstanceLock::acquire(&database).unwrap());
    for suffix in [".writer", ".sender", ".lock"] {
        let lock = seatwarden::store::lock_file_path(&database, suffix);
        assert_eq!(owner(&lock), (SERVICE, SERVICE), "{}", lock.display());
        assert_eq!(
            std::fs::metadata(&lock).unwrap().mode() & 0o777,
            0o600,
            "{}",
            lock.display()
        );
    }
    let (code, err) = as_service(dir.path(), &["resume", "--no-run"]);
    assert_eq!(code, Some(0), "the service is not locked out: {err}");
}

/// A `.writer` an older version left to root: the service's command fails
/// naming the file and the `chown` that fixes it (before: "the lock file …:
/// Permission denied (os error 13)" alone); root's next command gives it over,
/// and the service's then runs.
#[test]
fn a_root_owned_lock_file_left_behind_names_the_chown_to_run() {
    if !root_or_skip("a_root_owned_lock_file_left_behind_names_the_chown_to_run") {
        return;
    }
    let (dir, database) = service_owned_state();
    let writer = WriterLock::path(&database);
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&writer)
            .unwrap();
    }
    assert_eq!(owner(&writer), (0, 0));
    let (code, err) = as_service(dir.path(), &["resume", "--no-run"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("the lock file {}", writer.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "run `chown -h {SERVICE}:{SERVICE} {}` as root",
            writer.display()
        )),
        "{err}"
    );
    let (code, err) = seatwarden_in(dir.path(), &[], &["resume", "--no-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(owner(&writer), (SERVICE, SERVICE));
    let (code, err) = as_service(dir.path(), &["resume", "--no-run"]);
    assert_eq!(code, Some(0), "{err}");
}

/// No file written for a person replaces a lock file beside the database,
/// the senders' (`.sender`) as much as the others, even with `--force`.
#[test]
fn an_output_file_never_replaces_a_lock_file_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("state.db");
    drop(Store::open(&database).unwrap());
    let kind = Kind {
        what: "the access export",
        mark: ".export-",
        leftovers: "earlier exports",
        beside: &[],
    };
    for suffix in [".lock", ".writer", ".sender"] {
        let lock = dir.path().join(format!("state.db{suffix}"));
        let error = seatwarden::store::outfile::write(&lock, b"{}", true, &database, kind)
            .expect_err(suffix);
        assert!(
            matches!(error, OutfileError::OwnFile { .. }),
            "{suffix}: {error}"
        );
        assert!(!lock.exists(), "{suffix}: nothing written");
    }
}
