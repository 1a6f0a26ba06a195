//! Session 36: a fresh operator's walkthrough (README's quickstart, every
//! `--help`, the mistakes people make in a first configuration), each rough
//! edge that was fixed pinned by a test. Run as the binary, as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

/// `seatwarden ARGS` in `cwd`, with no `SEATWARDEN_…` variable but `env`.
fn seatwarden(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SEATWARDEN") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.current_dir(cwd).args(args).envs(env.iter().copied());
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file-directory configuration in `dir` with `workspace` as its `[workspace]`
/// body and `rest` after it; returns its path.
fn write_config(dir: &Path, workspace: &str, rest: &str) -> std::path::PathBuf {
    std::fs::write(
        dir.join("directory.json"),
        r#"{"users": [{"id": "00u1", "userName": "ada@example.com", "status": "active"}]}"#,
    )
    .unwrap();
    let path = dir.join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\n{workspace}\n\n[state]\npath = \"state.db\"\n{rest}"
        ),
    )
    .unwrap();
    path
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A workspace nobody answers at (a mistyped port or host, a firewall): the error
/// named the endpoint and the socket error, and left the operator to guess that
/// `workspace.url` is what to check. It says so now, and `plan` exits 1.
#[test]
fn an_unreachable_workspace_names_workspace_url_and_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let config = write_config(
        dir.path(),
        &format!("url = \"http://127.0.0.1:{port}/scim/v2\"\ntoken = \"t0ken\"\nretries = 0"),
        "",
    );
    let output = seatwarden(
        dir.path(),
        &[],
        &["--config", config.to_str().unwrap(), "plan"],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&format!("connection failed (127.0.0.1:{port})")),
        "{line}"
    );
    assert!(
        line.contains("check the host and port in workspace.url"),
        "{line}"
    );
}
