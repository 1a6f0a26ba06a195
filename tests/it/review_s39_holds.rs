//! Session 39's review of holds, killed runs and alerts: what an incomplete
//! directory read held is no approval's and is never counted as one; a killed
//! reconcile's leavers keep its start as their deadline's origin after
//! `approve` recovered it; a sweep closes the dead runs it recovered; a breaker a
//! sweep trips alerts at once; `report --email` is capped as the digest is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The binary with `args` against the configuration `config`, to its end.
async fn binary(config: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("SEATWARDEN_CONFIG")
            .env("SEATWARDEN_OPERATOR", "review")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A SCIM directory whose listing ends short of its `totalResults` holds the
/// deactivation of the person it left out; `approve` refuses it. `status` (text
/// and JSON) and the report counted it as "awaiting approval" all the same, and
/// the report's headline said "needs a human": an operator told to approve was
/// then refused. They now count it apart and say what releases it: a reconcile
/// from a whole read. The exit code stays 3, as README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_incomplete_directory_read_held_is_not_told_as_awaiting_approval() {
    use crate::scim_directory::{THREE, mount_people, three_provisioned};
    let idp = wiremock::MockServer::start().await;
    let (workspace, dir, loaded) = three_provisioned(&idp).await;
    mount_people(&idp, &THREE[..2], 3).await;
    let config = dir.path().join("seatwarden.toml");

    let out = binary(config.clone(), &["reconcile"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "1 action held because the directory read was incomplete — nothing to approve; \
             `seatwarden reconcile` again once the directory reads whole"
        ) && !text.contains("needs a human"),
        "{text}"
    );

    let out = binary(config.clone(), &["status", "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
    assert_eq!(
        json["last_reconcile_held_incomplete_directory"], 1,
        "{json}"
    );
    let out = binary(config.clone(), &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        !line.contains("held for approval")
            && line.contains(
                "1 action held because its directory read was incomplete (nothing to approve: \
                 `seatwarden reconcile` again once the directory reads whole)"
            ),
        "{line}"
    );

    // The digest lists it apart from what `approve` takes, and the alert is not
    // the "approve" one.
    let out = binary(config.clone(), &["digest", "--format", "json"]).await;
    let digest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(digest["held"], serde_json::json!([]), "{digest}");
    assert_eq!(digest["held_incomplete"]["count"], 1, "{digest}");
    let subject = digest["subject"].as_str().unwrap();
    assert!(
        subject.contains("1 held action (directory read incomplete)"),
        "{subject}"
    );
    let out = binary(config.clone(), &["digest"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("approve with") && text.contains("nothing to approve"),
        "{text}"
    );
    let run_id = json["last_reconcile"]["id"].as_i64().unwrap();
    let (_config_dir, notifier) = alerting_notifier();
    let mut store = seatwarden::store::Store::open(&loaded.state.path).unwrap();
    let report =
        seatwarden::report::Report::from_json(&store.report(run_id).unwrap().unwrap()).unwrap();
    notifier.after_reconcile(&mut store, &report, chrono::Utc::now());
    assert!(!active(&store, "plan_held"));
    assert!(active(&store, "directory_incomplete"));
    drop(store);

    // Refused by `approve`, it is still no approval's.
    let run = json["last_reconcile"]["id"].as_i64().unwrap().to_string();
    let out = binary(config.clone(), &["approve", &run]).await;
    assert_eq!(out.status.code(), Some(3));
    let out = binary(config.clone(), &["status", "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
    assert_eq!(
        json["last_reconcile_held_incomplete_directory"], 1,
        "{json}"
    );
    workspace.shutdown().await;
}

/// A reconcile holding its deactivations (over the limit) and its role
/// downgrades, killed mid-apply; `approve RUN --only role_downgrade` recovers
/// its rows, closes it and applies the downgrades; the deactivations stay held.
/// The next reconcile holds them again: the leavers' episodes open then, and
/// must count from the killed run's start, when it saw them lose access (the
/// same-day SLA), as they do when that reconcile's own recovery finds the
/// killed run. Before, the approval's recovery left the reconcile nothing to
/// find, and their deadlines restarted at its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_leavers_count_from_its_start_after_approve_recovered_it() {
    use crate::review_s37_crash::{count, scenario};
    use seatwarden::store::ActionState;
    let s = scenario(
        400,
        &[
            ("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "5"),
            ("SEATWARDEN__SAFETY__MAX_ROLE_DOWNGRADES", "1"),
        ],
    )
    .await;
    let child = s.spawn(&["reconcile"], "killed");
    s.kill_when(child, "killed", |seen| count(seen, "POST", "/Users") >= 40)
        .await;
    let killed = s.newest_reconcile();
    let started = s.store().run(killed).unwrap().unwrap().started_at;
    let journal = s.store().journal(killed).unwrap();
    let held = |op: &str| {
        journal
            .iter()
            .filter(|row| row.state == ActionState::Held && row.action.kind.name() == op)
            .count()
    };
    assert!(
        held("deactivate") > 5 && held("set_role") > 1,
        "{journal:?}"
    );
    let leavers: Vec<String> = journal
        .iter()
        .filter(|row| row.state == ActionState::Held && row.action.kind.name() == "deactivate")
        .filter_map(|row| row.action.identity_id.clone())
        .collect();

    let code = s
        .run(
            &["approve", &killed.to_string(), "--only", "role_downgrade"],
            "approve",
        )
        .await;
    assert_eq!(code, 0, "{}", s.stderr("approve"));
    assert!(
        s.store()
            .run(killed)
            .unwrap()
            .unwrap()
            .closed_as_interrupted(),
        "{}",
        s.stderr("approve")
    );

    let code = s.run(&["reconcile"], "next").await;
    assert_eq!(code, 3, "{}", s.stderr("next"));
    let next = s.newest_reconcile();
    assert_ne!(next, killed);
    let store = s.store();
    for leaver in &leavers {
        let episode = store.deprovision_history(leaver, 1).unwrap();
        let episode = episode
            .first()
            .unwrap_or_else(|| panic!("{leaver}: no episode"));
        assert!(episode.verified_at.is_none(), "{episode:?}");
        assert_eq!(episode.detected_at, started, "{leaver}: {episode:?}");
    }
}

/// A sweep pass whose recovery resolves a killed reconcile's rows in flight,
/// with nothing of its own to deactivate (so no run of its own begins), closes
/// that run: it stayed `running`, told as cut off in `status` and `report --run`
/// until the next reconcile, though nothing of it waited for a recovery any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_with_nothing_to_deactivate_closes_the_killed_run_it_recovered() {
    use crate::review_s37_crash::{count, scenario};
    use seatwarden::store::{ActionState, RunStatus};
    use std::sync::{Arc, Mutex};
    let s = scenario(400, &[]).await;
    let child = s.spawn(&["reconcile"], "killed");
    s.kill_when(child, "killed", |seen| count(seen, "POST", "/Users") >= 40)
        .await;
    let killed = s.newest_reconcile();
    let in_flight = |store: &seatwarden::store::Store| {
        store
            .journal(killed)
            .unwrap()
            .iter()
            .filter(|row| row.state == ActionState::InFlight)
            .count()
    };
    assert!(in_flight(&s.store()) > 0);
    assert_eq!(
        s.store().run(killed).unwrap().unwrap().status,
        RunStatus::Running
    );

    let client = seatwarden::workspace::ScimClient::new(s.config.scim_settings().unwrap()).unwrap();
    let store = Arc::new(Mutex::new(s.store()));
    let outcome = seatwarden::sweep::enforce(&s.config, &client, &store, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(outcome.run_id, None, "{outcome:?}");
    let store = store.lock().unwrap();
    assert_eq!(in_flight(&store), 0);
    let record = store.run(killed).unwrap().unwrap();
    assert!(record.closed_as_interrupted(), "{record:?}");
}

/// A notifier with email configured (a relay nobody answers at) and the
/// directory its configuration is in.
pub(crate) fn alerting_notifier() -> (tempfile::TempDir, seatwarden::daemon::notify::Notifier) {
    notifier_with("")
}

/// [`alerting_notifier`] with `sections` (whole TOML tables, such as
/// `[schedule]\ndry_run = true\n`) added to its configuration.
pub(crate) fn notifier_with(
    sections: &str,
) -> (tempfile::TempDir, seatwarden::daemon::notify::Notifier) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config_path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"https://acme.example/scim/v2\"\ntoken = \"t\"\n\
             {sections}\
             [report.email]\nsmtp_url = \"smtp://127.0.0.1:9\"\nfrom = \"sw@example.com\"\n\
             to = [\"sec@example.com\"]\nquiet_period = \"6h\"\n"
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &config_path,
        Some(std::collections::HashMap::new()),
    )
    .unwrap();
    let notifier =
        seatwarden::daemon::notify::Notifier::from_config(&config).expect("email configured");
    (dir, notifier)
}

/// Whether the alert `key` is raised (active) in `store`.
pub(crate) fn active(store: &seatwarden::store::Store, key: &str) -> bool {
    store
        .alert(key)
        .unwrap()
        .is_some_and(|a| a.state == seatwarden::store::AlertRecordState::Active)
}

/// A circuit breaker a sweep or retry pass tripped (or found open, sending
/// nothing) alerts after that pass, not at the next reconcile, hours away
/// perhaps, while every pass in between writes nothing; a pass that finds it
/// closed again starts its resolution's hold (`report.email.resolve_after`),
/// and it is resolved once the breaker stayed closed that long.
#[test]
fn a_breaker_open_after_a_sweep_alerts_at_once() {
    let (_config_dir, notifier) = alerting_notifier();
    let dir = tempfile::tempdir().unwrap();
    let mut store = seatwarden::store::Store::open(&dir.path().join("state.db")).unwrap();
    let now = chrono::Utc::now();
    let pass = seatwarden::sweep::SweepOutcome::default();
    notifier.after_sweep(&mut store, &pass, now);
    assert!(!active(&store, "circuit_breaker_open"));

    store
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(now - chrono::Duration::minutes(1)),
            reason: Some("3 of the last 3 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    notifier.after_sweep(&mut store, &pass, now);
    assert!(active(&store, "circuit_breaker_open"));
    let alert = store
        .outbox()
        .unwrap()
        .into_iter()
        .find(|e| e.message.kind == seatwarden::store::OutboxKind::Alert)
        .unwrap();
    assert!(
        alert
            .message
            .text
            .contains("Why: 3 of the last 3 writes failed"),
        "{}",
        alert.message.text
    );

    store
        .set_circuit(&seatwarden::circuit::CircuitRecord::default())
        .unwrap();
    let closed = now + chrono::Duration::minutes(1);
    notifier.after_sweep(&mut store, &pass, closed);
    assert!(
        active(&store, "circuit_breaker_open"),
        "held: it may open again"
    );
    notifier.resolve_due(&mut store, closed + chrono::Duration::hours(1));
    assert!(!active(&store, "circuit_breaker_open"));
}

/// `report --email` of a run over thousands of people mailed every drift item
/// and every action: megabytes a relay refuses, or an inbox nobody reads. Each
/// list is capped as the digest's are (its first 50), with "… and N more" and
/// the command that prints them all; the headline and counts still say all.
#[test]
fn an_emailed_report_lists_the_first_50_of_each_list_and_says_where_the_rest_is() {
    use seatwarden::model::{DriftItem, DriftKind};
    use seatwarden::report::{ActionOutcome, Outcome, Report, SafetyReport, Summary};
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
        .unwrap()
        .to_utc();
    let people = 1200;
    let drift: Vec<DriftItem> = (0..people)
        .map(|n| DriftItem {
            kind: DriftKind::MissingAccount,
            identity_id: Some(format!("u{n}")),
            account_id: None,
            user_name: format!("person{n:04}@example.com"),
            detail: "in scope, no account".into(),
            conflict: None,
        })
        .collect();
    let actions: Vec<ActionOutcome> = (0..people)
        .map(|n| ActionOutcome {
            seq: u32::try_from(n).unwrap(),
            op: "create_account".into(),
            reason: DriftKind::MissingAccount,
            subject: format!("person{n:04}@example.com"),
            detail: "Viewer".into(),
            outcome: if n % 2 == 0 {
                Outcome::Applied
            } else {
                Outcome::Failed
            },
            attempts: 1,
            error: (n % 2 == 1).then(|| "HTTP 500".to_owned()),
            waiting: false,
            settle_window: None,
            deactivated_since: None,
        })
        .collect();
    let report = Report {
        schema_version: seatwarden::report::SCHEMA_VERSION,
        run_id: 7,
        mode: "reconcile".into(),
        started_at: at,
        finished_at: at,
        directory: "file directory.json".into(),
        workspace: "https://ws.example/scim/v2".into(),
        summary: Summary {
            drift_total: people,
            drift_by_kind: [(DriftKind::MissingAccount, people)].into(),
            actions_planned: people,
            actions_applied: people / 2,
            actions_failed: people / 2,
            ..Summary::default()
        },
        drift,
        actions,
        safety: SafetyReport::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = seatwarden::store::Store::open(&dir.path().join("state.db")).unwrap();
    let settings = crate::fixtures::plain_mail_settings(9);
    let id = seatwarden::mail::queue_report(
        &mut store,
        &settings,
        "acme",
        &report,
        chrono_tz::UTC,
        "seatwarden",
        at,
    )
    .unwrap();
    let message = store
        .outbox()
        .unwrap()
        .into_iter()
        .find(|e| e.id == id)
        .unwrap()
        .message;
    for body in [&message.text, &message.html] {
        assert!(body.contains("person0049@example.com"), "the first 50");
        assert!(!body.contains("person0050@example.com"), "none after them");
        assert!(body.contains("1150 more"), "the drift and the actions");
        assert!(body.contains("550 more"), "the failed actions (600)");
        assert!(body.contains("report --run 7"));
        assert!(body.len() < 100_000, "{}", body.len());
    }
    assert!(
        message
            .text
            .contains("  … and 1150 more: `seatwarden report --run 7` lists every one."),
        "{}",
        message.text
    );
    assert!(
        message
            .html
            .contains("Missing accounts (in scope, never provisioned) (1200)")
    );
    assert!(
        message.subject.contains("600 failed actions"),
        "{}",
        message.subject
    );
    // Printed, the report still lists every one.
    let printed = seatwarden::report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    assert!(printed.contains("person1199@example.com") && !printed.contains("more:"));
}

/// As [`a_killed_runs_leavers_count_from_its_start_after_approve_recovered_it`],
/// with a sweep (not the next reconcile) the first to see the leavers again
/// after the killed run was closed by another writer (`approve`, whose recovery
/// left the sweep nothing to find): the episodes it opens, held by its guard
/// (over the limit), count from the killed run's start. Before, from the sweep's
/// time: the overdue alert came as late as the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_leavers_count_from_its_start_when_a_sweep_sees_them_first() {
    use crate::review_s37_crash::scenario;
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::store::RunKind;
    use std::sync::{Arc, Mutex};
    let s = scenario(400, &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "5")]).await;
    // A whole reconcile first: the links the sweep goes by.
    assert_eq!(
        s.run(&["reconcile"], "first").await,
        3,
        "{}",
        s.stderr("first")
    );

    // Eight people leave; a reconcile sees them, holds their deactivations and
    // is killed; another writer closes it.
    let path = s.dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ledger = s.store();
    let links = ledger.links().unwrap();
    let workspace = s.sandbox.snapshot();
    let users = directory["users"].as_array_mut().unwrap();
    let mut leavers: Vec<(String, String, String)> = Vec::new();
    users.retain(|user| {
        let id = user["id"].as_str().unwrap();
        let account = links
            .iter()
            .find(|l| l.identity_id == id)
            .and_then(|l| workspace.accounts.iter().find(|a| a.id == l.account_id));
        match account {
            Some(a)
                if leavers.len() < 8
                    && a.active
                    && !a.is_owner()
                    && user["status"] == "active"
                    && ledger.deprovision_history(id, 1).unwrap().is_empty() =>
            {
                leavers.push((id.to_owned(), a.id.clone(), a.user_name.clone()));
                false
            }
            _ => true,
        }
    });
    assert_eq!(leavers.len(), 8);
    std::fs::write(&path, directory.to_string()).unwrap();
    let mut store = s.store();
    let seen = chrono::Utc::now();
    let killed = store.begin_run(RunKind::Reconcile, seen).unwrap();
    let plan = Plan {
        actions: leavers
            .iter()
            .enumerate()
            .map(|(seq, (identity, account, user_name))| Action {
                seq: u32::try_from(seq).unwrap(),
                kind: ActionKind::Deactivate {
                    account_id: account.clone(),
                },
                reason: DriftKind::StaleAccess,
                subject: user_name.clone(),
                identity_id: Some(identity.clone()),
                detail: "no longer in the directory".into(),
                held: Some(HoldReason::LastOwner),
            })
            .collect(),
        ..Plan::default()
    };
    store.save_plan(killed, &plan, seen).unwrap();
    store
        .close_interrupted_runs(seen + chrono::Duration::seconds(1))
        .unwrap();
    drop(store);

    let client = seatwarden::workspace::ScimClient::new(s.config.scim_settings().unwrap()).unwrap();
    let store = Arc::new(Mutex::new(s.store()));
    let outcome = seatwarden::sweep::sweep(
        &s.config,
        &s.config.sweep_directory(),
        &client,
        &store,
        seen + chrono::Duration::minutes(30),
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert!(outcome.held >= 8, "{outcome:?}");
    let store = store.lock().unwrap();
    for (leaver, ..) in &leavers {
        let episode = store.deprovision_history(leaver, 1).unwrap();
        let episode = episode
            .first()
            .unwrap_or_else(|| panic!("{leaver}: no episode"));
        assert!(episode.verified_at.is_none(), "{episode:?}");
        assert_eq!(episode.detected_at, seen, "{leaver}: {episode:?}");
    }
}

/// A reconcile holds deactivations (over the limit); the next one fails before
/// it plans (the directory export unreadable). `status` counted the held actions
/// of the last reconcile only: none, so yesterday's holds, still waiting and
/// still approvable, vanished from it (and from `/metrics`, which read the same
/// run) until a reconcile succeeded. The failed run replaced no hold: they are
/// counted, with the run that holds them and its `approve` command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_of_the_last_planned_reconcile_still_wait_after_one_that_failed_to_read() {
    use crate::review_s37_crash::scenario;
    let s = scenario(400, &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "5")]).await;
    assert_eq!(
        s.run(&["reconcile"], "holds").await,
        3,
        "{}",
        s.stderr("holds")
    );
    let holding = s.newest_reconcile();
    let config = s.dir.path().join("seatwarden.toml");
    let status = || async {
        let out = binary(config.clone(), &["status", "--format", "json"]).await;
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let before = status().await;
    let held = before["last_reconcile_awaiting_approval"].as_u64().unwrap();
    assert!(held > 5, "{before}");

    std::fs::write(s.dir.path().join("directory.json"), "{ not json").unwrap();
    assert_eq!(
        s.run(&["reconcile"], "fails").await,
        1,
        "{}",
        s.stderr("fails")
    );
    let failed = s.newest_reconcile();
    assert_ne!(failed, holding);
    let after = status().await;
    assert_eq!(after["last_reconcile"]["id"], failed, "{after}");
    assert_eq!(after["last_reconcile_awaiting_approval"], held, "{after}");
    assert_eq!(after["held_by_run"], holding, "{after}");
    let out = binary(config.clone(), &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!(
            "{held} actions held for approval by run {holding} (`seatwarden approve {holding}`)"
        )),
        "{line}"
    );
}
