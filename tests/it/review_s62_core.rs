//! Session 62: counterexamples the pure core's property tests found once their
//! generators produced what later sessions added (remembered disputes,
//! time-bound exceptions, departed people, look-alike groups), each as the
//! concrete scenario a user would meet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use seatwarden::model::{
    Account, ActionKind, DirectorySnapshot, DisputedCandidate, DriftKind, Link, LinkMethod, Plan,
    Role, WorkspaceSnapshot,
};
use seatwarden::plan::{DeprovisionAction, PlanSettings, Retention, plan, simulate};
use seatwarden::policy::{PolicySettings, Protected, UnmatchedAccounts, desired_state};

fn account(id: &str, user_name: &str) -> Account {
    Account {
        id: id.to_owned(),
        user_name: user_name.to_owned(),
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active: true,
        roles: vec![],
    }
}

/// One reconcile: the plan, applied as the workspace would apply it; returns
/// the plan and what the store keeps for the next (workspace, links, remembered
/// disputes).
fn reconcile(
    directory: &DirectorySnapshot,
    state: &mut (WorkspaceSnapshot, Vec<Link>, Vec<DisputedCandidate>),
    settings: &PlanSettings,
) -> Plan {
    let policy = PolicySettings {
        scope_groups: vec![],
        default_role: Role::Viewer,
        mappings: vec![],
        manage_roles: false,
    };
    let desired = desired_state(directory, &policy);
    let (workspace, links, remembered) = state;
    let planned = plan(&desired, directory, workspace, links, remembered, settings);
    let (applied, linked) = simulate(workspace, links, &planned);
    *state = (applied, linked, planned.disputed_candidates.clone());
    planned
}

/// A person deleted from the directory whose dispute a run remembered, settled
/// by `seatwarden link` (a1 was theirs): their other account, a2, is
/// deactivated as their duplicate and waits for deletion. Once inactive it was
/// no longer remembered, so the run after next found nothing tying it to
/// anyone: reported as an orphan, taken out of its groups under
/// `unmatched_accounts = "deactivate"`, its retention clock dropped and never
/// deleted.
#[test]
fn a_departed_persons_duplicate_stays_theirs_once_deactivated() {
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let directory = DirectorySnapshot {
        identities: vec![],
        complete: true,
    };
    let state = (
        WorkspaceSnapshot {
            accounts: vec![account("a1", "ann"), account("a2", "ann@ex.com")],
            groups: vec![],
        },
        vec![Link {
            identity_id: "i1".into(),
            account_id: "a1".into(),
        }],
        vec![DisputedCandidate {
            identity_id: "i1".into(),
            user_name: "ann".into(),
            account_id: "a2".into(),
            method: LinkMethod::Email,
            duplicate_of: None,
            email: None,
        }],
    );
    for unmatched in [UnmatchedAccounts::Report, UnmatchedAccounts::Deactivate] {
        let settings = PlanSettings {
            deprovision: DeprovisionAction::Delete,
            retention: Retention {
                delete_after: chrono::TimeDelta::days(30),
                deactivated_since: Default::default(),
                now,
            },
            unmatched_accounts: unmatched,
            manage_roles: false,
            protected: Protected::default(),
            admin_command: seatwarden::model::DEFAULT_ADMIN_COMMAND.to_owned(),
        };
        let mut state = state.clone();
        let first = reconcile(&directory, &mut state, &settings);
        let deactivated: Vec<&ActionKind> = first.actions.iter().map(|a| &a.kind).collect();
        assert_eq!(
            deactivated,
            [
                &ActionKind::Deactivate {
                    account_id: "a1".into()
                },
                &ActionKind::Deactivate {
                    account_id: "a2".into()
                },
            ]
        );
        for run in 2..=4 {
            let next = reconcile(&directory, &mut state, &settings);
            assert!(next.actions.is_empty(), "run {run}: {:#?}", next.actions);
            assert!(
                !next
                    .drift
                    .iter()
                    .any(|d| d.kind == DriftKind::OrphanedAccount),
                "run {run}: {:#?}",
                next.drift
            );
            assert_eq!(next.retained, ["a1", "a2"], "run {run}");
        }
    }
}
