//! The safety net's steps inside a run (issue 6), around the pure rules in
//! [`crate::guard`] and [`crate::circuit`]: they read and write the store and, for
//! the workspace sanity re-check, the workspace. `run` calls them in order:
//!
//! 1. [`check_source`] once both sides are read: a rejected directory means
//!    nothing is planned; an accepted complete one becomes part of the baseline
//!    (the largest directory accepted in the 24 h before a run, else the last).
//! 2. [`plan_checked`]: plans, with the workspace sanity re-check — when the
//!    workspace listing has fewer accounts than the previous one (page caps,
//!    `totalResults` lies), every planned create of an account that was there last
//!    time is re-checked by a filter read first; accounts found go back into the
//!    snapshot (and the plan is made again), creates that cannot be confirmed are
//!    held ([`hold_unconfirmed`]).
//! 3. [`guard_input`]: the 24 h counts from the store for the thresholds (the
//!    24 h limits go by them, the count and the percentage alike).
//! 4. [`settle`] after the guard: creates and updates wait for the settle window.
//! 5. [`apply_with_circuit`]: apply behind the persisted circuit breaker.
//!
//! Also here: [`circuit_state`] (the read API the daemon publishes as a metric) and
//! the audit trail ([`audit`], [`os_user`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::apply::{self, ApplyError, ApplySummary};
use crate::circuit::{self, Breaker, CircuitRecord, CircuitSettings, CircuitState};
use crate::config::Config;
use crate::guard::{self, GuardInput, SourceFault};
use crate::model::{ActionKind, DirectorySnapshot, HoldReason, Plan, WorkspaceSnapshot};
use crate::plan::PlanSettings;
use crate::report::CircuitReport;
use crate::store::{AuditEntry, RunId, Store, StoreError};
use crate::workspace::ScimClient;

#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("applying the plan: {0}")]
    Apply(#[from] ApplyError),
    #[error("the state database lock was poisoned")]
    Poisoned,
}

impl crate::retry::Transient for SafetyError {
    fn is_transient(&self) -> bool {
        match self {
            SafetyError::Store(e) => e.is_transient(),
            SafetyError::Apply(e) => e.is_transient(),
            SafetyError::Poisoned => false,
        }
    }
}

fn lock(store: &Mutex<Store>) -> Result<std::sync::MutexGuard<'_, Store>, SafetyError> {
    store.lock().map_err(|_| SafetyError::Poisoned)
}

/// The workspace sanity re-check of `planned` (`make_plan(workspace)`, made by the
/// caller while it stored the snapshot): when the re-check finds accounts the
/// listing missed, the stored snapshot of `run` is replaced by the completed one (so
/// the next run compares against the whole workspace) and `make_plan` plans again.
/// `None` (the directory was rejected) plans nothing at all.
pub async fn plan_checked(
    client: &ScimClient,
    store: &Mutex<Store>,
    run: RunId,
    planned: Option<Plan>,
    workspace: &mut WorkspaceSnapshot,
    make_plan: impl Fn(&WorkspaceSnapshot) -> Plan,
) -> Result<(Plan, Recheck), SafetyError> {
    let Some(planned) = planned else {
        return Ok((Plan::default(), Recheck::default()));
    };
    let previous = larger_previous_workspace(&*lock(store)?, run, workspace.accounts.len())?;
    let recheck = recheck_shrunken_workspace(client, previous.as_ref(), workspace, &planned).await;
    if recheck.found == 0 {
        return Ok((planned, recheck));
    }
    lock(store)?.save_workspace_snapshot(run, workspace)?;
    Ok((make_plan(workspace), recheck))
}

/// Applies `plan` behind the circuit breaker: nothing is written while the stored
/// breaker is open; otherwise the executor runs with a fresh [`Breaker`] and an
/// opening (or a failed half-open trial) is stored. Returns the breaker for the
/// report when it is not closed.
pub async fn apply_with_circuit(
    config: &Config,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    run: RunId,
    plan: &Plan,
    relist_requests: usize,
    now: DateTime<Utc>,
) -> Result<Option<CircuitReport>, SafetyError> {
    let (before, record) = circuit_state(&*lock(store)?, config, now)?;
    if !before.allows_writes() {
        tracing::warn!(circuit = %before, "circuit breaker open: nothing written this run");
        // Linking writes nothing to the workspace (apply would have stored them).
        lock(store)?.upsert_links(&plan.new_links, chrono::Utc::now())?;
        return Ok(Some(circuit_report(&record, config, now)));
    }
    let writing = std::time::Instant::now();
    let summary = apply::apply_with_breaker(
        client,
        store,
        run,
        plan,
        config.workspace.max_concurrency,
        relist_requests,
        Breaker::new(config.circuit_settings()),
        now,
        &config.admin_command(),
    )
    .await?;
    let applied_at = apply::later_by(now, writing);
    tracing::info!(
        applied = summary.applied,
        failed = summary.failed,
        "plan applied"
    );
    let opened = record_circuit(
        &mut *lock(store)?,
        before,
        &summary,
        &config.circuit_settings(),
        applied_at,
    )?;
    Ok(match opened {
        Some(record) => Some(circuit_report(&record, config, applied_at)),
        // A trial too small to tell leaves it half-open: reported as it is, so
        // its alert is not resolved as if it had closed.
        None => {
            let record = lock(store)?.circuit()?;
            record
                .opened_at
                .is_some()
                .then(|| circuit_report(&record, config, applied_at))
        }
    })
}

