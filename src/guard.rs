//! Safety rules between plan and apply (design brief, pipeline step 4). The guard
//! marks actions held; it never adds, removes or reorders actions, so a held action
//! keeps its `seq` and can be approved later as it is.
//!
//! Rules of [`guard`], applied in order (an action already held keeps its first
//! reason):
//! 1. An incomplete directory snapshot holds everything that takes access away
//!    (invariant 3): every class below but renames.
//! 2. Thresholds, per [`ActionClass`] (deprovisions, membership removals, role
//!    downgrades, deletions after retention, renames), each on its own: more than the per-run limit, or more than the
//!    24 h limit counting what the store says was already done in the 24 h before
//!    the run, holds *every* action of that class. A mass deprovision is far more
//!    likely a source fault than a real event, and letting the first N through would
//!    still do the damage; the 24 h limit stops a slow drip that stays under the
//!    per-run one. Each limit is a count, tightened to a percentage of the
//!    managed accounts once there are at least `min_population_for_percent` of
//!    them (small workspaces would otherwise hit the percentage with one leaver):
//!    [`run_limit`] per run, [`day_limit`] per 24 h (else at a few hundred
//!    accounts small runs pass in a day far more than the per-run share).
//!    `allow_over_threshold` (typed by a human, recorded by the caller) skips this
//!    rule only.
//! 3. The last active Owner is never deactivated, deleted or demoted.
//! 4. Creates and userName changes that want the userName of an account whose
//!    delete is held (by any rule above, or because a re-hire's create wants it:
//!    [`HoldReason::UserNameWanted`]) wait for that delete
//!    ([`HoldReason::WaitsForDelete`]): the plan counted the name as freed by it,
//!    and the account keeps it. So does what a rename held so would free in turn.
//!    Done here, where the workspace snapshot names the deleted account's userName.
//!
//! Outside [`guard`], for the caller to apply in its pipeline:
//! - [`check_source`]: an empty directory, or one that shrank too much against the
//!   accepted baseline (the caller's: the largest directory accepted in the 24 h
//!   before the run, else the last one), is rejected before anything is planned
//!   from it.
//! - [`hold_unsettled`]: creates and updates wait until their drift has been seen
//!   for `settle`; deprovisions never wait. A membership batch settles member by
//!   member: the settled members go, the others are split off into a held action
//!   appended to the plan (with [`hold_look_alike_members`], the only places
//!   anything here adds an action).
//! - Before [`guard`], whose thresholds do not count what they hold:
//!   [`hold_look_alike_members`] holds what would take access from a person in a
//!   live directory's group whose name differs from a configured one only in what
//!   does not show, when that group could have kept it for them (a scope group's
//!   look-alike their deprovision, a mapping group's their role and memberships; a
//!   removal batch split as above), and
//!   [`hold_hidden_characters`] a create or update that would write a userName,
//!   email or externalId holding such a character (see [`crate::names`]).
//!
//! "Managed accounts" are the workspace accounts linked or matched to a directory
//! identity; the caller counts them and passes them in [`GuardInput`], along with
//! the 24 h counts and the current time. Nothing here reads a clock.
//!
//! Protected accounts need no rule here: the plan never names them, nor any
//! account of a protected person (one protected only so is listed in
//! [`crate::model::Plan::protected_by_person`] for the report).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    Action, ActionClass, ActionKind, HoldReason, Plan, RecentCounts, Role, ThresholdWindow,
    WorkspaceSnapshot,
};
use crate::policy::FxHashMap;

/// Per-class limits: a count and a percentage per run, and a count and a
/// percentage per rolling 24 h.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub per_run: usize,
    pub percent: f64,
    pub per_day: usize,
    /// Of the managed accounts, per rolling 24 h: without it, at a few hundred
    /// accounts several small runs each under `percent` pass a far larger share
    /// in a day than the per-day count was meant to allow.
    pub percent_per_day: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardSettings {
    pub max_deprovisions: usize,
    pub max_deprovision_percent: f64,
    pub min_population_for_percent: usize,
    pub max_deprovisions_per_day: usize,
    pub max_deprovision_percent_per_day: f64,
    pub max_membership_removals: usize,
    pub max_membership_removal_percent: f64,
    pub max_membership_removals_per_day: usize,
    pub max_membership_removal_percent_per_day: f64,
    pub max_role_downgrades: usize,
    pub max_role_downgrade_percent: f64,
    pub max_role_downgrades_per_day: usize,
    pub max_role_downgrade_percent_per_day: f64,
    pub max_deletions: usize,
    pub max_deletion_percent: f64,
    pub max_deletions_per_day: usize,
    pub max_deletion_percent_per_day: f64,
    pub max_renames: usize,
    pub max_rename_percent: f64,
    pub max_renames_per_day: usize,
    pub max_rename_percent_per_day: f64,
    /// Some `policy.mapping` gives Owner (to someone: see
    /// `safety::guard_settings`). Without one, demoting an Owner waits for a human
    /// ([`HoldReason::OwnerWithoutMapping`]).
    pub owner_mapped: bool,
    /// Managed workspace groups (case-folded) that no mapping gives to anyone in
    /// the directory: removing their members waits for a human
    /// ([`HoldReason::GroupGrantedToNobody`]). See `safety::guard_settings`.
    pub granted_to_nobody: BTreeSet<String>,
}

impl Default for GuardSettings {
    /// The documented defaults of `[safety]`.
    fn default() -> Self {
        GuardSettings {
            max_deprovisions: 25,
            max_deprovision_percent: 5.0,
            min_population_for_percent: 100,
            max_deprovisions_per_day: 50,
            max_deprovision_percent_per_day: 10.0,
            max_membership_removals: 100,
            max_membership_removal_percent: 10.0,
            max_membership_removals_per_day: 200,
            max_membership_removal_percent_per_day: 20.0,
            max_role_downgrades: 10,
            max_role_downgrade_percent: 5.0,
            max_role_downgrades_per_day: 20,
            max_role_downgrade_percent_per_day: 10.0,
            max_deletions: 25,
            max_deletion_percent: 5.0,
            max_deletions_per_day: 50,
            max_deletion_percent_per_day: 10.0,
            max_renames: 25,
            max_rename_percent: 5.0,
            max_renames_per_day: 50,
            max_rename_percent_per_day: 10.0,
            owner_mapped: true,
            granted_to_nobody: BTreeSet::new(),
        }
    }
}

impl GuardSettings {
    pub fn limits(&self, class: ActionClass) -> Limits {
        match class {
            ActionClass::Deprovision => Limits {
                per_run: self.max_deprovisions,
                percent: self.max_deprovision_percent,
                per_day: self.max_deprovisions_per_day,
                percent_per_day: self.max_deprovision_percent_per_day,
            },
            ActionClass::MembershipRemoval => Limits {
                per_run: self.max_membership_removals,
                percent: self.max_membership_removal_percent,
                per_day: self.max_membership_removals_per_day,
                percent_per_day: self.max_membership_removal_percent_per_day,
            },
            ActionClass::RoleDowngrade => Limits {
                per_run: self.max_role_downgrades,
                percent: self.max_role_downgrade_percent,
                per_day: self.max_role_downgrades_per_day,
                percent_per_day: self.max_role_downgrade_percent_per_day,
            },
            ActionClass::Deletion => Limits {
                per_run: self.max_deletions,
                percent: self.max_deletion_percent,
                per_day: self.max_deletions_per_day,
                percent_per_day: self.max_deletion_percent_per_day,
            },
            ActionClass::Rename => Limits {
                per_run: self.max_renames,
                percent: self.max_rename_percent,
                per_day: self.max_renames_per_day,
                percent_per_day: self.max_rename_percent_per_day,
            },
        }
    }

