//! What an operator reads from `status`, a reload and a configuration error:
//! a reconcile that left work for a person says so, a reload names only the keys
//! that wait for a restart, a cron expression with a year is explained.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use seatwarden::config::Config;
use seatwarden::daemon::status::{self, Settings};
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::Store;

const TOKEN: &str = "qa-status-token";

/// The demo's files in `dir`, for the demo's workspace served with `faults`;
/// every deprovision held for a human (`safety.max_deprovisions = 0`).
async fn demo_holding_deprovisions(dir: &Path, faults: Faults) -> (Sandbox, Config) {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, faults).await;
    crate::fixtures::copy_demo_files(dir);
    let env: HashMap<String, String> = [
        ("SEATWARDEN__WORKSPACE__URL", sandbox.base_url().to_string()),
        ("SEATWARDEN__WORKSPACE__TOKEN", TOKEN.to_owned()),
        ("SEATWARDEN__WORKSPACE__RETRIES", "0".to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
        ("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Config::load_with_env(&dir.join("seatwarden.toml"), Some(env)).unwrap();
    (sandbox, config)
}

fn status_now(config: &Config) -> status::Status {
    let store = Store::open(&config.state.path).unwrap();
    status::collect(
        &store,
        chrono::Utc::now(),
        Settings::of(config, chrono_tz::UTC, None),
    )
    .unwrap()
}

fn last_reconcile_line(status: &status::Status) -> String {
    let text = status::render_text(status);
    text.lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned()
}

/// A reconcile that held a deprovision for a human "succeeded": `status` says on
/// the same line that an action waits for approval, with the command, and stops
/// saying so once someone rejected it.
#[tokio::test]
async fn status_says_a_held_action_waits_for_approval_until_decided() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config) = demo_holding_deprovisions(dir.path(), Faults::default()).await;
    let outcome = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let run = outcome.run_id;
    assert_eq!(
        seatwarden::cli::exit_code_for(&outcome.report),
        seatwarden::cli::exit::HELD
    );

    let held = status_now(&config);
    let line = last_reconcile_line(&held);
    assert!(
        line.starts_with(&format!(
            "Last reconcile: run {run} succeeded: 1 action held for approval \
             (`seatwarden approve {run}`); started "
        )),
        "{line}"
    );
    let json = serde_json::to_value(&held).unwrap();
    assert_eq!(json["last_reconcile_awaiting_approval"], 1, "{json}");
    assert_eq!(json["last_reconcile_actions"]["held"], 1, "{json}");

    seatwarden::approval::reject(
        &mut Store::open(&config.state.path).unwrap(),
        run,
        &seatwarden::approval::Only::All,
        "seatwarden",
        chrono_tz::UTC,
        chrono::Utc::now(),
    )
    .unwrap();
    let rejected = status_now(&config);
    let line = last_reconcile_line(&rejected);
    assert!(
        line.starts_with(&format!("Last reconcile: run {run} succeeded, started ")),
        "{line}"
    );
    let json = serde_json::to_value(&rejected).unwrap();
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
}

/// Writes the workspace refused: the line says how many failed, beside what is
/// held.
#[tokio::test]
async fn status_says_how_many_actions_of_the_last_reconcile_failed() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    };
    let (_sandbox, config) = demo_holding_deprovisions(dir.path(), faults).await;
    let outcome = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let run = outcome.run_id;
    let failed = outcome.report.summary.actions_failed;
    assert!(failed > 0, "{:?}", outcome.report.summary);
    // Three objects failing 503 in a row show the workspace down: the writes
    // after them are kept back, not sent, and said so apart from the failures.
    let not_sent = outcome.report.not_sent().count();

    let line = last_reconcile_line(&status_now(&config));
    let kept_back = if not_sent > 0 {
        format!(
            ", {not_sent} not sent (kept back, never reached the workspace; the next \
             reconcile plans them again)"
        )
    } else {
        String::new()
    };
    assert!(
        line.starts_with(&format!(
            "Last reconcile: run {run} finished: 1 action held for approval \
             (`seatwarden approve {run}`), {failed} failed{kept_back}; started "
        )),
        "{line}"
    );
}

