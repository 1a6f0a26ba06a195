//! Session 57: small things the session before noticed and left alone.
//! `check-config` warns of a 24 h limit below the per-run limit of its class.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::qa_cli::seatwarden;
use crate::review_s48_protected_link::configured;

/// A 24 h limit tighter than the per-run one (here the per-run count raised past
/// the 24 h default, and a percentage typed the wrong way round) leaves the
/// per-run limit unreachable: `check-config` passes, and warns of each, naming
/// both keys, their values and the file.
#[test]
fn check_config_warns_of_a_24h_limit_below_the_per_run_one() {
    let dir = tempfile::tempdir().unwrap();
    configured(
        dir.path(),
        "https://workspace.example/scim/v2",
        serde_json::json!([{"id": "p1", "userName": "p1@example.com", "status": "ACTIVE"}]),
        "[safety]\nmax_deprovisions = 60\n\
         max_membership_removal_percent = 10\nmax_membership_removal_percent_per_day = 1\n",
    );
    let path = dir.path().join("seatwarden.toml");
    let (ok, _, err) = seatwarden(&path, &["check-config"]);
    assert!(ok, "{err}");
    for warning in [
        format!(
            "warning: safety.max_deprovisions_per_day = 50 (the default) is below \
             safety.max_deprovisions = 60 in {}: the 24 h limit is met first, so the per-run \
             limit can never be reached; set max_deprovisions_per_day to 60 or more, or \
             max_deprovisions to 50 or less, whichever was meant",
            path.display()
        ),
        format!(
            "warning: safety.max_membership_removal_percent_per_day = 1 is below \
             safety.max_membership_removal_percent = 10 (the default) in {}",
            path.display()
        ),
    ] {
        assert!(err.contains(&warning), "{warning:?} not in {err}");
    }
}
