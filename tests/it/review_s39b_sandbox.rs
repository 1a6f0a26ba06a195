//! Session 39 (second review) of `seatwarden demo` and `seatwarden sandbox` as
//! an operator scripting them meets them: the exit code of a demo refused because
//! another uses its directory, a token given with spaces or a newline around it,
//! and what the sandbox answers for SCIM endpoints it does not implement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;

use seatwarden::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;

/// A demo refused because another demo is using its directory exits 75
/// (`EX_TEMPFAIL`, as a command refused for the writer lock does): a script can
/// tell "busy, try again later" from a failed demo. Before, it exited 1.
#[test]
fn a_demo_refused_because_another_uses_its_directory_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    // This process holds the directory, as a running demo would.
    let held = seatwarden::demo::lock(&demo_dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("demo")
        .arg("--dir")
        .arg(&demo_dir)
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another `seatwarden demo` (process {}) is using",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(!demo_dir.join("seatwarden.db").exists());
    drop(held);
    // A directory that is not the demo's stays an error (1), not "busy".
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("demo")
        .arg("--dir")
        .arg(&foreign)
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}

struct KillChild(std::process::Child);

impl Drop for KillChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `seatwarden sandbox` with `args` and `SEATWARDEN_SANDBOX_TOKEN` set to `env`
/// (or unset): the child (killed on drop) and the URL it prints.
fn sandbox_command(args: &[&str], env: Option<&str>) -> (KillChild, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"));
    command
        .args(["sandbox", "--port", "0"])
        .args(args)
        .env_remove("SEATWARDEN_SANDBOX_TOKEN")
        .env_remove("SEATWARDEN_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(token) = env {
        command.env("SEATWARDEN_SANDBOX_TOKEN", token);
    }
    let mut child = KillChild(command.spawn().unwrap());
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // Kept open and drained: the sandbox dies writing to a closed stderr.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (child, url)
}

async fn status_with(url: &str, token: &str) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_backend_rustls()
        .build()
        .unwrap();
    http.get(format!("{url}/Users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A token given with spaces around it (`--token " T "`), or with the newline an
/// env file or `printf '%s\n'` leaves, is trimmed: clients send `T` (their bearer
/// token is trimmed too) and are let in. Before, the sandbox kept the spaces and
/// no request could ever match: every one was 401.
#[tokio::test]
async fn a_sandbox_token_with_spaces_or_a_newline_around_it_is_trimmed() {
    let (_cli, url) = sandbox_command(&["--token", "  cli-token "], None);
    assert_eq!(status_with(&url, "cli-token").await, 200);
    assert_eq!(status_with(&url, "other").await, 401);
    let (_env, url) = sandbox_command(&[], Some("env-token\n"));
    assert_eq!(status_with(&url, "env-token").await, 200);
}

/// A token of only spaces is refused with what to do, not served as a sandbox
/// nobody can use.
#[test]
fn a_blank_sandbox_token_is_refused() {
    for (args, env) in [
        (vec!["--token", "   "], None),
        (vec![], Some("\n")),
        (vec!["--token", ""], None),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"));
        command
            .args(["sandbox", "--port", "0"])
            .args(&args)
            .env_remove("SEATWARDEN_SANDBOX_TOKEN")
            .env_remove("SEATWARDEN_CONFIG");
        if let Some(token) = env {
            command.env("SEATWARDEN_SANDBOX_TOKEN", token);
        }
        // Bounded: a sandbox that accepted the token would serve until killed.
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} {env:?}: served instead of refusing the token");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains("--token (or SEATWARDEN_SANDBOX_TOKEN) is empty"),
            "{args:?} {env:?}: {stderr}"
        );
    }
}

/// `/Me` and `/Bulk`, which the sandbox does not implement, are 501 Not
/// Implemented with a SCIM error body (RFC 7644 §3.11, §3.7, §3.12), not 404 as
/// if the path were mistyped; and `/ServiceProviderConfig` still says bulk is
/// not supported. Unauthenticated, they stay 401.
#[tokio::test]
async fn me_and_bulk_are_501_not_implemented_with_a_scim_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(listener, SandboxOptions::default(), Default::default())
        .await
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_backend_rustls()
        .build()
        .unwrap();
    let base = sandbox.base_url().as_str().trim_end_matches('/').to_owned();
    let token = SandboxOptions::default().token;
    for (method, path) in [
        (reqwest::Method::GET, "/Me"),
        (reqwest::Method::PUT, "/Me"),
        (reqwest::Method::DELETE, "/Me"),
        (reqwest::Method::GET, "/Me/Groups"),
        (reqwest::Method::POST, "/Bulk"),
        (reqwest::Method::GET, "/Bulk"),
    ] {
        let answer = http
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(&token)
            .header("content-type", "application/scim+json")
            .body(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 501, "{method} {path}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(
            body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "{method} {path}: {body}"
        );
        assert_eq!(body["status"], "501", "{method} {path}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("not supported"),
            "{body}"
        );
        let unauthenticated = http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(unauthenticated.status().as_u16(), 401, "{method} {path}");
    }
    // Still 404 for a path that is no endpoint.
    let other = http
        .get(format!("{base}/Mee"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
    let config: Value = http
        .get(format!("{base}/ServiceProviderConfig"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["bulk"]["supported"], false, "{config}");
    sandbox.shutdown().await;
}
