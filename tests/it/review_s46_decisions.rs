//! Session 46's review of decisions on held actions: the newest decision about
//! an action wins. Run 2 held a leaver's deprovision, undecided; run 3 held the
//! same again, and the operator ran `reject 3`. `status`, the digest and the
//! overdue alert then named the newest *undecided* hold, run 2's, and `approve
//! 2` would have deactivated the person the operator had just decided to keep.
//! Now `reject 3` records run 2's copy rejected too, naming run 3 (data, in
//! `held_decisions.decided_in`); nothing points to run 2, `approve 2` says who
//! rejected it where and when, and a new hold after the rejection (run 4) is
//! approvable as usual. `status` and the digest (text and JSON `hold_decided`)
//! say who decided a hold and when, as the overdue alert does. And a limit of 0
//! holding one leaver reads "1 deprovision planned", not "1 deprovisions
//! planned".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::approval::{self, ApprovalError, Only, Rejection};
use seatwarden::config::Config;
use seatwarden::daemon::status;
use seatwarden::run::Mode;
use seatwarden::store::{RunId, Store};
use seatwarden::workspace::ScimClient;

use crate::review_s45_decided::{execute, held, status_of};
use crate::review_s46_holds::{decided_at, overdue_alert};

fn reject(config: &Config, run: RunId) -> Rejection {
    approval::reject(
        &mut Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        decided_at(),
    )
    .unwrap()
}

async fn approve(config: &Config, run: RunId) -> Result<approval::Approval, ApprovalError> {
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    approval::approve(
        config,
        &client,
        Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        chrono::Utc::now(),
    )
    .await
}

/// A reconcile after `held`'s: the guard holds the same deprovisions again.
async fn held_again(config: &Config, n: usize) -> RunId {
    let again = execute(config, Mode::Reconcile).await;
    assert_eq!(again.plan.held().count(), n, "{:?}", again.plan);
    again.run_id
}

/// What `approve OLDER` says of what a newer run's rejection decided.
fn newer_decision(newer: RunId) -> String {
    format!(
        "rejected in run {newer} by {} at 2026-12-05 09:30:00 UTC: a newer decision \
         stands; the next run plans it again if still due",
        seatwarden::safety::os_user()
    )
}

#[tokio::test]
async fn rejecting_a_newer_hold_decides_the_older_one_and_a_new_hold_is_approvable() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, older) = held(dir.path(), 1).await;
    let newer = held_again(&config, 1).await;
    let person = {
        let store = Store::open(&config.state.path).unwrap();
        let waiting = store.held_for_approval().unwrap();
        assert_eq!(waiting.values().copied().collect::<Vec<_>>(), [newer]);
        waiting.into_keys().next().unwrap()
    };

    let rejection = reject(&config, newer);
    assert_eq!(rejection.earlier, [(older, 1)]);
    let said = rejection.to_string();
    assert!(
        said.contains(&format!(
            "; run {older} held it before, undecided: rejected there too (the newest decision \
             stands)"
        )),
        "{said}"
    );

    // Nothing points to the older run for an approval.
    let store = Store::open(&config.state.path).unwrap();
    assert!(
        store.held_for_approval().unwrap().is_empty(),
        "{:?}",
        store.held_for_approval()
    );
    assert_eq!(approval::awaiting_decision(&store, older).unwrap(), 0);
    let rows = approval::held_rows(&store, older).unwrap();
    assert_eq!((rows.awaiting_decision, rows.decided), (0, 1), "{rows:?}");
    // The older run's report tells whose rejection it was: nobody ran `reject 2`.
    let report =
        seatwarden::report::Report::from_json(&store.report(older).unwrap().unwrap()).unwrap();
    assert_eq!(report.rejected(), 1);
    let why = report.actions.iter().find_map(|a| a.error.clone()).unwrap();
    assert!(
        why.starts_with(&format!(
            "rejected (seatwarden reject {newer}, of run {newer}'s hold of the same)"
        )),
        "{why}"
    );
    let digest = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
    assert_eq!(digest.len(), 1);
    assert_eq!(digest[0].hold_run, None, "{digest:?}");
    drop(store);
    let text = status::render_text(&status_of(&config));
    assert!(!text.contains(&format!("approve {older}")), "{text}");
    // Who rejected it and when, as the overdue alert says it.
    let operator = seatwarden::safety::os_user();
    assert!(
        text.contains(&format!(
            "its hold in run {newer} was rejected by {operator} at 2026-12-05 09:30 UTC, so \
             nothing waits for an approval"
        )),
        "{text}"
    );
    let json = serde_json::to_value(status_of(&config)).unwrap();
    let line = &json["deprovisions"]["open"][0];
    assert_eq!(line["identity_id"], person.as_str(), "{json}");
    assert_eq!(line["hold_run"], serde_json::Value::Null, "{json}");
    assert_eq!(line["hold_decided"]["decision"], "rejected", "{json}");
    assert_eq!(line["hold_decided"]["run"], newer, "{json}");
    assert_eq!(line["hold_decided"]["by"], operator.as_str(), "{json}");
    assert_eq!(line["hold_decided"]["at"], "2026-12-05T09:30:00Z", "{json}");
    let alert = overdue_alert(&config);
    assert!(!alert.contains("approve with"), "{alert}");
    assert!(!alert.contains(&format!("approve {older}")), "{alert}");

    // `approve OLDER` refuses, naming the rejecting run, who and when.
    let Err(refused) = approve(&config, older).await else {
        panic!("approve {older} must refuse")
    };
    assert!(
        matches!(refused, ApprovalError::NothingHeld { .. }),
        "{refused:?}"
    );
    let refused = refused.to_string();
    assert!(
        refused.contains(&format!("decided already: 1 {}", newer_decision(newer))),
        "{refused}"
    );

    // The next reconcile holds it again: a new decision, approvable as usual.
    let newest = held_again(&config, 1).await;
    let waiting = Store::open(&config.state.path)
        .unwrap()
        .held_for_approval()
        .unwrap();
    assert_eq!(waiting.get(&person), Some(&newest), "{waiting:?}");
    let approved = approve(&config, newest).await.unwrap();
    assert_eq!(
        (approved.approved.len(), approved.applied.applied),
        (1, 1),
        "{approved:?}"
    );
    assert!(approved.rejected_later.is_empty(), "{approved:?}");
}