/// The breaker as the report shows it.
pub fn circuit_report(
    record: &CircuitRecord,
    config: &Config,
    now: DateTime<Utc>,
) -> CircuitReport {
    CircuitReport {
        state: circuit::state(record, now, config.circuit_settings().cool_down),
        reason: record.reason.clone(),
        failures: record.failures.clone(),
    }
}

/// Whether a run's source check may change what later runs are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCheck {
    /// A reconcile: an accepted complete snapshot becomes the baseline, and an
    /// `--accept-directory` is audited.
    Record,
    /// `plan` and `reconcile --dry-run`: judged against the baseline, which stays
    /// as it was. Otherwise a preview of a shrinking export, run a few times, would
    /// walk the baseline down until the real run saw no shrink at all.
    Preview,
}

/// What a directory read at `now` is measured against for the source check
/// ([`Store::shrink_baseline`] over the 24 h before `now`): the reconcile's, the
/// sweep's and `approve`'s reads alike. A directory accepted more than
/// [`crate::circuit::CLOCK_STEP_MARGIN`] ahead of `now` (by a clock since set
/// back) is out of the window, not in it until the clock catches up.
pub fn shrink_baseline_at(store: &Store, now: DateTime<Utc>) -> Result<Option<usize>, StoreError> {
    store.shrink_baseline(
        now - chrono::Duration::hours(24),
        now + crate::circuit::CLOCK_STEP_MARGIN,
    )
}

/// Source sanity for the directory snapshot of `run`, measured against
/// [`Store::shrink_baseline`]: the largest directory accepted in the 24 h before
/// `now` (else the last accepted), so that runs each shrinking a little less than
/// the limit cannot walk it down within a day. `None`: accepted (recorded for the
/// baseline when the snapshot was complete and `check` records); `Some`: rejected.
pub fn check_source(
    store: &mut Store,
    run: RunId,
    directory: &DirectorySnapshot,
    config: &Config,
    accept_shrunk: bool,
    check: SourceCheck,
    now: DateTime<Utc>,
) -> Result<Option<SourceFault>, StoreError> {
    let last = shrink_baseline_at(store, now)?;
    let identities = directory.identities.len();
    let checked = guard::check_source(identities, last, config.safety.max_directory_shrink_percent);
    let checked = match checked {
        // `reconcile --accept-directory`: a person said this shrink is real (a
        // layoff, a new scope). Never an empty directory.
        Err(SourceFault::Shrank {
            previous,
            current,
            shrink_percent,
            limit_percent,
        }) if accept_shrunk => {
            match check {
                SourceCheck::Record => {
                    tracing::warn!(
                        run,
                        previous,
                        current,
                        "shrunken directory accepted by --accept-directory"
                    );
                    audit(
                        store,
                        "accept_directory",
                        Some(run),
                        format!(
                            "accepted: the directory shrank from {previous} to {current} \
                             identities ({shrink_percent:.1}% fewer, the limit is {limit_percent}%)"
                        ),
                        now,
                    )?;
                }
                SourceCheck::Preview => tracing::warn!(
                    run,
                    previous,
                    current,
                    "shrunken directory planned from as --accept-directory would accept it; \
                     a dry run records neither the acceptance nor a new baseline"
                ),
            }
            Ok(())
        }
        other => other,
    };
    match checked {
        Ok(()) => {
            // An incomplete snapshot is no baseline: the next complete one would look
            // like growth, and a later shrink would be measured from too low.
            if directory.complete && check == SourceCheck::Record {
                store.accept_directory(run, identities, now)?;
            }
            Ok(None)
        }
        Err(fault) => {
            tracing::error!(run, fault = %fault, "directory snapshot rejected");
            store.mark_directory_refused(run, &fault.to_string())?;
            Ok(Some(fault))
        }
    }
}

/// The plan settings at `now` (the exceptions in force then), with
/// `protected_groups` resolved against this directory.
pub fn plan_settings(
    config: &Config,
    directory: &DirectorySnapshot,
    now: DateTime<Utc>,
) -> PlanSettings {
    let mut settings = config.plan_settings(now);
    settings.protected = settings
        .protected
        .with_members_of(&config.safety.protected_groups, directory);
    settings
}

