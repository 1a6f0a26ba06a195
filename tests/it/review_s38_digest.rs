//! Session 38's review of the digest, as the engineer who relies on it to learn
//! that a leaver still has access: what it counts must be what `status` and
//! `report --run N` count for the same runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
/// --run` call them cut off), and the killed run itself was no failed run: the
/// digest could read "in sync" the morning after a crash. Here `approve`
/// recovers the rows and closes the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_counts_a_killed_reconciles_unreached_rows_as_cut_off() {
    let s = scenario(400, &[]).await;
    let run = killed_after_40_creates(&s).await;
    s.run(&["approve", &run.to_string()], "approve").await;
    assert!(s.store().interrupted().unwrap().is_empty());
    let cut_off = cut_off_rows(&s, run);
    assert!(cut_off > 0);
    assert_eq!(
        s.store().run(run).unwrap().unwrap().status,
        seatwarden::store::RunStatus::Failed
    );
    assert_cut_off_in_every_form(&s, cut_off);
}

/// Before anyone recovers it, the killed run is still recorded as running; with
/// nobody holding the writer lock it is a failed run all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reconcile_nobody_has_recovered_yet_is_a_failed_run() {
    let s = scenario(400, &[]).await;
    let run = killed_after_40_creates(&s).await;
    assert_eq!(
        s.store().run(run).unwrap().unwrap().status,
        seatwarden::store::RunStatus::Running
    );
    let json: Value = serde_json::from_str(&digest(&s, "json")).unwrap();
    assert_eq!(json["period"]["failed_runs"], 1, "{json}");
    assert_eq!(json["state"], "needs_attention", "{json}");
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

pub(crate) mod huge {
    //! A digest over thousands of people: a first run over a big workspace, or a
    //! mass deprovision the guard held.

    use std::time::Duration;

