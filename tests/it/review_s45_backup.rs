//! `seatwarden backup` and the temporary copy a killed backup leaves behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

/// A backup killed while it wrote leaves `.NAME.backup-PID`. A backup run as a
/// container's or a Kubernetes CronJob's command is pid 1 every time: the next
/// one, to the same destination, met that file under the name it wanted and
/// failed ("cannot write the backup …: File exists"), and so did every backup
/// after it, until someone found and removed the hidden file. It now writes
/// under another name, and leaves the other file alone (on a shared volume it
/// may be another host's backup still being written).
#[test]
fn a_killed_backups_copy_under_the_same_pid_does_not_stop_the_next_backups() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let copy = backups.join("state.db");
    for round in 0..2 {
        // The shell leaves the killed backup's file under its own pid, then
        // becomes seatwarden under that same pid.
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg("echo partial > \"$1/.state.db.backup-$$\"; shift; exec \"$@\"")
            .arg("sh")
            .arg(&backups)
            .arg(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(dir.path().join("seatwarden.toml"))
            .args(["backup", "--force"])
            .arg(&copy)
            .env_remove("SEATWARDEN_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "round {round}: {stderr}");
        let conn = rusqlite::Connection::open(&copy).unwrap();
        let links: i64 = conn
            .query_row("SELECT count(*) FROM links", [], |row| row.get(0))
            .unwrap();
        assert!(links > 0, "round {round}");
    }
    // The other files are left as they were; no copy of this backup's remains.
    let mut left: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "state.db")
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    for name in &left {
        assert!(name.starts_with(".state.db.backup-"), "{left:?}");
        assert_eq!(
            std::fs::read_to_string(backups.join(name)).unwrap(),
            "partial\n"
        );
    }
}

/// `uid` of the test process.
fn euid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A backup folder the service may write to but not list (0300: a drop box,
/// so that the service can neither read nor remove older backups). The copy
/// was written and put in place, then opening the folder to sync it was
/// refused, and the backup said it failed, "the user seatwarden runs as may
/// not write to its folder", exit 1, beside the whole copy it had written:
/// every night's run failed while each wrote its backup.
#[test]
fn a_folder_that_can_be_written_but_not_listed_takes_the_backup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let drop_box = dir.path().join("drop");
    std::fs::create_dir(&drop_box).unwrap();
    // As root, the folder's mode binds nobody: the backup runs as another user.
    let root = euid() == 0;
    let mut command = if root {
        for entry in walk(dir.path()) {
            std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
        }
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        command.arg(env!("CARGO_BIN_EXE_seatwarden"));
        command
    } else {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
    };
    std::fs::set_permissions(&drop_box, std::fs::Permissions::from_mode(0o300)).unwrap();
    let out = command
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .arg("backup")
        .arg(drop_box.join("state.db"))
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::set_permissions(&drop_box, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("could not be synced"), "{stderr}");
    let conn = rusqlite::Connection::open(drop_box.join("state.db")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let names: Vec<String> = std::fs::read_dir(&drop_box)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["state.db"], "no temporary copy is left");
}

/// `root` and everything under it.
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![root.to_owned()];
    if root.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            all.extend(walk(&entry.unwrap().path()));
        }
    }
    all
}

/// The state database's folder bind-mounted at a second path (a container's
/// volume mounted twice, a host path beside the service's): `backup
/// ALIAS/seatwarden.db --force` names the database itself, which canonicalize
/// does not see through. It was replaced by the copy, under the daemon, which
/// then stops on "another file than the one the daemon opened", and every write
/// after the copy began is lost. Refused now, as the database's own path is.
#[test]
fn the_database_through_a_bind_mount_of_its_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let database = dir.path().join("seatwarden.db");
    let inode = |path: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    };
    let before = inode(&database);
    let alias = tempfile::tempdir().unwrap();
    // A mount namespace of its own (a user namespace too, so that it needs no
    // root): the bind mount ends with the process.
    let out = Command::new("unshare")
        .args(["-r", "-m", "sh", "-c"])
        .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"")
        .arg("sh")
        .arg(dir.path())
        .arg(alias.path())
        .arg(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .args(["backup", "--force"])
        .arg(alias.path().join("seatwarden.db"))
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("would replace the state database"),
        "{stderr}"
    );
    assert_eq!(inode(&database), before, "the state database was replaced");
}
