//! Human in the loop: `seatwarden approve RUN [--only KIND]`, `seatwarden reject
//! RUN [--only KIND]` and `seatwarden resume`. Every one leaves an audit row (who:
//! `$SEATWARDEN_OPERATOR`, else `$SUDO_USER`, else the OS user; and the time).
//!
//! Approval never applies a held action blindly: the workspace is read again first
//! and each action is re-checked against it ([`recheck`]). An action the workspace
//! already reflects is recorded `obsolete` and not sent; one whose target changed
//! (account gone, role changed since the plan, now protected, or the last active
//! Owner) is refused and stays held, the reason in its journal row and the report
//! (one a cut-off approval had released goes back to held): `status`, the digest,
//! the report, the overdue alert and the counts read from journals
//! ([`refused_by_approval`]) then tell it refused, with why, and the next reconcile
//! deciding, not as waiting for `approve` (which would re-check the same), as they
//! tell a rejected one ([`crate::store::Store::decided_holds`]); the rest are released
//! and applied through the same journaled executor and circuit breaker as a run.
//! The thresholds (per run and per 24 h, counts and percentages) are not applied
//! again: approving is the human decision over them, and the re-check keeps to
//! whether each action is still right (its guard pass runs under
//! [`GuardSettings::unlimited`], for the last-Owner rule only).
//! The run's stored report is brought up to date afterwards, and so are those of
//! later runs that held the same actions again: what this approval applied is
//! recorded done there ([`settle_later_holds`]), so they stop asking for it.
//! The same the other way: `reject` of a run records the same actions that
//! earlier runs still hold undecided as rejected there too, naming the rejecting
//! run ([`reject_earlier_holds`]): the newest decision about an action wins, so
//! nothing offers the older hold for an approval, and `approve` of the older run
//! leaves it out, saying who rejected it in which run and when. A run that holds
//! it again after the rejection asks for a new decision.
//!
//! When a held action would take access away, `approve` reads the directory
//! again beside the workspace ([`judge_fresh_directory`]: used when complete and
//! not refused by the source check, else the approval says why not): a
//! deprovision of someone it shows with access is refused, as is one of someone
//! a sweep, a reconcile or a later run's read saw back; and the members it shows
//! in a protected group (`safety.protected_groups`) are protected, as are those
//! of the run's own read (when its read cannot be used, those of the newest
//! sound read since the run, a `plan`'s say).
//!
//! Nor does an approval take an account from a leaver (or from nobody: an
//! unmatched account) when someone else, with access in the directory as read
//! now (or in a read that counts beside it, or the newest sound read since
//! the run, as for who is back), is whom the plan's matching rules
//! ([`crate::plan::claims`]) find for that account, and the run's own read did
//! not ([`claimed_since`]): the leaver rehired under a new directory id (Okta
//! and Entra ID make a new user object under the same login and email), or
//! someone given their address. Only the same id coming back is otherwise
//! seen; approved, the deactivation or deletion would fall on the account,
//! and the projects, of the person the directory has now. It is refused,
//! naming them, and the next reconcile, planned with them in view, decides.
//!
//! A held role change or membership removal is also judged against the
//! directory as it is now ([`no_longer_asked`]): the directory as read now, else
//! the newest complete directory read (a later run's, else the run's own),
//! mapped as configured now. One the
//! directory no longer asks for (the person is given another role, a member is
//! granted the group) is refused: the mistake behind a held mass demotion is
//! most often fixed before anyone approves it. So is a deactivation, deletion,
//! role change or rename of an account whose stored link names another person
//! now ([`relinked`]: `seatwarden link … --replace` since the run).
//!
//! What a run held because its directory read was incomplete
//! ([`HoldReason::IncompleteDirectory`]) is refused, whatever the workspace shows:
//! the person may only be missing from the read (design invariant 3); the next
//! reconcile from a whole read decides.
//!
//! A create or rename held behind a held delete ([`HoldReason::WaitsForDelete`])
//! is never sent while the workspace still shows that account, not even with its
//! delete approved beside it (a delete that failed would leave it meeting 409):
//! it is refused and stays held, saying whether the delete was approved, and the
//! first reconcile after the delete sends it, the userName free by then. Likewise
//! a create or rename approved while a rename that gives up its userName stays held
//! (`--only` left it out): refused and held, naming the rename to approve with it,
//! rather than sent onto the account that still has the name.
//!
//! `seatwarden approve` reads the directory before it takes the writer lock
//! ([`read_ahead`]): a large Okta or Entra ID takes minutes to read, and the
//! daemon's reconcile and same-day sweep waited for it. Everything else is read
//! under the lock ([`approve_read_ahead`]); a reconcile or plan that began
//! after the approval's read ended, and succeeded, is newer evidence, and
//! decides instead (one still at work is not: its source check may yet refuse
//! its read) (said in [`Approval::directory_note`]). A run already at work when
//! the approval's read began (the daemon's reconcile mid-read), or begun while
//! it went on (the daemon's scheduled reconcile, minutes into a large
//! directory's read), read each person before or after the approval did: which
//! of the two saw a person last is not known, so its read counts beside the
//! approval's for what speaks against taking access away (protected-group
//! members, people back, a role or group asked for again) and never in place
//! of it.
//!
//! `approve` holds the writer lock and resolves first what a dead process left in
//! flight; a reconcile or sweep that process left recorded as running is closed
//! then (as the next reconcile would close it), so `status` and `report --run`
//! stop telling it as cut off, waiting for a recovery that has happened. A
//! reconcile cut off mid-apply stored no report: what it held is approved all the
//! same, and `status` counts it from the journal ([`awaiting_decision`]).
//!
//! Actions that only wait for the settle window are nobody's to approve, `--only`
//! naming their kind or not: they stay held, and the first reconcile after the
//! window applies them (planned again from the directory as it is then).
//!
//! An approved deprovision whose write failed (transiently or not) or was
//! kept back stays in its person's open ledger episode, released from its hold
//! ([`crate::sweep::record_approved_unwritten`]; one a look-alike group held
//! opens its episode then): the retry job sends it again on its backoff, and a
//! reconcile that plans it first sends it unheld, both past the thresholds
//! the approval decided over ([`crate::safety::approved_deprovision_accounts`]),
//! each reading the account before it writes. Nobody is asked to approve it
//! again, and `status` and `explain` say it is approved and not written yet.
//! A `reject` after it (of a run that held it again) takes the approval back:
//! the episode is held saying so ([`crate::sweep::hold_rejected_approvals`]),
//! and the retry job, which checks the newest decision again under the writer
//! lock before it sends, leaves it alone.
//!
//! An approval cut off before it sent what it approved (a crash, Ctrl-C, an error,
//! a breaker that opened before a later phase) is finished by approving the run
//! again: those actions are taken with the held ones, re-checked and applied (or,
//! refused, held again); their decision stays the first approval's. One cut off after
//! its deprovisions were verified and before the ledger heard of them has them
//! recorded by the next approval of the run (`record_cut_off_approval`), which
//! then finds nothing left to decide on. A stop
//! (Ctrl-C, SIGTERM) while it still re-checks, before anything is decided or sent,
//! gives it up at once ([`ApprovalError::StoppedReading`]): its held actions stay
//! held, undecided.
//!
//! Links by hand: `seatwarden link IDENTITY ACCOUNT` ([`link_checked`]) and its
//! undo, `seatwarden unlink ACCOUNT` ([`unlink`]), which says what the next run
//! does once the rules match the account again, and refuses an unlink the next
//! reconcile would undo (a rule matches the same person) or one that would keep
//! a leaver's account active.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::apply::{self, ApplyError, ApplySummary};
use crate::circuit::Breaker;
use crate::config::{Config, ConfigError};
use crate::guard::{self, GuardInput, GuardSettings};
use crate::model::{
    Account, AccountRef, Action, ActionClass, ActionKind, Attribute, AttributeChange,
    DirectorySnapshot, GroupRef, HoldReason, Identity, LinkMethod, NewLink, Plan,
    WorkspaceSnapshot, admin_command_line, same_ci, same_name,
};
use crate::policy::Protected;
use crate::report::{Outcome, Report, plural};
use crate::safety;
use crate::store::{ActionState, Decision, JournalEntry, RunId, RunKind, Store, StoreError};
use crate::workspace::{ScimClient, WorkspaceError};

/// What to check after a workspace read that failed: the token (401, 403), or
/// what is in front of the workspace (a 401 or 403 that was a web page), or the
/// URL and the network (nothing answered); nothing for the rest.
fn workspace_hint(error: &WorkspaceError) -> String {
    error
        .what_to_check()
        .map(|hint| format!("; {hint}"))
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    /// A read of the re-check failed; a refused token or a workspace out of
    /// reach says what to check, as a run's read does.
    #[error("reading the workspace: {0}{hint}", hint = workspace_hint(.0))]
    Workspace(#[from] WorkspaceError),
    #[error("applying the approved actions: {0}")]
    Apply(#[from] ApplyError),
    #[error("there is no run {0}")]
    UnknownRun(RunId),
    /// `seatwarden link` or `unlink` refused: the message says why and what to do.
    #[error("{0}")]
    Link(String),
    #[error(
        "run {run} has no held actions{only} left to decide on{}{others}{decided}",
        settle_window_note(*.waiting)
    )]
    NothingHeld {
        run: RunId,
        only: String,
        /// Held actions it selects that only wait for the settle window.
        waiting: usize,
        /// What `--only` left out that waits for a decision (`; it holds 7
        /// others …`), or nothing.
        others: String,
        /// Who decided on its held actions already, and when (`; decided
        /// already: …`), or nothing: a second person paged for the same hold is
        /// told a colleague's approval did it, not left to wonder.
        decided: String,
    },
    #[error(
        "run {run} was a `{admin_command} {command}`: it was never meant to apply anything, so \
         there is nothing of it to approve or reject. Run `{admin_command} reconcile`, then \
         decide on what that run holds"
    )]
    NotApplying {
        run: RunId,
        /// The command that made the run: `plan` or `reconcile --dry-run`.
        command: &'static str,
        /// `report.admin_command`, which the message tells to run.
        admin_command: String,
    },
    #[error(
        "--only takes an action kind (deactivate, delete, remove_members, set_role, …) or a class \
         (deprovision, membership_removal, role_downgrade, deletion, rename), not {0:?}"
    )]
    UnknownKind(String),
    #[error(
        "the circuit breaker is {state}; nothing was approved. Run `{admin_command} resume` once \
         the workspace accepts writes again"
    )]
    CircuitOpen {
        state: String,
        /// `report.admin_command`, which the message tells to run.
        admin_command: String,
    },
    #[error(
        "the workspace listing ended short of the totalResults it announced (objects moved \
         while it was read, or the provider stopped early); nothing was approved, as an account \
         it left out would look deleted. Run the command again"
    )]
    ShortListing,
    /// A stop (SIGINT, SIGTERM) came while the re-check still read the workspace:
    /// nothing was decided or sent, so it gave up where it stood.
    #[error(
        "stopped while re-checking against the workspace, before any write: nothing was \
         approved and nothing was sent"
    )]
    StoppedReading,
    #[error("the state database lock was poisoned")]
    Poisoned,
}

/// What [`ApprovalError::NothingHeld`] adds when the run's held actions only
/// wait for the settle window.
fn settle_window_note(waiting: usize) -> String {
    match waiting {
        0 => String::new(),
        1 => ": the one it holds only waits for the settle window, and the first reconcile \
              after it passes applies it (nothing for a person to approve)"
            .to_owned(),
        n => format!(
            ": the {n} it holds only wait for the settle window, and the first reconcile \
             after it passes applies them (nothing for a person to approve)"
        ),
    }
}

/// Which held actions a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Only {
    All,
    /// An op name, e.g. `deactivate`.
    Op(String),
    Class(ActionClass),
}

impl Only {
    pub fn parse(kind: Option<&str>) -> Result<Only, ApprovalError> {
        const OPS: [&str; 9] = [
            "deactivate",
            "delete",
            "create_group",
            "create_account",
            "reactivate",
            "update_attributes",
            "set_role",
            "add_members",
            "remove_members",
        ];
        let Some(kind) = kind.map(|k| k.trim().to_lowercase()) else {
            return Ok(Only::All);
        };
        if let Some(class) = ActionClass::ALL.into_iter().find(|c| c.as_str() == kind) {
            return Ok(Only::Class(class));
        }
        if OPS.contains(&kind.as_str()) {
            return Ok(Only::Op(kind));
        }
        Err(ApprovalError::UnknownKind(kind))
    }

    fn admits(&self, kind: &ActionKind) -> bool {
        match self {
            Only::All => true,
            Only::Op(op) => kind.name() == op,
            Only::Class(class) => kind.threshold_class().is_some_and(|(c, _)| c == *class),
        }
    }

    fn describe(&self) -> String {
        match self {
            Only::All => String::new(),
            Only::Op(op) => format!(" of kind {op}"),
            Only::Class(class) => format!(" of class {class}"),
        }
    }
}

/// Why a held delete may not go ahead under the deletion rules configured now
/// (`delete_after`: [`Config::delete_after`]).
fn deletion_refused(
    delete_after: Option<std::time::Duration>,
    deactivated_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<&'static str> {
    let Some(period) = delete_after else {
        return Some("deprovision.action is \"deactivate\" now: accounts are not deleted");
    };
    let period = chrono::TimeDelta::from_std(period).unwrap_or(chrono::TimeDelta::MAX);
    match deactivated_since {
        None if period > chrono::TimeDelta::zero() => Some(
            "deletion now waits for deprovision.delete_after: the next reconcile deactivates \
             the account instead",
        ),
        Some(since) if now - since < period => {
            Some("not yet past the deprovision.delete_after configured now")
        }
        _ => None,
    }
}

/// The userName a held rename was planned from, when the account has neither it
/// nor the new one now: someone renamed it since, and the rename (a mass one held
/// by its threshold, perhaps for days) would overwrite that.
fn renamed_since(changes: &[AttributeChange], now: &str) -> Option<String> {
    changes
        .iter()
        .find_map(|c| match (&c.attribute, &c.from, &c.to) {
            (Attribute::UserName, Some(from), Some(to))
                if !same_ci(now, from) && !same_ci(now, to) =>
            {
                Some(from.clone())
            }
            _ => None,
        })
}

/// What the re-check says about one held action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// Still wanted: apply it.
    Apply,
    /// The workspace already shows it; nothing to send.
    Obsolete(String),
    /// The target changed since the plan; it stays held.
    Refuse(String),
}

/// Re-checks one held action against the workspace as it is now. `clocks`: the
/// store's retention clocks (`Store::deactivated_since`), which a deletion after
/// the retention period must still be justified by.
pub fn recheck(
    action: &Action,
    workspace: &WorkspaceSnapshot,
    protected: &Protected,
    clocks: &BTreeMap<String, DateTime<Utc>>,
) -> Recheck {
    let find = |id: &str| workspace.accounts.iter().find(|a| a.id == id);
    let gone = || Recheck::Refuse("the account no longer exists".to_owned());
    if let Some(id) = action.kind.account_id()
        && let Some(account) = find(id)
        && protected.matches(&account.user_name)
    {
        return Recheck::Refuse(format!("{} is protected", account.user_name));
    }
    match &action.kind {
        ActionKind::Deactivate { account_id } => match find(account_id) {
            None => Recheck::Obsolete("the account no longer exists".to_owned()),
            Some(a) if !a.active => Recheck::Obsolete("already deactivated".to_owned()),
            Some(_) => Recheck::Apply,
        },
        ActionKind::Delete {
            account_id,
            deactivated_since,
            ..
        } => match find(account_id) {
            None => Recheck::Obsolete("already deleted".to_owned()),
            // Held a while ago: the person may be back, the account re-enabled or
            // linked to someone else since. Only a deactivated account whose clock
            // still runs from the same start may go.
            Some(a) if deactivated_since.is_some() && a.active => Recheck::Refuse(
                "the account is active again; only a deactivated account is deleted after \
                 the retention period"
                    .to_owned(),
            ),
            Some(_)
                if deactivated_since.is_some()
                    && clocks.get(account_id) != deactivated_since.as_ref() =>
            {
                Recheck::Refuse(
                    "no longer waiting for deletion: its retention clock restarted (a reconcile \
                     since saw the account active or its person with access again, or \
                     deletion was reconfigured)"
                        .to_owned(),
                )
            }
            Some(_) => Recheck::Apply,
        },
        ActionKind::Reactivate { account_id } => match find(account_id) {
            None => gone(),
            Some(a) if a.active => Recheck::Obsolete("already active".to_owned()),
            Some(_) => Recheck::Apply,
        },
        ActionKind::UpdateAttributes {
            account_id,
            changes,
        } => match find(account_id) {
            None => gone(),
            Some(a) => match renamed_since(changes, &a.user_name) {
                Some(was) => Recheck::Refuse(format!(
                    "the userName changed since the plan (was {was}, now {})",
                    a.user_name
                )),
                None if changes.iter().all(|c| apply::account_shows(a, c)) => {
                    Recheck::Obsolete("the account has these values already".to_owned())
                }
                None => Recheck::Apply,
            },
        },
        ActionKind::SetRole {
            account_id,
            from,
            to,
        } => match find(account_id) {
            None => gone(),
            Some(a) if a.role() == Some(*to) => Recheck::Obsolete(format!("already {to}")),
            Some(a) if !same_roles(a, from) => Recheck::Refuse(format!(
                "the role changed since the plan (was {}, now {})",
                from.join(", "),
                a.roles.join(", ")
            )),
            Some(_) => Recheck::Apply,
        },
        ActionKind::RemoveMembers { group, members } => match group {
            GroupRef::Existing { id, .. } => match workspace.groups.iter().find(|g| g.id == *id) {
                None => Recheck::Obsolete("the group no longer exists".to_owned()),
                Some(g) if !members.iter().any(|m| g.members.contains(m)) => {
                    Recheck::Obsolete("none of them is a member any more".to_owned())
                }
                Some(_) => Recheck::Apply,
            },
            GroupRef::Created { .. } => Recheck::Apply,
        },
        ActionKind::CreateAccount { spec, .. } => {
            if workspace
                .accounts
                .iter()
                .any(|a| same_name(&a.user_name, &spec.user_name))
            {
                Recheck::Obsolete(format!("an account {} exists now", spec.user_name))
            } else {
                Recheck::Apply
            }
        }
        ActionKind::CreateGroup { display_name } => {
            // As the plan matches groups (`group_key`): a name that differs from
            // an existing group's in case outside ASCII (`équipe`) or in how an
            // accent is written would be a second group the next plan disputes.
            let wanted = group_key(display_name);
            if workspace
                .groups
                .iter()
                .any(|g| group_key(&g.display_name) == wanted)
            {
                Recheck::Obsolete(format!("a group {display_name} exists now"))
            } else {
                Recheck::Apply
            }
        }
        // Its group and members are the workspace's own by now where this approval
        // creates neither (see `MadeSince`); those it creates are new to the group.
        ActionKind::AddMembers { group, members } => match group {
            GroupRef::Existing { id, display_name } => {
                match workspace.groups.iter().find(|g| g.id == *id) {
                    None => Recheck::Refuse(format!("the group {display_name} no longer exists")),
                    Some(g)
                        if members.iter().all(|m| match m {
                            AccountRef::Existing { id } => g.members.contains(id),
                            AccountRef::Created { .. } => false,
                        }) =>
                    {
                        Recheck::Obsolete("all of them are members already".to_owned())
                    }
                    Some(_) => Recheck::Apply,
                }
            }
            GroupRef::Created { .. } => Recheck::Apply,
        },
    }
}