/// [`plan_settings`] with the retention clocks of deactivated accounts from the
/// store, judged at `now` (read only when deprovisioning deletes after a period).
pub fn plan_settings_at(
    config: &Config,
    directory: &DirectorySnapshot,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<PlanSettings, StoreError> {
    let mut settings = plan_settings(config, directory, now);
    settings.protected = with_departed(settings.protected, directory, store)?;
    settings.retention.now = now;
    if settings.deprovision == crate::plan::DeprovisionAction::Delete
        && settings.retention.delete_after > chrono::TimeDelta::zero()
    {
        settings.retention.deactivated_since = store.deactivated_since()?;
    }
    Ok(settings)
}

/// `protected` knowing the people `directory` no longer has by the names their
/// open deprovisions keep in the ledger
/// ([`crate::policy::Protected::with_departed`]): an exception naming a deleted
/// person's directory userName keeps their account in the reconcile as in the
/// sweep. Read only while an exception is in force.
pub fn with_departed(
    protected: crate::policy::Protected,
    directory: &DirectorySnapshot,
    store: &Store,
) -> Result<crate::policy::Protected, StoreError> {
    if !protected.has_exceptions() {
        return Ok(protected);
    }
    let named: Vec<(String, String)> = store
        .open_deprovisions()?
        .into_iter()
        .filter(|e| protected.exception_names(&e.user_name))
        .map(|e| (e.identity_id, e.user_name))
        .collect();
    if named.is_empty() {
        return Ok(protected);
    }
    let present: HashSet<&str> = directory.identities.iter().map(|i| i.id.as_str()).collect();
    Ok(protected.with_departed(
        named
            .into_iter()
            .filter(|(identity_id, _)| !present.contains(identity_id.as_str())),
    ))
}

/// How a reconcile changes the retention clocks (`deactivated_accounts`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClockChanges {
    /// Clocks to start now (kept ones keep their start).
    pub start: Vec<String>,
    pub forget: Vec<String>,
}

/// The clock changes a reconcile makes from what it saw. Forgetting is always
/// safe (a clock only ever restarts later), so an account the workspace shows
/// active loses its clock whatever else the run could trust. Starting or keeping
/// a clock needs a complete, accepted directory (`trusted`). An account a
/// listing left out keeps its clock unless the listing was read whole
/// (`workspace_whole`): a short listing proves no account gone.
pub fn clock_changes(
    clocks: &BTreeMap<String, DateTime<Utc>>,
    retained: &[String],
    workspace: &WorkspaceSnapshot,
    trusted: bool,
    workspace_whole: bool,
) -> ClockChanges {
    let seen: HashMap<&str, bool> = workspace
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a.active))
        .collect();
    let retained_set: HashSet<&str> = retained.iter().map(String::as_str).collect();
    let forget = clocks
        .keys()
        .filter(|id| match seen.get(id.as_str()) {
            Some(true) => true,
            Some(false) => trusted && !retained_set.contains(id.as_str()),
            None => trusted && workspace_whole,
        })
        .cloned()
        .collect();
    let start = if trusted {
        retained
            .iter()
            .filter(|id| !clocks.contains_key(*id))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    ClockChanges { start, forget }
}

/// The groups the configuration names, each with its key: `policy.scope_groups`,
/// `policy.mapping[i].group`, `safety.protected_groups` (see [`crate::names`]);
/// the directory groups `safety.distinct_groups` declares other groups are no
/// look-alikes of them.
pub fn configured_groups(config: &Config) -> crate::names::ConfiguredGroups {
    let mut configured = crate::names::ConfiguredGroups::default();
    for group in &config.policy.scope_groups {
        configured.add(group, crate::names::SCOPE_GROUPS_KEY.to_owned());
    }
    for (index, mapping) in config.policy.mapping.iter().enumerate() {
        configured.add(&mapping.group, format!("policy.mapping[{index}].group"));
    }
    for group in &config.safety.protected_groups {
        configured.add(group, crate::names::PROTECTED_GROUPS_KEY.to_owned());
    }
    for group in &config.safety.distinct_groups {
        configured.declare_distinct(group);
    }
    configured
}

/// The live directory's names that differ from the configuration's only in what
/// does not show: what would take access from a person in a directory group so
/// named is held ([`guard::hold_look_alike_members`]), and so is a create or
/// update that would write such a userName or email
/// ([`guard::hold_hidden_characters`]). Each look-alike group is logged, naming
/// the configured group and key and what differs. `links` are the stored links;
/// the plan's new ones are added. `approved` are the accounts whose deprovision
/// a person approved and whose write failed ([`approved_deprovision_accounts`]):
/// not asked about again. Before [`guard::guard`].
pub fn hold_look_alikes(
    mut plan: Plan,
    config: &Config,
    directory: &DirectorySnapshot,
    links: &[crate::model::Link],
    approved: &BTreeSet<String>,
) -> Plan {
    let members = crate::names::look_alike_members(
        &directory.identities,
        &configured_groups(config),
        &config.policy_settings(),
    );
    if !members.is_empty() {
        for (look_alike, people) in crate::names::look_alike_groups(&members) {
            tracing::warn!(
                group = ?look_alike.directory_group,
                configured = ?look_alike.configured,
                key = %look_alike.key,
                differs = %look_alike.differs,
                people,
                "a directory group differs from a configured group only in characters that \
                 do not show; what it would take from its members is held"
            );
        }
        let new_links = std::mem::take(&mut plan.new_links);
        plan = {
            let owners: HashMap<&str, &str> = links
                .iter()
                .map(|l| (l.account_id.as_str(), l.identity_id.as_str()))
                .chain(
                    new_links
                        .iter()
                        .map(|l| (l.account_id.as_str(), l.identity_id.as_str())),
                )
                .collect();
            guard::hold_look_alike_members(plan, &members, &owners, approved)
        };
        plan.new_links = new_links;
    }
    guard::hold_hidden_characters(plan)
}

