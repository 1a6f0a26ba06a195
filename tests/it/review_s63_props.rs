//! Session 63: what the property tests found once their generators produced
//! remembered disputes, links made by hand, departed people, time-bound
//! exceptions, group names in other spellings and look-alike groups. Each
//! test is the minimised counterexample, as the scenario a user would meet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::{ActionKind, DisputedCandidate, LinkMethod};

use crate::review_s53_explain::{Scenario, account, actions_on, section};

/// A person deleted from the directory while their deprovision was open is
/// linked to one inactive account; the last reconcile remembered a second,
/// active account as a disputed candidate of theirs (by externalId). The plan
/// deactivates that second account as the departed person's duplicate.
/// `explain` of it said "no directory identity justifies this account; an
/// orphan, left as it is and reported every run" and "no directory identity
/// matches the account below", beside a Next run that deactivates it: an
/// operator under `unmatched_accounts = "report"` read that the account would
/// be left alone, and it was not. (Found by `explain_tells_what_the_plan_does`
/// once its generator remembered disputes.)
#[test]
fn a_departed_persons_remembered_duplicate_is_explained_with_them() {
    let mut world = Scenario {
        extra: "",
        identities: vec![],
        accounts: vec![
            account("a1", "u0@example.com", None, true),
            account("a2", "u0@example.com", None, false),
        ],
        groups: vec![],
        links: vec![("p0", "a2")],
        departed: vec![("p0", "a2", "u0@example.com")],
    }
    .store();
    world
        .store
        .replace_disputed_candidates(&[DisputedCandidate {
            identity_id: "p0".into(),
            user_name: "u0@example.com".into(),
            account_id: "a1".into(),
            method: LinkMethod::ExternalId,
            duplicate_of: None,
            email: None,
        }])
        .unwrap();
    let plan = world.plan();
    assert!(
        actions_on(&plan, "a1")
            .iter()
            .any(|k| matches!(k, ActionKind::Deactivate { .. })),
        "{plan:?}"
    );
    let text = world.explain("a1");
    assert_eq!(
        section(&text, "Scope"),
        [
            "  no access: a duplicate of identity p0's linked account a2, and p0 is not in the \
             directory snapshot (deleted from the directory): deprovisioned with it"
        ],
        "{text}"
    );
    let link = section(&text, "Link").join("\n");
    assert!(
        link.contains("a duplicate of identity p0") && link.contains("linked to account a2"),
        "{text}"
    );
    assert!(
        section(&text, "Next run")[0].starts_with("  deactivate — "),
        "{text}"
    );
}

/// As above, with an exception in force naming the departed person's
/// directory userName: the plan keeps the duplicate with them, listed as
/// excepted. `explain` of it said it was an orphan and nothing of the
/// exception, so the operator could not tell why it stays active, nor that it
/// goes with the linked account when the exception ends.
#[test]
fn a_departed_persons_remembered_duplicate_kept_by_an_exception_is_told_so() {
    let mut world = Scenario {
        extra: "[[safety.exceptions]]\nuser_name = \"u0@example.com\"\n\
                until = \"2026-12-20\"\nreason = \"notice period\"\n",
        identities: vec![],
        accounts: vec![
            account("a0", "other@example.com", None, true),
            account("a1", "u0@example.com", None, false),
        ],
        groups: vec![],
        links: vec![("p0", "a1")],
        departed: vec![("p0", "a1", "u0@example.com")],
    }
    .store();
    world
        .store
        .replace_disputed_candidates(&[DisputedCandidate {
            identity_id: "p0".into(),
            user_name: "u0@example.com".into(),
            account_id: "a0".into(),
            method: LinkMethod::ExternalId,
            duplicate_of: None,
            email: None,
        }])
        .unwrap();
    let plan = world.plan();
    assert!(actions_on(&plan, "a0").is_empty(), "{plan:?}");
    assert_eq!(plan.excepted.len(), 1, "{plan:?}");
    let text = world.explain("a0");
    let scope = section(&text, "Scope");
    assert_eq!(
        scope[0],
        "  no access: a duplicate of identity p0's linked account a1, and p0 is not in the \
         directory snapshot (deleted from the directory)",
        "{text}"
    );
    assert!(
        scope[1].starts_with("  exception: kept as it is until")
            && scope[1].contains("safety.exceptions for u0@example.com"),
        "{text}"
    );
    assert_eq!(section(&text, "Next run"), ["  nothing"], "{text}");
}

