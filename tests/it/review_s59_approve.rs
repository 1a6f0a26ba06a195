//! Session 59: an approved deprovision whose write failed transiently (5xx,
//! timeout, a dropped connection) is the retry job's to send again, as a
//! reconcile's failed deactivation is, without a second approval.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use seatwarden::approval::Approval;
use seatwarden::config::Config;
use seatwarden::run::Mode;
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::sla::LedgerEntry;
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::review_s45_approve::{approve_all, converged, execute, write_directory};
use crate::review_s56_approve_reads::{held_deactivation_of, suspend_two};

/// Two suspended people's deactivations held by the deprovision threshold,
/// approved while the workspace answers every write 503: both writes fail.
/// Returns the two people and the approval.
async fn approved_while_writes_fail(dir: &Path) -> (Sandbox, Config, Vec<String>, Approval) {
    let (sandbox, mut data, mut config) = converged(dir).await;
    config.safety.max_deprovisions = 0;
    let two = suspend_two(&mut data);
    write_directory(dir, &data);
    let held = execute(&config, Mode::Reconcile).await;
    let mut seqs = vec![
        held_deactivation_of(&held, &two[0]),
        held_deactivation_of(&held, &two[1]),
    ];
    seqs.sort_unstable();

    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let approval = approve_all(&config, held.run_id).await;
    let mut approved = approval.approved.clone();
    approved.sort_unstable();
    assert_eq!(approved, seqs, "{approval:?}");
    assert_eq!(
        (approval.applied.applied, approval.failed),
        (0, 2),
        "{approval:?}"
    );
    sandbox.set_faults(Faults::default());
    (sandbox, config, two, approval)
}

fn episodes_of(config: &Config, people: &[String]) -> Vec<LedgerEntry> {
    Store::open(&config.state.path)
        .unwrap()
        .current_deprovisions()
        .unwrap()
        .into_iter()
        .filter(|e| people.contains(&e.identity_id))
        .collect()
}

fn assert_deactivated(sandbox: &Sandbox, people: &[String], context: &str) {
    let workspace = sandbox.snapshot();
    for person in people {
        assert!(
            workspace
                .accounts
                .iter()
                .any(|a| a.external_id.as_deref() == Some(person.as_str()) && !a.active),
            "{person} deactivated: {context}"
        );
    }
}

/// The episodes stay open, no longer held (the approval decided), due for the
/// retry job with the write's error; the retry job, once the workspace takes
/// writes again, deactivates both without another approval. It held them
/// again by the threshold the approval had decided over: the people kept
/// access until someone approved a second time.
#[tokio::test]
async fn an_approved_deactivation_whose_write_failed_is_retried_by_the_retry_job() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, config, two, approval) = approved_while_writes_fail(dir.path()).await;
    let open = episodes_of(&config, &two);
    assert_eq!(open.len(), 2, "{open:#?}");
    for episode in &open {
        assert!(episode.is_open(), "{episode:?}");
        assert_eq!(episode.held, None, "{episode:?}");
        assert!(
            episode
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("503")),
            "{episode:?}"
        );
        assert!(episode.next_attempt_at.is_some(), "{episode:?}");
    }
    // `status` and `explain` tell it approved and waiting for the retry job,
    // not held for an approval.
    let status = seatwarden::daemon::status::render_text(&crate::qa_kept_back::status_of(&config));
    let approved_in = format!("approved in run {}", approval.run);
    assert_eq!(status.matches(&approved_in).count(), 2, "{status}");
    assert!(status.contains("the retry job sends it"), "{status}");
    let explained = seatwarden::explain::ledger_lines(
        &Store::open(&config.state.path).unwrap(),
        Some(&two[0]),
        Utc::now(),
        chrono_tz::UTC,
    )
    .unwrap();
    assert!(explained[0].contains(&approved_in), "{explained:?}");

    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let later = Utc::now() + Duration::minutes(5);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!((retried.enforced, retried.held), (2, 0), "{retried:?}");
    assert_deactivated(&sandbox, &two, &format!("{retried:?}"));
    assert!(
        episodes_of(&config, &two)
            .iter()
            .all(|e| e.verified_at.is_some()),
        "{:#?}",
        episodes_of(&config, &two)
    );
    sandbox.shutdown().await;
}