    use chrono::{DateTime, TimeZone, Utc};
    use seatwarden::model::{DriftItem, DriftKind};
    use seatwarden::report::digest::{
        DeprovisionHold, Digest, DigestDeprovision, DigestInput, LISTED, SweepActions,
    };
    use seatwarden::report::{ActionOutcome, Outcome, Report, SCHEMA_VERSION, Summary};

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, hour, 0, 0).unwrap()
    }

    const PEOPLE: usize = 10_000;
    const HELD: usize = 3_000;
    const OVERDUE: usize = 400;

    /// Run 7 found `PEOPLE` leavers still active and the guard held `HELD` of
    /// their deactivations (over the threshold); `OVERDUE` of them are overdue.
    fn leaver(i: usize) -> String {
        format!("leaver{i:05}@example.com")
    }

    pub(crate) fn report() -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            run_id: 7,
            mode: "reconcile".into(),
            started_at: at(6),
            finished_at: at(6) + chrono::Duration::minutes(3),
            directory: "file /etc/seatwarden/directory.json".into(),
            workspace: "https://example.com/scim/v2".into(),
            summary: Summary {
                drift_total: PEOPLE,
                actions_planned: HELD,
                actions_held: HELD,
                ..Summary::default()
            },
            drift: (0..PEOPLE)
                .map(|i| DriftItem {
                    kind: DriftKind::StaleAccess,
                    identity_id: Some(format!("u{i}")),
                    account_id: Some(format!("acc{i}")),
                    user_name: leaver(i),
                    detail: "identity is deprovisioned in the directory".into(),
                    conflict: None,
                })
                .collect(),
            actions: (0..HELD)
                .map(|i| ActionOutcome {
                    seq: u32::try_from(i).unwrap(),
                    op: "deactivate".into(),
                    reason: DriftKind::StaleAccess,
                    subject: leaver(i),
                    detail: "identity is deprovisioned in the directory".into(),
                    outcome: Outcome::Held,
                    attempts: 0,
                    error: Some("deprovisions: 3000 in this run, over the limit of 10".into()),
                    waiting: false,
                    settle_window: None,
                    deactivated_since: None,
                })
                .collect(),
            safety: Default::default(),
        }
    }

    fn digest() -> Digest {
        let report = report();
        let ledger: Vec<DigestDeprovision> = (0..OVERDUE)
            .map(|i| DigestDeprovision {
                user_name: leaver(i),
                identity_id: format!("u{i}"),
                reason: "deprovisioned in the directory".into(),
                detected_at: at(6),
                due_at: at(7),
                held: Some(DeprovisionHold::Guard),
                hold_run: Some(7),
                hold_decided: None,
                why_open: None,
            })
            .collect();
        let reports = [report];
        Digest::build(&DigestInput {
            name: "acme",
            admin_command: "sudo seatwarden-admin",
            timezone: chrono_tz::UTC,
            now: at(8),
            period: Duration::from_secs(24 * 3600),
            reports: &reports,
            previous: &[],
            previous_span: None,
            previous_latest: None,
            latest: None,
            failed_runs: 0,
            failed: &[],
            failed_runs_previous: 0,
            deprovisions: &ledger,
            verified: &[],
            sweeps: &SweepActions::default(),
            sweeps_previous: &SweepActions::default(),
            unreported: &SweepActions::default(),
            stopped_runs: 0,
            unreported_previous: &SweepActions::default(),
            stopped_runs_previous: 0,
            unreadable_previous: 0,
            unreadable_earlier: 0,
            decisions: &[],
            unreadable: &[],
        })
    }

    /// Each of its lists was printed whole: 10,000 drift lines and 3,000 held
    /// actions made an HTML email of megabytes (relays refuse such with 552, and
    /// the digest was then failed for good) that nobody could read. Each list
    /// now shows its first `LISTED`, counts the rest and says which command
    /// lists them; the totals stay; the JSON keeps everything.
    #[test]
    fn a_digest_of_thousands_stays_short_and_says_the_totals() {
        let digest = digest();
        let text = digest.render_text();
        let markdown = digest.render_markdown().unwrap();
        let html = digest.render_html().unwrap();
        for (form, out) in [("text", &text), ("markdown", &markdown), ("html", &html)] {
            assert!(out.len() < 100_000, "{form}: {} bytes", out.len());
            // The totals, and where the rest is.
            assert!(out.contains(&format!("({PEOPLE})")), "{form}");
            assert!(out.contains(&format!("run 7 ({HELD})")), "{form}");
            assert!(
                out.replace('`', "").contains(&format!(
                    "… and {} more: sudo seatwarden-admin report --run 7 lists every one.",
                    PEOPLE - LISTED
                )),
                "{form}"
            );
            assert!(
                out.contains(&format!("… and {} more", HELD - LISTED)),
                "{form}"
            );
            assert!(
                out.contains(&format!("… and {} more", OVERDUE - LISTED)),
                "{form}"
            );
            assert!(
                out.replace('`', "")
                    .contains("sudo seatwarden-admin status lists every open deprovision"),
                "{form}"
            );
            // The first ones are named, the 51st is not.
            assert!(out.contains("leaver00049@example.com"), "{form}");
            assert!(!out.contains("leaver00050@example.com"), "{form}");
        }
        assert!(text.contains(&format!("Overdue deprovisions ({OVERDUE}):")));
        // The footer's command is the configured one, as everywhere else.
        assert!(
            html.contains(">sudo seatwarden-admin report --run 7</code>"),
            "{html}"
        );
        assert_eq!(digest.drift_total, PEOPLE);
        let json: serde_json::Value = serde_json::from_str(&digest.to_json()).unwrap();
        assert_eq!(json["drift"][0]["people"].as_array().unwrap().len(), PEOPLE);
        assert_eq!(json["held"][0]["actions"].as_array().unwrap().len(), HELD);
        assert_eq!(json["overdue"].as_array().unwrap().len(), OVERDUE);
    }
}

/// The trend's "previous period" counts that period as its own digest did: a
/// reconcile stopped (SIGTERM) or killed after writing has no report, and its
/// runs, writes and failures were left out of the trend (yesterday's digest said
/// "1 run, 5 applied, 2 failed", today's trend "0 runs, 0 applied, 0 failures").
#[test]
fn the_trend_counts_the_previous_period_as_its_digest_did() {
    use chrono::TimeZone;
    use seatwarden::model::{Action, ActionKind, DriftKind, Plan};
    use seatwarden::store::{RunKind, RunStatus, Store};
    let at = |day: u32, hour: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, day, hour, 0, 0)
            .unwrap()
    };
    let mut store = Store::open_in_memory().unwrap();
    let deactivate = |seq: u32| Action {
        seq,
        kind: ActionKind::Deactivate {
            account_id: format!("acc{seq}"),
        },
        reason: DriftKind::StaleAccess,
        subject: format!("leaver{seq}@example.com"),
        identity_id: Some(format!("u{seq}")),
        detail: "deprovisioned in the directory".into(),
        held: None,
    };
    let mut journaled = |started, status| {
        let run = store.begin_run(RunKind::Reconcile, started).unwrap();
        let plan = Plan {
            actions: (0..8).map(deactivate).collect(),
            ..Plan::default()
        };
        store.save_plan(run, &plan, started).unwrap();
        for seq in 0..7 {
            store.mark_in_flight(run, seq, started).unwrap();
        }
        for seq in 0..5 {
            store.mark_applied(run, seq, started, None).unwrap();
        }
        store.mark_failed(run, 5, started, "HTTP 500").unwrap();
        store.mark_failed(run, 6, started, "HTTP 500").unwrap();
        store.finish_run(run, started, status, None).unwrap();
    };
    // Yesterday: one reconcile stopped after its writes, one that failed.
    journaled(at(2, 10), RunStatus::Stopped);
    journaled(at(2, 12), RunStatus::Failed);
    let digest = |now| crate::fixtures::day_digest(&store, now);
    let yesterday = digest(at(3, 8));
    let today = digest(at(4, 8));
    let p = &yesterday.period;
    assert_eq!((p.runs, p.actions_applied, p.actions_failed), (2, 10, 4));
    let t = &today.trend;
    assert_eq!(t.runs_before, p.runs);
    assert_eq!(t.actions_applied_before, p.actions_applied);
    // Failures: the failed writes and the failed run.
    assert_eq!(t.failures_before, p.actions_failed + p.failed_runs);
    assert!(
        today.render_text().contains(
            "(2026-12-02 08:00 UTC to 2026-12-03 08:00 UTC): 2 runs (1 failed), 10 actions applied, 4 failed"
        ),
        "{}",
        today.render_text()
    );
}

