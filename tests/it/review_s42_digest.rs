//! Session 42's review of the digest, read as the on-call engineer does on a
//! Monday morning: its trend must compare with what the previous digest said,
//! and its times must be on the report clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use seatwarden::model::{Action, ActionKind, DriftItem, DriftKind, Plan};
use seatwarden::report::digest::{Digest, Span, build_from_store_after};
use seatwarden::report::{Report, SCHEMA_VERSION, Summary};
use seatwarden::store::{RunKind, RunStatus, Store};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// A reconcile at `started` that stored no report (stopped after its writes):
/// 5 deactivations applied, 2 failed.
fn journaled(store: &mut Store, started: DateTime<Utc>) {
    let run = store.begin_run(RunKind::Reconcile, started).unwrap();
    let plan = Plan {
        actions: (0..7)
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
    store.save_plan(run, &plan, started).unwrap();
    for seq in 0..7 {
        store.mark_in_flight(run, seq, started).unwrap();
    }
    for seq in 0..5 {
        store.mark_applied(run, seq, started, None).unwrap();
    }
    store.mark_failed(run, 5, started, "HTTP 500").unwrap();
    store.mark_failed(run, 6, started, "HTTP 500").unwrap();
    store
        .finish_run(run, started, RunStatus::Stopped, None)
        .unwrap();
}

/// A reconcile at `started` whose stored report shows `drift` stale accounts.
fn reported(store: &mut Store, started: DateTime<Utc>, drift: usize) {
    let run = store.begin_run(RunKind::Reconcile, started).unwrap();
    let report = Report {
        schema_version: SCHEMA_VERSION,
        run_id: run,
        mode: "reconcile".into(),
        started_at: started,
        finished_at: started,
        directory: "file /etc/seatwarden/directory.json".into(),
        workspace: "https://example.com/scim/v2".into(),
        summary: Summary {
            drift_total: drift,
            ..Summary::default()
        },
        drift: (0..drift)
            .map(|i| DriftItem {
                kind: DriftKind::StaleAccess,
                identity_id: Some(format!("u{i}")),
                account_id: Some(format!("acc{i}")),
                user_name: format!("leaver{i}@example.com"),
                detail: "identity is deprovisioned in the directory".into(),
                conflict: None,
            })
            .collect(),
        actions: Vec::new(),
        safety: Default::default(),
    };
    store.save_report(run, &report.to_json()).unwrap();
    store
        .finish_run(run, started, RunStatus::Succeeded, None)
        .unwrap();
}

fn digest(store: &Store, now: DateTime<Utc>, period: Duration, previous: Option<Span>) -> Digest {
    build_from_store_after(
        store,
        "acme",
        chrono_tz::Europe::Berlin,
        now,
        period,
        previous,
        &[],
        "seatwarden",
    )
    .unwrap()
}

/// A daily 08:00 digest on Berlin's clock covers 25 hours across the end of
/// summer time. The next one compared itself with the 24 hours before its own
/// period, leaving out the run Sunday's digest counted first thing on Saturday:
/// "previous period: 0 runs" where that digest had said 1 run and 5 actions.
#[test]
fn the_trend_compares_with_what_the_previous_digest_covered() {
    let mut store = Store::open_in_memory().unwrap();
    // Saturday 08:30 CEST, half an hour into the period Sunday's digest covered.
    journaled(&mut store, at("2026-10-24T06:30:00Z"));
    let sunday = digest(&store, at("2026-10-25T07:00:00Z"), hours(25), None);
    assert_eq!(
        (sunday.period.runs, sunday.period.actions_applied),
        (1, 5),
        "{:?}",
        sunday.period
    );

    let covered = Span {
        start: at("2026-10-24T06:00:00Z"),
        end: at("2026-10-25T07:00:00Z"),
    };
    let monday = digest(&store, at("2026-10-26T07:00:00Z"), hours(24), Some(covered));
    let t = &monday.trend;
    assert_eq!(t.runs_before, sunday.period.runs, "{t:?}");
    assert_eq!(t.actions_applied_before, sunday.period.actions_applied);
    assert_eq!(
        t.failures_before,
        sunday.period.actions_failed + sunday.period.failed_runs
    );
    // It says which period it compares with, on the report clock.
    let span = "previous period (2026-10-24 08:00 +02:00 (CEST) to 2026-10-25 08:00 +01:00 (CET))";
    let text = monday.render_text();
    assert!(
        text.contains(&format!(
            "{span}: 1 run ({} failed), 5 actions applied, {} failed",
            sunday.period.failed_runs, sunday.period.actions_failed
        )),
        "{text}"
    );
    assert!(monday.render_markdown().unwrap().contains(span));
    let html = monday.render_html().unwrap();
    assert!(
        html.contains(
            "Previous period (2026-10-24 08:00 +02:00 (CEST) to 2026-10-25 08:00 +01:00 (CET))"
        ),
        "{html}"
    );
}

/// Without a record of the previous digest (the first one, or after an upgrade)
/// the period of the same length just before is compared with, as before.
#[test]
fn without_a_record_the_trend_takes_the_period_of_the_same_length_before() {
    let mut store = Store::open_in_memory().unwrap();
    journaled(&mut store, at("2026-10-24T06:30:00Z"));
    let monday = digest(&store, at("2026-10-26T07:00:00Z"), hours(24), None);
    assert_eq!(monday.trend.runs_before, 0, "{:?}", monday.trend);
    assert!(
        monday.render_text().contains(
            "previous period (2026-10-24 09:00 +02:00 (CEST) to 2026-10-25 08:00 +01:00 (CET))"
        ),
        "{}",
        monday.render_text()
    );
}

/// A previous period without a run (the schedule was stopped over the weekend)
/// had its digest show the drift of the newest report before it; the trend said
/// "unknown at the end of the previous period (n/a)" instead of that number.
#[test]
fn a_quiet_previous_period_keeps_the_drift_its_digest_showed() {
    let mut store = Store::open_in_memory().unwrap();
    // Friday's last reconcile: 3 leavers still active.
    reported(&mut store, at("2026-10-23T15:00:00Z"), 3);
    let covered = Span {
        start: at("2026-10-23T16:00:00Z"),
        end: at("2026-10-26T07:00:00Z"),
    };
    let before = digest(&store, covered.end, hours(63), None);
    assert_eq!(before.drift_total, 3);
    // Monday morning's reconcile: one of them is still there.
    reported(&mut store, at("2026-10-26T07:30:00Z"), 1);
    let tuesday = digest(&store, at("2026-10-27T07:00:00Z"), hours(24), Some(covered));
    assert_eq!(tuesday.trend.drift_before, Some(before.drift_total));
    assert_eq!(tuesday.trend.drift_change, "-2");
    assert!(
        tuesday
            .render_text()
            .contains("trend: 1 drift item now, 3 at the end of the previous period (-2)"),
        "{}",
        tuesday.render_text()
    );
}

/// A command waiting for the writer lock said since when its holder held it in
/// UTC only ("since 2026-12-04 13:40:05 UTC"), where every other time it prints
/// is on `report.timezone`'s clock: an engineer in Bangalore read the daemon's
/// job as five and a half hours older or newer than it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_lock_holder_is_named_with_its_time_on_the_report_clock() {
    use seatwarden::store::{Acquired, WriterLock};
    let sandbox = crate::fixtures::demo_sandbox("review-s42-token", Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut env, _) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        "review-s42-token",
        &[("SEATWARDEN__REPORT__TIMEZONE", "Asia/Kolkata")],
    );
    let database = dir.path().join("state.db");
    drop(Store::open(&database).unwrap());
    let Acquired::Taken(held) =
        WriterLock::acquire_within(&database, "the daemon's reconcile job", None, |_, _| {
            panic!("nobody else holds it")
        })
        .unwrap()
    else {
        panic!("nobody else holds it")
    };
    let since = seatwarden::store::lock_holder(&WriterLock::path(&database))
        .unwrap()
        .since;
    env.push(("SEATWARDEN_LOCK_TIMEOUT".into(), "0".into()));
    let (code, stderr) = crate::fixtures::seatwarden_in(dir.path(), &env, &["approve", "1"]);
    assert_eq!(code, Some(75), "{stderr}");
    let on_the_clock =
        seatwarden::model::clock_time(since, chrono_tz::Asia::Kolkata, "%Y-%m-%d %H:%M:%S");
    assert!(on_the_clock.ends_with("+05:30 (IST)"), "{on_the_clock}");
    for said in ["waiting: ", "writer lock is still held after"] {
        let line = stderr
            .lines()
            .find(|line| line.contains(said))
            .unwrap_or_else(|| panic!("no {said:?} line: {stderr}"));
        assert!(
            line.contains(&format!(
                "the daemon's reconcile job (pid {}), since {on_the_clock} (",
                std::process::id()
            )),
            "{line}"
        );
    }
    drop(held);
}

