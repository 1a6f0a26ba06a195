//! Review (s58, second) of session 58's changes: `approve`'s directory read
//! made before the writer lock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use seatwarden::approval::{self, Only};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::review_s45_approve::write_directory;
use crate::review_s58_review::demotions_held_then_one_put_in_a_protected_group;

/// As `review_s58_review`'s refused read, with the directory read before the
/// writer lock (`seatwarden approve` does so since 1da5214): the read ahead is
/// refused (a directory outage), no run read the directory since, and the
/// approval went by the held run's read alone for the protected groups'
/// members: it demoted the person the plan's read showed protected.
#[tokio::test]
async fn approve_reading_ahead_protects_a_protected_group_member_of_a_later_read_when_its_read_is_refused()
 {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, data, config, held, kept_seq, demoted_seq) =
        demotions_held_then_one_put_in_a_protected_group(dir.path()).await;

    let mut cut = data.clone();
    cut.directory.identities.truncate(1);
    write_directory(dir.path(), &cut);
    let store = Store::open(&config.state.path).unwrap();
    let ahead = approval::read_ahead(&config, &store, held.run_id, &Only::All)
        .await
        .unwrap()
        .expect("held demotions are read for");
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
    assert!(approval.directory_note.is_some(), "{approval:?}");
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
