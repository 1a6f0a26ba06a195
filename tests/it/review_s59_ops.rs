//! Session 59: review of session 58's operator-facing changes. A run refused
//! by the source check before seatwarden kept the check's words (migration
//! 20) has no reason stored: `report --run` says so, and where it was said.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::review_s58_approve2::a_refused_run_without_a_report;

/// A run refused (and failed before its report) by a build before migration
/// 20 is marked refused with no reason: `report --run` said nothing of the
/// refusal at all, though `export` and `explain` send the operator there for it.
#[test]
fn report_of_a_refused_run_from_before_its_reason_was_kept_says_it_was_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (refused, _) = a_refused_run_without_a_report(dir.path());
    // As migration 20 leaves a run an older build refused: no reason beside the flag.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    db.execute(
        "UPDATE runs SET directory_refused_why = NULL WHERE id = ?1",
        [refused],
    )
    .unwrap();
    drop(db);

    let (code, stderr) =
        crate::fixtures::seatwarden_in(dir.path(), &[], &["report", "--run", &refused.to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the workspace answered 503"), "{stderr}");
    assert!(
        stderr.contains(
            "the source check refused its directory (why is not recorded: the seatwarden \
             that refused it did not keep it; its log says why, at \"directory snapshot \
             rejected\")"
        ),
        "{stderr}"
    );
}
