//! Session 48: an `export ... --output FILE` killed while it wrote leaves its
//! owner-only temporary file (`.FILE.export-PID`, every account's personal data)
//! beside FILE. Each export to FILE removes those a day old, as each backup does
//! its own copies: a fresher one may be another export's under way, and nothing
//! else is touched (another name's, a backup's, a link, a name not of the form).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::qa_cli::{account, first_plan_stored, person, seatwarden};

/// A file `name` in `dir` holding `text`, last written `age` ago.
fn left(dir: &Path, name: &str, age: Duration) {
    let path = dir.join(name);
    std::fs::write(&path, "00u1,ada@example.com,...\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn an_export_removes_the_temporary_files_killed_exports_to_its_name_left_a_day_ago() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![account("w1", "ada@example.com", "ada@example.com")],
    );
    let day = Duration::from_secs(24 * 60 * 60);
    let hour = Duration::from_secs(60 * 60);
    // Killed exports to review.csv, two days ago: removed.
    left(dir.path(), ".review.csv.export-4242", 2 * day);
    left(dir.path(), ".review.csv.export-1-3", 2 * day);
    // Left alone: one an hour old (maybe under way), another name's, a backup's
    // of this name, one not of the form, and a link to an old one.
    left(dir.path(), ".review.csv.export-77", hour);
    left(dir.path(), ".other.csv.export-4242", 2 * day);
    left(dir.path(), ".review.csv.backup-4242", 2 * day);
    left(dir.path(), ".review.csv.export-notes", 2 * day);
    left(dir.path(), "kept.csv", 2 * day);
    std::os::unix::fs::symlink(
        dir.path().join("kept.csv"),
        dir.path().join(".review.csv.export-99"),
    )
    .unwrap();

    let review = dir.path().join("review.csv");
    let (ok, out, err) = seatwarden(
        &config,
        &["export", "access", "--output", review.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    assert!(std::fs::read_to_string(&review).unwrap().contains("w1"));
    assert_eq!(
        names(dir.path()),
        [
            ".other.csv.export-4242",
            ".review.csv.backup-4242",
            ".review.csv.export-77",
            ".review.csv.export-99",
            ".review.csv.export-notes",
        ]
    );
    assert!(dir.path().join("kept.csv").exists());
}
