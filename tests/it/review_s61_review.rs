//! Session 61's review of session 60's lock files, from the side of someone who
//! controls the service user's state folder while root runs a command there.
//!
//! - A lock file refused as a symbolic link or a hard link to a root-owned file
//!   (`/etc/shadow`) was refused, but the message went on to tell root to run
//!   `chown UID:GID <the lock file>`: `chown` follows the link, and would have
//!   given the file it leads to to the service user. The `chown` hint is now
//!   given only for a plain lock file, and with `-h`.
//! - `sudo seatwarden plan --workspace-moved` made its preview copy of the
//!   state database in the service's folder, as root, by name: SQLite wrote the
//!   copy (a database the service writes to) wherever a link swapped in for the
//!   empty file led, and a copy a killed preview left stayed root's, which the
//!   service's commands skipped in silence for ever (they could not open it to
//!   see that nobody held it). Root now refuses to make that copy there, saying
//!   which user to run it as, and a root-owned copy whose maker is gone is
//!   removed by the service's next command. `sudo seatwarden backup` into the
//!   service's folders wrote its temporary copy the same way, and is refused
//!   the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::model::{LinkMethod, NewLink};
use seatwarden::store::{Store, WriterLock};

use crate::fixtures::seatwarden_in;
use crate::review_s60_ops::{as_service, root_or_skip, service_owned_state};

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

/// The preview copies beside the state database in `dir`.
fn preview_copies(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter(|name| name.contains(".moved-preview-"))
        .collect()
}

/// Root's `plan --workspace-moved` on the service's state database, bound to
/// another workspace, is refused before any copy is made, naming the user to
/// run it as. Before, root made the copy in the service's folder (and, killed,
/// left it there as root's).
#[test]
fn root_makes_no_preview_copy_in_the_services_folder() {
    if !root_or_skip("root_makes_no_preview_copy_in_the_services_folder") {
        return;
    }
    let (state, database) = service_owned_state();
    {
        let mut store = Store::open(&database).unwrap();
        store
            .set_state_value(
                seatwarden::run::WORKSPACE_KEY,
                Some("https://old.workspace.example/scim/v2"),
            )
            .unwrap();
        store
            .upsert_links(
                &[NewLink {
                    identity_id: "00u1".into(),
                    account_id: "a1".into(),
                    method: LinkMethod::Email,
                }],
                chrono::Utc::now(),
            )
            .unwrap();
    }

    let (code, stderr) = seatwarden_in(state.path(), &[], &["plan", "--workspace-moved"]);

    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not making the preview copy")
            && stderr.contains(&format!("{}.moved-preview-", database.display()))
            && stderr.contains("sudo -u '#65534' seatwarden"),
        "{stderr}"
    );
    assert_eq!(preview_copies(state.path()), Vec::<String>::new());
}

/// A preview copy an older version made as root and left when it was killed
/// (root's, owner-only): the service's next command removes it, naming it, as
/// it removes its own. Before, the service could not open it to look at its
/// lock and skipped it in silence, leaving a whole copy of the state database.
#[test]
fn a_root_owned_preview_copy_left_behind_is_removed_by_the_service() {
    if !root_or_skip("a_root_owned_preview_copy_left_behind_is_removed_by_the_service") {
        return;
    }
    let (state, database) = service_owned_state();
    let left = state.path().join("state.db.moved-preview-4000003");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&left)
            .unwrap();
        copy.write_all(&std::fs::read(&database).unwrap()).unwrap();
    }

    let (code, stderr) = as_service(state.path(), &["status"]);

    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "removed {}: a copy of the state database left behind",
            left.display()
        )),
        "{stderr}"
    );
    assert_eq!(preview_copies(state.path()), Vec::<String>::new());
}

/// `sudo seatwarden backup` into the service's state folder is refused before
/// anything is written there, naming the user to run it as; the service's
/// own backup there is written. Before, root wrote the temporary copy in that
/// folder by name.
#[test]
fn root_writes_no_backup_in_the_services_folder() {
    if !root_or_skip("root_writes_no_backup_in_the_services_folder") {
        return;
    }
    let (state, _database) = service_owned_state();
    let copy = state.path().join("backup.db");
    let before: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();

    let (code, stderr) = seatwarden_in(state.path(), &[], &["backup", copy.to_str().unwrap()]);

    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not writing the backup") && stderr.contains("sudo -u '#65534'"),
        "{stderr}"
    );
    let after: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert_eq!(before.len(), after.len(), "{stderr}");
    let (code, stderr) = as_service(state.path(), &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(copy.exists());
}