/// The guard's settings for a plan made from `desired`. A mapping to Owner that
/// gives Owner to nobody in the directory (a misspelt group in an export, which
/// cannot show an empty group, or an Owners group emptied) counts as no mapping:
/// every Owner would be planned down, so each demotion waits for a human
/// ([`HoldReason::OwnerWithoutMapping`]). Likewise a managed workspace group no
/// mapping gives to anyone would be emptied: removing its members waits for a
/// human ([`HoldReason::GroupGrantedToNobody`]).
pub fn guard_settings(
    config: &Config,
    desired: &crate::policy::DesiredState<'_>,
) -> guard::GuardSettings {
    let mut settings = config.guard_settings();
    if settings.owner_mapped
        && !desired
            .active
            .iter()
            .any(|(_, account)| account.spec.role == Some(crate::model::Role::Owner))
    {
        let owner_groups: Vec<&str> = config
            .policy
            .mapping
            .iter()
            .filter(|mapping| mapping.role == crate::model::Role::Owner)
            .map(|mapping| mapping.group.as_str())
            .collect();
        tracing::warn!(
            groups = %owner_groups.join(", "),
            "policy.mapping gives Owner, but nobody in the directory is in its group \
             (check its spelling, and that it has members): demotions of Owners are held \
             for a human"
        );
        settings.owner_mapped = false;
    }
    let granted: BTreeSet<String> = desired
        .active
        .granted_groups()
        .into_iter()
        .map(crate::policy::fold_group_name)
        .collect();
    settings.granted_to_nobody = desired
        .managed_groups
        .iter()
        .map(|group| crate::policy::fold_group_name(group))
        .filter(|group| !granted.contains(group))
        .collect();
    for group in &settings.granted_to_nobody {
        // As the configuration spells it, with the directory groups that would
        // give it: those are what to check, not the folded name compared.
        let mappings =
            config.policy.mapping.iter().filter(|mapping| {
                crate::policy::fold_group_name(&mapping.workspace_group) == *group
            });
        let spelt = mappings
            .clone()
            .map(|mapping| mapping.workspace_group.as_str())
            .next()
            .unwrap_or(group);
        let from: Vec<&str> = mappings.map(|mapping| mapping.group.as_str()).collect();
        tracing::warn!(
            group = %spelt,
            directory_groups = %from.join(", "),
            "policy.mapping names this workspace group, but gives it to nobody in the \
             directory: removals of its members are held for a human"
        );
    }
    settings
}

/// The guard's input: what the run knows plus the store's 24 h counts.
pub fn guard_input(
    store: &Store,
    now: DateTime<Utc>,
    directory_complete: bool,
    managed_accounts: usize,
    allow_over_threshold: bool,
) -> Result<GuardInput, StoreError> {
    Ok(GuardInput {
        directory_complete,
        managed_accounts,
        recent: store.recent_counts(now - chrono::Duration::hours(24))?,
        allow_over_threshold,
        unread: crate::model::RecentCounts::default(),
    })
}

/// The accounts whose deprovision a person approved (`seatwarden approve`, its
/// decision the newest about it) in the open ledger episode it belongs to: its
/// write failed or was kept back, and the retry job (or the next reconcile, if
/// it comes first) sends it again without holding it by the thresholds the
/// approval decided over ([`crate::guard::guard_approved`]). An approval older
/// than the episode (the person came back, and left again since) decides
/// nothing about it.
pub fn approved_deprovision_accounts(store: &Store) -> Result<BTreeSet<String>, StoreError> {
    approved_accounts(store, |_| true)
}

/// [`approved_deprovision_accounts`], of approvals that released a look-alike
/// group's hold (`look_alike_group`): what [`hold_look_alikes`] does not ask
/// about again. An approval over a threshold answered another question (how
/// many may go at once), so a person put in a look-alike group since is held
/// for a decision like any other member.
pub fn approved_look_alike_deprovision_accounts(
    store: &Store,
) -> Result<BTreeSet<String>, StoreError> {
    approved_accounts(store, |approval| approval.look_alike)
}

