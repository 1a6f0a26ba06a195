//! `schedule.dry_run`: a daemon that only observes. Its reconciles are dry runs
//! (planned, reported, nothing written), the sweep and the retry pass are not
//! scheduled, `status`, `/status` and `/metrics` say so, a held plan raises no
//! "approve" alert (a dry run cannot be approved), and a SIGHUP that turns it off
//! makes the daemon write again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use seatwarden::sandbox::Faults;

use crate::daemon::{daemon_env, demo_sandbox, http, metric, start_daemon, wait_for};

/// Writes the daemon configuration `config` as `enforcing` (the demo's, which
/// has no `[schedule]` table) with `schedule.dry_run` on.
pub(crate) fn write_dry_run(config: &std::path::Path, enforcing: &str) {
    std::fs::write(config, format!("{enforcing}\n[schedule]\ndry_run = true\n")).unwrap();
}

/// The runs recorded in the daemon's state database, oldest first: (kind, status).
fn runs(dir: &std::path::Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT kind, status FROM runs ORDER BY id")
        .unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_daemon_plans_and_reports_and_writes_nothing_until_reloaded_without_it() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // A sweep every minute, were it scheduled; the guard holds the demo's leaver
    // (one deprovision over a limit of none), so the plan has a hold to approve.
    let mut env = daemon_env(dir.path(), &sandbox, "* * * * *");
    env.push(("SEATWARDEN__SAFETY__MAX_DEPROVISIONS".into(), "0".into()));
    std::fs::write(dir.path().join("trigger-token"), "s3cret-trigger\n").unwrap();
    env.push((
        "SEATWARDEN__HTTP__TRIGGER_TOKEN_FILE".into(),
        "trigger-token".into(),
    ));
    let config_path = dir.path().join("seatwarden.toml");
    let enforcing = std::fs::read_to_string(&config_path).unwrap();
    write_dry_run(&config_path, &enforcing);
    let writes_before = sandbox.stats().writes;
    let mut daemon = start_daemon(dir.path(), env);
    daemon.listening().await;
    wait_for("the first dry run", Duration::from_secs(120), || {
        daemon.logged("job finished job=\"reconcile\"")
    })
    .await;
    assert!(
        daemon.logged("dry run (schedule.dry_run = true)"),
        "{}",
        daemon.log.lock().unwrap()
    );
    assert_eq!(
        runs(dir.path()),
        [("dry_run".to_owned(), "succeeded".to_owned())]
    );
    assert_eq!(
        sandbox.stats().writes,
        writes_before,
        "a dry run writes nothing"
    );

    let metrics = daemon.get("/metrics").1;
    assert_eq!(
        metric(&metrics, "seatwarden_dry_run"),
        Some(1.0),
        "{metrics}"
    );
    // The drift it found is on the gauges, as a reconcile's left drift is.
    assert_eq!(
        metric(&metrics, "seatwarden_drift_items{kind=\"stale_access\"}"),
        Some(1.0),
        "{metrics}"
    );

    let check = daemon.cli(&["check-config"]);
    let told = String::from_utf8_lossy(&check.stderr);
    assert!(
        told.contains("(dry runs: schedule.dry_run, nothing is written)")
            && told.contains("off: schedule.dry_run (nobody who leaves is deactivated)"),
        "{told}"
    );

    let status = daemon.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.starts_with(
            "DRY RUN (schedule.dry_run = true): the daemon plans and reports, and writes \
             nothing to the workspace; no sweep runs, so nobody who leaves is deactivated\n  \
             last dry run: run 1, finished "
        ),
        "{text}"
    );
    assert!(
        text.contains(": 19 drift items found, 8 actions planned (`seatwarden report --run 1`)"),
        "{text}"
    );
    // Neither writing job is listed as scheduled.
    assert!(
        !text.contains("  sweep") && !text.contains("  retry"),
        "{text}"
    );
    let status = daemon.cli(&["status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["dry_run"]["last_run"]["kind"], "dry_run", "{json}");
    assert_eq!(json["dry_run"]["drift_items"], 19, "{json}");
    let jobs: Vec<&str> = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(
        !jobs.contains(&"sweep") && !jobs.contains(&"retry"),
        "{jobs:?}"
    );

    // The digest says first that nothing is acted on, in every form and in its
    // subject, as the daemon's mailed digest does.
    let notice = seatwarden::report::digest::DRY_RUN_NOTICE;
    for format in ["text", "markdown", "html"] {
        let out = daemon.cli(&["digest", "--format", format]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(notice), "{format}: {text}");
    }
    let out = daemon.cli(&["digest", "--format", "json"]);
    let digest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(digest["dry_run"], true, "{digest}");
    assert!(
        digest["subject"]
            .as_str()
            .unwrap()
            .starts_with("[seatwarden] ")
            && digest["subject"].as_str().unwrap().contains(" (dry run): "),
        "{digest}"
    );
    {
        let (_mail_dir, notifier) =
            crate::review_s39_holds::notifier_with("[schedule]\ndry_run = true\n");
        let mut store = seatwarden::store::Store::open(&dir.path().join("state.db")).unwrap();
        notifier
            .queue_digest(
                &mut store,
                chrono::Utc::now(),
                chrono::Duration::days(1),
                None,
                &[],
            )
            .unwrap();
        let queued = store.outbox().unwrap();
        let mail = &queued.last().unwrap().message;
        assert!(mail.subject.contains(" (dry run): "), "{}", mail.subject);
        assert!(
            mail.text.contains(notice) && mail.html.contains(notice),
            "{}",
            mail.text
        );
        // Not left for the daemon's mail job to send.
        for entry in queued {
            store
                .mark_message_sent(entry.id, chrono::Utc::now())
                .unwrap();
        }
    }

    // The dry run held the leaver's deactivation: no "approve" alert for it, as
    // `approve` refuses a dry run.
    {
        let (_config_dir, notifier) = crate::review_s39_holds::alerting_notifier();
        let mut store = seatwarden::store::Store::open(&dir.path().join("state.db")).unwrap();
        let report =
            seatwarden::report::Report::from_json(&store.report(1).unwrap().unwrap()).unwrap();
        assert_eq!(report.mode, "dry_run");
        assert!(report.summary.actions_held > 0, "{:?}", report.summary);
        notifier.after_reconcile(&mut store, &report, chrono::Utc::now());
        assert!(!crate::review_s39_holds::active(&store, "plan_held"));
        // Nor does it resolve what a reconcile held (from before the dry runs):
        // those actions still wait for `approve`.
        notifier.raise(
            &mut store,
            &seatwarden::alert::AlertCondition::PlanHeld {
                run_id: 0,
                held: 1,
                reason: "held by the guard".into(),
            },
            chrono::Utc::now(),
        );
        notifier.after_reconcile(&mut store, &report, chrono::Utc::now());
        assert!(crate::review_s39_holds::active(&store, "plan_held"));
        for entry in store.outbox().unwrap() {
            store
                .mark_message_sent(entry.id, chrono::Utc::now())
                .unwrap();
        }
    }

    // Restarted, before any run: the gauges are the last dry run's, not absent.
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    let mut env = daemon_env(dir.path(), &sandbox, "* * * * *");
    write_dry_run(&config_path, &enforcing);
    env.push(("SEATWARDEN__SAFETY__MAX_DEPROVISIONS".into(), "0".into()));
    env.push((
        "SEATWARDEN__HTTP__TRIGGER_TOKEN_FILE".into(),
        "trigger-token".into(),
    ));
    let mut daemon = start_daemon(dir.path(), env);
    let port = daemon.listening().await;
    let metrics = daemon.get("/metrics").1;
    assert_eq!(
        metric(&metrics, "seatwarden_drift_items{kind=\"stale_access\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(runs(dir.path()).len(), 1, "no run at the restart");

    // POST /reconcile starts another dry run.
    let (code, body) = http(port, "POST", "/reconcile", Some("s3cret-trigger"));
    assert_eq!(code, 202, "started: {body}");
    wait_for("the second dry run", Duration::from_secs(120), || {
        runs(dir.path()).len() == 2 && runs(dir.path())[1].1 == "succeeded"
    })
    .await;
    assert_eq!(runs(dir.path())[1].0, "dry_run");
    assert_eq!(
        sandbox.stats().writes,
        writes_before,
        "a dry run writes nothing"
    );

    // Reloaded without it, the daemon writes again: the reconcile it is asked
    // for applies, and the sweep is scheduled.
    std::fs::write(&config_path, &enforcing).unwrap();
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", daemon.child.id())])
        .status();
    wait_for("the reload", Duration::from_secs(30), || {
        daemon.logged("enforcing: reconciles and sweeps write to the workspace")
    })
    .await;
    assert_eq!(
        metric(&daemon.get("/metrics").1, "seatwarden_dry_run"),
        Some(0.0)
    );
    let (code, body) = http(port, "POST", "/reconcile", Some("s3cret-trigger"));
    assert_eq!(code, 202, "started: {body}");
    wait_for("a write", Duration::from_secs(120), || {
        sandbox.stats().writes > writes_before
    })
    .await;
    wait_for("the reconcile", Duration::from_secs(120), || {
        runs(dir.path()).iter().any(|(kind, _)| kind == "reconcile")
    })
    .await;
    let status = daemon.cli(&["status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(json.get("dry_run").is_none(), "{json}");
    let out = daemon.cli(&["digest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(notice), "{text}");
    assert!(
        json["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "sweep" && !j["next_run"].is_null()),
        "{json}"
    );
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    sandbox.shutdown().await;
}
