//! Session 62's review of operations details.
//!
//! - Root (`sudo seatwarden status`, `approve`, `backup`) opened the state
//!   database by path, following whatever the service's user had put in its
//!   folder: a `state.db` linked (or hard-linked) to a file root can write had
//!   root write a database into it, and a `-wal` linked to any file had root
//!   chmod that file 0600. Root now refuses a database or side file that is a
//!   link or not its folder owner's, naming it and the `sudo -u` to run, and
//!   opens with `SQLITE_OPEN_NOFOLLOW`. The service's own user still follows
//!   its links. Root's lock files (made beside the file a `state.db` link
//!   resolves to) are refused the same way, before they are made.
//! - `export --output FILE --force` and `backup DEST --force` followed a FILE
//!   that was a symbolic link and replaced the file it led to: a link into
//!   another folder had the export land there, and one the service's user put
//!   in its folder had `sudo seatwarden backup` replace any file of root's.
//!   A destination that is a link is now refused, naming where it leads.
//! - The `link` and `unlink` commands seatwarden prints for a person to copy
//!   (`explain`, the export, the digest, hold reasons) named the providers'
//!   ids bare: one with a space or a `'` pasted into a shell gave `link` other
//!   arguments. Each id is now one shell word (`model::shell_word`).
//! - The export's `role` cell joined several roles with `,` (and the JSON
//!   carried that one string): a role named with a `,` read as two. Roles are
//!   now one a line of the cell, as groups are, and a list in the JSON.
//!
//! The ownership tests need root (CI runs them as root) and say so when skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fixtures::seatwarden_in;
use crate::review_s46_ops::demo_state;
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
    assert_eq!(
        meta.mode() & 0o777,
        0o644,
        "root chmod-ed {}",
        file.display()
    );
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

/// `export access --output` and `backup`, with `--force`, to a name that is a
/// link into another folder of the same user: refused, naming where it leads;
/// the file there and the link are as they were. Before, the file the link
/// led to was replaced by the export or the copy.
#[test]
fn export_and_backup_write_through_no_link() {
    let dir = tempfile::tempdir().unwrap();
    demo_state(dir.path());
    let elsewhere = dir.path().join("elsewhere");
    let out = dir.path().join("out");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::create_dir(&out).unwrap();
    let kept = elsewhere.join("kept.file");
    std::fs::write(&kept, "kept").unwrap();
    let review = out.join("review.csv");
    let latest = out.join("latest.db");
    for (link, args) in [
        (&review, vec!["export", "access", "--output"]),
        (&latest, vec!["backup"]),
    ] {
        std::os::unix::fs::symlink(&kept, link).unwrap();
        let mut args = args;
        args.extend([link.to_str().unwrap(), "--force"]);
        let (code, err) = seatwarden_in(dir.path(), &[], &args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "{} is a symbolic link to {}",
                link.display(),
                kept.display()
            )) && err.contains("nothing was written"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "kept", "{args:?}");
        assert!(
            std::fs::symlink_metadata(link).unwrap().is_symlink(),
            "{args:?}"
        );
    }
}

/// `sudo seatwarden backup --force` to a name in the service's folder that
/// the service's user made a link to a file of root's: refused. Before, root
/// followed it and renamed the copy over root's file, in root's folder (the
/// check on backups into the service's folders looked at where the link led).
#[test]
fn root_backup_replaces_no_file_a_link_in_the_services_folder_leads_to() {
    if !root_or_skip("root_backup_replaces_no_file_a_link_in_the_services_folder_leads_to") {
        return;
    }
    let (dir, _database) = service_owned_state();
    let (_roots, file) = roots_file();
    let link = dir.path().join("latest.db");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let (code, err) = seatwarden_in(
        dir.path(),
        &[],
        &["backup", link.to_str().unwrap(), "--force"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is a symbolic link to"), "{err}");
    assert_untouched(&file);
}

/// The words a POSIX shell makes of `command` (a line seatwarden printed for a
/// person to paste), its first word (`seatwarden`) left out.
fn shell_words(command: &str) -> Vec<String> {
    let rest = command.strip_prefix("seatwarden ").unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' {rest}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A person whose id holds a space and a `'` (a sandbox's or SCIM provider's
/// ids are its own strings), disputed between two accounts whose ids do too:
/// the `link` commands `explain` prints are, pasted into a shell, `link
/// IDENTITY ACCOUNT` with those ids whole. Before, they were printed bare: `seatwarden link ada o'neil w 1` (an unmatched quote).
#[test]
fn printed_link_commands_keep_ids_with_spaces_and_quotes_whole() {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    let dir = tempfile::tempdir().unwrap();
    let identity = "ada o'neil";
    let config = first_plan_stored(
        dir.path(),
        vec![person(identity, "ada@example.com", "ada@example.com")],
        vec![
            account("w 1", "ada@example.com", "ada.one@example.com"),
            account("w'2", "ADA@example.com", "ada.two@example.com"),
        ],
    );
    let (ok, stdout, stderr) = seatwarden(&config, &["explain", identity]);
    assert!(ok, "{stderr}");
    let commands: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("seatwarden link "))
        .collect();
    assert_eq!(commands.len(), 2, "{stdout}");
    for (command, account) in commands.iter().zip(["w 1", "w'2"]) {
        assert_eq!(
            shell_words(command),
            ["link", identity, account],
            "{stdout}"
        );
    }
}

/// An account with two roles, one with a `,` in its name: the CSV's `role`
/// cell has one a line, the JSON a list. Before: `Editor,Team, Lead`, and the
/// same string in the JSON.
#[test]
fn the_exports_roles_are_one_a_line_and_a_list_in_the_json() {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    let dir = tempfile::tempdir().unwrap();
    let mut two_roles = account("w1", "ada@example.com", "ada@example.com");
    two_roles.roles = vec!["Editor".into(), "Team, Lead".into()];
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![two_roles],
    );
    let (ok, csv, stderr) = seatwarden(&config, &["export", "access"]);
    assert!(ok, "{stderr}");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let role = headers.iter().position(|h| h == "role").unwrap();
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(&row[role], "Editor\nTeam, Lead", "{csv}");

    let (ok, json, stderr) = seatwarden(&config, &["export", "access", "--format", "json"]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["accounts"][0]["role"],
        serde_json::json!(["Editor", "Team, Lead"]),
        "{json}"
    );
}

/// Root's writer lock on a `state.db` linked to a file of root's: refused
/// before the lock file is made. Before, root made `<that file>.writer` in
/// the folder the link led to (any folder), then refused the database.
#[test]
fn root_makes_no_lock_file_where_a_linked_state_database_leads() {
    if !root_or_skip("root_makes_no_lock_file_where_a_linked_state_database_leads") {
        return;
    }
    let (dir, database) = service_owned_state();
    let (roots, file) = roots_file();
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", database.display()));
    }
    std::os::unix::fs::symlink(&file, &database).unwrap();
    let (code, err) = seatwarden_in(dir.path(), &[], &["resume", "--no-run"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refusing to open the state database"), "{err}");
    let names: Vec<_> = std::fs::read_dir(roots.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["roots.file"], "root made files where the link led");
    assert_untouched(&file);
}