fn approved_accounts(
    store: &Store,
    counts: impl Fn(&crate::store::ApprovedDeprovision) -> bool,
) -> Result<BTreeSet<String>, StoreError> {
    let open = store.open_deprovisions()?;
    let identities: Vec<String> = open.iter().map(|e| e.identity_id.clone()).collect();
    let approved = store.approved_deprovisions(&identities)?;
    let mut accounts = BTreeSet::new();
    for episode in &open {
        let Some(approval) = approved.get(&episode.identity_id).filter(|a| counts(a)) else {
            continue;
        };
        if approval.at < episode.detected_at {
            continue;
        }
        accounts.extend(episode.account_id.iter().cloned());
        accounts.extend(approval.accounts.iter().cloned());
    }
    Ok(accounts)
}

/// The open episodes whose deprovision a person approved since they began
/// and a newer `reject` took back (of a run that held it again, or of the
/// approved run before it sent it), by identity: the approval released the
/// hold no longer, so the retry job does not send it
/// ([`crate::sweep::hold_rejected_approvals`]). A reconcile plans it again
/// from the directory, where its guard judges it as any other (holding a
/// look-alike member's for a new decision); one that plans it unheld after
/// the rejection is the newer word, and the retry job sends a write of it
/// that failed ([`Store::unheld_deprovisions_planned`]).
pub fn rejected_approvals(
    store: &Store,
) -> Result<HashMap<String, (crate::sla::LedgerEntry, crate::store::RejectedApproval)>, StoreError>
{
    let open = store.open_deprovisions()?;
    let identities: Vec<String> = open.iter().map(|e| e.identity_id.clone()).collect();
    let mut rejected = store.rejected_approvals(&identities)?;
    let rejected_people: Vec<String> = rejected.keys().cloned().collect();
    let planned_unheld = store.unheld_deprovisions_planned(&rejected_people)?;
    Ok(open
        .into_iter()
        .filter_map(|episode| {
            let decided = rejected.remove(&episode.identity_id)?;
            // A reconcile since the rejection planned it and held nothing (the
            // person left the look-alike group, the thresholds allow it now):
            // that plan is newer than the rejection and decides, so a write of
            // it that failed is the retry job's to send on its backoff, not
            // left to the next reconcile while the leaver keeps access.
            if planned_unheld
                .get(&episode.identity_id)
                .is_some_and(|&planned| planned > decided.rejection.at)
            {
                return None;
            }
            // An approval older than the episode decided an earlier one.
            (decided.approval.at >= episode.detected_at)
                .then(|| (episode.identity_id.clone(), (episode, decided)))
        })
        .collect())
}

/// What the workspace sanity re-check found.
#[derive(Debug, Default)]
pub struct Recheck {
    /// Accounts the listing missed that a filter read found (now in the snapshot).
    pub found: usize,
    /// Identity ids whose create could not be confirmed (the filter read failed).
    pub unconfirmed: HashSet<String>,
    pub previous: usize,
    pub current: usize,
}

/// The previous run's workspace snapshot when it had more accounts than `current`
/// (the workspace sanity trigger); `None` otherwise. Counts first, so the common
/// case loads nothing.
fn larger_previous_workspace(
    store: &Store,
    run: RunId,
    current: usize,
) -> Result<Option<WorkspaceSnapshot>, StoreError> {
    let Some(previous) = store.previous_workspace_run(run)? else {
        return Ok(None);
    };
    if store.workspace_account_count(previous)? <= current {
        return Ok(None);
    }
    store.load_workspace_snapshot(previous)
}

/// Workspace sanity: see the module docs. `previous` is the larger snapshot of the
/// previous run ([`larger_previous_workspace`]); costs one filter read per create
/// of a userName that snapshot had.
async fn recheck_shrunken_workspace(
    client: &ScimClient,
    previous: Option<&WorkspaceSnapshot>,
    workspace: &mut WorkspaceSnapshot,
    plan: &Plan,
) -> Recheck {
    let Some(previous) = previous else {
        return Recheck::default();
    };
    let mut recheck = Recheck {
        previous: previous.accounts.len(),
        current: workspace.accounts.len(),
        ..Recheck::default()
    };
    if recheck.current >= recheck.previous {
        return recheck;
    }
    // Keyed trimmed, as the plan matches userNames (`plan::name_key`), and read
    // by the userName the previous snapshot had: a listing that missed
    // "alice@x.com " is re-checked for the create of alice@x.com, and a filter
    // for "alice@x.com" would not find it (white space is part of the value a
    // provider compares).
    let mut seen_before: HashMap<String, Vec<&str>> = HashMap::new();
    for account in &previous.accounts {
        let spellings = seen_before
            .entry(crate::model::fold_case(account.user_name.trim()))
            .or_default();
        if !spellings
            .iter()
            .any(|s| crate::model::same_ci(s, &account.user_name))
        {
            spellings.push(&account.user_name);
        }
    }
    let mut present: HashSet<String> = workspace.accounts.iter().map(|a| a.id.clone()).collect();
    for action in &plan.actions {
        let ActionKind::CreateAccount { identity_id, spec } = &action.kind else {
            continue;
        };
        let Some(spellings) = seen_before.get(&crate::model::fold_case(spec.user_name.trim()))
        else {
            continue;
        };
        for user_name in spellings {
            match client.find_account_by_user_name(user_name).await {
                Ok(Some(account)) => {
                    if present.insert(account.id.clone()) {
                        workspace.accounts.push(account);
                        recheck.found += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "workspace sanity: filter read failed; holding the create");
                    recheck.unconfirmed.insert(identity_id.clone());
                    break;
                }
            }
        }
    }
    if recheck.found > 0 {
        tracing::warn!(
            previous = recheck.previous,
            current = recheck.current,
            found = recheck.found,
            "the workspace listing missed accounts a filter read found; planning with them"
        );
    }
    recheck
}

