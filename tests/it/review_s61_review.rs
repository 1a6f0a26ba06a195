//! Session 61's review of session 60's lock files, from the side of someone who
//! controls the service user's state folder while root runs a command there.
//!
//! - A lock file refused as a symbolic link or a hard link to a root-owned file
//!   (`/etc/shadow`) was refused, but the message went on to tell root to run
//!   `chown UID:GID <the lock file>`: `chown` follows the link, and would have
//!   given the file it leads to to the service user. The `chown` hint is now
//!   given only for a plain lock file, and with `-h`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::store::WriterLock;

use crate::review_s60_ops::{root_or_skip, service_owned_state};

/// A root-owned file outside the state folder, as `/etc/shadow` is.
fn roots_secret(dir: &Path) -> std::path::PathBuf {
    let secret = dir.join("shadow");
    std::fs::write(&secret, b"root:$6$secret\n").unwrap();
    secret
}

#[test]
fn a_lock_file_refused_as_a_link_never_suggests_chowning_it() {
    if !root_or_skip("a_lock_file_refused_as_a_link_never_suggests_chowning_it") {
        return;
    }
    let (_state, database) = service_owned_state();
    let elsewhere = tempfile::tempdir_in(database.parent().unwrap().parent().unwrap()).unwrap();
    let secret = roots_secret(elsewhere.path());
    let lock = WriterLock::path(&database);
    let _ = std::fs::remove_file(&lock);
    for plant in ["symlink", "hard link"] {
        let _ = std::fs::remove_file(&lock);
        if plant == "symlink" {
            std::os::unix::fs::symlink(&secret, &lock).unwrap();
        } else {
            std::fs::hard_link(&secret, &lock).unwrap();
        }
        let error = WriterLock::acquire_blocking(&database, |_| {})
            .expect_err("a planted lock file must be refused");
        let message = format!("{error}");
        assert!(message.contains("not a plain file"), "{plant}: {message}");
        assert!(
            !message.contains("chown"),
            "{plant}: root is told to chown what the lock file leads to: {message}"
        );
    }
}
