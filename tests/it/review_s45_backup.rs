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