/// Holds the creates of identities whose last attempted create met a 409 with no
/// visible account ([`HoldReason::OutOfSight`]): sending it again each run only
/// fails again (and counts against the circuit breaker). `seatwarden approve`
/// sends it once more, after a person has looked.
pub fn hold_out_of_sight(mut plan: Plan, out_of_sight: &std::collections::HashSet<String>) -> Plan {
    if out_of_sight.is_empty() {
        return plan;
    }
    for action in &mut plan.actions {
        if let ActionKind::CreateAccount { identity_id, .. } = &action.kind
            && action.held.is_none()
            && out_of_sight.contains(identity_id)
        {
            action.held = Some(HoldReason::OutOfSight);
        }
    }
    plan
}

/// Holds the creates the workspace sanity re-check could not confirm.
pub fn hold_unconfirmed(mut plan: Plan, recheck: &Recheck) -> Plan {
    if recheck.unconfirmed.is_empty() {
        return plan;
    }
    for action in &mut plan.actions {
        if let ActionKind::CreateAccount { identity_id, .. } = &action.kind
            && action.held.is_none()
            && recheck.unconfirmed.contains(identity_id)
        {
            action.held = Some(HoldReason::WorkspaceShrunk {
                previous: recheck.previous,
                current: recheck.current,
            });
        }
    }
    guard::hold_dependents(plan)
}

/// The settle window: records when each pending create/update was first seen and
/// holds those seen for less than `safety.settle`.
pub fn settle(
    store: &mut Store,
    plan: Plan,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Plan, StoreError> {
    // Nothing waits without a settle window: no first-seen times to keep (a first
    // run creating 100k accounts in groups would hash and store a key for every
    // one of them and every membership).
    let keys: Vec<String> = if config.settle().is_zero() {
        Vec::new()
    } else {
        plan.actions.iter().flat_map(guard::settle_keys).collect()
    };
    let first_seen = store.replace_drift_seen(&keys, now)?;
    let plan = guard::hold_unsettled(plan, &first_seen, now, config.settle());
    Ok(guard::hold_dependents(plan))
}

/// The circuit breaker's state at `now`: the read API the daemon publishes as a
/// metric (`closed`, `open` since/until, `half_open`).
pub fn circuit_state(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<(CircuitState, CircuitRecord), StoreError> {
    let record = store.circuit()?;
    Ok((
        circuit::state(&record, now, config.circuit_settings().cool_down),
        record,
    ))
}

/// After an apply: persists an opening (as the executor stamped it when the
/// breaker tripped); closes a half-open circuit the apply got through, opens it
/// again at `applied_at` when the trial failed, and leaves it half-open when the
/// trial was too small to tell ([`circuit::trial`]).
///
/// Both stamps are on the run's clock ([`apply::later_by`]): the cool-down runs
/// from when the writes stopped, not from the start of a run that spent most of
/// the cool-down reading, nor from the end of the verification after them.
pub fn record_circuit(
    store: &mut Store,
    before: CircuitState,
    applied: &ApplySummary,
    settings: &CircuitSettings,
    applied_at: DateTime<Utc>,
) -> Result<Option<CircuitRecord>, StoreError> {
    let now = applied_at;
    let half_open = matches!(before, CircuitState::HalfOpen { .. });
    let trial = if half_open {
        circuit::trial(settings, applied.applied, applied.failed)
    } else {
        circuit::Trial::Undecided
    };
    let opened = applied.circuit_opened.clone().or_else(|| match &trial {
        circuit::Trial::Failed(reason) => Some(CircuitRecord {
            opened_at: Some(now),
            reason: Some(reason.clone()),
            failures: Vec::new(),
        }),
        circuit::Trial::Passed | circuit::Trial::Undecided => None,
    });
    match opened {
        Some(mut record) => {
            // The executor stamped the moment it tripped: the cool-down and the
            // report's "open since" run from then, not from the end of a
            // verification that came after.
            record.opened_at.get_or_insert(now);
            store.set_circuit(&record)?;
            Ok(Some(record))
        }
        None => {
            if trial == circuit::Trial::Passed {
                store.set_circuit(&CircuitRecord::default())?;
            }
            Ok(None)
        }
    }
}

/// Who is running this command, for the audit trail (see [`audit_user`]).
pub fn os_user() -> String {
    #[cfg(unix)]
    let uid = {
        use std::os::unix::fs::MetadataExt;
        // The owner of our own /proc entry is our uid; no libc call needed.
        std::fs::metadata("/proc/self").ok().map(|meta| meta.uid())
    };
    #[cfg(not(unix))]
    let uid = None;
    audit_user(
        |name| std::env::var(name).ok(),
        uid,
        |uid| {
            std::fs::read_to_string("/etc/passwd")
                .ok()
                .and_then(|passwd| passwd_name(&passwd, uid))
        },
    )
}

/// The account `uid` names in `passwd` (the text of `/etc/passwd`), as
/// `getpwuid` finds it there: the first entry with that uid. Accounts only a
/// directory service knows (sssd, LDAP through NSS) are not in the file: those
/// stay `uid N`, as does a uid a container runs under with no entry.
pub fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let _password = fields.next()?;
            let entry_uid: u32 = fields.next()?.trim().parse().ok()?;
            (entry_uid == uid && !name.is_empty() && !name.starts_with(['+', '-']))
                .then(|| name.to_owned())
        })
}

