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

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ActionKind, HoldReason, Plan, Role, WorkspaceSnapshot};

#[derive(Debug, Clone, PartialEq)]
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
    let owners: BTreeSet<&str> = workspace
        .accounts
        .iter()
        .filter(|a| a.active && a.role() == Some(Role::Owner))
        .map(|a| a.id.as_str())
        .collect();
    if owners.is_empty() {
        return;
    }
    // Owner account id → (lowest seq, indices) of the runnable actions removing it.
    let mut removals: BTreeMap<String, (u32, Vec<usize>)> = BTreeMap::new();
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
        if let Some(account_id) = removed.filter(|id| owners.contains(id.as_str())) {
            let entry = removals
                .entry(account_id.clone())
                .or_insert((action.seq, Vec::new()));
            entry.0 = entry.0.min(action.seq);
            entry.1.push(index);
        }
    }
    if removals.len() < owners.len() {
        return;
    }
    // Every Owner would go: keep the one whose removal comes first in the plan.
    let keep = removals
        .values()
        .min_by_key(|(seq, _)| *seq)
        .map(|(_, indices)| indices.clone())
        .unwrap_or_default();
    for index in keep {
        if let Some(action) = plan.actions.get_mut(index) {
            action.held = Some(HoldReason::LastOwner);
        }
    }
}
