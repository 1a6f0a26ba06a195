//! Session 38's review of the digest, as the engineer who relies on it to learn
//! that a leaver still has access: what it counts must be what `status` and
//! `report --run N` count for the same runs.

use std::process::Command;

use serde_json::Value;

use crate::review_s37_crash::{Scenario, cut_off_rows, killed_after_40_creates, scenario};

/// `seatwarden digest --format FORMAT` on the scenario's database; its stdout.
fn digest(s: &Scenario, format: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(s.dir.path().join("seatwarden.toml"))
        .args(["digest", "--format", format])
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The digest's period counts, in every form, for a reconcile SIGKILLed mid-apply
/// whose rows the workspace never took (`cut_off` for `status` and `report --run`).
fn assert_cut_off_in_every_form(s: &Scenario, cut_off: usize) {
    let json: Value = serde_json::from_str(&digest(s, "json")).unwrap();
    let period = &json["period"];
    assert_eq!(period["actions_cut_off"], cut_off, "{period}");
    // They are no writes the workspace refused.
    assert_eq!(period["actions_failed"], 0, "{period}");
    // The killed run needs a look (why was it killed?) whether or not the next
    // writer has closed it yet.
    assert_eq!(period["failed_runs"], 1, "{period}");
    assert_eq!(json["state"], "needs_attention", "{json}");
    assert!(
        json["headline"].as_str().unwrap().contains("1 failed run"),
        "{json}"
    );
    let words = format!("{cut_off} cut off before the workspace took them");
    let text = digest(s, "text");
    assert!(
        text.contains(&format!(" applied, 0 failed, {words} (the next run plans")),
        "{text}"
    );
    for format in ["markdown", "html"] {
        let out = digest(s, format);
        assert!(out.contains(&words), "{format}: {out}");
        assert!(
            !out.contains(&format!("{cut_off} failed")),
            "{format}: {out}"
        );
    }
}

/// A reconcile killed after 40 creates: its rows a recovery found the workspace
/// never took were counted as failed writes by the digest (`status` and `report
/// --run` call them cut off), and the killed run itself, still recorded as
/// running until the next writer closes it, was no failed run: the digest could
/// read "in sync" the morning after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_counts_a_killed_reconciles_unreached_rows_as_cut_off() {
    let s = scenario(400, &[]).await;
    let run = killed_after_40_creates(&s).await;
    // `approve` recovers the rows and leaves the run recorded as running.
    s.run(&["approve", &run.to_string()], "approve").await;
    assert!(s.store().interrupted().unwrap().is_empty());
    let cut_off = cut_off_rows(&s, run);
    assert!(cut_off > 0);
    assert_eq!(
        s.store().run(run).unwrap().unwrap().status,
        seatwarden::store::RunStatus::Running
    );
    assert_cut_off_in_every_form(&s, cut_off);
}

/// The same once the next reconcile has closed the killed run as failed (it
/// stores its own report, which counts none of the killed run's rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_counts_a_closed_killed_reconciles_rows_as_cut_off() {
    let s = scenario(400, &[]).await;
    let run = killed_after_40_creates(&s).await;
    s.reconcile_to_the_end("next").await;
    let cut_off = cut_off_rows(&s, run);
    assert!(cut_off > 0);
    assert_eq!(
        s.store().run(run).unwrap().unwrap().status,
        seatwarden::store::RunStatus::Failed
    );
    assert_cut_off_in_every_form(&s, cut_off);
}
