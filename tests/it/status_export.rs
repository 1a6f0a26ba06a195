//! `seatwarden status` and the digest name the run whose approval releases a
//! guard's hold; `export access` is current as of the writes applied since its
//! snapshot and says when it is from.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use seatwarden::store::{RunKind, Store};

/// A leaver whose deprovision the guard held in a sweep run (as a sweep pass
/// journals it), the episode open from `t0`; returns the run.
fn sweep_held_one(store: &mut Store, t0: DateTime<Utc>) -> i64 {
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::sla::{self, Leaver, LossReason};

    let leaver = Leaver {
        identity_id: "00u1".to_owned(),
        account_id: Some("acc-1".to_owned()),
        user_name: "leaver1@example.com".to_owned(),
        reason: LossReason::Deleted,
    };
    let open = store.current_deprovisions().unwrap();
    let changes = sla::observe(
        &open,
        std::slice::from_ref(&leaver),
        &[],
        t0,
        chrono::Duration::hours(1),
    );
    store.update_ledger(&changes, t0).unwrap();
    let run = store.begin_run(RunKind::Sweep, t0).unwrap();
    let plan = Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::Deactivate {
                account_id: "acc-1".to_owned(),
            },
            reason: DriftKind::StaleAccess,
            subject: leaver.user_name.clone(),
            identity_id: Some(leaver.identity_id.clone()),
            detail: "deleted from the directory".into(),
            held: Some(HoldReason::IncompleteDirectory),
        }],
        ..Plan::default()
    };
    store.save_plan(run, &plan, t0).unwrap();
    for entry in store.open_deprovisions().unwrap() {
        store
            .deprovision_held(entry.id, "held", t0 + chrono::Duration::minutes(15))
            .unwrap();
    }
    run
}

/// `approve` takes a run id and refuses `latest`, and the newest run may be a
/// `plan` it refuses: `status` (text and JSON) and the digest name the run whose
/// held action it is, with the commands.
#[test]
fn status_and_digest_name_the_run_holding_a_guards_hold() {
    use seatwarden::daemon::status::{self, Settings};

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
    let run = sweep_held_one(&mut store, t0);
    // A later plan: the newest run, and not one `approve` takes.
    let later = store
        .begin_run(RunKind::Plan, t0 + chrono::Duration::minutes(20))
        .unwrap();
    assert!(later > run);

    let now = t0 + chrono::Duration::minutes(30);
    let status = status::collect(
        &store,
        now,
        Settings {
            tz: chrono_tz::UTC,
            delete_after: None,
            cool_down: std::time::Duration::from_secs(600),
            database: None,
            schedule: None,
            admin_command: "seatwarden".to_owned(),
        },
    )
    .unwrap();
    let text = status::render_text(&status);
    let line = text
        .lines()
        .find(|l| l.contains("leaver1@example.com"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!(
            "held by the guard in run {run}, waiting for `seatwarden approve {run}` \
             or `seatwarden reject {run}`"
        )),
        "{text}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["deprovisions"]["open"][0]["hold"], "guard", "{json}");
    assert_eq!(json["deprovisions"]["open"][0]["hold_run"], run, "{json}");

    let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
    assert_eq!(deprovisions.len(), 1);
    assert_eq!(deprovisions[0].hold_run, Some(run), "{deprovisions:?}");
}