/// One of two leavers of run 2 is back in the directory before run 3, which
/// holds only the other; `reject 3` decides that one in run 2 as well. `approve
/// 2` then re-checks the one left (and refuses it: the person has access again)
/// and says why it does not take up the rejected one.
#[tokio::test]
async fn approving_the_older_run_says_why_it_leaves_out_what_a_newer_reject_decided() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, older) = held(dir.path(), 2).await;
    let file = dir.path().join("directory.json");
    let directory = std::fs::read_to_string(&file).unwrap();
    let back = directory
        .lines()
        .find(|l| l.contains("\"status\": \"deprovisioned\""))
        .unwrap();
    std::fs::write(
        &file,
        directory.replacen(
            back,
            &back.replace("\"status\": \"deprovisioned\"", "\"status\": \"active\""),
            1,
        ),
    )
    .unwrap();
    let newer = held_again(&config, 1).await;
    assert_eq!(reject(&config, newer).earlier, [(older, 1)]);
    let rows = approval::held_rows(&Store::open(&config.state.path).unwrap(), older).unwrap();
    assert_eq!((rows.awaiting_decision, rows.decided), (1, 1), "{rows:?}");

    let approval = approve(&config, older).await.unwrap();
    assert!(approval.approved.is_empty(), "{approval:?}");
    assert_eq!(approval.refused.len(), 1, "{approval:?}");
    assert_eq!(approval.rejected_later.len(), 1, "{approval:?}");
    assert_eq!(approval.rejected_later[0].1, newer_decision(newer));
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(older)
        .unwrap();
    let rejected = journal
        .iter()
        .find(|e| e.action.seq == approval.rejected_later[0].0)
        .unwrap();
    assert_eq!(
        rejected.state,
        seatwarden::store::ActionState::Held,
        "never sent from run {older}"
    );
}

/// The guard's per-run limit of 0 holding one leaver: its reason (the journal's,
/// the report's, the alert's) read "1 deprovisions planned".
#[tokio::test]
async fn one_held_deprovision_is_worded_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 1).await;
    let why = held_reason(&config, run);
    assert!(
        why.starts_with("1 deprovision planned, the per-run limit is 0"),
        "{why}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 2).await;
    let why = held_reason(&config, run);
    assert!(
        why.starts_with("2 deprovisions planned, the per-run limit is 0"),
        "{why}"
    );
}

fn held_reason(config: &Config, run: RunId) -> String {
    let journal = Store::open(&config.state.path)
        .unwrap()
        .journal(run)
        .unwrap();
    journal
        .iter()
        .find_map(|e| e.action.held.as_ref())
        .unwrap()
        .to_string()
}