    /// Settings under which no threshold ever holds anything (tests, benchmarks).
    pub fn unlimited() -> GuardSettings {
        GuardSettings {
            max_deprovisions: usize::MAX,
            max_deprovision_percent: 100.0,
            min_population_for_percent: usize::MAX,
            max_deprovisions_per_day: usize::MAX,
            max_deprovision_percent_per_day: 100.0,
            max_membership_removals: usize::MAX,
            max_membership_removal_percent: 100.0,
            max_membership_removals_per_day: usize::MAX,
            max_membership_removal_percent_per_day: 100.0,
            max_role_downgrades: usize::MAX,
            max_role_downgrade_percent: 100.0,
            max_role_downgrades_per_day: usize::MAX,
            max_role_downgrade_percent_per_day: 100.0,
            max_deletions: usize::MAX,
            max_deletion_percent: 100.0,
            max_deletions_per_day: usize::MAX,
            max_deletion_percent_per_day: 100.0,
            max_renames: usize::MAX,
            max_rename_percent: 100.0,
            max_renames_per_day: usize::MAX,
            max_rename_percent_per_day: 100.0,
            owner_mapped: true,
            granted_to_nobody: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardInput {
    /// Whether the directory snapshot the plan came from was read whole.
    pub directory_complete: bool,
    /// Workspace accounts linked or matched to a directory identity.
    pub managed_accounts: usize,
    /// What was already done in the 24 h before this run (from the store).
    pub recent: RecentCounts,
    /// `reconcile --allow-over-threshold`: a one-run override of the thresholds.
    pub allow_over_threshold: bool,
    /// What the run was due to do and left out of its plan because it could not
    /// read the account (the sweep's due deprovisions whose read failed): counted
    /// with the plan against the limits, as a reconcile, which plans them all,
    /// counts them. Else reads that fail split a mass deprovision into passes
    /// each under the per-run limit.
    pub unread: RecentCounts,
}

/// The number of deprovisions a run may make without approval.
pub fn deprovision_limit(settings: &GuardSettings, managed: usize) -> usize {
    run_limit(
        &settings.limits(ActionClass::Deprovision),
        settings.min_population_for_percent,
        managed,
    )
}

/// The per-run limit of one class: the count, tightened to the percentage of the
/// managed accounts once there are at least `min_population` of them.
pub fn run_limit(limits: &Limits, min_population: usize, managed: usize) -> usize {
    count_or_share(limits.per_run, limits.percent, min_population, managed)
}

/// The rolling 24 h limit of one class, as [`run_limit`] reads the per-run one:
/// the per-day count, tightened to the per-day percentage of the managed
/// accounts once there are at least `min_population` of them.
pub fn day_limit(limits: &Limits, min_population: usize, managed: usize) -> usize {
    count_or_share(
        limits.per_day,
        limits.percent_per_day,
        min_population,
        managed,
    )
}

/// `count`, or `percent` of `managed` rounded down when that is fewer and
/// `managed` is at least `min_population`.
fn count_or_share(count: usize, percent: f64, min_population: usize, managed: usize) -> usize {
    if managed < min_population {
        return count;
    }
    // Multiplied before dividing: `29.0 / 100.0 * 100.0` is 28.999…, one short.
    let share = (percent * managed as f64 / 100.0).floor();
    // NaN and negative shares mean "no percentage allowance" rather than a wrap.
    let by_percent = if share.is_finite() && share > 0.0 {
        share as usize
    } else {
        0
    };
    count.min(by_percent)
}

/// How much of `class` the plan would do (membership removals count members).
/// What [`hold_look_alike_members`] and [`hold_hidden_characters`] held is not
/// counted: hundreds of people in a mistyped group must not hold the one real
/// leaver's deprovision with theirs.
fn planned_of(plan: &Plan, class: ActionClass, approved: &BTreeSet<String>) -> usize {
    plan.actions
        .iter()
        .filter(|a| !approved_deprovision(a, approved))
        .filter(|a| {
            !matches!(
                a.held,
                Some(HoldReason::LookAlikeGroup { .. } | HoldReason::HiddenCharacter { .. })
            )
        })
        .filter_map(|a| a.kind.threshold_class())
        .filter(|(c, _)| *c == class)
        .map(|(_, n)| n)
        .sum()
}

/// The threshold `class` breaks with `planned` of it this run (and what the run
/// could not read, [`GuardInput::unread`]), if any: the per-run limit first, then
/// the 24 h one. Nothing planned holds nothing.
fn threshold_breach(
    settings: &GuardSettings,
    input: &GuardInput,
    class: ActionClass,
    planned: usize,
) -> Option<HoldReason> {
    if planned == 0 {
        return None;
    }
    let planned = planned.saturating_add(input.unread.get(class));
    let limits = settings.limits(class);
    let managed = input.managed_accounts;
    let limit = run_limit(&limits, settings.min_population_for_percent, managed);
    if planned > limit {
        return Some(HoldReason::Threshold {
            class,
            window: ThresholdWindow::Run,
            planned,
            recent: 0,
            limit,
            managed,
            by_percent: limit < limits.per_run,
        });
    }
    // What the 24 h count counts, the percentage counts too: the same window,
    // one limit (the tighter of the two).
    let recent = input.recent.get(class);
    let limit = day_limit(&limits, settings.min_population_for_percent, managed);
    if planned.saturating_add(recent) > limit {
        return Some(HoldReason::Threshold {
            class,
            window: ThresholdWindow::Day,
            planned,
            recent,
            limit,
            managed,
            by_percent: limit < limits.per_day,
        });
    }
    None
}

/// Marks actions held (sets `Action::held`); never adds or removes actions.
pub fn guard(
    plan: Plan,
    workspace: &WorkspaceSnapshot,
    settings: &GuardSettings,
    input: &GuardInput,
) -> Plan {
    guard_approved(plan, workspace, settings, input, &BTreeSet::new())
}

/// Whether `action` deactivates or deletes one of `approved`'s accounts.
fn approved_deprovision(action: &Action, approved: &BTreeSet<String>) -> bool {
    match &action.kind {
        ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. } => {
            approved.contains(account_id)
        }
        _ => false,
    }
}

/// [`guard`], with the accounts whose deprovision a person approved already
/// (`approved`: `seatwarden approve` released it, and its write failed; the
/// ledger episode it belongs to is still open): their deactivation or deletion
/// is neither counted against the thresholds nor held by them, as approving
/// was the decision over those. Every other rule (the last active Owner, an
/// incomplete directory) holds it as it holds any action.
pub fn guard_approved(
    mut plan: Plan,
    workspace: &WorkspaceSnapshot,
    settings: &GuardSettings,
    input: &GuardInput,
    approved: &BTreeSet<String>,
) -> Plan {
    if !input.directory_complete {
        // A person or a group missing from a partial read looks like a lost
        // membership or mapping as much as a leaver does: nothing that takes
        // access away (deprovisions, deletions, membership removals, role
        // downgrades) runs on it.
        for action in &mut plan.actions {
            if action.held.is_none()
                && action
                    .kind
                    .threshold_class()
                    .is_some_and(|(class, _)| class.takes_access_away())
            {
                action.held = Some(HoldReason::IncompleteDirectory);
            }
        }
    }

    if !input.allow_over_threshold {
        for class in ActionClass::ALL {
            let planned = planned_of(&plan, class, approved);
            if let Some(reason) = threshold_breach(settings, input, class, planned) {
                for action in &mut plan.actions {
                    if action.held.is_none()
                        && !approved_deprovision(action, approved)
                        && action
                            .kind
                            .threshold_class()
                            .is_some_and(|(c, _)| c == class)
                    {
                        action.held = Some(reason.clone());
                    }
                }
            }
        }
    }

    if !settings.owner_mapped {
        hold_owner_demotions(&mut plan);
    }
    if !settings.granted_to_nobody.is_empty() {
        hold_removals_from_groups_granted_to_nobody(&mut plan, &settings.granted_to_nobody);
    }
    hold_last_owner(&mut plan, workspace);
    hold_wanted_user_names(&mut plan, workspace);
    hold_claims_behind_held_deletes(&mut plan, workspace);
    plan
}

/// Holds every demotion of an Owner: no mapping gives Owner, so the plan takes
/// it from all of them (but the last), which a forgotten mapping does far more
/// often than a decision. A leaver's deactivation is not held: that takes access
/// away from someone who should lose it.
fn hold_owner_demotions(plan: &mut Plan) {
    for action in &mut plan.actions {
        if action.held.is_some() {
            continue;
        }
        if let ActionKind::SetRole { from, to, .. } = &action.kind
            && *to != Role::Owner
            // As `Account::is_owner` reads it (the last-Owner rule): case and
            // surrounding spaces aside.
            && from.iter().any(|r| r.parse::<Role>() == Ok(Role::Owner))
        {
            action.held = Some(HoldReason::OwnerWithoutMapping);
        }
    }
}

/// Holds every removal of members from a managed workspace group that no mapping
/// gives to anyone: the plan empties it, which a misspelt or renamed directory
/// group in a mapping does far more often than a decision (an export cannot show
/// an empty group, so such a typo cannot be refused at load).
fn hold_removals_from_groups_granted_to_nobody(plan: &mut Plan, groups: &BTreeSet<String>) {
    for action in &mut plan.actions {
        if action.held.is_some() {
            continue;
        }
        if let ActionKind::RemoveMembers { group, .. } = &action.kind
            && groups.contains(&crate::policy::fold_group_name(group.display_name()))
        {
            action.held = Some(HoldReason::GroupGrantedToNobody {
                group: group.display_name().to_owned(),
            });
        }
    }
}

/// A userName as matching compares it (`plan::name_key`): trimmed, then folded.
fn name_key(user_name: &str) -> String {
    crate::model::fold_case(user_name.trim())
}

/// Holds the deletion of a deactivated account (after the retention period, or at
/// once with `delete_after = "0s"`) when a create in the same plan wants the
/// account's userName: a person re-hired under a new directory id, whose create
/// meets 409 while the old account exists. Deleting it would let the create
/// through with an empty account; the old one, projects included, is theirs to
/// keep unless someone decides otherwise.
fn hold_wanted_user_names(plan: &mut Plan, workspace: &WorkspaceSnapshot) {
    let wanted: FxHashMap<String, &str> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::CreateAccount { identity_id, spec } => {
                Some((name_key(&spec.user_name), identity_id.as_str()))
            }
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let user_names: FxHashMap<&str, &str> = workspace
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a.user_name.as_str()))
        .collect();
    let inactive: std::collections::HashSet<&str> = workspace
        .accounts
        .iter()
        .filter(|a| !a.active)
        .map(|a| a.id.as_str())
        .collect();
    let mut holds = Vec::new();
    for (index, action) in plan.actions.iter().enumerate() {
        // An active account's deletion also takes access away, which cannot wait
        // for a decision (same-day deprovisioning); a deactivated one's only
        // destroys what a returner would want back.
        if let ActionKind::Delete { account_id, .. } = &action.kind
            && action.held.is_none()
            && inactive.contains(account_id.as_str())
            && let Some(user_name) = user_names.get(account_id.as_str())
            && let Some(identity_id) = wanted.get(&name_key(user_name))
        {
            holds.push((
                index,
                HoldReason::UserNameWanted {
                    identity_id: (*identity_id).to_owned(),
                    account_id: account_id.clone(),
                },
            ));
        }
    }
    for (index, reason) in holds {
        if let Some(action) = plan.actions.get_mut(index) {
            action.held = Some(reason);
        }
    }
}

/// Holds each runnable create, and each runnable rename, that wants the userName of
/// an account whose delete is held ([`HoldReason::WaitsForDelete`]): the plan
/// counted that name as freed by the delete (deprovisions run first), but the
/// account keeps it, and the write would meet 409 every run. A rename held so
/// frees nothing either: what waits on it is held too (chains of renames).
fn hold_claims_behind_held_deletes(plan: &mut Plan, workspace: &WorkspaceSnapshot) {
    let held_deletes: FxHashMap<&str, &HoldReason> = plan
        .held()
        .filter_map(|a| match (&a.kind, &a.held) {
            (ActionKind::Delete { account_id, .. }, Some(reason)) => {
                Some((account_id.as_str(), reason))
            }
            _ => None,
        })
        .collect();
    if held_deletes.is_empty() {
        return;
    }
    let kept: FxHashMap<String, HoldReason> = workspace
        .accounts
        .iter()
        .filter_map(|account| {
            let reason = held_deletes.get(account.id.as_str())?;
            Some((
                name_key(&account.user_name),
                HoldReason::WaitsForDelete {
                    account_id: account.id.clone(),
                    held: Box::new((*reason).clone()),
                },
            ))
        })
        .collect();
    if kept.is_empty() {
        return;
    }
    if hold_claims_on(plan, &kept) {
        hold_creates_behind_renames(plan);
    }
}

/// Holds each runnable create or rename whose wanted userName (folded)
/// `occupied` names, for the reason given there; whether any was held.
fn hold_claims_on(plan: &mut Plan, occupied: &FxHashMap<String, HoldReason>) -> bool {
    let mut held_any = false;
    for action in &mut plan.actions {
        if action.held.is_some() {
            continue;
        }
        if let Some(reason) = action
            .kind
            .wanted_user_name()
            .and_then(|name| occupied.get(&name_key(name)))
        {
            action.held = Some(reason.clone());
            held_any = true;
        }
    }
    held_any
}

