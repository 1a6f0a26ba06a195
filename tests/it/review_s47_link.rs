//! Session 47: `link` of a PROTECTED person to an UNPROTECTED account. A
//! reconcile judges protection on both sides: an account whose userName is
//! protected, and every account of a person whose directory userName is
//! (`plan`'s identity step flags their accounts untouchable). Linked to a
//! protected person, an ordinary account therefore drops out of every plan:
//! never deactivated, renamed, regrouped or reported again, whoever's it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
use seatwarden::model::Link;
use seatwarden::store::Store;

/// A protected admin (Eve, `admin.*@example.com`) and an account nobody in the
/// directory is (w7, a contractor's, left behind), with `unmatched_accounts =
/// "deactivate"`: the plan deactivates w7. With a link Eve → w7 the plan leaves
/// w7 alone (and writes nothing to Eve's), so the link would make an
/// unprotected account effectively protected: it is refused, with or without
/// --replace, saying what to change first. Eve's link to her own (protected)
/// account still goes through.
#[test]
fn link_refuses_an_unprotected_account_for_a_protected_person() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = first_plan_stored(
        dir.path(),
        vec![
            person("00u2", "ben@example.com", "ben@example.com"),
            person("00u5", "admin.eve@example.com", "eve@example.com"),
        ],
        vec![
            account("w2", "ben@example.com", "ben@example.com"),
            account("w5", "admin.eve@example.com", "eve@example.com"),
            account("w7", "contractor@example.com", "contractor@example.com"),
        ],
    );
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!(
            "{text}\n[policy]\nunmatched_accounts = \"deactivate\"\n\n\
             [safety]\nprotected = [\"admin.*@example.com\"]\n"
        ),
    )
    .unwrap();

    // What a reconcile would do, from the stored snapshots.
    let config =
        seatwarden::config::Config::load_with_env(&config_path, Some(Default::default())).unwrap();
    let store = Store::open(&config.state.path).unwrap();
    let run = store.latest_snapshot_run().unwrap().unwrap();
    let directory = store.load_directory_snapshot(run).unwrap().unwrap();
    let workspace = store.load_workspace_snapshot(run).unwrap().unwrap();
    drop(store);
    let desired = seatwarden::policy::desired_state(&directory, &config.policy_settings());
    let settings = seatwarden::safety::plan_settings(&config, &directory, chrono::Utc::now());
    let touches_w7 = |links: &[Link]| {
        let plan = seatwarden::plan::plan(&desired, &directory, &workspace, links, &[], &settings);
        plan.actions
            .iter()
            .any(|a| serde_json::to_string(&a.kind).unwrap().contains("\"w7\""))
    };
    assert!(touches_w7(&[]), "the orphan w7 is deactivated unlinked");
    let eve_w7 = Link {
        identity_id: "00u5".into(),
        account_id: "w7".into(),
    };
    assert!(
        !touches_w7(&[eve_w7]),
        "linked to a protected person, w7 is never written to"
    );

    for args in [
        &["link", "00u5", "w7"][..],
        &["link", "00u5", "w7", "--replace"][..],
    ] {
        let (ok, out, err) = seatwarden(&config_path, args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            err.contains(
                "identity 00u5 (admin.eve@example.com) is protected (safety.protected / \
                 protected_groups) and account w7 (contractor@example.com) is not: linked, \
                 seatwarden would never change the account again (every account of a \
                 protected person is left alone), not even when it is due to be deactivated. \
                 If the account is theirs, protect it too (or take them out of \
                 safety.protected), then run `seatwarden link 00u5 w7` again"
            ),
            "{err}"
        );
    }
    let store = Store::open(&config.state.path).unwrap();
    assert!(store.links().unwrap().is_empty());
    drop(store);
    let (ok, out, err) = seatwarden(&config_path, &["link", "00u5", "w5"]);
    assert!(ok, "{out}{err}");
}
