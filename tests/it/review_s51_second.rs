//! Session 51's second review of time-bound exceptions (`[[safety.exceptions]]`),
//! as the operator who reads the daemon's log: what the file says of an
//! exception reaches the log made printable, as every report shows it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use seatwarden::config::ExceptionConfig;
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::{is_active_non_owner, reconciled_demo};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sweep logs the exception that puts a deprovision off with its reason: a
/// line break in the reason (a TOML string may hold one) must not start a log
/// line of its own, which would read as a record seatwarden wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_logs_an_exceptions_reason_on_one_line() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let workspace = sandbox.snapshot();
    let users = full["users"].as_array().unwrap().clone();
    let i = users
        .iter()
        .position(|u| is_active_non_owner(u, &workspace))
        .unwrap();
    full["users"][i]["status"] = "suspended".into();
    std::fs::write(&path, full.to_string()).unwrap();
    let user_name = users[i]["userName"].as_str().unwrap().to_owned();

    let now = Utc.with_ymd_and_hms(2026, 12, 14, 9, 0, 0).unwrap();
    config.safety.exceptions = vec![ExceptionConfig {
        user_name,
        until: (now + Duration::hours(3)).to_rfc3339(),
        reason: "handover\nERROR seatwarden: forged \u{1b}[2K".to_owned(),
    }];
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let swept = {
        let _guard = tracing::subscriber::set_default(subscriber);
        seatwarden::sweep::sweep(
            &config,
            &config.directory(),
            &client,
            &store,
            now,
            Duration::hours(1),
        )
        .await
        .unwrap()
    };
    assert_eq!(swept.excepted, 1, "{swept:?}");
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("kept by an exception"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("forged"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR")) && !log.contains('\u{1b}'),
        "{log}"
    );
}