/// Holds each runnable action that takes access away (deprovision, deletion,
/// role downgrade, membership removal) from a person of `members` (identity id →
/// the look-alike groups they are in, from [`crate::names::look_alike_members`]):
/// the group counted for nothing because its name differs from a configured one
/// only in what does not show, and it may be that group mistyped
/// ([`HoldReason::LookAlikeGroup`]). Only what the look-alike could have
/// prevented is held: a deprovision for a scope (or protected) group's; for a
/// mapping group's, a removal from a workspace group its mappings give, or a
/// downgrade below a role they give (a protected group's: any of them).
/// Everyone else's actions are untouched, so same-day deprovisioning goes on. `owners` maps account ids to the identity
/// linked to them (stored links and the plan's new ones): a membership removal
/// names accounts only. A removal batch with some such members is split: the
/// others go now, those members wait in an action of their own at the end.
/// The deactivation or deletion of one of `approved`'s accounts is not held:
/// a person approved that deprovision held as a look-alike member's, the
/// question this hold asks, and its write failed; the retry job sends it as
/// well ([`guard_approved`]). Callers pass only such approvals
/// ([`crate::safety::approved_look_alike_deprovision_accounts`]): one over a
/// threshold answered another question.
/// Run before [`guard`], whose thresholds do not count what this held.
pub fn hold_look_alike_members(
    mut plan: Plan,
    members: &std::collections::BTreeMap<String, crate::names::LookAlikeMember>,
    owners: &std::collections::HashMap<&str, &str>,
    approved: &BTreeSet<String>,
) -> Plan {
    use crate::names::{AccessLookAlike, LookAlike, LookAlikeMember};
    if members.is_empty() {
        return plan;
    }
    let reason = |look_alike: &LookAlike| HoldReason::LookAlikeGroup {
        directory_group: look_alike.directory_group.clone(),
        configured: look_alike.configured.clone(),
        key: look_alike.key.clone(),
        differs: look_alike.differs.clone(),
    };
    let member = |identity: Option<&str>| -> Option<&LookAlikeMember> { members.get(identity?) };
    // The first of the person's access look-alikes that would have kept what
    // `keeps` asks about.
    let access_reason = |identity: Option<&str>, keeps: &dyn Fn(&AccessLookAlike) -> bool| {
        member(identity)?
            .access
            .iter()
            .find(|a| keeps(a))
            .map(|a| reason(&a.look_alike))
    };
    let owner = |account: &str| owners.get(account).copied();
    let mut next_seq = plan.actions.iter().map(|a| a.seq + 1).max().unwrap_or(0);
    let mut split_off = Vec::new();
    for action in &mut plan.actions {
        if action.held.is_some()
            || approved_deprovision(action, approved)
            || !action
                .kind
                .threshold_class()
                .is_some_and(|(class, _)| class.takes_access_away())
        {
            continue;
        }
        match &action.kind {
            ActionKind::RemoveMembers { group, members } => {
                let workspace_group = group.display_name();
                let reasons: Vec<Option<HoldReason>> = members
                    .iter()
                    .map(|m| access_reason(owner(m), &|a| a.keeps_group(workspace_group)))
                    .collect();
                let waiting: Vec<bool> = reasons.iter().map(Option::is_some).collect();
                let Some(first) = reasons.into_iter().flatten().next() else {
                    continue;
                };
                if waiting.iter().all(|&w| w) {
                    action.held = Some(first);
                } else {
                    let mut rest = action.clone();
                    split_members(&mut action.kind, &mut rest.kind, &waiting);
                    rest.seq = next_seq;
                    next_seq += 1;
                    rest.held = Some(first);
                    split_off.push(rest);
                }
            }
            ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. } => {
                let identity = action.identity_id.as_deref().or_else(|| owner(account_id));
                if let Some(look_alike) = member(identity).and_then(|m| m.deprovision.as_ref()) {
                    action.held = Some(reason(look_alike));
                }
            }
            ActionKind::SetRole { account_id, to, .. } => {
                let identity = action.identity_id.as_deref().or_else(|| owner(account_id));
                if let Some(held) = access_reason(identity, &|a| a.keeps_above(*to)) {
                    action.held = Some(held);
                }
            }
            _ => {}
        }
    }
    plan.actions.extend(split_off);
    plan
}

/// Holds each runnable create, and each attribute update, that would write a
/// userName, email or externalId holding a character that does not show
/// ([`crate::names::is_hidden`]: a zero-width or no-break space, a tab, a control
/// character): a live directory's login with a zero-width space pasted in would
/// name the account so, and the workspace would match it by that
/// ([`HoldReason::HiddenCharacter`]). An export is refused at load for the same.
pub fn hold_hidden_characters(mut plan: Plan) -> Plan {
    use crate::model::Attribute;
    fn hidden(field: &str, value: &str) -> Option<HoldReason> {
        let c = crate::names::hidden_in(value)?;
        Some(HoldReason::HiddenCharacter {
            field: field.to_owned(),
            value: value.to_owned(),
            character: crate::names::describe(c),
        })
    }
    for action in &mut plan.actions {
        if action.held.is_some() {
            continue;
        }
        let reason = match &action.kind {
            ActionKind::CreateAccount { spec, .. } => hidden("userName", &spec.user_name)
                .or_else(|| spec.email.as_deref().and_then(|e| hidden("email", e)))
                .or_else(|| hidden("externalId", &spec.external_id)),
            ActionKind::UpdateAttributes { changes, .. } => changes.iter().find_map(|c| {
                let field = match c.attribute {
                    Attribute::UserName => "userName",
                    Attribute::Email => "email",
                    Attribute::ExternalId => "externalId",
                    _ => return None,
                };
                hidden(field, c.to.as_deref()?)
            }),
            _ => None,
        };
        if reason.is_some() {
            action.held = reason;
        }
    }
    plan
}

/// Why a directory snapshot was rejected: nothing at all is planned from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceFault {
    /// The directory returned no identities at all.
    Empty,
    /// The directory shrank more than `max_directory_shrink_percent` against the
    /// accepted baseline (`previous`: the largest directory accepted in the 24 h
    /// before, else the last one).
    Shrank {
        previous: usize,
        current: usize,
        shrink_percent: f64,
        limit_percent: f64,
    },
}

impl std::fmt::Display for SourceFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceFault::Empty => {
                f.write_str("the directory returned no identities; nothing was planned from it")
            }
            SourceFault::Shrank {
                previous,
                current,
                shrink_percent,
                limit_percent,
            } => write!(
                f,
                "the directory shrank from {previous} to {current} identities ({shrink_percent:.1}% fewer, the limit is {limit_percent}%) against the largest directory accepted in the 24 h before (else the last one accepted); nothing was planned from it"
            ),
        }
    }
}

/// Source sanity: `Err` when a directory snapshot of `current` identities must not
/// be planned from, given the accepted baseline's size (`None`: no accepted
/// snapshot yet, so only emptiness is checked).
pub fn check_source(
    current: usize,
    last_accepted: Option<usize>,
    max_shrink_percent: f64,
) -> Result<(), SourceFault> {
    if current == 0 {
        return Err(SourceFault::Empty);
    }
    let Some(previous) = last_accepted.filter(|p| *p > current) else {
        return Ok(());
    };
    let shrink_percent = (previous - current) as f64 * 100.0 / previous as f64;
    // A NaN limit rejects nothing rather than everything; config validates it.
    if shrink_percent > max_shrink_percent {
        return Err(SourceFault::Shrank {
            previous,
            current,
            shrink_percent,
            limit_percent: max_shrink_percent,
        });
    }
    Ok(())
}

/// The identity of an action's drift for the settle window: the same key in two
/// runs means the same change is still wanted. `None` for actions that never wait
/// (deprovisions).
///
/// The key is the SHA-256 (hex) of the whole kind as JSON, so a changed target
/// value (a new name, another role) starts its own settle window. Hashed because
/// the kind itself can be large: a membership batch lists every member, and the
/// keys of a first run over 10k people were 3 MB, written and read back each run.
fn settle_key(action: &Action) -> Option<String> {
    kind_key(&action.kind)
}

fn kind_key(kind: &ActionKind) -> Option<String> {
    if kind.is_deprovision() {
        return None;
    }
    // serde_json writes in small pieces; the hash takes them a block at a time.
    let mut sha = std::io::BufWriter::with_capacity(
        4096,
        Sha256Writer(ring::digest::Context::new(&ring::digest::SHA256)),
    );
    serde_json::to_writer(&mut sha, kind).ok()?;
    let sha = sha.into_inner().ok()?;
    Some(hex(sha.0.finish().as_ref()))
}

/// The settle keys of an action: one per member for a membership batch (each
/// member's change is drift of its own, so a member joining the batch does not
/// restart the others' wait), else its [`settle_key`]. None for a deprovision.
pub fn settle_keys(action: &Action) -> Vec<String> {
    // Each member's key hashes a one-member kind, not a copy of the whole action
    // (which would copy every member once per member).
    let single = |kind: ActionKind| kind_key(&kind);
    match &action.kind {
        ActionKind::AddMembers { group, members } if members.len() > 1 => members
            .iter()
            .filter_map(|m| {
                single(ActionKind::AddMembers {
                    group: group.clone(),
                    members: vec![m.clone()],
                })
            })
            .collect(),
        ActionKind::RemoveMembers { group, members } if members.len() > 1 => members
            .iter()
            .filter_map(|m| {
                single(ActionKind::RemoveMembers {
                    group: group.clone(),
                    members: vec![m.clone()],
                })
            })
            .collect(),
        _ => settle_key(action).into_iter().collect(),
    }
}

/// The settle key of a kind already written as JSON: what keys were before they
/// were hashed, so pending drift stored by an older version keeps its first-seen
/// times. Keys that are already digests are returned as they are.
pub fn settle_key_of_stored(stored: String) -> String {
    if is_settle_digest(&stored) {
        return stored;
    }
    hex(ring::digest::digest(&ring::digest::SHA256, stored.as_bytes()).as_ref())
}

fn is_settle_digest(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Feeds what serde_json writes into the hash, so the kind's text is never held
/// whole.
struct Sha256Writer(ring::digest::Context);

impl std::io::Write for Sha256Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Holds every runnable create or update whose drift was first seen less than
/// `settle` before `now`. `first_seen` maps [`settle_key`]s to when they were first
/// seen; a key it lacks is seen for the first time now. Deprovisions never wait.
pub fn hold_unsettled(
    mut plan: Plan,
    first_seen: &std::collections::HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
    settle: Duration,
) -> Plan {
    if settle.is_zero() {
        return plan;
    }
    let settle = chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX);
    let settles = |key: &String| {
        let first = first_seen.get(key).copied().unwrap_or(now).min(now);
        let at = first
            .checked_add_signed(settle)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        (first, at)
    };
    let mut next_seq = plan.actions.iter().map(|a| a.seq + 1).max().unwrap_or(0);
    let mut waiting = Vec::new();
    for action in &mut plan.actions {
        if action.held.is_some() {
            continue;
        }
        let keys = settle_keys(action);
        if keys.is_empty() {
            continue;
        }
        let times: Vec<(DateTime<Utc>, DateTime<Utc>)> = keys.iter().map(settles).collect();
        let unsettled: Vec<bool> = times.iter().map(|(_, at)| now < *at).collect();
        let held_as = |times: &mut dyn Iterator<Item = &(DateTime<Utc>, DateTime<Utc>)>| {
            times
                .min_by_key(|(_, at)| *at)
                .map(|&(first_seen, settles_at)| HoldReason::Settling {
                    first_seen,
                    settles_at,
                })
        };
        let one_key_a_member = match &action.kind {
            ActionKind::AddMembers { members, .. } => members.len() == keys.len(),
            ActionKind::RemoveMembers { members, .. } => members.len() == keys.len(),
            _ => false,
        };
        if unsettled.iter().all(|&u| u) || (!one_key_a_member && unsettled.iter().any(|&u| u)) {
            action.held = held_as(&mut times.iter());
        } else if unsettled.iter().any(|&u| u) {
            // Some members settled, some not: the settled ones go now, the rest
            // wait in an action of their own at the end of the plan.
            let mut rest = action.clone();
            split_members(&mut action.kind, &mut rest.kind, &unsettled);
            rest.seq = next_seq;
            next_seq += 1;
            rest.held = held_as(
                &mut times
                    .iter()
                    .zip(&unsettled)
                    .filter(|(_, u)| **u)
                    .map(|(t, _)| t),
            );
            waiting.push(rest);
        }
    }
    plan.actions.extend(waiting);
    plan
}