/// An overdue leaver nothing holds was listed with its due time and nothing
/// else: no hold, so no command, and not why it was still open. The ledger knows
/// (the sweep's attempts and their last error; the alert says it); the digest
/// now says it too, with where to look next, in every form.
#[test]
fn an_overdue_deprovision_nothing_holds_says_why_and_what_to_run() {
    use seatwarden::model::LossReason;
    use seatwarden::sla::{LedgerChanges, NewEntry};
    let mut store = Store::open_in_memory().unwrap();
    let detected = at("2026-11-28T08:00:00Z");
    let episode = |id: &str, name: &str| NewEntry {
        identity_id: id.into(),
        account_id: Some(format!("acc-{id}")),
        user_name: name.into(),
        reason: LossReason::Deprovisioned,
        detected_at: detected,
        due_at: detected + chrono::Duration::hours(1),
    };
    store
        .update_ledger(
            &LedgerChanges {
                open: vec![
                    episode("u1", "bob.leaver@example.com"),
                    episode("u2", "cy.leaver@example.com"),
                ],
                ..LedgerChanges::default()
            },
            detected,
        )
        .unwrap();
    let bob = store
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == "u1")
        .unwrap();
    for _ in 0..2 {
        store
            .deprovision_failed(
                bob.id,
                "HTTP 503 from PATCH /Users/acc-u1",
                detected + chrono::Duration::hours(2),
            )
            .unwrap();
    }
    let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
    let monday = build_from_store_after(
        &store,
        "acme",
        chrono_tz::UTC,
        at("2026-11-30T08:00:00Z"),
        hours(72),
        None,
        &deprovisions,
        "sudo seatwarden-admin",
    )
    .unwrap();
    assert_eq!(monday.overdue.len(), 2, "{:?}", monday.overdue);
    let bob_says = "still open: 2 attempts failed: HTTP 503 from PATCH /Users/acc-u1; \
                    `sudo seatwarden-admin status` shows whether the sweep and retry jobs run, \
                    `sudo seatwarden-admin explain u1` tells the whole story";
    let cy_says = "still open: no attempt to deactivate it is recorded; \
                   `sudo seatwarden-admin status` shows whether the sweep and retry jobs run, \
                   `sudo seatwarden-admin explain u2` tells the whole story";
    let text = monday.render_text();
    for (who, says) in [("bob.leaver", bob_says), ("cy.leaver", cy_says)] {
        let line = text
            .lines()
            .find(|l| l.contains(who))
            .unwrap_or_else(|| panic!("{who} missing: {text}"));
        assert!(line.ends_with(&format!(" — {says}")), "{line}");
    }
    let markdown = monday.render_markdown().unwrap();
    assert!(
        markdown.contains("(still open: 2 attempts failed: HTTP 503 from PATCH /Users/acc-u1; \\`"),
        "{markdown}"
    );
    let html = monday.render_html().unwrap();
    assert!(
        html.contains("OVERDUE, still open: 2 attempts failed: HTTP 503 from PATCH"),
        "{html}"
    );
    let json: serde_json::Value = serde_json::from_str(&monday.to_json()).unwrap();
    assert_eq!(json["overdue"][0]["next_step"], bob_says, "{json}");
}