/// The HTML report's and digest's footers named `seatwarden report --run N`
/// whatever `report.admin_command` said (`sudo seatwarden-admin` under systemd),
/// unlike every other command the emails give.
#[test]
fn the_html_report_footer_uses_the_admin_command() {
    let html =
        seatwarden::report::render_html(&huge::report(), chrono_tz::UTC, "sudo seatwarden-admin")
            .unwrap();
    assert!(
        html.contains(">sudo seatwarden-admin report --run 7</code> prints this report."),
        "{html}"
    );
}

/// One stored report another version wrote (a drift kind this one does not
/// know, after a downgrade) or a damaged row failed the whole digest ("the
/// stored report of run N cannot be read"), every day until it was pruned:
/// nobody got a digest. It is now counted from its journal and named, and the
/// newest readable report gives the drift.
#[test]
fn an_unreadable_stored_report_is_named_not_fatal() {
    use chrono::TimeZone;
    use seatwarden::model::{Action, ActionKind, DriftKind, Plan};
    use seatwarden::store::{RunKind, RunStatus, Store};
    let at = |hour: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 3, hour, 0, 0)
            .unwrap()
    };
    let mut store = Store::open_in_memory().unwrap();
    let mut readable = huge::report();
    readable.drift.truncate(2);
    readable.actions.clear();
    readable.summary = seatwarden::report::Summary {
        drift_total: 2,
        ..Default::default()
    };
    let old = store.begin_run(RunKind::Reconcile, at(6)).unwrap();
    readable.run_id = old;
    store.save_report(old, &readable.to_json()).unwrap();
    store
        .finish_run(old, at(6), RunStatus::Succeeded, None)
        .unwrap();

    let newer = store.begin_run(RunKind::Reconcile, at(7)).unwrap();
    let plan = Plan {
        actions: (0..3)
            .map(|seq| Action {
                seq,
                kind: ActionKind::Deactivate {
                    account_id: format!("acc{seq}"),
                },
                reason: DriftKind::StaleAccess,
                subject: format!("leaver{seq}@example.com"),
                identity_id: Some(format!("u{seq}")),
                detail: "deprovisioned in the directory".into(),
                held: None,
            })
            .collect(),
        ..Plan::default()
    };
    store.save_plan(newer, &plan, at(7)).unwrap();
    for seq in 0..3 {
        store.mark_in_flight(newer, seq, at(7)).unwrap();
        store.mark_applied(newer, seq, at(7), None).unwrap();
    }
    let mut foreign: serde_json::Value = serde_json::from_str(&readable.to_json()).unwrap();
    foreign["run_id"] = newer.into();
    foreign["drift"][0]["kind"] = "a_kind_of_a_later_version".into();
    store.save_report(newer, &foreign.to_string()).unwrap();
    store
        .finish_run(newer, at(7), RunStatus::Succeeded, None)
        .unwrap();

    let digest = crate::fixtures::day_digest(&store, at(8));
    assert_eq!(digest.state, seatwarden::report::State::NeedsAttention);
    assert!(
        digest.headline.contains("1 stored report unreadable"),
        "{}",
        digest.headline
    );
    assert_eq!(digest.period.runs, 2);
    assert_eq!(digest.period.actions_applied, 3, "from its journal");
    assert_eq!(digest.latest_run, Some(old), "the newest readable report");
    assert_eq!(digest.drift_total, 2);
    let line = format!("run {newer}'s stored report cannot be read (");
    assert!(digest.render_text().contains(&line));
    assert!(digest.render_markdown().unwrap().contains(&line));
    assert!(digest.render_html().unwrap().contains(&format!(
        "run {newer}&#x27;s stored report cannot be read ("
    )));
}