/// Keeps in `settled` the members whose `unsettled` flag is false and in
/// `unsettled_kind` the others (both are the same membership kind).
fn split_members(settled: &mut ActionKind, unsettled_kind: &mut ActionKind, unsettled: &[bool]) {
    fn split<T: Clone>(now: &mut Vec<T>, later: &mut Vec<T>, unsettled: &[bool]) {
        let all = std::mem::take(now);
        later.clear();
        for (member, &wait) in all.into_iter().zip(unsettled) {
            if wait {
                later.push(member);
            } else {
                now.push(member);
            }
        }
    }
    match (settled, unsettled_kind) {
        (
            ActionKind::AddMembers { members: now, .. },
            ActionKind::AddMembers { members: later, .. },
        ) => split(now, later, unsettled),
        (
            ActionKind::RemoveMembers { members: now, .. },
            ActionKind::RemoveMembers { members: later, .. },
        ) => split(now, later, unsettled),
        _ => {}
    }
}

/// Holds runnable actions that depend on a held one, with its reason: without it
/// they would only fail. A create that wants the userName a held rename gives up
/// (a new hire given a name its holder leaves) would meet 409 on an account linked
/// to someone else (one behind a held delete [`guard`] holds itself, as only it
/// sees the workspace); membership changes need the account or group the same plan
/// creates. A batch with some such members is split: the others go now.
pub fn hold_dependents(mut plan: Plan) -> Plan {
    use crate::model::{AccountRef, GroupRef};
    hold_creates_behind_renames(&mut plan);
    let mut accounts: FxHashMap<String, HoldReason> = FxHashMap::default();
    let mut groups: FxHashMap<String, HoldReason> = FxHashMap::default();
    for action in &plan.actions {
        match (&action.kind, &action.held) {
            (ActionKind::CreateAccount { identity_id, .. }, Some(reason)) => {
                accounts.insert(identity_id.clone(), reason.clone());
            }
            (ActionKind::CreateGroup { display_name }, Some(reason)) => {
                groups.insert(display_name.to_lowercase(), reason.clone());
            }
            _ => {}
        }
    }
    if accounts.is_empty() && groups.is_empty() {
        return plan;
    }
    let group_hold = |group: &GroupRef| match group {
        GroupRef::Created { display_name } => groups.get(&display_name.to_lowercase()).cloned(),
        GroupRef::Existing { .. } => None,
    };
    let member_hold = |m: &AccountRef| match m {
        AccountRef::Created { identity_id } => accounts.get(identity_id).cloned(),
        AccountRef::Existing { .. } => None,
    };
    let mut next_seq = plan.actions.iter().map(|a| a.seq + 1).max().unwrap_or(0);
    let mut waiting = Vec::new();
    for action in &mut plan.actions {
        if action.held.is_some() {
            continue;
        }
        match &action.kind {
            ActionKind::AddMembers { group, members } => {
                if let Some(reason) = group_hold(group) {
                    action.held = Some(reason);
                    continue;
                }
                let holds: Vec<Option<HoldReason>> = members.iter().map(member_hold).collect();
                let held: Vec<bool> = holds.iter().map(Option::is_some).collect();
                if held.iter().all(|&h| h) {
                    action.held = holds.into_iter().flatten().next();
                } else if held.iter().any(|&h| h) {
                    // The members whose account exists (or is created now) join
                    // now; those whose create is held wait in an action of their
                    // own, so one held create does not keep a group from everyone.
                    let mut rest = action.clone();
                    split_members(&mut action.kind, &mut rest.kind, &held);
                    rest.seq = next_seq;
                    next_seq += 1;
                    rest.held = holds.into_iter().flatten().next();
                    waiting.push(rest);
                }
            }
            ActionKind::RemoveMembers { group, .. } => action.held = group_hold(group),
            _ => {}
        }
    }
    plan.actions.extend(waiting);
    plan
}

/// Holds each runnable create, and each runnable rename, that wants a userName a
/// held rename still occupies; a rename held so frees nothing either, so this
/// repeats until nothing more is held (chains of renames).
fn hold_creates_behind_renames(plan: &mut Plan) {
    let mut given_up: FxHashMap<String, HoldReason> = FxHashMap::default();
    loop {
        for action in plan.held() {
            if let (Some((Some(from), _)), Some(reason)) =
                (action.kind.user_name_change(), &action.held)
            {
                given_up
                    .entry(name_key(from))
                    .or_insert_with(|| reason.clone());
            }
        }
        if given_up.is_empty() || !hold_claims_on(plan, &given_up) {
            return;
        }
    }
}

