//! Safety rules between plan and apply (design brief, pipeline step 4). The guard
//! marks actions held; it never adds, removes or reorders actions, so a held action
//! keeps its `seq` and can be approved later as it is.
//!
//! Rules, applied in order (an action already held keeps its first reason):
//! 1. An incomplete directory snapshot holds every deprovision (invariant 3).
//! 2. More deprovisions than the limit hold *all* deprovisions: a mass deprovision is
//!    far more likely a source fault than a real event, and letting the first N
//!    through would still do the damage. The limit is `max_deprovisions`, tightened
//!    to `max_deprovision_percent` of the managed accounts once there are at least
//!    `min_population_for_percent` of them (small workspaces would otherwise hit the
//!    percentage with one leaver).
//! 3. The last active Owner is never deactivated, deleted or demoted.
//!
//! "Managed accounts" are the workspace accounts linked or matched to a directory
//! identity; the caller counts them and passes them in [`GuardInput`].
//!
//! Protected accounts need no rule here: the plan never names them.

use serde::{Deserialize, Serialize};

use crate::model::{ActionKind, HoldReason, Plan, Role, WorkspaceSnapshot};
use crate::policy::FxHashMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardSettings {
    pub max_deprovisions: usize,
    pub max_deprovision_percent: f64,
    pub min_population_for_percent: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardInput {
    /// Whether the directory snapshot the plan came from was read whole.
    pub directory_complete: bool,
    /// Workspace accounts linked or matched to a directory identity.
    pub managed_accounts: usize,
}

/// The number of deprovisions a run may make without approval.
pub fn deprovision_limit(settings: &GuardSettings, managed: usize) -> usize {
    if managed < settings.min_population_for_percent {
        return settings.max_deprovisions;
    }
    let share = (settings.max_deprovision_percent / 100.0 * managed as f64).floor();
    // NaN and negative shares mean "no percentage allowance" rather than a wrap.
    let by_percent = if share.is_finite() && share > 0.0 {
        share as usize
    } else {
        0
    };
    settings.max_deprovisions.min(by_percent)
}

/// Marks actions held (sets `Action::held`); never adds or removes actions.
pub fn guard(
    mut plan: Plan,
    workspace: &WorkspaceSnapshot,
    settings: &GuardSettings,
    input: &GuardInput,
) -> Plan {
    if !input.directory_complete {
        for action in &mut plan.actions {
            if action.kind.is_deprovision() && action.held.is_none() {
                action.held = Some(HoldReason::IncompleteDirectory);
            }
        }
    }

    let planned = plan
        .actions
        .iter()
        .filter(|a| a.kind.is_deprovision())
        .count();
    let limit = deprovision_limit(settings, input.managed_accounts);
    if planned > limit {
        for action in &mut plan.actions {
            if action.kind.is_deprovision() && action.held.is_none() {
                action.held = Some(HoldReason::DeprovisionThreshold {
                    planned,
                    limit,
                    managed: input.managed_accounts,
                });
            }
        }
    }

    hold_last_owner(&mut plan, workspace);
    plan
}

/// Only existing active Owners count: a planned promotion or reactivation may still
/// fail at apply time, so it must not license removing the Owner we have.
fn hold_last_owner(plan: &mut Plan, workspace: &WorkspaceSnapshot) {
    // Account id → (lowest seq, indices, is an Owner) of the runnable actions that
    // would remove it (as an Owner, if it is one).
    let mut removals: FxHashMap<&str, (u32, Vec<usize>, bool)> = FxHashMap::default();
    for (index, action) in plan.actions.iter().enumerate() {
        if action.held.is_some() {
            continue;
        }
        let removed = match &action.kind {
            ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id } => {
                Some(account_id)
            }
            ActionKind::SetRole { account_id, to, .. } if *to != Role::Owner => Some(account_id),
            _ => None,
        };
        if let Some(account_id) = removed {
            let entry =
                removals
                    .entry(account_id.as_str())
                    .or_insert((action.seq, Vec::new(), false));
            entry.0 = entry.0.min(action.seq);
            entry.1.push(index);
        }
    }
    // Every Owner would go only if each one has a removal; the first Owner without
    // one settles it.
    let mut any_owner = false;
    for account in &workspace.accounts {
        if account.active && account.role() == Some(Role::Owner) {
            any_owner = true;
            match removals.get_mut(account.id.as_str()) {
                Some(entry) => entry.2 = true,
                None => return,
            }
        }
    }
    if !any_owner {
        return;
    }
    // Keep the Owner whose removal comes first in the plan (ties: lowest account id).
    let keep = removals
        .iter()
        .filter(|(_, (_, _, owner))| *owner)
        .min_by_key(|(id, (seq, _, _))| (*seq, **id))
        .map(|(_, (_, indices, _))| indices.clone())
        .unwrap_or_default();
    for index in keep {
        if let Some(action) = plan.actions.get_mut(index) {
            action.held = Some(HoldReason::LastOwner);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{Account, Action, DriftKind};

    fn account(id: &str, role: &str, active: bool) -> Account {
        Account {
            id: id.into(),
            user_name: format!("{id}@ex.com"),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active,
            roles: vec![role.into()],
        }
    }

    fn action(seq: u32, kind: ActionKind) -> Action {
        Action {
            seq,
            kind,
            reason: DriftKind::StaleAccess,
            subject: format!("s{seq}"),
            identity_id: None,
            detail: String::new(),
            held: None,
        }
    }

    fn deactivate(id: &str) -> ActionKind {
        ActionKind::Deactivate {
            account_id: id.into(),
        }
    }

    fn plan_of(kinds: Vec<ActionKind>) -> Plan {
        Plan {
            actions: kinds
                .into_iter()
                .enumerate()
                .map(|(i, k)| action(u32::try_from(i).unwrap(), k))
                .collect(),
            ..Plan::default()
        }
    }

    fn generous() -> GuardSettings {
        GuardSettings {
            max_deprovisions: 100,
            max_deprovision_percent: 100.0,
            min_population_for_percent: 0,
        }
    }

    const COMPLETE: GuardInput = GuardInput {
        directory_complete: true,
        managed_accounts: 100,
    };

    fn held(plan: &Plan) -> Vec<Option<HoldReason>> {
        plan.actions.iter().map(|a| a.held.clone()).collect()
    }

    #[test]
    fn incomplete_directory_holds_every_deprovision_only() {
        let plan = plan_of(vec![
            deactivate("1"),
            ActionKind::Delete {
                account_id: "2".into(),
            },
            ActionKind::Reactivate {
                account_id: "3".into(),
            },
        ]);
        let input = GuardInput {
            directory_complete: false,
            ..COMPLETE
        };
        let out = guard(
            plan.clone(),
            &WorkspaceSnapshot::default(),
            &generous(),
            &input,
        );
        assert_eq!(
            held(&out),
            [
                Some(HoldReason::IncompleteDirectory),
                Some(HoldReason::IncompleteDirectory),
                None
            ]
        );
        let out = guard(plan, &WorkspaceSnapshot::default(), &generous(), &COMPLETE);
        assert!(out.held().next().is_none());
    }

    #[test]
    fn limit_uses_percentage_only_above_the_minimum_population() {
        let settings = GuardSettings {
            max_deprovisions: 10,
            max_deprovision_percent: 5.0,
            min_population_for_percent: 50,
        };
        assert_eq!(deprovision_limit(&settings, 49), 10);
        assert_eq!(deprovision_limit(&settings, 50), 2);
        assert_eq!(deprovision_limit(&settings, 1000), 10);
        assert_eq!(deprovision_limit(&settings, 119), 5);
        let nan = GuardSettings {
            max_deprovision_percent: f64::NAN,
            ..settings
        };
        assert_eq!(deprovision_limit(&nan, 100), 0);
    }

    #[test]
    fn over_the_threshold_all_deprovisions_are_held() {
        let settings = GuardSettings {
            max_deprovisions: 2,
            max_deprovision_percent: 100.0,
            min_population_for_percent: 1000,
        };
        let two = plan_of(vec![deactivate("1"), deactivate("2")]);
        let out = guard(two, &WorkspaceSnapshot::default(), &settings, &COMPLETE);
        assert!(out.held().next().is_none(), "at the limit is fine");

        let three = plan_of(vec![
            deactivate("1"),
            deactivate("2"),
            ActionKind::Delete {
                account_id: "3".into(),
            },
            ActionKind::CreateGroup {
                display_name: "g".into(),
            },
        ]);
        let out = guard(
            three.clone(),
            &WorkspaceSnapshot::default(),
            &settings,
            &COMPLETE,
        );
        let reason = HoldReason::DeprovisionThreshold {
            planned: 3,
            limit: 2,
            managed: 100,
        };
        assert_eq!(
            held(&out),
            [
                Some(reason.clone()),
                Some(reason.clone()),
                Some(reason),
                None
            ]
        );
        assert_eq!(out.actions.len(), three.actions.len());
        assert_eq!(
            out.actions
                .iter()
                .map(|a| (a.seq, &a.kind))
                .collect::<Vec<_>>(),
            three
                .actions
                .iter()
                .map(|a| (a.seq, &a.kind))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_last_active_owner_is_kept() {
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("o1", "Owner", true),
                account("o2", "owner", true),
                account("o3", "Owner", false),
                account("e", "Editor", true),
            ],
            groups: vec![],
        };
        // Removing one of two Owners is fine.
        let one = plan_of(vec![deactivate("o1"), deactivate("e")]);
        let out = guard(one, &workspace, &generous(), &COMPLETE);
        assert!(out.held().next().is_none());

        // Removing both: the removal planned first is held.
        let both = plan_of(vec![
            deactivate("e"),
            ActionKind::SetRole {
                account_id: "o2".into(),
                from: vec!["owner".into()],
                to: Role::Editor,
            },
            ActionKind::Delete {
                account_id: "o1".into(),
            },
            ActionKind::Reactivate {
                account_id: "o3".into(),
            },
        ]);
        let out = guard(both, &workspace, &generous(), &COMPLETE);
        assert_eq!(held(&out), [None, Some(HoldReason::LastOwner), None, None]);
    }

    #[test]
    fn held_removals_do_not_count_against_the_last_owner() {
        let workspace = WorkspaceSnapshot {
            accounts: vec![account("o1", "Owner", true), account("o2", "Owner", true)],
            groups: vec![],
        };
        let plan = plan_of(vec![
            deactivate("o1"),
            ActionKind::SetRole {
                account_id: "o2".into(),
                from: vec!["Owner".into()],
                to: Role::Viewer,
            },
        ]);
        let input = GuardInput {
            directory_complete: false,
            ..COMPLETE
        };
        let out = guard(plan, &workspace, &generous(), &input);
        assert_eq!(
            held(&out),
            [Some(HoldReason::IncompleteDirectory), None],
            "o1 stays an Owner, so o2 may be demoted"
        );
    }

    #[test]
    fn promotion_to_owner_is_not_a_removal() {
        let workspace = WorkspaceSnapshot {
            accounts: vec![account("o1", "Owner", true)],
            groups: vec![],
        };
        let plan = plan_of(vec![ActionKind::SetRole {
            account_id: "o1".into(),
            from: vec!["Owner".into()],
            to: Role::Owner,
        }]);
        let out = guard(plan, &workspace, &generous(), &COMPLETE);
        assert!(out.held().next().is_none());
    }
}
