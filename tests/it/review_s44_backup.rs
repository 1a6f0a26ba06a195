//! `seatwarden backup`: a consistent copy of the state database taken while
//! another process writes to it, owner-only, never over an existing file unless
//! asked, refused for a file that is not a seatwarden database, and restorable:
//! `status` and `plan` run on the restored copy, still bound to its workspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::Connection;

/// `seatwarden --config DIR/seatwarden.toml ARGS` under umask `umask`, with
/// `env`: exit code, stdout, stderr.
fn seatwarden(
    dir: &Path,
    umask: &str,
    env: &[(String, String)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The demo's state (links, a journal, an audit trail) in `dir`, written by
/// `seatwarden demo`: its configuration is `dir/seatwarden.toml`, its database
/// `dir/seatwarden.db`.
fn demo_state(dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir"])
        .arg(dir)
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let database = dir.join("seatwarden.db");
    assert!(database.exists());
    database
}

fn count(database: &Path, table: &str) -> i64 {
    let conn = Connection::open(database).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

/// The tables holding what neither the directory nor the workspace gives back.
const KEPT: [&str; 8] = [
    "links",
    "actions",
    "audit",
    "held_decisions",
    "deprovisions",
    "circuit_breaker",
    "outbox",
    "runs",
];

fn counts(database: &Path) -> Vec<(&'static str, i64)> {
    KEPT.iter().map(|t| (*t, count(database, t))).collect()
}

fn integrity(database: &Path) -> String {
    let conn = Connection::open(database).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A daemon job holding a write transaction open (uncommitted rows in it) does
/// not hold the backup up, and is not in the copy: the copy is the last commit.
/// (Opening the source as the commands do, migration check included, would wait
/// for that lock and fail after the busy timeout.)
#[test]
fn a_write_transaction_held_open_neither_blocks_the_backup_nor_gets_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = demo_state(dir.path());
    let before = counts(&database);
    assert!(count(&database, "links") > 0 && count(&database, "actions") > 0);

    let writer = Connection::open(&database).unwrap();
    writer
        .execute_batch(
            "BEGIN IMMEDIATE;
             DELETE FROM links;
             INSERT INTO runs (kind, status, started_at)
               VALUES ('reconcile', 'running', '2026-01-01T00:00:00.000000000Z');",
        )
        .unwrap();
    let started = std::time::Instant::now();
    let copy = dir.path().join("copy.db");
    let (code, stdout, stderr) =
        seatwarden(dir.path(), "077", &[], &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the backup waited for the writer: {:?}",
        started.elapsed()
    );
    assert!(stdout.contains(copy.to_str().unwrap()), "{stdout}");
    assert!(stdout.contains("bytes"), "{stdout}");
    assert_eq!(counts(&copy), before);
    assert_eq!(integrity(&copy), "ok");
    writer.execute_batch("ROLLBACK").unwrap();
}

/// Writes committed in batches while backups are taken: each copy passes
/// integrity_check, holds whole batches only, and holds at least every batch
/// committed before it started (a copy of the file without its `-wal` would not).
#[test]
fn backups_taken_while_writes_commit_are_whole_and_current() {
    const BATCH: i64 = 7;
    let dir = tempfile::tempdir().unwrap();
    let database = demo_state(dir.path());
    let base = count(&database, "runs");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let database = database.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = Connection::open(&database).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            // Keep it all in the -wal until the end: the copy must read it.
            conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let tx = conn.transaction().unwrap();
                for _ in 0..BATCH {
                    tx.execute(
                        "INSERT INTO runs (kind, status, started_at, error)
                         VALUES ('plan', 'failed', '2026-01-01T00:00:00.000000000Z',
                                 hex(randomblob(512)))",
                        [],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
        })
    };
    for n in 0..4 {
        let committed = count(&database, "runs");
        let copy = dir.path().join(format!("copy-{n}.db"));
        let (code, _, stderr) =
            seatwarden(dir.path(), "077", &[], &["backup", copy.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(integrity(&copy), "ok");
        let copied = count(&copy, "runs");
        assert!(
            copied >= committed,
            "copy {n} lost commits: {copied} runs, {committed} before it"
        );
        assert_eq!((copied - base) % BATCH, 0, "copy {n} holds half a batch");
        // One file: no -wal to carry along with it.
        assert!(!dir.path().join(format!("copy-{n}.db-wal")).exists());
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        count(&database, "runs") > base + BATCH,
        "the writer wrote little"
    );
}

/// Under umask 000 the copy is still 0600, and nothing else is left beside it.
#[test]
fn the_copy_is_owner_only_under_any_umask() {
    let dir = tempfile::tempdir().unwrap();
    demo_state(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let copy = out.join("state.db");
    let (code, _, stderr) = seatwarden(dir.path(), "000", &[], &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(mode(&copy), 0o600, "{:o}", mode(&copy));
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("state.db")]);

    // A folder as DEST: a new file named by the time, owner-only too.
    let (code, stdout, stderr) =
        seatwarden(dir.path(), "000", &[], &["backup", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let made: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &copy)
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    let name = made[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("seatwarden-state-") && name.ends_with("Z.db"),
        "{name}"
    );
    assert!(stdout.contains(&name), "{stdout}");
    assert_eq!(mode(&made[0]), 0o600);

    // A folder written with a trailing `/` that does not exist yet is made,
    // owner-only; without the `/` a missing folder's name is a file's.
    let fresh = dir.path().join("backups").join("daily");
    let named = format!("{}/", fresh.display());
    let (code, _, stderr) = seatwarden(dir.path(), "000", &[], &["backup", &named]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(mode(&fresh), 0o700, "{:o}", mode(&fresh));
    assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 1);
}

/// An existing DEST is left as it was unless --force; the state database itself
/// (or its -wal) is never replaced, even with --force.
#[test]
fn an_existing_file_is_replaced_only_with_force_and_never_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let database = demo_state(dir.path());
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, "yesterday's backup").unwrap();
    let (code, _, stderr) = seatwarden(dir.path(), "077", &[], &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(copy.to_str().unwrap()), "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "yesterday's backup"
    );

    let (code, _, stderr) = seatwarden(
        dir.path(),
        "077",
        &[],
        &["backup", copy.to_str().unwrap(), "--force"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(counts(&copy), counts(&database));

    let before = std::fs::read(&database).unwrap();
    for own in [database.clone(), dir.path().join("seatwarden.db-wal")] {
        let (code, _, stderr) = seatwarden(
            dir.path(),
            "077",
            &[],
            &["backup", own.to_str().unwrap(), "--force"],
        );
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains("would replace the state database"),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read(&database).unwrap(), before);
    assert!(!dir.path().join("seatwarden.db-wal").exists());
}

/// A state.path that is not a seatwarden database (random bytes, another
/// program's SQLite file, an empty database) is refused with the file named, and
/// nothing is written to DEST.
#[test]
fn a_damaged_or_foreign_source_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    demo_state(dir.path());
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, [0x5au8; 8192]).unwrap();
    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER)")
        .unwrap();
    let empty = dir.path().join("empty.db");
    Connection::open(&empty)
        .unwrap()
        .execute_batch("PRAGMA user_version = 0; VACUUM")
        .unwrap();
    let copy = dir.path().join("copy.db");
    for (source, says) in [
        (
            &junk,
            "file is damaged or is not a seatwarden state database",
        ),
        (
            &foreign,
            "is not a seatwarden state database: it holds other tables (invoices)",
        ),
        (
            &empty,
            "is not a seatwarden state database: it has no tables",
        ),
    ] {
        let env = [(
            "SEATWARDEN__STATE__PATH".to_owned(),
            source.to_str().unwrap().to_owned(),
        )];
        let (code, _, stderr) =
            seatwarden(dir.path(), "077", &env, &["backup", copy.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(source.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!copy.exists());
        let stray: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("backup"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
    // The foreign file is not touched (no seatwarden tables, still 0644-or-so).
    assert_eq!(count(&foreign, "invoices"), 0);
}

/// A damaged table inside a real seatwarden database (its schema intact): the
/// copy fails, the error names the database and says what to do, and nothing is
/// left under DEST or beside it.
#[test]
fn a_database_damaged_inside_is_not_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let database = demo_state(dir.path());
    let conn = Connection::open(&database).unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let root: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'links'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(&database).unwrap();
    let start = usize::try_from((root - 1) * page_size).unwrap();
    let end = start + usize::try_from(page_size).unwrap();
    for byte in &mut bytes[start..end] {
        *byte = 0xa5;
    }
    std::fs::write(&database, bytes).unwrap();
    let copy = dir.path().join("copy.db");
    let (code, _, stderr) = seatwarden(dir.path(), "077", &[], &["backup", copy.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(database.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("restore the last good backup"), "{stderr}");
    assert!(!copy.exists());
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("backup"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn backup_help_says_how_to_use_and_restore_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["backup", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Usage: seatwarden backup [OPTIONS] <DEST>",
        "--force",
        "0600",
        "integrity_check",
        "remove the stale -wal",
        "seatwarden status",
        "Exit codes: 0 written, 1 an error",
    ] {
        assert!(help.contains(needle), "{needle:?} not in:\n{help}");
    }
    // A missing DEST is a usage error (64), not a failed backup.
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("backup")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// The README's restore: the daemon stopped, the copy put in place of the
/// database, stale -wal/-shm removed; `status` and `plan` run on it, it holds the
/// links taken away since the backup, and it is still bound to its workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_runs_status_and_plan_and_keeps_its_workspace() {
    const TOKEN: &str = "s44-backup";
    let sandbox =
        crate::fixtures::demo_sandbox(TOKEN, seatwarden::sandbox::Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, config) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    crate::fixtures::reconcile(&config).await;
    let database = config.state.path.clone();
    let kept = counts(&database);
    assert!(count(&database, "links") > 0);

    let run = |env: Vec<(String, String)>, args: Vec<String>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            seatwarden(&dir, "077", &env, &args)
        })
    };
    let copy = dir.path().join("backup.db");
    let (code, _, stderr) = run(
        env.clone(),
        vec!["backup".into(), copy.display().to_string()],
    )
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");

    // Lost since: every link, manual ones too.
    Connection::open(&database)
        .unwrap()
        .execute_batch("DELETE FROM links")
        .unwrap();
    assert_eq!(count(&database, "links"), 0);

    // The restore.
    std::fs::copy(&copy, &database).unwrap();
    for side in ["-wal", "-shm"] {
        let mut name = database.clone().into_os_string();
        name.push(side);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
    assert_eq!(counts(&database), kept);
    let (code, _, stderr) = run(env.clone(), vec!["status".into()]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = run(
        env.clone(),
        vec!["plan".into(), "--detailed-exitcode".into()],
    )
    .await
    .unwrap();
    assert!(matches!(code, Some(0 | 2)), "{stderr}");
    assert_eq!(count(&database, "links"), kept[0].1);

    // Still bound to the workspace it was taken from.
    let elsewhere: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "SEATWARDEN__WORKSPACE__URL" => (k.clone(), "http://127.0.0.1:9/scim/v2".to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let (code, _, stderr) = run(elsewhere, vec!["plan".into()]).await.unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("reconcile --workspace-moved"), "{stderr}");
}
