//! Session 64, third review of the merged `helper-connect` work: what an
//! operator sees when seatwarden prints the providers' strings.
//!
//! - `export access` wrote its cells raw to stdout: on a terminal, an ESC in
//!   an account's userName (a workspace takes what an admin types) drove it.
//!   On a terminal it is now shown as U+FFFD, and stderr says how many and
//!   that a file or a pipe keeps every value exact.
//! - JSON printed (`export access --format json`, `report`, `status`, `audit`,
//!   `digest`) left DEL, C1 controls and bidi overrides raw in its strings:
//!   they are written as `\uXXXX` escapes now, the same value to a JSON reader.
//! - A log line written while a progress line (`reading directory people: …`,
//!   `applying: …`) was on a terminal ran on from it, on the same line, and
//!   `check-config --connect` checks the directory, the workspace and the mail
//!   relay at once, so any of their log lines could land there. A log line now
//!   ends the open progress line first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use seatwarden::config::Config;
use seatwarden::model::{Account, DirectorySnapshot, WorkspaceGroup, WorkspaceSnapshot};
use seatwarden::sandbox::{Sandbox, SandboxOptions, SandboxPaging};
use seatwarden::store::{RunKind, RunStatus, Store};

/// A state database whose newest run read one account, its userName holding
/// an escape sequence that clears the screen, a carriage return and a bidi
/// override; the configuration's path.
fn stored_account_with_control_characters(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("directory.json"), "{\"users\": []}").unwrap();
    let path = dir.join("seatwarden.toml");
    std::fs::write(
        &path,
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
         [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n",
    )
    .unwrap();
    // Private, so that no warning (in colour, with ESCs of its own) is logged.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = Config::load_with_env(&path, Some(Default::default())).unwrap();
    let at: DateTime<Utc> = "2026-12-07T08:00:00Z".parse().unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Plan, at).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: vec![],
                complete: true,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &WorkspaceSnapshot {
                accounts: vec![Account {
                    id: "w1".into(),
                    user_name: "eve\u{1b}[2J\rok\u{202e}@ex.com".into(),
                    external_id: None,
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: None,
                    active: true,
                    roles: vec!["Viewer".into()],
                }],
                groups: vec![],
            },
        )
        .unwrap();
    store
        .finish_run(run, at, RunStatus::Succeeded, None)
        .unwrap();
    path
}

/// `export access` on a terminal: no ESC, carriage return or bidi override
/// reaches it; the CSV shows the userName with U+FFFD for each, and stderr
/// says so; the JSON escapes each (`\u202e`), the value whole. To a pipe, the
/// CSV's exact bytes, the same JSON, and no such note. Before, the terminal
/// got the ESC and its screen was cleared, and the JSON's override was raw.
#[test]
fn export_access_on_a_terminal_shows_control_characters_as_replacement_and_a_pipe_gets_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = stored_account_with_control_characters(dir.path());
    for format in ["csv", "json"] {
        let line = format!(
            "{} --config {} export access --format {format}",
            env!("CARGO_BIN_EXE_seatwarden"),
            path.display()
        );
        let terminal = Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .current_dir(dir.path())
            .env_remove("SEATWARDEN_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("util-linux `script` gives the test a terminal: {e}"));
        let shown = String::from_utf8_lossy(&terminal.stdout);
        assert_eq!(terminal.status.code(), Some(0), "{shown}");
        assert!(
            !shown.contains(['\u{1b}', '\u{202e}']) && !shown.contains("\rok"),
            "{format}: {shown:?}"
        );
        if format == "csv" {
            assert!(
                shown.contains("eve\u{fffd}[2J\u{fffd}ok\u{fffd}@ex.com"),
                "{shown:?}"
            );
            assert!(
                shown.contains("3 characters that would act on this terminal"),
                "{shown:?}"
            );
            assert!(
                shown.contains(
                    "written to a file (--output) or a pipe, the export keeps every value exact"
                ),
                "{shown:?}"
            );
        } else {
            // JSON escapes each of them, the value whole: nothing to replace.
            assert!(
                shown.contains(r"eve\u001b[2J\rok\u202e@ex.com"),
                "{shown:?}"
            );
            assert!(!shown.contains("act on this terminal"), "{shown:?}");
        }

        let piped = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&path)
            .args(["export", "access", "--format", format])
            .env_remove("SEATWARDEN_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8(piped.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&piped.stderr);
        assert_eq!(piped.status.code(), Some(0), "{stderr}");
        let exact = if format == "csv" {
            "eve\u{1b}[2J\rok\u{202e}@ex.com"
        } else {
            r"eve\u001b[2J\rok\u202e@ex.com"
        };
        assert!(stdout.contains(exact), "{format}: {stdout:?}");
        assert!(!stderr.contains("act on this terminal"), "{stderr}");
    }
}

const TOKEN: &str = "s64-rev3-token";

/// `check-config --connect` on a terminal against a SCIM directory paged by
/// cursor whose cursors expire at once: the listing of every User shows its
/// first page, the provider refuses the cursor, and the warning that it lists
/// again from the first page is logged while the progress line is open. The
/// warning starts a line of its own. Before, it ran on from
/// `reading directory people: 2/5 objects, 1 pages`.
#[tokio::test]
async fn a_log_line_during_a_directory_listing_starts_its_own_line_on_a_terminal() {
    let accounts: Vec<Account> = (1..=5)
        .map(|n| Account {
            id: format!("u{n}"),
            user_name: format!("p{n}@example.com"),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: Some(format!("p{n}@example.com")),
            active: true,
            roles: vec!["Viewer".into()],
        })
        .collect();
    let seed = WorkspaceSnapshot {
        groups: vec![WorkspaceGroup {
            id: "g1".into(),
            display_name: "Taskade Users".into(),
            members: accounts.iter().map(|a| a.id.clone()).collect(),
        }],
        accounts,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            paging: SandboxPaging::Cursor,
            cursor_timeout: Some(std::time::Duration::ZERO),
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = sandbox.base_url();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"scim\"\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\
             page_size = 2\nmax_concurrency = 1\nrequests_per_second = 0\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"state.db\"\n\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let line = format!(
        "{} --config {} check-config --connect",
        env!("CARGO_BIN_EXE_seatwarden"),
        path.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn,seatwarden=info")
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null());
    let terminal = tokio::task::spawn_blocking(move || script.output().unwrap())
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert!(
        shown.contains("\r  reading directory people: 2/5 objects, 1 pages   "),
        "{shown:?}"
    );
    let warned = shown
        .find("the provider refused its own cursor")
        .unwrap_or_else(|| panic!("no cursor warning in {shown:?}"));
    let line_start = shown[..warned].rfind('\n').map_or(0, |i| i + 1);
    assert!(
        !shown[line_start..warned].contains("reading directory"),
        "the warning runs on from the progress line: {:?}",
        &shown[line_start..]
    );
    sandbox.shutdown().await;
}
