//! `seatwarden demo`: the embedded example converges, and says so with exit 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use seatwarden::model::DriftKind;

#[tokio::test]
async fn the_demo_shows_every_drift_kind_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = seatwarden::demo::run(dir.path(), false).await.unwrap();

    let before = &outcome.first_plan.summary.drift_by_kind;
    // Deletion after a retention period needs `deprovision.action = "delete"`;
    // the demo deactivates, as the default does.
    for kind in DriftKind::ALL
        .into_iter()
        .filter(|k| *k != DriftKind::RetentionExpired)
    {
        assert!(before[&kind] > 0, "the demo should show {kind}: {before:?}");
    }
    let reconcile = &outcome.reconcile.summary;
    assert_eq!(
        reconcile.actions_failed, 0,
        "{:#?}",
        outcome.reconcile.actions
    );
    assert_eq!(reconcile.actions_held, 0);
    assert_eq!(reconcile.actions_applied, reconcile.actions_planned);
    assert!(outcome.converged());

    // What is left is what seatwarden reports and never acts on: the hand-made
    // account (orphaned, and an unmanaged member of a folder) and the disputed match.
    let after = &outcome.final_plan.summary;
    assert_eq!(after.actions_planned, 0);
    assert_eq!(after.drift_by_kind[&DriftKind::OrphanedAccount], 1);
    assert_eq!(after.drift_by_kind[&DriftKind::GroupDrift], 1);
    // One person, two accounts that may be theirs: one dispute, one item, the
    // person's, saying how each account matched.
    assert_eq!(after.drift_by_kind[&DriftKind::DisputedMatch], 1);
    let disputed: Vec<_> = outcome
        .final_plan
        .drift
        .iter()
        .filter(|d| d.kind == DriftKind::DisputedMatch)
        .collect();
    assert_eq!(disputed[0].identity_id.as_deref(), Some("00u1004"));
    assert!(
        disputed[0].detail.contains(
            "candidates: ws-0005 (emma.novak@example.com) by userName, \
             ws-0901 (e.jones@example.com) by email"
        ) && disputed[0].detail.contains("`seatwarden explain 00u1004`")
            && disputed[0]
                .detail
                .contains("`seatwarden link 00u1004 ACCOUNT`"),
        "{disputed:#?}"
    );
    assert_eq!(
        after.drift_total,
        after.drift_by_kind[&DriftKind::OrphanedAccount]
            + after.drift_by_kind[&DriftKind::GroupDrift]
            + after.drift_by_kind[&DriftKind::DisputedMatch]
    );
    assert!(dir.path().join("seatwarden.db").exists(), "state is kept");
}

#[test]
fn the_demo_command_exits_0_and_its_state_can_be_reported() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir", demo_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("the second plan is empty"), "{stdout}");

    let report = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args([
            "--config",
            demo_dir.join("seatwarden.toml").to_str().unwrap(),
            "report",
            "--run",
            "2",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(json["mode"], "reconcile");
    assert_eq!(json["summary"]["actions_failed"], 0);
    // Its configuration holds the sandbox token inline: owner-only, so the
    // commands run against it afterwards warn about nothing.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(demo_dir.join("seatwarden.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert!(!stderr.contains("WARN"), "{stderr}");

    // The dispute's one item is the person's; either account still explains it.
    for subject in ["00u1004", "ws-0901"] {
        let explain = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args([
                "--config",
                demo_dir.join("seatwarden.toml").to_str().unwrap(),
                "explain",
                subject,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&explain.stdout);
        assert!(explain.status.success(), "{stdout}");
        assert!(
            stdout.contains("\nDisputed match\n")
                && stdout.contains("seatwarden link 00u1004 ws-0901")
                && stdout.contains("why: several accounts match this identity"),
            "{subject}: {stdout}"
        );
    }
}

/// The demo replaces the state in its directory, so it refuses one it did not
/// make (someone's real state) and leaves its files alone; its own it reuses.
#[tokio::test]
async fn the_demo_refuses_a_directory_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(&config, "# someone's real configuration\n").unwrap();
    let err = seatwarden::demo::run(dir.path(), false).await.unwrap_err();
    assert!(
        matches!(err, seatwarden::demo::DemoError::NotADemoDirectory { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--dir"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# someone's real configuration\n"
    );
    assert!(!dir.path().join("seatwarden.db").exists());

    let own = dir.path().join("demo");
    for _ in 0..2 {
        let outcome = seatwarden::demo::run(&own, false).await.unwrap();
        assert!(outcome.converged());
    }
}

/// Kills the child if the test fails half-way, so no server outlives the suite.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_sandbox_command_serves_until_terminated() {
    let (mut child, url) = start_sandbox(&[]);
    assert_eq!(get_status(&format!("{url}/Users"), "t0k"), 200, "{url}");
    assert_eq!(get_status(&format!("{url}/Users"), "wrong"), 401, "{url}");
    // The shell builtin, so no procps package is needed.
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.0.id())])
        .status();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
}

