//! `seatwarden demo`: the embedded example converges, and says so with exit 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use seatwarden::model::DriftKind;

#[tokio::test]
async fn the_demo_shows_every_drift_kind_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = seatwarden::demo::run(dir.path(), false).await.unwrap();

    let before = &outcome.first_plan.summary.drift_by_kind;
    for kind in DriftKind::ALL {
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
    assert!(after.drift_by_kind[&DriftKind::DisputedMatch] > 0);
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
}

#[test]
fn the_sandbox_command_serves_until_terminated() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["sandbox", "--port", "0", "--token", "t0k"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    let answer = get_status(&format!("{url}/Users"), "t0k");
    assert_eq!(answer, 200, "{url}");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
}

/// A blocking GET for a test that has no runtime of its own; returns the status.
fn get_status(url: &str, token: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}
