//! Session 44's operator review of the CLI and daemon edges: a preview copy of
//! the state database a killed `plan --workspace-moved` left behind is removed
//! by a later command, never one a running preview still uses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::store::Store;

use crate::fixtures::seatwarden_in as seatwarden;

/// A configuration in `dir` reading the empty directory `d.json` for a workspace
/// nothing listens at (the commands run here read only the state database).
fn setup(dir: &Path) {
    std::fs::write(dir.join("d.json"), r#"{"users": []}"#).unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\n\
         [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t0ken\"\n\n\
         [state]\npath = \"state.db\"\n",
    )
    .unwrap();
}

/// A copy a preview killed by a second Ctrl-C left (written, its lock let go
/// with the process) is removed with its `-wal` by the next command, which says
/// so naming it; one a running preview holds stays.
#[test]
fn a_later_command_removes_a_preview_copy_left_behind_and_keeps_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let left = dir.path().join("state.db.moved-preview-4000000");
    drop(store.copy_to(&left).unwrap());
    std::fs::write(dir.path().join("state.db.moved-preview-4000000-wal"), "wal").unwrap();
    let live = dir.path().join("state.db.moved-preview-4000001");
    let held = store.copy_to(&live).unwrap();
    drop(store);

    let (code, stderr) = seatwarden(dir.path(), &[], &["status"]);

    assert_eq!(code, Some(0), "{stderr}");
    assert!(!left.exists(), "{stderr}");
    assert!(
        !dir.path()
            .join("state.db.moved-preview-4000000-wal")
            .exists(),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "removed {}: a copy of the state database left behind",
            left.display()
        )),
        "{stderr}"
    );
    assert!(live.exists(), "{stderr}");
    assert!(!stderr.contains("4000001"), "{stderr}");
    drop(held);
}

/// A daemon started on a state database with a copy left behind removes it
/// before it serves, and logs it naming the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_removes_a_preview_copy_left_behind_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let left = dir.path().join("state.db.moved-preview-4000002");
    drop(store.copy_to(&left).unwrap());
    drop(store);

    let (mut daemon, log) = crate::fixtures::spawn_daemon_once(dir.path(), &[]);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    crate::fixtures::listening_port(&mut daemon, read_log).await;
    crate::fixtures::sigterm(&daemon);
    let status = crate::fixtures::exit_of(daemon, "the daemon").await;

    let logged = read_log();
    assert!(status.success(), "{logged}");
    assert!(!left.exists(), "{logged}");
    assert!(
        logged.contains("removed a copy of the state database")
            && logged.contains("state.db.moved-preview-4000002"),
        "{logged}"
    );
}

/// `send-mail` without a `[report.email]` section exits 1 naming it, and its
/// `--help` says that exit 1 is also such an error, not only messages that
/// still wait after a transient failure (which would send the operator to run
/// it again later, in vain).
#[test]
fn send_mail_without_report_email_is_an_error_its_help_names() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    drop(Store::open(&dir.path().join("state.db")).unwrap());

    let (code, stderr) = seatwarden(dir.path(), &[], &["send-mail"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no [report.email] section"), "{stderr}");

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["send-mail", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    assert!(
        help.contains("or an error (no [report.email] section, no state database)"),
        "{help}"
    );
}

/// A daemon whose `state.path` is in a folder that does not exist fails to
/// start (exit 1) with an error that names the key, not only a lock file the
/// operator never configured.
#[test]
fn a_daemon_lock_file_that_cannot_be_made_names_state_path() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let env = [(
        "SEATWARDEN__STATE__PATH".to_owned(),
        "missing/state.db".to_owned(),
    )];
    let (code, stderr) = seatwarden(dir.path(), &env, &["daemon"]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        error.contains("cannot open lock file")
            && error.contains("missing/state.db.lock")
            && error.contains("(state.path)"),
        "{stderr}"
    );
}