/// The person behind a command: `$SEATWARDEN_OPERATOR` (set it with `docker exec
/// -e`), else `$SUDO_USER` unless root (`seatwarden-admin` passes it; systemd sets
/// `USER` to the service's own user), each followed by the account the command
/// runs as when that differs; else that account: `$USER`, `$LOGNAME`, the name
/// the password database gives the uid (`account_of`: root in a container, or
/// a systemd service, often has neither variable), else the uid itself.
pub fn audit_user(
    env: impl Fn(&str) -> Option<String>,
    uid: Option<u32>,
    account_of: impl Fn(u32) -> Option<String>,
) -> String {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let account = var("USER")
        .or_else(|| var("LOGNAME"))
        .or_else(|| uid.and_then(&account_of))
        .or_else(|| uid.map(|uid| format!("uid {uid}")))
        .unwrap_or_else(|| "unknown".to_owned());
    let person = var("SEATWARDEN_OPERATOR").or_else(|| var("SUDO_USER").filter(|u| u != "root"));
    match person {
        Some(person) if person != account => format!("{person} (as {account})"),
        Some(person) => person,
        None => account,
    }
}

/// Appends an audit row for `command` by the OS user.
pub fn audit(
    store: &mut Store,
    command: &str,
    run: Option<RunId>,
    detail: String,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    store.record_audit(&AuditEntry {
        at: now,
        user: os_user(),
        command: command.to_owned(),
        run,
        detail,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{AccountRef, AccountSpec, Action, DriftKind, GroupRef};

    fn action(seq: u32, kind: ActionKind) -> Action {
        Action {
            seq,
            kind,
            reason: DriftKind::MissingAccount,
            subject: format!("s{seq}"),
            identity_id: None,
            detail: String::new(),
            held: None,
        }
    }

    fn create(identity: &str) -> ActionKind {
        ActionKind::CreateAccount {
            identity_id: identity.into(),
            spec: AccountSpec {
                user_name: format!("{identity}@ex.com"),
                external_id: identity.into(),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                role: None,
            },
        }
    }

    fn account(id: &str, active: bool) -> crate::model::Account {
        crate::model::Account {
            id: id.into(),
            user_name: format!("{id}@ex.com"),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            active,
            roles: Vec::new(),
        }
    }

    /// The listing missed "alice@x.com " (white space kept by the provider):
    /// the create of alice@x.com, which matching takes for that account, is
    /// re-checked, and by the previous snapshot's userName, so the filter finds
    /// it and the plan is made again with it instead of creating her twice.
    #[tokio::test]
    async fn the_shrunken_workspace_recheck_compares_user_names_trimmed() {
        use crate::sandbox::{Sandbox, SandboxOptions};
        use crate::workspace::ScimSettings;
        let mut held = account("a1", true);
        held.user_name = "Alice@ex.com ".into();
        let other = account("b1", true);
        let seed = WorkspaceSnapshot {
            accounts: vec![held.clone(), other.clone()],
            groups: Vec::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox = Sandbox::start(
            listener,
            SandboxOptions {
                token: "t".into(),
                ..SandboxOptions::default()
            },
            seed.clone(),
        )
        .await
        .unwrap();
        let client = ScimClient::new(ScimSettings::for_test(sandbox.base_url())).unwrap();
        let mut workspace = WorkspaceSnapshot {
            accounts: vec![other],
            groups: Vec::new(),
        };
        let mut alice = create("alice");
        if let ActionKind::CreateAccount { spec, .. } = &mut alice {
            spec.user_name = "alice@ex.com".into();
        }
        let plan = Plan {
            actions: vec![action(1, alice)],
            ..Plan::default()
        };
        let recheck = recheck_shrunken_workspace(&client, Some(&seed), &mut workspace, &plan).await;
        sandbox.shutdown().await;
        assert_eq!(recheck.found, 1, "{recheck:?}");
        assert!(recheck.unconfirmed.is_empty());
        assert!(workspace.accounts.iter().any(|a| a.id == "a1"));
    }

    /// Forgetting a clock is always safe; starting or keeping one needs a
    /// trusted directory; a short listing proves no account gone.
    #[test]
    fn clocks_are_forgotten_when_seen_active_and_kept_when_out_of_sight() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let clocks: BTreeMap<String, DateTime<Utc>> = ["active", "justified", "kept", "unseen"]
            .into_iter()
            .map(|id| (id.to_owned(), t))
            .collect();
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("active", true),
                account("justified", false),
                account("kept", false),
                account("new", false),
            ],
            groups: Vec::new(),
        };
        let retained = ["kept".to_owned(), "new".to_owned()];
        let changes = |trusted, whole| {
            let mut c = clock_changes(&clocks, &retained, &workspace, trusted, whole);
            c.forget.sort();
            c
        };
        assert_eq!(
            changes(true, true),
            ClockChanges {
                start: vec!["new".into()],
                forget: vec!["active".into(), "justified".into(), "unseen".into()],
            }
        );
        assert_eq!(
            changes(true, false).forget,
            ["active", "justified"],
            "a short listing keeps the clock of an account it left out"
        );
        assert_eq!(
            changes(false, true),
            ClockChanges {
                start: Vec::new(),
                forget: vec!["active".into()],
            },
            "an untrusted directory starts and drops nothing, but an active account is seen"
        );
    }

    #[test]
    fn the_audit_names_the_person_behind_sudo_or_the_admin_helper() {
        let no_passwd = |_: u32| None;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            audit_user(env(&[("USER", "alice")]), Some(1000), no_passwd),
            "alice"
        );
        assert_eq!(
            audit_user(
                env(&[("USER", "seatwarden"), ("SUDO_USER", "alice")]),
                None,
                no_passwd
            ),
            "alice (as seatwarden)"
        );
        assert_eq!(
            audit_user(
                env(&[("USER", "root"), ("SUDO_USER", "root")]),
                None,
                no_passwd
            ),
            "root"
        );
        assert_eq!(
            audit_user(
                env(&[("SEATWARDEN_OPERATOR", "bob"), ("SUDO_USER", "alice")]),
                Some(10001),
                no_passwd
            ),
            "bob (as uid 10001)"
        );
        assert_eq!(
            audit_user(env(&[("LOGNAME", " ")]), Some(7), no_passwd),
            "uid 7"
        );
        assert_eq!(audit_user(env(&[]), None, no_passwd), "unknown");
    }

    #[test]
    fn with_no_user_variable_the_audit_names_the_account_of_the_uid() {
        let env = |_: &str| None;
        let passwd = "# a comment\n\
                      root:x:0:0:root:/root:/bin/bash\n\
                      +::::::\n\
                      seatwarden:x:999:999::/var/lib/seatwarden:/usr/sbin/nologin\n\
                      toor:x:0:0:second root:/root:/bin/sh\n";
        let of = |uid: u32| passwd_name(passwd, uid);
        // Root in a container, a systemd service: no `$USER`, no `$LOGNAME`.
        assert_eq!(audit_user(env, Some(0), of), "root");
        assert_eq!(audit_user(env, Some(999), of), "seatwarden");
        assert_eq!(
            audit_user(
                |n: &str| (n == "SEATWARDEN_OPERATOR").then(|| "bob".to_owned()),
                Some(0),
                of
            ),
            "bob (as root)"
        );
        // No entry (a uid given with `docker run --user`): the uid.
        assert_eq!(audit_user(env, Some(10001), of), "uid 10001");
        assert_eq!(
            passwd_name("broken\n:x:5:5::/:\nx:y:notanumber:\n", 5),
            None
        );
        // `$USER` still wins over the file.
        assert_eq!(
            audit_user(
                |n: &str| (n == "USER").then(|| "alice".to_owned()),
                Some(0),
                of
            ),
            "alice"
        );
    }

    #[test]
    fn unconfirmed_creates_are_held_with_what_needs_them() {
        let plan = Plan {
            actions: vec![
                action(0, create("p1")),
                action(1, create("p2")),
                action(
                    2,
                    ActionKind::AddMembers {
                        group: GroupRef::Existing {
                            id: "g".into(),
                            display_name: "G".into(),
                        },
                        members: vec![AccountRef::Created {
                            identity_id: "p1".into(),
                        }],
                    },
                ),
            ],
            ..Plan::default()
        };
        let recheck = Recheck {
            unconfirmed: HashSet::from(["p1".to_owned()]),
            previous: 250,
            current: 100,
            ..Recheck::default()
        };
        let held: Vec<Option<HoldReason>> = hold_unconfirmed(plan.clone(), &recheck)
            .actions
            .into_iter()
            .map(|a| a.held)
            .collect();
        let shrunk = HoldReason::WorkspaceShrunk {
            previous: 250,
            current: 100,
        };
        assert_eq!(held, [Some(shrunk.clone()), None, Some(shrunk)]);
        assert_eq!(hold_unconfirmed(plan.clone(), &Recheck::default()), plan);
    }
}
