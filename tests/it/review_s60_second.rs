//! Session 60's second reading of the session's changes.
//!
//! - A lock file (`.writer`, `.sender`, the daemon's `.lock`) is made in the
//!   state folder, which is the service user's. Root opening one followed a
//!   symbolic link or a hard link planted at its path: the lock was taken on
//!   the file it led to, which was emptied for the holder's line and, since
//!   root's lock files take the database's owner, given to the service user
//!   (`/etc/shadow` handed over by `sudo seatwarden approve`). A lock file that
//!   is not a plain file of its own is now refused, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use seatwarden::store::WriterLock;

use crate::review_s60_ops::{root_or_skip, service_owned_state};

/// A root-owned file outside the state folder, as `/etc/shadow` is.
fn roots_secret(dir: &Path) -> std::path::PathBuf {
    let secret = dir.join("shadow");
    std::fs::write(&secret, b"root:$6$secret\n").unwrap();
    secret
}

fn assert_untouched(secret: &Path) {
    let meta = std::fs::metadata(secret).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "root's file was given away through the lock file"
    );
    assert_eq!(
        std::fs::read(secret).unwrap(),
        b"root:$6$secret\n",
        "root's file was written through the lock file"
    );
}

#[test]
fn a_symlink_planted_as_the_writer_lock_is_not_followed_by_root() {
    if !root_or_skip("a_symlink_planted_as_the_writer_lock_is_not_followed_by_root") {
        return;
    }
    let (_state, database) = service_owned_state();
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = roots_secret(elsewhere.path());
    let lock = WriterLock::path(&database);
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&secret, &lock).unwrap();

    let taken = WriterLock::acquire_blocking(&database, |_| {});

    assert_untouched(&secret);
    let error = taken.expect_err("a symlinked lock file must be refused");
    let message = format!("{error}");
    assert!(
        message.contains(&lock.display().to_string()) && message.contains("not a plain file"),
        "{message}"
    );
}

#[test]
fn a_hard_link_planted_as_the_daemon_lock_is_not_taken_by_root() {
    if !root_or_skip("a_hard_link_planted_as_the_daemon_lock_is_not_taken_by_root") {
        return;
    }
    let (_state, database) = service_owned_state();
    // Beside the state folder (a hard link stays on one file system).
    let elsewhere = tempfile::tempdir_in(database.parent().unwrap().parent().unwrap()).unwrap();
    let secret = roots_secret(elsewhere.path());
    let lock = seatwarden::daemon::InstanceLock::path_for(&database);
    let _ = std::fs::remove_file(&lock);
    std::fs::hard_link(&secret, &lock).unwrap();

    let taken = seatwarden::daemon::InstanceLock::acquire(&database);

    assert_untouched(&secret);
    let error = taken.expect_err("a hard-linked lock file must be refused");
    assert!(format!("{error}").contains("not a plain file"), "{error}");
}
