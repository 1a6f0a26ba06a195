//! Review (s44, second read): defects found re-reading the session's new code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use seatwarden::directory::OktaSource;

use crate::okta::settings;
use crate::review_s44_okta_dpop::{APP, TokenEndpoint, org, service_app};

/// RFC 9449 scopes a nonce to the server that gave it. The API's nonce must
/// not go to the token endpoint, nor a token refresh's nonce replace the API's:
/// with one slot for both, every refresh drew a `use_dpop_nonce` from the token
/// endpoint and then from the API for each request in flight, spending the one
/// nonce resend those requests have (one that then met an expired token failed
/// the read).
#[tokio::test]
async fn a_token_refresh_and_the_api_keep_their_own_dpop_nonces() {
    // Refreshed half its lifetime after it was fetched: 6 s, so that each
    // snapshot ends long before, even on a loaded machine (at 1 s, a slow
    // snapshot drew a refresh of its own).
    let (server, seen) = org(
        TokenEndpoint {
            lifetime: 12,
            ..APP
        },
        Some("api-nonce-7"),
    )
    .await;
    let source = OktaSource::new(settings(&server, service_app()));
    source.snapshot().await.unwrap();
    let api_before = seen.lock().unwrap().api_requests.len();
    // The token is refreshed after 6 s.
    tokio::time::sleep(Duration::from_millis(6200)).await;
    source.snapshot().await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.refusals.is_empty(), "{:?}", seen.refusals);
    // The refresh: one request, with the token endpoint's own nonce.
    assert_eq!(
        seen.token_requests[3..],
        [(true, Some("nonce-1".to_owned()))],
        "{:?}",
        seen.token_requests
    );
    // The API's requests after it: with the API's nonce from the start, none
    // refused for want of it.
    let nonces: Vec<Option<&str>> = seen.api_requests[api_before..]
        .iter()
        .map(|(_, claims)| claims.as_ref().unwrap()["nonce"].as_str())
        .collect();
    assert!(!nonces.is_empty());
    assert!(
        nonces.iter().all(|n| *n == Some("api-nonce-7")),
        "{nonces:?}"
    );
}

/// A run whose stored report cannot be read counts in the period it ran in, not
/// again in a later one: the digest named the newest stored report's run as
/// unreadable (rightly) but also counted it among the runs of a period in which
/// nothing ran, and its actions with them.
#[test]
fn an_unreadable_report_of_an_earlier_period_is_not_a_run_of_this_one() {
    use chrono::TimeZone;
    use seatwarden::store::{RunKind, RunStatus, Store};
    let at = |day: u32, hour: u32| {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, day, hour, 0, 0)
            .unwrap()
    };
    let mut store = Store::open_in_memory().unwrap();
    let run = store.begin_run(RunKind::Reconcile, at(2, 10)).unwrap();
    store
        .save_report(run, r#"{"schema_version": 999, "damaged": true}"#)
        .unwrap();
    store
        .finish_run(run, at(2, 10), RunStatus::Succeeded, None)
        .unwrap();
    let today = seatwarden::report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        at(4, 8),
        Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap();
    assert_eq!(today.period.runs, 0, "{:?}", today.period);
    assert_eq!(today.trend.runs_before, 1, "{:?}", today.trend);
    // Still named, so the operator learns the newest report cannot be read.
    assert!(
        today
            .unreadable_reports
            .iter()
            .any(|line| line.contains(&run.to_string())),
        "{:?}",
        today.unreadable_reports
    );
}

/// The backup unit's clean-up keeps the backups of the last 14 days and
/// removes older ones, and nothing else. The temporary copy a killed backup
/// leaves (`.NAME.backup-PID`) was removed here too, once a day old; the next
/// `seatwarden backup` now does that itself, before it copies, for systemd,
/// cron and containers alike (`review_s46_ops`), so the unit leaves such files
/// alone.
#[test]
fn the_backup_units_clean_up_keeps_14_days_of_backups_and_nothing_else() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/seatwarden-backup.service"),
    )
    .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let days_old = |name: &str, days: u64| {
        let path = folder.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(days * 86_400 + 60))
            .unwrap();
        path
    };
    let old_backup = days_old("seatwarden-state-20261101T024500Z.db", 20);
    let recent_backup = days_old("seatwarden-state-20261201T024500Z.db", 3);
    let killed = days_old(".seatwarden-state-20261203T024500Z.db.backup-4242", 2);
    let writing = days_old(".seatwarden-state-20261205T024500Z.db.backup-4343", 0);
    let other = days_old("notes.txt", 30);
    let mut ran = 0;
    for line in unit.lines() {
        let Some(command) = line.strip_prefix("ExecStartPost=") else {
            continue;
        };
        let command = command.replace(
            "/var/lib/private/seatwarden/backups",
            &folder.path().display().to_string(),
        );
        // As systemd runs it: split on white space, no shell.
        let argv: Vec<&str> = command.split_whitespace().collect();
        let status = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .status()
            .unwrap();
        assert!(status.success(), "{command}");
        ran += 1;
    }
    assert!(ran > 0);
    assert!(!old_backup.exists(), "a backup 20 days old is removed");
    assert!(recent_backup.exists(), "a backup 3 days old is kept");
    assert!(killed.exists(), "left to `seatwarden backup`");
    assert!(writing.exists(), "a backup being written is left alone");
    assert!(other.exists(), "other files are left alone");
}