/// A reconcile before the retry job (the workspace back, the daemon's
/// schedule): it planned the same deactivations and held them again by the
/// threshold, asking for the approval a person had given.
#[tokio::test]
async fn a_reconcile_after_an_approval_whose_writes_failed_sends_them_unheld() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, config, two, _) = approved_while_writes_fail(dir.path()).await;
    let outcome = execute(&config, Mode::Reconcile).await;
    assert!(
        outcome.plan.held().next().is_none(),
        "nothing held again: {:?}",
        outcome.plan
    );
    assert_deactivated(&sandbox, &two, &format!("{:?}", outcome.plan));
    sandbox.shutdown().await;
}

/// The approval's writes reach the workspace but their answers are lost (the
/// connection dropped after the PATCH was applied): whatever the approval
/// recorded, the retry job reads each account before writing, finds it
/// inactive, and closes the episode without a second write.
#[tokio::test]
async fn an_approved_deactivation_whose_answer_was_lost_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut data, mut config) = converged(dir.path()).await;
    config.safety.max_deprovisions = 0;
    let two = suspend_two(&mut data);
    write_directory(dir.path(), &data);
    let held = execute(&config, Mode::Reconcile).await;
    sandbox.lose_answers("PATCH", "Users", 1000);
    let approval = approve_all(&config, held.run_id).await;
    assert_eq!(approval.approved.len(), 2, "{approval:?}");
    let writes = sandbox.stats().writes;

    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let later = Utc::now() + Duration::minutes(5);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!(retried.held, 0, "{retried:?}");
    assert_eq!(sandbox.stats().writes, writes, "written again: {retried:?}");
    assert_deactivated(&sandbox, &two, &format!("{approval:?}"));
    let episodes = episodes_of(&config, &two);
    assert!(
        episodes.len() == 2 && episodes.iter().all(|e| e.verified_at.is_some()),
        "{episodes:#?}"
    );
    sandbox.shutdown().await;
}

/// Two demotions held (both people left the mapped group); the operator puts
/// the first in a protected group, and `approve` reads the directory ahead of
/// the writer lock, showing them protected. The daemon's reconcile begins
/// while that read still goes on (a large directory takes minutes) and reads
/// the first person before the change reached them; it succeeds. The approval
/// took that reconcile for the newer read, set its own aside, and demoted the
/// person its own read showed protected.
#[tokio::test]
async fn a_reconcile_begun_while_approve_read_ahead_does_not_set_its_protected_members_aside() {
    use seatwarden::approval::{self, Only};
    use seatwarden::store::{RunKind, RunStatus};

    use crate::review_s58_review::{PROTECTED_GROUP, TwoDemotionsHeld, two_demotions_held};

    let dir = tempfile::tempdir().unwrap();
    let TwoDemotionsHeld {
        sandbox,
        mut data,
        config,
        held,
        members,
        first_seq: kept_seq,
        other_seq: demoted_seq,
        ..
    } = two_demotions_held(dir.path(), true).await;

    let before_the_change = data.directory.clone();
    data.directory
        .identities
        .iter_mut()
        .find(|i| i.id == members[0])
        .unwrap()
        .groups
        .push(PROTECTED_GROUP.into());
    write_directory(dir.path(), &data);
    let mut store = Store::open(&config.state.path).unwrap();
    let ahead = approval::read_ahead(&config, &store, held.run_id, &Only::All)
        .await
        .unwrap()
        .expect("held demotions are read for");
    // The reconcile, begun while approve's read went on.
    let (began, ended) = ahead.read_between();
    let reconcile = store
        .begin_run(RunKind::Reconcile, began + (ended - began) / 2)
        .unwrap();
    store
        .save_directory_snapshot(reconcile, &before_the_change)
        .unwrap();
    store
        .finish_run(reconcile, Utc::now(), RunStatus::Succeeded, None)
        .unwrap();

    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve_read_ahead(
        &config,
        &client,
        store,
        held.run_id,
        &Only::All,
        Some(ahead),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(
        approval.approved.contains(&demoted_seq),
        "the other demotion goes ahead: {approval:?}"
    );
    let why = &approval
        .refused
        .iter()
        .find(|(seq, _)| *seq == kept_seq)
        .unwrap_or_else(|| panic!("the protected person's demotion refused: {approval:?}"))
        .1;
    assert!(why.ends_with(" is protected"), "{why}");
    sandbox.shutdown().await;
}
