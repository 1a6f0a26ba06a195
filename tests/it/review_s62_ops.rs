//! Session 62's review of operations details.
//!
//! - Root (`sudo seatwarden status`, `approve`, `backup`) opened the state
//!   database by path, following whatever the service's user had put in its
//!   folder: a `state.db` linked (or hard-linked) to a file root can write had
//!   root write a database into it, and a `-wal` linked to any file had root
//!   chmod that file 0600. Root now refuses a database or side file that is a
//!   link or not its folder owner's, naming it and the `sudo -u` to run, and
//!   opens with `SQLITE_OPEN_NOFOLLOW`. The service's own user still follows
//!   its links.
//!
//! The ownership tests need root (CI runs them as root) and say so when skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fixtures::seatwarden_in;
use crate::review_s60_ops::{as_service, root_or_skip, service_owned_state};

/// A file of root's, in a folder of root's, that the service's user wants root
/// to write: empty (SQLite would take it for a new database), mode 0644.
fn roots_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roots.file");
    std::fs::write(&file, b"").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, file)
}

fn assert_untouched(file: &Path) {
    let meta = std::fs::metadata(file).unwrap();
    assert_eq!(meta.len(), 0, "root wrote into {}", file.display());
    assert_eq!(meta.mode() & 0o777, 0o644, "root chmod-ed {}", file.display());
}

fn assert_refused(code: Option<i32>, err: &str, file: &str) {
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refusing to open the state database") && err.contains(file),
        "the refusal names {file}: {err}"
    );
    assert!(err.contains("sudo -u '#65534' seatwarden"), "{err}");
}

/// The service's `state.db` replaced by a link to a file of root's: root's
/// `status` refuses it, naming the link and the user to run as, and the file
/// stays empty. Before, root opened it and wrote a whole database into it.
#[test]
fn root_refuses_a_state_database_that_is_a_link() {
    if !root_or_skip("root_refuses_a_state_database_that_is_a_link") {
        return;
    }
    let (dir, database) = service_owned_state();
    let (_roots, file) = roots_file();
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", database.display()));
    }
    std::os::unix::fs::symlink(&file, &database).unwrap();
    let (code, err) = seatwarden_in(dir.path(), &[], &["status"]);
    assert_refused(code, &err, "state.db is a symbolic link");
    assert_untouched(&file);
}

/// A `state.db` that is a hard link to root's file (where the kernel lets
/// users link files they do not own) is root's file: refused as not the
/// folder owner's. Before, root wrote a database into it.
#[test]
fn root_refuses_a_state_database_another_user_owns() {
    if !root_or_skip("root_refuses_a_state_database_another_user_owns") {
        return;
    }
    let (dir, database) = service_owned_state();
    let (_roots, file) = roots_file();
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", database.display()));
    }
    std::fs::hard_link(&file, &database).unwrap();
    let (code, err) = seatwarden_in(dir.path(), &[], &["status"]);
    assert_refused(code, &err, "state.db belongs to uid 0");
    assert_untouched(&file);
}

/// A `-wal` linked to root's file: refused by name. Before, root made that
/// file 0600 (its "tighten the database's mode" step followed the link) and
/// then failed on SQLite's own refusal.
#[test]
fn root_refuses_a_side_file_that_is_a_link() {
    if !root_or_skip("root_refuses_a_side_file_that_is_a_link") {
        return;
    }
    let (dir, database) = service_owned_state();
    let (_roots, file) = roots_file();
    let wal = PathBuf::from(format!("{}-wal", database.display()));
    let _ = std::fs::remove_file(&wal);
    std::os::unix::fs::symlink(&file, &wal).unwrap();
    let (code, err) = seatwarden_in(dir.path(), &[], &["status"]);
    assert_refused(code, &err, "state.db-wal is a symbolic link");
    assert_untouched(&file);
}

/// `sudo seatwarden backup` reads the database through no link either: a
/// `state.db` linked to root's own database is refused, nothing is copied.
#[test]
fn root_backup_refuses_a_state_database_that_is_a_link() {
    if !root_or_skip("root_backup_refuses_a_state_database_that_is_a_link") {
        return;
    }
    let (dir, database) = service_owned_state();
    let roots = tempfile::tempdir().unwrap();
    let roots_database = roots.path().join("roots.db");
    drop(seatwarden::store::Store::open(&roots_database).unwrap());
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", database.display()));
    }
    std::os::unix::fs::symlink(&roots_database, &database).unwrap();
    let copy = roots.path().join("copy.db");
    let (code, err) = seatwarden_in(dir.path(), &[], &["backup", copy.to_str().unwrap()]);
    assert_refused(code, &err, "state.db is a symbolic link");
    assert!(!copy.exists(), "root copied the database the link leads to");
}

/// The service's own user follows its links: a `state.db` linked onto another
/// folder of its own (another disk, say) opens, and so does root's command on
/// a state folder whose files are all the service's.
#[test]
fn the_services_user_follows_its_own_link_and_root_opens_its_plain_files() {
    if !root_or_skip("the_services_user_follows_its_own_link_and_root_opens_its_plain_files") {
        return;
    }
    let (dir, database) = service_owned_state();
    let (code, err) = seatwarden_in(dir.path(), &[], &["status"]);
    assert_eq!(code, Some(0), "root on the service's plain files: {err}");
    let elsewhere = dir.path().join("disk");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(&database, elsewhere.join("state.db")).unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", database.display()));
    }
    std::os::unix::fs::symlink("disk/state.db", &database).unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::lchown(&database, Some(65534), Some(65534)).unwrap();
    let (code, err) = as_service(dir.path(), &["status"]);
    assert_eq!(code, Some(0), "the service's own link: {err}");
}