/// A weekend of failed runs read "2 failed runs" in the headline and nothing
/// more: not which, when or why, and `status` shows only each job's last run
/// (a success by Monday). The digest names each with its error, in every form.
#[test]
fn the_digest_names_the_failed_runs_with_their_error() {
    let mut store = Store::open_in_memory().unwrap();
    let failed = |store: &mut Store, kind, started: DateTime<Utc>, error: &str| {
        let run = store.begin_run(kind, started).unwrap();
        store
            .finish_run(
                run,
                started + chrono::Duration::minutes(1),
                RunStatus::Failed,
                Some(error),
            )
            .unwrap();
        run
    };
    let reconcile = failed(
        &mut store,
        RunKind::Reconcile,
        at("2026-11-28T02:00:00Z"),
        "reading the directory: HTTP 401 from https://acme.okta.com/api/v1/users",
    );
    let sweep = failed(
        &mut store,
        RunKind::Sweep,
        at("2026-11-29T14:30:00Z"),
        "1 account could not be read",
    );
    let monday = build_from_store_after(
        &store,
        "acme",
        chrono_tz::Europe::Berlin,
        at("2026-11-30T07:00:00Z"),
        hours(72),
        None,
        &[],
        "seatwarden",
    )
    .unwrap();
    assert_eq!(monday.period.failed_runs, 2);
    let lines = [
        format!(
            "run {reconcile} (reconcile), 2026-11-28 03:01 +01:00 (CET): reading the directory: \
             HTTP 401 from https://acme.okta.com/api/v1/users"
        ),
        format!("run {sweep} (sweep), 2026-11-29 15:31 +01:00 (CET): 1 account could not be read"),
    ];
    let text = monday.render_text();
    assert!(
        text.contains("\nFailed runs in this period (2):\n"),
        "{text}"
    );
    let markdown = monday.render_markdown().unwrap();
    assert!(
        markdown.contains("## Failed runs in this period (2)"),
        "{markdown}"
    );
    let html = monday.render_html().unwrap();
    for line in &lines {
        assert!(text.contains(&format!("\n  - {line}\n")), "{text}");
        assert!(markdown.contains(&format!("\n- {line}\n")), "{markdown}");
        let (head, error) = line.split_once(": ").unwrap();
        assert!(html.contains(&format!("{head}: <span")), "{html}");
        assert!(html.contains(&error.replace('/', "&#x2f;")), "{html}");
    }
    let json: serde_json::Value = serde_json::from_str(&monday.to_json()).unwrap();
    assert_eq!(json["failed_runs"][1]["kind"], "sweep", "{json}");
}
