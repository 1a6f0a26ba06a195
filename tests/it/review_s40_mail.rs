//! Session 40's review of the email side and what people are told after a run:
//! `report --run` of a reconcile killed before its report, alerts, the outbox,
//! digests and reports as mail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
use seatwarden::store::{Decision, RunKind, Store};

/// A configuration in `dir` whose state database is `state.db` beside it.
fn state_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("seatwarden.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\nurl = \
         \"https://x.example/scim/v2\"\ntoken = \"t\"\n[state]\npath = \"state.db\"\n",
    )
    .unwrap();
    config
}

/// `seatwarden report --run RUN` on `config`: its exit code and stderr.
fn report_run(config: &Path, run: i64) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(config)
        .args(["report", "--run", &run.to_string()])
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN__REPORT__ADMIN_COMMAND")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn deactivate(seq: u32, held: Option<HoldReason>) -> Action {
    Action {
        seq,
        kind: ActionKind::Deactivate {
            account_id: format!("a{seq}"),
        },
        reason: DriftKind::StaleAccess,
        subject: format!("user{seq}@example.com"),
        identity_id: Some(format!("00u{seq}")),
        detail: "identity is deprovisioned in the directory".into(),
        held,
    }
}

/// A reconcile killed before its report whose directory read was incomplete:
/// `report --run` said of its holds "held for a human" and told to `approve`
/// the run, which refuses every one of them (and nothing of a settle-window
/// wait is a human's either). It now counts them by what releases them and
/// tells the command that does; only a hold awaiting a decision is a human's,
/// and one rejected is told as decided.
#[test]
fn a_killed_reconciles_incomplete_directory_holds_are_not_told_as_held_for_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let config = state_config(dir.path());
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let now = chrono::Utc::now();
    let settling = HoldReason::Settling {
        first_seen: now,
        settles_at: now + chrono::Duration::minutes(10),
    };
    let killed = store.begin_run(RunKind::Reconcile, now).unwrap();
    let plan = Plan {
        actions: vec![
            deactivate(0, None),
            deactivate(1, Some(HoldReason::IncompleteDirectory)),
            deactivate(2, Some(HoldReason::IncompleteDirectory)),
            deactivate(3, Some(settling.clone())),
        ],
        ..Plan::default()
    };
    store.save_plan(killed, &plan, now).unwrap();
    store.mark_in_flight(killed, 0, now).unwrap();
    store.mark_applied(killed, 0, now, None).unwrap();
    drop(store);

    let (code, err) = report_run(&config, killed);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("run {killed} (reconcile) was cut off: "))
            && err.contains(
                "Its writes: 1 applied, 2 held because the directory read was incomplete \
                 (nothing to approve), 1 waiting for the settle window."
            )
            && err.contains("`seatwarden reconcile` again once the directory reads whole")
            && !err.contains("held for a human")
            && !err.contains("approve 1"),
        "{err}"
    );

    // Beside them, a hold for a human is told so, with the command that decides
    // it, and one rejected since is decided.
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    store
        .finish_run(
            killed,
            now,
            seatwarden::store::RunStatus::Failed,
            Some("interrupted"),
        )
        .unwrap();
    let other = store.begin_run(RunKind::Reconcile, now).unwrap();
    let plan = Plan {
        actions: vec![
            deactivate(0, Some(HoldReason::IncompleteDirectory)),
            deactivate(1, Some(HoldReason::LastOwner)),
            deactivate(2, Some(HoldReason::LastOwner)),
        ],
        ..Plan::default()
    };
    store.save_plan(other, &plan, now).unwrap();
    store
        .record_decisions(other, &[(2, Decision::Rejected, None)], "review", now)
        .unwrap();
    drop(store);
    let (code, err) = report_run(&config, other);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "Its writes: 1 held for a human, 1 held because the directory read was incomplete \
             (nothing to approve), 1 held and rejected (never sent from this run)."
        ) && err.contains(&format!("then `seatwarden approve {other}`")),
        "{err}"
    );
}
