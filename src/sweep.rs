//! The deprovisioning fast path: between full reconciles, the daemon asks the
//! directory what changed, opens ledger episodes for people who lost access, and
//! deactivates their linked accounts — reading only those accounts, journaling
//! every write, and verifying each by a re-read. The directory is read and the
//! ledger updated before the workspace is asked anything, so a workspace that is
//! down delays no leaver's episode (its SLA clock, its alerts). Once a read (the
//! first, of `/ServiceProviderConfig`, included) finds the workspace answering
//! nothing ([`crate::workspace::Outage`]), the due accounts after it are not read:
//! their episodes are tried again later, as after a failed read. An outage is
//! warned about when it starts and when the accounts it leaves unread double, not
//! at every pass while it lasts ([`outage_news`]). The retry job's pass
//! ([`enforce`]) asks the workspace nothing when no episode is due for an attempt
//! and no action is in flight: run every minute under the writer lock, it would
//! spend the retries on `/ServiceProviderConfig` while the workspace is down and
//! keep the sweep waiting; such a pass is no news of the workspace either way.
//! The daemon's retry job runs [`retry`]: with an attempt due, it reads the
//! directory's changes first, as the sweep does, so that a person put in a
//! protected group or active again since the last sweep is not deactivated
//! on the ledger's older word; a directory it cannot read holds nothing back.
//! Changes that end every due episode leave it nothing to ask the workspace,
//! and it asks nothing, as a pass with nothing due.
//!
//! The daemon stopping (its SIGTERM, seen through [`apply::until_stopped`]) gives
//! a pass up at whichever read it is in before its first deactivation: the
//! directory's changes, discovery, recovery, the due accounts, the other Owners
//! ([`RunError::StoppedReading`]). Nothing was sent, so nothing is lost: the
//! episodes stay due and the next pass reads them again (the ledger keeps what the
//! directory's changes opened, and the cursor moves once it holds them). Once
//! deactivations are being sent, the stop sends no more ("not sent").
//!
//! Before anything is counted or sent, actions a cut-off writer left `in_flight`
//! are resolved ([`apply::recover`]): the 24 h limits count them as sent, and
//! the runs such a writer left recorded as running are closed. The deprovisions a
//! cut-off reconcile held or did not apply count from when it saw them, once an
//! observation opens their episodes ([`backdate_cut_off`]), whoever recovered
//! that reconcile first (every reconcile closed as interrupted since the last
//! one that was not).
//!
//! An account that reads as 404 is gone (its episode verified without a write) only
//! once a `/Users` listing page has answered in the same pass: a base URL that
//! answers 404 to everything must not close every episode. Nor while an account
//! under the person's userName names them by `externalId` (theirs, made again
//! under a new id): the episode moves to it, and it is deactivated.
//!
//! A directory read that is incomplete (a SCIM directory's listing short of its
//! `totalResults`) opens no episode and ends none, and the pass fails once it has
//! enforced what was already due ([`SweepOutcome::incomplete`]): a directory that
//! keeps reading short would otherwise stop same-day deprovisioning while every
//! sweep job succeeded, with no episode to become overdue.
//!
//! Only linked identities are considered (links are made by full reconciles), so
//! the sweep never has to match; a linked account whose `externalId` names
//! someone else seatwarden knows is held, as the plan disputes such a link. The guard still applies: an incomplete directory
//! holds everything, thresholds hold mass deprovisioning (counting the due
//! accounts a pass could not read, which are then held with the rest: failing
//! reads must not split a held mass deprovision into passes under the per-run
//! limit), and a leaver who holds
//! the Owner role is deactivated only when another Owner is confirmed active: the
//! sweep does not read the whole workspace, so it re-reads the Owners of the newest
//! stored workspace snapshot, and holds the leaver (for the full reconcile's
//! last-Owner check) when none of them still is one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;

use crate::apply;
use crate::circuit::{Breaker, CircuitState};
use crate::config::Config;
use crate::directory::{Directory, DirectoryChanges};
use crate::guard;
use crate::model::{
    Account, Action, ActionKind, DisputedLeaver, DriftItem, DriftKind, HoldReason, Identity, Plan,
    WorkspaceSnapshot,
};
use crate::plan;
use crate::policy::{self, InactiveReason};
use crate::run::{RunError, StoppedRun};
use crate::sla::{self, Leaver, LedgerEntry, LossReason};
use crate::store::{ActionState, Decision, RunId, RunKind, RunStatus, Store, StoreError};
use crate::workspace::{Outage, ScimClient, Unread};

/// How long a held deprovision waits before the sweep looks at it again.
pub const HOLD_RECHECK: Duration = Duration::minutes(15);

/// How the hold of a disputed leaver's episode begins ([`record_disputed`]):
/// `seatwarden link` releases such a hold when it chooses the person's account.
pub const DISPUTED_HOLD: &str = "disputed match:";

/// How the hold of a leaver whose linked account's externalId names someone else
/// seatwarden knows begins: `link … --replace` or a corrected externalId releases it.
pub const CONTRADICTED_LINK_HOLD: &str = "disputed link:";

/// How the hold of a leaver whose account is protected (`safety.protected`)
/// begins: seatwarden never touches it, so only a human can.
pub const PROTECTED_HOLD: &str = "protected account (safety.protected):";

/// How the hold of a leaver whose account an exception in force keeps
/// (`safety.exceptions`) begins: the deprovision is put off to the exception's
/// end, and due then as it was due after detection.
pub const EXCEPTED_HOLD: &str = "kept by an exception (safety.exceptions)";

/// How the sweep's hold of a deprovision a human already rejected in an earlier
/// run goes on, after "rejected in run N by USER at T": the reason it is held now.
pub const HELD_AGAIN: &str = "; held again: ";

/// A human's `reject` of a held deprovision, in a run before the one that holds
/// it again: who, where and when, so that the hold (and its alert) says a
/// decision was made already.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EarlierRejection {
    pub run_id: RunId,
    /// The operator the audit row names.
    pub user: String,
    pub at: DateTime<Utc>,
}

impl EarlierRejection {
    /// As the ledger's hold keeps it, before [`HELD_AGAIN`]: "rejected in run N by
    /// USER at T", T on the clock of `tz` (`report.timezone`) with its UTC offset
    /// and the zone's abbreviation ([`crate::model::clock_time`]): `status`, the
    /// digest and the overdue alert show the stored hold as it is.
    pub fn on_clock(&self, tz: chrono_tz::Tz) -> String {
        format!(
            "rejected in run {} by {} at {}",
            self.run_id,
            self.user,
            crate::report::local_time(self.at, tz)
        )
    }
}