/// Only existing active Owners count: a planned promotion or reactivation may still
/// fail at apply time, so it must not license removing the Owner we have.
fn hold_last_owner(plan: &mut Plan, workspace: &WorkspaceSnapshot) {
    // Account id → (whether it is deprovisioned, lowest seq, indices, is an
    // Owner) of the runnable actions that would remove it (as an Owner, if it is
    // one).
    let mut removals: FxHashMap<&str, (bool, u32, Vec<usize>, bool)> = FxHashMap::default();
    for (index, action) in plan.actions.iter().enumerate() {
        if action.held.is_some() {
            continue;
        }
        let (removed, deprovision) = match &action.kind {
            ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. } => {
                (Some(account_id), true)
            }
            ActionKind::SetRole { account_id, to, .. } if *to != Role::Owner => {
                (Some(account_id), false)
            }
            _ => (None, false),
        };
        if let Some(account_id) = removed {
            let entry = removals.entry(account_id.as_str()).or_insert((
                false,
                action.seq,
                Vec::new(),
                false,
            ));
            entry.0 |= deprovision;
            entry.1 = entry.1.min(action.seq);
            entry.2.push(index);
        }
    }
    // Every Owner would go only if each one has a removal; the first Owner without
    // one settles it.
    let mut any_owner = false;
    for account in &workspace.accounts {
        if account.active && account.is_owner() {
            any_owner = true;
            match removals.get_mut(account.id.as_str()) {
                Some(entry) => entry.3 = true,
                None => return,
            }
        }
    }
    if !any_owner {
        return;
    }
    // Keep an Owner who stays (only demoted) rather than one who leaves: holding a
    // leaver's deactivation would keep access for the very person who should lose
    // it. Then the removal that comes first in the plan, then the lowest id.
    let keep = removals
        .iter()
        .filter(|(_, (_, _, _, owner))| *owner)
        .min_by_key(|(id, (deprovision, seq, _, _))| (*deprovision, *seq, **id))
        .map(|(_, (_, _, indices, _))| indices.clone())
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
    use crate::model::{Account, AccountRef, DriftKind, GroupRef};
    use std::collections::HashMap;

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
            ..GuardSettings::unlimited()
        }
    }

    const COMPLETE: GuardInput = GuardInput {
        directory_complete: true,
        managed_accounts: 100,
        recent: RecentCounts {
            deprovisions: 0,
            membership_removals: 0,
            role_downgrades: 0,
            deletions: 0,
            renames: 0,
        },
        allow_over_threshold: false,
        unread: RecentCounts {
            deprovisions: 0,
            membership_removals: 0,
            role_downgrades: 0,
            deletions: 0,
            renames: 0,
        },
    };

    /// A deprovision a person approved already (its write failed) is neither
    /// held by the threshold nor counted towards it: one new leaver beside it
    /// stays under a limit of one, and a second one is held.
    #[test]
    fn an_approved_deprovision_is_neither_held_by_nor_counted_towards_a_threshold() {
        let settings = GuardSettings {
            max_deprovisions: 1,
            ..GuardSettings::unlimited()
        };
        let ws = WorkspaceSnapshot::default();
        let approved: BTreeSet<String> = ["1".to_owned()].into();
        let out = guard_approved(
            plan_of(vec![deactivate("1"), deactivate("2")]),
            &ws,
            &settings,
            &COMPLETE,
            &approved,
        );
        assert_eq!(out.held().count(), 0, "{:?}", held(&out));
        let out = guard_approved(
            plan_of(vec![deactivate("1"), deactivate("2"), deactivate("3")]),
            &ws,
            &settings,
            &COMPLETE,
            &approved,
        );
        let held_ids: Vec<&str> = out.held().filter_map(|a| a.kind.account_id()).collect();
        assert_eq!(held_ids, ["2", "3"], "{:?}", held(&out));
    }

    /// What a run could not read counts with its plan against the limits of its
    /// class (and no other), per run and per 24 h; with nothing planned, nothing
    /// is held.
    #[test]
    fn what_a_run_could_not_read_counts_with_its_plan() {
        let settings = GuardSettings {
            max_deprovisions: 2,
            max_deprovisions_per_day: 5,
            ..GuardSettings::unlimited()
        };
        let two = || plan_of(vec![deactivate("1"), deactivate("2")]);
        let unread = |deprovisions| GuardInput {
            unread: RecentCounts {
                deprovisions,
                ..RecentCounts::default()
            },
            ..COMPLETE
        };
        let ws = WorkspaceSnapshot::default();
        assert_eq!(guard(two(), &ws, &settings, &unread(0)).held().count(), 0);
        let out = guard(two(), &ws, &settings, &unread(1));
        assert!(
            out.actions.iter().all(|a| matches!(
                a.held,
                Some(HoldReason::Threshold {
                    class: ActionClass::Deprovision,
                    window: ThresholdWindow::Run,
                    planned: 3,
                    limit: 2,
                    ..
                })
            )),
            "{:?}",
            held(&out)
        );
        let day = GuardInput {
            recent: RecentCounts {
                deprovisions: 3,
                ..RecentCounts::default()
            },
            ..unread(0)
        };
        assert_eq!(guard(two(), &ws, &settings, &day).held().count(), 0);
        let day = GuardInput {
            unread: unread(1).unread,
            ..day
        };
        let out = guard(two(), &ws, &settings, &day);
        assert!(
            out.actions.iter().all(|a| matches!(
                a.held,
                Some(HoldReason::Threshold {
                    window: ThresholdWindow::Run,
                    ..
                })
            )),
            "{:?}",
            held(&out)
        );
        let settings = GuardSettings {
            max_deprovisions: 3,
            ..settings
        };
        let out = guard(two(), &ws, &settings, &day);
        assert!(
            out.actions.iter().all(|a| matches!(
                a.held,
                Some(HoldReason::Threshold {
                    window: ThresholdWindow::Day,
                    planned: 3,
                    recent: 3,
                    ..
                })
            )),
            "{:?}",
            held(&out)
        );
        // Unread deprovisions hold no other class, and nothing when none is planned.
        let demotions = plan_of(vec![demote("5", "Maintainer", Role::Editor)]);
        let settings = GuardSettings {
            max_role_downgrades: 1,
            ..settings
        };
        assert_eq!(
            guard(demotions, &ws, &settings, &unread(9)).held().count(),
            0
        );
        assert_eq!(
            guard(plan_of(vec![]), &ws, &settings, &unread(9))
                .held()
                .count(),
            0
        );
    }

    fn held(plan: &Plan) -> Vec<Option<HoldReason>> {
        plan.actions.iter().map(|a| a.held.clone()).collect()
    }

    /// A partial read makes a missing person look like a leaver and a missing
    /// group like a lost mapping: nothing that takes access away runs on it;
    /// what gives access (reactivation, promotion, additions) does.
    #[test]
    fn incomplete_directory_holds_everything_that_takes_access_away() {
        use crate::model::{AccountRef, GroupRef};
        let group = GroupRef::Existing {
            id: "g".into(),
            display_name: "G".into(),
        };
        let plan = plan_of(vec![
            deactivate("1"),
            ActionKind::Delete {
                account_id: "2".into(),
                deactivated_since: None,
                frees_user_name: None,
            },
            ActionKind::RemoveMembers {
                group: group.clone(),
                members: vec!["4".into()],
            },
            demote("5", "Maintainer", Role::Editor),
            ActionKind::Reactivate {
                account_id: "3".into(),
            },
            demote("6", "Viewer", Role::Editor),
            ActionKind::AddMembers {
                group,
                members: vec![AccountRef::Existing { id: "7".into() }],
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
        let incomplete = Some(HoldReason::IncompleteDirectory);
        assert_eq!(
            held(&out),
            [
                incomplete.clone(),
                incomplete.clone(),
                incomplete.clone(),
                incomplete,
                None,
                None,
                None
            ]
        );
        let out = guard(plan, &WorkspaceSnapshot::default(), &generous(), &COMPLETE);
        assert!(out.held().next().is_none());
    }

    fn create(identity: &str, user_name: &str) -> ActionKind {
        ActionKind::CreateAccount {
            identity_id: identity.into(),
            spec: crate::model::AccountSpec {
                user_name: user_name.into(),
                external_id: identity.into(),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                role: None,
            },
        }
    }

    fn rename(id: &str, from: &str, to: &str) -> ActionKind {
        ActionKind::UpdateAttributes {
            account_id: id.into(),
            changes: vec![crate::model::AttributeChange {
                attribute: crate::model::Attribute::UserName,
                from: Some(from.into()),
                to: Some(to.into()),
            }],
        }
    }

    /// userName changes are a class of their own: a changed
    /// `directory.user_name_attribute` renames everyone at once, and people sign in
    /// with that name. Other attribute updates are not limited, and an incomplete
    /// directory does not hold a rename: it takes no access away.
    #[test]
    fn mass_renames_are_held_whole_and_other_updates_are_not() {
        let email = ActionKind::UpdateAttributes {
            account_id: "e".into(),
            changes: vec![crate::model::AttributeChange {
                attribute: crate::model::Attribute::Email,
                from: Some("e@old.example".into()),
                to: Some("e@new.example".into()),
            }],
        };
        let plan = plan_of(vec![
            rename("1", "ann@old.example", "ann@new.example"),
            rename("2", "bob@old.example", "bob@new.example"),
            rename("3", "cy@old.example", "cy@new.example"),
            email,
        ]);
        let settings = GuardSettings {
            max_renames: 2,
            ..generous()
        };
        let out = guard(
            plan.clone(),
            &WorkspaceSnapshot::default(),
            &settings,
            &COMPLETE,
        );
        let reason = HoldReason::Threshold {
            class: ActionClass::Rename,
            window: ThresholdWindow::Run,
            planned: 3,
            recent: 0,
            limit: 2,
            managed: 100,
            by_percent: false,
        };
        assert_eq!(
            held(&out),
            [
                Some(reason.clone()),
                Some(reason.clone()),
                Some(reason.clone()),
                None
            ]
        );
        assert_eq!(
            reason.to_string(),
            "3 renames planned, the per-run limit is 2 (of 100 managed accounts)"
        );
        // The renames already made today count against the 24 h limit.
        let settings = GuardSettings {
            max_renames_per_day: 10,
            ..generous()
        };
        let mut input = COMPLETE;
        input.recent.renames = 8;
        let out = guard(
            plan.clone(),
            &WorkspaceSnapshot::default(),
            &settings,
            &input,
        );
        assert_eq!(out.held().count(), 3);
        input.recent.renames = 7;
        let out = guard(
            plan.clone(),
            &WorkspaceSnapshot::default(),
            &settings,
            &input,
        );
        assert_eq!(out.held().count(), 0);

        let incomplete = GuardInput {
            directory_complete: false,
            ..COMPLETE
        };
        let out = guard(
            plan,
            &WorkspaceSnapshot::default(),
            &generous(),
            &incomplete,
        );
        assert_eq!(out.held().count(), 0);
    }

    /// Deletions after a retention period remove no access: a backlog of them is
    /// held by limits of its own and never holds, nor uses up the 24 h budget of,
    /// the day's deactivations.
    #[test]
    fn deletions_after_retention_are_their_own_class() {
        let since = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut kinds: Vec<ActionKind> = (0..30)
            .map(|i| ActionKind::Delete {
                account_id: format!("old{i}"),
                deactivated_since: Some(since),
                frees_user_name: None,
            })
            .collect();
        kinds.push(deactivate("leaver"));
        let settings = GuardSettings {
            max_deprovisions: 25,
            max_deletions: 25,
            min_population_for_percent: 1000,
            ..GuardSettings::unlimited()
        };
        let mut input = COMPLETE;
        input.recent.deletions = 0;
        input.recent.deprovisions = 0;
        let out = guard(
            plan_of(kinds.clone()),
            &WorkspaceSnapshot::default(),
            &settings,
            &input,
        );
        let runnable: Vec<&ActionKind> = out.runnable().map(|a| &a.kind).collect();
        assert_eq!(runnable, [&deactivate("leaver")]);
        assert!(out.held().all(|a| matches!(
            a.held,
            Some(HoldReason::Threshold {
                class: ActionClass::Deletion,
                ..
            })
        )));

        // 200 deletions approved yesterday leave today's deprovision budget alone.
        input.recent.deletions = 200;
        let out = guard(
            plan_of(vec![deactivate("leaver")]),
            &WorkspaceSnapshot::default(),
            &GuardSettings::default(),
            &input,
        );
        assert!(out.held().next().is_none());
    }

    /// Someone re-hired under a new directory id: their create wants the userName
    /// of their old account, whose retention period just ended. The deletion would
    /// let the create make an empty account; it is held for a person to decide.
    #[test]
    fn a_retention_delete_whose_user_name_a_create_wants_is_held() {
        let since = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let delete = |id: &str, since| ActionKind::Delete {
            account_id: id.into(),
            deactivated_since: since,
            frees_user_name: None,
        };
        let plan = plan_of(vec![
            delete("old", Some(since)),
            delete("other", Some(since)),
            delete("now", None),
            delete("gone", None),
            create("n1", "OLD@ex.com"),
            create("n2", "now@ex.com"),
            create("n3", "gone@ex.com"),
        ]);
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("old", "Viewer", false),
                account("other", "Viewer", false),
                account("now", "Viewer", true),
                account("gone", "Viewer", false),
            ],
            groups: Vec::new(),
        };
        let out = guard(plan, &workspace, &generous(), &COMPLETE);
        // "now" is still active: its deletion takes access away and goes on.
        // "gone" was deactivated and is deleted at once (`delete_after = "0s"`):
        // held like the one past its retention period. The creates wanting the
        // names those held deletes keep wait with them: sent, they meet 409.
        let wanted = |identity: &str, account: &str| HoldReason::UserNameWanted {
            identity_id: identity.into(),
            account_id: account.into(),
        };
        let waits = |identity: &str, account: &str| HoldReason::WaitsForDelete {
            account_id: account.into(),
            held: Box::new(wanted(identity, account)),
        };
        assert_eq!(
            held(&out),
            [
                Some(wanted("n1", "old")),
                None,
                None,
                Some(wanted("n3", "gone")),
                Some(waits("n1", "old")),
                None,
                Some(waits("n3", "gone")),
            ]
        );
        let why = out.actions[0].held.as_ref().unwrap().to_string();
        assert!(why.contains("seatwarden link n1 old --replace"), "{why}");
    }

    /// The old account's userName kept white space at an end: matching takes
    /// it for the name the create wants all the same, and the delete is held.
    #[test]
    fn a_delete_whose_user_name_a_create_wants_is_held_with_white_space_at_an_end() {
        let since = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let plan = plan_of(vec![
            ActionKind::Delete {
                account_id: "old".into(),
                deactivated_since: Some(since),
                frees_user_name: None,
            },
            create("n1", "old@ex.com"),
        ]);
        let mut old = account("old", "Viewer", false);
        old.user_name = " Old@ex.com ".into();
        let workspace = WorkspaceSnapshot {
            accounts: vec![old],
            groups: Vec::new(),
        };
        let out = guard(plan, &workspace, &generous(), &COMPLETE);
        let wanted = HoldReason::UserNameWanted {
            identity_id: "n1".into(),
            account_id: "old".into(),
        };
        assert_eq!(
            held(&out),
            [
                Some(wanted.clone()),
                Some(HoldReason::WaitsForDelete {
                    account_id: "old".into(),
                    held: Box::new(wanted),
                }),
            ]
        );
    }

    #[test]
    fn limit_uses_percentage_only_above_the_minimum_population() {
        let settings = GuardSettings {
            max_deprovisions: 10,
            max_deprovision_percent: 5.0,
            min_population_for_percent: 50,
            ..GuardSettings::unlimited()
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
            ..GuardSettings::unlimited()
        };
        let two = plan_of(vec![deactivate("1"), deactivate("2")]);
        let out = guard(two, &WorkspaceSnapshot::default(), &settings, &COMPLETE);
        assert!(out.held().next().is_none(), "at the limit is fine");

        let three = plan_of(vec![
            deactivate("1"),
            deactivate("2"),
            ActionKind::Delete {
                account_id: "3".into(),
                deactivated_since: None,
                frees_user_name: None,
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
        let reason = HoldReason::Threshold {
            class: ActionClass::Deprovision,
            window: ThresholdWindow::Run,
            planned: 3,
            recent: 0,
            limit: 2,
            managed: 100,
            by_percent: false,
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

    fn remove(group: &str, members: &[&str]) -> ActionKind {
        ActionKind::RemoveMembers {
            group: crate::model::GroupRef::Existing {
                id: group.into(),
                display_name: group.into(),
            },
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    fn demote(id: &str, from: &str, to: Role) -> ActionKind {
        ActionKind::SetRole {
            account_id: id.into(),
            from: vec![from.into()],
            to,
        }
    }

    #[test]
    fn each_class_has_its_own_per_run_limit() {
        let settings = GuardSettings {
            max_membership_removals: 3,
            max_role_downgrades: 1,
            ..GuardSettings::unlimited()
        };
        let plan = plan_of(vec![
            deactivate("1"),
            demote("2", "Editor", Role::Viewer),
            demote("3", "Viewer", Role::Editor),
            remove("g", &["a", "b"]),
            remove("h", &["c", "d"]),
        ]);
        let out = guard(plan, &WorkspaceSnapshot::default(), &settings, &COMPLETE);
        let removals = HoldReason::Threshold {
            class: ActionClass::MembershipRemoval,
            window: ThresholdWindow::Run,
            planned: 4,
            recent: 0,
            limit: 3,
            managed: 100,
            by_percent: false,
        };
        assert_eq!(
            held(&out),
            [None, None, None, Some(removals.clone()), Some(removals)],
            "one downgrade is within its limit; the promotion is no downgrade; four members removed > 3"
        );
        assert_eq!(
            out.actions[3]
                .held
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("4 membership removals planned, the per-run limit is 3 (of 100 managed accounts)")
        );
    }

    #[test]
    fn the_reason_says_when_the_percentage_set_the_limit() {
        let settings = GuardSettings {
            max_deprovisions: 10,
            max_deprovision_percent: 5.0,
            min_population_for_percent: 50,
            ..GuardSettings::unlimited()
        };
        let six: Vec<ActionKind> = (0..6).map(|i| deactivate(&i.to_string())).collect();
        let out = guard(
            plan_of(six),
            &WorkspaceSnapshot::default(),
            &settings,
            &COMPLETE,
        );
        assert_eq!(
            out.actions[0]
                .held
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(
                "6 deprovisions planned, the per-run limit is 5 (by percentage, of 100 managed accounts)"
            )
        );
    }

    #[test]
    fn the_24h_window_adds_what_the_store_counted() {
        let settings = GuardSettings {
            max_deprovisions_per_day: 50,
            ..GuardSettings::unlimited()
        };
        let twenty: Vec<ActionKind> = (0..20).map(|i| deactivate(&i.to_string())).collect();
        let mut input = COMPLETE;
        input.recent.deprovisions = 30;
        let out = guard(
            plan_of(twenty.clone()),
            &WorkspaceSnapshot::default(),
            &settings,
            &input,
        );
        assert!(out.held().next().is_none(), "30 + 20 = 50 is at the limit");
        input.recent.deprovisions = 40;
        let out = guard(
            plan_of(twenty.clone()),
            &WorkspaceSnapshot::default(),
            &settings,
            &input,
        );
        let reason = HoldReason::Threshold {
            class: ActionClass::Deprovision,
            window: ThresholdWindow::Day,
            planned: 20,
            recent: 40,
            limit: 50,
            managed: 100,
            by_percent: false,
        };
        assert!(out.actions.iter().all(|a| a.held.as_ref() == Some(&reason)));
        assert_eq!(
            reason.to_string(),
            "20 deprovisions planned + 40 in the last 24 h = 60, the 24 h limit is 50"
        );
        // Other classes do not count against deprovisions.
        input.recent = RecentCounts {
            deprovisions: 0,
            membership_removals: 1000,
            role_downgrades: 1000,
            deletions: 1000,
            renames: 1000,
        };
        let out = guard(
            plan_of(twenty.clone()),
            &WorkspaceSnapshot::default(),
            &settings,
            &input,
        );
        assert!(out.held().next().is_none());
        // The override skips thresholds only, not the incomplete-directory rule.
        let input = GuardInput {
            allow_over_threshold: true,
            recent: RecentCounts {
                deprovisions: 1000,
                ..RecentCounts::default()
            },
            ..COMPLETE
        };
        let out = guard(
            plan_of(twenty.clone()),
            &WorkspaceSnapshot::default(),
            &settings,
            &input,
        );
        assert!(out.held().next().is_none());
        let out = guard(
            plan_of(twenty),
            &WorkspaceSnapshot::default(),
            &settings,
            &GuardInput {
                directory_complete: false,
                ..input
            },
        );
        assert!(
            out.actions
                .iter()
                .all(|a| a.held == Some(HoldReason::IncompleteDirectory))
        );
    }

    #[test]
    fn the_24h_limit_uses_its_percentage_only_from_the_minimum_population() {
        let settings = GuardSettings {
            max_deprovision_percent: 5.0,
            max_deprovisions_per_day: 50,
            max_deprovision_percent_per_day: 10.0,
            min_population_for_percent: 100,
            ..GuardSettings::unlimited()
        };
        let limits = settings.limits(ActionClass::Deprovision);
        assert_eq!(
            day_limit(&limits, 100, 99),
            50,
            "under the minimum: the count"
        );
        assert_eq!(day_limit(&limits, 100, 100), 10);
        assert_eq!(day_limit(&limits, 100, 209), 20, "rounded down");
        assert_eq!(day_limit(&limits, 100, 1000), 50, "the count when tighter");
        // Each window has its own percentage.
        assert_eq!(run_limit(&limits, 100, 200), 10);
        assert_eq!(day_limit(&limits, 100, 200), 20);
        let nan = Limits {
            percent_per_day: f64::NAN,
            ..limits
        };
        assert_eq!(day_limit(&nan, 100, 200), 0);
    }

    /// The 24 h percentage counts what the 24 h count counts (what the store
    /// counted in the 24 h before, this run's plan, and what it could not read)
    /// and holds the whole class, saying it was the percentage; under
    /// `min_population_for_percent` it holds nothing, and other classes are
    /// untouched.
    #[test]
    fn the_24h_percentage_holds_the_class_with_its_reason() {
        let settings = GuardSettings {
            max_deprovisions: 25,
            max_deprovision_percent: 5.0,
            max_deprovisions_per_day: 50,
            max_deprovision_percent_per_day: 10.0,
            min_population_for_percent: 100,
            ..GuardSettings::unlimited()
        };
        let ws = WorkspaceSnapshot::default();
        let plan = || {
            let mut kinds: Vec<ActionKind> = (0..5).map(|i| deactivate(&i.to_string())).collect();
            kinds.push(demote("d", "Editor", Role::Viewer));
            plan_of(kinds)
        };
        let input = |managed, recent, unread| GuardInput {
            managed_accounts: managed,
            recent: RecentCounts {
                deprovisions: recent,
                ..RecentCounts::default()
            },
            unread: RecentCounts {
                deprovisions: unread,
                ..RecentCounts::default()
            },
            ..COMPLETE
        };
        // 200 managed: 10 a run, 20 a day. 15 + 5 = 20 is at the limit.
        assert_eq!(
            guard(plan(), &ws, &settings, &input(200, 15, 0))
                .held()
                .count(),
            0
        );
        for (recent, unread) in [(16, 0), (15, 1)] {
            let out = guard(plan(), &ws, &settings, &input(200, recent, unread));
            let reason = HoldReason::Threshold {
                class: ActionClass::Deprovision,
                window: ThresholdWindow::Day,
                planned: 5 + unread,
                recent,
                limit: 20,
                managed: 200,
                by_percent: true,
            };
            assert_eq!(
                held(&out),
                [
                    Some(reason.clone()),
                    Some(reason.clone()),
                    Some(reason.clone()),
                    Some(reason.clone()),
                    Some(reason),
                    None
                ],
                "{recent} recent, {unread} unread"
            );
        }
        let out = guard(plan(), &ws, &settings, &input(200, 16, 0));
        assert_eq!(
            out.actions[0]
                .held
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some(
                "5 deprovisions planned + 16 in the last 24 h = 21, the 24 h limit is 20 \
                 (by percentage, of 200 managed accounts)"
            )
        );
        // Under the minimum population only the count applies: 45 + 5 = 50.
        assert_eq!(
            guard(plan(), &ws, &settings, &input(99, 45, 0))
                .held()
                .count(),
            0
        );
        // The override lifts it as it lifts the others.
        let over = GuardInput {
            allow_over_threshold: true,
            ..input(200, 40, 0)
        };
        assert_eq!(guard(plan(), &ws, &settings, &over).held().count(), 0);
    }

    #[test]
    fn role_downgrades_compare_the_highest_current_role() {
        assert!(demote("1", "Owner", Role::Viewer).is_role_downgrade());
        assert!(demote("1", "editor", Role::Commenter).is_role_downgrade());
        assert!(!demote("1", "Viewer", Role::Editor).is_role_downgrade());
        // A value seatwarden does not know could be anything: away from it counts.
        assert!(demote("1", "Admin", Role::Viewer).is_role_downgrade());
        assert!(!demote("1", "Admin", Role::Owner).is_role_downgrade());
        let no_role = ActionKind::SetRole {
            account_id: "1".into(),
            from: Vec::new(),
            to: Role::Viewer,
        };
        assert!(!no_role.is_role_downgrade(), "nothing to lose");
        assert!(!deactivate("1").is_role_downgrade());
    }

    #[test]
    fn source_sanity_rejects_empty_and_shrunken_directories() {
        assert_eq!(check_source(0, None, 20.0), Err(SourceFault::Empty));
        assert_eq!(check_source(0, Some(0), 20.0), Err(SourceFault::Empty));
        assert_eq!(check_source(5, None, 20.0), Ok(()));
        assert_eq!(check_source(80, Some(100), 20.0), Ok(()));
        assert_eq!(check_source(200, Some(100), 20.0), Ok(()));
        let fault = check_source(10, Some(100), 20.0).unwrap_err();
        assert_eq!(
            fault,
            SourceFault::Shrank {
                previous: 100,
                current: 10,
                shrink_percent: 90.0,
                limit_percent: 20.0
            }
        );
        assert!(fault.to_string().contains("from 100 to 10 identities"));
        assert!(check_source(79, Some(100), 20.0).is_err());
    }

    #[test]
    fn settle_keys_are_digests_that_keys_stored_as_text_map_to() {
        let role = |to: Role| Action {
            seq: 0,
            kind: ActionKind::SetRole {
                account_id: "a1".into(),
                from: vec!["Viewer".into()],
                to,
            },
            reason: DriftKind::RoleDrift,
            subject: "s".into(),
            identity_id: Some("i1".into()),
            detail: String::new(),
            held: None,
        };
        let editor = settle_key(&role(Role::Editor)).unwrap();
        assert_eq!(editor.len(), 64, "{editor}");
        assert!(is_settle_digest(&editor), "{editor}");
        assert_ne!(editor, settle_key(&role(Role::Owner)).unwrap());
        // Before keys were hashed, the key was the kind's JSON: it maps to the
        // same digest, so an upgrade keeps every first-seen time.
        let stored = serde_json::to_string(&role(Role::Editor).kind).unwrap();
        assert_eq!(settle_key_of_stored(stored), editor);
        assert_eq!(settle_key_of_stored(editor.clone()), editor);
    }

    /// A member who joins a membership batch does not restart the wait of the
    /// members already settled: they go now, the newcomer waits in an action of
    /// its own appended to the plan.
    #[test]
    fn membership_batches_settle_member_by_member() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let settle = Duration::from_secs(600);
        let group = GroupRef::Existing {
            id: "g1".into(),
            display_name: "All Staff".into(),
        };
        let existing = |id: &str| AccountRef::Existing { id: id.into() };
        let add = |members: Vec<AccountRef>| ActionKind::AddMembers {
            group: group.clone(),
            members,
        };
        // a was first seen alone 30 minutes ago; b joined the batch just now.
        let earlier = plan_of(vec![add(vec![existing("a")])]);
        let seen: HashMap<String, DateTime<Utc>> = settle_keys(&earlier.actions[0])
            .into_iter()
            .map(|k| (k, t0 - chrono::Duration::minutes(30)))
            .collect();
        let plan = plan_of(vec![
            deactivate("x"),
            add(vec![existing("a"), existing("b")]),
        ]);
        assert_eq!(settle_keys(&plan.actions[1]).len(), 2);
        let out = hold_unsettled(plan, &seen, t0, settle);
        assert_eq!(out.actions.len(), 3);
        assert_eq!(out.actions[1].kind, add(vec![existing("a")]));
        assert_eq!(out.actions[1].held, None, "a has waited long enough");
        assert_eq!(out.actions[2].kind, add(vec![existing("b")]));
        assert_eq!(out.actions[2].seq, 2);
        assert_eq!(
            out.actions[2].held,
            Some(HoldReason::Settling {
                first_seen: t0,
                settles_at: t0 + chrono::Duration::minutes(10)
            })
        );
        // Nobody settled: the batch waits whole, nothing is split off.
        let fresh = hold_unsettled(
            plan_of(vec![add(vec![existing("a"), existing("b")])]),
            &HashMap::new(),
            t0,
            settle,
        );
        assert_eq!(fresh.actions.len(), 1);
        assert!(fresh.actions[0].held.is_some());
    }

    #[test]
    fn creates_and_updates_wait_for_the_settle_window_deprovisions_never() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let settle = Duration::from_secs(600);
        let plan = plan_of(vec![
            deactivate("1"),
            ActionKind::Reactivate {
                account_id: "2".into(),
            },
        ]);
        let key = settle_key(&plan.actions[1]).unwrap();
        assert_eq!(settle_key(&plan.actions[0]), None);

        let first = hold_unsettled(plan.clone(), &HashMap::new(), t0, settle);
        let settles_at = t0 + chrono::Duration::minutes(10);
        assert_eq!(
            held(&first),
            [
                None,
                Some(HoldReason::Settling {
                    first_seen: t0,
                    settles_at
                })
            ]
        );
        let seen = HashMap::from([(key, t0)]);
        let early = hold_unsettled(
            plan.clone(),
            &seen,
            t0 + chrono::Duration::minutes(9),
            settle,
        );
        assert!(early.actions[1].held.is_some());
        let later = hold_unsettled(plan.clone(), &seen, settles_at, settle);
        assert!(later.held().next().is_none());
        let off = hold_unsettled(plan, &HashMap::new(), t0, Duration::ZERO);
        assert!(off.held().next().is_none());
    }

    #[test]
    fn membership_changes_wait_with_the_create_they_need() {
        use crate::model::{AccountRef, GroupRef};
        let mut plan = plan_of(vec![
            ActionKind::CreateGroup {
                display_name: "New".into(),
            },
            ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "G".into(),
                },
                members: vec![AccountRef::Created {
                    identity_id: "p1".into(),
                }],
            },
            ActionKind::AddMembers {
                group: GroupRef::Created {
                    display_name: "new".into(),
                },
                members: vec![AccountRef::Existing { id: "a".into() }],
            },
            ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "G".into(),
                },
                members: vec![AccountRef::Existing { id: "a".into() }],
            },
        ]);
        plan.actions[0].held = Some(HoldReason::LastOwner);
        let out = hold_dependents(plan.clone());
        assert_eq!(
            held(&out),
            [
                Some(HoldReason::LastOwner),
                None,
                Some(HoldReason::LastOwner),
                None
            ]
        );
    }

    /// Without a mapping to Owner, demoting an Owner waits for a human; a leaving
    /// Owner's deactivation and other role changes do not, and with a mapping
    /// nothing is held for it.
    #[test]
    fn without_a_mapping_to_owner_owner_demotions_wait_for_a_human() {
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("o1", "Owner", true),
                account("o2", "Owner", true),
                account("o3", "Owner", true),
                account("e1", "Editor", true),
            ],
            ..WorkspaceSnapshot::default()
        };
        let set_role = |id: &str, from: &str, to: Role| ActionKind::SetRole {
            account_id: id.into(),
            from: vec![from.into()],
            to,
        };
        let plan = plan_of(vec![
            set_role("o1", "owner", Role::Editor),
            deactivate("o2"),
            set_role("e1", "Editor", Role::Viewer),
        ]);
        let unmapped = GuardSettings {
            owner_mapped: false,
            ..generous()
        };
        let out = guard(plan.clone(), &workspace, &unmapped, &COMPLETE);
        assert_eq!(
            held(&out),
            [Some(HoldReason::OwnerWithoutMapping), None, None]
        );
        let out = guard(plan, &workspace, &generous(), &COMPLETE);
        assert_eq!(held(&out), [None, None, None]);
    }

    /// One held create does not keep a group from the members whose accounts
    /// exist: the batch is split, and only the held create's member waits.
    #[test]
    fn a_held_create_holds_only_its_own_membership() {
        use crate::model::{AccountRef, GroupRef};
        let created = |id: &str| AccountRef::Created {
            identity_id: id.into(),
        };
        let existing = |id: &str| AccountRef::Existing { id: id.into() };
        let mut plan = plan_of(vec![
            ActionKind::CreateAccount {
                identity_id: "z".into(),
                spec: crate::model::AccountSpec {
                    user_name: "z@ex.com".into(),
                    external_id: "z".into(),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: None,
                    role: None,
                },
            },
            ActionKind::CreateAccount {
                identity_id: "y".into(),
                spec: crate::model::AccountSpec {
                    user_name: "y@ex.com".into(),
                    external_id: "y".into(),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: None,
                    role: None,
                },
            },
            ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "Eng".into(),
                },
                members: vec![existing("a"), created("z"), created("y"), existing("b")],
            },
        ]);
        plan.actions[0].held = Some(HoldReason::OutOfSight);
        let out = hold_dependents(plan);
        assert_eq!(out.actions.len(), 4);
        assert_eq!(
            out.actions[2].kind,
            ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "Eng".into(),
                },
                members: vec![existing("a"), created("y"), existing("b")],
            }
        );
        assert_eq!(out.actions[2].held, None);
        assert_eq!(
            out.actions[3].kind,
            ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "Eng".into(),
                },
                members: vec![created("z")],
            }
        );
        assert_eq!(out.actions[3].held, Some(HoldReason::OutOfSight));
        assert_eq!(out.actions[3].seq, 3);
    }

    /// A new hire given the userName a held rename would free waits with the
    /// rename: sent now, the create meets 409 on an account linked to someone else,
    /// fails, and counts against the circuit breaker on every run until then. Their
    /// memberships wait too; a create wanting another name goes.
    #[test]
    fn a_create_waits_for_the_held_rename_that_frees_its_user_name() {
        use crate::model::{AccountRef, GroupRef};
        let plan = plan_of(vec![
            rename("a", "ann@ex.com", "ann.smith@ex.com"),
            rename("b", "bo@ex.com", "bo.li@ex.com"),
            create("new-ann", "Ann@ex.com"),
            create("other", "cy@ex.com"),
            ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "Eng".into(),
                },
                members: vec![AccountRef::Created {
                    identity_id: "new-ann".into(),
                }],
            },
        ]);
        let settings = GuardSettings {
            max_renames: 1,
            ..generous()
        };
        let out = hold_dependents(guard(
            plan,
            &WorkspaceSnapshot::default(),
            &settings,
            &COMPLETE,
        ));
        let threshold = out.actions[0].held.clone();
        assert!(matches!(
            threshold,
            Some(HoldReason::Threshold {
                class: ActionClass::Rename,
                ..
            })
        ));
        assert_eq!(
            held(&out),
            [
                threshold.clone(),
                threshold.clone(),
                threshold.clone(),
                None,
                threshold
            ]
        );
    }

    /// A rename that wants the name a held rename would free waits too, and so
    /// does whatever wants the name that one frees in turn.
    #[test]
    fn a_chain_of_renames_waits_for_its_held_head() {
        let mut plan = plan_of(vec![
            rename("a", "ann@ex.com", "ann.smith@ex.com"),
            rename("b", "bo@ex.com", "ANN@ex.com"),
            rename("c", "cy@ex.com", "bo@ex.com"),
            create("new", "cy@ex.com"),
            rename("d", "di@ex.com", "dee@ex.com"),
        ]);
        plan.actions[0].held = Some(HoldReason::OutOfSight);
        let out = hold_dependents(plan);
        let waits = Some(HoldReason::OutOfSight);
        assert_eq!(
            held(&out),
            [waits.clone(), waits.clone(), waits.clone(), waits, None]
        );
    }

    /// A leaver's delete frees the userName a new hire was given, so the plan
    /// creates them; held (here by the deprovision threshold), the account keeps the
    /// name and the create would meet 409 every run. The create waits, saying for
    /// which delete and why that is held, and so do its memberships; a create
    /// wanting another name goes. Not held, the delete holds nothing.
    #[test]
    fn a_create_waits_for_the_held_delete_that_frees_its_user_name() {
        use crate::model::{AccountRef, GroupRef};
        let plan = plan_of(vec![
            ActionKind::Delete {
                account_id: "lv".into(),
                deactivated_since: None,
                frees_user_name: None,
            },
            deactivate("other-leaver"),
            create("new", "LV@ex.com"),
            create("other", "cy@ex.com"),
            ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "Eng".into(),
                },
                members: vec![AccountRef::Created {
                    identity_id: "new".into(),
                }],
            },
        ]);
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("lv", "Viewer", true),
                account("other-leaver", "Viewer", true),
                account("keeper", "Owner", true),
            ],
            groups: Vec::new(),
        };
        let out = hold_dependents(guard(plan.clone(), &workspace, &generous(), &COMPLETE));
        assert!(out.held().next().is_none(), "{:#?}", out.actions);

        let strict = GuardSettings {
            max_deprovisions: 1,
            ..generous()
        };
        let out = hold_dependents(guard(plan, &workspace, &strict, &COMPLETE));
        let threshold = out.actions[0].held.clone().unwrap();
        assert!(matches!(
            threshold,
            HoldReason::Threshold {
                class: ActionClass::Deprovision,
                ..
            }
        ));
        let waits = HoldReason::WaitsForDelete {
            account_id: "lv".into(),
            held: Box::new(threshold.clone()),
        };
        assert_eq!(
            held(&out),
            [
                Some(threshold.clone()),
                Some(threshold),
                Some(waits.clone()),
                None,
                Some(waits.clone())
            ]
        );
        let why = waits.to_string();
        assert!(
            why.starts_with("waits for the delete of account lv, which frees the userName")
                && why.contains("2 deprovisions planned, the per-run limit is 1"),
            "{why}"
        );
        // Stored in the journal and reports as JSON, and read back.
        let json = serde_json::to_string(&waits).unwrap();
        assert!(json.contains(r#""rule":"waits_for_delete""#), "{json}");
        assert_eq!(serde_json::from_str::<HoldReason>(&json).unwrap(), waits);
    }

    /// A chain behind a held delete: a rename wants the deleted account's name
    /// and a create wants the name that rename gives up. The guard holds both
    /// itself (the workspace, which names the deleted account's userName, is
    /// seen only here), each with the delete's reason.
    #[test]
    fn a_chain_of_renames_waits_for_the_held_delete_at_its_head() {
        let plan = plan_of(vec![
            ActionKind::Delete {
                account_id: "lv".into(),
                deactivated_since: None,
                frees_user_name: None,
            },
            rename("a", "ann@ex.com", "lv@EX.com"),
            create("new", "Ann@ex.com"),
            rename("d", "di@ex.com", "dee@ex.com"),
        ]);
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("lv", "Viewer", true),
                account("a", "Viewer", true),
                account("d", "Viewer", true),
                account("keeper", "Owner", true),
            ],
            groups: Vec::new(),
        };
        let out = guard(
            plan,
            &workspace,
            &GuardSettings {
                max_deprovisions: 0,
                ..generous()
            },
            &COMPLETE,
        );
        let threshold = out.actions[0].held.clone().unwrap();
        let waits = Some(HoldReason::WaitsForDelete {
            account_id: "lv".into(),
            held: Box::new(threshold.clone()),
        });
        assert_eq!(
            held(&out),
            [Some(threshold), waits.clone(), waits, None],
            "{:#?}",
            out.actions
        );
    }

    /// A provider may send several role values; Owner among them is an Owner.
    #[test]
    fn an_owner_with_several_role_values_is_still_the_last_owner() {
        let mut owner = account("o1", "Owner", true);
        owner.roles = vec!["Editor".into(), "Owner".into()];
        let workspace = WorkspaceSnapshot {
            accounts: vec![owner, account("e", "Editor", true)],
            groups: vec![],
        };
        let out = guard(
            plan_of(vec![deactivate("o1")]),
            &workspace,
            &generous(),
            &COMPLETE,
        );
        assert_eq!(
            out.actions
                .iter()
                .map(|a| a.held.clone())
                .collect::<Vec<_>>(),
            [Some(HoldReason::LastOwner)]
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
                deactivated_since: None,
                frees_user_name: None,
            },
            ActionKind::Reactivate {
                account_id: "o3".into(),
            },
        ]);
        let out = guard(both, &workspace, &generous(), &COMPLETE);
        assert_eq!(held(&out), [None, Some(HoldReason::LastOwner), None, None]);
    }

    /// One Owner leaves, the other is demoted and stays: the demotion is held, so
    /// the leaver loses access and the workspace keeps an active Owner.
    #[test]
    fn the_last_owner_kept_is_one_who_stays() {
        let workspace = WorkspaceSnapshot {
            accounts: vec![account("o1", "Owner", true), account("o2", "Owner", true)],
            groups: vec![],
        };
        let plan = plan_of(vec![
            deactivate("o1"),
            ActionKind::SetRole {
                account_id: "o2".into(),
                from: vec!["Owner".into()],
                to: Role::Editor,
            },
        ]);
        let out = guard(plan, &workspace, &generous(), &COMPLETE);
        assert_eq!(held(&out), [None, Some(HoldReason::LastOwner)]);
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
        // o1's deactivation is held by the deprovision limit.
        let settings = GuardSettings {
            max_deprovisions: 0,
            ..generous()
        };
        let out = guard(plan, &workspace, &settings, &COMPLETE);
        assert!(
            matches!(out.actions[0].held, Some(HoldReason::Threshold { .. })),
            "{:?}",
            out.actions[0].held
        );
        assert_eq!(
            out.actions[1].held, None,
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

    /// A look-alike group's members keep what it would take, and count against
    /// no threshold; a removal batch is split so that the others' removals go,
    /// and a leaver outside the group is deactivated as before, under a per-run
    /// limit of one that the held actions would otherwise have broken.
    #[test]
    fn look_alike_members_are_held_alone_and_not_counted() {
        let look_alike = crate::names::LookAlike {
            directory_group: "Taskade\u{200b} Users".into(),
            configured: "Taskade Users".into(),
            key: "policy.scope_groups".into(),
            differs: "a zero-width space (U+200B)".into(),
        };
        let member = crate::names::LookAlikeMember {
            deprovision: Some(look_alike.clone()),
            access: vec![crate::names::AccessLookAlike {
                look_alike: look_alike.clone(),
                gives: Some(vec![("Engineering".into(), Role::Editor)]),
            }],
        };
        let members: std::collections::BTreeMap<String, crate::names::LookAlikeMember> =
            ["i1", "i2"]
                .into_iter()
                .map(|i| (i.to_owned(), member.clone()))
                .collect();
        let owners: std::collections::HashMap<&str, &str> =
            [("a1", "i1"), ("a2", "i2"), ("a3", "i3"), ("a4", "i4")].into();
        let group = GroupRef::Existing {
            id: "g".into(),
            display_name: "Engineering".into(),
        };
        let mut plan = plan_of(vec![
            deactivate("a1"),
            deactivate("a2"),
            deactivate("a3"),
            ActionKind::RemoveMembers {
                group,
                members: vec!["a1".into(), "a4".into()],
            },
        ]);
        plan.actions[2].identity_id = Some("i3".into());
        let out = hold_look_alike_members(plan, &members, &owners, &BTreeSet::new());
        let settings = GuardSettings {
            max_deprovisions: 1,
            ..generous()
        };
        let out = guard(out, &WorkspaceSnapshot::default(), &settings, &COMPLETE);
        let rules: Vec<Option<&str>> = out
            .actions
            .iter()
            .map(|a| a.held.as_ref().map(HoldReason::rule))
            .collect();
        assert_eq!(
            rules,
            [
                Some("look_alike_group"),
                Some("look_alike_group"),
                None,
                None,
                Some("look_alike_group")
            ]
        );
        match (&out.actions[3].kind, &out.actions[4].kind) {
            (
                ActionKind::RemoveMembers { members: now, .. },
                ActionKind::RemoveMembers { members: held, .. },
            ) => {
                assert_eq!(now, &["a4"]);
                assert_eq!(held, &["a1"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out.actions[4].seq, 4);
    }

    /// A create or rename whose userName or email holds a character that does
    /// not show is held, naming the field and the character.
    #[test]
    fn hidden_characters_in_written_names_are_held() {
        let plan = plan_of(vec![
            create("i1", "erin\u{200b}@example.com"),
            create("i2", "fay@example.com"),
            rename("a3", "gus@example.com", "gus\u{a0}@example.com"),
            rename("a4", "hal@example.com", "hal2@example.com"),
        ]);
        let out = hold_hidden_characters(plan);
        let held: Vec<String> = out
            .actions
            .iter()
            .map(|a| a.held.as_ref().map(ToString::to_string).unwrap_or_default())
            .collect();
        assert!(held[0].contains("userName"), "{}", held[0]);
        assert!(
            held[0].contains("a zero-width space (U+200B)"),
            "{}",
            held[0]
        );
        assert!(held[1].is_empty());
        assert!(held[2].contains("a no-break space (U+00A0)"), "{}", held[2]);
        assert!(held[3].is_empty());
    }

    /// A joiner is hidden in what identifies an account even between letters
    /// of a script that writes words with it (the configuration refuses it in
    /// `safety.protected` alike: [`crate::names::hidden_in`]); a person's names,
    /// where it is part of writing, are not looked at.
    #[test]
    fn a_joiner_in_a_user_name_is_held_and_in_a_display_name_is_not() {
        let persian = "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}";
        let mut named = create("i2", "mina@example.com");
        if let ActionKind::CreateAccount { spec, .. } = &mut named {
            spec.display_name = Some(persian.to_owned());
            spec.given_name = Some("\u{1f469}\u{200d}\u{1f4bb}".to_owned());
        }
        let plan = plan_of(vec![create("i1", &format!("{persian}@example.com")), named]);
        let out = hold_hidden_characters(plan);
        let why = out.actions[0].held.as_ref().map(ToString::to_string);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("userName") && w.contains("U+200C")),
            "{why:?}"
        );
        assert_eq!(out.actions[1].held, None);
    }

    /// A mapping group's look-alike holds a downgrade only below the role its
    /// mapping gives, and never a deactivation: it gives no scope.
    #[test]
    fn a_mapping_look_alike_holds_only_what_its_mapping_gives() {
        let look_alike = crate::names::LookAlike {
            directory_group: "Engineering\u{a0}".into(),
            configured: "Engineering".into(),
            key: "policy.mapping[0].group".into(),
            differs: "a no-break space (U+00A0)".into(),
        };
        let member = crate::names::LookAlikeMember {
            deprovision: None,
            access: vec![crate::names::AccessLookAlike {
                look_alike,
                gives: Some(vec![("Engineering".into(), Role::Editor)]),
            }],
        };
        let members: std::collections::BTreeMap<String, crate::names::LookAlikeMember> =
            [("i1".to_owned(), member)].into();
        let owners: std::collections::HashMap<&str, &str> = [("a1", "i1")].into();
        let plan = plan_of(vec![
            demote("a1", "Owner", Role::Editor),
            demote("a1", "Owner", Role::Viewer),
            deactivate("a1"),
        ]);
        let out = hold_look_alike_members(plan, &members, &owners, &BTreeSet::new());
        let rules: Vec<Option<&str>> = out
            .actions
            .iter()
            .map(|a| a.held.as_ref().map(HoldReason::rule))
            .collect();
        assert_eq!(rules, [None, Some("look_alike_group"), None]);
    }

    /// A scope look-alike member's deactivation a person approved (its write
    /// failed since) is not held as a look-alike's again: the approval answered
    /// that hold's question, and the retry job sends it too. Another member's
    /// is held as before, and so is the approved member's role downgrade.
    #[test]
    fn an_approved_deprovision_is_not_held_as_a_look_alike_members_again() {
        let look_alike = crate::names::LookAlike {
            directory_group: "Taskade\u{200b}Users".into(),
            configured: "Taskade Users".into(),
            key: "policy.scope_group".into(),
            differs: "a zero-width space (U+200B)".into(),
        };
        let member = crate::names::LookAlikeMember {
            deprovision: Some(look_alike.clone()),
            access: vec![crate::names::AccessLookAlike {
                look_alike,
                gives: None,
            }],
        };
        let members: std::collections::BTreeMap<String, crate::names::LookAlikeMember> =
            ["i1", "i2"]
                .into_iter()
                .map(|i| (i.to_owned(), member.clone()))
                .collect();
        let owners: std::collections::HashMap<&str, &str> = [("a1", "i1"), ("a2", "i2")].into();
        let plan = plan_of(vec![
            deactivate("a1"),
            deactivate("a2"),
            demote("a1", "Owner", Role::Viewer),
        ]);
        let approved: BTreeSet<String> = ["a1".to_owned()].into();
        let out = hold_look_alike_members(plan, &members, &owners, &approved);
        let rules: Vec<Option<&str>> = out
            .actions
            .iter()
            .map(|a| a.held.as_ref().map(HoldReason::rule))
            .collect();
        assert_eq!(
            rules,
            [None, Some("look_alike_group"), Some("look_alike_group")]
        );
    }
}
