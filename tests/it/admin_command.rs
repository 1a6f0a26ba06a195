//! What operators are told to run is spelled with the configured
//! `report.admin_command`, and the times they are given are on the report's clock
//! (`report.timezone`, with the zone's abbreviation), as the alerts and the digest
//! already do: the drift report, `explain`, `link`, `approve`, `reject`, and the
//! holds a reconcile and the sweep keep in the deprovision ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use seatwarden::approval::{self, ApprovalError, Only};
use seatwarden::config::Config;
use seatwarden::run::{self, Mode, RunOutcome};
use seatwarden::sandbox::Sandbox;
use seatwarden::store::Store;

const TOKEN: &str = "admin-command-token";
const ADMIN: &str = "sudo -u seatwarden seatwarden --config /etc/seatwarden/seatwarden.toml";
/// The demo's Emma Novak: two workspace accounts may be hers (a disputed match).
const EMMA: &str = "00u1004";
const EMMAS_ACCOUNT: &str = "ws-0005";

/// `at` as the reports show times in Europe/Berlin.
fn berlin(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d %H:%M:%S %:z (%Z)")
        .to_string()
}

/// The demo's files in `dir`, pointed at `sandbox`, run as [`ADMIN`] with times
/// in Europe/Berlin: the environment (for the binary too) and the configuration.
fn demo(dir: &Path, sandbox: &Sandbox) -> (Vec<(String, String)>, Config) {
    crate::fixtures::copy_demo_files(dir);
    let env: Vec<(String, String)> = [
        ("SEATWARDEN__WORKSPACE__URL", sandbox.base_url().to_string()),
        ("SEATWARDEN__WORKSPACE__TOKEN", TOKEN.to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
        ("SEATWARDEN__REPORT__ADMIN_COMMAND", ADMIN.to_owned()),
        ("SEATWARDEN__REPORT__TIMEZONE", "Europe/Berlin".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let config = Config::load_with_env(
        &dir.join("seatwarden.toml"),
        Some(env.iter().cloned().collect()),
    )
    .unwrap();
    (env, config)
}

async fn execute(config: &Config, mode: Mode) -> RunOutcome {
    run::execute(config, Store::open(&config.state.path).unwrap(), mode)
        .await
        .unwrap()
}

fn seatwarden(dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let config = dir.join("seatwarden.toml");
    Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// Removes `ids` from the demo's directory file in `dir`.
fn remove_from_directory(dir: &Path, ids: &[&str]) {
    let path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let users = full["users"].as_array_mut().unwrap();
    let before = users.len();
    users.retain(|u| !ids.contains(&u["id"].as_str().unwrap_or_default()));
    assert_eq!(users.len(), before - ids.len());
    std::fs::write(&path, full.to_string()).unwrap();
}

/// The directory ids of `n` people whose linked account is active and holds no
/// Owner role: leavers nothing but a threshold holds.
fn active_non_owners(sandbox: &Sandbox, n: usize) -> Vec<String> {
    let ids: Vec<String> = sandbox
        .snapshot()
        .accounts
        .iter()
        .filter(|a| a.active && !a.roles.iter().any(|r| r == "Owner"))
        .filter_map(|a| a.external_id.clone())
        .filter(|id| id != EMMA)
        .take(n)
        .collect();
    assert_eq!(ids.len(), n, "not enough people to let go");
    ids
}

/// A disputed leaver: the report (text and Markdown, as `seatwarden report`
/// prints it, and as `report --email` sends it), the episode's hold, `explain`
/// and a refused `link` all tell the configured command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_leaver_is_told_the_configured_commands() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, config) = demo(dir.path(), &sandbox);
    execute(&config, Mode::Reconcile).await;
    remove_from_directory(dir.path(), &[EMMA]);
    let outcome = execute(&config, Mode::Reconcile).await;
    assert_eq!(outcome.plan.disputed_leavers.len(), 1);

    let settles = format!("none is deactivated until `{ADMIN} link IDENTITY ACCOUNT` says which");
    let printed = seatwarden(dir.path(), &env, &["report"]);
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains(&format!(
            "1 leaver still has access (disputed match) — needs `{ADMIN} link`"
        )) && text.contains(&settles),
        "{text}\n{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed = seatwarden(dir.path(), &env, &["report", "--format", "markdown"]);
    let markdown = String::from_utf8_lossy(&printed.stdout);
    assert!(
        markdown.contains(&format!("{ADMIN} link IDENTITY ACCOUNT")),
        "{markdown}"
    );

    // Emailed (kept in the outbox: nothing listens on the port), text and HTML.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut toml = std::fs::read_to_string(dir.path().join("seatwarden.toml")).unwrap();
    toml.push_str(&format!(
        "\n[report.email]\nsmtp_url = \"smtp://127.0.0.1:{port}\"\n\
         from = \"seatwarden@example.com\"\nto = [\"it-security@example.com\"]\ntimeout = \"2s\"\n"
    ));
    std::fs::write(dir.path().join("seatwarden.toml"), toml).unwrap();
    let emailed = seatwarden(dir.path(), &env, &["report", "--email"]);
    assert_eq!(emailed.status.code(), Some(1), "{emailed:?}");
    let store = Store::open(&config.state.path).unwrap();
    let message = &store.outbox().unwrap()[0].message;
    assert!(message.text.contains(&settles), "{}", message.text);
    assert!(
        message.html.contains("link IDENTITY ACCOUNT")
            && message.html.contains("sudo -u seatwarden"),
        "{}",
        message.html
    );

    let episode = store
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == EMMA)
        .unwrap();
    let held = episode.held.unwrap_or_default();
    assert!(
        held.ends_with(&format!(
            "none is deactivated until `{ADMIN} link {EMMA} ACCOUNT` says which"
        )),
        "{held}"
    );

    let explained = seatwarden::explain::explain(&config, &store, EMMA, Utc::now()).unwrap();
    assert!(
        explained.contains(&format!("\n    {ADMIN} link {EMMA} {EMMAS_ACCOUNT}\n")),
        "{explained}"
    );

    let refused = seatwarden(dir.path(), &env, &["link", "nobody", EMMAS_ACCOUNT]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && said.contains(&format!("`{ADMIN} explain` finds a person's id")),
        "{said}"
    );
    sandbox.shutdown().await;
}

/// `approve` and `reject` name the configured command, and the times a refusal
/// gives are on the report's clock: a plan's run is not theirs to decide on, an
/// open circuit breaker refuses the approval, and the re-check refuses the held
/// deprovision of someone seen back since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_reject_name_the_configured_command_and_the_reports_clock() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_env, config) = demo(dir.path(), &sandbox);
    execute(&config, Mode::Reconcile).await;
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approve = |run, now| {
        approval::approve(
            &config,
            &client,
            Store::open(&config.state.path).unwrap(),
            run,
            &Only::All,
            now,
        )
    };

    // Over the demo's max_deprovisions (5): the guard holds them.
    let leavers = active_non_owners(&sandbox, 6);
    let ids: Vec<&str> = leavers.iter().map(String::as_str).collect();
    remove_from_directory(dir.path(), &ids);

    let plan = execute(&config, Mode::Plan).await;
    let not_applying = approve(plan.run_id, Utc::now()).await.unwrap_err();
    assert!(
        matches!(not_applying, ApprovalError::NotApplying { .. })
            && not_applying.to_string().starts_with(&format!(
                "run {} was a `{ADMIN} plan`: it was never meant to apply anything",
                plan.run_id
            ))
            && not_applying
                .to_string()
                .contains(&format!("Run `{ADMIN} reconcile`, then decide")),
        "{not_applying}"
    );
    let mut store = Store::open(&config.state.path).unwrap();
    let not_applying = approval::reject(
        &mut store,
        plan.run_id,
        &Only::All,
        ADMIN,
        chrono_tz::UTC,
        Utc::now(),
    )
    .unwrap_err();
    assert!(
        not_applying
            .to_string()
            .contains(&format!("Run `{ADMIN} reconcile`")),
        "{not_applying}"
    );

    let held = execute(&config, Mode::Reconcile).await;
    assert_eq!(held.plan.held().count(), 6, "{:#?}", held.plan.actions);

    let opened_at = DateTime::from_timestamp(Utc::now().timestamp() - 60, 0).unwrap();
    store
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(opened_at),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    let open = approve(held.run_id, Utc::now()).await.unwrap_err();
    assert!(
        matches!(open, ApprovalError::CircuitOpen { .. })
            && open.to_string().starts_with(&format!(
                "the circuit breaker is open since {} until ",
                berlin(opened_at)
            ))
            && open
                .to_string()
                .contains(&format!("Run `{ADMIN} resume` once")),
        "{open}"
    );
    store
        .set_circuit(&seatwarden::circuit::CircuitRecord::default())
        .unwrap();

    // A sweep sees the first leaver back: their episode ends.
    let back_at = DateTime::from_timestamp(Utc::now().timestamp() + 300, 0).unwrap();
    let current = store.current_deprovisions().unwrap();
    let changes = seatwarden::sla::observe(
        &current,
        &[],
        std::slice::from_ref(&leavers[0]),
        back_at,
        Duration::hours(1),
    );
    store.update_ledger(&changes, back_at).unwrap();
    let approved = approve(held.run_id, back_at + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(approved.refused.len(), 1, "{approved:?}");
    let why = &approved.refused[0].1;
    assert_eq!(
        why,
        &format!(
            "the person has access again in the directory (seen {}); a new run decides what \
             they need",
            berlin(back_at)
        )
    );
    sandbox.shutdown().await;
}

/// The sweep's held deactivation says when the leaver is due on the report's
/// clock; held again after a human rejected it, its hold names the rejection on
/// that clock too, and `reject` tells how to see where each person stands with
/// the configured command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_sweep_hold_names_the_rejection_on_the_reports_clock() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_env, mut config) = demo(dir.path(), &sandbox);
    execute(&config, Mode::Reconcile).await;
    let leaver = active_non_owners(&sandbox, 1).remove(0);
    remove_from_directory(dir.path(), &[&leaver]);
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let now = Utc::now();
    // The day's deprovision limit is reached already: the sweep holds the leaver.
    let today = store
        .lock()
        .unwrap()
        .deprovisions_since(now - Duration::hours(24))
        .unwrap();
    config.safety.max_deprovisions_per_day = usize::try_from(today).unwrap();
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let sweep =
        |at| seatwarden::sweep::sweep(&config, &directory, &client, &store, at, Duration::hours(1));
    let first = sweep(now).await.unwrap();
    assert_eq!(first.held, 1, "{first:?}");
    let run = first.run_id.unwrap();
    // The held deactivation says when the leaver is due, on the report's clock.
    let due_at = store
        .lock()
        .unwrap()
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == leaver)
        .unwrap()
        .due_at;
    let journal = store.lock().unwrap().journal(run).unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert!(
        journal[0]
            .action
            .detail
            .ends_with(&format!("; due {}", berlin(due_at))),
        "{}",
        journal[0].action.detail
    );

    let rejection = approval::reject(
        &mut store.lock().unwrap(),
        run,
        &Only::All,
        ADMIN,
        chrono_tz::UTC,
        Utc::now(),
    )
    .unwrap();
    assert!(
        rejection
            .to_string()
            .contains(&format!("`{ADMIN} explain PERSON` shows where each stands")),
        "{rejection}"
    );
    let audited = store.lock().unwrap().audit().unwrap().pop().unwrap();

    let again = sweep(now + Duration::minutes(16)).await.unwrap();
    assert_eq!(again.held, 1, "{again:?}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver).unwrap();
    let held = episode.held.as_deref().unwrap_or_default();
    assert!(
        held.starts_with(&format!(
            "rejected in run {run} by {} at {}; held again: ",
            audited.user,
            berlin(audited.at)
        )),
        "{held}"
    );
    sandbox.shutdown().await;
}

/// With the circuit breaker open the sweep sends nothing, and the leaver's
/// episode says why with the breaker's times on the report's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_the_open_breaker_kept_back_reads_on_the_reports_clock() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_env, config) = demo(dir.path(), &sandbox);
    execute(&config, Mode::Reconcile).await;
    let leaver = active_non_owners(&sandbox, 1).remove(0);
    remove_from_directory(dir.path(), &[&leaver]);
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let opened_at = DateTime::from_timestamp(Utc::now().timestamp() - 60, 0).unwrap();
    store
        .lock()
        .unwrap()
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(opened_at),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();

    let outcome = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        Utc::now(),
        Duration::hours(1),
    )
    .await
    .unwrap();
    // Kept back by the open breaker: not sent, no failure of its own.
    assert_eq!((outcome.failed, outcome.not_sent), (0, 1), "{outcome:?}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver).unwrap();
    let why = episode.last_error.as_deref().unwrap_or_default();
    let until = episode.next_attempt_at.unwrap();
    assert_eq!(
        why,
        format!(
            "not sent: the circuit breaker is open since {} until {}",
            berlin(opened_at),
            berlin(until)
        )
    );
    sandbox.shutdown().await;
}

