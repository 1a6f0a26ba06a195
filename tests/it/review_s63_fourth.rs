//! Session 63 review (helper fourth): `explain` beside the plan for a deleted
//! person's remembered duplicate whose linked account is gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::{DisputedCandidate, DriftKind, LinkMethod};

use crate::review_s53_explain::{Scenario, account, actions_on, section};

/// Ann was linked to `a1`; `a2` matched her too and was remembered as her
/// duplicate; retention deleted `a1`. Bob, also deleted, is remembered as
/// disputing `a2`. The plan disputes both (whichever came first in the store
/// would otherwise have it): `explain a2` must show the dispute, not "a
/// duplicate of identity p0's linked account", which the plan does not act by.
#[test]
fn a_duplicate_another_leaver_remembers_too_is_explained_as_disputed() {
    let mut world = Scenario {
        extra: "",
        identities: vec![],
        accounts: vec![account("a2", "ann@ex.com", None, false)],
        groups: vec![],
        links: vec![],
        departed: vec![("p0", "a1", "ann")],
    }
    .store();
    world
        .store
        .replace_disputed_candidates(&[
            DisputedCandidate {
                identity_id: "p0".into(),
                user_name: "ann".into(),
                account_id: "a2".into(),
                method: LinkMethod::Email,
                duplicate_of: Some("a1".into()),
                email: None,
            },
            DisputedCandidate {
                identity_id: "p1".into(),
                user_name: "bob".into(),
                account_id: "a2".into(),
                method: LinkMethod::UserName,
                duplicate_of: None,
                email: None,
            },
        ])
        .unwrap();
    let plan = world.plan();
    assert!(actions_on(&plan, "a2").is_empty(), "{plan:?}");
    assert!(
        plan.drift
            .iter()
            .any(|d| d.kind == DriftKind::DisputedMatch),
        "{plan:?}"
    );
    let text = world.explain("a2");
    assert!(!section(&text, "Disputed match").is_empty(), "{text}");
    assert!(
        !text.contains("a duplicate of identity p0's linked account"),
        "{text}"
    );
}

/// As above, but Ann has two duplicates, `a2` and `a3`, and only `a3` is
/// remembered for Bob too: the plan disputes Ann whole, `a2` included (a
/// `link` must say which is hers). `explain a2` must show that dispute, not
/// `a2` as her settled duplicate.
#[test]
fn a_leavers_unshared_duplicate_is_explained_as_disputed_when_another_is_shared() {
    let mut world = Scenario {
        extra: "",
        identities: vec![],
        accounts: vec![
            account("a2", "ann@ex.com", None, false),
            account("a3", "ann2@ex.com", None, false),
        ],
        groups: vec![],
        links: vec![],
        departed: vec![("p0", "a1", "ann")],
    }
    .store();
    let remembered =
        |identity: &str, name: &str, account: &str, of: Option<&str>| DisputedCandidate {
            identity_id: identity.into(),
            user_name: name.into(),
            account_id: account.into(),
            method: LinkMethod::Email,
            duplicate_of: of.map(Into::into),
            email: None,
        };
    world
        .store
        .replace_disputed_candidates(&[
            remembered("p0", "ann", "a2", Some("a1")),
            remembered("p0", "ann", "a3", Some("a1")),
            remembered("p1", "bob", "a3", None),
        ])
        .unwrap();
    let plan = world.plan();
    assert!(actions_on(&plan, "a2").is_empty(), "{plan:?}");
    assert!(
        plan.drift
            .iter()
            .any(|d| d.kind == DriftKind::DisputedMatch && d.identity_id.as_deref() == Some("p0")),
        "{plan:?}"
    );
    let text = world.explain("a2");
    assert!(!section(&text, "Disputed match").is_empty(), "{text}");
    assert!(
        !text.contains("a duplicate of identity p0's linked account"),
        "{text}"
    );
}

/// Ann's linked account `a1` is still in the workspace, but unlinked
/// (`unlink` took the decision back): the plan disputes her again, and
/// `explain a2` shows that dispute, not `a2` as her settled duplicate.
#[test]
fn a_duplicate_whose_linked_account_is_present_but_unlinked_is_explained_as_disputed() {
    let mut world = Scenario {
        extra: "",
        identities: vec![],
        accounts: vec![
            account("a1", "ann.old@ex.com", None, false),
            account("a2", "ann@ex.com", None, false),
        ],
        groups: vec![],
        links: vec![],
        departed: vec![("p0", "a1", "ann")],
    }
    .store();
    world
        .store
        .replace_disputed_candidates(&[DisputedCandidate {
            identity_id: "p0".into(),
            user_name: "ann".into(),
            account_id: "a2".into(),
            method: LinkMethod::Email,
            duplicate_of: Some("a1".into()),
            email: None,
        }])
        .unwrap();
    let plan = world.plan();
    assert!(actions_on(&plan, "a2").is_empty(), "{plan:?}");
    let text = world.explain("a2");
    assert!(!section(&text, "Disputed match").is_empty(), "{text}");
    assert!(!text.contains("since gone from the workspace"), "{text}");
}