/// Three accounts share an active person's userName, so the plan disputes
/// them (no action). One of them the last reconcile remembered as a disputed
/// candidate of someone since deleted from the directory, which the plan now
/// forgets. `explain` of that account went by the stale memory: it showed the
/// deleted person's dispute, found none, and called the account "an orphan,
/// deactivated by the next reconcile" under `unmatched_accounts =
/// "deactivate"`, beside a Next run of nothing. It shows the dispute the plan
/// holds it by.
#[test]
fn an_account_disputed_now_is_not_explained_by_a_dispute_the_plan_forgot() {
    let mut world = Scenario {
        extra: "[policy]\nunmatched_accounts = \"deactivate\"\n",
        identities: vec![crate::review_s53_explain::identity(
            "p0",
            "u0@example.com",
            seatwarden::model::IdentityStatus::Active,
            &[],
        )],
        accounts: vec![
            account("a0", "u0@example.com", None, false),
            account("a1", "u0@example.com", None, false),
            account("a2", "u0@example.com", None, true),
        ],
        groups: vec![],
        links: vec![("p1", "a0")],
        departed: vec![("p1", "a0", "u1@example.com")],
    }
    .store();
    world
        .store
        .replace_disputed_candidates(&[DisputedCandidate {
            identity_id: "p1".into(),
            user_name: "u1@example.com".into(),
            account_id: "a2".into(),
            method: LinkMethod::ExternalId,
            duplicate_of: None,
            email: None,
        }])
        .unwrap();
    let plan = world.plan();
    assert!(actions_on(&plan, "a2").is_empty(), "{plan:?}");
    let text = world.explain("a2");
    let scope = section(&text, "Scope").join("\n");
    assert!(!scope.contains("orphan"), "{text}");
    assert!(!text.contains("(id p1) with a disputed match"), "{text}");
    assert!(!section(&text, "Disputed match").is_empty(), "{text}");
    assert_eq!(section(&text, "Next run"), ["  nothing"], "{text}");
}

/// The last reconcile remembered one active account as a disputed candidate
/// of two people: one the directory still has (the plan forgets that
/// candidate), one since deleted (the plan keeps them as a disputed leaver
/// and deactivates nothing until someone links them). `explain` of the
/// account took the first remembered person, found them present, and showed
/// no dispute at all: "an orphan, deactivated by the next reconcile" under
/// `unmatched_accounts = "deactivate"`, beside a Next run of nothing.
#[test]
fn a_disputed_leavers_account_is_explained_by_their_dispute_not_a_forgotten_one() {
    let mut world = Scenario {
        extra: "[policy]\nunmatched_accounts = \"deactivate\"\n",
        identities: vec![crate::review_s53_explain::identity(
            "p0",
            "u0@example.com",
            seatwarden::model::IdentityStatus::Active,
            &[],
        )],
        accounts: vec![
            account("a0", "other@example.com", None, true),
            account("a1", "u0@example.com", Some("p0"), true),
        ],
        groups: vec![],
        links: vec![("p0", "a1")],
        departed: vec![],
    }
    .store();
    let candidate = |identity_id: &str, user_name: &str| DisputedCandidate {
        identity_id: identity_id.into(),
        user_name: user_name.into(),
        account_id: "a0".into(),
        method: LinkMethod::ExternalId,
        duplicate_of: None,
        email: None,
    };
    world
        .store
        .replace_disputed_candidates(&[
            candidate("p0", "u0@example.com"),
            candidate("p1", "u1@example.com"),
        ])
        .unwrap();
    let plan = world.plan();
    assert!(actions_on(&plan, "a0").is_empty(), "{plan:?}");
    assert_eq!(plan.disputed_leavers.len(), 1, "{plan:?}");
    let text = world.explain("a0");
    let scope = section(&text, "Scope").join("\n");
    assert!(!scope.contains("orphan"), "{text}");
    assert!(
        section(&text, "Directory record")[0].contains("(id p1) with a disputed match"),
        "{text}"
    );
    assert_eq!(section(&text, "Next run"), ["  nothing"], "{text}");
}

