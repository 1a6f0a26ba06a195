//! Session 55: a leaver's account that `safety.protected` keeps for good. The
//! plan never touches a protected account, and nothing else listed it: a
//! reconcile's report read "in sync" while someone who left kept access (a
//! former admin's account, or one a leaver renamed into a protected name).
//! Now every run lists it under PROTECTED LEAVERS, the state is drift, the
//! digest counts it, and `reconcile` says on stderr what ends the access.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::ProtectedLeaver;
use seatwarden::report::{self, State};

use crate::qa_cli::seatwarden;
use crate::review_s48_protected_link::{
    account_in, configured, digest_of, findings, linked, quiet_report, reconcile,
    reconciled_daemon_metrics, sandbox, user,
};

/// Ann left; her account, linked to her, was renamed into the protected
/// pattern. The reconcile leaves it active (protected accounts are never in a
/// plan) and says so every run: in the report, its headline and state, and on
/// the command's stderr, with the exit code of a run that did its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leavers_account_renamed_into_a_protected_name_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(vec![
        linked("w1", "ops-admin@example.com", "00u1"),
        linked("w2", "bo@example.com", "00u2"),
    ])
    .await;
    // Ann left; Bo stays. `safety` is appended to the [safety] table.
    let config = |safety: &str| {
        configured(
            dir.path(),
            sandbox.base_url().as_str(),
            serde_json::json!([
                user(
                    "00u1",
                    "ann@example.com",
                    "ann@example.com",
                    "DEPROVISIONED",
                    &[]
                ),
                user("00u2", "bo@example.com", "bo@example.com", "ACTIVE", &[]),
            ]),
            &format!("[safety]\nsettle = \"0s\"\n{safety}"),
        )
    };
    let protecting = config("protected = [\"*-admin@example.com\"]\n");
    let report = reconcile(&protecting).await;
    assert!(account_in(&sandbox, "w1").active, "{report:#?}");
    assert_eq!(
        report.safety.protected_leavers,
        [ProtectedLeaver {
            account_id: "w1".into(),
            user_name: "ops-admin@example.com".into(),
            identity_id: "00u1".into(),
            why: "identity is deprovisioned in the directory".into(),
        }]
    );
    assert_eq!(State::of(&report), State::Drift);
    let said = findings(&report);
    assert!(
        said.starts_with(
            "1 leaver's account kept active by safety.protected — see PROTECTED LEAVERS\n"
        ),
        "{said}"
    );
    assert!(
        said.contains(
            "  account w1 (ops-admin@example.com), identity 00u1: identity is deprovisioned in \
             the directory\n"
        ),
        "{said}"
    );

    // By hand, again: listed every run, said on stderr, exit 0.
    let (ok, out, err) = seatwarden(&dir.path().join("seatwarden.toml"), &["reconcile"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("PROTECTED LEAVERS"), "{out}");
    assert!(
        err.contains(
            "a leaver keeps access through an account safety.protected names \
             (ops-admin@example.com): seatwarden never deactivates it"
        ),
        "{err}"
    );
    assert!(account_in(&sandbox, "w1").active);

    // What the report says settles it: out of safety.protected, the next
    // reconcile deactivates it, and nothing is left to say.
    let config = config("");
    let settled = reconcile(&config).await;
    assert!(!account_in(&sandbox, "w1").active, "{settled:#?}");
    assert!(settled.safety.protected_leavers.is_empty(), "{settled:#?}");
    assert_eq!(State::of(&settled), State::InSync);
    let again = reconcile(&config).await;
    assert_eq!(report::headline(&again, "seatwarden").1, "in sync");
}

/// The digest of a period whose newest report lists a protected leaver is not
/// "in sync": its headline counts them, as the report's own does.
#[test]
fn the_digest_counts_protected_leavers() {
    let mut report = quiet_report();
    report.safety.protected_leavers.push(ProtectedLeaver {
        account_id: "w1".into(),
        user_name: "ops-admin@example.com".into(),
        identity_id: "00u1".into(),
        why: "identity is deprovisioned in the directory".into(),
    });
    let digest = digest_of(&report);
    assert_eq!(digest.state, State::Drift, "{}", digest.headline);
    assert_eq!(
        digest.headline,
        "1 leaver's account kept active by safety.protected (PROTECTED LEAVERS)"
    );
}

/// The daemon gauges it: `seatwarden_safety_finding{finding="protected_leavers"}`
/// is 1 while the last reconcile listed one (the demo's Olivia left; her account
/// is protected here), so the shipped rule alerts on it. The sweep ends a
/// protected person's episode, so no overdue deprovision would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_gauges_protected_leavers() {
    use crate::review_s41_ops::sample;
    let metrics =
        reconciled_daemon_metrics("breakglass@example.com,olivia.haddad@example.com", |_| {}).await;
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="protected_leavers"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="protected_by_person"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
}