/// A schedule with a year (`0 8 * * 1-5 2027`, six fields, read seconds first) is
/// refused for its year, not for a day-of-week of 2027: the error names the key and
/// the file, and says which layouts are taken. Seven fields (Quartz's year) too.
#[test]
fn a_schedule_with_a_year_says_a_year_is_not_supported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.toml");
    let base = "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\n\
                url = \"https://x.example/scim/v2\"\ntoken = \"t\"\n";
    for pattern in ["0 8 * * 1-5 2027", "0 0 8 * * 1-5 2027"] {
        std::fs::write(
            &path,
            format!("{base}[schedule]\nreconcile = \"{pattern}\"\n"),
        )
        .unwrap();
        let err = Config::load_with_env(&path, Some(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("seatwarden.toml") && err.contains("schedule.reconcile"),
            "{err}"
        );
        assert!(err.contains("a year field is not supported"), "{err}");
        assert!(
            err.contains(
                "5 fields (minute hour day-of-month month day-of-week) or 6 with seconds \
                 first (second minute hour day-of-month month day-of-week)"
            ),
            "{err}"
        );
        assert!(!err.contains("day-of-week field"), "{err}");
    }
}

/// What `run` logs at info and above, as text.
async fn logged<T>(run: impl std::future::Future<Output = T>) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = {
        // Thread-local: the test's runtime has this one thread.
        let _guard = tracing::subscriber::set_default(subscriber);
        run.await
    };
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (out, text)
}

/// Two people deleted from the directory, one with an active account and one
/// whose account someone already deactivated: the sweep's line for the first
/// names them by their account's userName (not the directory id the ledger has
/// until it reads the account), and the second is logged as nothing to do.
#[tokio::test]
async fn the_sweep_logs_a_deleted_person_by_name_and_an_inactive_one_as_nothing_to_do() {
    use seatwarden::workspace::ScimClient;

    let dir = tempfile::tempdir().unwrap();
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    crate::fixtures::copy_demo_files(dir.path());
    let env: HashMap<String, String> = [
        ("SEATWARDEN__WORKSPACE__URL", sandbox.base_url().to_string()),
        ("SEATWARDEN__WORKSPACE__TOKEN", TOKEN.to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Config::load_with_env(&dir.path().join("seatwarden.toml"), Some(env)).unwrap();
    run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();

    // Two active people with active, non-Owner accounts, deleted.
    let directory_path = dir.path().join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let workspace = sandbox.snapshot();
    let mut users = full["users"].as_array().unwrap().clone();
    let mut gone = Vec::new();
    users.retain(|user| {
        let account = workspace.accounts.iter().find(|a| {
            a.active
                && a.external_id.as_deref() == user["id"].as_str()
                && !a.roles.iter().any(|r| r == "Owner")
        });
        match account {
            Some(account)
                if gone.len() < 2 && user["status"].as_str().unwrap_or("active") == "active" =>
            {
                gone.push((user["id"].as_str().unwrap().to_owned(), account.clone()));
                false
            }
            _ => true,
        }
    });
    assert_eq!(gone.len(), 2);
    std::fs::write(
        &directory_path,
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (active_id, active) = &gone[0];
    let (inactive_id, inactive) = &gone[1];
    client.set_active(&inactive.id, false).await.unwrap();

    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let (outcome, log) = logged(seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        chrono::Utc::now(),
        chrono::Duration::hours(1),
    ))
    .await;
    outcome.unwrap();

    let line_of = |identity: &str, text: &str| {
        log.lines()
            .find(|l| l.contains(&format!("identity={identity}")) && l.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} line for {identity}:\n{log}"))
            .to_owned()
    };
    let opened = line_of(active_id, "lost access in the directory");
    assert!(
        opened.contains(&format!("person={}", active.user_name)),
        "{opened}"
    );
    let nothing = line_of(inactive_id, "nothing to deprovision");
    assert!(
        nothing.contains(&format!("person={}", inactive.user_name)),
        "{nothing}"
    );
    assert!(!log.contains("deprovision due"), "{log}");
}