/// Ann was linked to `a1`; `a2` matched her too and was remembered as her
/// duplicate. The directory deleted her, and retention deleted `a1`: the plan
/// keeps `a2` hers (session 63, `DisputedCandidate::duplicate_of`), down her
/// deprovisioning path. `explain a2` said "deleted since a run saw ann with a
/// disputed match" and "an orphan, left as it is and reported every run as
/// orphaned" of an account the plan neither disputes nor reports.
fn a_leavers_duplicate_after_the_linked_account_is_gone(
    extra: &'static str,
) -> super::review_s53_explain::World {
    let mut world = Scenario {
        extra,
        identities: vec![],
        accounts: vec![account("a2", "ann@ex.com", None, false)],
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
    world
}

#[test]
fn a_leavers_duplicate_is_explained_as_theirs_once_the_linked_account_is_gone() {
    let world = a_leavers_duplicate_after_the_linked_account_is_gone("");
    let plan = world.plan();
    assert!(actions_on(&plan, "a2").is_empty(), "{plan:?}");
    assert!(plan.drift.is_empty(), "{plan:?}");
    let text = world.explain("a2");
    assert_eq!(
        section(&text, "Directory record"),
        [
            "  not in the directory snapshot: deleted since a run saw ann (id p0), who was \
             linked to account a1, since gone from the workspace; the account below was theirs \
             too, a duplicate"
        ],
        "{text}"
    );
    assert_eq!(
        section(&text, "Scope"),
        [
            "  no access: a duplicate of identity p0's linked account a1, gone from the \
             workspace since, and p0 is not in the directory snapshot (deleted from the \
             directory)"
        ],
        "{text}"
    );
    assert!(
        section(&text, "Link")[0].contains("a duplicate of identity p0")
            && section(&text, "Link")[0].contains("whose linked account a1 is gone"),
        "{text}"
    );
    assert!(
        !text.contains("orphan") && !text.contains("Disputed match"),
        "{text}"
    );
    assert_eq!(section(&text, "Next run"), ["  nothing"], "{text}");
    // Asked by the person's id, the same account is told.
    let by_person = world.explain("p0");
    assert_eq!(
        by_person.split_once('\n').map(|(_, rest)| rest),
        text.split_once('\n').map(|(_, rest)| rest)
    );
}

#[test]
fn a_leavers_duplicate_deleted_by_retention_is_explained_as_deprovisioned_as_theirs() {
    let world = a_leavers_duplicate_after_the_linked_account_is_gone(
        "[deprovision]\naction = \"delete\"\ndelete_after = \"0s\"\n",
    );
    let plan = world.plan();
    assert!(
        actions_on(&plan, "a2")
            .iter()
            .any(|k| matches!(k, ActionKind::Delete { .. })),
        "{plan:?}"
    );
    let text = world.explain("a2");
    let scope = section(&text, "Scope");
    assert!(
        scope[0].starts_with("  no access: a duplicate of identity p0's linked account a1")
            && scope[0].ends_with(": deprovisioned as theirs"),
        "{text}"
    );
    assert!(!text.contains("orphan"), "{text}");
    assert!(
        section(&text, "Next run")[0].starts_with("  delete"),
        "{text}"
    );
}
