//! Session 42's review of the digest's JSON, read as the script that feeds a
//! ticketing system reads it: every time it shows for people (`due`,
//! `detected`, `period_start`, …) must come with the RFC 3339 UTC instant beside
//! it, so nobody has to parse the display format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use seatwarden::model::{DriftItem, DriftKind};
use seatwarden::report::digest::{
    Digest, DigestDeprovision, DigestInput, DigestVerified, SweepActions,
};
use seatwarden::report::{Report, SCHEMA_VERSION, Summary};
use seatwarden::store::{RunKind, RunRecord, RunStatus};
use serde_json::Value;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// A reconcile at `started` whose report shows one stale account.
fn report(run_id: i64, started: DateTime<Utc>) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        run_id,
        mode: "reconcile".into(),
        started_at: started,
        finished_at: started,
        directory: "file /etc/seatwarden/directory.json".into(),
        workspace: "https://example.com/scim/v2".into(),
        summary: Summary {
            drift_total: 1,
            ..Summary::default()
        },
        drift: vec![DriftItem {
            kind: DriftKind::StaleAccess,
            identity_id: Some("u1".into()),
            account_id: Some("acc1".into()),
            user_name: "leaver@example.com".into(),
            detail: "identity is deprovisioned in the directory".into(),
            conflict: None,
        }],
        actions: Vec::new(),
        safety: Default::default(),
    }
}

/// The instant a display string such as `2026-12-04 09:00 +05:30 (IST)` or
/// `2026-12-04 03:30 UTC` shows: its minute.
fn shown(display: &str) -> DateTime<Utc> {
    let text = display
        .split(" (")
        .next()
        .unwrap()
        .replace(" UTC", " +00:00");
    DateTime::<FixedOffset>::parse_from_str(&text, "%Y-%m-%d %H:%M %:z")
        .unwrap_or_else(|e| panic!("{display:?}: {e}"))
        .to_utc()
}

/// Every display time with its instant, by the display field's path.
fn pairs(value: &Value, path: &str, found: &mut Vec<(String, String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, field) in map {
                let instant = if key == "at" {
                    "ended_at".to_owned()
                } else {
                    format!("{key}_at")
                };
                if let (Value::String(display), Some(Value::String(utc))) =
                    (field, map.get(&instant))
                {
                    found.push((format!("{path}.{key}"), display.clone(), utc.clone()));
                }
                pairs(field, &format!("{path}.{key}"), found);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| pairs(item, &format!("{path}[]"), found)),
        _ => {}
    }
}

/// On Kolkata's clock (+05:30), with times that are not on the minute: each
/// instant reads back as RFC 3339 UTC, to the second, and is the minute its
/// display string shows.
#[test]
fn every_display_time_in_the_digest_json_has_its_utc_instant() {
    let now = at("2026-12-04T03:30:45Z");
    let reports = [report(7, at("2026-12-03T20:15:09Z"))];
    let previous = [report(5, at("2026-12-02T10:00:00Z"))];
    let due = at("2026-12-04T01:59:59Z");
    let deprovisions = [
        DigestDeprovision {
            user_name: "leaver@example.com".into(),
            identity_id: "u1".into(),
            reason: "deprovisioned in the directory".into(),
            detected_at: at("2026-12-03T23:59:30Z"),
            due_at: due,
            held: None,
            hold_run: None,
            hold_decided: None,
            why_open: None,
        },
        DigestDeprovision {
            user_name: "later@example.com".into(),
            identity_id: "u2".into(),
            reason: "left the scope group".into(),
            detected_at: at("2026-12-04T02:00:01Z"),
            due_at: at("2026-12-04T05:29:31Z"),
            held: None,
            hold_run: None,
            hold_decided: None,
            why_open: None,
        },
    ];
    let failed = [RunRecord {
        id: 8,
        kind: RunKind::Reconcile,
        status: RunStatus::Failed,
        started_at: at("2026-12-04T00:10:00Z"),
        finished_at: Some(at("2026-12-04T00:12:17Z")),
        error: Some("workspace HTTP 500".into()),
    }];
    let digest = Digest::build(&DigestInput {
        name: "acme",
        admin_command: "seatwarden",
        timezone: chrono_tz::Asia::Kolkata,
        now,
        period: Duration::from_secs(24 * 3600),
        reports: &reports,
        previous: &previous,
        previous_span: None,
        previous_latest: None,
        latest: None,
        failed_runs: 1,
        failed: &failed,
        failed_runs_previous: 0,
        deprovisions: &deprovisions,
        verified: &[DigestVerified {
            user_name: "gone@example.com".into(),
            reason: "deprovisioned in the directory".into(),
            detected_at: at("2026-12-03T22:00:12Z"),
            verified_at: at("2026-12-03T22:04:56Z"),
            excepted_until: None,
        }],
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
    });

    // As a script reads it: JSON, with no knowledge of seatwarden's types.
    let json: Value = serde_json::from_str(&digest.to_json()).unwrap();
    let mut found = Vec::new();
    pairs(&json, "", &mut found);
    let paths: BTreeSet<&str> = found.iter().map(|(path, _, _)| path.as_str()).collect();
    let expected: BTreeSet<&str> = [
        ".period_start",
        ".period_end",
        ".overdue[].detected",
        ".overdue[].due",
        ".pending[].detected",
        ".pending[].due",
        ".deprovisioned[].detected",
        ".deprovisioned[].verified",
        ".failed_runs[].at",
        ".oldest_drift.since",
        ".trend.previous_start",
        ".trend.previous_end",
    ]
    .into();
    assert_eq!(paths, expected, "{json:#}");
    for (path, display, utc) in &found {
        assert!(utc.ends_with('Z'), "{path}: {utc} is not UTC");
        let instant = DateTime::parse_from_rfc3339(utc)
            .unwrap_or_else(|e| panic!("{path}: {utc}: {e}"))
            .to_utc();
        assert_eq!(
            instant.with_second(0).unwrap(),
            shown(display),
            "{path}: {utc} is not what {display:?} shows"
        );
    }
    // To the second, as the ledger and the store have them.
    assert_eq!(json["period_end_at"], "2026-12-04T03:30:45Z");
    assert_eq!(json["overdue"][0]["due_at"], "2026-12-04T01:59:59Z");
    assert_eq!(json["overdue"][0]["due"], "2026-12-04 07:29 +05:30 (IST)");
    assert_eq!(json["failed_runs"][0]["ended_at"], "2026-12-04T00:12:17Z");
    assert_eq!(
        json["deprovisioned"][0]["verified_at"],
        "2026-12-03T22:04:56Z"
    );
    assert_eq!(json["oldest_drift"]["since_at"], "2026-12-02T10:00:00Z");
}