/// Removes `group` from every user of the demo's directory file in `dir`.
fn empty_group(dir: &Path, group: &str) {
    let path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut members = 0;
    for user in full["users"].as_array_mut().unwrap() {
        let groups = user["groups"].as_array_mut().unwrap();
        let before = groups.len();
        groups.retain(|g| g.as_str() != Some(group));
        members += before - groups.len();
    }
    assert!(members > 0, "nobody is in {group}");
    std::fs::write(&path, full.to_string()).unwrap();
}

/// What a run plans and holds names the configured command too: the dispute
/// details it stores, a hold a person releases (in the run's report and in
/// `explain`), and the access export, which before any run tells to plan first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_holds_and_the_export_name_the_configured_command() {
    use seatwarden::model::DriftKind;
    use seatwarden::report::Outcome;

    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, config) = demo(dir.path(), &sandbox);
    let unplanned =
        seatwarden::export::access(&Store::open(&config.state.path).unwrap(), &config).unwrap_err();
    assert_eq!(
        unplanned.to_string(),
        format!(
            "no run with directory and workspace snapshots is recorded yet; run `{ADMIN} plan` \
             first"
        )
    );

    let first = execute(&config, Mode::Reconcile).await;
    let emma = first
        .plan
        .drift
        .iter()
        .find(|d| d.kind == DriftKind::DisputedMatch && d.identity_id.as_deref() == Some(EMMA))
        .unwrap();
    assert!(
        emma.detail
            .contains(&format!("`{ADMIN} explain {EMMA}` compares them")),
        "{}",
        emma.detail
    );
    assert!(
        first
            .plan
            .drift
            .iter()
            .all(|d| !d.detail.contains("`seatwarden ")),
        "{:#?}",
        first.plan.drift
    );
    let store = Store::open(&config.state.path).unwrap();
    let export = seatwarden::export::access(&store, &config).unwrap();
    let disputed: Vec<&str> = export
        .accounts
        .iter()
        .map(|row| row.justification.as_str())
        .filter(|why| why.starts_with("disputed: "))
        .collect();
    assert!(
        !disputed.is_empty()
            && disputed
                .iter()
                .all(|why| why.contains(&format!("; `{ADMIN} link 00u1004 "))),
        "{disputed:?}"
    );

    // Nobody is in Finance any more: emptying its workspace group waits for a
    // person, and the hold says how to let it go ahead.
    empty_group(dir.path(), "Finance");
    let held = execute(&config, Mode::Reconcile).await;
    let removal = held
        .report
        .actions
        .iter()
        .find(|a| a.op == "remove_members" && a.outcome == Outcome::Held)
        .unwrap();
    let releases = format!("or `{ADMIN} approve` the removal");
    assert!(
        removal
            .error
            .as_deref()
            .is_some_and(|why| why.contains(&releases)),
        "{removal:?}"
    );
    let printed = seatwarden(dir.path(), &env, &["report"]);
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains(&releases), "{text}");
    let store = Store::open(&config.state.path).unwrap();
    // One of the members Finance had in the directory file.
    let explained = seatwarden::explain::explain(&config, &store, "00u1005", Utc::now()).unwrap();
    assert!(explained.contains(&releases), "{explained}");
    sandbox.shutdown().await;
}
