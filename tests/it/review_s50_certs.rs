//! When the certificate files the configuration names run out
//! (`seatwarden::certificate`): `check-config` gives each one's date and fails
//! on an expired one; the daemon warns at its start and at a reload, and
//! `/metrics` carries each file's date, read at each scrape, so a reload that
//! points a key at another file shows at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use seatwarden::sandbox::{Faults, Sandbox};

use crate::daemon::{Daemon, daemon_env, demo_sandbox, metric, start_daemon, wait_for};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// The fixtures' notAfter (`openssl x509 -noout -enddate`), as the gauge gives it.
fn valid_ca_end() -> f64 {
    use chrono::TimeZone;
    let at = chrono::Utc
        .with_ymd_and_hms(2126, 11, 10, 2, 46, 41)
        .unwrap();
    at.timestamp() as f64
}
fn expired_ca_end() -> f64 {
    use chrono::TimeZone;
    let at = chrono::Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    at.timestamp() as f64
}

/// The demo configuration in `dir` with `[workspace] ca_file` set to `ca_file`.
fn config_with_ca_file(dir: &Path, ca_file: &Path) -> PathBuf {
    crate::fixtures::copy_demo_files(dir);
    let config = dir.join("seatwarden.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen(
        "[workspace]\n",
        &format!(
            "[workspace]\nca_file = {:?}\n",
            ca_file.display().to_string()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The series of `workspace.ca_file`'s date.
const CA_FILE_SERIES: &str =
    "seatwarden_certificate_expiry_timestamp_seconds{key=\"workspace.ca_file\"}";

/// A daemon on the demo configuration with `[workspace] ca_file = ca_file`, once
/// it listens and its gauge carries `ca_file`'s date; and the configuration file.
async fn daemon_with_ca_file(dir: &Path, sandbox: &Sandbox, ca_file: &Path) -> (Daemon, PathBuf) {
    let env = daemon_env(dir, sandbox, "0 0 1 1 *");
    let config = config_with_ca_file(dir, ca_file);
    let mut daemon = start_daemon(dir, env);
    daemon.listening().await;
    assert_eq!(
        metric(&daemon.get("/metrics").1, CA_FILE_SERIES),
        Some(expired_ca_end())
    );
    (daemon, config)
}

fn check_config(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("SEATWARDEN__REPORT__TIMEZONE", "Europe/Berlin")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check-config` says when each certificate file runs out, on
/// `report.timezone`'s clock, and marks one that has. Only an expired
/// certificate credential fails it (exit 1, after printing everything): Entra
/// refuses it. An expired CA is marked and fails nothing: rustls does not check a
/// trusted CA's dates, so its servers may be reached until their own run out.
#[test]
fn check_config_gives_each_certificates_date_and_fails_on_an_expired_credential() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_ca_file(dir.path(), &fixture("ca.pem"));
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "the certificates it names:\n  workspace.ca_file: its CA certificates valid until \
             2126-11-10 03:46 +01:00 (CET), in "
        ),
        "{stderr}"
    );
    assert!(stderr.contains("configuration OK"), "{stderr}");

    let config = config_with_ca_file(dir.path(), &fixture("expired-ca.pem"));
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "  EXPIRED workspace.ca_file: its CA certificates expired at 2020-01-01 01:00 \
             +01:00 (CET) ({})",
            fixture("expired-ca.pem").display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("configuration OK"), "{stderr}");

    // An Entra certificate credential that has expired fails the check.
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let entra = dir.path().join("entra.toml");
    std::fs::write(
        &entra,
        format!(
            "[workspace]\nurl = \"https://example.com/scim/v2\"\ntoken_file = {:?}\n\
             [directory]\nkind = \"entra\"\ntenant_id = \"00000000-0000-0000-0000-000000000000\"\n\
             client_id = \"c\"\ncertificate_file = {:?}\nprivate_key_file = {:?}\n\
             [state]\npath = \"state.db\"\n",
            dir.path().join("token").display().to_string(),
            keys.join("expired-cert.pem").display().to_string(),
            keys.join("expired-key.pem").display().to_string(),
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let (code, stderr) = check_config(&entra);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "  EXPIRED directory.certificate_file: the certificate credential expired at \
             2020-01-01 01:00 +01:00 (CET)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "configuration loads, but its certificate credential has expired, which Entra \
             refuses: see the line marked EXPIRED"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("configuration OK"), "{stderr}");

    // A bundle holding the expired CA beside a valid one is of use until the
    // valid one's date.
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        [
            std::fs::read(fixture("expired-ca.pem")).unwrap(),
            std::fs::read(fixture("ca.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let config = config_with_ca_file(dir.path(), &bundle);
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("valid until 2126-11-10"), "{stderr}");
}

/// The daemon logs an expired certificate file at its start and exports its
/// date; after a reload onto a valid file, the gauge carries the new date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_warns_of_an_expired_certificate_and_exports_each_files_date() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, config) =
        daemon_with_ca_file(dir.path(), &sandbox, &fixture("expired-ca.pem")).await;
    let series = CA_FILE_SERIES;
    wait_for(
        "the warning of the expired certificate",
        Duration::from_secs(30),
        || daemon.logged("certificate expired: workspace.ca_file: its CA certificates expired at"),
    )
    .await;

    // The digest lists it near its top, in every form.
    let digest = |format: &str| {
        let out = daemon.cli(&["digest", "--format", format]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = digest("text");
    assert!(
        text.contains(
            "\nCertificates running out (1):\n  - workspace.ca_file: its CA certificates expired \
             at 2020-01-01 01:00 +01:00 (CET)"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&digest("json")).unwrap();
    assert_eq!(
        json["certificates"][0]["key"], "workspace.ca_file",
        "{json:#}"
    );
    assert_eq!(json["certificates"][0]["expired"], true, "{json:#}");
    assert_eq!(
        json["certificates"][0]["runs_out_at"], "2020-01-01T00:00:00Z",
        "{json:#}"
    );
    assert!(
        digest("markdown").contains("## Certificates running out (1)"),
        "{}",
        digest("markdown")
    );
    assert!(
        digest("html").contains("Certificate expired: workspace.ca_file"),
        "{}",
        digest("html")
    );

    // `status` too, first thing, and `/status` (as `status --format json`).
    let status = daemon.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.starts_with(
            "Certificates running out (1):\n  - workspace.ca_file: its CA certificates expired \
             at 2020-01-01 01:00 +01:00 (CET)"
        ),
        "{text}"
    );
    let status = daemon.cli(&["status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        json["certificates"][0]["key"], "workspace.ca_file",
        "{json:#}"
    );
    assert_eq!(json["certificates"][0]["expired"], true, "{json:#}");

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("expired-ca.pem", "ca.pem");
    std::fs::write(&config, text).unwrap();
    daemon.reload().await;
    assert_eq!(
        metric(&daemon.get("/metrics").1, series),
        Some(valid_ca_end())
    );
    let text = digest("text");
    assert!(!text.contains("Certificates running out"), "{text}");
    let status = daemon.cli(&["status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(json.get("certificates").is_none(), "{json:#}");
    let (_, log) = daemon.terminate();
    // Valid for a century: nothing to warn of after the reload.
    assert_eq!(log.matches("certificate expired").count(), 1, "{log}");
    assert!(!log.contains("certificate runs out soon"), "{log}");
}

/// The digest lists a certificate file from three weeks before it runs out
/// (not yet expired), and one that has (expired); not one further off.
#[test]
fn the_digest_lists_the_certificates_that_run_out_within_three_weeks() {
    use chrono::{Duration, TimeZone, Utc};
    use seatwarden::certificate::Expiry;
    let dir = tempfile::tempdir().unwrap();
    let store = seatwarden::store::Store::open(&dir.path().join("state.db")).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 12, 5, 8, 0, 0).unwrap();
    let digest = crate::fixtures::day_digest(&store, now);
    let expiry = |key: &'static str, not_after| Expiry {
        key,
        file: PathBuf::from(format!("/etc/seatwarden/{key}.pem")),
        not_after,
    };
    let digest = digest.with_certificates(
        &[
            expiry("directory.certificate_file", now + Duration::days(20)),
            expiry("workspace.ca_file", now + Duration::days(22)),
            expiry("report.email.ca_file", now - Duration::hours(1)),
        ],
        now,
    );
    let listed: Vec<(&str, bool, &str)> = digest
        .certificates
        .iter()
        .map(|c| (c.key.as_str(), c.expired, c.runs_out.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("directory.certificate_file", false, "2026-12-25 08:00 UTC"),
            ("report.email.ca_file", true, "2026-12-05 07:00 UTC"),
        ]
    );
    assert!(
        digest.render_text().contains(
            "  - directory.certificate_file: the certificate credential valid until \
             2026-12-25 08:00 UTC, in 20 days: register its successor on the app and point \
             directory.certificate_file at it (/etc/seatwarden/directory.certificate_file.pem)"
        ),
        "{}",
        digest.render_text()
    );
}

/// The exporter keeps a series once set: a file that can no longer be read, or
/// a reload that drops its key, must not leave the last date behind, or
/// `SeatwardenCertificateExpiring` fires (and turns critical) for a file
/// seatwarden no longer uses, until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_file_gone_or_dropped_by_a_reload_leaves_no_date_behind() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca-in-use.pem");
    std::fs::copy(fixture("expired-ca.pem"), &ca_file).unwrap();
    let (daemon, config) = daemon_with_ca_file(dir.path(), &sandbox, &ca_file).await;
    let series = CA_FILE_SERIES;
    // No date an alert could compare: absent, or NaN (which compares false).
    let dateless = |value: Option<f64>| value.is_none_or(f64::is_nan);

    std::fs::remove_file(&ca_file).unwrap();
    let value = metric(&daemon.get("/metrics").1, series);
    assert!(dateless(value), "{value:?}");

    std::fs::copy(fixture("expired-ca.pem"), &ca_file).unwrap();
    assert_eq!(
        metric(&daemon.get("/metrics").1, series),
        Some(expired_ca_end())
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .lines()
        .filter(|line| !line.starts_with("ca_file = "))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    daemon.reload().await;
    let value = metric(&daemon.get("/metrics").1, series);
    assert!(dateless(value), "{value:?}");
    let _ = daemon.terminate();
}

/// The daemon builds a notifier at each job's start, on the async workers; the
/// certificate files are read when the digest is built (off them), so the
/// digest tells the files as they are then, not as they were when the notifier
/// was made.
#[test]
fn the_digest_reads_the_certificate_files_when_it_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca-in-use.pem");
    std::fs::copy(fixture("ca.pem"), &ca_file).unwrap();
    let config_path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config_path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"https://acme.example/scim/v2\"\ntoken = \"t\"\n\
             ca_file = {:?}\n\
             [report.email]\nsmtp_url = \"smtp://127.0.0.1:9\"\nfrom = \"sw@example.com\"\n\
             to = [\"sec@example.com\"]\n",
            ca_file.display().to_string()
        ),
    )
    .unwrap();
    let config =
        seatwarden::config::Config::load_with_env(&config_path, Some(Default::default())).unwrap();
    let notifier = seatwarden::daemon::notify::Notifier::from_config(&config).unwrap();
    std::fs::copy(fixture("expired-ca.pem"), &ca_file).unwrap();
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
    let digest = store
        .outbox()
        .unwrap()
        .into_iter()
        .find(|e| e.message.kind == seatwarden::store::OutboxKind::Digest)
        .unwrap();
    assert!(
        digest
            .message
            .text
            .contains("workspace.ca_file: its CA certificates expired at"),
        "{}",
        digest.message.text
    );
}