/// The userName a rename gives up.
fn renamed_from(kind: &ActionKind) -> Option<String> {
    match kind {
        ActionKind::UpdateAttributes { changes, .. } => {
            changes.iter().find_map(|c| match (&c.attribute, &c.from) {
                (Attribute::UserName, Some(from)) => Some(from.clone()),
                _ => None,
            })
        }
        _ => None,
    }
}

/// The groups and accounts a run's held membership changes need, as the workspace
/// has them now. The plan names a group or account its own run creates by name
/// (`GroupRef::Created`, `AccountRef::Created`), and the executor knows only what
/// the same apply created. An approval that does not create it itself (the run
/// created it before the approval, another run's approval did, or a person; its
/// create is obsolete) finds it in the workspace: by displayName, as a create's
/// re-check does, and by the userName the run's create asked for, unless that
/// account is linked to someone else or its externalId names someone else (as
/// `apply::claimable` judges a create's 409). One whose create this approval refused
/// stays held with it.
struct MadeSince {
    /// displayName as [`group_key`] folds it → the group's id and name.
    groups: HashMap<String, (String, String)>,
    /// Identity → the account its run's create asked for, or why it is not theirs.
    accounts: HashMap<String, Result<String, String>>,
    creating_groups: HashSet<String>,
    creating_accounts: HashSet<String>,
    held_back_groups: HashSet<String>,
    held_back_accounts: HashSet<String>,
}

impl MadeSince {
    fn new(
        workspace: &WorkspaceSnapshot,
        store: &Store,
        run: RunId,
        admin_command: &str,
    ) -> Result<Self, StoreError> {
        let mut made = MadeSince {
            groups: HashMap::new(),
            accounts: HashMap::new(),
            creating_groups: HashSet::new(),
            creating_accounts: HashSet::new(),
            held_back_groups: HashSet::new(),
            held_back_accounts: HashSet::new(),
        };
        let creates: Vec<(String, String)> = store
            .journal(run)?
            .into_iter()
            .filter_map(|entry| match entry.action.kind {
                ActionKind::CreateAccount { identity_id, spec } => {
                    Some((identity_id, spec.user_name))
                }
                _ => None,
            })
            .collect();
        made.groups = workspace
            .groups
            .iter()
            .map(|g| {
                (
                    group_key(&g.display_name),
                    (g.id.clone(), g.display_name.clone()),
                )
            })
            .collect();
        if creates.is_empty() {
            return Ok(made);
        }
        let by_user_name: HashMap<String, &Account> = workspace
            .accounts
            .iter()
            .map(|a| (user_name_key(&a.user_name), a))
            .collect();
        for (identity_id, user_name) in creates {
            let Some(account) = by_user_name.get(&user_name_key(&user_name)) else {
                continue;
            };
            // Judged as a create that meets 409 judges the account holding its
            // userName (`apply::claimable`): one whose externalId names someone
            // else is theirs (the next plan matches it to them), and given this
            // person's held memberships it would hand that person their groups.
            let theirs = match (
                store.identity_linked_to(&account.id)?,
                account.external_id.as_deref(),
            ) {
                (Some(other), _) if other != identity_id => Err(format!(
                    "the account with the userName {user_name} its create asked for ({}) is \
                     linked to identity {other}",
                    account.id
                )),
                (None, Some(other)) if !other.is_empty() && other != identity_id => Err(format!(
                    "the account with the userName {user_name} its create asked for ({}) \
                         names identity {other} by externalId: it is theirs, not the one the \
                         create asked for; if it is {identity_id}'s, set its externalId or \
                         `{}`, and the next reconcile plans the memberships",
                    account.id,
                    admin_command_line(admin_command, "link", &[&identity_id, &account.id], &[])
                )),
                _ => Ok(account.id.clone()),
            };
            made.accounts.insert(identity_id, theirs);
        }
        Ok(made)
    }

    /// Notes a create this approval applies: what needs it is left to the executor.
    fn creating(&mut self, kind: &ActionKind) {
        match kind {
            ActionKind::CreateAccount { identity_id, .. } => {
                self.creating_accounts.insert(identity_id.clone());
            }
            ActionKind::CreateGroup { display_name } => {
                self.creating_groups.insert(group_key(display_name));
            }
            _ => {}
        }
    }

    fn held_back(&mut self, identity_id: &str) {
        self.held_back_accounts.insert(identity_id.to_owned());
    }

    fn held_back_group(&mut self, display_name: &str) {
        self.held_back_groups.insert(group_key(display_name));
    }