/// Starts `seatwarden sandbox` with `args` on a free port; the child and its URL.
fn start_sandbox(args: &[&str]) -> (KillOnDrop, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["sandbox", "--port", "0", "--token", "t0k"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    for _ in 0..20 {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            let url = url.to_owned();
            // Kept open and drained: the sandbox dies writing to a closed stderr.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, url);
        }
    }
    panic!("the sandbox prints its URL on stderr")
}

#[test]
fn the_sandbox_command_injects_the_faults_it_is_given() {
    let (_throttling, url) = start_sandbox(&["--rate-429", "1", "--retry-after", "7"]);
    let answer = get(&format!("{url}/Users"), "t0k");
    assert_eq!(status_of(&answer), 429, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 7\r\n"),
        "{answer}"
    );

    // Writes only: reads are served, a POST is answered 503.
    let (_failing, url) = start_sandbox(&["--rate-5xx", "1", "--faults-on-writes-only"]);
    assert_eq!(get_status(&format!("{url}/Users"), "t0k"), 200);
    let answer = request(
        &format!("{url}/Users"),
        "t0k",
        "POST",
        r#"{"userName": "a@example.com"}"#,
    );
    assert_eq!(status_of(&answer), 503, "{answer}");

    // Pages are capped at --max-results; --no-or-filters refuses `or`.
    let (_capped, url) = start_sandbox(&["--max-results", "2", "--no-or-filters"]);
    let either = "filter=id%20eq%20%22a%22%20or%20id%20eq%20%22b%22";
    let answer = get(&format!("{url}/Users?{either}"), "t0k");
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("invalidFilter"), "{answer}");
    for n in 0..3 {
        let body = format!(r#"{{"userName": "u{n}@example.com"}}"#);
        let answer = request(&format!("{url}/Users"), "t0k", "POST", &body);
        assert_eq!(status_of(&answer), 201, "{answer}");
    }
    let answer = get(&format!("{url}/Users?count=10"), "t0k");
    let json: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["totalResults"], 3, "{answer}");
    assert_eq!(json["Resources"].as_array().unwrap().len(), 2, "{answer}");
}