impl std::fmt::Display for EarlierRejection {
    /// For the log: "rejected in run N by USER at T", T in UTC (the hold and the
    /// alert show it on the report's clock).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rejected in run {} by {} at {}",
            self.run_id,
            self.user,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Workspaces (by base URL) whose `/ServiceProviderConfig` the last pass in this
/// process could not read.
static UNREACHABLE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A change in whether a workspace answers ([`reachability_changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reachability {
    Lost,
    Regained,
}

/// Records whether `workspace` answered this pass; returns the change since the
/// last pass, if any. A process starts with every workspace taken as reachable, so
/// a daemon started during an outage warns once.
fn reachability_changed(workspace: &str, answered: bool) -> Option<Reachability> {
    let mut unreachable = UNREACHABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if answered {
        unreachable
            .remove(workspace)
            .then_some(Reachability::Regained)
    } else {
        unreachable
            .insert(workspace.to_owned())
            .then_some(Reachability::Lost)
    }
}

/// Workspaces (by base URL) the last pass in this process found down (its reads
/// cut short by an [`Outage`]), with how many due accounts the last warning about
/// it said were not read.
static DOWN_WARNED: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// What one pass's outage (or its absence) tells, against the passes before it
/// in this process ([`outage_news`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutageNews {
    /// The workspace was found down, the last pass having found it answering.
    Started,
    /// Still down, and at least twice as many due accounts (one at least) were
    /// left unread as the last warning said: leavers are piling up behind it.
    Grew,
    /// Still down, with no such growth.
    Persists,
    /// Answering again, after a pass that found it down.
    Ended,
    /// Answering, as at the last pass.
    Quiet,
}

/// Records whether this pass found `workspace` down and, if so, how many due
/// accounts it left unread (`skipped`); returns what that is news of. A process
/// starts with every workspace taken as answering, so a daemon started during an
/// outage warns once.
fn outage_news(workspace: &str, skipped: Option<usize>) -> OutageNews {
    let mut down = DOWN_WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match (skipped, down.get(workspace).copied()) {
        (None, None) => OutageNews::Quiet,
        (None, Some(_)) => {
            down.remove(workspace);
            OutageNews::Ended
        }
        (Some(skipped), None) => {
            down.insert(workspace.to_owned(), skipped);
            OutageNews::Started
        }
        (Some(skipped), Some(warned)) if skipped > warned && skipped >= 2 * warned => {
            down.insert(workspace.to_owned(), skipped);
            OutageNews::Grew
        }
        (Some(_), Some(_)) => OutageNews::Persists,
    }
}

/// The key of the directory's change cursor in the daemon state table.
pub const CURSOR_KEY: &str = "directory_cursor";

/// What one sweep (or one retry pass) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// The journaled run, when there was anything to write.
    pub run_id: Option<RunId>,
    /// Episodes opened by this observation.
    pub detected: usize,
    /// Episodes cancelled because the person regained access first (or is
    /// protected now).
    pub cancelled: usize,
    /// Episodes ended unenforced because the person is in a group that only looks
    /// like a configured one: they have not regained access, the reconcile holds
    /// their deprovision (`look_alike_group`) for a person to decide. Not in
    /// `cancelled`, which an operator reads as people back.
    pub ended_look_alike: usize,
    /// Deactivations (or deletions) applied and verified.
    pub enforced: usize,
    /// Accounts found already inactive or gone: verified without a write.
    pub already_done: usize,
    /// Deactivations sent and not done (their writes failed).
    pub failed: usize,
    pub held: usize,
    /// Deprovisions put off because an exception in force keeps the account
    /// (`safety.exceptions`).
    pub excepted: usize,
    /// Deactivations kept back unsent ([`crate::apply::KeptBack`], or the
    /// circuit breaker open before the pass): neither attempts nor failures. Those
    /// a stop kept back are due again at once.
    pub not_sent: usize,
    /// Of the deprovisions held in this pass's run, those a human rejected in an
    /// earlier run, by directory id: the hold alert says so.
    pub rejected_before: BTreeMap<String, EarlierRejection>,
    /// Episodes that passed their due time during this pass.
    pub escalated: Vec<LedgerEntry>,
    /// Detection-to-verification latencies of the episodes verified in this pass.
    pub latencies: Vec<Duration>,
    /// The directory snapshot was rejected (empty, or shrank too much).
    pub source_fault: Option<String>,
    /// How this pass read the directory: only a whole read, complete and past
    /// the source sanity check, shows that the directory is sound again (and
    /// clears the `directory_snapshot_rejected` alert, as a reconcile's does).
    pub directory_read: DirectoryRead,
    /// Due accounts whose read failed: the pass failed ([`SweepOutcome::checked`]),
    /// though it did everything else it could.
    pub unread: Option<UnreadAccounts>,
    /// Deactivations sent and not done (the workspace refused them, or answered
    /// 5xx past the retries): the pass failed too, once everything was tried.
    pub unwritten: Option<UnwrittenDeprovisions>,
    /// A retry pass ([`enforce`]) that asked the workspace nothing: no episode was
    /// due for an attempt and no action was left in flight. How many open
    /// episodes with an account wait for a later attempt (none: nothing to retry).
    pub idle: Option<usize>,
    /// The directory read was incomplete: the sweep observed nothing from it (no
    /// episode opened, none ended), so the pass failed ([`SweepOutcome::checked`]),
    /// though it enforced what was already due. Without that, a directory that
    /// keeps reading incomplete would stop same-day deprovisioning unseen.
    pub incomplete: Option<IncompleteRead>,
}

/// How a pass read the directory ([`SweepOutcome::directory_read`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DirectoryRead {
    /// Not read: a retry pass ([`enforce`]), or a sweep given up before its read.
    #[default]
    NotRead,
    /// Only what changed since the cursor: it proves nothing about the whole
    /// directory (its size, a group emptied), so it clears no source fault.
    Delta,
    /// The whole directory, complete, and accepted by the source sanity check.
    Whole,
    /// The whole directory, rejected by the source sanity check or incomplete.
    WholeUnsound,
}

/// A directory read the sweep could observe nothing from: it ended short of what
/// the directory announced (a SCIM directory's listing short of its
/// `totalResults`, twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteRead {
    /// The directory, as [`Directory::describe`] names it.
    pub directory: String,
    /// How many people the read returned.
    pub read: usize,
}

/// Due deprovisions whose write failed in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwrittenDeprovisions {
    pub failed: usize,
    /// The first one's error.
    pub first: String,
}

/// Due accounts a pass could not read (a revoked token's 401, a 5xx that outlasted
/// the retries, a 404 the search on `/Users` could not confirm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadAccounts {
    pub failed: usize,
    pub due: usize,
    /// The first read's error.
    pub first: String,
    pub transient: bool,
}

impl SweepOutcome {
    /// The outcome, or the pass's failure when a due account could not be read: a
    /// job that succeeded while leavers cannot be reached would never alert as
    /// failing. Callers record what the pass did first.
    pub fn checked(self) -> Result<SweepOutcome, RunError> {
        if let Some(incomplete) = self.incomplete {
            return Err(RunError::DirectoryIncomplete(incomplete));
        }
        if let Some(unread) = self.unread {
            return Err(RunError::AccountsUnread(unread));
        }
        match self.unwritten {
            Some(unwritten) => Err(RunError::DeprovisionsUnwritten(unwritten)),
            None => Ok(self),
        }
    }
}

fn lock(store: &Mutex<Store>) -> Result<std::sync::MutexGuard<'_, Store>, RunError> {
    store.lock().map_err(|_| RunError::Poisoned)
}

/// A read before the pass's first write, given up with the pass once the daemon
/// is stopping ([`apply::read_unless_stopped`]): [`RunError::StoppedReading`].
/// Boxed: held inline, the recovery's future and the reads' grew the pass's own
/// past a worker thread's stack in a debug build.
fn unless_stopped<'a, F: std::future::Future + 'a>(
    reading: F,
) -> impl std::future::Future<Output = Result<F::Output, RunError>> + 'a {
    let reading = Box::pin(reading);
    async move {
        apply::read_unless_stopped(reading)
            .await
            .ok_or(RunError::StoppedReading)
    }
}

/// Reads the directory's changes, updates the ledger, then enforces what is due.
pub async fn sweep(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    now: DateTime<Utc>,
    sla: Duration,
) -> Result<SweepOutcome, RunError> {
    let cursor = lock(store)?.state_value(CURSOR_KEY)?;
    let changes = unless_stopped(directory.changes_since(cursor.as_deref()))
        .await?
        .map_err(|e| RunError::directory(config, e))?;
    Box::pin(sweep_changes(
        config,
        directory,
        client,
        store,
        now,
        sla,
        changes,
        Asking::Always,
    ))
    .await
}

/// The daemon's retry job's pass: [`enforce`], after the directory's changes
/// when an episode is due for an attempt. The ledger holds what the last sweep
/// or reconcile observed; a person put in a protected group since, or active
/// in the directory again, must not be deactivated by an attempt that knows
/// nothing of it (a protected account deactivated so is never given its access
/// back: no run touches it). So a pass that will read and write reads the
/// changes first and observes them as the sweep does ([`sweep`]: the episode
/// ends, and the cursor moves past what the ledger now holds). A directory
/// that cannot be read keeps no leaver's deactivation back: the pass enforces
/// the ledger as it stands, as before, and says so. Nor does one read
/// incomplete fail the retry job: it observes nothing from it, and the sweep,
/// which reads it too, fails for it. A pass with nothing due reads nothing,
/// and one whose changes end every due episode asks the workspace nothing.
pub async fn retry(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    now: DateTime<Utc>,
    sla: Duration,
) -> Result<SweepOutcome, RunError> {
    let due = {
        let store = lock(store)?;
        !due_for_attempt(config, &store.open_deprovisions()?, now).is_empty()
    };
    if !due {
        return Box::pin(enforce(config, client, store, now)).await;
    }
    let cursor = lock(store)?.state_value(CURSOR_KEY)?;
    match unless_stopped(directory.changes_since(cursor.as_deref())).await? {
        Ok(changes) => {
            // What the changes end (a leaver protected or back since) is due no
            // more: with nothing left due, the workspace is not asked, as in a
            // pass with nothing due (`Asking::WhenNeeded`).
            let mut outcome = Box::pin(sweep_changes(
                config,
                directory,
                client,
                store,
                now,
                sla,
                changes,
                Asking::WhenNeeded,
            ))
            .await?;
            outcome.incomplete = None;
            Ok(outcome)
        }
        Err(e) => {
            tracing::warn!(
                error = %RunError::directory(config, e),
                "the retry pass cannot read the directory's changes: it enforces the \
                 deprovisions due as the last sweep or reconcile recorded them"
            );
            Box::pin(enforce(config, client, store, now)).await
        }
    }
}

/// [`sweep`] once the directory's `changes` are read: the ledger updated from
/// them, then what is due enforced (the workspace asked as `asking` says),
/// then the cursor moved.
#[allow(clippy::too_many_arguments)]
async fn sweep_changes(
    config: &Config,
    directory: &Directory,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    now: DateTime<Utc>,
    sla: Duration,
    changes: DirectoryChanges,
    asking: Asking,
) -> Result<SweepOutcome, RunError> {
    let links: HashMap<String, String> = lock(store)?
        .links()?
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    // Source sanity as in a full run: an empty or badly shrunk directory is a
    // source fault, not a mass departure. Nothing is observed from it (the full
    // reconcile records the accepted baseline, the largest of the 24 h before;
    // the sweep only compares with it).
    if let DirectoryChanges::Full { snapshot, .. } = &changes {
        let last = crate::safety::shrink_baseline_at(&*lock(store)?, now)?;
        if let Err(fault) = guard::check_source(
            snapshot.identities.len(),
            last,
            config.safety.max_directory_shrink_percent,
        ) {
            tracing::error!(fault = %fault, "directory snapshot rejected: nothing observed from it");
            let mut outcome = enforce_pass(config, client, store, now, asking).await?;
            outcome.source_fault = Some(fault.to_string());
            outcome.directory_read = DirectoryRead::WholeUnsound;
            return Ok(outcome);
        }
    }
    let open = lock(store)?.open_deprovisions()?;
    let observation = observe(config, &changes, &links, &accountless(&open));
    let ledger_changes = {
        let mut store = lock(store)?;
        let current = store.current_deprovisions()?;
        let mut changes = sla::observe(
            &current,
            &observation.leavers,
            &observation.returned,
            now,
            sla,
        );
        let approved = store.look_alike_deprovisions_approved(&observation.look_alike_held)?;
        end_look_alike_episodes(
            &mut changes,
            &current,
            &observation.look_alike_held,
            &approved,
        );
        name_by_stored_accounts(&mut changes.open, &store)?;
        store.update_ledger(&changes, now)?;
        changes
    };
    for entry in &ledger_changes.open {
        // Not yet "deprovision due": the account may turn out already inactive or
        // gone, which `enforce` logs as nothing to do.
        tracing::info!(
            person = %entry.user_name,
            identity = %entry.identity_id,
            reason = entry.reason.as_str(),
            due = %crate::schedule::log_time(entry.due_at),
            "lost access in the directory: deprovision episode opened"
        );
    }
    let enforced = enforce_pass(config, client, store, now, asking).await;
    // The cursor moves only once the ledger holds what it covered: after a crash
    // the same changes are read again. It holds it now, whatever enforcing did.
    let next_cursor = match &changes {
        DirectoryChanges::Full { cursor, .. } => cursor.clone(),
        DirectoryChanges::Delta { cursor, .. } => Some(cursor.clone()),
    };
    lock(store)?.set_state_value(CURSOR_KEY, next_cursor.as_deref())?;
    let mut outcome = enforced?;
    outcome.detected = ledger_changes.open.len();
    let ended_look_alike = ledger_changes
        .cancel
        .iter()
        .filter(|id| ledger_changes.look_alike_ended.contains(id))
        .count();
    outcome.cancelled += ledger_changes.cancel.len() - ended_look_alike;
    outcome.ended_look_alike += ended_look_alike;
    outcome.directory_read = match &changes {
        DirectoryChanges::Delta { .. } => DirectoryRead::Delta,
        DirectoryChanges::Full { snapshot, .. } if snapshot.complete => DirectoryRead::Whole,
        DirectoryChanges::Full { snapshot, .. } => {
            outcome.incomplete = Some(IncompleteRead {
                directory: directory.describe(),
                read: snapshot.identities.len(),
            });
            DirectoryRead::WholeUnsound
        }
    };
    Ok(outcome)
}

/// Episodes an exception put off whose exception no longer keeps the account
/// before its end (taken out of the configuration, or moved earlier than now):
/// it ended now, so their SLA clock starts now and they are due an SLA from now,
/// and an account found deactivated meanwhile has no latency from a future end.
fn ended_early(
    episodes: &mut [(LedgerEntry, Option<Account>)],
    protected: &policy::Protected,
    now: DateTime<Utc>,
    store: &mut Store,
) -> Result<(), StoreError> {
    for (entry, account) in episodes.iter_mut() {
        if entry.excepted_until.is_none_or(|until| until <= now) {
            continue;
        }
        let account_name = account.as_ref().map(|a| a.user_name.as_str());
        if person_exception(protected, entry).is_some()
            || account_name.is_some_and(|name| protected.exception_for(name).is_some())
        {
            continue;
        }
        let sla = entry.due_at - entry.sla_start();
        let due_at = now.checked_add_signed(sla).unwrap_or(now);
        store.deprovision_exception_ended(entry.id, now, due_at)?;
        tracing::info!(
            person = %entry.user_name,
            "the exception (safety.exceptions) that put this deprovision off no longer keeps \
             the account: it is due now"
        );
        entry.excepted_until = Some(now);
        entry.due_at = due_at;
    }
    Ok(())
}

/// The exception in force naming the person of `entry` by the name the ledger
/// keeps, as the reconcile finds it: for someone deleted from the directory
/// whether or not the name is protected for good, which a person the directory
/// no longer has has lost (`Protected::exception_for_departed`), so the
/// exception alone keeps their account until its end.
fn person_exception<'p>(
    protected: &'p policy::Protected,
    entry: &LedgerEntry,
) -> Option<&'p crate::model::Exception> {
    if entry.reason == LossReason::Deleted {
        protected.exception_for_departed(&entry.user_name)
    } else {
        protected.exception_for(&entry.user_name)
    }
}

/// Whether a ledger episode still names its person by directory id: a deleted
/// person's, their userName gone with them, whose account no stored workspace
/// snapshot held when it opened, until the account is read (or a reconcile
/// deprovisions it) and gives the account's.
fn known_only_by_id(user_name: &str, identity_id: &str) -> bool {
    user_name == identity_id
}

/// A deleted person's userName went with them: their new episode takes their
/// account's userName as the newest stored workspace snapshot has it, so the log,
/// `status` and an overdue alert sent while the workspace is down name them. An
/// account no snapshot holds leaves the directory id, until the account is read.
fn name_by_stored_accounts(opened: &mut [sla::NewEntry], store: &Store) -> Result<(), StoreError> {
    let unnamed = |entry: &sla::NewEntry| known_only_by_id(&entry.user_name, &entry.identity_id);
    if !opened.iter().any(unnamed) {
        return Ok(());
    }
    let names = stored_account_names(store)?;
    for entry in opened.iter_mut().filter(|entry| unnamed(entry)) {
        if let Some(name) = entry.account_id.as_ref().and_then(|id| names.get(id)) {
            entry.user_name.clone_from(name);
        }
    }
    Ok(())
}

/// Each account's userName, by account id, in the newest stored workspace
/// snapshot (none stored: empty).
fn stored_account_names(store: &Store) -> Result<HashMap<String, String>, StoreError> {
    let Some(run) = store.latest_snapshot_run()? else {
        return Ok(HashMap::new());
    };
    Ok(store
        .load_workspace_snapshot(run)?
        .map(|snapshot| {
            snapshot
                .accounts
                .into_iter()
                .map(|account| (account.id, account.user_name))
                .collect()
        })
        .unwrap_or_default())
}

/// The managed accounts the pass's percentage thresholds are of, counted as a
/// reconcile counts them: links to accounts the workspace holds. The sweep
/// reads no whole workspace, so the newest stored snapshot stands for it, and
/// a link made since that snapshot was read (an account its run created)
/// counts too. Not every stored link: one to an account deleted by hand in the
/// workspace stays, and counted it loosened the sweep's limit until it let
/// through what a reconcile holds.
fn managed_accounts(store: &Store) -> Result<usize, StoreError> {
    let links = store.links()?;
    let Some(run) = store.latest_snapshot_run()? else {
        return Ok(links.len());
    };
    let (Some(snapshot), Some(record)) = (store.load_workspace_snapshot(run)?, store.run(run)?)
    else {
        return Ok(links.len());
    };
    let held: HashSet<&str> = snapshot.accounts.iter().map(|a| a.id.as_str()).collect();
    Ok(links
        .iter()
        .filter(|l| held.contains(l.account_id.as_str()) || l.linked_at >= record.started_at)
        .count())
}

/// Leavers and returners among linked identities.
struct Observation {
    leavers: Vec<Leaver>,
    returned: Vec<String>,
    /// People a directory group that only looks like a scope or protected group
    /// may keep in (see [`crate::names::LookAlikeMember::deprovision`]): the
    /// reconcile holds their deprovision for a person to decide, and no episode
    /// opens for them. One opened before they were put in that group ends
    /// ([`sla::unenforced_episodes`]), or the sweep and the retry job, which
    /// know no groups, would deactivate them when it fell due while a new
    /// leaver in the same group is held.
    look_alike_held: Vec<String>,
}

/// `accountless`: people whose open episode has no account (a disputed match, a
/// link moved away). Without a link of theirs only their return is observed:
/// nothing of theirs is known to deactivate.
fn observe(
    config: &Config,
    changes: &DirectoryChanges,
    links: &HashMap<String, String>,
    accountless: &HashSet<String>,
) -> Observation {
    let policy = config.policy_settings();
    // Exceptions are not here: an excepted leaver's episode opens, and the
    // enforcing pass defers it to the exception's end.
    let protected = policy::Protected::new(&config.safety.protected);
    let protected_groups: HashSet<String> = config
        .safety
        .protected_groups
        .iter()
        .map(|g| policy::fold_group_name(g))
        .collect();
    let mut observation = Observation {
        leavers: Vec::new(),
        returned: Vec::new(),
        look_alike_held: Vec::new(),
    };
    // People whom a directory group that only looks like a scope or protected
    // group may keep in: the reconcile holds their deprovision, for a person to
    // decide; an episode opened here would deactivate them when due. One that
    // looks like a mapping's group gives no scope: its leavers are observed.
    let look_alike_members = {
        let read: &[Identity] = match changes {
            DirectoryChanges::Full { snapshot, .. } => &snapshot.identities,
            DirectoryChanges::Delta { changed, .. } => changed,
        };
        crate::names::look_alike_members(read, &crate::safety::configured_groups(config), &policy)
    };
    let classify = |identity: &Identity, observation: &mut Observation| {
        let account_id = links.get(&identity.id);
        if account_id.is_none() && !accountless.contains(&identity.id) {
            return;
        }
        let in_protected_group = identity
            .groups
            .iter()
            .any(|g| protected_groups.contains(&policy::fold_group_name(g)));
        if in_protected_group {
            // Never touched, as in the plan: an episode opened before they were
            // put in the group (during an incident, say) ends here, or the retry
            // job, which knows no groups, would still deactivate them.
            observation.returned.push(identity.id.clone());
            return;
        }
        if protected.matches(&identity.user_name) {
            // Never touched either (safety.protected): like a protected group, it
            // ends an episode opened before the name was protected, or the
            // episode would be held and reported overdue for ever.
            observation.returned.push(identity.id.clone());
            return;
        }
        // After the protections: a protected person is observed as protected,
        // as the plan treats them (it plans nothing for them to hold).
        if let Some(look_alike) = look_alike_members
            .get(&identity.id)
            .and_then(|member| member.deprovision.as_ref())
        {
            // Said once per group by each reconcile (`safety::hold_look_alikes`).
            tracing::debug!(
                person = %identity.user_name,
                "{look_alike}: no deprovisioning episode opens for them; the reconcile holds \
                 what it would take"
            );
            observation.look_alike_held.push(identity.id.clone());
            return;
        }
        match (policy::access_loss(identity, &policy), account_id) {
            (Some(reason), Some(account_id)) => observation.leavers.push(Leaver {
                identity_id: identity.id.clone(),
                account_id: Some(account_id.clone()),
                user_name: identity.user_name.clone(),
                reason: match reason {
                    InactiveReason::Suspended => LossReason::Suspended,
                    InactiveReason::Deprovisioned => LossReason::Deprovisioned,
                    InactiveReason::OutOfScope => LossReason::OutOfScope,
                },
            }),
            (Some(_), None) => {}
            (None, _) => observation.returned.push(identity.id.clone()),
        }
    };
    let deleted = |identity_id: &str, account_id: &str| Leaver {
        identity_id: identity_id.to_owned(),
        account_id: Some(account_id.to_owned()),
        // Replaced by the account's userName from the stored workspace snapshot
        // when the episode opens, else once the account is read
        // ([`known_only_by_id`]).
        user_name: identity_id.to_owned(),
        reason: LossReason::Deleted,
    };
    match changes {
        // An incomplete snapshot opens no episode at all (design invariant: no
        // deprovision from a partial directory), so everything in the ledger came
        // from a complete observation and the retry job may enforce it.
        DirectoryChanges::Full { snapshot, .. } if !snapshot.complete => {
            tracing::warn!(
                "incomplete directory snapshot: the sweep observes nothing from it, and the pass fails"
            );
        }
        DirectoryChanges::Full { snapshot, .. } => {
            let mut present: HashMap<&str, &Identity> = HashMap::new();
            for identity in &snapshot.identities {
                present.entry(identity.id.as_str()).or_insert(identity);
            }
            for identity in present.values() {
                classify(identity, &mut observation);
            }
            let mut gone: Vec<(&String, &String)> = links
                .iter()
                .filter(|(identity, _)| !present.contains_key(identity.as_str()))
                .collect();
            gone.sort();
            for (identity, account) in gone {
                observation.leavers.push(deleted(identity, account));
            }
        }
        DirectoryChanges::Delta {
            changed, removed, ..
        } => {
            for identity in changed {
                classify(identity, &mut observation);
            }
            for identity in removed {
                if let Some(account) = links.get(identity) {
                    observation.leavers.push(deleted(identity, account));
                }
            }
        }
    }
    observation
        .leavers
        .sort_by(|a, b| a.identity_id.cmp(&b.identity_id));
    observation
}

/// Enforces the open ledger episodes whose attempt is due: reads each linked
/// account, deactivates (or deletes) the active ones through the journal and the
/// guard, verifies, and escalates what passed its due time. The daemon's `retry`
/// job calls this alone, without reading the directory. A pass with no episode
/// due for an attempt and no action left in flight asks the workspace nothing
/// ([`SweepOutcome::idle`]): it still closes the runs a cut-off writer left
/// running and escalates what is overdue, which take only the store. Run every
/// minute under the writer lock, it would otherwise spend the client's retries
/// (about 20 s) on `/ServiceProviderConfig` while the workspace is down, and the
/// sweeps that record leavers would wait for it.
pub async fn enforce(
    config: &Config,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    now: DateTime<Utc>,
) -> Result<SweepOutcome, RunError> {
    enforce_pass(config, client, store, now, Asking::WhenNeeded).await
}

/// Whether a pass asks the workspace (its `/ServiceProviderConfig` first) when
/// it has nothing to read or write there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asking {
    /// The sweep: its answer (or a 401) is what tells the daemon that the pass
    /// reached the workspace, so its job's failures in a row end (or grow).
    Always,
    /// The retry job: only with an episode due for an attempt or an action in
    /// flight.
    WhenNeeded,
}

/// The open episodes whose attempt is due at `now` and that have an account to
/// read (people whose episode has none are observed for their return alone).
fn due_for_attempt(config: &Config, open: &[LedgerEntry], now: DateTime<Utc>) -> Vec<LedgerEntry> {
    let cool_down =
        Duration::from_std(config.circuit_settings().cool_down).unwrap_or(Duration::MAX);
    sla::due_for_attempt(open, now, sla::longest_wait(cool_down))
        .into_iter()
        .filter(|e| e.account_id.is_some())
        .cloned()
        .collect()
}

async fn enforce_pass(
    config: &Config,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    now: DateTime<Utc>,
    asking: Asking,
) -> Result<SweepOutcome, RunError> {
    let mut outcome = SweepOutcome::default();
    // A pass with slow reads can outlast an episode's due time: escalation is
    // judged at the pass's end, or it waits for the next pass.
    let started = std::time::Instant::now();
    // Asked before anything is written: an error after the writes would leave
    // them out of the ledger.
    let tz = config.report_timezone()?;
    // Once a read shows the workspace down, the due accounts after it are not
    // read: each would spend a whole retry cycle learning the same thing.
    let outage = Outage::new(client);
    let outage = &outage;
    // Discovery serves the recovery of rows in flight and the reads and writes of
    // due accounts; with neither, the retry job's pass has nothing to ask. Under
    // the writer lock nothing adds either before the pass is over.
    let idle = asking == Asking::WhenNeeded && {
        let store = lock(store)?;
        store.interrupted()?.is_empty()
            && due_for_attempt(config, &store.open_deprovisions()?, now).is_empty()
    };
    // What the provider supports decides how a deactivation is written (PATCH,
    // or read and PUT without it; `If-Match` where ETags are announced), as in a
    // reconcile. A workspace that does not answer it is down for this pass: no
    // account is read (their episodes are tried again later, as after a failed
    // read), where each read would spend the retries again.
    if !idle {
        let discovered = unless_stopped(outage.watch(client.discover())).await?;
        // Every pass that asks (each minute's retry with something due among them)
        // asks again while the workspace is down: warned once when it goes, then at
        // debug until it answers again. An idle pass observed nothing either way.
        let changed = reachability_changed(&config.workspace.url, discovered.is_ok());
        match (discovered, changed) {
            (Err(e), Some(Reachability::Lost)) => tracing::warn!(
                error = %e,
                "cannot read the workspace's /ServiceProviderConfig; writing by PATCH (logged \
                 at debug from now on, until the workspace answers again)"
            ),
            (Err(e), _) => tracing::debug!(
                error = %e,
                "cannot read the workspace's /ServiceProviderConfig, still; writing by PATCH"
            ),
            (Ok(()), Some(Reachability::Regained)) => {
                tracing::info!("workspace reachable again: its /ServiceProviderConfig answered")
            }
            (Ok(()), _) => {}
        }
    }
    // A sweep or retry that died mid-write left its deactivations `in_flight`, and
    // the 24 h counts take in-flight rows as sent: the same leavers, planned again
    // below, would count twice and could be held until a reconcile recovered them.
    // The caller holds the writer lock, so every row in flight is a dead process's.
    // With the workspace down nothing is sent this pass, so what they count
    // towards does not matter until a pass that can resolve them.
    let recovered = match outage.down() {
        Some(_) => Ok(apply::Recovered::default()),
        None => unless_stopped(apply::recover(client, store, &config.admin_command())).await?,
    };
    let resolved = recovered.is_ok();
    match recovered {
        Ok(recovered) if recovered.resolved == 0 => {}
        Ok(recovered) => {
            tracing::info!(
                recovered = recovered.resolved,
                "interrupted actions resolved"
            );
            let mut store = lock(store)?;
            // After the sweep's observation: its episodes are there to move.
            let latencies = record_recovery(
                &mut store,
                &recovered,
                now,
                configured_sla(config),
                &config.admin_command(),
            )?;
            outcome.latencies.extend(latencies);
        }
        // Leavers whose accounts can be read are still enforced (and overdue ones
        // escalated); the rows stay in flight for the next pass.
        Err(apply::ApplyError::Workspace(e)) => tracing::warn!(
            error = %e,
            "cannot resolve actions a cut-off run left in flight; they still count towards \
             the 24 h limits until the next pass resolves them"
        ),
        Err(e) => return Err(e.into()),
    }
    // Under the writer lock a run recorded as running is a dead process's, and
    // what it left in flight is resolved by now: it is closed, as `approve` and
    // the next reconcile close it (after their recovery, as here). Else a pass
    // with nothing to deactivate (no run of its own to begin, which closes them
    // too) left it `cut off` in `status` and `report --run`, waiting for a
    // recovery that had happened, until the next reconcile.
    if resolved && outage.down().is_none() {
        let mut store = lock(store)?;
        crate::run::close_interrupted_runs(
            &mut store,
            now,
            configured_sla(config),
            &config.admin_command(),
        )?;
        // The episodes the observation opened of people a killed reconcile saw
        // lose access count from its start, also when another writer (`approve`)
        // recovered it first, as the next reconcile counts them.
        let cut_off: BTreeSet<RunId> = store
            .interrupted_reconciles_before(RunId::MAX)?
            .into_iter()
            .collect();
        backdate_cut_off(&mut store, &cut_off)?;
    }
    // A newer rejection took back the approval that released these: not read,
    // not sent (the writer lock keeps any `reject` out until the pass ends).
    let rejected_approvals =
        hold_rejected_approvals(&mut *lock(store)?, now, tz, &config.admin_command())?;
    let open = lock(store)?.open_deprovisions()?;
    let due: Vec<LedgerEntry> = due_for_attempt(config, &open, now)
        .into_iter()
        .filter(|entry| !rejected_approvals.contains(&entry.identity_id))
        .collect();
    // Nothing the closing of cut-off runs records is due for an attempt; were it
    // so, it is read with the client's defaults, as after a discovery that failed.
    if idle && due.is_empty() {
        outcome.idle = Some(open.iter().filter(|e| e.account_id.is_some()).count());
    }
    let concurrency = config.workspace.max_concurrency.max(1);
    let reads: Vec<(LedgerEntry, Result<Option<Account>, _>)> = unless_stopped(
        futures::stream::iter(due.into_iter().map(|entry| async move {
            let id = entry.account_id.clone().unwrap_or_default();
            let read = outage.watch(client.get_account(&id)).await;
            (entry, read)
        }))
        .buffered(concurrency)
        .collect(),
    )
    .await?;
    // One account that cannot be read (a 5xx that outlasts the retries, a 403, a
    // body that does not parse) fails its own episode, not everyone's: the
    // other leavers are still deactivated and overdue ones still escalated. The
    // pass as a whole fails at the end (see `unread` below).
    let due_count = reads.len();
    let mut accounts: Vec<(LedgerEntry, Option<Account>)> = Vec::with_capacity(reads.len());
    let mut unread: Vec<Unread> = Vec::new();
    // Their episodes: deprovisions this pass was due to make, for the thresholds.
    let mut unread_entries: Vec<LedgerEntry> = Vec::new();
    let mut skipped = 0;
    for (entry, read) in reads {
        match read {
            Ok(Some(account)) => accounts.push((entry, Some(account))),
            // Absent by its id: looked for another way before the episode is
            // closed (see `ScimClient::find_account_elsewhere`).
            Ok(None) => {
                let id = entry.account_id.clone().unwrap_or_default();
                // Until the account was read, a deleted person's episode carries
                // their directory id in place of a userName.
                let user_name = Some(entry.user_name.as_str()).filter(|u| *u != entry.identity_id);
                let found = match unless_stopped(
                    outage.watch(client.find_account_elsewhere(&id, user_name)),
                )
                .await?
                {
                    // Gone by its id, yet an account under the same userName
                    // names the person by externalId (made again under a new id,
                    // by a push or by hand): taken for gone, it would keep them in
                    // while the ledger said they were out.
                    // A workspace that refuses the filter (400, 501) has no answer
                    // to give: gone, as before the question.
                    Ok(None) if let Some(user_name) = user_name => {
                        match unless_stopped(
                            outage.watch(client.find_accounts_by_user_name(user_name)),
                        )
                        .await?
                        {
                            // Any of them: a workspace unique only case-sensitively
                            // may list someone else's under the name first.
                            Ok(found) => Ok(found.into_iter().find(|a| {
                                a.external_id.as_deref() == Some(entry.identity_id.as_str())
                            })),
                            Err(Unread::Failed(e)) if matches!(e.status(), Some(400 | 501)) => {
                                Ok(None)
                            }
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                };
                match found {
                    Ok(Some(successor)) if successor.id != id => {
                        tracing::warn!(
                            person = %entry.user_name,
                            linked = %id,
                            account = %successor.id,
                            "the leaver's linked account is gone, and another account names them \
                             by externalId under the same userName: deprovisioning that one"
                        );
                        lock(store)?.deprovision_account(
                            entry.id,
                            Some(&successor.id),
                            &entry.user_name,
                        )?;
                        let mut entry = entry;
                        entry.account_id = Some(successor.id.clone());
                        accounts.push((entry, Some(successor)));
                    }
                    Ok(found) => accounts.push((entry, found)),
                    Err(e) => {
                        if let Unread::Skipped(_) = e {
                            skipped += 1;
                        } else {
                            tracing::warn!(
                                person = %entry.user_name,
                                error = %e,
                                "an account reads as absent and the search to confirm it failed; trying again later"
                            );
                        }
                        let next = sla::next_attempt(entry.attempts + 1, now);
                        lock(store)?.deprovision_failed(
                            entry.id,
                            &format!(
                                "the account reads as absent by its id, and the search on /Users \
                                 to confirm it failed: {e}"
                            ),
                            next,
                        )?;
                        outcome.failed += 1;
                        unread.push(e);
                        unread_entries.push(entry);
                    }
                }
            }
            Err(e) => {
                if let Unread::Skipped(_) = e {
                    skipped += 1;
                } else {
                    tracing::warn!(
                        person = %entry.user_name,
                        error = %e,
                        "cannot read the account of a due deprovision; trying again later"
                    );
                }
                let next = sla::next_attempt(entry.attempts + 1, now);
                lock(store)?.deprovision_failed(
                    entry.id,
                    &format!("reading the account: {e}"),
                    next,
                )?;
                outcome.failed += 1;
                unread.push(e);
                unread_entries.push(entry);
            }
        }
    }
    // Every pass (each minute's retry among them) finds an outage again: warned
    // when it starts and when the leavers left unread behind it pile up, at debug
    // while it merely lasts, at info when it ends.
    let down = outage.down();
    // An idle pass asked nothing: it is no news of an outage's start or end.
    let news = if idle {
        OutageNews::Quiet
    } else {
        outage_news(&config.workspace.url, down.map(|_| skipped))
    };
    match (down, news) {
        // Nothing due was left unread (most often: nothing was due): "0 of 0 due
        // accounts were not read; their deprovisions are tried again later" sent
        // people looking for deprovisions that are not there.
        (Some(why), OutageNews::Started | OutageNews::Grew) if skipped == 0 => tracing::warn!(
            error = why,
            due = due_count,
            "the workspace stopped answering; no due account was left unread by it (logged \
             at debug while it stays down, unless due accounts are left unread)"
        ),
        (Some(why), OutageNews::Started | OutageNews::Grew) => tracing::warn!(
            error = why,
            skipped,
            due = due_count,
            "the workspace stopped answering: {skipped} of {due_count} due accounts were not \
             read; their deprovisions are tried again later (logged at debug while it stays \
             down, unless twice as many are left unread)"
        ),
        (Some(why), _) => tracing::debug!(
            error = why,
            skipped,
            due = due_count,
            "the workspace is still not answering: {skipped} of {due_count} due accounts were \
             not read"
        ),
        (None, OutageNews::Ended) => tracing::info!(
            due = due_count,
            "the workspace answers again: the due accounts are read"
        ),
        (None, _) => {}
    }
    let plan_settings = config.plan_settings(now);
    let protected = &plan_settings.protected;
    ended_early(&mut accounts, protected, now, &mut *lock(store)?)?;
    let mut plan = Plan::default();
    let mut pending: HashMap<u32, &LedgerEntry> = HashMap::new();
    let mut read = WorkspaceSnapshot::default();
    // Loaded at the first account whose externalId is not its linked identity's.
    let mut known_identities: Option<HashSet<String>> = None;
    for (entry, account) in &accounts {
        let account = match account {
            Some(account) if account.active => account,
            // Gone, or already inactive (push SCIM got there, or an admin did).
            _ => {
                let mut store = lock(store)?;
                if let Some(account) = account {
                    store.deprovision_user_name(entry.id, &account.user_name)?;
                }
                outcome.already_done += 1;
                if entry.detected_at < now || entry.enforced_at.is_some() {
                    store.deprovision_verified(entry.id, now)?;
                    // Deactivated by hand while an exception still kept it: gone
                    // before the SLA clock started, so no time of seatwarden's.
                    outcome.latencies.push(now - entry.sla_start().min(now));
                } else {
                    // Found without access when first seen (a leaver from before
                    // the daemon's first sweep, say): no access was removed, so
                    // it is no deprovision in the SLA figures, nor a latency.
                    store.deprovision_found_done(entry.id, now)?;
                    tracing::info!(
                        person = %account.as_ref().map_or(entry.user_name.as_str(), |a| a.user_name.as_str()),
                        identity = %entry.identity_id,
                        "account already inactive or gone when first checked: nothing to deprovision"
                    );
                }
                continue;
            }
        };
        // The ledger keeps the person's directory userName (a deleted person's
        // account's): whether the person (not only the account) is protected.
        let person_protected = protected.permanently(&entry.user_name);
        let account_protected = protected.permanently(&account.user_name);
        {
            let mut store = lock(store)?;
            // Only an episode that knows the person by directory id alone takes
            // the account's name. Any other keeps the name it has: the person's
            // directory userName (or the one a reconcile deprovisioned them
            // under), which an exception may name, added at any time (after a
            // deactivation that failed, say), and which the reconcile looks the
            // exception up by (`safety::with_departed` once they are deleted).
            // Replaced, this pass and the next would no longer find it and would
            // deactivate the account the reconcile keeps.
            if known_only_by_id(&entry.user_name, &entry.identity_id) && !account_protected {
                store.deprovision_user_name(entry.id, &account.user_name)?;
            }
            // Active again since a reconcile last saw it: a retention clock it
            // had must not carry on once it is deactivated again.
            if config.delete_after().is_some_and(|d| !d.is_zero()) {
                store.update_deactivated(&[], std::slice::from_ref(&account.id), now)?;
            }
        }
        if person_protected && entry.reason != LossReason::Deleted {
            // Protected accounts never appear in a plan. The person is still in
            // the directory under a protected name, and a sweep that sees them
            // ends the episode (as for a protected group); the retry job, and a
            // sweep whose delta does not include them, end it here the same way.
            tracing::info!(
                person = %entry.user_name,
                "protected account (safety.protected): its deprovision episode ends"
            );
            let cancel = sla::LedgerChanges {
                cancel: vec![entry.id],
                ..sla::LedgerChanges::default()
            };
            lock(store)?.update_ledger(&cancel, now)?;
            outcome.cancelled += 1;
            continue;
        }
        let by_person = person_exception(protected, entry);
        // Deleted, a person protected for good by the name the ledger keeps is
        // kept by the exception naming it, as the reconcile keeps them (listed
        // excepted, then deactivated at its end): held as protected, the
        // episode stayed due at its SLA and was escalated while the exception
        // kept the account.
        let person_protected = person_protected && by_person.is_none();
        let exception = by_person.or_else(|| protected.exception_for(&account.user_name));
        if let (Some(exception), false) = (exception, person_protected || account_protected) {
            // The reconcile leaves the account alone as well. Put off, the
            // episode is due as long after the exception's end as it was due
            // after its SLA clock started, so no overdue alert fires for access
            // someone decided to keep; it is looked at again at the end (or
            // sooner, if the exception is taken out of the configuration).
            let sla = entry.due_at - entry.sla_start();
            let due_at = exception
                .until
                .checked_add_signed(sla)
                .unwrap_or(exception.until);
            let held = format!(
                "{EXCEPTED_HOLD} until {}: {}",
                crate::report::local_minute(exception.until, tz),
                exception.reason
            );
            lock(store)?.deprovision_excepted(
                entry.id,
                &held,
                exception.until.min(now + HOLD_RECHECK),
                exception.until,
                due_at,
            )?;
            if entry.held.as_deref() != Some(held.as_str()) {
                tracing::info!(
                    person = %entry.user_name,
                    account = %account.user_name,
                    until = %crate::schedule::log_time(exception.until),
                    reason = %crate::report::printable_field(&exception.reason),
                    "kept by an exception (safety.exceptions): the deprovision is put off to its end"
                );
            }
            outcome.excepted += 1;
            continue;
        }
        if person_protected || account_protected {
            // Protected accounts never appear in a plan. Ended, this episode would
            // open again on every full sweep: for someone deleted from the
            // directory, and for an account protected under a name the person's
            // directory record does not have (the sweep looks only at the latter).
            // It stays open (and becomes overdue) so a human sees it.
            lock(store)?.deprovision_held(
                entry.id,
                &format!("{PROTECTED_HOLD} seatwarden never touches it"),
                now + HOLD_RECHECK,
            )?;
            outcome.held += 1;
            continue;
        }
        if let Some(named) = account
            .external_id
            .as_deref()
            .filter(|named| *named != entry.identity_id)
        {
            let known = match &known_identities {
                Some(known) => known,
                None => known_identities.insert(identities_known(&*lock(store)?)?),
            };
            if known.contains(named) {
                // The plan's rule for a contradicted link: the account says it is
                // someone else's, someone seatwarden knows. Deactivated by the
                // link, that person would lose their account; the reconcile
                // reports the pair as disputed, and a human decides.
                tracing::warn!(
                    person = %entry.user_name,
                    account = %account.id,
                    named = %named,
                    "the leaver's linked account names another person by its externalId: held"
                );
                lock(store)?.deprovision_held(
                    entry.id,
                    &format!(
                        "{CONTRADICTED_LINK_HOLD} the linked account {}'s externalId names identity \
                         {named}, not {}; if the account is {named}'s, `{}` moves the link, \
                         else set its externalId to {:?}",
                        account.id,
                        entry.identity_id,
                        crate::model::admin_command_line(
                            &config.admin_command(),
                            "link",
                            &[named, &account.id],
                            &["--replace"]
                        ),
                        entry.identity_id
                    ),
                    now + HOLD_RECHECK,
                )?;
                outcome.held += 1;
                continue;
            }
        }
        let account_id = account.id.clone();
        // With a retention period the deletion waits for a reconcile after it.
        let kind = plan_settings.revoke_active(account_id, entry.reason == LossReason::Suspended);
        let seq = u32::try_from(plan.actions.len()).unwrap_or(u32::MAX);
        // The report, the alerts and `explain` show the action's detail as it is.
        let detail = format!(
            "{}; due {}",
            entry.reason,
            crate::report::local_time(entry.due_at, tz)
        );
        plan.drift.push(DriftItem {
            kind: DriftKind::StaleAccess,
            identity_id: Some(entry.identity_id.clone()),
            account_id: Some(account.id.clone()),
            user_name: account.user_name.clone(),
            detail: entry.reason.to_string(),
            conflict: None,
        });
        plan.actions.push(Action {
            seq,
            kind,
            reason: DriftKind::StaleAccess,
            subject: account.user_name.clone(),
            identity_id: Some(entry.identity_id.clone()),
            detail,
            held: None,
        });
        pending.insert(seq, entry);
        read.accounts.push(account.clone());
    }

    if read.accounts.iter().any(|a| a.active && a.is_owner()) {
        let others = unless_stopped(other_owners(client, store, &read, concurrency)).await??;
        read.accounts.extend(others);
    }
    // Deprovisions a person approved (`seatwarden approve`) whose write failed:
    // the approval decided over the thresholds, so they neither count towards
    // them nor are held by them, here as in the reconcile.
    let approved = crate::safety::approved_deprovision_accounts(&*lock(store)?)?;
    // Due deprovisions whose account could not be read, but for people no
    // protection, exception or approval keeps out of the count (known without
    // the account): the thresholds count them with the plan, as the reconcile
    // plans them all. Else a mass deprovision held as a whole went through in
    // passes each under the per-run limit whenever some reads failed.
    let unread_due: Vec<&LedgerEntry> = unread_entries
        .iter()
        .filter(|entry| {
            !protected.permanently(&entry.user_name) && person_exception(protected, entry).is_none()
        })
        .filter(|entry| {
            !entry
                .account_id
                .as_ref()
                .is_some_and(|account| approved.contains(account))
        })
        .collect();
    if !plan.actions.is_empty() {
        let input = {
            let store = lock(store)?;
            let managed = managed_accounts(&store)?;
            // The 24 h counts include earlier sweeps: a slow drip of sweeps cannot
            // pass the per-day limits either.
            let mut input = crate::safety::guard_input(&store, now, true, managed, false)?;
            input.unread.deprovisions = unread_due.len();
            input
        };
        let plan = guard::guard_approved(plan, &read, &config.guard_settings(), &input, &approved);
        // Held by a deprovision threshold they counted towards, the unread ones
        // are held with the rest, looked at again together: on the back-off of a
        // failed read they came due alone, one pass before the others, under the
        // limit.
        if let Some(threshold) = plan.held().find(|a| {
            matches!(
                a.held,
                Some(HoldReason::Threshold {
                    class: crate::model::ActionClass::Deprovision,
                    ..
                })
            )
        }) {
            let why = hold_reason(threshold, &config.admin_command());
            let mut store = lock(store)?;
            for entry in &unread_due {
                store.deprovision_held(entry.id, &why, now + HOLD_RECHECK)?;
            }
        }
        let run_id = {
            let mut store = lock(store)?;
            crate::run::close_interrupted_runs(
                &mut store,
                now,
                configured_sla(config),
                &config.admin_command(),
            )?;
            store.begin_run(RunKind::Sweep, now)?
        };
        outcome.run_id = Some(run_id);
        let unsent_before = apply::unsent_by_stop();
        let result = apply_sweep(config, client, store, run_id, &plan, now).await;
        // A pass the stop cut short is recorded as a reconcile's is: `stopped`,
        // neither a success nor a failure.
        let stopped_unsent = apply::unsent_by_stop().saturating_sub(unsent_before);
        let finished = Utc::now().max(now);
        let mut guard = lock(store)?;
        match &result {
            Ok(_) if stopped_unsent > 0 => {
                let stopped = RunError::Stopped {
                    unsent: stopped_unsent,
                    run: StoppedRun::Deprovisioning,
                    cause: None,
                };
                guard.finish_run(
                    run_id,
                    finished,
                    RunStatus::Stopped,
                    Some(&stopped.to_string()),
                )?
            }
            Ok(_) => guard.finish_run(run_id, finished, RunStatus::Succeeded, None)?,
            Err(e) => {
                guard.finish_run(run_id, finished, RunStatus::Failed, Some(&e.to_string()))?
            }
        }
        drop(guard);
        // With the breaker open nothing was sent: the episodes wait for its end.
        let blocked = result?.map(|circuit| {
            let until = match circuit {
                CircuitState::Open { until, .. } => until,
                _ => now + HOLD_RECHECK,
            };
            (
                format!(
                    "not sent: the circuit breaker is {}",
                    crate::report::circuit_state_text(&circuit, tz)
                ),
                until,
            )
        });
        let journal = lock(store)?.journal(run_id)?;
        let verified_at = Utc::now().max(now);
        let mut store = lock(store)?;
        for row in &journal {
            let Some(entry) = pending.get(&row.action.seq) else {
                continue;
            };
            // Planned this pass and not held: a hold an earlier pass recorded is
            // over, and must not stand beside what stops the deprovision now (its
            // advice, such as `link … --replace`, would no longer fit).
            if row.state != ActionState::Held && entry.held.is_some() {
                store.deprovision_hold_over(entry.id)?;
            }
            match row.state {
                ActionState::Applied => {
                    store.deprovision_enforced(entry.id, now)?;
                    store.deprovision_verified(entry.id, verified_at)?;
                    outcome.enforced += 1;
                    outcome.latencies.push(verified_at - entry.sla_start());
                }
                ActionState::Held => {
                    let mut why = hold_reason(&row.action, &config.admin_command());
                    // `reject` binds only its run: a human who rejected this
                    // deprovision sees it held again while the directory still says
                    // so, and must see why it is back, not take it for a new one.
                    if let Some(rejected) = rejected_before(&store, entry, run_id)? {
                        // Info: it comes back at every recheck, and the hold's
                        // own alert is what asks for a human.
                        tracing::info!(
                            person = %entry.user_name,
                            rejected = %rejected,
                            "a deprovision a human rejected is held again: the directory still \
                             says the person lost access (correct the directory, or protect the \
                             account, to end it)"
                        );
                        why = format!("{}{HELD_AGAIN}{why}", rejected.on_clock(tz));
                        outcome
                            .rejected_before
                            .insert(entry.identity_id.clone(), rejected);
                    }
                    store.deprovision_held(entry.id, &why, now + HOLD_RECHECK)?;
                    outcome.held += 1;
                }
                // Kept back by the breaker open before the pass: not an attempt,
                // and not a failure (the writes that opened it were counted so).
                ActionState::Planned if let Some((why, until)) = &blocked => {
                    store.deprovision_not_sent(entry.id, why, *until)?;
                    outcome.not_sent += 1;
                }
                // The process is stopping: nothing was sent, so this was no
                // attempt. Due again as soon as a pass runs, not after a back-off,
                // and not counted as a failure.
                ActionState::Failed if not_sent_stopping(row) => {
                    store.deprovision_not_sent(entry.id, crate::apply::NOT_SENT_STOPPING, now)?;
                    outcome.not_sent += 1;
                }
                ActionState::Planned if crate::apply::stop_requested() => {
                    store.deprovision_not_sent(entry.id, crate::apply::NOT_SENT_STOPPING, now)?;
                    outcome.not_sent += 1;
                }
                // Kept back by the breaker opening, or by an earlier write that
                // found the workspace down or its token refused: never sent, so
                // no attempt and no failure of its own (that write's failure
                // fails the pass). Tried again after the back-off a failure
                // would have set: the workspace has just shown it is not well.
                ActionState::Failed if crate::apply::not_sent(row.last_error.as_deref()) => {
                    let why = row.last_error.as_deref().unwrap_or_default();
                    let next = sla::next_attempt(entry.attempts + 1, now);
                    store.deprovision_not_sent(entry.id, why, next)?;
                    outcome.not_sent += 1;
                }
                ActionState::Failed | ActionState::Planned | ActionState::InFlight => {
                    let error = row.last_error.as_deref().unwrap_or("not applied");
                    let next = sla::next_attempt(entry.attempts + 1, now);
                    store.deprovision_failed(entry.id, error, next)?;
                    outcome.failed += 1;
                    // A job that "succeeds" while every deactivation is refused
                    // would never raise the repeated-failure alert.
                    let unwritten =
                        outcome
                            .unwritten
                            .get_or_insert_with(|| UnwrittenDeprovisions {
                                failed: 0,
                                // The account's userName: a deleted person's
                                // entry read before this pass still carries
                                // their directory id in its place.
                                first: format!("{}: {error}", row.action.subject),
                            });
                    unwritten.failed += 1;
                }
            }
        }
    }

    let mut open = lock(store)?.open_deprovisions()?;
    let restamped = sla::detected_ahead(&open, now, crate::circuit::CLOCK_STEP_MARGIN);
    if !restamped.is_empty() {
        let mut store = lock(store)?;
        for (id, detected_at, due_at) in &restamped {
            store.deprovision_detected(*id, *detected_at, *due_at)?;
        }
        tracing::warn!(
            episodes = restamped.len(),
            clock = %crate::schedule::log_time(now),
            "deprovisions detected more than an hour ahead of the clock (set back since): \
             their SLA clock starts now, not when the clock catches up"
        );
        open = store.open_deprovisions()?;
    }
    let end_of_pass =
        now + Duration::from_std(started.elapsed()).unwrap_or_else(|_| Duration::zero());
    for entry in sla::to_escalate(&open, end_of_pass) {
        tracing::error!(
            person = %entry.user_name,
            detected = %crate::schedule::log_time(entry.detected_at),
            due = %crate::schedule::log_time(entry.due_at),
            held = entry.held.as_deref().unwrap_or(""),
            last_error = entry.last_error.as_deref().unwrap_or(""),
            "deprovision overdue: access not removed within the SLA"
        );
        metrics::counter!("seatwarden_deprovisions_escalated_total").increment(1);
        lock(store)?.deprovision_escalated(entry.id, end_of_pass)?;
        outcome.escalated.push(entry.clone());
    }
    // A due account that could not be read at all (a revoked token's 401, a 5xx
    // that outlasted the retries, a 404 the search on /Users could not confirm)
    // fails the pass, once everything else it could do is done: a job that
    // succeeds while leavers cannot be reached would never alert as failing.
    // An account read and found absent or inactive is not a failure.
    let failed = unread.len();
    outcome.unread = unread.into_iter().next().map(|first| UnreadAccounts {
        failed,
        due: due_count,
        first: first.to_string(),
        transient: crate::retry::Transient::is_transient(&first),
    });
    Ok(outcome)
}

/// The apply journals an action the stop kept from being sent as failed, with
/// this error: it was never tried.
fn not_sent_stopping(row: &crate::store::JournalEntry) -> bool {
    row.last_error.as_deref() == Some(crate::apply::NOT_SENT_STOPPING)
}

/// A sweep's journaled action as `seatwarden_actions_total` counts it: one kept
/// back unsent ([`crate::apply::KeptBack`]) did not run; it did not fail.
pub fn metric_outcome(row: &crate::store::JournalEntry) -> &'static str {
    match row.state {
        ActionState::Applied => "applied",
        ActionState::Held => "held",
        ActionState::Failed if crate::apply::not_sent(row.last_error.as_deref()) => "not_run",
        ActionState::Failed => "failed",
        ActionState::Planned | ActionState::InFlight => "not_run",
    }
}

/// Applies a sweep's plan through the circuit breaker, as a reconcile's: while it
/// is open nothing is sent (the breaker state is returned), and the sweep's own
/// failures count towards opening it.
async fn apply_sweep(
    config: &Config,
    client: &ScimClient,
    store: &Arc<Mutex<Store>>,
    run_id: RunId,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<Option<CircuitState>, RunError> {
    lock(store)?.save_plan(run_id, plan, Utc::now().max(now))?;
    if plan.runnable().next().is_none() {
        return Ok(None);
    }
    let (before, _) = crate::safety::circuit_state(&*lock(store)?, config, now)?;
    if !before.allows_writes() {
        tracing::warn!(circuit = %before, "circuit breaker open: the sweep sends nothing");
        return Ok(Some(before));
    }
    // A handful of accounts: one re-read each is always cheaper than a listing.
    let writing = std::time::Instant::now();
    let summary = apply::apply_with_breaker(
        client,
        store,
        run_id,
        plan,
        config.workspace.max_concurrency.max(1),
        usize::MAX,
        Breaker::new(config.circuit_settings()),
        now,
        &config.admin_command(),
    )
    .await?;
    crate::safety::record_circuit(
        &mut *lock(store)?,
        before,
        &summary,
        &config.circuit_settings(),
        apply::later_by(now, writing),
    )?;
    Ok(None)
}

/// The same-day deprovisioning SLA as configured (`daemon.sla`, else one hour):
/// reconciles and approvals outside the daemon feed the ledger with it too.
pub fn configured_sla(config: &Config) -> Duration {
    config
        .daemon_settings()
        .map(|d| d.sla)
        .ok()
        .and_then(|sla| Duration::from_std(sla).ok())
        .unwrap_or(Duration::hours(1))
}

/// The active Owners other than the accounts in `leaving`, each confirmed by a
/// live read: the candidates are the active Owners of the newest stored workspace
/// snapshot. With them in the guard's view, a leaving Owner is held only when no
/// other Owner remains. A read that fails confirms nothing (so the leaver is held,
/// as without this check) and is logged.
async fn other_owners(
    client: &ScimClient,
    store: &Mutex<Store>,
    leaving: &WorkspaceSnapshot,
    concurrency: usize,
) -> Result<Vec<Account>, RunError> {
    let snapshot = {
        let store = lock(store)?;
        match store.previous_workspace_run(RunId::MAX)? {
            Some(run) => store.load_workspace_snapshot(run)?,
            None => None,
        }
    };
    let Some(snapshot) = snapshot else {
        return Ok(Vec::new());
    };
    let candidates: Vec<String> = snapshot
        .accounts
        .into_iter()
        .filter(|a| a.active && a.is_owner())
        .filter(|a| leaving.accounts.iter().all(|l| l.id != a.id))
        .map(|a| a.id)
        .collect();
    let confirmed: Vec<Option<Account>> =
        futures::stream::iter(candidates.into_iter().map(|id| async move {
            match client.get_account(&id).await {
                Ok(account) => account,
                Err(error) => {
                    tracing::warn!(account = %id, error = %error, "could not confirm another Owner; a leaving Owner stays held");
                    None
                }
            }
        }))
        .buffered(concurrency)
        .collect()
        .await;
    Ok(confirmed
        .into_iter()
        .flatten()
        .filter(|a| a.active && a.is_owner())
        .collect())
}

/// Whether a reconcile's report may speak for everyone's access: the directory
/// was read whole and accepted, and the workspace listing whole.
fn read_whole(store: &Store, report: &crate::report::Report) -> Result<bool, StoreError> {
    Ok(report.safety.source_fault.is_none()
        && !report.safety.workspace_listing_short
        && store.directory_accepted(report.run_id)?
        && store
            .load_directory_snapshot(report.run_id)?
            .is_some_and(|snapshot| snapshot.complete))
}

/// Ends the open episodes left without an account — `seatwarden link … --replace`
/// gave the person's account to someone else, and the episode waits for a
/// reconcile to match them afresh; or the person's match was disputed
/// ([`record_disputed`]) — once a reconcile that read the directory whole (and
/// accepted it) and the workspace listing whole finds nothing of theirs with
/// access: no drift names them but a disputed match, and the plan does not list
/// them among the disputed leavers an active account may belong to (one that did
/// have access would be `stale_access`, or such a disputed leaver). Held for ever
/// instead, such an episode would stay overdue and keep `status` failing.
/// Ended as found without access (verified, never enforced). Returns how many.
pub fn end_accountless(
    store: &mut Store,
    report: &crate::report::Report,
    disputed: &[DisputedLeaver],
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let accountless: Vec<LedgerEntry> = store
        .open_deprovisions()?
        .into_iter()
        .filter(|e| e.account_id.is_none() && e.detected_at <= report.started_at)
        .collect();
    if accountless.is_empty() || !read_whole(store, report)? {
        return Ok(0);
    }
    // A disputed item names the person whatever their accounts are: whether one
    // may still give them access is the plan's list, not the item.
    let named: HashSet<&str> = report
        .drift
        .iter()
        .filter(|item| item.kind != DriftKind::DisputedMatch)
        .filter_map(|item| item.identity_id.as_deref())
        .chain(disputed.iter().map(|leaver| leaver.identity_id.as_str()))
        .collect();
    let mut ended = 0;
    for entry in accountless {
        if named.contains(entry.identity_id.as_str()) {
            continue;
        }
        tracing::info!(
            person = %entry.user_name,
            "no account of theirs has access: the deprovision episode left without one ends"
        );
        if entry.enforced_at.is_some() {
            store.deprovision_verified(entry.id, now)?;
        } else {
            store.deprovision_found_done(entry.id, now)?;
        }
        ended += 1;
    }
    Ok(ended)
}

/// After a finished reconcile that read both sides whole: each person its plan
/// lists as a disputed leaver (someone who lost access, matched ambiguously,
/// with an account that may be theirs still active) has an episode, opened
/// without an account if they had none (detected at `detected_at`, the run's
/// start), and held: no pass deactivates an account nobody chose, but the SLA
/// runs, so the person goes overdue, is alerted on and fails `status` rather
/// than keep access unseen. `seatwarden link` gives the episode its account; the
/// hold says so with `admin_command` (`report.admin_command`).
/// Returns how many episodes it opened.
pub fn record_disputed(
    store: &mut Store,
    report: &crate::report::Report,
    disputed: &[DisputedLeaver],
    detected_at: DateTime<Utc>,
    now: DateTime<Utc>,
    sla: Duration,
    admin_command: &str,
) -> Result<usize, StoreError> {
    if disputed.is_empty() || !read_whole(store, report)? {
        return Ok(0);
    }
    let leavers: Vec<Leaver> = disputed
        .iter()
        .map(|leaver| Leaver {
            identity_id: leaver.identity_id.clone(),
            account_id: None,
            user_name: leaver.user_name.clone(),
            reason: leaver.reason,
        })
        .collect();
    // A verified episode stands for someone without access. One of theirs is
    // active again (re-enabled by hand after their episode ended with every
    // account found inactive): that episode is over, as when a reconcile plans a
    // linked leaver's account deactivated again ([`record_deprovisions`]), and
    // this is a new one.
    let active_again = disputed.iter().map(|leaver| leaver.identity_id.clone());
    let changes = open_episodes(store, active_again, &leavers, detected_at, now, sla)?;
    for entry in &changes.open {
        tracing::warn!(
            person = %entry.user_name,
            reason = entry.reason.as_str(),
            due = %crate::schedule::log_time(entry.due_at),
            "lost access in the directory, and which account is theirs is disputed: \
             held until `{admin_command} link` says"
        );
    }
    let by_identity: HashMap<&str, &DisputedLeaver> = disputed
        .iter()
        .map(|leaver| (leaver.identity_id.as_str(), leaver))
        .collect();
    // Only the episodes without an account: one with an account (the sweep's,
    // through a link the plan disputes) is held by the sweep with its own reason.
    for entry in store.open_deprovisions()? {
        let Some(leaver) = by_identity.get(entry.identity_id.as_str()) else {
            continue;
        };
        let why = disputed_hold(leaver, admin_command);
        if entry.account_id.is_none() && entry.held.as_deref() != Some(why.as_str()) {
            store.deprovision_held(entry.id, &why, now + HOLD_RECHECK)?;
        }
    }
    Ok(changes.open.len())
}

/// Opens an episode for each of `leavers` without a current one, detected at
/// `detected_at`. First, of `active_again` (people with an account active again),
/// those whose last episode was verified get it marked returned: it is over, and
/// the leaver's new episode must not be stood in for by it.
fn open_episodes(
    store: &mut Store,
    active_again: impl Iterator<Item = String>,
    leavers: &[Leaver],
    detected_at: DateTime<Utc>,
    now: DateTime<Utc>,
    sla: Duration,
) -> Result<sla::LedgerChanges, StoreError> {
    let mut current = store.current_deprovisions()?;
    let reactivated: Vec<String> = active_again
        .filter(|identity| {
            current.iter().any(|e| {
                &e.identity_id == identity && e.verified_at.is_some() && e.returned_at.is_none()
            })
        })
        .collect();
    if !reactivated.is_empty() {
        let returned = sla::observe(&current, &[], &reactivated, detected_at, sla);
        store.update_ledger(&returned, detected_at)?;
        current = store.current_deprovisions()?;
    }
    let changes = sla::observe(&current, leavers, &[], detected_at, sla);
    store.update_ledger(&changes, now)?;
    Ok(changes)
}

/// Why a disputed leaver's episode is held, as `status` and the overdue alert
/// show it: which accounts, and what a human does about it (a command run as
/// `admin_command`).
fn disputed_hold(leaver: &DisputedLeaver, admin_command: &str) -> String {
    let inactive: Vec<&str> = leaver
        .accounts
        .iter()
        .filter(|id| !leaver.active.contains(id))
        .map(String::as_str)
        .collect();
    let inactive = if inactive.is_empty() {
        String::new()
    } else {
        format!("; inactive already: {}", inactive.join(", "))
    };
    format!(
        "{DISPUTED_HOLD} which workspace account is theirs is unclear (active: {}{inactive}), \
         so none is deactivated until `{}` says which",
        leaver.active.join(", "),
        crate::model::admin_command_line(
            admin_command,
            "link",
            &[&leaver.identity_id, "ACCOUNT"],
            &[]
        )
    )
}

/// After a full reconcile, finished or failed: deprovisions it planned join the
/// ledger (detected at the run's start, `detected_at`, if the sweep had not seen
/// them), and those it applied are verified at `now`. A run that failed after its
/// writes is recorded too: its applied rows are not in flight, so no recovery
/// would record them later. First, the people its directory shows with access
/// again end their episodes ([`record_returned`]).
pub fn record_reconcile(
    config: &Config,
    store: &Mutex<Store>,
    run_id: RunId,
    detected_at: DateTime<Utc>,
    now: DateTime<Utc>,
    sla: Duration,
) -> Result<Vec<Duration>, RunError> {
    let mut store = lock(store)?;
    // Not `?`: the run's own deprovisions below must reach the ledger whatever
    // happens here (no recovery records them later); an episode left open is
    // ended by the next run or sweep that sees the person back.
    if let Err(e) = record_returned(config, &mut store, run_id, detected_at, sla) {
        tracing::warn!(
            run = run_id,
            error = %e,
            "ending the episodes of people back failed; the next run or sweep ends them"
        );
    }
    Ok(record_deprovisions(
        &mut store,
        run_id,
        None,
        detected_at,
        now,
        sla,
        &config.admin_command(),
    )?)
}

/// The people a reconcile's directory shows with access again end their episodes
/// at `at`, as a sweep's full observation ends them: without the daemon a
/// reconcile run by hand is the only observation there is, and an episode left
/// open would stay pending, go overdue, and keep a held deprovision of someone
/// who is back approvable. A directory the source check rejected, or read in
/// part, shows nothing (as to the sweep).
fn record_returned(
    config: &Config,
    store: &mut Store,
    run_id: RunId,
    at: DateTime<Utc>,
    sla: Duration,
) -> Result<(), StoreError> {
    // Only episodes opened before the run began: its directory was read after
    // that, so it is no older than them. One a sweep opened while this run was
    // going may rest on a newer directory than this run's, which would show the
    // person still in.
    let current: Vec<LedgerEntry> = store
        .current_deprovisions()?
        .into_iter()
        .filter(|entry| entry.detected_at <= at)
        .collect();
    if current.is_empty() || !store.directory_accepted(run_id)? {
        return Ok(());
    }
    let Some(snapshot) = store.load_directory_snapshot(run_id)? else {
        return Ok(());
    };
    let links: HashMap<String, String> = store
        .links()?
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    let changes = DirectoryChanges::Full {
        snapshot,
        cursor: None,
    };
    let observation = observe(config, &changes, &links, &accountless(&current));
    let mut changes = sla::observe(&current, &[], &observation.returned, at, sla);
    let approved = store.look_alike_deprovisions_approved(&observation.look_alike_held)?;
    let look_alike_ended = end_look_alike_episodes(
        &mut changes,
        &current,
        &observation.look_alike_held,
        &approved,
    );
    if changes.cancel.is_empty() && changes.returned.is_empty() {
        return Ok(());
    }
    for id in changes.cancel.iter().chain(&changes.returned) {
        if look_alike_ended.contains(id) {
            continue;
        }
        if let Some(entry) = current.iter().find(|e| e.id == *id) {
            tracing::info!(
                person = %entry.user_name,
                "has access in the directory again: the deprovision episode ends"
            );
        }
    }
    store.update_ledger(&changes, at)
}

/// Ends (cancels) the open, not yet enforced episodes of `look_alike_held`
/// (people a look-alike of a scope or protected group may keep in, see
/// [`Observation::look_alike_held`]), adding them to `changes`; returns their
/// ids (also in `changes.look_alike_ended`, so the ledger says why they
/// ended in the same write). A new leaver in such a group is held by the reconcile for a person to
/// decide, with no episode; one whose episode opened before they were put in
/// it is now in the same place, rather than deactivated when the episode fell
/// due. A deactivation already sent stays on record, as for a person back.
/// So does one a human approved since the episode began (`approved`: by
/// identity, the approval's time, when no rejection came after it, of a
/// look-alike hold only: one over a threshold did not answer this question,
/// [`Store::look_alike_deprovisions_approved`]): the
/// approval decided what the hold asked, and a write of it that failed is the
/// retry job's to send again; ended here, the person kept access until someone
/// approved it once more. A rejection since (the deprovision held again and
/// refused) is the newest decision, and the episode ends.
fn end_look_alike_episodes(
    changes: &mut sla::LedgerChanges,
    current: &[LedgerEntry],
    look_alike_held: &[String],
    approved: &HashMap<String, DateTime<Utc>>,
) -> Vec<i64> {
    let undecided: Vec<String> = look_alike_held
        .iter()
        .filter(|identity| {
            !approved.get(identity.as_str()).is_some_and(|&approved_at| {
                current.iter().any(|e| {
                    e.identity_id == **identity && e.is_open() && e.detected_at <= approved_at
                })
            })
        })
        .cloned()
        .collect();
    let ended = sla::unenforced_episodes(current, &undecided);
    for (id, user_name) in &ended {
        if !changes.cancel.contains(id) {
            tracing::warn!(
                person = %user_name,
                "is in a directory group that only looks like a configured one: the open \
                 deprovision episode ends, and the reconcile holds the deprovision \
                 (look_alike_group) for a person to approve or reject"
            );
            changes.cancel.push(*id);
            changes.look_alike_ended.push(*id);
        }
    }
    ended.into_iter().map(|(id, _)| id).collect()
}

/// Those of `links`' identities (and of `accountless`) a complete directory
/// snapshot shows with access (in scope and active, or protected), by the
/// sweep's own observation.
pub(crate) fn returned_in(
    config: &Config,
    snapshot: crate::model::DirectorySnapshot,
    links: &HashMap<String, String>,
    accountless: &HashSet<String>,
) -> Vec<String> {
    let changes = DirectoryChanges::Full {
        snapshot,
        cursor: None,
    };
    observe(config, &changes, links, accountless).returned
}

/// The people whose open episode has no account (a disputed match, a link moved
/// away): no link of theirs tells the sweep to look at them, yet their return
/// must end the episode, or it would wait overdue for a human with nothing to do.
fn accountless(entries: &[LedgerEntry]) -> HashSet<String> {
    entries
        .iter()
        .filter(|e| e.is_open() && e.account_id.is_none())
        .map(|e| e.identity_id.clone())
        .collect()
}

/// What [`record_reconcile`] does, for any writer of `run_id`'s journal: its
/// deprovisions join the ledger, the applied ones are verified at `now` (unless
/// another account of the same person was not: the episode then follows that
/// one) and the held ones wait for the next hold re-check (except those held for
/// an incomplete directory, which open no episode). `seatwarden approve` calls it after
/// applying, so an approved deprovision is verified in the ledger at once.
/// `only`: the journal rows (seqs) to record, for `approve`, which must not record
/// again what the run itself recorded (a deactivation verified then would read as
/// a person who came back and left again). Returns the detection-to-verification
/// latency of each episode it verified.
pub fn record_deprovisions(
    store: &mut Store,
    run_id: RunId,
    only: Option<&[u32]>,
    detected_at: DateTime<Utc>,
    now: DateTime<Utc>,
    sla: Duration,
    admin_command: &str,
) -> Result<Vec<Duration>, StoreError> {
    let journal = store.journal_deprovisions(run_id)?;
    let deprovisions: Vec<&crate::store::JournalEntry> = journal
        .iter()
        .filter(|row| only.is_none_or(|seqs| seqs.contains(&row.action.seq)))
        .filter(|row| ledgered(row))
        .collect();
    if deprovisions.is_empty() {
        return Ok(Vec::new());
    }
    // The person's linked account names the episode, not a duplicate of theirs
    // (under its own userName), whatever the order of the plan.
    let mut leavers: Vec<(bool, Leaver)> = deprovisions
        .iter()
        .filter_map(|row| {
            let account_id = revoked_account(&row.action).map(str::to_owned);
            Some((
                plan::is_duplicate_deprovision(&row.action),
                Leaver {
                    identity_id: row.action.identity_id.clone()?,
                    account_id,
                    user_name: row.action.subject.clone(),
                    reason: loss_reason(&row.action.detail),
                },
            ))
        })
        .collect();
    leavers.sort_by_key(|(duplicate, _)| *duplicate);
    let leavers: Vec<Leaver> = leavers.into_iter().map(|(_, leaver)| leaver).collect();
    // A planned deactivation means the account was active again: an episode
    // verified earlier is over (the person came back, or someone re-enabled the
    // account, unseen by any sweep), and this is a new one. Without this the
    // verified episode would stand in for it, and a held or failed deactivation
    // would be in no episode: not overdue, never alerted. A duplicate's is not:
    // it was active all along, left alone while the match was disputed, and the
    // episode verified when the linked account went (`seatwarden link`, then the
    // retry job) ends only now, with it.
    let active_again = deprovisions
        .iter()
        .filter(|row| matches!(row.action.kind, ActionKind::Deactivate { .. }))
        .filter(|row| !plan::is_duplicate_deprovision(&row.action))
        .filter_map(|row| row.action.identity_id.clone());
    open_episodes(store, active_again, &leavers, detected_at, now, sla)?;
    let current = store.current_deprovisions()?;
    let open: HashMap<&str, (i64, DateTime<Utc>)> = current
        .iter()
        .filter(|e| e.is_open())
        .map(|e| (e.identity_id.as_str(), (e.id, e.sla_start())))
        .collect();
    let verified_before: HashMap<&str, i64> = current
        .iter()
        .filter(|e| e.verified_at.is_some())
        .map(|e| (e.identity_id.as_str(), e.id))
        .collect();
    // A sweep opens a deleted person's episode under their directory id, to be
    // replaced by the account's userName when it reads the account. A reconcile
    // that deprovisions them first (the sweep could not reach the workspace, say)
    // names them here, or `status`, the digest and the alert's resolution would
    // show only the id for good.
    let unnamed: HashMap<&str, i64> = current
        .iter()
        .filter(|e| e.is_open() && known_only_by_id(&e.user_name, &e.identity_id))
        .map(|e| (e.identity_id.as_str(), e.id))
        .collect();
    // Each person's accounts this run was to take away and did not (held, failed,
    // not sent): while one of them is active the person keeps access, whichever
    // of their accounts went, so their episode is not verified. A leaver's
    // duplicate left active after the sweep verified the linked account's
    // deactivation would otherwise be in no open episode: never overdue, never
    // escalated.
    let mut unfinished: HashMap<&str, Vec<(&str, &crate::store::JournalEntry)>> = HashMap::new();
    for row in &deprovisions {
        if row.state == ActionState::Applied {
            continue;
        }
        if let (Some(identity), Some(account)) = (
            row.action.identity_id.as_deref(),
            revoked_account(&row.action),
        ) {
            unfinished
                .entry(identity)
                .or_default()
                .push((account, *row));
        }
    }
    let account_of: HashMap<i64, (Option<&str>, &str)> = current
        .iter()
        .map(|e| (e.id, (e.account_id.as_deref(), e.user_name.as_str())))
        .collect();
    let held_episodes: HashSet<i64> = current
        .iter()
        .filter(|e| e.is_open() && e.held.is_some())
        .map(|e| e.id)
        .collect();
    store.batch(|store| {
        let mut verified = Vec::new();
        let mut counted = HashSet::new();
        for row in &deprovisions {
            let identity = row.action.identity_id.as_deref();
            let left_active = identity.is_some_and(|i| unfinished.contains_key(i));
            // A duplicate's subject is its own account's userName, not the person's.
            if !plan::is_duplicate_deprovision(&row.action)
                && let Some(&entry) = identity.and_then(|identity| unnamed.get(identity))
            {
                store.deprovision_user_name(entry, &row.action.subject)?;
            }
            let Some(&(entry, sla_start)) = identity.and_then(|identity| open.get(identity)) else {
                // The last of the person's accounts is gone now: their episode is
                // verified as of now, once (its latency was counted when it was
                // first verified).
                if row.state == ActionState::Applied
                    && plan::is_duplicate_deprovision(&row.action)
                    && let Some(&entry) = identity.and_then(|i| verified_before.get(i))
                {
                    store.deprovision_verified(entry, now)?;
                }
                continue;
            };
            match row.state {
                // Another of their accounts is still active: see below.
                ActionState::Applied if left_active => {}
                ActionState::Applied => {
                    store.deprovision_enforced(entry, now)?;
                    store.deprovision_verified(entry, now)?;
                    // Once per episode, however many of the person's accounts went.
                    if counted.insert(entry) {
                        // An exception taken out early ended no later than now.
                        verified.push(now - sla_start.min(now));
                    }
                }
                ActionState::Held => {
                    let why = hold_reason(&row.action, admin_command);
                    store.deprovision_held(entry, &why, now + HOLD_RECHECK)?;
                }
                // Planned with no rule holding it and not done (its write
                // failed, or was kept back): a hold the episode kept from an
                // earlier run (a guard's, an approval a rejection took back) is
                // over. Left standing, `status` went on naming it and the retry
                // job waited for its recheck, as for a hold.
                ActionState::Failed | ActionState::Planned
                    if row.action.held.is_none()
                        && !plan::is_duplicate_deprovision(&row.action)
                        && held_episodes.contains(&entry) =>
                {
                    store.deprovision_released(entry)?;
                }
                _ => {}
            }
        }
        for (identity, accounts) in &unfinished {
            let Some(&(account, row)) = accounts.first() else {
                continue;
            };
            if let Some(&(entry, _)) = open.get(identity) {
                // The episode goes on with an account still active, so the retry
                // job deactivates that one rather than find the other gone.
                if let Some(&(current, user_name)) = account_of.get(&entry)
                    && !accounts.iter().any(|(a, _)| Some(*a) == current)
                {
                    store.deprovision_account(entry, Some(account), user_name)?;
                }
            } else if let Some(&entry) = verified_before.get(identity) {
                // Verified when their linked account went (by a sweep, which
                // knows only the link), yet this one still gives them access.
                store.deprovision_reopened(entry, account)?;
                if row.state == ActionState::Held {
                    let why = hold_reason(&row.action, admin_command);
                    store.deprovision_held(entry, &why, now + HOLD_RECHECK)?;
                }
            }
        }
        Ok(verified)
    })
}

/// After `seatwarden approve` of `run`: each approved deprovision (`approved`,
/// by seq) the workspace does not show done yet (its write failed, or was kept
/// back unsent) leaves its person's open episode released from the hold it
/// waited in, with why it is not done and when the retry job tries it again
/// (the backoff of a failed attempt; at once for one the writes stopped
/// before). The retry job sends it, past the thresholds the approval decided
/// over ([`crate::safety::approved_deprovision_accounts`]): a person is not
/// asked to approve it again, and the SLA clock keeps running meanwhile.
pub fn record_approved_unwritten(
    store: &mut Store,
    run_id: RunId,
    approved: &[u32],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let unwritten: Vec<crate::store::JournalEntry> = store
        .journal_deprovisions(run_id)?
        .into_iter()
        .filter(|row| approved.contains(&row.action.seq))
        .filter(ledgered)
        .filter(|row| matches!(row.state, ActionState::Failed | ActionState::Planned))
        .collect();
    if unwritten.is_empty() {
        return Ok(());
    }
    let open: HashMap<String, LedgerEntry> = store
        .open_deprovisions()?
        .into_iter()
        .map(|e| (e.identity_id.clone(), e))
        .collect();
    store.batch(|store| {
        for row in &unwritten {
            let Some(entry) = row.action.identity_id.as_ref().and_then(|i| open.get(i)) else {
                continue;
            };
            store.deprovision_hold_over(entry.id)?;
            let error = row.last_error.as_deref();
            if row.state == ActionState::Planned {
                // Its phase never came: no attempt, due at once.
                store.deprovision_not_sent(entry.id, crate::report::UNREACHED_REASON, now)?;
            } else if not_sent_stopping(row) {
                // The approval was stopping: no attempt, due at once.
                store.deprovision_not_sent(entry.id, crate::apply::NOT_SENT_STOPPING, now)?;
            } else if crate::apply::not_sent(error) {
                let next = sla::next_attempt(entry.attempts + 1, now);
                store.deprovision_not_sent(entry.id, error.unwrap_or_default(), next)?;
            } else {
                let next = sla::next_attempt(entry.attempts + 1, now);
                store.deprovision_failed(entry.id, error.unwrap_or("not applied"), next)?;
            }
        }
        Ok(())
    })
}

/// Holds the open episodes whose approved deprovision a newer `reject` took
/// back ([`crate::safety::rejected_approvals`]), saying so ("rejected in run N
/// by USER at T; held again: the approval in run M … is taken back"), and
/// returns their people. The retry pass leaves them out of what it reads and
/// sends: it knows no groups, so a look-alike member's deprovision, whose
/// episode only the approval kept, would otherwise be sent before the next
/// sweep ends the episode. `reject` calls it too, so `status` and `explain`
/// say it at once; the retry pass calls it again under the writer lock it
/// holds to the end, so a `reject` killed before its own call (or run by an
/// older build) still stops the write, and no `reject` comes between the
/// reading and the sending. A reconcile plans the deprovision again from the
/// directory (its guard holds a look-alike member's for a new decision).
pub fn hold_rejected_approvals(
    store: &mut Store,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    admin_command: &str,
) -> Result<HashSet<String>, StoreError> {
    let rejected = crate::safety::rejected_approvals(store)?;
    store.batch(|store| {
        for (entry, decided) in rejected.values() {
            let rejection = EarlierRejection {
                run_id: decided.rejection.run,
                user: decided.rejection.user.clone(),
                at: decided.rejection.at,
            };
            // Rejected in its own run, the approval's record is replaced.
            let approval = if decided.approval.user.is_empty() {
                format!("the approval in run {}", decided.approval.run)
            } else {
                format!(
                    "the approval in run {} by {} at {}",
                    decided.approval.run,
                    decided.approval.user,
                    crate::report::local_time(decided.approval.at, tz)
                )
            };
            let why = format!(
                "{}{HELD_AGAIN}{approval} is taken back: not sent; the next reconcile plans it \
                 again from the directory, and `{admin_command} approve` of a run that holds \
                 it again sends it",
                rejection.on_clock(tz),
            );
            let said = entry.held.as_deref() == Some(why.as_str());
            if !said {
                tracing::info!(
                    person = %entry.user_name,
                    rejected = %rejection,
                    approved_in = decided.approval.run,
                    "an approved deprovision a newer rejection took back is not sent"
                );
            }
            // Looked at again (and so due for an attempt) only at the recheck:
            // a retry pass each minute would otherwise ask the workspace for
            // an episode it leaves alone.
            if !said || entry.next_attempt_at.is_none_or(|at| at <= now) {
                store.deprovision_held(entry.id, &why, now + HOLD_RECHECK)?;
            }
        }
        Ok(())
    })?;
    Ok(rejected.into_keys().collect())
}

/// The account a deprovision deactivates or deletes.
fn revoked_account(action: &Action) -> Option<&str> {
    match &action.kind {
        ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. } => {
            Some(account_id)
        }
        _ => None,
    }
}

/// The ledger after [`apply::recover`]: [`record_recovered`], then
/// [`backdate_cut_off`] for the runs it found cut off. The sweep and `approve`
/// both resolve a dead process's rows in flight this way, under the writer lock.
pub fn record_recovery(
    store: &mut Store,
    recovered: &apply::Recovered,
    now: DateTime<Utc>,
    sla: Duration,
    admin_command: &str,
) -> Result<Vec<Duration>, StoreError> {
    let latencies = record_recovered(store, recovered, now, sla, admin_command)?;
    backdate_cut_off(store, &recovered.runs)?;
    Ok(latencies)
}

/// After [`apply::recover`]: the deprovisions it found applied join the ledger as
/// their run would have recorded them had it finished (detected at the run's
/// start, verified at `now`); a reconcile cut off after its writes never recorded
/// them. One verified since that run began (a sweep found the account inactive)
/// is this one, already recorded: recorded again, it would read as a person who
/// came back and left again.
pub fn record_recovered(
    store: &mut Store,
    recovered: &apply::Recovered,
    now: DateTime<Utc>,
    sla: Duration,
    admin_command: &str,
) -> Result<Vec<Duration>, StoreError> {
    let mut latencies = Vec::new();
    for (run, seqs) in &recovered.applied {
        let Some(started) = store.run(*run)?.map(|r| r.started_at) else {
            continue;
        };
        let current = store.current_deprovisions()?;
        let recorded = |identity: &str| {
            current
                .iter()
                .any(|e| e.identity_id == identity && e.verified_at.is_some_and(|at| at >= started))
        };
        let seqs: Vec<u32> = store
            .journal_deprovisions(*run)?
            .into_iter()
            .filter(|row| seqs.contains(&row.action.seq))
            .filter(|row| !row.action.identity_id.as_deref().is_some_and(recorded))
            .map(|row| row.action.seq)
            .collect();
        latencies.extend(record_deprovisions(
            store,
            *run,
            Some(&seqs),
            started,
            now,
            sla,
            admin_command,
        )?);
    }
    Ok(latencies)
}

/// The deprovisions that reconciles `cut_off` applied and verified before they
/// were cut off, recorded as those runs would have recorded them: detected at the
/// run's start, verified when the row was marked applied. A crash after the
/// verification and before [`record_reconcile`] left them out of the ledger, and
/// nothing else would put them in (their rows are not in flight, and the accounts
/// are inactive, so no run plans them again); so did a ledger write that failed
/// as the run ended. Ones recorded since are skipped: a person with an episode
/// verified since the run began, and one whose episode ended since because they
/// had access again ([`Store::people_back_since`]; the runs asked include ones
/// that did record their deprovisions, and are asked on every writer's start
/// while the reconciles keep failing).
pub fn record_cut_off_applied(
    store: &mut Store,
    cut_off: &[RunId],
    sla: Duration,
    admin_command: &str,
) -> Result<Vec<Duration>, StoreError> {
    let mut latencies = Vec::new();
    for &run in cut_off {
        let Some(started) = store.run(run)?.map(|r| r.started_at) else {
            continue;
        };
        // Nor anyone back since: a run asked again while the reconciles after it
        // keep failing would open their episode anew from its old rows, and the
        // retry job, which reads no directory, would deactivate them.
        let recorded: HashSet<String> = store
            .verified_deprovisions_since(started)?
            .into_iter()
            .map(|entry| entry.identity_id)
            .chain(store.people_back_since(started)?)
            .collect();
        let rows: Vec<crate::store::JournalEntry> = store
            .journal_deprovisions(run)?
            .into_iter()
            .filter(ledgered)
            .filter(|row| {
                !row.action
                    .identity_id
                    .as_ref()
                    .is_some_and(|identity| recorded.contains(identity))
            })
            .collect();
        let applied: Vec<&crate::store::JournalEntry> = rows
            .iter()
            .filter(|row| row.state == ActionState::Applied)
            .collect();
        let Some(verified_at) = applied.iter().map(|row| row.updated_at).max() else {
            continue;
        };
        // With the person's other deprovisions of the run (a duplicate account
        // failed or not sent): their episode is verified only once none of their
        // accounts is left active, as the run itself would have decided.
        let people: HashSet<&str> = applied
            .iter()
            .filter_map(|row| row.action.identity_id.as_deref())
            .collect();
        let recovered = apply::Recovered {
            applied: std::collections::BTreeMap::from([(
                run,
                rows.iter()
                    .filter(|row| {
                        row.action
                            .identity_id
                            .as_deref()
                            .is_some_and(|identity| people.contains(identity))
                    })
                    .map(|row| row.action.seq)
                    .collect(),
            )]),
            ..apply::Recovered::default()
        };
        latencies.extend(record_recovered(
            store,
            &recovered,
            verified_at,
            sla,
            admin_command,
        )?);
    }
    Ok(latencies)
}

/// Whether a journaled action is a deprovision the ledger keeps an episode for.
fn ledgered(row: &crate::store::JournalEntry) -> bool {
    let action = &row.action;
    action.reason == DriftKind::StaleAccess
        && matches!(
            action.kind,
            ActionKind::Deactivate { .. } | ActionKind::Delete { .. }
        )
        && action.identity_id.is_some()
        // Deleting an account deactivated for the whole retention period takes no
        // access away: there is nothing to be late with.
        && !matches!(
            action.kind,
            ActionKind::Delete {
                deactivated_since: Some(_),
                ..
            }
        )
        // Held because the directory was not read whole: the person may simply be
        // missing from the read. The retry job reads no directory and would
        // enforce it; only a complete observation (the next sweep or reconcile)
        // may open the episode.
        && action.held != Some(HoldReason::IncompleteDirectory)
        // Held because the person is in a group that only looks like a
        // configured one: they may be no leaver at all, and the retry job, which
        // knows no groups, would enforce it. Once a person approved it (the row
        // released, keeping the reason it was held for) it is a deprovision like
        // any other: verified in the ledger, or, failed, enforced by the retry job.
        && !(matches!(action.held, Some(HoldReason::LookAlikeGroup { .. }))
            && row.state == ActionState::Held)
}

/// After [`apply::recover`] and the observation that follows it: a reconcile cut
/// off mid-apply (`cut_off`, the runs recovery found rows of in flight) recorded
/// nothing in the ledger, and [`record_recovered`] records only the deprovisions
/// it finds applied. The ones that run held, or did not get to apply, are opened
/// by the next observation (a sweep's, or the next reconcile's), from its own
/// later time: the SLA would restart after every crash, and an overdue hold
/// escalate as late as the process was down. An episode of such a person opened
/// since that run started, with nothing else in their ledger since, moves back to
/// the run's start, when it saw them lose access (its due time with it).
///
/// Nothing is opened from the cut-off run alone: its observation may be stale (the
/// person back since), and the retry job enforces open episodes without reading
/// the directory. Returns how many episodes moved.
pub fn backdate_cut_off(store: &mut Store, cut_off: &BTreeSet<RunId>) -> Result<usize, StoreError> {
    let mut moved = 0;
    for &run in cut_off {
        let Some(record) = store.run(run)? else {
            continue;
        };
        // Still `running` when a sweep recovers it (under the writer lock, a dead
        // process's), `failed` once closed. A finished one recorded its own
        // deprovisions (its rows in flight are an approval's, cut off).
        if record.kind != RunKind::Reconcile || record.status == RunStatus::Succeeded {
            continue;
        }
        let seen = record.started_at;
        for row in store.journal_deprovisions(run)? {
            if !ledgered(&row) {
                continue;
            }
            let Some(identity) = row.action.identity_id.as_deref() else {
                continue;
            };
            let history = store.deprovision_history(identity, 2)?;
            let Some(episode) = history.first() else {
                continue;
            };
            // Anything else in their ledger since the run began (an episode that
            // ended, was opened or verified since) makes this one a later loss.
            let quiet_since = history.iter().skip(1).all(|earlier| {
                [
                    Some(earlier.detected_at),
                    earlier.verified_at,
                    earlier.closed_at,
                    earlier.returned_at,
                ]
                .into_iter()
                .flatten()
                .all(|at| at < seen)
            });
            // A verified episode's latency is reported already: it stands.
            if episode.detected_at > seen
                && episode.verified_at.is_none()
                && episode.closed_at.is_none()
                && episode.returned_at.is_none()
                && quiet_since
            {
                // Put off by an exception, it is due after the exception's
                // end, which an earlier detection does not move.
                let due = match episode.excepted_until {
                    Some(_) => episode.due_at,
                    None => seen + (episode.due_at - episode.detected_at),
                };
                store.deprovision_detected(episode.id, seen, due)?;
                moved += 1;
            }
        }
    }
    Ok(moved)
}

/// The identity ids seatwarden knows of without reading the directory: every
/// linked identity and everyone in the newest stored directory snapshot. What an
/// account's `externalId` must name for the sweep to treat its link as
/// contradicted, as the plan does with the directory it reads; an id it names
/// that is nobody's (another provider's ids, say) leaves the link standing.
fn identities_known(store: &Store) -> Result<HashSet<String>, StoreError> {
    let mut known: HashSet<String> = store.links()?.into_iter().map(|l| l.identity_id).collect();
    if let Some(run) = store.latest_snapshot_run()?
        && let Some(snapshot) = store.load_directory_snapshot(run)?
    {
        known.extend(snapshot.identities.into_iter().map(|i| i.id));
    }
    Ok(known)
}

/// The newest rejection (`seatwarden reject`) of a held deprovision of `entry`'s
/// person or account in a run other than `run`, made since the episode began.
fn rejected_before(
    store: &Store,
    entry: &LedgerEntry,
    run: RunId,
) -> Result<Option<EarlierRejection>, StoreError> {
    const ROWS_LOOKED_AT: usize = 50;
    let rows = store.actions_about(
        Some(&entry.identity_id),
        entry.account_id.as_deref(),
        ROWS_LOOKED_AT,
    )?;
    let mut audit: Option<Vec<crate::store::AuditEntry>> = None;
    for row in rows
        .iter()
        .filter(|r| r.run != run && r.action.kind.is_deprovision())
    {
        if store.decisions(row.run)?.get(&row.action.seq) != Some(&Decision::Rejected) {
            continue;
        }
        let trail = match &audit {
            Some(trail) => trail,
            None => audit.insert(store.audit()?),
        };
        if let Some(rejection) = trail
            .iter()
            .rev()
            .find(|a| a.command == "reject" && a.run == Some(row.run))
            .filter(|a| a.at >= entry.detected_at)
        {
            return Ok(Some(EarlierRejection {
                run_id: row.run,
                user: rejection.user.clone(),
                at: rejection.at,
            }));
        }
    }
    Ok(None)
}

/// Why the guard held an action, as the ledger records it: the commands it tells
/// a person to run spelled with `admin_command` (`report.admin_command`), as the
/// report and the alerts spell them.
fn hold_reason(action: &Action, admin_command: &str) -> String {
    action.held.as_ref().map_or_else(
        || "held".to_owned(),
        |held| held.describe(admin_command).to_string(),
    )
}

/// The plan words its revocations with [`InactiveReason`]'s text or "deleted from
/// the directory"; map them back for the ledger.
fn loss_reason(detail: &str) -> LossReason {
    [
        (InactiveReason::Suspended, LossReason::Suspended),
        (InactiveReason::Deprovisioned, LossReason::Deprovisioned),
        (InactiveReason::OutOfScope, LossReason::OutOfScope),
    ]
    .into_iter()
    .find(|(inactive, _)| detail.contains(&inactive.to_string()))
    .map(|(_, loss)| loss)
    .unwrap_or(LossReason::Deleted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod reachability_tests {
    use super::{OutageNews, Reachability, outage_news, reachability_changed};

    /// An outage is news when it starts, when the due accounts it leaves unread
    /// at least double (one at least), and when it ends; not at every pass
    /// between; one workspace's outage is not another's.
    #[test]
    fn an_outage_is_news_when_it_starts_grows_and_ends() {
        let down = "https://outage-news.example/scim/v2";
        let up = "https://no-outage-news.example/scim/v2";
        assert_eq!(outage_news(down, None), OutageNews::Quiet);
        assert_eq!(outage_news(down, Some(0)), OutageNews::Started);
        assert_eq!(outage_news(down, Some(0)), OutageNews::Persists);
        assert_eq!(outage_news(up, None), OutageNews::Quiet);
        assert_eq!(outage_news(down, Some(3)), OutageNews::Grew);
        assert_eq!(outage_news(down, Some(5)), OutageNews::Persists);
        assert_eq!(outage_news(down, Some(1)), OutageNews::Persists);
        assert_eq!(outage_news(down, Some(6)), OutageNews::Grew);
        assert_eq!(outage_news(down, None), OutageNews::Ended);
        assert_eq!(outage_news(down, None), OutageNews::Quiet);
        assert_eq!(outage_news(down, Some(1)), OutageNews::Started);
    }

    /// An outage is a change once when it starts and once when it ends, however
    /// many passes fail in between; one workspace's outage is not another's.
    #[test]
    fn an_outage_changes_reachability_once_each_way() {
        let down = "https://down.example/scim/v2";
        let up = "https://up.example/scim/v2";
        assert_eq!(reachability_changed(down, true), None);
        assert_eq!(reachability_changed(down, false), Some(Reachability::Lost));
        assert_eq!(reachability_changed(down, false), None);
        assert_eq!(reachability_changed(up, true), None);
        assert_eq!(reachability_changed(down, false), None);
        assert_eq!(
            reachability_changed(down, true),
            Some(Reachability::Regained)
        );
        assert_eq!(reachability_changed(down, true), None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod ledger_name_tests {
    use crate::model::{Action, ActionKind, DriftKind, Plan};
    use crate::sla::{self, Leaver, LossReason};
    use crate::store::{RunKind, Store};
    use chrono::{DateTime, Duration, Utc};

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    /// The sweep saw someone deleted from the directory while the workspace did
    /// not answer, so their episode carries only their directory id; the
    /// reconcile that deactivates them names them by the account's userName, as
    /// the sweep does once it reads the account: `status`, the digest and the
    /// overdue alert's resolution say who it was.
    #[test]
    fn a_reconcile_names_the_episode_the_sweep_opened_under_a_directory_id() {
        let mut store = Store::open_in_memory().unwrap();
        let hour = Duration::hours(1);
        let seen = at("2026-12-01T09:00:00Z");
        let deleted = Leaver {
            identity_id: "00u1".into(),
            account_id: Some("acc-1".into()),
            user_name: "00u1".into(),
            reason: LossReason::Deleted,
        };
        let changes = sla::observe(&[], &[deleted], &[], seen, hour);
        store.update_ledger(&changes, seen).unwrap();

        let later = seen + Duration::minutes(20);
        let run = store.begin_run(RunKind::Reconcile, later).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: "acc-1".into(),
                },
                reason: DriftKind::StaleAccess,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: "identity was deleted from the directory; account is still active".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, later).unwrap();
        store.mark_in_flight(run, 0, later).unwrap();
        store.mark_applied(run, 0, later, None).unwrap();
        super::record_deprovisions(&mut store, run, None, later, later, hour, "seatwarden")
            .unwrap();

        let history = store.deprovision_history("00u1", 5).unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].user_name, "ada@example.com");
        assert_eq!(history[0].detected_at, seen);
        assert!(history[0].verified_at.is_some(), "{history:?}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod duplicate_tests {
    use crate::model::{Action, ActionKind, DriftKind, Plan};
    use crate::store::{RunKind, Store};
    use chrono::{DateTime, Duration, Utc};

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn deactivate(seq: u32, account: &str, subject: &str, detail: &str) -> Action {
        Action {
            seq,
            kind: ActionKind::Deactivate {
                account_id: account.into(),
            },
            reason: DriftKind::StaleAccess,
            subject: subject.into(),
            identity_id: Some("00u1".into()),
            detail: detail.into(),
            held: None,
        }
    }

    /// One reconcile deactivates a leaver's linked account and fails to
    /// deactivate her duplicate (in either order): she still has access through
    /// the account left active, so her episode stays open, on that account, and
    /// goes overdue — never verified while an account of hers is active.
    #[test]
    fn an_episode_is_not_verified_while_a_deprovision_of_the_same_run_failed() {
        for (linked_applied, dup_applied) in [(true, false), (false, true)] {
            let mut store = Store::open_in_memory().unwrap();
            let hour = Duration::hours(1);
            let t0 = at("2026-12-01T09:00:00Z");
            let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
            let plan = Plan {
                actions: vec![
                    deactivate(0, "acc-1", "ada@example.com", "identity is suspended"),
                    deactivate(
                        1,
                        "acc-2",
                        "ada.alias@example.com",
                        &format!(
                            "{}ada@example.com (identity 00u1)",
                            crate::plan::DUPLICATE_OF
                        ),
                    ),
                ],
                ..Plan::default()
            };
            store.save_plan(run, &plan, t0).unwrap();
            for (seq, applied) in [(0, linked_applied), (1, dup_applied)] {
                store.mark_in_flight(run, seq, t0).unwrap();
                if applied {
                    store.mark_applied(run, seq, t0, None).unwrap();
                } else {
                    store.mark_failed(run, seq, t0, "HTTP 503").unwrap();
                }
            }
            let latencies =
                super::record_deprovisions(&mut store, run, None, t0, t0, hour, "seatwarden")
                    .unwrap();
            assert!(latencies.is_empty(), "{latencies:?}");
            let open = store.open_deprovisions().unwrap();
            assert_eq!(open.len(), 1, "{open:#?}");
            let left = if linked_applied { "acc-2" } else { "acc-1" };
            assert_eq!(open[0].account_id.as_deref(), Some(left), "{open:#?}");
            assert_eq!(open[0].user_name, "ada@example.com");
            assert_eq!(
                open[0].state(t0 + hour),
                crate::sla::EntryState::Overdue,
                "{open:#?}"
            );
            // The run failed after that (its report, say): the next writer asks
            // it again for what its ledger write may have left out, and must
            // decide as it did, not verify her with one account still active.
            store
                .finish_run(run, t0, crate::store::RunStatus::Failed, Some("x"))
                .unwrap();
            assert_eq!(
                store.unsucceeded_reconciles_with_deprovisions().unwrap(),
                [run]
            );
            super::record_cut_off_applied(&mut store, &[run], hour, "seatwarden").unwrap();
            let open = store.open_deprovisions().unwrap();
            assert_eq!(open.len(), 1, "{open:#?}");
            assert_eq!(open[0].account_id.as_deref(), Some(left), "{open:#?}");
            // She is back: a sweep ends her episode. Asked again (the reconciles
            // since keep failing), the run must not open one for her anew from
            // its old rows: the retry job, which reads no directory, would
            // deactivate the account she has again.
            let cancel = crate::sla::LedgerChanges {
                cancel: vec![open[0].id],
                ..crate::sla::LedgerChanges::default()
            };
            store.update_ledger(&cancel, t0 + hour * 2).unwrap();
            super::record_cut_off_applied(&mut store, &[run], hour, "seatwarden").unwrap();
            let open = store.open_deprovisions().unwrap();
            assert!(open.is_empty(), "{open:#?}");
        }
    }

    /// A reconcile that failed after deactivating a leaver is asked again by
    /// every writer, until a reconcile succeeds, for what its ledger write may
    /// have left out; her episode, ended since because she came back, is what
    /// tells it she is not to be recorded again. The daily prune deleted that
    /// episode once older than `schedule.retention` while the run stayed (it
    /// has the newest report, the reconciles since failing before they stored
    /// one), and the next writer gave her a verified episode anew from the
    /// run's old rows: someone back with access, whom the sweep would then
    /// never open an episode for when she left again.
    #[test]
    fn a_pruned_return_does_not_record_a_failed_reconciles_leaver_again() {
        let mut store = Store::open_in_memory().unwrap();
        let hour = Duration::hours(1);
        let t0 = at("2026-12-01T09:00:00Z");
        let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
        let plan = Plan {
            actions: vec![deactivate(
                0,
                "acc-1",
                "ada@example.com",
                "identity is suspended",
            )],
            ..Plan::default()
        };
        store.save_plan(run, &plan, t0).unwrap();
        store.mark_in_flight(run, 0, t0).unwrap();
        store.mark_applied(run, 0, t0, None).unwrap();
        super::record_deprovisions(&mut store, run, None, t0, t0, hour, "seatwarden").unwrap();
        store.save_report(run, "{}").unwrap();
        store
            .finish_run(run, t0, crate::store::RunStatus::Failed, Some("x"))
            .unwrap();
        let verified = store.current_deprovisions().unwrap();
        assert_eq!(verified.len(), 1, "{verified:#?}");
        assert!(verified[0].verified_at.is_some(), "{verified:#?}");
        // She is back.
        let back = crate::sla::LedgerChanges {
            returned: vec![verified[0].id],
            ..crate::sla::LedgerChanges::default()
        };
        store.update_ledger(&back, t0 + hour * 2).unwrap();
        // A retention of a day, three days on: the run stays, the newest report's.
        store.prune_before(t0 + Duration::days(2)).unwrap();
        assert!(store.run(run).unwrap().is_some());
        assert_eq!(
            store.unsucceeded_reconciles_with_deprovisions().unwrap(),
            [run]
        );
        super::record_cut_off_applied(&mut store, &[run], hour, "seatwarden").unwrap();
        let current = store.current_deprovisions().unwrap();
        assert!(current.is_empty(), "{current:#?}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod hold_tests {
    use super::{DISPUTED_HOLD, EarlierRejection, disputed_hold};
    use crate::model::DisputedLeaver;
    use crate::sla::LossReason;

    /// A disputed leaver's hold, as `status` and the overdue alert show it, names
    /// the command that settles it as people run seatwarden here.
    #[test]
    fn a_disputed_hold_names_the_configured_link_command() {
        let leaver = DisputedLeaver {
            identity_id: "00u7".into(),
            user_name: "ada@example.com".into(),
            reason: LossReason::Deleted,
            accounts: vec!["a1".into(), "a2".into()],
            active: vec!["a1".into()],
        };
        let held = disputed_hold(&leaver, "sudo seatwarden-admin");
        assert!(held.starts_with(DISPUTED_HOLD), "{held}");
        assert!(
            held.ends_with(
                "(active: a1; inactive already: a2), so none is deactivated until \
                 `sudo seatwarden-admin link 00u7 ACCOUNT` says which"
            ),
            "{held}"
        );
    }

    /// A provider's id with a space or a quote, or starting with `-`, is
    /// printed so that the pasted command gets it as one argument.
    #[test]
    fn a_disputed_hold_quotes_the_identity_id() {
        let held = |identity_id: &str| {
            let leaver = DisputedLeaver {
                identity_id: identity_id.into(),
                user_name: "ada@example.com".into(),
                reason: LossReason::Deleted,
                accounts: vec!["a1".into()],
                active: vec!["a1".into()],
            };
            disputed_hold(&leaver, "seatwarden")
        };
        assert!(
            held("it's $(x)").ends_with(r"`seatwarden link 'it'\''s $(x)' ACCOUNT` says which"),
            "{}",
            held("it's $(x)")
        );
        assert!(
            held("-abc").ends_with("`seatwarden link -- -abc ACCOUNT` says which"),
            "{}",
            held("-abc")
        );
    }