    /// Points a membership change at the workspace's group and accounts where this
    /// approval does not create them; why it cannot, if so.
    fn resolve(&self, kind: &mut ActionKind) -> Result<(), String> {
        let (group, members) = match kind {
            ActionKind::AddMembers { group, members } => (group, Some(members)),
            ActionKind::RemoveMembers { group, .. } => (group, None),
            _ => return Ok(()),
        };
        if let GroupRef::Created { display_name } = group {
            let key = group_key(display_name);
            if self.held_back_groups.contains(&key) {
                return Err(format!(
                    "the group {display_name} is not created: the re-check refused its create"
                ));
            }
            if !self.creating_groups.contains(&key) {
                let (id, name) = self.groups.get(&key).ok_or_else(|| {
                    format!(
                        "the group {display_name} does not exist, and this approval does not \
                         create it"
                    )
                })?;
                *group = GroupRef::Existing {
                    id: id.clone(),
                    display_name: name.clone(),
                };
            }
        }
        for member in members.into_iter().flatten() {
            let AccountRef::Created { identity_id } = member else {
                continue;
            };
            if self.creating_accounts.contains(identity_id.as_str()) {
                continue;
            }
            if self.held_back_accounts.contains(identity_id.as_str()) {
                return Err(format!(
                    "identity {identity_id} has no account: the re-check refused its create"
                ));
            }
            match self.accounts.get(identity_id.as_str()) {
                Some(Ok(id)) => *member = AccountRef::Existing { id: id.clone() },
                Some(Err(why)) => return Err(why.clone()),
                None => {
                    return Err(format!(
                        "identity {identity_id} has no account, and this approval does not \
                         create one"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A userName as the plan matches it (trimmed, case-folded): an account a person
/// made since as `Ann@x.com ` is the one the plan takes for `ann@x.com`'s.
fn user_name_key(user_name: &str) -> String {
    crate::model::fold_case(user_name.trim())
}

/// A group name as the plan matches the workspace's groups (case-folded and
/// composed, so `Équipe` typed decomposed is the group it renders as).
fn group_key(display_name: &str) -> String {
    crate::model::fold_case(display_name)
}

fn same_roles(account: &Account, from: &[String]) -> bool {
    let norm = |v: &mut Vec<String>| {
        for r in v.iter_mut() {
            *r = r.to_lowercase();
        }
        v.sort();
    };
    let (mut a, mut b) = (account.roles.clone(), from.to_vec());
    norm(&mut a);
    norm(&mut b);
    a == b
}

/// What `approve` did.
#[derive(Debug, Default)]
pub struct Approval {
    pub run: RunId,
    pub approved: Vec<u32>,
    pub obsolete: Vec<(u32, String)>,
    pub refused: Vec<(u32, String)>,
    pub applied: ApplySummary,
    /// Of the approved actions, those sent that failed (refused, or never shown
    /// by the workspace): `applied.failed` counts those kept back too.
    pub failed: usize,
    /// Approved actions kept back unsent, by seq, with why in a few words
    /// ([`apply::KeptBack::reason`], or the writes had stopped before their phase):
    /// no failed write, and the next `approve` of the run sends them.
    pub not_sent: Vec<(u32, &'static str)>,
    /// Held actions that only wait for the settle window, left held: the first
    /// reconcile after it passes applies them.
    pub waiting: usize,
    /// Later runs that held the same actions again, and how many of each: now
    /// recorded done there ([`settle_later_holds`]), nothing left to approve.
    pub settled_later: Vec<(RunId, usize)>,
    /// Held actions of the run a newer run's `reject` decided
    /// ([`reject_earlier_holds`]), by seq, with why: not approved, never sent
    /// from this run.
    pub rejected_later: Vec<(u32, String)>,
    /// Why the directory this approval read was not used (it could not be
    /// read, the read was incomplete, or the source check refused it; or a run
    /// read it again while the approval waited for the writer lock, a newer
    /// read), when a held action would have taken access away: the re-check
    /// then went by the reads runs had stored.
    pub directory_note: Option<String>,
}

impl Approval {
    /// The audit row's text: `again` of the approved were approved before, by an
    /// approval cut off before it sent them.
    fn audited(&self, only: &Only, again: usize) -> String {
        format!(
            "approved {}{}{}; {} obsolete, {} refused by the re-check",
            plural(self.approved.len(), "held action", "held actions"),
            only.describe(),
            if again > 0 {
                format!(" ({again} approved before and not sent yet)")
            } else {
                String::new()
            },
            self.obsolete.len(),
            self.refused.len()
        )
    }
}

/// Whether `entry` failed without reaching the workspace: recovery found it cut
/// off before the workspace showed it ([`apply::recover`]: in flight when its
/// process died, most likely never sent), or the executor kept it back
/// ([`apply::NOT_SENT`]: the approval was stopping, its circuit breaker had
/// opened, an earlier write found the workspace down or its token refused). Not
/// one that was sent and refused: that one stays failed.
fn not_reached(entry: &JournalEntry) -> bool {
    entry.state == ActionState::Failed
        && entry.last_error.as_deref().is_some_and(|e| {
            e.starts_with(apply::NOT_REACHED_INTERRUPTED) || apply::not_sent(Some(e))
        })
}

/// How the approved of `journal` ended that were not applied: the count of those
/// sent that failed, and those kept back unsent with why.
fn unapplied(journal: &[JournalEntry], approved: &[u32]) -> (usize, Vec<(u32, &'static str)>) {
    let approved: HashSet<u32> = approved.iter().copied().collect();
    let mut failed = 0;
    let mut not_sent = Vec::new();
    for entry in journal.iter().filter(|e| approved.contains(&e.action.seq)) {
        match entry.state {
            ActionState::Failed => match apply::KeptBack::of(entry.last_error.as_deref()) {
                Some(kept_back) => not_sent.push((entry.action.seq, kept_back.reason())),
                None => failed += 1,
            },
            // Its phase never came: the writes had stopped before it.
            ActionState::Planned => {
                not_sent.push((entry.action.seq, crate::report::UNREACHED_REASON))
            }
            ActionState::Applied | ActionState::Held | ActionState::InFlight => {}
        }
    }
    (failed, not_sent)
}

/// A held action nobody decided on that only waits for the settle window: nothing
/// for a person to approve. The first reconcile after the window plans it again
/// from the directory as it is then and applies it; released by `approve`, it
/// would race push SCIM (what the window is for), and from an older run repeat
/// what a newer one already planned. One an approval's re-check refused waits
/// for a person now, as its report says.
fn waits_for_settle_window(entry: &JournalEntry, decided: bool) -> bool {
    entry.state == ActionState::Held
        && !decided
        && entry.last_error.is_none()
        && entry
            .action
            .held
            .as_ref()
            .is_some_and(HoldReason::is_waiting)
}

/// The held actions of `run` that `only` selects and nobody decided on yet, and
/// those an earlier `approve` approved but did not get to send (cut off before
/// their phase or mid-phase, an error, a breaker that opened before their phase):
/// nothing else ever picks them up again. `approving` takes these up again, but
/// never a settle-window wait ([`waits_for_settle_window`]: their number comes
/// second); rejecting takes them back, with the ones still in flight (a dead
/// approval's: `reject` holds the writer lock), so that no later `approve` sends
/// them.
///
/// A run that was never to apply anything is refused, telling to run a
/// reconcile with `admin_command`.
fn undecided(
    store: &Store,
    run: RunId,
    only: &Only,
    approving: bool,
    admin_command: &str,
    tz: chrono_tz::Tz,
) -> Result<(Vec<JournalEntry>, usize), ApprovalError> {
    match store.run(run)? {
        None => return Err(ApprovalError::UnknownRun(run)),
        // What a plan or a dry run held was what a reconcile would have held then;
        // applying it now would write a plan nobody asked to apply.
        Some(record) if matches!(record.kind, RunKind::Plan | RunKind::DryRun) => {
            return Err(ApprovalError::NotApplying {
                run,
                command: if record.kind == RunKind::Plan {
                    "plan"
                } else {
                    "reconcile --dry-run"
                },
                admin_command: admin_command.to_owned(),
            });
        }
        Some(_) => {}
    }
    let decisions = store.decisions(run)?;
    let held: Vec<JournalEntry> = store
        .journal(run)?
        .into_iter()
        .filter(|e| match (e.state, decisions.get(&e.action.seq)) {
            (ActionState::Held, None) => true,
            // Still held: an approval cut off between recording its decision and
            // releasing the rows. Approving again finishes it; rejecting overrides
            // it (nothing was sent), or the rows would stay held with nobody able
            // to drop them.
            (ActionState::Held, Some(Decision::Approved)) => true,
            // Released, not sent: approving again sends them, rejecting drops them.
            (ActionState::Planned, Some(Decision::Approved)) => true,
            // In flight when an approval was cut off, and found by recovery not to
            // have reached the workspace (see `approve`, which recovers first, or a
            // reconcile or sweep since). Sent and refused stays failed.
            (ActionState::Failed, Some(Decision::Approved)) => not_reached(e),
            // Still in flight: only a dead approval's can be (the writer lock).
            // `approve` has resolved them by now (one whose read failed stays in
            // flight until a recovery reads it); `reject` makes sure that what of
            // them did not arrive is never sent from this run.
            (ActionState::InFlight, Some(Decision::Approved)) => !approving,
            _ => false,
        })
        .collect();
    let (held, other_kinds): (Vec<JournalEntry>, Vec<JournalEntry>) =
        held.into_iter().partition(|e| only.admits(&e.action.kind));
    let (waiting, held): (Vec<JournalEntry>, Vec<JournalEntry>) = held.into_iter().partition(|e| {
        approving && waits_for_settle_window(e, decisions.contains_key(&e.action.seq))
    });
    if held.is_empty() {
        return Err(ApprovalError::NothingHeld {
            run,
            only: only.describe(),
            waiting: waiting.len(),
            others: other_kinds_note(other_kinds.iter().filter(|e| {
                !(approving && waits_for_settle_window(e, decisions.contains_key(&e.action.seq)))
            })),
            decided: decided_already(store, run, tz)?,
        });
    }
    Ok((held, waiting.len()))
}

/// `; it holds 7 others that wait for a decision: 7 deactivate (class
/// deprovision)` for [`ApprovalError::NothingHeld`] when `--only` left out
/// everything the run holds: a mistyped or misremembered kind otherwise read
/// as a run with nothing held. Nothing when `others` is empty.
fn other_kinds_note<'a>(others: impl Iterator<Item = &'a JournalEntry>) -> String {
    let mut by_kind: BTreeMap<(&'static str, Option<&'static str>), usize> = BTreeMap::new();
    for entry in others {
        let class = entry
            .action
            .kind
            .threshold_class()
            .map(|(class, _)| class.as_str());
        *by_kind
            .entry((entry.action.kind.name(), class))
            .or_default() += 1;
    }
    let total: usize = by_kind.values().sum();
    if total == 0 {
        return String::new();
    }
    let kinds: Vec<String> = by_kind
        .into_iter()
        .map(|((name, class), n)| match class {
            Some(class) => format!("{n} {name} (class {class})"),
            None => format!("{n} {name}"),
        })
        .collect();
    format!(
        "; it holds {} that {} for a decision: {}",
        plural(total, "other", "others"),
        if total == 1 { "waits" } else { "wait" },
        kinds.join(", ")
    )
}

/// `; decided already: 18 approved by alice (last 2026-12-04 15:02:11 +01:00
/// (CET)), …` for [`ApprovalError::NothingHeld`], on `tz`'s clock as the other
/// refusals are, or nothing when nobody decided. Obsolete ones (the re-check
/// found them done) are an approval's too.
fn decided_already(store: &Store, run: RunId, tz: chrono_tz::Tz) -> Result<String, StoreError> {
    let decided: Vec<String> = store
        .decision_summary(run)?
        .into_iter()
        .map(|d| match d.decided_in {
            Some(newer) => format!(
                "{} {}",
                d.count,
                newer_rejection_text(newer, &d.user, d.last_at, d.count, tz)
            ),
            None => format!(
                "{} {} by {} (last {})",
                d.count,
                match d.decision {
                    Decision::Approved => "approved",
                    Decision::Rejected => "rejected",
                    Decision::Obsolete => "found done when approved",
                },
                crate::report::printable(&d.user, false),
                crate::report::local_time(d.last_at, tz)
            ),
        })
        .collect();
    Ok(if decided.is_empty() {
        String::new()
    } else {
        format!("; decided already: {}", decided.join(", "))
    })
}

/// Why `approve` of an older run does not take up `count` of its held actions a
/// newer run's `reject` decided ([`reject_earlier_holds`]): `rejected in run 3
/// by alice at …: a newer decision stands; the next run plans it again if still
/// due`.
fn newer_rejection_text(
    newer: RunId,
    user: &str,
    at: DateTime<Utc>,
    count: usize,
    tz: chrono_tz::Tz,
) -> String {
    format!(
        "rejected in run {newer} by {} at {}: a newer decision stands; the next run \
         plans {} again if still due",
        crate::report::printable(user, false),
        crate::report::local_time(at, tz),
        if count == 1 { "it" } else { "them" }
    )
}

/// How many of `run`'s held actions wait for a person (`approve RUN` or `reject
/// RUN`), from its journal: held, undecided, not only waiting for the settle
/// window. What its stored report counts ([`crate::report::awaiting_approval_in`]),
/// for a run that stored none: a reconcile cut off mid-apply held its
/// deprovisions all the same, and they can be approved.
/// What an incomplete directory read held is not counted: `approve` refuses it
/// ([`held_on_incomplete_read`] counts it).
/// Nor what an approval's re-check refused ([`refused_by_approval`]): approving
/// again re-checks the same; the next run decides.
pub fn awaiting_decision(store: &Store, run: RunId) -> Result<usize, StoreError> {
    Ok(held_undecided(store, run)?
        .iter()
        .filter(|e| e.action.held != Some(HoldReason::IncompleteDirectory))
        .filter(|e| !refused_by_approval(e))
        .count())
}

/// A held row an approval's re-check refused: its `last_error` begins with
/// [`crate::model::REFUSED_BY_APPROVAL`]. It stays held, undecided (approving
/// again re-checks it), but waits for nobody's approval: what the report counts
/// apart ([`crate::report::Report::refused_by_approval`]), judged from the journal.
pub fn refused_by_approval(entry: &JournalEntry) -> bool {
    entry.state == ActionState::Held
        && entry
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(crate::model::REFUSED_BY_APPROVAL))
}

/// How many of `run`'s held actions were held because its directory read was
/// incomplete, from its journal: nothing for a person to approve (`approve`
/// refuses them); the next reconcile from a whole read decides. Those rejected
/// since are not counted.
pub fn held_on_incomplete_read(store: &Store, run: RunId) -> Result<usize, StoreError> {
    Ok(held_undecided(store, run)?
        .iter()
        .filter(|e| e.action.held == Some(HoldReason::IncompleteDirectory))
        .count())
}

/// `run`'s journal rows still held, by what releases them: what `report --run`
/// says of a run that stored no report (a reconcile cut off, a sweep). Only
/// `awaiting_decision` is a person's to approve or reject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldRows {
    /// [`awaiting_decision`]: `approve RUN` or `reject RUN`.
    pub awaiting_decision: usize,
    /// [`held_on_incomplete_read`]: `approve` refuses them; the next reconcile
    /// from a whole read decides.
    pub incomplete_directory: usize,
    /// Only waiting for the settle window: the first reconcile after it decides.
    pub settle_window: usize,
    /// Decided already (rejected): never sent from this run.
    pub decided: usize,
    /// Refused by an approval's re-check ([`refused_by_approval`]): nothing to
    /// approve; the next run decides.
    pub refused: usize,
}

impl HeldRows {
    pub fn total(&self) -> usize {
        self.awaiting_decision
            + self.incomplete_directory
            + self.settle_window
            + self.decided
            + self.refused
    }
}

/// [`HeldRows`] of `run`, from its journal, judged as [`awaiting_decision`] and
/// [`held_on_incomplete_read`] judge them.
pub fn held_rows(store: &Store, run: RunId) -> Result<HeldRows, StoreError> {
    let decisions = store.decisions(run)?;
    let mut rows = HeldRows::default();
    for entry in store
        .journal(run)?
        .iter()
        .filter(|e| e.state == ActionState::Held)
    {
        let decision = decisions.get(&entry.action.seq);
        let count = match decision {
            Some(Decision::Rejected | Decision::Obsolete) => &mut rows.decided,
            _ if waits_for_settle_window(entry, decision.is_some()) => &mut rows.settle_window,
            _ if entry.action.held == Some(HoldReason::IncompleteDirectory) => {
                &mut rows.incomplete_directory
            }
            None if refused_by_approval(entry) => &mut rows.refused,
            _ => &mut rows.awaiting_decision,
        };
        *count += 1;
    }
    Ok(rows)
}

/// `run`'s journal rows still held that nobody decided on (an approval cut off
/// after deciding included), settle-window waits left out.
fn held_undecided(store: &Store, run: RunId) -> Result<Vec<JournalEntry>, StoreError> {
    // Only the rows are wanted: a refusal's words (and their clock) are dropped.
    match undecided(store, run, &Only::All, true, "", chrono_tz::UTC) {
        Ok((held, _)) => Ok(held
            .into_iter()
            .filter(|e| e.state == ActionState::Held)
            .collect()),
        Err(ApprovalError::Store(e)) => Err(e),
        Err(_) => Ok(Vec::new()),
    }
}

/// The directory as `seatwarden approve` read it before taking the writer lock
/// ([`read_ahead`]), for [`approve_read_ahead`].
#[derive(Debug)]
pub struct ReadAhead {
    read: Result<DirectorySnapshot, crate::directory::DirectoryError>,
    /// When the read began.
    began: DateTime<Utc>,
    /// When it ended: a run that began before then read the directory while
    /// this read went on, and which of the two saw a person last is not known.
    ended: DateTime<Utc>,
    /// The newest run recorded when it began: a run after it began its read
    /// later than this read did (and read later, if it began after `ended`).
    newest_run: RunId,
    /// The runs (after the approved one) still at work when it began: each
    /// began its own read earlier, and may have finished it later (a daemon
    /// reconcile mid-read as `approve` starts). Which read saw a person last is
    /// not known, so what either shows in someone's favour (protected, back,
    /// given the access again) counts.
    at_work: Vec<RunId>,
}

/// Reads the directory for an approval of `run`, before the writer lock is
/// taken: a large Okta or Entra ID takes minutes, and the daemon's reconcile and
/// same-day sweep would wait for them. `None` when no held action `only` selects
/// would take access away (nothing to read the directory for) or the run cannot
/// be approved: [`approve_read_ahead`], under the lock, then decides as
/// [`approve`] does and says why. Reads only, from the store and the directory.
pub async fn read_ahead(
    config: &Config,
    store: &Store,
    run: RunId,
    only: &Only,
) -> Result<Option<ReadAhead>, ApprovalError> {
    let tz = config.report_timezone()?;
    // What is held now; under the lock it is asked again (a decision, a
    // recovery may change it meanwhile), and read for there if it must be.
    let Ok((held, _)) = undecided(store, run, only, false, &config.admin_command(), tz) else {
        return Ok(None);
    };
    if !held
        .iter()
        .any(|entry| takes_access_away(&entry.action.kind))
    {
        return Ok(None);
    }
    let newest_run = store.latest_run(&[])?.map_or(run, |r| r.id);
    let at_work = store.runs_at_work_between(run, newest_run)?;
    let began = Utc::now();
    let directory = config.directory();
    let read = apply::read_unless_stopped(crate::run::read_directory(&directory))
        .await
        .ok_or(ApprovalError::StoppedReading)?;
    Ok(Some(ReadAhead {
        read,
        began,
        ended: Utc::now(),
        newest_run,
        at_work,
    }))
}

impl ReadAhead {
    /// When the directory read began and when it ended.
    pub fn read_between(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.began, self.ended)
    }
}

/// `seatwarden approve RUN [--only KIND]`, the caller holding the writer lock;
/// it reads the directory under it when a held action would take access away.
/// `seatwarden approve` itself reads it first without the lock
/// ([`read_ahead`], [`approve_read_ahead`]).
pub async fn approve(
    config: &Config,
    client: &ScimClient,
    store: Store,
    run: RunId,
    only: &Only,
    now: DateTime<Utc>,
) -> Result<Approval, ApprovalError> {
    approve_read_ahead(config, client, store, run, only, None, now).await
}

/// [`approve`] with the directory read before the writer lock was taken
/// (`ahead`, from [`read_ahead`]). Whatever changed meanwhile is decided under
/// the lock: the held actions, the decisions and the ledger are read under it,
/// and so is the workspace. A reconcile or a plan that read the directory after
/// `ahead` began, and succeeded, has newer evidence: its read is used instead, and the approval
/// says so ([`Approval::directory_note`]). One that held no action needing the
/// directory then but holds one now (a cut-off approval recovered) reads the
/// directory under the lock.
pub async fn approve_read_ahead(
    config: &Config,
    client: &ScimClient,
    store: Store,
    run: RunId,
    only: &Only,
    ahead: Option<ReadAhead>,
    now: DateTime<Utc>,
) -> Result<Approval, ApprovalError> {
    // The times a refusal names, on the clock the reports use.
    let tz = config.report_timezone()?;
    // We hold the writer lock: every row in flight is a dead process's, perhaps
    // this run's own approval cut off mid-phase. Resolved first, as a sweep does,
    // what it sent is done (and in the ledger) and what it did not is taken up
    // below with the rest, rather than failed, planned again and held again.
    // Every read before the first write is given up at a stop: nothing was decided
    // or sent yet (see `apply::read_unless_stopped`). What a recovery cut off
    // mid-read leaves in flight stays for the next command, as after a crash.
    let (mut store, discovered) =
        apply::read_unless_stopped(recover_cut_off(config, client, store, now))
            .await
            .ok_or(ApprovalError::StoppedReading)??;
    record_cut_off_approval(config, &mut store, run)?;
    let admin_command = config.admin_command();
    // Under the writer lock a run recorded as running is a dead process's, and
    // its rows are resolved now: it is closed as a reconcile closes it, or
    // `status` and `report --run` kept calling it cut off, waiting for a
    // recovery that had happened, until the next reconcile (hours, perhaps).
    crate::run::close_interrupted_runs(
        &mut store,
        now,
        crate::sweep::configured_sla(config),
        &admin_command,
    )?;
    let (held, waiting) = undecided(&store, run, only, true, &admin_command, tz)?;
    // What a newer run's `reject` decided is not among `held`: said why, beside
    // what this approval takes up.
    let rejected_later: Vec<(u32, String)> = {
        let kinds: HashMap<u32, ActionKind> = store
            .journal(run)?
            .into_iter()
            .map(|e| (e.action.seq, e.action.kind))
            .collect();
        store
            .newer_rejections(run)?
            .into_iter()
            .filter(|r| kinds.get(&r.seq).is_some_and(|kind| only.admits(kind)))
            .map(|r| (r.seq, newer_rejection_text(r.run, &r.user, r.at, 1, tz)))
            .collect()
    };
    // Renames `only` leaves held: the userNames they would give up stay taken, and
    // a create or rename approved without them would only meet 409.
    let renames_left_held: Vec<(String, String)> = if *only == Only::All {
        Vec::new()
    } else {
        let selected: HashSet<u32> = held.iter().map(|e| e.action.seq).collect();
        undecided(&store, run, &Only::All, true, &admin_command, tz)?
            .0
            .into_iter()
            .filter(|e| !selected.contains(&e.action.seq))
            .filter_map(|e| {
                let account = e.action.kind.account_id()?.to_owned();
                Some((renamed_from(&e.action.kind)?, account))
            })
            .collect()
    };
    let approved_before: HashSet<u32> = store
        .decisions(run)?
        .into_iter()
        .filter(|(_, d)| *d == Decision::Approved)
        .map(|(seq, _)| seq)
        .collect();
    let (circuit, _) = safety::circuit_state(&store, config, now)?;
    if !circuit.allows_writes() {
        return Err(ApprovalError::CircuitOpen {
            state: crate::report::circuit_state_text(&circuit, tz),
            admin_command: config.admin_command(),
        });
    }
    // On a terminal, the read's progress line, as a reconcile shows it: a large
    // workspace takes a while to list. The directory's read, when there is one,
    // logs its start and end as a reconcile's does (`run::read_directory`).
    let listing = crate::run::ReadProgress::on_terminal();
    // The directory too, beside the workspace, when a held action would take
    // access away: someone back since the run (the mistake behind a mass hold
    // fixed in the directory, a leaver rehired) is seen even with no sweep,
    // reconcile or plan run since to record it.
    let needs_directory = held
        .iter()
        .any(|entry| takes_access_away(&entry.action.kind));
    let (read_before, read_since, mut at_work) = match ahead {
        Some(ahead) if needs_directory => (
            Some(ahead.read),
            Some((ahead.began, ahead.ended, ahead.newest_run)),
            ahead.at_work,
        ),
        _ => (None, None, Vec::new()),
    };
    let directory = (needs_directory && read_before.is_none()).then(|| config.directory());
    let (listed, directory_read) = apply::read_unless_stopped(async {
        let listed = async {
            if !discovered {
                client.discover().await?;
            }
            client.snapshot_whole(&|p| listing.page(p)).await
        };
        let read = async {
            match &directory {
                Some(directory) => Some(crate::run::read_directory(directory).await),
                None => None,
            }
        };
        tokio::join!(listed, read)
    })
    .await
    .ok_or(ApprovalError::StoppedReading)?;
    let (workspace, whole) = listed?;
    listing.done();
    if !whole {
        return Err(ApprovalError::ShortListing);
    }
    let read_at = read_since.map_or(now, |(began, _, _)| began);
    // Read before the writer lock was taken: a reconcile or plan that began
    // after this read ended (the daemon's, while this approval waited for the
    // lock) read the directory later, is the newer state, and decides (as the
    // reads runs stored, below) in place of this one. Only a run that
    // succeeded: a `plan` still at work (it takes no writer lock) may have
    // stored a read its source check is about to refuse, and set aside for it,
    // this read's people back are not. One that began while this read went
    // on (the daemon's scheduled reconcile, minutes into a large directory's
    // read) read each person before or after it did, which is not known: its
    // read counts beside this one, as that of a run already at work as it
    // began, never in place of it.
    let newer_read = match read_since {
        Some((_, ended, newest_before)) => {
            let newest = store.latest_run(&[])?.map_or(run, |r| r.id);
            for id in (newest_before.max(run) + 1)..=newest {
                if store.run(id)?.is_some_and(|r| r.started_at <= ended) {
                    at_work.push(id);
                }
            }
            store
                .newest_checked_directory_after(newest_before.max(run))?
                .and_then(|newer| store.run(newer).ok().flatten())
                .filter(|newer| newer.started_at > ended)
        }
        None => None,
    };
    let directory_read = directory_read.or(read_before);
    let (fresh, directory_note) = match (directory_read, &newer_read) {
        (None, _) => (None, None),
        (Some(_), Some(newer)) => {
            tracing::info!(
                run = newer.id,
                "the directory was read again by a run while approve waited for the writer \
                 lock: the re-check uses that read"
            );
            (
                None,
                Some(format!(
                    "run {} read the directory at {}, after this approval read it at {}: the \
                     re-check used that newer read",
                    newer.id,
                    crate::report::local_time(newer.started_at, tz),
                    crate::report::local_time(read_at, tz)
                )),
            )
        }
        (Some(read), None) => match judge_fresh_directory(config, &store, read, now)? {
            Ok(snapshot) => (Some(snapshot), None),
            Err(why) => {
                tracing::warn!(why = %why, "the directory read by approve is not used");
                (
                    None,
                    Some(format!(
                        "{why}: the re-check used the directory reads runs stored instead"
                    )),
                )
            }
        },
    };
    let store = Arc::new(Mutex::new(store));

    // Protected names and globs as configured now, and the protected groups' members
    // as the run's directory snapshot had them and as the directory reads now.
    let (protected, clocks, back, mut made) = {
        let store = store.lock().map_err(|_| ApprovalError::Poisoned)?;
        // The reads of runs already at work as this approval's read began (the
        // daemon's reconcile mid-read as `approve` starts): begun earlier, they
        // may have read a person later than this approval did. Beside this
        // approval's own read, what they show in someone's favour counts too.
        let read_alongside = match &fresh {
            Some(_) => reads_of(&store, &at_work)?,
            None => Vec::new(),
        };
        let (protected, mut excepted_people) = match store.load_directory_snapshot(run)? {
            Some(directory) => {
                let protected = safety::plan_settings(config, &directory, now).protected;
                // Deleted from the directory before the run, a person is known by
                // the directory userName their open deprovision keeps, as in the
                // reconcile.
                let protected = safety::with_departed(protected, &directory, &store)?;
                // People an exception in force names by their directory userName:
                // every account of theirs is left alone, whatever its own name.
                // Deleted, a person has lost protection for good: the exception
                // keeps them, as the plan lists it.
                let excepted: HashMap<String, crate::policy::Exception> = directory
                    .identities
                    .iter()
                    .filter_map(|i| {
                        protected
                            .exception_for(&i.user_name)
                            .map(|e| (i.id.clone(), e.clone()))
                    })
                    .chain(protected.departed().filter_map(|(identity_id, user_name)| {
                        protected
                            .exception_for_departed(user_name)
                            .map(|e| (identity_id.to_owned(), e.clone()))
                    }))
                    .collect();
                (protected, excepted)
            }
            None => (config.plan_settings(now).protected, HashMap::new()),
        };
        // And the protected groups' members as the directory reads now: someone
        // put in one since the run (how an operator keeps one account out of a
        // held mass deprovision before approving the rest) is protected, as the
        // next reconcile from this read would protect them. The run's members
        // stay protected: one who left the group since is decided by a new run.
        // When that read cannot be used (refused, incomplete, failed), the
        // newest sound read since the run, as who is back and what is no
        // longer asked go by: it may be the one that shows them protected.
        // Whether this approval read the directory under the lock or before it
        // (`read_ahead`, when `directory` is `None`).
        let protected = match &fresh {
            Some(fresh) => read_alongside.iter().fold(
                protected.with_members_of(&config.safety.protected_groups, fresh),
                |protected, (_, read, _)| {
                    protected.with_members_of(&config.safety.protected_groups, read)
                },
            ),
            None if needs_directory && !config.safety.protected_groups.is_empty() => {
                match store.newest_complete_directory_after(run)? {
                    Some(newer) => match store.load_directory_snapshot(newer)? {
                        Some(read) => {
                            protected.with_members_of(&config.safety.protected_groups, &read)
                        }
                        None => protected,
                    },
                    None => protected,
                }
            }
            None => protected,
        };
        // As the newest read a run made while this approval waited for the
        // lock, whatever became of the run (one that failed after reading, a
        // `plan` still at work): protection only adds, and read under the lock
        // this approval would have seen them so. Only a run that succeeded sets
        // this approval's own read aside (`newer_read`).
        let read_while_waiting = match read_since {
            Some((_, _, newest_before)) if !config.safety.protected_groups.is_empty() => {
                store.newest_complete_directory_after(newest_before.max(run))?
            }
            _ => None,
        };
        let protected = match read_while_waiting {
            Some(newer) => match store.load_directory_snapshot(newer)? {
                Some(read) => protected.with_members_of(&config.safety.protected_groups, &read),
                None => protected,
            },
            None => protected,
        };
        // A sweep's run stores no directory snapshot: the person's directory
        // userName is then the one their open deprovision keeps in the ledger,
        // which the sweep and its retry look an exception up by too.
        if protected.has_exceptions() {
            for episode in store.open_deprovisions()? {
                if let Some(exception) = protected.exception_for(&episode.user_name) {
                    excepted_people
                        .entry(episode.identity_id)
                        .or_insert_with(|| exception.clone());
                }
            }
        }
        // People a sweep or a reconcile has seen with access again since the run:
        // their held deprovision is for someone who is no longer leaving.
        let started = store.run(run)?.map_or(now, |r| r.started_at);
        let mut back: BTreeMap<String, String> = BTreeMap::new();
        let leaving: HashMap<String, String> = held
            .iter()
            .filter(|entry| entry.action.kind.is_deprovision())
            .filter_map(|entry| {
                Some((
                    entry.action.identity_id.clone()?,
                    entry.action.kind.account_id()?.to_owned(),
                ))
            })
            .collect();
        // The freshest evidence first: the directory as this approval read it,
        // active and in scope. Protection aside: the re-check below refuses a
        // protected person's deprovision saying so.
        if !leaving.is_empty()
            && let Some(fresh) = &fresh
        {
            let policy = config.policy_settings();
            for identity in fresh.identities.iter().filter(|identity| {
                leaving.contains_key(&identity.id)
                    && crate::policy::access_loss(identity, &policy).is_none()
            }) {
                back.insert(
                    identity.id.clone(),
                    format!(
                        "in the directory as read now, {}",
                        crate::report::local_time(read_at, tz)
                    ),
                );
            }
        }
        if !leaving.is_empty() {
            for (by, read, read_at) in &read_alongside {
                for identity in
                    crate::sweep::returned_in(config, read.clone(), &leaving, &HashSet::new())
                {
                    back.entry(identity).or_insert_with(|| {
                        format!(
                            "in the directory read by run {by}, {}",
                            crate::report::local_time(*read_at, tz)
                        )
                    });
                }
            }
        }
        for identity in leaving.keys() {
            if let Some(newest) = store.deprovision_history(identity, 1)?.first()
                && let Some(at) = newest.closed_at.or(newest.returned_at)
                && at > started
            {
                back.insert(
                    identity.clone(),
                    format!("seen {}", crate::report::local_time(at, tz)),
                );
            }
        }
        // The ledger hears of a return only from a sweep or a reconcile; a newer
        // directory read (a `plan`, a run that failed after reading, a reconcile
        // whose ledger update failed) is fresher evidence than this run's. Not
        // one the source check refused (a stale export that still lists a
        // leaver would keep them in), which is passed over for the sound read
        // before it: a directory outage since must not hide who that read
        // showed back.
        let newest_read = match store.newest_complete_directory_after(run)? {
            Some(newer) if needs_directory => match store.load_directory_snapshot(newer)? {
                Some(directory) => {
                    let read_at = store.run(newer)?.map_or(now, |r| r.started_at);
                    Some((newer, directory, read_at))
                }
                None => None,
            },
            _ => None,
        };
        if !leaving.is_empty()
            && let Some((newer, directory, read_at)) = &newest_read
        {
            for identity in
                crate::sweep::returned_in(config, directory.clone(), &leaving, &HashSet::new())
            {
                back.entry(identity).or_insert_with(|| {
                    format!(
                        "in the directory read by run {newer}, {}",
                        crate::report::local_time(*read_at, tz)
                    )
                });
            }
        }
        let made = MadeSince::new(&workspace, &store, run, &config.admin_command())?;
        // Account → the identity its stored link names now.
        let linked: HashMap<String, String> = store
            .links()?
            .into_iter()
            .map(|l| (l.account_id, l.identity_id))
            .collect();
        let outdated = no_longer_asked(
            config,
            &store,
            run,
            &held,
            &workspace,
            &linked,
            fresh.as_ref().map(|snapshot| (snapshot, read_at)),
            &read_alongside,
            tz,
        )?;
        // Someone new the plan's matching would give an account to: the same
        // reads as who is back, in the same order.
        let claimed = if needs_directory {
            let mut reads: Vec<ClaimRead<'_>> = Vec::new();
            if let Some(fresh) = &fresh {
                reads.push(ClaimRead {
                    read: fresh,
                    source: format!(
                        "in the directory as read now, {}",
                        crate::report::local_time(read_at, tz)
                    ),
                });
            }
            for (by, read, read_at) in &read_alongside {
                reads.push(ClaimRead {
                    read,
                    source: format!(
                        "in the directory read by run {by}, {}",
                        crate::report::local_time(*read_at, tz)
                    ),
                });
            }
            if let Some((newer, read, read_at)) = &newest_read {
                reads.push(ClaimRead {
                    read,
                    source: format!(
                        "in the directory read by run {newer}, {}",
                        crate::report::local_time(*read_at, tz)
                    ),
                });
            }
            let directory_then = store.load_directory_snapshot(run)?;
            let workspace_then = store.load_workspace_snapshot(run)?;
            claimed_since(
                &held,
                &workspace,
                &linked,
                &reads,
                directory_then.as_ref().zip(workspace_then.as_ref()),
                &config.policy_settings(),
                run,
                &admin_command,
            )
        } else {
            BTreeMap::new()
        };
        (
            (protected, excepted_people),
            store.deactivated_since()?,
            (back, outdated, linked, claimed),
            made,
        )
    };
    let (protected, excepted_people) = protected;
    let (back, outdated, linked, claimed) = back;
    let mut approval = Approval {
        run,
        waiting,
        rejected_later,
        directory_note,
        ..Approval::default()
    };
    // Re-checked in the order they are written: a rename is decided before the
    // create that wants the userName it gives up, a create before the memberships
    // that need its account or group.
    let mut held = held;
    held.sort_by_key(|entry| (apply::phase(&entry.action.kind), entry.action.seq));
    // userNames the renames going ahead give up: a create held behind one
    // (`guard::hold_dependents`) wants a name an account still has, and the
    // rename, applied first, frees it. Those of refused renames stay taken.
    let mut freed: Vec<String> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    // Accounts whose delete this approval sends (deprovisions come first).
    let mut deleting: HashSet<String> = HashSet::new();
    let mut still: Vec<Action> = Vec::new();
    for entry in held {
        let mut action = entry.action;
        // Planned from a directory read that was not whole (design invariant 3):
        // the person may only be missing from it, and this re-check reads the
        // workspace, not the directory. No approval takes access away on it; a
        // reconcile from a complete read plans what is really due.
        if action.held == Some(HoldReason::IncompleteDirectory) {
            approval.refused.push((
                action.seq,
                format!(
                    "planned from run {run}'s incomplete directory read, in which someone \
                     only missing looks gone: no approval takes access away on it. Run \
                     `{admin_command} reconcile` once the directory reads whole; it plans \
                     what is really due"
                ),
            ));
            continue;
        }
        // Behind a held delete (`guard`, `HoldReason::WaitsForDelete`): never sent
        // while the account is there, not even after the delete approved with it,
        // which may fail and leave it meeting 409. Once the workspace shows the
        // account gone it is judged like any other, and the next reconcile plans it.
        if let Some(HoldReason::WaitsForDelete { account_id, .. }) = &action.held
            && workspace.accounts.iter().any(|a| a.id == *account_id)
        {
            if let ActionKind::CreateAccount { identity_id, .. } = &action.kind {
                made.held_back(identity_id);
            }
            if let Some(given_up) = renamed_from(&action.kind) {
                kept.push(given_up);
            }
            let delete = if deleting.contains(account_id) {
                "approved now: once the workspace shows it made, the next reconcile sends this"
            } else {
                "which stays held: approve that delete, and the next reconcile sends this"
            };
            approval.refused.push((
                action.seq,
                format!("waits for the delete of account {account_id}, {delete}"),
            ));
            continue;
        }
        if let Some((name, account)) = action.kind.wanted_user_name().and_then(|wanted| {
            renames_left_held
                .iter()
                .find(|(name, _)| same_name(name, wanted))
        }) && workspace
            .accounts
            .iter()
            .any(|a| a.id == *account && same_name(&a.user_name, name))
        {
            if let ActionKind::CreateAccount { identity_id, .. } = &action.kind {
                made.held_back(identity_id);
            }
            if let Some(given_up) = renamed_from(&action.kind) {
                kept.push(given_up);
            }
            approval.refused.push((
                action.seq,
                format!(
                    "wants the userName {name}, which account {account} gives up by a rename \
                     that stays held: approve that rename with it (`--only rename`, or the \
                     whole run)"
                ),
            ));
            continue;
        }
        if let ActionKind::CreateAccount { identity_id, spec } = &action.kind {
            if freed.iter().any(|name| same_name(name, &spec.user_name)) {
                made.creating(&action.kind);
                action.held = None;
                still.push(action);
                continue;
            }
            if kept.iter().any(|name| same_name(name, &spec.user_name)) {
                made.held_back(identity_id);
                approval.refused.push((
                    action.seq,
                    format!(
                        "wants the userName {}, which its holder keeps: the re-check \
                         refused the rename that frees it",
                        spec.user_name
                    ),
                ));
                continue;
            }
        }
        if let Err(why) = made.resolve(&mut action.kind) {
            approval.refused.push((action.seq, why));
            continue;
        }
        // The configuration may have changed since the run: a delete is judged by
        // the deletion rules configured now.
        if let ActionKind::Delete {
            deactivated_since, ..
        } = &action.kind
            && let Some(why) = deletion_refused(config.delete_after(), *deactivated_since, now)
        {
            approval.refused.push((action.seq, why.to_owned()));
            continue;
        }
        if let Some(seen) = action.identity_id.as_ref().and_then(|id| back.get(id)) {
            approval.refused.push((
                action.seq,
                format!(
                    "the person has access again in the directory ({seen}); a new run \
                     decides what they need"
                ),
            ));
            continue;
        }
        if let Some(why) = claimed.get(&action.seq) {
            approval.refused.push((action.seq, why.clone()));
            continue;
        }
        if let Some(why) = relinked(&action, &linked, &admin_command) {
            approval.refused.push((action.seq, why));
            continue;
        }
        // Kept by an exception in force, the account's own or its person's: left
        // alone as the reconcile and the sweep leave it, and said so (the
        // re-check below would call it protected, which no list says).
        if let Some(account_id) = action.kind.account_id() {
            let exception = workspace
                .accounts
                .iter()
                .find(|a| a.id == account_id)
                .and_then(|a| protected.exception_for(&a.user_name))
                .or_else(|| {
                    action
                        .identity_id
                        .as_ref()
                        .and_then(|id| excepted_people.get(id))
                });
            if let Some(exception) = exception {
                approval.refused.push((
                    action.seq,
                    format!(
                        "kept by an exception (safety.exceptions) until {}: {}; seatwarden \
                         manages the account again when it ends",
                        crate::report::local_minute(exception.until, tz),
                        crate::report::printable_field(&exception.reason)
                    ),
                ));
                if let Some(given_up) = renamed_from(&action.kind) {
                    kept.push(given_up);
                }
                continue;
            }
        }
        let decision = match recheck(&action, &workspace, &protected, &clocks) {
            Recheck::Apply => match outdated.get(&action.seq) {
                Some(why) => Recheck::Refuse(why.clone()),
                None => Recheck::Apply,
            },
            decision => decision,
        };
        if let (ActionKind::Delete { account_id, .. }, Recheck::Apply) = (&action.kind, &decision) {
            deleting.insert(account_id.clone());
        }
        if let Some(given_up) = renamed_from(&action.kind) {
            match decision {
                Recheck::Apply => freed.push(given_up),
                Recheck::Refuse(_) => kept.push(given_up),
                Recheck::Obsolete(_) => {}
            }
        }
        match decision {
            Recheck::Apply => {
                made.creating(&action.kind);
                action.held = None;
                still.push(action);
            }
            Recheck::Obsolete(why) => approval.obsolete.push((action.seq, why)),
            Recheck::Refuse(why) => {
                if let ActionKind::CreateAccount { identity_id, .. } = &action.kind {
                    made.held_back(identity_id);
                }
                if let ActionKind::CreateGroup { display_name } = &action.kind {
                    made.held_back_group(display_name);
                }
                approval.refused.push((action.seq, why));
            }
        }
    }
    still.sort_by_key(|action| action.seq);
    approval.obsolete.sort();
    approval.refused.sort();
    // The last active Owner rule, against the workspace as it is now: thresholds
    // are what the human overrides, never this.
    let last_owner = guard::guard(
        Plan {
            actions: still,
            ..Plan::default()
        },
        &workspace,
        &GuardSettings::unlimited(),
        &GuardInput {
            directory_complete: true,
            allow_over_threshold: true,
            ..GuardInput::default()
        },
    );
    let mut to_apply = Plan::default();
    for action in last_owner.actions {
        match &action.held {
            Some(reason) => approval
                .refused
                .push((action.seq, reason.describe(&admin_command).to_string())),
            None => {
                approval.approved.push(action.seq);
                to_apply.actions.push(action);
            }
        }
    }

    {
        let mut store = store.lock().map_err(|_| ApprovalError::Poisoned)?;
        // Who approved an action and when stays the first approval's.
        let mut decisions: Vec<(u32, Decision, Option<String>)> = approval
            .approved
            .iter()
            .filter(|seq| !approved_before.contains(seq))
            .map(|seq| (*seq, Decision::Approved, None))
            .collect();
        decisions.extend(
            approval
                .obsolete
                .iter()
                .map(|(seq, why)| (*seq, Decision::Obsolete, Some(why.clone()))),
        );
        let user = safety::os_user();
        // Decided before released: cut off in between, the rows are still held but
        // approved, and the next `approve` takes them (see `undecided`); the other
        // way round they would be planned with no decision, which nothing takes.
        store.record_decisions(run, &decisions, &user, now)?;
        // Refused: held, with the reason. One this approval took up released but
        // unsent by an earlier, cut-off one goes back to held too: left planned, it
        // would read "not run" and ask nobody for anything.
        let refused: Vec<(u32, String)> = approval
            .refused
            .iter()
            .map(|(seq, why)| (*seq, format!("{}{why}", crate::model::REFUSED_BY_APPROVAL)))
            .collect();
        store.refuse_held(run, &refused, now)?;
        store.release_held(run, &approval.approved, now)?;
        let again = approval
            .approved
            .iter()
            .filter(|seq| approved_before.contains(seq))
            .count();
        safety::audit(
            &mut store,
            "approve",
            Some(run),
            approval.audited(only, again),
            now,
        )?;
    }
    if !to_apply.actions.is_empty() {
        let page = config.workspace.page_size.max(1) as usize;
        let relist =
            workspace.accounts.len().div_ceil(page) + workspace.groups.len().div_ceil(page) + 2;
        let writing = std::time::Instant::now();
        approval.applied = apply::apply_with_breaker(
            client,
            &store,
            run,
            &to_apply,
            config.workspace.max_concurrency,
            relist,
            Breaker::new(config.circuit_settings()),
            now,
            &config.admin_command(),
        )
        .await?;
        let mut store = store.lock().map_err(|_| ApprovalError::Poisoned)?;
        safety::record_circuit(
            &mut store,
            circuit,
            &approval.applied,
            &config.circuit_settings(),
            apply::later_by(now, writing),
        )?;
    }
    let mut store = store.lock().map_err(|_| ApprovalError::Poisoned)?;
    if !to_apply.actions.is_empty() {
        (approval.failed, approval.not_sent) = unapplied(&store.journal(run)?, &approval.approved);
    }
    if !to_apply.actions.is_empty() {
        // Verified deprovisions close their episode; one whose write failed or
        // was kept back stays (or is, a look-alike's) in an open episode, due,
        // for the retry job to send again: the approval decided over the
        // thresholds, and is not asked for again.
        let detected_at = store.run(run)?.map_or(now, |r| r.started_at);
        crate::sweep::record_deprovisions(
            &mut store,
            run,
            Some(&approval.approved),
            detected_at,
            // Never before the approval's own time (a simulated `now` ahead of
            // the clock), as the sweep verifies.
            Utc::now().max(now),
            crate::sweep::configured_sla(config),
            &admin_command,
        )?;
        crate::sweep::record_approved_unwritten(&mut store, run, &approval.approved, now)?;
    }
    refresh_report(&mut store, run, &admin_command)?;
    approval.settled_later =
        settle_later_holds(&mut store, run, &approval.approved, &admin_command, now)?;
    Ok(approval)
}

/// The same actions held again by later runs (the daemon's reconciles kept
/// holding what waited for a person), once this approval of `run` applied them:
/// recorded done in those runs (`obsolete`: nothing is sent), their reports
/// brought up to date. Otherwise `status`, the digest and the newest run's
/// report kept asking for an approval of the newest run, naming people whose
/// accounts this approval had just deactivated, until the next reconcile.
/// Returns the runs and how many of each.
fn settle_later_holds(
    store: &mut Store,
    run: RunId,
    approved: &[u32],
    admin_command: &str,
    now: DateTime<Utc>,
) -> Result<Vec<(RunId, usize)>, ApprovalError> {
    let applied: Vec<ActionKind> = store
        .journal(run)?
        .into_iter()
        .filter(|e| e.state == ActionState::Applied && approved.contains(&e.action.seq))
        .map(|e| e.action.kind)
        .collect();
    if applied.is_empty() {
        return Ok(Vec::new());
    }
    let user = safety::os_user();
    let mut settled = Vec::new();
    for later in store.later_runs_holding(run)? {
        let done: Vec<(u32, Decision, Option<String>)> = held_undecided(store, later)?
            .into_iter()
            .filter(|e| applied.contains(&e.action.kind))
            .map(|e| {
                (
                    e.action.seq,
                    Decision::Obsolete,
                    Some(format!("done by the approval of run {run}")),
                )
            })
            .collect();
        if done.is_empty() {
            continue;
        }
        store.record_decisions(later, &done, &user, now)?;
        refresh_report(store, later, admin_command)?;
        settled.push((later, done.len()));
    }
    Ok(settled)
}

/// The deprovisions of `run` an earlier approval applied and verified, then was
/// cut off (killed, the machine lost) before it recorded them in the ledger: they
/// are recorded now, verified when their rows were marked applied. Nothing else
/// would: their rows are not in flight, so no recovery sees them; the run is not
/// left running, so no reconcile takes it for cut off
/// ([`crate::sweep::record_cut_off_applied`]); and no run plans the deactivations
/// again (the accounts are inactive). Their episodes stayed open, went overdue,
/// and alerted about people who had no access left. Only an episode still open
/// and detected before its row was applied: one detected later is a new leave,
/// which that old write does not settle.
fn record_cut_off_approval(
    config: &Config,
    store: &mut Store,
    run: RunId,
) -> Result<(), ApprovalError> {
    let approved: HashSet<u32> = store
        .decisions(run)?
        .into_iter()
        .filter(|(_, decision)| *decision == Decision::Approved)
        .map(|(seq, _)| seq)
        .collect();
    if approved.is_empty() {
        return Ok(());
    }
    let open: HashMap<String, DateTime<Utc>> = store
        .current_deprovisions()?
        .into_iter()
        .filter(crate::sla::LedgerEntry::is_open)
        .map(|entry| (entry.identity_id, entry.detected_at))
        .collect();
    let applied: Vec<JournalEntry> = store
        .journal_deprovisions(run)?
        .into_iter()
        .filter(|row| row.state == ActionState::Applied && approved.contains(&row.action.seq))
        .filter(|row| {
            row.action
                .identity_id
                .as_ref()
                .and_then(|identity| open.get(identity))
                .is_some_and(|detected| *detected <= row.updated_at)
        })
        .collect();
    let Some(verified_at) = applied.iter().map(|row| row.updated_at).max() else {
        return Ok(());
    };
    tracing::warn!(
        run,
        deprovisions = applied.len(),
        "an approval of this run was cut off after its deprovisions were verified and before \
         the ledger recorded them; recording them now"
    );
    let recovered = apply::Recovered {
        applied: BTreeMap::from([(run, applied.iter().map(|row| row.action.seq).collect())]),
        ..apply::Recovered::default()
    };
    crate::sweep::record_recovered(
        store,
        &recovered,
        verified_at,
        crate::sweep::configured_sla(config),
        &config.admin_command(),
    )?;
    Ok(())
}

/// Resolves the rows a dead process left in flight ([`apply::recover`]) and records
/// what it found in the ledger as the sweep does ([`crate::sweep::record_recovery`]).
/// Returns the store and whether the client has read the provider's settings.
async fn recover_cut_off(
    config: &Config,
    client: &ScimClient,
    store: Store,
    now: DateTime<Utc>,
) -> Result<(Store, bool), ApprovalError> {
    if store.interrupted()?.is_empty() {
        return Ok((store, false));
    }
    client.discover().await?;
    let store = Mutex::new(store);
    // Its read failing is a read of the workspace, as the re-check's would be (a
    // provider may answer discovery to anyone and refuse `/Users`): said so, with
    // what to check, not as "applying the approved actions".
    let recovered = apply::recover(client, &store, &config.admin_command())
        .await
        .map_err(|error| match error {
            ApplyError::Workspace(e) => ApprovalError::Workspace(e),
            other => ApprovalError::Apply(other),
        })?;
    let mut store = store.into_inner().map_err(|_| ApprovalError::Poisoned)?;
    if recovered.resolved > 0 {
        tracing::info!(
            recovered = recovered.resolved,
            "interrupted actions resolved"
        );
        crate::sweep::record_recovery(
            &mut store,
            &recovered,
            now,
            crate::sweep::configured_sla(config),
            &config.admin_command(),
        )?;
        // A cut-off approval's run has a stored report, which showed them not run.
        for run in &recovered.runs {
            refresh_report(&mut store, *run, &config.admin_command())?;
        }
    }
    Ok((store, true))
}

/// What `seatwarden reject` did, and (its `Display`) what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub run: RunId,
    pub kind: RunKind,
    /// Earlier runs that held the same actions, undecided, and how many of
    /// each: rejected there too ([`reject_earlier_holds`]).
    pub earlier: Vec<(RunId, usize)>,
    /// Approved actions, of this run or of an earlier one that held the same,
    /// that another run sent since (the retry job, a sweep, a reconcile): not
    /// rejected, as nothing undoes them ([`SentSince`]).
    pub sent_since: Vec<SentSince>,
    /// The held actions rejected.
    pub rejected: usize,
    /// Of them, deactivations and deletions that take access away.
    pub deprovisions: usize,
    /// `report.admin_command`, which the text tells to run.
    pub admin_command: String,
}

impl std::fmt::Display for Rejection {
    /// A rejection binds only its run: the directory still says what it said, so
    /// the next pass or reconcile plans the same actions again. Said here, lest
    /// the next hold (and its alert) look like something new, or the rejection
    /// like a way to keep a leaver's access, which it is not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Rejection {
            run,
            kind,
            ref earlier,
            ref sent_since,
            rejected,
            deprovisions,
            ref admin_command,
        } = *self;
        // One rejected action is the common case (`reject` after one leaver's
        // alert): it reads "it", not "1 … them".
        let one = rejected == 1;
        let (them, who, episodes, alert) = if one {
            ("it", "this person", "episode stays", "alerts")
        } else {
            ("them", "these people", "episodes stay", "alert")
        };
        write!(
            f,
            "rejected {} of {kind} run {run}; that run will not apply {them}",
            plural(rejected, "held action", "held actions")
        )?;
        for (older, n) in earlier {
            write!(
                f,
                "; run {older} held {} before, undecided: rejected there too (the newest \
                 decision stands)",
                if *n == rejected && one {
                    "it".to_owned()
                } else {
                    format!("{n} of {them}")
                }
            )?;
        }
        for sent in sent_since {
            write!(f, "; {sent}")?;
        }
        match kind {
            RunKind::Sweep => write!(
                f,
                ".\nThe directory still says {who} lost access: their deprovision {episodes} \
                 open (and {alert} once overdue), and the sweep's next pass (within {} minutes) \
                 plans {them} again: held again, naming this rejection, while the guard still \
                 holds {them}; applied once it does not.",
                crate::sweep::HOLD_RECHECK.num_minutes()
            )?,
            _ => write!(
                f,
                ".\nThe next reconcile plans again what the directory still asks for: held \
                 again while the guard still holds it; applied once it does not."
            )?,
        }
        if deprovisions > 0 && kind != RunKind::Sweep {
            let (which, stay, alert, again) = match (deprovisions, one) {
                (1, true) => (
                    "It is a deprovision: it".to_owned(),
                    "stays",
                    "alerts",
                    "it",
                ),
                (1, false) => (
                    "The 1 deprovision among them".to_owned(),
                    "stays",
                    "alerts",
                    "it",
                ),
                (n, _) => (
                    format!("The {n} deprovisions among them"),
                    "stay",
                    "alert",
                    "them",
                ),
            };
            write!(
                f,
                " {which} {stay} open in the ledger (and {alert} once overdue), and the sweep \
                 plans {again} again meanwhile."
            )?;
        }
        write!(
            f,
            "\nTo stop it for good: correct the directory (if the person keeps access), or \
             protect the account (safety.protected); `{admin_command} explain PERSON` shows \
             where each stands."
        )
    }
}

/// `seatwarden reject RUN [--only KIND]`: the held actions stay held, recorded as
/// rejected, and are never applied from this run. So are those an approval cut
/// off approved and did not send (released, or in flight when it died: what of
/// those reached the workspace is there, and the next recovery finds it applied;
/// the rest is never sent from this run). Later runs plan what the directory
/// still asks for again (see [`Rejection`]); a sweep that holds a deprovision
/// again names the rejection in the hold.
///
/// Commands it names are run as `admin_command` (`report.admin_command`), and
/// the times a refusal names are on `tz`'s clock (`report.timezone`).
pub fn reject(
    store: &mut Store,
    run: RunId,
    only: &Only,
    admin_command: &str,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<Rejection, ApprovalError> {
    let kind = store
        .run(run)?
        .map(|record| record.kind)
        .ok_or(ApprovalError::UnknownRun(run))?;
    let (held, _) = undecided(store, run, only, false, admin_command, tz)?;
    let (held, mut sent_since) = sent_elsewhere(store, held, tz)?;
    if held.is_empty() {
        return Err(ApprovalError::NothingHeld {
            run,
            only: only.describe(),
            waiting: 0,
            others: String::new(),
            decided: format!(
                "{}; {}",
                decided_already(store, run, tz)?,
                sent_since
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    let decisions: Vec<(u32, Decision, Option<String>)> = held
        .iter()
        .map(|e| (e.action.seq, Decision::Rejected, None))
        .collect();
    let unsent = held.iter().filter(|e| e.state != ActionState::Held).count();
    let user = safety::os_user();
    store.record_decisions(run, &decisions, &user, now)?;
    refresh_report(store, run, admin_command)?;
    let rejected_kinds: Vec<&ActionKind> = held.iter().map(|e| &e.action.kind).collect();
    let (earlier, earlier_sent) =
        reject_earlier_holds(store, run, &rejected_kinds, &user, admin_command, tz, now)?;
    sent_since.extend(earlier_sent);
    // An approved deprovision whose write failed, taken back by this
    // rejection: held in its episode at once, so the retry job (which checks
    // again before it sends) does not send it and `status` says why.
    crate::sweep::hold_rejected_approvals(store, now, tz, admin_command)?;
    safety::audit(
        store,
        "reject",
        Some(run),
        format!(
            "rejected {}{}{}{}",
            plural(decisions.len(), "held action", "held actions"),
            only.describe(),
            if unsent > 0 {
                format!(" ({unsent} already approved by an approval cut off before sending)")
            } else {
                String::new()
            },
            earlier
                .iter()
                .map(|(older, n)| format!("; {n} held before by run {older}, rejected there too"))
                .chain(sent_since.iter().map(|sent| format!("; {sent}")))
                .collect::<String>()
        ),
        now,
    )?;
    let deprovisions = held
        .iter()
        // One another run sent since leaves no episode open.
        .filter(|e| sent_since.iter().all(|sent| sent.kind != e.action.kind))
        .filter(|e| match &e.action.kind {
            ActionKind::Deactivate { .. } => true,
            // A retention delete takes away no access: no episode waits on it.
            ActionKind::Delete {
                deactivated_since, ..
            } => deactivated_since.is_none(),
            _ => false,
        })
        .count();
    Ok(Rejection {
        run,
        kind,
        earlier,
        sent_since,
        rejected: decisions.len(),
        deprovisions,
        admin_command: admin_command.to_owned(),
    })
}

/// The newest decision about an action wins: the same actions (the same
/// [`ActionKind`], as [`settle_later_holds`] finds them) that earlier reconcile or
/// sweep runs still hold undecided, or approved by an approval cut off before it
/// sent them, are recorded rejected there too, naming `run`
/// ([`Store::record_newer_rejection`]), and those runs' reports brought up to
/// date. Otherwise `status`, the digest and the overdue alert (which name the
/// newest *undecided* hold) sent the operator who had just rejected run 3 to
/// `approve 2`, which would have deactivated the person anyway. A later run's
/// new hold of it is a new decision to make, approvable as usual.
/// An approved action those runs did not send that another run sent since
/// (the retry job, say) is left as it is: it happened, and "rejected there
/// too" would say a person refused a write the workspace had taken.
/// Returns the runs and how many of each, and what was sent since.
#[allow(clippy::type_complexity)]
fn reject_earlier_holds(
    store: &mut Store,
    run: RunId,
    rejected: &[&ActionKind],
    user: &str,
    admin_command: &str,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<(Vec<(RunId, usize)>, Vec<SentSince>), ApprovalError> {
    if rejected.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut decided = Vec::new();
    let mut sent_since = Vec::new();
    for older in store.earlier_runs_holding(run)? {
        let rows = match undecided(store, older, &Only::All, false, admin_command, tz) {
            Ok((rows, _)) => rows,
            Err(ApprovalError::Store(e)) => return Err(e.into()),
            Err(_) => continue,
        };
        let rows: Vec<JournalEntry> = rows
            .into_iter()
            .filter(|e| rejected.contains(&&e.action.kind))
            .collect();
        let (rows, sent) = sent_elsewhere(store, rows, tz)?;
        sent_since.extend(sent);
        let seqs: Vec<u32> = rows.into_iter().map(|e| e.action.seq).collect();
        if seqs.is_empty() {
            continue;
        }
        store.record_newer_rejection(older, &seqs, run, user, now)?;
        refresh_report(store, older, admin_command)?;
        decided.push((older, seqs.len()));
    }
    Ok((decided, sent_since))
}

/// An approved action its run did not send that another run applied since
/// ([`Store::applied_elsewhere_since`]): `reject` leaves it as it is and says
/// so, "rejected" would claim a person refused what the workspace took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSince {
    /// The run whose approved row it is.
    pub run: RunId,
    /// The action sent.
    pub kind: ActionKind,
    /// The action's op (`deactivate`, …) and whom it is about.
    pub op: &'static str,
    pub subject: String,
    /// The run that sent it, its kind, and when (on the report's clock).
    pub sent_in: RunId,
    pub sent_by: &'static str,
    pub at_local: String,
}

impl std::fmt::Display for SentSince {
    /// "the deactivate of bob@example.com approved in run 8 was already sent by
    /// the retry job or a sweep (run 12) at …: not rejected, and not undone".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} of {} approved in run {} was already sent by {} (run {}) at {}: not \
             rejected, and not undone",
            self.op,
            crate::report::printable(&self.subject, false),
            self.run,
            self.sent_by,
            self.sent_in,
            self.at_local
        )
    }
}

/// `rows` split into those still to decide on and [`SentSince`]: approved
/// rows not held (released, kept back, cut off unsent) whose action another
/// run applied since. A held row was never sent from its run, whatever
/// others did: rejecting it only decides that run's plan.
fn sent_elsewhere(
    store: &Store,
    rows: Vec<JournalEntry>,
    tz: chrono_tz::Tz,
) -> Result<(Vec<JournalEntry>, Vec<SentSince>), StoreError> {
    let mut left = Vec::with_capacity(rows.len());
    let mut sent = Vec::new();
    for row in rows {
        let applied = match row.state {
            ActionState::Held => None,
            _ => store.applied_elsewhere_since(&row)?,
        };
        match applied {
            Some(applied) => sent.push(SentSince {
                run: row.run,
                kind: row.action.kind.clone(),
                op: row.action.kind.name(),
                subject: row.action.subject.clone(),
                sent_in: applied.run,
                sent_by: match applied.run_kind.as_str() {
                    "sweep" => "the retry job or a sweep",
                    "reconcile" => "a reconcile",
                    _ => "another run",
                },
                at_local: crate::report::local_time(applied.at, tz),
            }),
            None => left.push(row),
        }
    }
    Ok((left, sent))
}

/// [`link`], as `seatwarden link` runs it: first, an account the plan matches to
/// someone else by a rule (externalId, userName, email) with no stored link yet
/// (after a first `plan`, or matched since the last reconcile) is refused
/// without `replace`, as a stored link of theirs is: linked to this person, the
/// next reconcile would rename that account to this person's userName and give
/// its owner a new, empty account (their projects on someone else's). A typed
/// account id one character off did exactly that, silently. A protected account
/// is linked only to a protected person, and a protected person only to a
/// protected account, `replace` or not: a reconcile leaves alone both an account
/// protected by name and every account of a protected person, so either link
/// would protect what nobody protected. Both are judged as the plan judges them,
/// by the person's directory userName and the account's own userName.
/// Such links made before, or found by a matching rule, are reported every run
/// ([`crate::model::Plan::protected_by_person`]).
pub fn link_checked(
    config: &Config,
    store: &mut Store,
    identity_id: &str,
    account_id: &str,
    replace: bool,
    now: DateTime<Utc>,
) -> Result<Vec<crate::store::StoredLink>, ApprovalError> {
    let admin_command = config.admin_command();
    // A protected account (a break-glass admin, say) linked to someone who is not
    // protected made that person's access one seatwarden never takes away: their
    // leaving deactivated nothing, and their own account became a duplicate. The
    // reverse is refused below too.
    if let Some(run) = store.latest_snapshot_run()?
        && let Some(directory) = store.load_directory_snapshot(run)?
        && let Some(workspace) = store.load_workspace_snapshot(run)?
        && let Some(account) = workspace.accounts.iter().find(|a| a.id == account_id)
    {
        // Judged as a reconcile judges them: a person by their directory
        // userName (a protected group's members by theirs), an account by its
        // own userName; an email protects neither. An account whose email alone
        // matched a protected name passed for protected here, so a protected
        // person was linked to an account the plan then left alone only for them.
        let protected = safety::plan_settings(config, &directory, now).protected;
        let person = directory.identities.iter().find(|i| i.id == identity_id);
        // For good: an exception (`safety.exceptions`) keeps every account of
        // its person, linked or not, only until its end, and then none.
        let account_protected = protected.permanently(&account.user_name);
        let person_protected = person.is_some_and(|p| protected.permanently(&p.user_name));
        // The other way round: a reconcile leaves every account of a protected
        // person alone (the plan flags them untouchable by the person's
        // userName), so an ordinary account linked to one (a leaver's, an orphan
        // left behind) would never be deactivated, renamed or regrouped again,
        // nor reported: protected without anyone having protected it.
        if person_protected && !account_protected {
            let named = person
                .map(|p| format!(" ({})", p.user_name))
                .unwrap_or_default();
            return Err(ApprovalError::Link(format!(
                "identity {identity_id}{named} is protected (safety.protected / \
                 protected_groups) and account {account_id} ({}) is not: linked, seatwarden \
                 would never change the account again (every account of a protected person \
                 is left alone), not even when it is due to be deactivated. If the account \
                 is theirs, protect it too (or take them out of safety.protected), then run \
                 `{}` again",
                account.user_name,
                admin_command_line(&admin_command, "link", &[identity_id, account_id], &[])
            )));
        }
        if account_protected && !person_protected {
            let named = person
                .map(|p| format!(" ({})", p.user_name))
                .unwrap_or_default();
            return Err(ApprovalError::Link(format!(
                "account {account_id} ({}) is protected (safety.protected / protected_groups) \
                 and identity {identity_id}{named} is not: linked, their access would be one \
                 seatwarden never takes away, not even when they leave. If the account is \
                 theirs, protect them too (or take the account out of safety.protected), then \
                 run `{}` again",
                account.user_name,
                admin_command_line(&admin_command, "link", &[identity_id, account_id], &[])
            )));
        }
    }
    if !replace
        && let Some(run) = store.latest_snapshot_run()?
        && let Some(directory) = store.load_directory_snapshot(run)?
        && let Some(workspace) = store.load_workspace_snapshot(run)?
    {
        let links = store.links()?;
        let remembered = store.disputed_candidates()?;
        let matched = crate::export::matched_unlinked(
            config,
            &directory,
            &workspace,
            &links,
            &remembered,
            now,
        );
        if let Some(other) = matched
            .iter()
            .find(|l| l.account_id == account_id && l.identity_id != identity_id)
        {
            let user_name = |id: &str| identity_named(&directory, id);
            let account_name = account_named(&workspace, account_id);
            let by = match other.method {
                crate::model::LinkMethod::ExternalId => "externalId",
                crate::model::LinkMethod::UserName => "userName",
                crate::model::LinkMethod::Email => "email",
                method => method.as_str(),
            };
            return Err(ApprovalError::Link(format!(
                "account {account_id}{account_name} matches identity {}{} by {by} (not \
                 linked yet): linked to {identity_id}{}, the next reconcile would rename it \
                 to their userName and give {} a new, empty account. Check the account id \
                 (`{}` shows the accounts that may be theirs); if it is {identity_id}'s all \
                 the same, pass --replace",
                other.identity_id,
                user_name(&other.identity_id),
                user_name(identity_id),
                other.identity_id,
                admin_command_line(&admin_command, "explain", &[identity_id], &[]),
            )));
        }
    }
    link(store, identity_id, account_id, replace, &admin_command, now)
}

/// ` (ada@example.com)`: the userName of identity `id` in `directory`, to follow
/// its id in a refusal; nothing when the snapshot does not have it.
fn identity_named(directory: &crate::model::DirectorySnapshot, id: &str) -> String {
    directory
        .identities
        .iter()
        .find(|i| i.id == id)
        .map(|i| format!(" ({})", i.user_name))
        .unwrap_or_default()
}

/// ` (ada@example.com)`: the userName of account `id` in `workspace`, as
/// [`identity_named`].
fn account_named(workspace: &WorkspaceSnapshot, id: &str) -> String {
    workspace
        .accounts
        .iter()
        .find(|a| a.id == id)
        .map(|a| format!(" ({})", a.user_name))
        .unwrap_or_default()
}

/// `seatwarden link IDENTITY ACCOUNT`: a person's decision that workspace account
/// ACCOUNT belongs to directory identity IDENTITY. The way to resolve a disputed
/// match (an identity several accounts match, or an account several identities
/// match): a stored link comes first in matching. Both must be in the newest
/// stored snapshots. A link either of them already has to someone else is only
/// replaced with `replace`. Audited. Returns the links it replaced. A refusal
/// names the commands to run as `admin_command` (`report.admin_command`).
pub fn link(
    store: &mut Store,
    identity_id: &str,
    account_id: &str,
    replace: bool,
    admin_command: &str,
    now: DateTime<Utc>,
) -> Result<Vec<crate::store::StoredLink>, ApprovalError> {
    let refuse = |why: String| Err(ApprovalError::Link(why));
    let Some(run) = store.latest_snapshot_run()? else {
        return refuse(format!(
            "no run has stored snapshots yet: run `{admin_command} plan` first"
        ));
    };
    let directory = store.load_directory_snapshot(run)?.unwrap_or_default();
    // A disputed person deleted from the directory since: linking one of the
    // accounts is how a person settles which was theirs.
    let workspace = store.load_workspace_snapshot(run)?.unwrap_or_default();
    if !directory.identities.iter().any(|i| i.id == identity_id)
        && !store.remembers_disputed(identity_id)?
    {
        // `link ACCOUNT IDENTITY`: the order is the one mistake that leaves
        // both ids right, so say the command the person meant.
        if workspace.accounts.iter().any(|a| a.id == identity_id)
            && directory.identities.iter().any(|i| i.id == account_id)
        {
            return refuse(format!(
                "{identity_id:?} is a workspace account and {account_id:?} a directory \
                 identity: `link` takes the identity first, `{}`",
                admin_command_line(admin_command, "link", &[account_id, identity_id], &[])
            ));
        }
        return refuse(format!(
            "identity {identity_id:?} is not in the newest directory snapshot (run {run}); \
             `{admin_command} explain` finds a person's id"
        ));
    }
    if !workspace.accounts.iter().any(|a| a.id == account_id) {
        return refuse(format!(
            "account {account_id:?} is not in the newest workspace snapshot (run {run})"
        ));
    }
    let links = store.links()?;
    if links
        .iter()
        .any(|l| l.identity_id == identity_id && l.account_id == account_id)
    {
        return Ok(Vec::new());
    }
    let replaced: Vec<crate::store::StoredLink> = links
        .into_iter()
        .filter(|l| l.identity_id == identity_id || l.account_id == account_id)
        .collect();
    if !replaced.is_empty() && !replace {
        // What moving each link does, named: "pass --replace" alone led an operator
        // who mistyped an id to take a colleague's account (projects and all) away
        // from them, as the unlinked match's refusal in `link_checked` warns.
        let person = |id: &str| identity_named(&directory, id);
        let account = |id: &str| account_named(&workspace, id);
        let existing: Vec<String> = replaced
            .iter()
            .map(|l| {
                if l.account_id == account_id {
                    format!(
                        "account {}{} is linked to identity {}{}: moved, the next reconcile \
                         would rename it to {identity_id}'s userName and give {} a new, empty \
                         account",
                        l.account_id,
                        account(&l.account_id),
                        l.identity_id,
                        person(&l.identity_id),
                        l.identity_id
                    )
                } else {
                    format!(
                        "identity {}{} is linked to account {}{}: moved, that account is \
                         matched afresh by the next run",
                        l.identity_id,
                        person(&l.identity_id),
                        l.account_id,
                        account(&l.account_id)
                    )
                }
            })
            .collect();
        return refuse(format!(
            "already linked: {}. Check the ids (`{}` shows the accounts that may be theirs); \
             if the link is right all the same, pass --replace: `{}`",
            existing.join("; "),
            admin_command_line(admin_command, "explain", &[identity_id], &[]),
            admin_command_line(
                admin_command,
                "link",
                &[identity_id, account_id],
                &["--replace"]
            )
        ));
    }
    // One transaction: the link, the ledger changes and the audit row are one
    // decision. Committed apart, an audit row refused (a full disk) left the link
    // stored and the episodes moved with nobody named, the command failed.
    store.batch(|store| {
        store.upsert_links_in_batch(
            &[NewLink {
                identity_id: identity_id.to_owned(),
                account_id: account_id.to_owned(),
                method: crate::model::LinkMethod::Manual,
            }],
            now,
        )?;
        // An open deprovision of this person deactivates the account now linked, not
        // the one a wrong match had given them (which would leave theirs active and
        // close the episode as verified).
        let user_name = workspace
            .accounts
            .iter()
            .find(|a| a.id == account_id)
            .map(|a| a.user_name.clone())
            .unwrap_or_default();
        // And a person the account was taken from must not have it deactivated by an
        // episode of theirs: it waits without an account for the next reconcile's match.
        for episode in store.open_deprovisions()? {
            if episode.identity_id == identity_id {
                if episode.account_id.as_deref() != Some(account_id) {
                    store.deprovision_account(episode.id, Some(account_id), &user_name)?;
                }
                // The hold waited for this very choice: the retry job may deactivate
                // the account now (through the guard, as any other), not after the
                // re-check time or the next reconcile.
                if episode
                    .held
                    .as_deref()
                    .is_some_and(|held| held.starts_with(crate::sweep::DISPUTED_HOLD))
                {
                    store.deprovision_released(episode.id)?;
                }
            } else if episode.account_id.as_deref() == Some(account_id) {
                store.deprovision_account(episode.id, None, &episode.user_name)?;
            }
        }
        let mut detail = linked_detail(identity_id, account_id);
        for old in &replaced {
            detail.push_str(&format!(
                "; replaced identity {} ↔ account {}",
                old.identity_id, old.account_id
            ));
        }
        safety::audit(store, "link", None, detail, now)
    })?;
    Ok(replaced)
}

/// How the audit trail words a `link` (replaced links follow it): what `explain`
/// looks for to say who linked an account by hand.
pub fn linked_detail(identity_id: &str, account_id: &str) -> String {
    format!("linked identity {identity_id} to account {account_id}")
}

/// What `seatwarden unlink` did: the link it removed, and what the next run
/// does with the account and the person ([`crate::explain::AfterUnlink`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlinked {
    pub link: crate::store::StoredLink,
    /// What the next run does with the account ([`crate::explain::AfterUnlink::account`]).
    pub account: String,
    /// What it does with the person, named ([`crate::explain::AfterUnlink::person`]).
    pub person: String,
}

/// How the audit trail words an `unlink`.
pub fn unlinked_detail(identity_id: &str, account_id: &str) -> String {
    format!("unlinked identity {identity_id} from account {account_id}")
}

/// `seatwarden unlink ACCOUNT`: the undo of [`link`]. Removes the stored link
/// of workspace account ACCOUNT (made by `link`, or a match a reconcile stored),
/// so the next run matches it by the rules again (`externalId`, userName,
/// email), and says what that run does with the account and the person
/// ([`crate::explain::after_unlink`]). Refused, with what to do instead, when:
/// the account has no stored link (or none is stored and it is not in the newest
/// snapshot); a rule matches it to the same person again (the next reconcile
/// would store the link anew: the unlink would be undone unseen); or the next
/// run deprovisions it as the person's (they lost access, or an open
/// deprovision names it) and, unlinked, it would stay active — unlinking a
/// leaver's account must not be a way to keep their access. An account
/// protected by its own userName stays protected: the plan judges it by that
/// name, linked or not. Open deprovisions of the person that named the account
/// no longer do (they wait for the next reconcile's match, as after `link
/// --replace`). Audited, in the same transaction as the link removal and the
/// ledger change: stored whole or not at all.
pub fn unlink(
    config: &Config,
    store: &mut Store,
    account_id: &str,
    now: DateTime<Utc>,
) -> Result<Unlinked, ApprovalError> {
    let admin_command = config.admin_command();
    let refuse = |why: String| Err(ApprovalError::Link(why));
    let Some(run) = store.latest_snapshot_run()? else {
        return refuse(format!(
            "no run has stored snapshots yet: run `{admin_command} plan` first"
        ));
    };
    let workspace = store.load_workspace_snapshot(run)?.unwrap_or_default();
    let in_snapshot = workspace.accounts.iter().any(|a| a.id == account_id);
    let Some(link) = store
        .links()?
        .into_iter()
        .find(|l| l.account_id == account_id)
    else {
        if !in_snapshot {
            // A person's id given for their account's: name the account(s)
            // linked to them, the id `unlink` takes.
            let linked: Vec<String> = store
                .links()?
                .into_iter()
                .filter(|l| l.identity_id == account_id)
                .map(|l| l.account_id)
                .collect();
            if !linked.is_empty() {
                let commands: Vec<String> = linked
                    .iter()
                    .map(|account| {
                        format!(
                            "`{}`",
                            admin_command_line(&admin_command, "unlink", &[account], &[])
                        )
                    })
                    .collect();
                return refuse(format!(
                    "{account_id:?} is a directory identity's id, not a workspace account's: \
                     `unlink` takes the account. Linked to it: {}",
                    commands.join(", ")
                ));
            }
            return refuse(format!(
                "account {account_id:?} is not in the newest workspace snapshot (run {run}) \
                 and no link names it: check the id (`{admin_command} explain ACCOUNT` takes \
                 an account's id or userName)"
            ));
        }
        return refuse(format!(
            "account {account_id}{} has no stored link: nothing to undo. Until a reconcile \
             links it, a rule may match it to someone each run (`{}` says whom and by \
             what); `{}` gives it to a person",
            account_named(&workspace, account_id),
            admin_command_line(&admin_command, "explain", &[account_id], &[]),
            admin_command_line(&admin_command, "link", &["IDENTITY", account_id], &[])
        ));
    };
    let after = crate::explain::after_unlink(config, store, &link, now).map_err(|e| match e {
        crate::explain::ExplainError::Store(e) => ApprovalError::Store(e),
        crate::explain::ExplainError::Config(e) => ApprovalError::Config(e),
        other => ApprovalError::Link(other.to_string()),
    })?;
    let directory = store.load_directory_snapshot(run)?.unwrap_or_default();
    let person = identity_named(&directory, &link.identity_id);
    let account = account_named(&workspace, account_id);
    if let Some(rule) = after.same_again {
        return refuse(format!(
            "account {account_id}{account} matches identity {}{person} by {rule}: unlinked, \
             the next reconcile would match it to them again and store the link anew, so \
             nothing would change. If the account is someone else's, `{}` gives it to \
             them; if it is nobody's, change its {rule} (in the workspace, or the person's \
             in the directory) first",
            link.identity_id,
            admin_command_line(
                &admin_command,
                "link",
                &["OWNER", account_id],
                &["--replace"]
            )
        ));
    }
    let episodes: Vec<crate::sla::LedgerEntry> = store
        .open_deprovisions()?
        .into_iter()
        .filter(|e| e.account_id.as_deref() == Some(account_id))
        .collect();
    let active = workspace
        .accounts
        .iter()
        .any(|a| a.id == account_id && a.active);
    let open = episodes
        .first()
        .filter(|_| active && !after.deprovisioned)
        .map(|e| {
            format!(
                "their open deprovision (#{}: {}) deactivates it",
                e.id, e.reason
            )
        });
    let due = after
        .deprovision_dropped
        .as_ref()
        .map(|action| format!("the next run deprovisions it ({action})"))
        .or(open);
    if let Some(due) = due {
        return refuse(format!(
            "identity {}{person} lost access and account {account_id}{account} is theirs by \
             this link: {due}. Unlinked, it would stay active ({}). If the account is \
             someone else's, `{}` gives it to them; if it is the person's or nobody's, let \
             the deprovision take it",
            link.identity_id,
            after.account,
            admin_command_line(
                &admin_command,
                "link",
                &["OWNER", account_id],
                &["--replace"]
            )
        ));
    }
    // One transaction: the link removal, the ledger change and the audit row are
    // one decision. Committed apart, an audit row refused (a full disk) left the
    // link gone and the episode changed with nobody named, the command failed.
    store.batch(|store| {
        store.remove_link_to_account(account_id)?;
        // An open deprovision of the person no longer deactivates this account: it
        // waits, without one, for the next reconcile's match (as after `link --replace`).
        for episode in &episodes {
            store.deprovision_account(episode.id, None, &episode.user_name)?;
        }
        safety::audit(
            store,
            "unlink",
            None,
            unlinked_detail(&link.identity_id, account_id),
            now,
        )
    })?;
    Ok(Unlinked {
        link,
        account: after.account,
        person: after.person,
    })
}

/// `seatwarden resume`: closes the circuit breaker now (audited). Returns whether
/// it was open.
pub fn resume(store: &mut Store, now: DateTime<Utc>) -> Result<bool, ApprovalError> {
    let was_open = store.circuit()?.opened_at.is_some();
    store.set_circuit(&crate::circuit::CircuitRecord::default())?;
    safety::audit(
        store,
        "resume",
        None,
        if was_open {
            "closed the circuit breaker".to_owned()
        } else {
            "the circuit breaker was already closed".to_owned()
        },
        now,
    )?;
    Ok(was_open)
}

/// Brings the stored report of `run` in line with its journal after an approval;
/// the commands it names are run as `admin_command` (`report.admin_command`).
fn refresh_report(store: &mut Store, run: RunId, admin_command: &str) -> Result<(), ApprovalError> {
    let Some(json) = store.report(run)? else {
        return Ok(());
    };
    let Ok(mut report) = Report::from_json(&json) else {
        return Ok(());
    };
    let journal = store.journal(run)?;
    let decisions = store.decisions_with_detail(run)?;
    // Rejected by a newer run's `reject` ([`reject_earlier_holds`]): named, as
    // nobody ran `reject` of this run.
    let newer: HashMap<u32, RunId> = store
        .newer_rejections(run)?
        .into_iter()
        .map(|r| (r.seq, r.run))
        .collect();
    // Reports stored before actions carried `waiting` have none set.
    let flagged = report.actions.iter().any(|a| a.waiting);
    for outcome in &mut report.actions {
        if let Some(entry) = journal.iter().find(|e| e.action.seq == outcome.seq) {
            // A held action someone decided on waits for nobody any more: the report
            // and the digest stop asking for an approval that would be refused.
            // So does one an approval cut off approved and never sent.
            let unsent = matches!(entry.state, ActionState::Held | ActionState::Planned)
                || not_reached(entry);
            let decided = match (unsent, decisions.get(&outcome.seq)) {
                (true, Some((Decision::Rejected, _))) => Some(match newer.get(&outcome.seq) {
                    Some(newer) => format!(
                        "rejected ({admin_command} reject {newer}, of run {newer}'s hold of the \
                         same): {}",
                        crate::model::REJECTED_NEVER_APPLIED
                    ),
                    None => format!(
                        "rejected ({admin_command} reject): {}",
                        crate::model::REJECTED_NEVER_APPLIED
                    ),
                }),
                // What the approval's re-check found ("the group no longer
                // exists" is not "already done").
                (true, Some((Decision::Obsolete, why))) => Some(format!(
                    "{}{}; nothing was sent",
                    crate::model::OBSOLETE_WHEN_APPROVED,
                    why.as_deref().unwrap_or("the workspace already showed it")
                )),
                _ => None,
            };
            outcome.outcome = if decided.is_some() {
                Outcome::NotRun
            } else {
                Outcome::journaled(entry.state, entry.last_error.as_deref())
            };
            outcome.attempts = entry.attempts;
            if let Some(why) = decided {
                outcome.error = Some(why);
                outcome.waiting = false;
            } else if entry.state == ActionState::Held
                && let Some(refused) = &entry.last_error
            {
                // Why it waited, and why the last approval did not release it.
                let hold = entry
                    .action
                    .held
                    .as_ref()
                    .map(|hold| hold.describe(admin_command).to_string());
                outcome.error = Some(match hold {
                    Some(hold) => format!("{hold}; {refused}"),
                    None => refused.clone(),
                });
                // A person has to decide now, whatever it first waited for.
                outcome.waiting = false;
            } else if entry.state != ActionState::Held {
                outcome.error = entry.last_error.clone();
                outcome.waiting = false;
            }
        }
    }
    let count = |o: Outcome| report.actions.iter().filter(|a| a.outcome == o).count();
    let held = count(Outcome::Held);
    report.safety.actions_waiting = if flagged || report.safety.actions_waiting == 0 {
        report
            .actions
            .iter()
            .filter(|a| a.outcome == Outcome::Held && a.waiting)
            .count()
    } else {
        // A report stored before actions carried `waiting`: at most what is held.
        report.safety.actions_waiting.min(held)
    };
    let s = &mut report.summary;
    s.actions_applied = count(Outcome::Applied);
    s.actions_failed = count(Outcome::Failed);
    s.actions_held = held;
    s.actions_not_run = count(Outcome::NotRun);
    s.converged = s.actions_applied == report.actions.len();
    store.save_report(run, &report.to_stored_json())?;
    Ok(())
}

/// Why `action` is refused when its account's stored link names another
/// identity than the one it was planned for (or any, for an account nobody's
/// link named): `seatwarden link … --replace` moved it since the run, most
/// often because the person deciding found the account was someone else's.
/// Sent, a deactivation, deletion, role change or rename planned for the old
/// owner would fall on the new one (an active person's account deactivated).
fn relinked(
    action: &Action,
    linked: &HashMap<String, String>,
    admin_command: &str,
) -> Option<String> {
    let account = match &action.kind {
        ActionKind::Deactivate { account_id }
        | ActionKind::Delete { account_id, .. }
        | ActionKind::SetRole { account_id, .. }
        | ActionKind::UpdateAttributes { account_id, .. } => account_id,
        _ => return None,
    };
    let now = linked.get(account)?;
    if action.identity_id.as_ref() == Some(now) {
        return None;
    }
    let planned_for = match &action.identity_id {
        Some(identity) => format!("identity {}", crate::report::printable(identity, false)),
        None => "an account no identity was linked to".to_owned(),
    };
    Some(format!(
        "account {} is linked to identity {} now (`{admin_command} link` since the run), \
         and the run planned this for {planned_for}; a new run decides what the account needs",
        crate::report::printable(account, false),
        crate::report::printable(now, false),
    ))
}

/// The accounts a held action takes access from, each with the person it is
/// taken from (the action's, else the one the account is linked to now).
fn taken_from<'e>(
    action: &'e Action,
    linked: &'e HashMap<String, String>,
) -> Vec<(&'e str, Option<&'e str>)> {
    let person = |account: &str| -> Option<&'e str> {
        action
            .identity_id
            .as_deref()
            .or_else(|| linked.get(account).map(String::as_str))
    };
    match &action.kind {
        ActionKind::Deactivate { account_id }
        | ActionKind::Delete { account_id, .. }
        | ActionKind::SetRole { account_id, .. } => vec![(account_id.as_str(), person(account_id))],
        ActionKind::RemoveMembers { members, .. } => members
            .iter()
            .map(|member| {
                (
                    member.as_str(),
                    linked.get(member.as_str()).map(String::as_str),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A read of the directory [`claimed_since`] judges by, and how a refusal names it.
struct ClaimRead<'r> {
    read: &'r DirectorySnapshot,
    source: String,
}

/// The held actions that would take an account from a person who no longer has
/// access (a leaver, or nobody: an unmatched account) while someone else with
/// access in one of `reads` is whom the plan's matching rules
/// ([`crate::plan::claims`]) find for that account now, and the run's own read
/// did not find so: the leaver rehired under a new directory id (Okta and Entra
/// ID make a new user object, under the same login and email), or someone given
/// their address. `back` sees only the same id come back; approved, such an
/// action would deactivate or delete the account, and its projects, of the
/// person the directory has now. By seq, with why: the next reconcile, planned
/// with that person in view, decides. `then`: the run's own directory read and
/// workspace snapshot, when stored; without them, everyone found is new.
#[allow(clippy::too_many_arguments)]
fn claimed_since<'r>(
    held: &[JournalEntry],
    workspace: &WorkspaceSnapshot,
    linked: &HashMap<String, String>,
    reads: &[ClaimRead<'r>],
    then: Option<(&'r DirectorySnapshot, &'r WorkspaceSnapshot)>,
    policy: &crate::policy::PolicySettings,
    run: RunId,
    admin_command: &str,
) -> BTreeMap<u32, String> {
    let mut refused = BTreeMap::new();
    let accounts: HashMap<&str, &Account> = workspace
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    // Directory id → whether they have access, of one read.
    let access_of = |read: &'r DirectorySnapshot| -> HashMap<&'r str, bool> {
        let mut access = HashMap::with_capacity(read.identities.len());
        for identity in &read.identities {
            access
                .entry(identity.id.as_str())
                .or_insert_with(|| crate::policy::access_loss(identity, policy).is_none());
        }
        access
    };
    // Every account a held action would take from someone, as it is now.
    let mut asked: Vec<(u32, &str, Option<&str>)> = Vec::new();
    for entry in held.iter().filter(|e| takes_access_away(&e.action.kind)) {
        for (account, person) in taken_from(&entry.action, linked) {
            asked.push((entry.action.seq, account, person));
        }
    }
    let now_accounts: Vec<&Account> = {
        let mut ids: Vec<&str> = asked.iter().map(|&(_, account, _)| account).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| accounts.get(id).copied())
            .collect()
    };
    if now_accounts.is_empty() {
        return refused;
    }
    // Whom the run's own read found with access for each account as the run
    // saw it: the plan decided with them in view, and the next would again.
    let mut seen_then: HashMap<&str, HashSet<&str>> = HashMap::new();
    if let Some((directory, snapshot)) = then {
        let access = access_of(directory);
        let by_id: HashMap<&str, &Account> = snapshot
            .accounts
            .iter()
            .map(|a| (a.id.as_str(), a))
            .collect();
        let as_then: Vec<&Account> = now_accounts
            .iter()
            .filter_map(|now| by_id.get(now.id.as_str()).copied())
            .collect();
        for (account, claim) in as_then.iter().zip(crate::plan::claims(directory, &as_then)) {
            if let Some((_, people)) = claim {
                seen_then.entry(account.id.as_str()).or_default().extend(
                    people
                        .into_iter()
                        .filter(|p| access.get(p.id.as_str()) == Some(&true))
                        .map(|p| p.id.as_str()),
                );
            }
        }
    }
    for ClaimRead { read, source } in reads {
        let access = access_of(read);
        let with_access = |id: &str| access.get(id) == Some(&true);
        let found: HashMap<&str, (LinkMethod, Vec<&Identity>)> = now_accounts
            .iter()
            .zip(crate::plan::claims(read, &now_accounts))
            .filter_map(|(account, claim)| Some((account.id.as_str(), claim?)))
            .collect();
        for &(seq, account_id, person) in &asked {
            if refused.contains_key(&seq) {
                continue;
            }
            let Some((method, people)) = found.get(account_id) else {
                continue;
            };
            // The person it is taken from still has access in this read: not
            // theirs to lose (`back` and `no_longer_asked` judge that).
            if person.is_some_and(with_access) {
                continue;
            }
            let seen = seen_then.get(account_id);
            let Some(claimant) = people.iter().find(|p| {
                Some(p.id.as_str()) != person
                    && with_access(&p.id)
                    && seen.is_none_or(|seen| !seen.contains(p.id.as_str()))
            }) else {
                continue;
            };
            let user_name = accounts
                .get(account_id)
                .map_or("", |a| a.user_name.as_str());
            // A stored link to someone else outweighs matching in the plan: the
            // next reconcile plans this again, and the operator is the one to move it.
            let next = match linked.get(account_id) {
                Some(linked_to) if *linked_to != claimant.id => format!(
                    "Its stored link is still to identity {}, so the next reconcile plans this \
                     again: if the account is theirs, `{}` gives it to them first",
                    crate::report::printable(linked_to, false),
                    admin_command_line(
                        admin_command,
                        "link",
                        &[claimant.id.as_str(), account_id],
                        &["--replace"]
                    )
                ),
                _ => "The next reconcile decides whose the account is".to_owned(),
            };
            refused.insert(
                seq,
                format!(
                    "the directory has {} (identity {}) with access now ({source}), whom \
                     matching finds for account {} ({}) by {}, and run {run}'s read did not: \
                     a leaver rehired under a new id, or someone given their address? \
                     {next}",
                    crate::report::printable(&claimant.user_name, false),
                    crate::report::printable(&claimant.id, false),
                    crate::report::printable(account_id, false),
                    crate::report::printable(user_name, false),
                    match method {
                        LinkMethod::ExternalId => "externalId",
                        LinkMethod::UserName => "userName",
                        _ => "email",
                    },
                ),
            );
        }
    }
    refused
}

/// The held role changes and membership removals of `run` the directory no
/// longer asks for, by seq, with why: judged with the mappings configured now
/// against the directory as `approve` read it now, else the newest complete
/// directory read the source check did not refuse, a later run's (a `plan`
/// included; refused ones passed over) or else `run`'s own. A held mass demotion or
/// removal is most often a mistake fixed since (a mapping's misspelt group, a
/// directory group emptied by accident): approving the run afterwards would
/// otherwise take away, from the stale plan, access the directory gives again,
/// and the next reconcile would hand it back. A role change is refused when the
/// person, still active and in scope, is given another role now; a removal when
/// one of its members is granted the group now.
#[allow(clippy::too_many_arguments)]
fn no_longer_asked(
    config: &Config,
    store: &Store,
    run: RunId,
    held: &[JournalEntry],
    workspace: &WorkspaceSnapshot,
    linked: &HashMap<String, String>,
    fresh: Option<(&DirectorySnapshot, DateTime<Utc>)>,
    read_alongside: &[(RunId, DirectorySnapshot, DateTime<Utc>)],
    tz: chrono_tz::Tz,
) -> Result<BTreeMap<u32, String>, ApprovalError> {
    let mut outdated = BTreeMap::new();
    if !held.iter().any(|e| {
        matches!(
            e.action.kind,
            ActionKind::SetRole { .. } | ActionKind::RemoveMembers { .. }
        )
    }) {
        return Ok(outdated);
    }
    let stored;
    let (directory, source) = match fresh {
        Some((directory, read_at)) => (
            directory,
            format!(
                "the directory as read now ({}), mapped as configured now,",
                crate::report::local_time(read_at, tz)
            ),
        ),
        None => {
            let read = match store.newest_complete_directory_after(run)? {
                Some(newer) => store.load_directory_snapshot(newer)?.map(|d| (newer, d)),
                None => store
                    .load_directory_snapshot(run)?
                    .filter(|d| d.complete)
                    .map(|d| (run, d)),
            };
            let Some((read_by, directory)) = read else {
                return Ok(outdated);
            };
            let source = match store.run(read_by)? {
                Some(record) => format!(
                    "the directory read by run {read_by} ({}), mapped as configured now,",
                    crate::report::local_time(record.started_at, tz)
                ),
                None => format!("the directory read by run {read_by}, mapped as configured now,"),
            };
            stored = directory;
            (&stored, source)
        }
    };
    no_longer_asked_by(
        config,
        directory,
        &source,
        held,
        workspace,
        linked,
        &mut outdated,
    );
    // Reads that may be as new as `fresh` (`ReadAhead::at_work`): what one of
    // them no longer asks for is refused too, saying which read.
    for (by, directory, read_at) in read_alongside {
        let source = format!(
            "the directory read by run {by} ({}), mapped as configured now,",
            crate::report::local_time(*read_at, tz)
        );
        no_longer_asked_by(
            config,
            directory,
            &source,
            held,
            workspace,
            linked,
            &mut outdated,
        );
    }
    Ok(outdated)
}

/// The complete reads of `runs` the source check has not refused, each with
/// when its run began: the reads [`approve_read_ahead`] takes beside its own.
fn reads_of(
    store: &Store,
    runs: &[RunId],
) -> Result<Vec<(RunId, DirectorySnapshot, DateTime<Utc>)>, StoreError> {
    let mut reads = Vec::new();
    for &run in runs {
        if store.directory_refused(run)? {
            continue;
        }
        let Some(read) = store.load_directory_snapshot(run)?.filter(|d| d.complete) else {
            continue;
        };
        let Some(record) = store.run(run)? else {
            continue;
        };
        reads.push((run, read, record.started_at));
    }
    Ok(reads)
}

/// [`no_longer_asked`] by one read of the directory (`source` says which):
/// the held role changes and removals it no longer asks for, added to
/// `outdated` unless an earlier read refused them already.
fn no_longer_asked_by(
    config: &Config,
    directory: &DirectorySnapshot,
    source: &str,
    held: &[JournalEntry],
    workspace: &WorkspaceSnapshot,
    linked: &HashMap<String, String>,
    outdated: &mut BTreeMap<u32, String>,
) {
    let desired = crate::policy::desired_state(directory, &config.policy_settings());
    // A held mass removal names its members by userName: looked up once, not
    // one scan of the workspace per member.
    let user_names: HashMap<&str, &str> = workspace
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a.user_name.as_str()))
        .collect();
    for entry in held {
        match &entry.action.kind {
            ActionKind::SetRole { account_id, to, .. } => {
                let identity = entry
                    .action
                    .identity_id
                    .as_ref()
                    .or_else(|| linked.get(account_id));
                if let Some(now_role) = identity
                    .and_then(|id| desired.active.get(id))
                    .and_then(|d| d.spec.role)
                    && now_role != *to
                {
                    outdated.entry(entry.action.seq).or_insert_with(|| {
                        format!(
                            "the directory no longer asks for it: {source} gives them \
                             {now_role}, not {to}; a new run decides what they need"
                        )
                    });
                }
            }
            ActionKind::RemoveMembers { group, members } => {
                let name = group_key(group.display_name());
                let granted: Vec<&str> = members
                    .iter()
                    .filter(|member| {
                        linked
                            .get(member.as_str())
                            .and_then(|id| desired.active.get(id))
                            .is_some_and(|d| d.groups.iter().any(|g| group_key(g) == name))
                    })
                    .map(|member| {
                        user_names
                            .get(member.as_str())
                            .copied()
                            .unwrap_or(member.as_str())
                    })
                    .collect();
                if !granted.is_empty() {
                    outdated.entry(entry.action.seq).or_insert_with(|| {
                        format!(
                            "the directory no longer asks for it: {source} grants {} to \
                             {} of its members ({}); a new run decides who loses it",
                            group.display_name(),
                            granted.len(),
                            few_names(&granted)
                        )
                    });
                }
            }
            _ => {}
        }
    }
}

/// The first three of `names`, comma-separated, and how many more there are.
fn few_names(names: &[&str]) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<String> = names
        .iter()
        .take(SHOWN)
        .map(|n| crate::report::printable(n, false).to_string())
        .collect();
    match names.len().saturating_sub(SHOWN) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

/// Whether `kind`, held, would take access away: what [`approve`] reads the
/// directory again for, to see whether the person still lacks it.
fn takes_access_away(kind: &ActionKind) -> bool {
    kind.is_deprovision()
        || matches!(
            kind,
            ActionKind::SetRole { .. } | ActionKind::RemoveMembers { .. }
        )
}

/// The directory as `approve` read it, if it can stand as evidence: complete,
/// and not refused by the source check a reconcile applies (empty, or shrunk
/// past `safety.max_directory_shrink_percent` from [`safety::shrink_baseline_at`]).
/// Otherwise why not, in a few words.
fn judge_fresh_directory(
    config: &Config,
    store: &Store,
    read: Result<DirectorySnapshot, crate::directory::DirectoryError>,
    now: DateTime<Utc>,
) -> Result<Result<DirectorySnapshot, String>, ApprovalError> {
    let snapshot = match read {
        Ok(snapshot) => snapshot,
        Err(e) => return Ok(Err(format!("the directory could not be read now ({e})"))),
    };
    if !snapshot.complete {
        return Ok(Err(
            "the directory read now was incomplete (someone only missing from it looks gone)"
                .to_owned(),
        ));
    }
    if let Err(fault) = guard::check_source(
        snapshot.identities.len(),
        safety::shrink_baseline_at(store, now)?,
        config.safety.max_directory_shrink_percent,
    ) {
        return Ok(Err(format!(
            "the directory read now was refused as a source fault ({fault})"
        )));
    }
    Ok(Ok(snapshot))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{DriftKind, Role, WorkspaceGroup};

    fn account(id: &str, active: bool, role: &str) -> Account {
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

    fn action(kind: ActionKind) -> Action {
        Action {
            seq: 0,
            kind,
            reason: DriftKind::StaleAccess,
            subject: "s".into(),
            identity_id: None,
            detail: String::new(),
            held: None,
        }
    }

    /// A leaver rehired under a new directory id (Okta and Entra ID make a new
    /// user object under the same login): a held deactivation, deletion, role
    /// change or membership removal of the account matching now finds for the
    /// new person is refused, naming them; one the run's own read had that
    /// person claiming already (its plan decided with them in view), one whose
    /// person still has access, and another's account, are not.
    #[test]
    fn a_held_action_on_an_account_someone_new_would_now_claim_is_refused() {
        let person = |id: &str, user_name: &str, status| crate::model::Identity {
            id: id.into(),
            user_name: user_name.into(),
            email: Some(user_name.into()),
            given_name: None,
            family_name: None,
            display_name: None,
            status,
            department: None,
            groups: Vec::new(),
        };
        let active = crate::model::IdentityStatus::Active;
        let mut ann = account("a1", false, "Editor");
        ann.user_name = "Ann@ex.com".into();
        ann.external_id = Some("00u1".into());
        let mut bob = account("a2", false, "Viewer");
        bob.external_id = Some("00u2".into());
        let workspace = WorkspaceSnapshot {
            accounts: vec![ann.clone(), bob],
            groups: Vec::new(),
        };
        let entry = |seq: u32, identity: Option<&str>, kind: ActionKind| JournalEntry {
            run: 7,
            action: Action {
                seq,
                identity_id: identity.map(Into::into),
                held: Some(HoldReason::LastOwner),
                ..action(kind)
            },
            state: ActionState::Held,
            attempts: 0,
            last_error: None,
            updated_at: Utc::now(),
        };
        let held = vec![
            entry(
                0,
                Some("00u1"),
                ActionKind::Delete {
                    account_id: "a1".into(),
                    deactivated_since: None,
                    frees_user_name: None,
                },
            ),
            entry(
                1,
                None,
                ActionKind::SetRole {
                    account_id: "a1".into(),
                    from: vec!["Editor".into()],
                    to: Role::Viewer,
                },
            ),
            entry(
                2,
                None,
                ActionKind::RemoveMembers {
                    group: GroupRef::Existing {
                        id: "g1".into(),
                        display_name: "Eng".into(),
                    },
                    members: vec!["a2".into(), "a1".into()],
                },
            ),
            entry(
                3,
                Some("00u2"),
                ActionKind::Deactivate {
                    account_id: "a2".into(),
                },
            ),
        ];
        let linked: HashMap<String, String> = [("a1".to_owned(), "00u1".to_owned())].into();
        // Ann left (deleted), and is back as 00u9 under her old login.
        let now = DirectorySnapshot {
            identities: vec![person("00u9", "ann@ex.com", active)],
            complete: true,
        };
        let reads = [ClaimRead {
            read: &now,
            source: "in the directory as read now, 09:00".into(),
        }];
        let policy = crate::policy::PolicySettings {
            scope_groups: Vec::new(),
            default_role: Role::Viewer,
            mappings: Vec::new(),
            manage_roles: true,
        };
        let judge = |then: Option<(&DirectorySnapshot, &WorkspaceSnapshot)>| {
            claimed_since(
                &held,
                &workspace,
                &linked,
                &reads,
                then,
                &policy,
                7,
                "seatwarden",
            )
        };
        let refused = judge(None);
        assert_eq!(refused.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            refused[&0],
            "the directory has ann@ex.com (identity 00u9) with access now (in the directory \
             as read now, 09:00), whom matching finds for account a1 (Ann@ex.com) by \
             userName, and run 7's read did not: a leaver rehired under a new id, or \
             someone given their address? Its stored link is still to identity 00u1, so the \
             next reconcile plans this again: if the account is theirs, \
             `seatwarden link 00u9 a1 --replace` gives it to them first"
        );

        // The run's own read had 00u9 already, with access: its plan decided
        // with them in view, and the next reconcile would plan the same.
        let then = DirectorySnapshot {
            identities: vec![person("00u9", "ann@ex.com", active)],
            complete: true,
        };
        assert_eq!(judge(Some((&then, &workspace))), BTreeMap::new());
        // Suspended then, active now: new.
        let suspended_then = DirectorySnapshot {
            identities: vec![person(
                "00u9",
                "ann@ex.com",
                crate::model::IdentityStatus::Suspended,
            )],
            complete: true,
        };
        assert_eq!(judge(Some((&suspended_then, &workspace))).len(), 3);
        // The account renamed onto their name since the run: new too.
        let mut as_then = workspace.clone();
        as_then.accounts[0].user_name = "ann.old@ex.com".into();
        assert_eq!(judge(Some((&then, &as_then))).len(), 3);

        // Ann herself still in the directory with access, her account naming
        // her: not hers to lose (`back` and `no_longer_asked` judge that), and
        // matching finds her first.
        let both = DirectorySnapshot {
            identities: vec![
                person("00u1", "ann.b@ex.com", active),
                person("00u9", "ann@ex.com", active),
            ],
            complete: true,
        };
        let reads = [ClaimRead {
            read: &both,
            source: "now".into(),
        }];
        let refused = claimed_since(
            &held,
            &workspace,
            &linked,
            &reads,
            None,
            &policy,
            7,
            "seatwarden",
        );
        assert_eq!(refused, BTreeMap::new());
    }

    /// An account the plan would take for the person (its userName the same
    /// but for case and white space at an end) makes a held create obsolete: sent,
    /// it would give them a second account.
    #[test]
    fn a_held_create_is_obsolete_when_an_account_matching_takes_for_it_exists() {
        let mut held = account("x", true, "Viewer");
        held.user_name = "Alice@ex.com ".into();
        let workspace = WorkspaceSnapshot {
            accounts: vec![held],
            groups: Vec::new(),
        };
        let create = action(ActionKind::CreateAccount {
            identity_id: "00u1".into(),
            spec: crate::model::AccountSpec {
                user_name: "alice@ex.com".into(),
                external_id: "00u1".into(),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                role: None,
            },
        });
        assert!(matches!(
            recheck(&create, &workspace, &Protected::default(), &BTreeMap::new()),
            Recheck::Obsolete(_)
        ));
    }

    /// A group the plan would take for the one a held create makes (its name the
    /// same but for case, in any script, or for how an accent is written) makes
    /// the create obsolete, as `MadeSince` finds it: sent, it would make a second
    /// group of that name, which the next plan disputes and stops managing.
    #[test]
    fn a_held_group_create_is_obsolete_when_a_group_matching_takes_for_it_exists() {
        let create = action(ActionKind::CreateGroup {
            display_name: "\u{c9}quipe Produit".into(),
        });
        for existing in ["\u{e9}quipe produit", "E\u{301}quipe Produit"] {
            let workspace = WorkspaceSnapshot {
                accounts: Vec::new(),
                groups: vec![WorkspaceGroup {
                    id: "g1".into(),
                    display_name: existing.into(),
                    members: Vec::new(),
                }],
            };
            assert!(
                matches!(
                    recheck(&create, &workspace, &Protected::default(), &BTreeMap::new()),
                    Recheck::Obsolete(_)
                ),
                "{existing:?}"
            );
        }
        // A look-alike outside ASCII is another group, as the plan matches them.
        let look_alike = WorkspaceSnapshot {
            accounts: Vec::new(),
            groups: vec![WorkspaceGroup {
                id: "g2".into(),
                display_name: "\u{212A}ey Holders".into(),
                members: Vec::new(),
            }],
        };
        let create = action(ActionKind::CreateGroup {
            display_name: "Key Holders".into(),
        });
        assert_eq!(
            recheck(
                &create,
                &look_alike,
                &Protected::default(),
                &BTreeMap::new()
            ),
            Recheck::Apply
        );
    }

    #[test]
    fn the_recheck_compares_with_the_workspace_now() {
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("on", true, "Editor"),
                account("off", false, "Editor"),
                account("vip", true, "Owner"),
            ],
            groups: vec![WorkspaceGroup {
                id: "g".into(),
                display_name: "G".into(),
                members: vec!["on".into()],
            }],
        };
        let none = Protected::default();
        let deactivate = |id: &str| {
            action(ActionKind::Deactivate {
                account_id: id.into(),
            })
        };
        assert_eq!(
            recheck(&deactivate("on"), &workspace, &none, &BTreeMap::new()),
            Recheck::Apply
        );
        assert!(matches!(
            recheck(&deactivate("off"), &workspace, &none, &BTreeMap::new()),
            Recheck::Obsolete(_)
        ));
        assert!(matches!(
            recheck(&deactivate("gone"), &workspace, &none, &BTreeMap::new()),
            Recheck::Obsolete(_)
        ));
        let protected = Protected::new(&["vip@*".to_owned()]);
        assert_eq!(
            recheck(&deactivate("vip"), &workspace, &protected, &BTreeMap::new()),
            Recheck::Refuse("vip@ex.com is protected".into())
        );
        let demote = |from: &str| {
            action(ActionKind::SetRole {
                account_id: "on".into(),
                from: vec![from.into()],
                to: Role::Viewer,
            })
        };
        assert_eq!(
            recheck(&demote("editor"), &workspace, &none, &BTreeMap::new()),
            Recheck::Apply
        );
        assert!(matches!(
            recheck(&demote("Owner"), &workspace, &none, &BTreeMap::new()),
            Recheck::Refuse(_)
        ));
        let remove = |member: &str| {
            action(ActionKind::RemoveMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "G".into(),
                },
                members: vec![member.into()],
            })
        };
        assert_eq!(
            recheck(&remove("on"), &workspace, &none, &BTreeMap::new()),
            Recheck::Apply
        );
        assert!(matches!(
            recheck(&remove("off"), &workspace, &none, &BTreeMap::new()),
            Recheck::Obsolete(_)
        ));
        let rename = |from: &str, to: &str| {
            action(ActionKind::UpdateAttributes {
                account_id: "on".into(),
                changes: vec![AttributeChange {
                    attribute: Attribute::UserName,
                    from: Some(from.into()),
                    to: Some(to.into()),
                }],
            })
        };
        assert_eq!(
            recheck(
                &rename("ON@ex.com", "new@ex.com"),
                &workspace,
                &none,
                &BTreeMap::new()
            ),
            Recheck::Apply
        );
        // Compared as the plan compares: É and é are one letter.
        let mut accented = workspace.clone();
        accented.accounts[0].user_name = "élodie@ex.com".into();
        assert_eq!(
            recheck(
                &rename("Élodie@ex.com", "new@ex.com"),
                &accented,
                &none,
                &BTreeMap::new()
            ),
            Recheck::Apply
        );
        assert_eq!(
            recheck(
                &rename("old@ex.com", "on@ex.com"),
                &workspace,
                &none,
                &BTreeMap::new()
            ),
            Recheck::Obsolete("the account has these values already".into()),
            "already renamed"
        );
        assert_eq!(
            recheck(
                &rename("old@ex.com", "new@ex.com"),
                &workspace,
                &none,
                &BTreeMap::new()
            ),
            Recheck::Refuse(
                "the userName changed since the plan (was old@ex.com, now on@ex.com)".into()
            )
        );
    }