#[test]
fn the_sandbox_command_hides_group_members_when_told() {
    let (_hiding, url) = start_sandbox(&["--hide-group-members"]);
    let answer = request(
        &format!("{url}/Users"),
        "t0k",
        "POST",
        r#"{"userName": "a@example.com"}"#,
    );
    assert_eq!(status_of(&answer), 201, "{answer}");
    let user = json_body(&answer)["id"].as_str().unwrap().to_owned();
    let group = format!(r#"{{"displayName": "Eng", "members": [{{"value": "{user}"}}]}}"#);
    let answer = request(&format!("{url}/Groups"), "t0k", "POST", &group);
    assert_eq!(status_of(&answer), 201, "{answer}");
    let answer = get(&format!("{url}/Groups"), "t0k");
    assert_eq!(
        json_body(&answer)["Resources"][0]["members"],
        serde_json::json!([])
    );
    let by_member = format!("filter=members.value%20eq%20%22{user}%22");
    let answer = get(&format!("{url}/Groups?{by_member}"), "t0k");
    assert_eq!(json_body(&answer)["totalResults"], 1, "{answer}");
    let nobody = "filter=members.value%20eq%20%22nobody%22";
    let answer = get(&format!("{url}/Groups?{nobody}"), "t0k");
    assert_eq!(status_of(&answer), 404, "{answer}");
}

#[test]
fn the_sandbox_command_pages_by_cursor_when_told() {
    let (_cursors, url) = start_sandbox(&["--pagination", "cursor", "--cursor-timeout", "90"]);
    let config = json_body(&get(&format!("{url}/ServiceProviderConfig"), "t0k"));
    assert_eq!(
        config["pagination"],
        serde_json::json!({"cursor": true, "index": false, "defaultPaginationMethod": "cursor",
            "defaultPageSize": 1000, "maxPageSize": 1000, "cursorTimeout": 90})
    );
    for n in 0..3 {
        let body = format!(r#"{{"userName": "u{n}@example.com"}}"#);
        let answer = request(&format!("{url}/Users"), "t0k", "POST", &body);
        assert_eq!(status_of(&answer), 201, "{answer}");
    }
    let first = json_body(&get(&format!("{url}/Users?startIndex=2&count=2"), "t0k"));
    assert_eq!(first["Resources"].as_array().unwrap().len(), 2, "{first}");
    let next = first["nextCursor"].as_str().unwrap();
    let last = json_body(&get(&format!("{url}/Users?cursor={next}&count=2"), "t0k"));
    assert_eq!(last["Resources"].as_array().unwrap().len(), 1, "{last}");
    assert!(last.get("nextCursor").is_none(), "{last}");
}

#[test]
fn the_sandbox_command_rejects_a_share_outside_0_to_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["sandbox", "--port", "0", "--rate-429", "1.5"])
        .output()
        .unwrap();
    // A usage error (EX_USAGE).
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rate-429"), "{stderr}");
    assert!(stderr.contains("from 0 to 1"), "{stderr}");
}

/// A plain HTTP/1.0 GET over a socket; the whole answer.
fn get(url: &str, token: &str) -> String {
    request(url, token, "GET", "")
}

/// A plain HTTP/1.0 request over a socket, with `body` as SCIM JSON when not
/// empty; the whole answer.
fn request(url: &str, token: &str, method: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A plain HTTP/1.0 GET over a socket; returns the status code.
fn get_status(url: &str, token: &str) -> u16 {
    status_of(&get(url, token))
}

/// The JSON body of an answer [`request`] returned.
fn json_body(answer: &str) -> serde_json::Value {
    serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[test]
fn the_sandbox_command_serves_without_patch_when_told() {
    let (_put_only, url) = start_sandbox(&["--no-patch"]);
    let config = json_body(&get(&format!("{url}/ServiceProviderConfig"), "t0k"));
    assert_eq!(config["patch"], serde_json::json!({"supported": false}));
    let answer = request(
        &format!("{url}/Users"),
        "t0k",
        "POST",
        r#"{"userName": "a@example.com"}"#,
    );
    assert_eq!(status_of(&answer), 201, "{answer}");
    let user = json_body(&answer)["id"].as_str().unwrap().to_owned();
    let deactivate = r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]}"#;
    let answer = request(&format!("{url}/Users/{user}"), "t0k", "PATCH", deactivate);
    assert_eq!(status_of(&answer), 501, "{answer}");
    let replaced = request(
        &format!("{url}/Users/{user}"),
        "t0k",
        "PUT",
        r#"{"userName": "a@example.com", "active": false}"#,
    );
    assert_eq!(status_of(&replaced), 200, "{replaced}");
    assert_eq!(json_body(&replaced)["active"], false, "{replaced}");
}

/// A demo run right after another in the same process (the tests, a program
/// using the library) found the directory "busy" with itself as the holder
/// when another thread had forked a child meanwhile: the child keeps the lock
/// file's descriptor, and so the lock, until its `exec`. A lock this process
/// holds is waited for a moment; held longer, it is refused as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_waits_a_moment_for_a_lock_its_own_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("demo");
    let held = seatwarden::demo::lock(&own).unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    });
    let outcome = seatwarden::demo::run(&own, false).await.unwrap();
    assert!(outcome.converged());
    release.await.unwrap();

    let _held = seatwarden::demo::lock(&own).unwrap();
    let started = std::time::Instant::now();
    let err = seatwarden::demo::run(&own, false).await.unwrap_err();
    assert!(
        matches!(
            err,
            seatwarden::demo::DemoError::Busy { holder: Some(pid), .. } if pid == std::process::id()
        ),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2), "{err}");
}