    /// A reconcile's held deprovision, as `status` and the overdue alert show it
    /// from the ledger, tells a person the commands that release it as they run
    /// seatwarden here (`report.admin_command`), like the report does.
    #[test]
    fn a_held_deprovision_in_the_ledger_names_the_configured_commands() {
        use crate::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
        use crate::store::{RunKind, Store};

        let mut store = Store::open_in_memory().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc();
        let run = store.begin_run(RunKind::Reconcile, at).unwrap();
        // A leaver's deactivated account, deleted at once (no retention), whose
        // userName someone new in the directory wants.
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Delete {
                    account_id: "acc-1".into(),
                    deactivated_since: None,
                    frees_user_name: None,
                },
                reason: DriftKind::StaleAccess,
                subject: "ada@example.com".into(),
                identity_id: Some("00u1".into()),
                detail: "identity was deleted from the directory".into(),
                held: Some(HoldReason::UserNameWanted {
                    identity_id: "00u9".into(),
                    account_id: "acc-1".into(),
                }),
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at).unwrap();
        super::record_deprovisions(
            &mut store,
            run,
            None,
            at,
            at,
            chrono::Duration::hours(4),
            "sudo seatwarden-admin",
        )
        .unwrap();
        let open = store.open_deprovisions().unwrap();
        let held = open[0].held.as_deref().unwrap_or_default();
        assert!(
            held.ends_with(
                "`sudo seatwarden-admin link 00u9 acc-1 --replace` hands them the account and \
                 its projects; `sudo seatwarden-admin approve` deletes it"
            ),
            "{held}"
        );
    }

    /// The rejection a hold names is on the report's clock, with the zone's
    /// abbreviation, as the alert about it shows it; the log keeps UTC.
    #[test]
    fn an_earlier_rejection_reads_on_the_reports_clock() {
        let rejection = EarlierRejection {
            run_id: 41,
            user: "ada".into(),
            at: chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
                .unwrap()
                .to_utc(),
        };
        assert_eq!(
            rejection.on_clock(chrono_tz::Europe::Berlin),
            "rejected in run 41 by ada at 2026-12-01 10:00:00 +01:00 (CET)"
        );
        assert_eq!(
            rejection.to_string(),
            "rejected in run 41 by ada at 2026-12-01T09:00:00Z"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod look_alike_tests {
    use std::collections::{HashMap, HashSet};

    use crate::config::Config;
    use crate::directory::DirectoryChanges;
    use crate::model::{Identity, IdentityStatus};

    fn person(id: &str, groups: &[&str]) -> Identity {
        Identity {
            id: id.to_owned(),
            user_name: format!("{id}@example.com"),
            email: None,
            given_name: None,
            family_name: None,
            display_name: None,
            status: IdentityStatus::Active,
            department: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    /// A delta's leaver removed from the scope group but still in a mapping
    /// group's look-alike is observed (their episode opens: a mapping gives no
    /// scope); one out of scope only for a look-alike of the scope group is not.
    #[test]
    fn a_mapping_groups_look_alike_keeps_no_leaver_from_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
        let file = dir.path().join("seatwarden.toml");
        std::fs::write(
            &file,
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
             [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\n\
             [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\n\
             role = \"Editor\"\n",
        )
        .unwrap();
        let config = Config::load_with_env(&file, Some(Default::default())).unwrap();
        let changes = DirectoryChanges::Delta {
            changed: vec![
                person("dee", &["Engineering\u{a0}"]),
                person("bob", &["Taskade\u{200b} Users"]),
            ],
            removed: Vec::new(),
            cursor: String::new(),
        };
        let links: HashMap<String, String> = [("dee", "w4"), ("bob", "w2")]
            .into_iter()
            .map(|(i, a)| (i.to_owned(), a.to_owned()))
            .collect();
        let observation = super::observe(&config, &changes, &links, &HashSet::new());
        let leavers: Vec<&str> = observation
            .leavers
            .iter()
            .map(|l| l.identity_id.as_str())
            .collect();
        assert_eq!(leavers, ["dee"]);
        assert!(observation.returned.is_empty());
    }

    /// A protected person (by a protected group, or by name) who is also in a
    /// scope group's look-alike is observed as protected, as the plan treats
    /// them: their episode ends as for anyone protected. Before, it ended as a
    /// look-alike hold's, which `explain` words as a deprovision held by the
    /// reconcile for a person to decide, while the reconcile plans nothing.
    #[test]
    fn a_protected_person_in_a_look_alike_is_observed_as_protected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
        let file = dir.path().join("seatwarden.toml");
        std::fs::write(
            &file,
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
             [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n\
             [policy]\nscope_groups = [\"Taskade Users\"]\n\
             [safety]\nprotected_groups = [\"IT Admins\"]\nprotected = [\"root@example.com\"]\n",
        )
        .unwrap();
        let config = Config::load_with_env(&file, Some(Default::default())).unwrap();
        let changes = DirectoryChanges::Delta {
            changed: vec![
                person("admin", &["IT Admins", "Taskade\u{200b} Users"]),
                person("root", &["Taskade\u{200b} Users"]),
                person("bob", &["Taskade\u{200b} Users"]),
            ],
            removed: Vec::new(),
            cursor: String::new(),
        };
        let links: HashMap<String, String> = [("admin", "w1"), ("root", "w3"), ("bob", "w2")]
            .into_iter()
            .map(|(i, a)| (i.to_owned(), a.to_owned()))
            .collect();
        let observation = super::observe(&config, &changes, &links, &HashSet::new());
        let mut returned = observation.returned.clone();
        returned.sort();
        assert_eq!(returned, ["admin", "root"]);
        assert_eq!(observation.look_alike_held, ["bob"]);
        assert!(observation.leavers.is_empty());
    }
}
