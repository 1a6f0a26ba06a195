//! Session 51's second review of time-bound exceptions (`[[safety.exceptions]]`),
//! as the operator who reads the daemon's log: what the file says of an
//! exception reaches the log made printable, as every report shows it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::reconciled_demo;
use crate::review_s51_exceptions::{except, suspend_someone};

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
    let (_, user_name) = suspend_someone(dir.path(), &sandbox, None);
    let now = Utc.with_ymd_and_hms(2026, 12, 14, 9, 0, 0).unwrap();
    except(
        &mut config,
        &user_name,
        now + Duration::hours(3),
        "handover\nERROR seatwarden: forged \u{1b}[2K",
    );
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
