//! Session 62, second helper's review.
//!
//! - An approved deprovision whose write failed, then rejected (`reject`
//!   takes the approval back and holds the episode): `status`, the digest
//!   and the overdue alert said it was "held by the guard, waiting for
//!   `approve RUN` of the run holding it", though no run held it and a
//!   person had just refused it. `Store::decided_holds` looked only at rows
//!   still `held`; the approval had released this one (`failed`, kept back).
//! - Root refusing a state database of its own in the service's folder (made
//!   by a command root ran there first, before root refused to) told the
//!   operator to run as the service's user, which cannot open a root file
//!   (0600): a dead end. The refusal now says to give it to the folder's owner
//!   (`chown`), when it is a file of its own (one link), not a hard link.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::report::digest::HoldDecided;

use crate::fixtures::seatwarden_in;
use crate::review_s60_ops::{as_service, root_or_skip, service_owned_state};
use crate::review_s62_status::{bob_approved_kept_back_then_rejected, status_now};

/// Bob's deactivation, approved and kept back unsent, rejected in its run:
/// his open episode is told rejected, not waiting for an approval. Before,
/// `hold_decided` was `None` and the line sent the reader to `approve RUN`.
#[tokio::test]
async fn an_approval_taken_back_by_a_rejection_is_told_rejected_not_waiting() {
    let (config, _dir, run) = bob_approved_kept_back_then_rejected().await;
    let status = status_now(&config);
    let bob = status
        .deprovisions
        .open
        .iter()
        .find(|line| line.identity_id == "00u2")
        .unwrap_or_else(|| panic!("Bob's episode is not open: {:?}", status.deprovisions));
    assert!(
        matches!(bob.hold_decided, Some(HoldDecided::Rejected { run: rejected, .. }) if rejected == run),
        "{:?} / {:?}",
        bob.hold,
        bob.hold_decided
    );
    let text = seatwarden::daemon::status::render_text(&status);
    assert!(!text.contains("approve RUN"), "{text}");
    assert!(text.contains("was rejected"), "{text}");
}

/// The service's state database given to root (as a command root ran first
/// left it): root's `status` refuses it and says to `chown` it to the
/// folder's owner; done, the service's user opens it. Before, the refusal
/// only said to run as that user, which could not open the file.
#[test]
fn root_refusing_its_own_file_in_the_services_folder_says_to_give_it_back() {
    if !root_or_skip("root_refusing_its_own_file_in_the_services_folder_says_to_give_it_back") {
        return;
    }
    let (dir, database) = service_owned_state();
    std::os::unix::fs::chown(&database, Some(0), Some(0)).unwrap();
    let (code, err) = seatwarden_in(dir.path(), &[], &["status"]);
    assert_eq!(code, Some(1), "{err}");
    let chown = format!(
        "chown 65534:65534 {}`",
        seatwarden::model::shell_word(database.to_str().unwrap())
    );
    assert!(
        err.contains("state.db belongs to uid 0") && err.contains(&chown),
        "{err}"
    );
    std::os::unix::fs::chown(&database, Some(65534), Some(65534)).unwrap();
    let (code, err) = as_service(dir.path(), &["status"]);
    assert_eq!(code, Some(0), "{err}");
}