    /// A held update or membership the workspace already shows is obsolete: judged
    /// by the workspace read now, not by the run's snapshot.
    #[test]
    fn a_held_change_the_workspace_already_shows_is_obsolete() {
        let mut on = account("on", true, "Editor");
        on.display_name = Some("Julia Hart".into());
        let workspace = WorkspaceSnapshot {
            accounts: vec![on, account("off", false, "Editor")],
            groups: vec![WorkspaceGroup {
                id: "g".into(),
                display_name: "G".into(),
                members: vec!["on".into()],
            }],
        };
        let none = Protected::default();
        let rename_display = |to: &str| {
            action(ActionKind::UpdateAttributes {
                account_id: "on".into(),
                changes: vec![AttributeChange {
                    attribute: Attribute::DisplayName,
                    from: Some("Julia Smith-Old".into()),
                    to: Some(to.into()),
                }],
            })
        };
        assert!(matches!(
            recheck(
                &rename_display("Julia Hart"),
                &workspace,
                &none,
                &BTreeMap::new()
            ),
            Recheck::Obsolete(_)
        ));
        assert_eq!(
            recheck(
                &rename_display("J. Hart"),
                &workspace,
                &none,
                &BTreeMap::new()
            ),
            Recheck::Apply
        );
        let add = |member: &str| {
            action(ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "g".into(),
                    display_name: "G".into(),
                },
                members: vec![AccountRef::Existing { id: member.into() }],
            })
        };
        assert!(matches!(
            recheck(&add("on"), &workspace, &none, &BTreeMap::new()),
            Recheck::Obsolete(_)
        ));
        assert_eq!(
            recheck(&add("off"), &workspace, &none, &BTreeMap::new()),
            Recheck::Apply
        );
    }

    /// A held deletion after the retention period is approved only while the
    /// account is still deactivated and its clock still runs from the same start.
    #[test]
    fn a_retention_delete_is_refused_once_the_account_is_back_or_its_clock_restarted() {
        let workspace = WorkspaceSnapshot {
            accounts: vec![
                account("off", false, "Editor"),
                account("on", true, "Editor"),
            ],
            groups: Vec::new(),
        };
        let since = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let delete = |id: &str| {
            action(ActionKind::Delete {
                account_id: id.into(),
                deactivated_since: Some(since),
                frees_user_name: None,
            })
        };
        let none = Protected::default();
        let clocks: BTreeMap<String, DateTime<Utc>> =
            [("off".to_owned(), since), ("on".to_owned(), since)].into();
        assert_eq!(
            recheck(&delete("off"), &workspace, &none, &clocks),
            Recheck::Apply
        );
        let Recheck::Refuse(why) = recheck(&delete("on"), &workspace, &none, &clocks) else {
            panic!("an active account is never deleted after retention");
        };
        assert!(why.contains("active again"), "{why}");
        let restarted: BTreeMap<String, DateTime<Utc>> =
            [("off".to_owned(), since + chrono::TimeDelta::days(1))].into();
        for clocks in [restarted, BTreeMap::new()] {
            let Recheck::Refuse(why) = recheck(&delete("off"), &workspace, &none, &clocks) else {
                panic!("a restarted or forgotten clock no longer justifies the delete");
            };
            assert!(why.contains("retention clock restarted"), "{why}");
        }
        assert!(matches!(
            recheck(&delete("gone"), &workspace, &none, &clocks),
            Recheck::Obsolete(_)
        ));
        // Deleting at once (no retention) is for active accounts too.
        let at_once = action(ActionKind::Delete {
            account_id: "on".into(),
            deactivated_since: None,
            frees_user_name: None,
        });
        assert_eq!(
            recheck(&at_once, &workspace, &none, &BTreeMap::new()),
            Recheck::Apply
        );
    }

    #[test]
    fn a_held_delete_is_judged_by_the_deletion_rules_configured_now() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let days = |n: u64| std::time::Duration::from_secs(n * 86_400);
        let since = Some(now - chrono::TimeDelta::days(40));
        assert!(deletion_refused(None, since, now).is_some(), "deletion off");
        assert!(deletion_refused(None, None, now).is_some(), "deletion off");
        assert_eq!(deletion_refused(Some(days(30)), since, now), None);
        assert!(
            deletion_refused(Some(days(90)), since, now).is_some(),
            "period raised"
        );
        assert!(
            deletion_refused(Some(days(30)), None, now).is_some(),
            "an old delete-at-once under a retention period"
        );
        assert_eq!(deletion_refused(Some(days(0)), None, now), None);
    }

    /// A held action as a run's stored report lists it.
    fn held_outcome(seq: u32, op: &str, waiting: bool) -> crate::report::ActionOutcome {
        crate::report::ActionOutcome {
            seq,
            op: op.into(),
            reason: DriftKind::StaleAccess,
            subject: "s".into(),
            detail: String::new(),
            outcome: Outcome::Held,
            attempts: 0,
            error: None,
            waiting,
            settle_window: None,
            deactivated_since: None,
        }
    }

    /// The stored report of reconcile `run`, which held `actions` (those
    /// `waiting` for the settle window counted as such).
    fn held_report(
        run: RunId,
        at: DateTime<Utc>,
        actions: Vec<crate::report::ActionOutcome>,
    ) -> Report {
        Report {
            schema_version: crate::report::SCHEMA_VERSION,
            run_id: run,
            mode: "reconcile".into(),
            started_at: at,
            finished_at: at,
            directory: String::new(),
            workspace: String::new(),
            summary: crate::report::Summary {
                actions_held: actions.len(),
                ..crate::report::Summary::default()
            },
            drift: Vec::new(),
            safety: crate::report::SafetyReport {
                actions_waiting: actions.iter().filter(|a| a.waiting).count(),
                ..crate::report::SafetyReport::default()
            },
            actions,
        }
    }

    /// After an approval released a create that only waited for the settle window
    /// (as approvals did before they left those alone), the stored report no
    /// longer counts it as waiting: the deactivation still held for a human must
    /// keep the report "needs attention".
    #[test]
    fn a_refreshed_report_recounts_what_still_waits() {
        let mut store = Store::open_in_memory().unwrap();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = store
            .begin_run(crate::store::RunKind::Reconcile, at)
            .unwrap();
        let mut create = action(ActionKind::CreateGroup {
            display_name: "g".into(),
        });
        create.seq = 1;
        let mut deactivate = action(ActionKind::Deactivate {
            account_id: "a".into(),
        });
        deactivate.held = Some(crate::model::HoldReason::LastOwner);
        let plan = Plan {
            actions: vec![deactivate, create],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at).unwrap();
        let report = held_report(
            run,
            at,
            vec![
                held_outcome(0, "deactivate", false),
                held_outcome(1, "create_group", true),
            ],
        );
        store.save_report(run, &report.to_stored_json()).unwrap();
        // The waiting create was approved and applied; the deactivation stays held.
        store.mark_in_flight(run, 1, at).unwrap();
        store.mark_applied(run, 1, at, None).unwrap();
        refresh_report(&mut store, run, "seatwarden").unwrap();
        let refreshed = Report::from_json(&store.report(run).unwrap().unwrap()).unwrap();
        assert_eq!(refreshed.summary.actions_held, 1);
        assert_eq!(refreshed.safety.actions_waiting, 0);

        // Refused by an approval's re-check instead, the waiting create stays
        // held, and now waits for a person, not for the settle window.
        let run = store
            .begin_run(crate::store::RunKind::Reconcile, at)
            .unwrap();
        store.save_plan(run, &plan, at).unwrap();
        store
            .save_report(
                run,
                &Report {
                    run_id: run,
                    ..report
                }
                .to_stored_json(),
            )
            .unwrap();
        store
            .refuse_held(run, &[(1, "a group g exists now".into())], at)
            .unwrap();
        refresh_report(&mut store, run, "seatwarden").unwrap();
        let refreshed = Report::from_json(&store.report(run).unwrap().unwrap()).unwrap();
        assert_eq!(refreshed.summary.actions_held, 2);
        assert_eq!(refreshed.safety.actions_waiting, 0);
        assert!(refreshed.actions.iter().all(|a| !a.waiting));
    }

    /// The stored report a decision refreshes tells the commands as the
    /// configured admin command spells them: a hold the approval's re-check
    /// refused, and a rejection.
    #[test]
    fn a_refreshed_report_names_the_configured_admin_command() {
        const ADMIN: &str = "sudo seatwarden-admin";
        let mut store = Store::open_in_memory().unwrap();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = store
            .begin_run(crate::store::RunKind::Reconcile, at)
            .unwrap();
        let held = |seq: u32, reason: crate::model::HoldReason| Action {
            seq,
            held: Some(reason),
            ..action(ActionKind::Deactivate {
                account_id: format!("a{seq}"),
            })
        };
        let plan = Plan {
            actions: vec![
                held(0, crate::model::HoldReason::OwnerWithoutMapping),
                held(1, crate::model::HoldReason::LastOwner),
            ],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at).unwrap();
        let report = held_report(
            run,
            at,
            vec![
                held_outcome(0, "deactivate", false),
                held_outcome(1, "deactivate", false),
            ],
        );
        store.save_report(run, &report.to_stored_json()).unwrap();
        store
            .refuse_held(run, &[(0, "an Owner would be demoted".into())], at)
            .unwrap();
        store
            .record_decisions(run, &[(1, Decision::Rejected, None)], "alice", at)
            .unwrap();
        refresh_report(&mut store, run, ADMIN).unwrap();
        let refreshed = Report::from_json(&store.report(run).unwrap().unwrap()).unwrap();
        let errors: Vec<&str> = refreshed
            .actions
            .iter()
            .map(|a| a.error.as_deref().unwrap_or_default())
            .collect();
        assert!(
            errors[0].contains(&format!("or `{ADMIN} approve` the demotion; an Owner")),
            "{}",
            errors[0]
        );
        assert_eq!(
            errors[1],
            format!("rejected ({ADMIN} reject): this run never applies it")
        );
    }

    /// An approved row that failed is taken up again only when recovery found it
    /// cut off before it reached the workspace, never one the workspace refused.
    #[test]
    fn only_an_approved_row_cut_off_unsent_is_taken_up_again() {
        let mut store = Store::open_in_memory().unwrap();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = store
            .begin_run(crate::store::RunKind::Reconcile, at)
            .unwrap();
        let deactivate = |seq: u32, id: &str| Action {
            seq,
            held: Some(crate::model::HoldReason::LastOwner),
            ..action(ActionKind::Deactivate {
                account_id: id.into(),
            })
        };
        let plan = Plan {
            actions: vec![deactivate(0, "a"), deactivate(1, "b"), deactivate(2, "c")],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at).unwrap();
        let approved: Vec<(u32, Decision, Option<String>)> =
            (0..3).map(|seq| (seq, Decision::Approved, None)).collect();
        store.record_decisions(run, &approved, "alice", at).unwrap();
        store.release_held(run, &[0, 1, 2], at).unwrap();
        store.mark_all_in_flight(run, &[0, 1, 2], at).unwrap();
        let unsent = format!(
            "{} (active); the next plan redoes it",
            apply::NOT_REACHED_INTERRUPTED
        );
        store.mark_failed(run, 0, at, &unsent).unwrap();
        store.mark_failed(run, 1, at, "403 forbidden").unwrap();
        // Seq 2 is still in flight: `approve` leaves it to recovery, `reject`
        // takes it back.
        let seqs = |approving: bool| -> Vec<u32> {
            undecided(
                &store,
                run,
                &Only::All,
                approving,
                "seatwarden",
                chrono_tz::UTC,
            )
            .unwrap()
            .0
            .iter()
            .map(|e| e.action.seq)
            .collect()
        };
        assert_eq!(seqs(true), vec![0]);
        assert_eq!(seqs(false), vec![0, 2]);
    }

    /// A reconcile run at `at` whose plan holds one deactivation (the last Owner's).
    fn one_held_deactivation(store: &mut Store, at: DateTime<Utc>) -> crate::store::RunId {
        let run = store
            .begin_run(crate::store::RunKind::Reconcile, at)
            .unwrap();
        let plan = Plan {
            actions: vec![Action {
                held: Some(crate::model::HoldReason::LastOwner),
                ..action(ActionKind::Deactivate {
                    account_id: "a".into(),
                })
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at).unwrap();
        run
    }

    /// A second `reject` (or `approve`) of a run decided already names who
    /// decided and when on `report.timezone`'s clock, as every other refusal of
    /// theirs does, not in UTC.
    #[test]
    fn a_refusal_names_the_earlier_decision_on_the_reports_clock() {
        let mut store = Store::open_in_memory().unwrap();
        // 2027-01-15 08:00:00 UTC, 09:00 in Berlin.
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = one_held_deactivation(&mut store, at);
        let berlin = chrono_tz::Europe::Berlin;
        reject(&mut store, run, &Only::All, "seatwarden", berlin, at).unwrap();
        let again = reject(&mut store, run, &Only::All, "seatwarden", berlin, at)
            .unwrap_err()
            .to_string();
        assert!(
            again.contains("decided already: 1 rejected by ")
                && again.contains(" (last 2027-01-15 09:00:00 +01:00 (CET))"),
            "{again}"
        );
    }

    /// One held action (one leaver's alert, one `reject`) is "1 held action …
    /// it", in what `reject` prints and in the audit rows of both commands.
    #[test]
    fn one_decided_action_is_counted_in_the_singular() {
        let mut store = Store::open_in_memory().unwrap();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = one_held_deactivation(&mut store, at);

        let said = reject(
            &mut store,
            run,
            &Only::All,
            "seatwarden",
            chrono_tz::UTC,
            at,
        )
        .unwrap()
        .to_string();
        assert!(
            said.starts_with(&format!(
                "rejected 1 held action of reconcile run {run}; that run will not apply it.\n"
            )),
            "{said}"
        );
        assert!(
            said.contains(
                " It is a deprovision: it stays open in the ledger (and alerts once overdue), \
                 and the sweep plans it again meanwhile."
            ),
            "{said}"
        );
        let audited = store.audit().unwrap().last().unwrap().detail.clone();
        assert_eq!(audited, "rejected 1 held action");

        let approved = Approval {
            approved: vec![0],
            ..Approval::default()
        };
        assert_eq!(
            approved.audited(&Only::All, 0),
            "approved 1 held action; 0 obsolete, 0 refused by the re-check"
        );
    }

    /// A sweep run holds one deprovision per person: one rejected is one person's.
    #[test]
    fn a_rejection_agrees_with_how_many_it_rejected() {
        let sweep = |rejected| {
            Rejection {
                run: 9,
                kind: RunKind::Sweep,
                earlier: Vec::new(),
                sent_since: Vec::new(),
                rejected,
                deprovisions: rejected,
                admin_command: "seatwarden".to_owned(),
            }
            .to_string()
        };
        let one = sweep(1);
        assert!(
            one.starts_with("rejected 1 held action of sweep run 9; that run will not apply it.")
                && one.contains(
                    "The directory still says this person lost access: their deprovision \
                     episode stays open (and alerts once overdue)"
                )
                && one.contains(
                    "plans it again: held again, naming this rejection, while the \
                     guard still holds it;"
                ),
            "{one}"
        );
        let three = sweep(3);
        assert!(
            three.starts_with(
                "rejected 3 held actions of sweep run 9; that run will not apply them."
            ) && three.contains(
                "these people lost access: their deprovision episodes stay open (and alert \
                 once overdue)"
            ),
            "{three}"
        );
        let mixed = Rejection {
            run: 9,
            kind: RunKind::Reconcile,
            earlier: Vec::new(),
            sent_since: Vec::new(),
            rejected: 3,
            deprovisions: 1,
            admin_command: "sudo -u seatwarden seatwarden --config /etc/sw.toml".to_owned(),
        }
        .to_string();
        assert!(
            mixed.contains(
                " The 1 deprovision among them stays open in the ledger (and alerts once \
                 overdue), and the sweep plans it again meanwhile."
            ),
            "{mixed}"
        );
        // The command it tells to run is the configured one.
        assert!(
            mixed.contains(
                "`sudo -u seatwarden seatwarden --config /etc/sw.toml explain PERSON` shows"
            ),
            "{mixed}"
        );
    }

    #[test]
    fn only_takes_ops_and_classes() {
        assert_eq!(Only::parse(None).unwrap(), Only::All);
        assert_eq!(
            Only::parse(Some("Deactivate")).unwrap(),
            Only::Op("deactivate".into())
        );
        assert_eq!(
            Only::parse(Some("role_downgrade")).unwrap(),
            Only::Class(ActionClass::RoleDowngrade)
        );
        assert!(matches!(
            Only::parse(Some("everything")),
            Err(ApprovalError::UnknownKind(_))
        ));
        let deprovisions = Only::Class(ActionClass::Deprovision);
        assert!(deprovisions.admits(&ActionKind::Delete {
            account_id: "a".into(),
            deactivated_since: None,
            frees_user_name: None,
        }));
        assert!(!deprovisions.admits(&ActionKind::Reactivate {
            account_id: "a".into()
        }));
    }
}
