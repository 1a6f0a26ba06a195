//! Session 47: `seatwarden audit` lists the audit trail of human decisions. The
//! rows were written (approve, reject, link, …) but only `sqlite3` could read
//! them: "who rejected the held deactivation, and when?" had no command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use seatwarden::sandbox::Faults;

use crate::fixtures::{demo_env, demo_sandbox};

/// `seatwarden ARGS` in `dir` with `env`, run by `operator` as the account `seatwarden`.
fn seatwarden(dir: &Path, env: &[(String, String)], operator: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SEATWARDEN_OPERATOR", operator)
        .env("USER", "seatwarden")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_who_decided_what_and_filters_by_run_period_and_id() {
    let sandbox = demo_sandbox("t", Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = demo_env(
        dir.path(),
        &sandbox,
        "t",
        &[
            ("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0"),
            ("SEATWARDEN__REPORT__TIMEZONE", "Europe/Berlin"),
        ],
    );
    let dir = dir.path().to_owned();
    let (env, dir) = tokio::task::spawn_blocking(move || {
        // Before any run there is no state database: an error, not an empty list.
        let out = seatwarden(&dir, &env, "carol", &["audit"]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

        let out = seatwarden(&dir, &env, "carol", &["reconcile"]);
        assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
        let out = seatwarden(&dir, &env, "alice", &["reject", "1"]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        let out = seatwarden(&dir, &env, "bob", &["link", "00u1004", "ws-0005"]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        (env, dir)
    })
    .await
    .unwrap();

    let out = seatwarden(&dir, &env, "carol", &["audit"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "audit trail: 2 entries");
    // On report.timezone's clock, oldest first, the reconcile itself not being a
    // decision.
    assert!(
        lines[1].starts_with("#1  ")
            && lines[1].contains(
                " +01:00 (CET)  alice (as seatwarden)  reject (run 1): rejected 1 held action"
            ),
        "{text}"
    );
    assert!(
        lines[2].starts_with("#2  ")
            && lines[2].ends_with(
                "  bob (as seatwarden)  link: linked identity 00u1004 to account ws-0005"
            ),
        "{text}"
    );

    // explain names who made the link, from the trail.
    let text = stdout(&seatwarden(&dir, &env, "carol", &["explain", "00u1004"]));
    assert!(
        text.contains(
            "  00u1004 ↔ account ws-0005, linked by hand (`link`) by bob (as seatwarden) at "
        ),
        "{text}"
    );

    let text = stdout(&seatwarden(&dir, &env, "carol", &["audit", "--run", "1"]));
    assert!(
        text.starts_with("audit trail: 1 entry about run 1\n#1  ") && text.lines().count() == 2,
        "{text}"
    );
    let text = stdout(&seatwarden(
        &dir,
        &env,
        "carol",
        &["audit", "--period", "1h"],
    ));
    assert_eq!(text.lines().count(), 3, "{text}");

    // What a log shipper that read #1 asks for next.
    let out = seatwarden(
        &dir,
        &env,
        "carol",
        &["audit", "--format", "json", "--after", "1"],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0]["id"], 2);
    assert_eq!(rows[0]["user"], "bob (as seatwarden)");
    assert_eq!(rows[0]["command"], "link");
    assert_eq!(rows[0]["run"], serde_json::Value::Null);
    assert!(rows[0]["at"].as_str().unwrap().ends_with('Z'), "{text}");

    let text = stdout(&seatwarden(
        &dir,
        &env,
        "carol",
        &["audit", "--format", "json", "--after", "2"],
    ));
    assert_eq!(text, "");
}

/// The digest lists the period's decisions, so whoever reads it sees who
/// overrode or decided what without asking for the trail; a decision older than
/// the period is not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_lists_the_decisions_people_made_in_its_period() {
    let sandbox = demo_sandbox("t", Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = demo_env(
        dir.path(),
        &sandbox,
        "t",
        &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0")],
    );
    let dir = dir.path().to_owned();
    let (env, dir) = tokio::task::spawn_blocking(move || {
        let out = seatwarden(&dir, &env, "carol", &["reconcile"]);
        assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
        let out = seatwarden(&dir, &env, "alice", &["reject", "1"]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        (env, dir)
    })
    .await
    .unwrap();
    // A decision from two days ago, before a one-day digest's period.
    {
        let mut store = seatwarden::store::Store::open(&dir.join("state.db")).unwrap();
        store
            .record_audit(&seatwarden::store::AuditEntry {
                at: chrono::Utc::now() - chrono::Duration::days(2),
                user: "dave".into(),
                command: "resume".into(),
                run: None,
                detail: "closed the circuit breaker".into(),
            })
            .unwrap();
    }

    let text = stdout(&seatwarden(&dir, &env, "carol", &["digest"]));
    let section = text
        .split_once("Decisions by people in this period (1):\n")
        .unwrap_or_else(|| panic!("{text}"))
        .1;
    let line = section.lines().next().unwrap();
    assert!(
        line.starts_with("  - ")
            && line.ends_with(", alice (as seatwarden): reject (run 1): rejected 1 held action"),
        "{text}"
    );
    assert!(!text.contains("dave"), "{text}");

    let out = seatwarden(&dir, &env, "carol", &["digest", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let decisions = json["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{json}");
    assert_eq!(decisions[0]["user"], "alice (as seatwarden)");
    assert_eq!(decisions[0]["run"], 1);
    assert_eq!(decisions[0]["id"], 1);

    let text = stdout(&seatwarden(
        &dir,
        &env,
        "carol",
        &["digest", "--period", "7d"],
    ));
    assert!(
        text.contains("Decisions by people in this period (2):")
            && text.contains(", dave: resume: closed the circuit breaker"),
        "{text}"
    );
    for format in ["markdown", "html"] {
        let text = stdout(&seatwarden(
            &dir,
            &env,
            "carol",
            &["digest", "--format", format],
        ));
        assert!(
            text.contains("Decisions by people in this period (1)")
                && text.contains("alice (as seatwarden)")
                && !text.contains("dave"),
            "{format}: {text}"
        );
    }
}

/// A period with more decisions than the digest lists: the first 50 (the
/// oldest) are listed, and the line counting the rest names the command that
/// lists them, from the last one listed on, not the whole trail.
#[test]
fn the_digest_names_the_command_for_the_decisions_it_did_not_list() {
    let mut store = seatwarden::store::Store::open_in_memory().unwrap();
    let now = chrono::Utc::now();
    for minute in 0..53 {
        store
            .record_audit(&seatwarden::store::AuditEntry {
                at: now - chrono::Duration::minutes(60 - minute),
                user: "alice".into(),
                command: "link".into(),
                run: None,
                detail: format!("linked identity 00u{minute} to account ws-{minute}"),
            })
            .unwrap();
    }
    let digest = seatwarden::report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        now,
        std::time::Duration::from_secs(86_400),
        &[],
        "sudo seatwarden-admin",
    )
    .unwrap();
    assert_eq!(digest.decisions.len(), 53);
    let text = digest.render_text();
    assert!(
        text.contains("Decisions by people in this period (53):")
            && text.contains("linked identity 00u49 to account ws-49\n")
            && !text.contains("00u50 ")
            && text
                .contains("… and 3 more: `sudo seatwarden-admin audit --after 50` lists the rest."),
        "{text}"
    );
    for rendered in [
        digest.render_markdown().unwrap(),
        digest.render_html().unwrap(),
    ] {
        assert!(
            rendered.contains("… and 3 more:") && rendered.contains("audit --after 50"),
            "{rendered}"
        );
    }
}
