//! Session 58, third look at `approve`'s directory read made before the writer
//! lock: a run already at work as that read began.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use chrono::Utc;
use seatwarden::approval::{self, Approval, Only};
use seatwarden::config::Config;
use seatwarden::sandbox::Sandbox;
use seatwarden::store::{RunKind, RunStatus, Store};
use seatwarden::workspace::ScimClient;

use crate::review_s45_approve::write_directory;
use crate::review_s58_review::{PROTECTED_GROUP, TwoDemotionsHeld, two_demotions_held};

/// Two demotions held (both people left the mapped group), then the daemon's
/// reconcile begins (its run row recorded) before `approve` reads the
/// directory ahead of the lock. The operator then changes the directory for
/// the first person (`change`), and the reconcile's read, finishing after
/// approve's began, shows it; the reconcile succeeds. Returns the approval,
/// with the held seqs of the changed person and of the other.
async fn approve_while_a_reconcile_begun_earlier_reads_later(
    dir: &Path,
    protected: bool,
    change: impl FnOnce(&mut seatwarden::model::Identity, &str),
) -> (Sandbox, Approval, u32, u32) {
    let TwoDemotionsHeld {
        sandbox,
        mut data,
        config,
        group,
        held,
        members,
        first_seq: changed_seq,
        other_seq,
    } = two_demotions_held(dir, protected).await;

    let mut store = Store::open(&config.state.path).unwrap();
    // The daemon's reconcile, mid-read as approve starts.
    let reconcile = store.begin_run(RunKind::Reconcile, Utc::now()).unwrap();
    let ahead = approval::read_ahead(&config, &store, held.run_id, &Only::All)
        .await
        .unwrap()
        .expect("held demotions are read for");
    change(
        data.directory
            .identities
            .iter_mut()
            .find(|i| i.id == members[0])
            .unwrap(),
        &group,
    );
    write_directory(dir, &data);
    store
        .save_directory_snapshot(reconcile, &data.directory)
        .unwrap();
    store
        .finish_run(reconcile, Utc::now(), RunStatus::Succeeded, None)
        .unwrap();

    let approval = approve(&config, store, held.run_id, ahead).await;
    (sandbox, approval, changed_seq, other_seq)
}

async fn approve(
    config: &Config,
    store: Store,
    run: seatwarden::store::RunId,
    ahead: approval::ReadAhead,
) -> Approval {
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    approval::approve_read_ahead(
        config,
        &client,
        store,
        run,
        &Only::All,
        Some(ahead),
        Utc::now(),
    )
    .await
    .unwrap()
}

fn refusal(approval: &Approval, seq: u32) -> &str {
    &approval
        .refused
        .iter()
        .find(|(refused, _)| *refused == seq)
        .unwrap_or_else(|| panic!("held action {seq} refused: {approval:?}"))
        .1
}

/// The reconcile's read began before approve's and ended after it: which saw
/// the person last is not known. It shows them put in a protected group since;
/// the approval went by its own read alone (the run's id is older than its
/// read) and demoted them.
#[tokio::test]
async fn a_protected_group_member_shown_by_a_reconcile_reading_alongside_approve_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, approval, kept_seq, demoted_seq) =
        approve_while_a_reconcile_begun_earlier_reads_later(dir.path(), true, |identity, _| {
            identity.groups.push(PROTECTED_GROUP.into())
        })
        .await;
    assert!(
        approval.approved.contains(&demoted_seq),
        "the other demotion goes ahead: {approval:?}"
    );
    let why = refusal(&approval, kept_seq);
    assert!(why.ends_with(" is protected"), "{why}");
    sandbox.shutdown().await;
}

/// As above, the reconcile's read showing the person put back in the mapped
/// group (the mistake behind the held demotions fixed): the approval demoted
/// them from its own read, and the next reconcile would have promoted them back.
#[tokio::test]
async fn a_demotion_a_reconcile_reading_alongside_approve_no_longer_asks_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, approval, kept_seq, demoted_seq) =
        approve_while_a_reconcile_begun_earlier_reads_later(
            dir.path(),
            false,
            |identity, group| identity.groups.push(group.to_owned()),
        )
        .await;
    assert!(
        approval.approved.contains(&demoted_seq),
        "the other demotion goes ahead: {approval:?}"
    );
    let why = refusal(&approval, kept_seq);
    assert!(
        why.contains("the directory no longer asks for it: the directory read by run"),
        "{why}"
    );
    sandbox.shutdown().await;
}

/// `export`, `explain` (and `approve`'s note) send the operator to
/// `report --run N` for why run N's directory was refused. A run that stored
/// no report (it failed after the source check, here as the workspace answered
/// 503) had `report --run N` say only that it failed: not why its directory
/// was refused.
#[test]
fn report_of_a_refused_run_without_a_report_says_why_its_directory_was_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (refused, fault) = a_refused_run_without_a_report(dir.path());
    let (code, stderr) =
        crate::fixtures::seatwarden_in(dir.path(), &[], &["report", "--run", &refused.to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the workspace answered 503"), "{stderr}");
    assert!(
        stderr.contains(&format!("the source check refused its directory: {fault}")),
        "{stderr}"
    );
}

/// A configuration in `dir` and a reconcile whose empty directory the source
/// check refused, then failed (the workspace answered 503) before storing a
/// report: its id, and what the check said.
pub(crate) fn a_refused_run_without_a_report(dir: &Path) -> (seatwarden::store::RunId, String) {
    use seatwarden::model::DirectorySnapshot;
    use seatwarden::safety::{self, SourceCheck};

    std::fs::write(
        dir.join("seatwarden.toml"),
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n[workspace]\n\
         url = \"https://x.example/scim/v2\"\ntoken = \"t\"\n[state]\npath = \"state.db\"\n",
    )
    .unwrap();
    let config = Config::load(&dir.join("seatwarden.toml")).unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    let now = Utc::now();
    let refused = store.begin_run(RunKind::Reconcile, now).unwrap();
    let fault = safety::check_source(
        &mut store,
        refused,
        &DirectorySnapshot {
            identities: Vec::new(),
            complete: true,
        },
        &config,
        false,
        SourceCheck::Record,
        now,
    )
    .unwrap()
    .expect("an empty directory is refused");
    store
        .finish_run(
            refused,
            now,
            RunStatus::Failed,
            Some("GET /Users: the workspace answered 503"),
        )
        .unwrap();
    (refused, fault.to_string())
}
