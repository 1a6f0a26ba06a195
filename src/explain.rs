//! `seatwarden explain PERSON`: everything seatwarden knows and would do about one
//! person, in one view (Entra's "provision on demand" view, without the write).
//!
//! PERSON is a directory id, userName or email (case folded as matching folds it;
//! one several people share, as userName or email, is refused, naming them), or a workspace account id
//! or userName (shown with the person linked to it, else the one it matches; a
//! userName several accounts share but for case is refused, naming them). The
//! account shown for a person is the linked one, else the one the next run's
//! plan matches to them (its new links: matching itself is the plan's, not
//! copied here); a disputed match shows none, and its candidates. Someone deleted
//! from the directory is found by their id or by the directory userName their
//! deprovision in the ledger keeps, through their stored link; their account is
//! told as the plan treats it (an exception naming that userName keeps it, as
//! `safety::with_departed` makes the plan keep it). An account that only matches
//! a person linked to another (a duplicate) is shown with that person, as the
//! plan treats it with their linked one; an orphan with what
//! `policy.unmatched_accounts` makes of it (and, when it was remembered as the
//! duplicate of someone the directory deleted and no longer matches them,
//! saying so: renamed since, it is not theirs). With `--live`
//! ([`explain_with`]) the account is also read from the workspace as it is now
//! (one request; a refused token or a workspace out of reach says what to check,
//! as a run's read does). The view is built from the newest run that stored both
//! snapshots, but not one whose directory was refused as a source fault (it says
//! which and when), the stored links and the action journal; the
//! "next run" section re-plans from those snapshots through policy, plan, guard
//! (with the current 24 h counts), the hold of a create that met a 409 with no
//! account in sight, and the settle window, so it reads nothing over
//! the network and writes nothing; while the circuit breaker is open it says
//! that no run sends what it lists.
//!
//! Sections: how the snapshots' run ended, when it did not finish cleanly
//! (stopped, failed, interrupted, still running or cut off: what it planned may
//! not all have been sent or verified); directory record; scope decision and why
//! (and protection: an account protected only because its person is, its own
//! userName not, says so and what settles it, as the report's PROTECTED BY
//! PERSON does); the mappings that give the
//! role; the link and how it was matched; a disputed match, when the plan has one
//! about the person (every candidate account with the attribute that matched it and
//! its state, that nothing is written to them, for a leaver that the deprovisioning
//! waits, and the `seatwarden link` commands that settle it); the workspace
//! account, with what was applied to it since the snapshot (a run's snapshots
//! are read before it applies anything, so right after a run they show the
//! account as it was); the last actions with their outcomes (of reconciles,
//! sweeps and approvals: a plan's or a dry run's were never sent); the deprovision
//! ledger entry; what the next run would do (an action applied since the
//! snapshot is marked so, not offered again; a create or rename it does not make
//! because of the userName says why in its place; and when the person's account
//! holds a userName others want, who, and that their create or rename waits on
//! it), or, for a linked account the snapshot lacks, that someone else deleted
//! it. A person the deprovisioning ledger saw leave after the snapshot was read
//! (the daemon's sweep, which stores no snapshot) is in scope in it: the scope
//! section says what the ledger saw since, and that the role and next run are
//! from the older snapshot. Times are on the clock of the report's zone
//! (`report.timezone`, else `schedule.timezone`), as the reports show them.
//!
//! [`after_unlink`] re-plans the same way without one stored link: what
//! `seatwarden unlink` says the next run does with the account and the person.
//!
//! The view is line-structured, and most of what it shows comes from the
//! directory, the workspace or a provider's answer (names, departments, groups,
//! error messages): every such value goes through [`clean`], so a value holding a
//! line break or a terminal escape cannot forge a line or rewrite the screen.

use std::borrow::Cow;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::{Config, ConfigError};
use crate::guard;
use crate::model::{
    Account, AccountRef, ActionKind, DirectorySnapshot, DriftItem, DriftKind, HoldReason, Identity,
    Link, LinkMethod, NewLink, WorkspaceSnapshot,
};
use crate::plan;
use crate::policy;
use crate::safety;
use crate::store::{RunId, RunStatus, Store, StoreError, StoredLink};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no run has stored snapshots yet: run `{admin_command} plan` first")]
    NoSnapshots {
        /// `report.admin_command`, which the message tells to run.
        admin_command: String,
    },
    #[error("{}", only_refused(*run, admin_command))]
    OnlyRefused {
        /// The newest run with a report, whose directory was refused.
        run: RunId,
        admin_command: String,
    },
    /// Someone added to the directory (or an account made) since that run is
    /// not in its snapshots: the message says when they were read, and what
    /// reads them again.
    #[error(
        "{person:?} matches no directory identity (id, userName, email) and no workspace \
         account (id, userName) in the snapshots of run {run} (read {read_at}); someone \
         added or renamed since is found once `{admin_command} plan` has read both sides again"
    )]
    NotFound {
        person: String,
        run: RunId,
        /// When the run read its snapshots, on the report's clock.
        read_at: String,
        /// `report.admin_command`, which the message tells to run.
        admin_command: String,
    },
    #[error(
        "{person:?} is the {field} of several directory identities: {identities}; explain one by its id"
    )]
    Ambiguous {
        person: String,
        field: &'static str,
        /// `id (userName)` of each, comma-separated.
        identities: String,
    },
    #[error(
        "{person:?} is the userName of several workspace accounts: {accounts}; explain one by \
         its account id"
    )]
    AmbiguousAccount {
        person: String,
        /// `id (userName)` of each, comma-separated.
        accounts: String,
    },
}

/// The newest run whose directory the source check refused: what `explain` and
/// `export` say when no run has snapshots they may read, rather than that no
/// plan has run. Taken from the run's `directory_refused` column, which the
/// check sets as it refuses and which `approve` and the snapshot choice read,
/// not from the newest report: a run that failed or was killed after the check
/// stores none, and was then taken for no run at all.
pub fn newest_run_if_refused(store: &Store) -> Result<Option<RunId>, StoreError> {
    store.newest_directory_refused_run()
}

/// Why there is nothing to read when the only snapshots are of a refused
/// directory, and what to run (as `admin_command`).
pub fn only_refused(run: RunId, admin_command: &str) -> String {
    format!(
        "the directory of run {run} was refused as a source fault (`{admin_command} report --run \
         {run}` says why), and no run before it stored snapshots to read instead: correct the \
         directory, then run `{admin_command} plan`"
    )
}

/// The person's deprovision ledger episodes (newest first, at most five), one
/// line each: why, detected, due, and how it ended or stands at `now`; times on
/// the wall clock of `tz`.
pub fn ledger_lines(
    store: &Store,
    identity_id: Option<&str>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Result<Vec<String>, StoreError> {
    let Some(identity_id) = identity_id else {
        return Ok(Vec::new());
    };
    let at = |t: DateTime<Utc>| crate::report::local_time(t, tz);
    let approved = store.approved_deprovisions(&[identity_id.to_owned()])?;
    let approved = approved.get(identity_id);
    Ok(store
        .deprovision_history(identity_id, 5)?
        .iter()
        .map(|e| {
            let mut line = format!(
                "{}: {} — detected {}, due {}",
                e.state(now).as_str(),
                clean(&e.reason.to_string()),
                at(e.detected_at),
                at(e.due_at)
            );
            match e.verified_at {
                Some(v) if e.found_without_access() => line.push_str(&format!(
                    ", found already inactive or gone {} (nothing to do)",
                    at(v)
                )),
                Some(v) => line.push_str(&format!(", verified {}", at(v))),
                None => {}
            }
            let look_alike_ended = e.held.as_deref() == Some(crate::sla::LOOK_ALIKE_ENDED);
            match e.closed_at {
                Some(c) if look_alike_ended => line.push_str(&format!(
                    ", ended {} without enforcing (access did not come back): in a directory \
                     group that only looks like a configured one, the deprovision is held \
                     by the reconcile (look_alike_group) for a person to approve or reject",
                    at(c)
                )),
                Some(c) => line.push_str(&format!(", cancelled {} (access came back)", at(c))),
                None => {}
            }
            if let Some(r) = e.returned_at {
                line.push_str(&format!(", access again since {}", at(r)));
            }
            if let Some(h) = e.held.as_ref().filter(|_| !look_alike_ended) {
                line.push_str(&format!("; held: {}", clean(h)));
            }
            // An approval older than the episode decided an earlier one.
            if let Some(approval) = approved
                .filter(|approval| e.is_open() && e.held.is_none() && approval.at >= e.detected_at)
            {
                line.push_str(&format!(
                    "; approved in run {} by {} at {}, not written yet: the retry job sends it",
                    approval.run,
                    clean(&approval.user),
                    at(approval.at)
                ));
            }
            if let Some(err) = &e.last_error {
                line.push_str(&format!(
                    "; last error after {} attempts: {}",
                    e.attempts,
                    clean(err)
                ));
            }
            if let Some(x) = e.escalated_at {
                line.push_str(&format!("; escalated {}", at(x)));
            }
            line
        })
        .collect())
}

/// The identity `person` names: by id, else by userName, else by email, compared as
/// matching compares them (`model::same_name`: white space at an end and case aside). A userName or email several people
/// share, or one person's userName that is another's email, is refused with
/// their ids: explaining the first would hide the others.
fn find_identity<'a>(
    directory: &'a DirectorySnapshot,
    person: &str,
) -> Result<Option<&'a Identity>, ExplainError> {
    if let Some(identity) = directory.identities.iter().find(|i| i.id == person) {
        return Ok(Some(identity));
    }
    let by_user_name = |i: &Identity| crate::model::same_name(&i.user_name, person);
    let by_email = |i: &Identity| {
        i.email
            .as_deref()
            .is_some_and(|e| crate::model::same_name(e, person))
    };
    let ambiguous = |field: &'static str, several: &[&Identity]| ExplainError::Ambiguous {
        person: person.to_owned(),
        field,
        identities: several
            .iter()
            .map(|i| format!("{} ({})", clean(&i.id), clean(&i.user_name)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let named: Vec<&Identity> = directory
        .identities
        .iter()
        .filter(|i| by_user_name(i))
        .collect();
    let mailed: Vec<&Identity> = directory
        .identities
        .iter()
        .filter(|i| by_email(i))
        .collect();
    match (named.as_slice(), mailed.as_slice()) {
        ([], []) => {}
        ([], [identity]) => return Ok(Some(identity)),
        ([], several) => return Err(ambiguous("email", several)),
        // One person's userName and another's email (a reused address, an alias):
        // either may be the one asked about, and the plan may match an account
        // with that address to both.
        ([identity], others) if others.iter().all(|o| o.id == identity.id) => {
            return Ok(Some(identity));
        }
        ([identity], others) => {
            let mut several = vec![*identity];
            several.extend(others.iter().copied().filter(|o| o.id != identity.id));
            return Err(ambiguous("userName or email", &several));
        }
        (several, _) => return Err(ambiguous("userName", several)),
    }
    Ok(None)
}

/// One value from the directory, the workspace or a provider, made safe for one
/// line of the view: control characters (line breaks, escapes) and characters
/// that reorder text are replaced, as the digest and `status` do.
fn clean(value: &str) -> Cow<'_, str> {
    crate::report::printable(value, false)
}

/// An optional value [`clean`]ed, or `-`.
fn opt(value: Option<&str>) -> Cow<'_, str> {
    value.map_or(Cow::Borrowed("-"), clean)
}

/// A person's identity, stored link and account, as far as the snapshots have them.
type Found<'a> = (
    Option<&'a Identity>,
    Option<&'a StoredLink>,
    Option<&'a Account>,
);

/// What `explain` reads from the store: the newest snapshots and the links.
struct Loaded {
    run: RunId,
    record: Option<crate::store::RunRecord>,
    /// The run is recorded as running while nobody holds the writer lock: its
    /// process stopped before it finished ([`Store::run_and_whether_cut_off`]).
    cut_off: bool,
    directory: DirectorySnapshot,
    workspace: WorkspaceSnapshot,
    links: Vec<StoredLink>,
    /// The accounts of each disputed match the last reconcile saw: how a person
    /// deleted from the directory since is still found.
    remembered: Vec<crate::model::DisputedCandidate>,
    /// The audit trail's `link` and `unlink` rows: who linked an account by
    /// hand, or took a link away.
    manual_links: Vec<crate::store::AuditRow>,
    /// `(identity id, directory userName)` of each person the ledger's current
    /// episodes keep: how someone deleted from the directory is still found.
    departed: Vec<(String, String)>,
}

impl Loaded {
    /// The newest run's snapshots; `None` when no run has stored both.
    fn load(store: &Store) -> Result<Option<Loaded>, StoreError> {
        let Some(run) = store.latest_snapshot_run()? else {
            return Ok(None);
        };
        let (Some(directory), Some(workspace)) = (
            store.load_directory_snapshot(run)?,
            store.load_workspace_snapshot(run)?,
        ) else {
            return Ok(None);
        };
        let (record, cut_off) = match store.run_and_whether_cut_off(run)? {
            Some((record, cut_off)) => (Some(record), cut_off),
            None => (None, false),
        };
        Ok(Some(Loaded {
            run,
            record,
            cut_off,
            directory,
            workspace,
            links: store.links()?,
            remembered: store.disputed_candidates()?,
            manual_links: store
                .audit_trail(crate::store::AuditFilter::default())?
                .into_iter()
                .filter(|row| matches!(row.entry.command.as_str(), "link" | "unlink"))
                .collect(),
            departed: store
                .current_deprovisions()?
                .into_iter()
                .map(|e| (e.identity_id, e.user_name))
                .collect(),
        }))
    }

    /// [`Loaded::load`], or the error that tells to run a plan first (with
    /// `config`'s `report.admin_command`), or that the directory was refused.
    fn require(store: &Store, config: &Config) -> Result<Loaded, ExplainError> {
        if let Some(loaded) = Loaded::load(store)? {
            return Ok(loaded);
        }
        let admin_command = config.admin_command();
        Err(match newest_run_if_refused(store)? {
            Some(run) => ExplainError::OnlyRefused { run, admin_command },
            None => ExplainError::NoSnapshots { admin_command },
        })
    }

    /// The remembered candidates of a person the directory no longer has, found
    /// by their identity id, their last userName, or one of the accounts.
    /// Only candidates the next plan still remembers (`kept`): one it forgot
    /// (its account now disputed for someone the directory has, say) would
    /// show a dispute the plan no longer acts by, and hide the one it does.
    /// A candidate of someone the directory has is passed over, not taken
    /// for the account's person: the plan remembers the same account for a
    /// deleted person beside them.
    fn remembered_dispute(
        &self,
        person: &str,
        account: Option<&Account>,
        kept: &[crate::model::DisputedCandidate],
    ) -> Vec<&crate::model::DisputedCandidate> {
        // A duplicate renamed since is remembered, and nobody's: the plan
        // takes it for an orphan, and so does this.
        let still_kept = |c: &crate::model::DisputedCandidate| {
            kept.iter()
                .any(|k| k.identity_id == c.identity_id && k.account_id == c.account_id)
                && !self
                    .workspace
                    .accounts
                    .iter()
                    .find(|a| a.id == c.account_id)
                    .is_some_and(|a| crate::plan::no_longer_their_duplicate(c, a))
        };
        let Some(identity_id) = self
            .remembered
            .iter()
            .filter(|c| still_kept(c))
            .filter(|c| matches!(find_identity(&self.directory, &c.identity_id), Ok(None)))
            .find(|c| {
                c.identity_id == person
                    || crate::model::same_name(&c.user_name, person)
                    || account.is_some_and(|a| a.id == c.account_id)
            })
            .map(|c| c.identity_id.as_str())
        else {
            return Vec::new();
        };
        self.remembered
            .iter()
            .filter(|c| c.identity_id == identity_id && still_kept(c))
            .collect()
    }

    /// A person the directory no longer has, named by their identity id or by
    /// the directory userName their deprovision in the ledger keeps: their
    /// stored link and its account, which the plan deprovisions as theirs.
    /// Nothing when no link ties them to an account. Only people with a link
    /// are looked at: an older episode of the name (someone deleted, re-added
    /// under another id, deleted again) must not hide the one the plan acts
    /// on; two such are refused, naming each.
    fn departed(&self, person: &str) -> Result<Found<'_>, ExplainError> {
        let gone_and_linked = |identity_id: &str| {
            let present = self
                .directory
                .identities
                .iter()
                .any(|i| i.id == identity_id);
            self.links
                .iter()
                .find(|l| l.identity_id == identity_id)
                .filter(|_| !present)
        };
        let mut named: Vec<&StoredLink> = self
            .departed
            .iter()
            .filter(|(id, user_name)| id == person || crate::model::same_name(user_name, person))
            .filter_map(|(id, _)| gone_and_linked(id))
            .collect();
        named.sort_by(|a, b| a.identity_id.cmp(&b.identity_id));
        named.dedup_by(|a, b| a.identity_id == b.identity_id);
        let link = match named.as_slice() {
            [] => match gone_and_linked(person) {
                Some(link) => link,
                None => return Ok((None, None, None)),
            },
            [link] => *link,
            several => {
                return Err(ExplainError::Ambiguous {
                    person: person.to_owned(),
                    field: "userName the deprovision ledger keeps",
                    identities: several
                        .iter()
                        .map(|l| {
                            format!(
                                "{} (account {})",
                                clean(&l.identity_id),
                                clean(&l.account_id)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        };
        let account = self
            .workspace
            .accounts
            .iter()
            .find(|a| a.id == link.account_id);
        Ok((None, Some(link), account))
    }

    /// The person's identity, stored link and account. Named by the person: the
    /// linked account, else the one the plan matches to them (`matched`: its new
    /// links). Named by an account (id or userName): that account, and the person
    /// linked or matched to it. A disputed match is in neither: the dispute
    /// section shows its candidates.
    fn find(&self, person: &str, matched: &[NewLink]) -> Result<Found<'_>, ExplainError> {
        let accounts = &self.workspace.accounts;
        if let Some(identity) = find_identity(&self.directory, person)? {
            let link = self.links.iter().find(|l| l.identity_id == identity.id);
            let account_id = match link {
                Some(link) => Some(link.account_id.as_str()),
                None => matched
                    .iter()
                    .find(|m| m.identity_id == identity.id)
                    .map(|m| m.account_id.as_str()),
            };
            let account = account_id.and_then(|id| accounts.iter().find(|a| a.id == id));
            return Ok((Some(identity), link, account));
        }
        // An account id first; else a userName, which several accounts may share
        // but for case (an old deactivated `Bob@…` beside `bob@…`): showing the
        // first would hide the others, so that is refused with their ids.
        let account = match accounts.iter().find(|a| a.id == person) {
            Some(account) => account,
            None => {
                let named: Vec<&Account> = accounts
                    .iter()
                    .filter(|a| crate::model::same_name(&a.user_name, person))
                    .collect();
                match named.as_slice() {
                    [] => return self.departed(person),
                    [account] => *account,
                    several => {
                        return Err(ExplainError::AmbiguousAccount {
                            person: person.to_owned(),
                            accounts: several
                                .iter()
                                .map(|a| format!("{} ({})", clean(&a.id), clean(&a.user_name)))
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
        };
        let link = self.links.iter().find(|l| l.account_id == account.id);
        let identity_id = match link {
            Some(link) => Some(link.identity_id.as_str()),
            None => matched
                .iter()
                .find(|m| m.account_id == account.id)
                .map(|m| m.identity_id.as_str()),
        };
        let identity =
            identity_id.and_then(|id| self.directory.identities.iter().find(|i| i.id == id));
        Ok((identity, link, Some(account)))
    }
}

/// Which workspace account `explain --live` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveTarget {
    /// The account the snapshot (or link) names.
    Id(String),
    /// No account known: look the directory userName up by filter.
    UserName(String),
}

/// The account as the workspace shows it now (`explain --live`), or why it could
/// not be read.
pub type LiveAccount = Result<Option<Account>, String>;

/// What `--live` should read for `person`; `None` when nothing names an account
/// (no run has stored snapshots either: [`explain_with`] says what to run).
pub fn live_target(
    store: &Store,
    config: &Config,
    person: &str,
    now: DateTime<Utc>,
) -> Result<Option<LiveTarget>, ExplainError> {
    let Some(loaded) = Loaded::load(store)? else {
        return Ok(None);
    };
    let matched = crate::export::matched_unlinked(
        config,
        &loaded.directory,
        &loaded.workspace,
        &loaded.links,
        &loaded.remembered,
        now,
    );
    Ok(match loaded.find(person, &matched)? {
        (_, Some(link), None) => Some(LiveTarget::Id(link.account_id.clone())),
        (_, _, Some(account)) => Some(LiveTarget::Id(account.id.clone())),
        (Some(identity), None, None) => Some(LiveTarget::UserName(identity.user_name.clone())),
        (None, _, None) => None,
    })
}

/// Reads the live account for [`explain_with`]. A read that failed for a refused
/// token or a workspace out of reach says what to check, as a run's read does.
pub async fn read_live(client: &crate::workspace::ScimClient, target: &LiveTarget) -> LiveAccount {
    match target {
        LiveTarget::Id(id) => client.get_account(id).await,
        LiveTarget::UserName(user_name) => client.find_account_by_user_name(user_name).await,
    }
    .map_err(|e| match e.what_to_check() {
        Some(hint) => format!("{e}; {hint}"),
        None => e.to_string(),
    })
}

/// The explanation as text, judged at `now` (for the 24 h counts), offline.
pub fn explain(
    config: &Config,
    store: &Store,
    person: &str,
    now: DateTime<Utc>,
) -> Result<String, ExplainError> {
    explain_with(config, store, person, now, None)
}

/// [`explain`] with the account as the workspace shows it now (`--live`).
pub fn explain_with(
    config: &Config,
    store: &Store,
    person: &str,
    now: DateTime<Utc>,
    live: Option<&LiveAccount>,
) -> Result<String, ExplainError> {
    let loaded = Loaded::require(store, config)?;
    let next = next_actions(config, store, &loaded, now)?;
    let (identity, link, account) = loaded.find(person, &next.new_links)?;
    // An account neither linked nor matched that the plan still ties to someone:
    // a leaver's duplicate it deprovisions with their linked one, or one it
    // leaves alone for a protected or excepted person. Shown with that person,
    // not as nobody's (an orphan), which the plan does not take it for.
    let identity = identity.or_else(|| {
        let account = account.filter(|_| link.is_none())?;
        let tied = next
            .actions
            .iter()
            .filter(|a| a.kind.account_id() == Some(account.id.as_str()))
            .find_map(|a| a.identity_id.as_deref())
            .or_else(|| {
                next.protected_by_person
                    .iter()
                    .find(|p| p.account_id == account.id)
                    .map(|p| p.identity_id.as_str())
            })
            .or_else(|| {
                next.excepted
                    .iter()
                    .find(|e| e.account_id == account.id)
                    .and_then(|e| e.identity_id.as_deref())
            });
        match tied {
            Some(tied) => loaded.directory.identities.iter().find(|i| i.id == tied),
            // Left alone with its person (protected for good, or excepted while
            // they have access), a duplicate leaves no trace in the plan: the
            // one person a rule matches it to, linked to another account (an
            // externalId naming someone else leaves the name rules out).
            None => {
                let mut matching = loaded.directory.identities.iter().filter(|i| {
                    loaded.links.iter().any(|l| l.identity_id == i.id)
                        && account.external_id.as_ref().is_none_or(|e| *e == i.id)
                        && matched_by(&loaded.links, i, account)
                            .is_some_and(|by| !by.contains("stored link"))
                });
                match (matching.next(), matching.next()) {
                    (Some(one), None) => Some(one),
                    _ => None,
                }
            }
        }
    });
    let remembered = match identity {
        Some(_) => Vec::new(),
        None => loaded.remembered_dispute(person, account, &next.disputed_candidates),
    };
    let account = account.or_else(|| {
        remembered.iter().find_map(|c| {
            loaded
                .workspace
                .accounts
                .iter()
                .find(|a| a.id == c.account_id)
        })
    });
    if identity.is_none() && account.is_none() && link.is_none() {
        let tz = config.report_timezone()?;
        return Err(ExplainError::NotFound {
            person: person.to_owned(),
            run: loaded.run,
            read_at: loaded.record.as_ref().map_or_else(
                || "at an unknown time".to_owned(),
                |record| crate::report::local_time(record.started_at, tz),
            ),
            admin_command: config.admin_command(),
        });
    }
    // Seen leaving after the snapshot was read (the daemon's sweep stores no
    // snapshot): the snapshot, and the plan made from it, still show access.
    let left_since = match (identity, loaded.record.as_ref()) {
        (Some(i), Some(record)) => store
            .deprovision_history(&i.id, 1)?
            .into_iter()
            .next()
            .filter(|e| {
                e.closed_at.is_none()
                    && e.returned_at.is_none()
                    && e.detected_at >= record.started_at
            }),
        _ => None,
    };
    let (circuit, circuit_record) = safety::circuit_state(store, config, now)?;
    // Protection as the plan judges it: a person deleted from the directory is
    // known by the directory userName their open deprovision keeps, which an
    // exception may name while their account's own userName differs.
    let protected = safety::with_departed(
        safety::plan_settings(config, &loaded.directory, now).protected,
        &loaded.directory,
        store,
    )?;
    let view = View {
        protected,
        circuit,
        circuit_reason: circuit_record.reason,
        left_since,
        next: &next,
        config,
        store,
        loaded: &loaded,
        identity,
        remembered,
        link,
        account,
        now,
        tz: config.report_timezone()?,
    };
    // Writing to a String cannot fail.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — as of run {}",
        clean(person),
        view.run_described()
    );
    if let Some(ending) = view.run_ending() {
        let _ = writeln!(out, "{ending}");
    }
    view.directory_record(&mut out);
    view.scope_and_role(&mut out);
    view.link(&mut out);
    view.dispute(&mut out);
    let since = view.applied_since_snapshot()?;
    view.workspace_account(&mut out, &since)?;
    if let Some(live) = live {
        live_account(&mut out, live);
    }
    view.last_actions(&mut out)?;
    view.ledger(&mut out)?;
    view.next_run(&mut out, &since);
    Ok(out)
}

/// One person as the stored snapshots, links and journal show them: each method
/// writes one section of `explain`.
struct View<'a> {
    /// Protection and exceptions in force at `now`, as the plan has them
    /// (`safety::with_departed` included).
    protected: policy::Protected,
    config: &'a Config,
    store: &'a Store,
    loaded: &'a Loaded,
    identity: Option<&'a Identity>,
    /// Without an identity: the accounts a disputed match of a person since
    /// deleted from the directory named (empty otherwise).
    remembered: Vec<&'a crate::model::DisputedCandidate>,
    link: Option<&'a StoredLink>,
    account: Option<&'a Account>,
    /// What a run now would plan (see [`next_actions`]).
    next: &'a crate::model::Plan,
    /// The person's current deprovisioning episode, when it was opened after the
    /// snapshot was read.
    left_since: Option<crate::sla::LedgerEntry>,
    /// The circuit breaker at `now`: while open, a run writes nothing.
    circuit: crate::circuit::CircuitState,
    circuit_reason: Option<String>,
    now: DateTime<Utc>,
    /// Times are shown in the report's zone, as the reports show them.
    tz: Tz,
}

impl View<'_> {
    /// `42 (reconcile, 2026-11-29 09:00:00 +01:00 (CET); times in Europe/Berlin)`.
    fn run_described(&self) -> String {
        let record = self.loaded.record.as_ref();
        format!(
            "{} ({}, {}; times in {})",
            self.loaded.run,
            record.map_or("?", |r| r.kind.as_str()),
            record.map_or_else(|| "?".to_owned(), |r| self.at(r.started_at)),
            self.tz.name()
        )
    }

    fn at(&self, time: DateTime<Utc>) -> String {
        crate::report::local_time(time, self.tz)
    }

    /// How the run the snapshots come from ended, when it did not finish
    /// cleanly: its snapshots still stand, but what it planned may not all have
    /// been sent or verified, which the last actions below show one by one.
    fn run_ending(&self) -> Option<String> {
        let record = self.loaded.record.as_ref()?;
        let run = record.id;
        let ended = record
            .finished_at
            .map(|at| format!(" at {}", self.at(at)))
            .unwrap_or_default();
        let unverified = "what it planned may not all have been sent or verified";
        match record.status {
            RunStatus::Succeeded => None,
            RunStatus::Stopped => Some(format!(
                "  run {run} was stopped{ended} before it finished (SIGTERM or Ctrl-C): {unverified}"
            )),
            RunStatus::Failed if record.closed_as_interrupted() => Some(format!(
                "  run {run} was interrupted: its process stopped before the run finished (closed{ended}), so {unverified}"
            )),
            RunStatus::Failed => Some(format!(
                "  run {run} failed{ended}: {}; {unverified}",
                record
                    .error
                    .as_deref()
                    .map_or_else(|| "no error recorded".to_owned(), |e| clean(e).into_owned())
            )),
            RunStatus::Running if self.loaded.cut_off => Some(format!(
                "  run {run} was cut off: its process stopped before the run finished, and no \
                 later run has recovered it yet; {unverified}"
            )),
            RunStatus::Running => Some(format!(
                "  run {run} has not finished: it is still running, or its process stopped and no later run has closed it yet; {unverified}"
            )),
        }
    }

    /// Why an action is held, its times on the report's clock ([`clean`]ed).
    fn held(&self, reason: &HoldReason) -> String {
        match reason {
            HoldReason::Settling {
                first_seen,
                settles_at,
            } => format!(
                "waiting for the settle window: first seen {}, acted on from {}",
                self.at(*first_seen),
                self.at(*settles_at)
            ),
            other => clean(&other.describe(&self.config.admin_command()).to_string()).into_owned(),
        }
    }

    fn identity_id(&self) -> Option<&str> {
        self.identity
            .map(|i| i.id.as_str())
            .or_else(|| self.remembered.first().map(|c| c.identity_id.as_str()))
    }

    /// [`View::identity_id`], else the person a stored link ties the account to
    /// though the directory no longer has them: the plan deprovisions the
    /// account as theirs, and the ledger and the journal keep them by that id.
    fn person_id(&self) -> Option<&str> {
        self.identity_id()
            .or_else(|| self.link.map(|l| l.identity_id.as_str()))
    }

    /// The person deleted from the directory a stored link ties the account to.
    fn departed_link(&self) -> Option<&StoredLink> {
        self.link.filter(|_| self.identity.is_none())
    }

    fn account_id(&self) -> Option<&str> {
        self.account.map(|a| a.id.as_str())
    }

    /// For an account nobody is linked to: the stored link of the person the
    /// directory no longer has whose duplicate the plan takes it for (a
    /// remembered disputed candidate of theirs, while they are linked to
    /// another account): deprovisioned with their linked account, or kept with
    /// it by an exception or protection. Shown with them: an orphan, which the
    /// plan does not take it for, would read as left alone (or deactivated)
    /// by `unmatched_accounts`.
    fn departed_owner(&self) -> Option<&StoredLink> {
        if self.identity.is_some() || self.link.is_some() {
            return None;
        }
        let account = self.account?;
        let owner = self
            .next
            .actions
            .iter()
            .filter(|a| a.kind.account_id() == Some(account.id.as_str()))
            .find_map(|a| a.identity_id.as_deref())
            .or_else(|| {
                self.next
                    .excepted
                    .iter()
                    .find(|e| e.account_id == account.id)
                    .and_then(|e| e.identity_id.as_deref())
            })
            .or_else(|| {
                self.next
                    .protected_by_person
                    .iter()
                    .find(|p| p.account_id == account.id)
                    .map(|p| p.identity_id.as_str())
            })?;
        if self
            .loaded
            .directory
            .identities
            .iter()
            .any(|i| i.id == owner)
        {
            return None;
        }
        self.loaded
            .links
            .iter()
            .find(|l| l.identity_id == owner && l.account_id != account.id)
    }

    /// For an account nobody is linked to: the remembered candidate that makes
    /// it the duplicate of a person the directory no longer has, whose linked
    /// account is gone from the workspace since (deleted after the retention
    /// period, or by hand). The plan keeps it theirs, down their deprovisioning
    /// path ([`crate::model::DisputedCandidate::duplicate_of`]); the dispute a
    /// stored memory without that fact reads as is told by the Disputed match.
    fn settled_duplicate(&self) -> Option<(&str, &str)> {
        if self.identity.is_some() || self.link.is_some() || !self.disputes().is_empty() {
            return None;
        }
        let account = self.account?;
        self.remembered.iter().find_map(|c| {
            let linked = c.duplicate_of.as_deref()?;
            let gone = !self
                .loaded
                .workspace
                .accounts
                .iter()
                .any(|a| a.id == linked);
            (c.account_id == account.id && gone).then_some((c.identity_id.as_str(), linked))
        })
    }

    fn directory_record(&self, out: &mut String) {
        let _ = writeln!(out, "\nDirectory record");
        let Some(i) = self.identity else {
            match self.remembered.first() {
                Some(c) if let Some((_, linked)) = self.settled_duplicate() => {
                    let _ = writeln!(
                        out,
                        "  not in the directory snapshot: deleted since a run saw {} (id {}), \
                         who was linked to account {}, since gone from the workspace; the \
                         account below was theirs too, a duplicate",
                        clean(&c.user_name),
                        clean(&c.identity_id),
                        clean(linked)
                    );
                }
                Some(c) => {
                    let _ = writeln!(
                        out,
                        "  not in the directory snapshot: deleted since a run saw {} (id {}) \
                         with a disputed match",
                        clean(&c.user_name),
                        clean(&c.identity_id)
                    );
                }
                None if let Some(link) = self.departed_link() => {
                    let known = self
                        .loaded
                        .departed
                        .iter()
                        .find(|(id, _)| *id == link.identity_id)
                        .map(|(_, user_name)| {
                            format!(
                                ", userName {} as the deprovision ledger keeps it",
                                clean(user_name)
                            )
                        })
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  not in the directory snapshot{}: identity {}{known}, linked to the \
                         account below",
                        if self.loaded.directory.complete {
                            " (deleted from the directory)"
                        } else {
                            ", which was read incompletely"
                        },
                        clean(&link.identity_id)
                    );
                }
                // The people it may be are in the directory: "deleted, or never
                // there" read as if the account had nobody.
                None if !self.disputes().is_empty() => {
                    let _ = writeln!(
                        out,
                        "  none chosen: whose account this is is disputed (the people it may \
                         be are under Disputed match)"
                    );
                }
                // A partial read leaves out people who have not left.
                None if !self.loaded.directory.complete => {
                    let _ = writeln!(
                        out,
                        "  not in the directory snapshot, which run {} read incompletely (a \
                         listing short of its total): perhaps one it missed, not known to \
                         have left",
                        self.loaded.run
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  not in the directory snapshot (deleted, or never there)"
                    );
                }
            }
            return;
        };
        let _ = writeln!(out, "  id:         {}", clean(&i.id));
        let _ = writeln!(out, "  userName:   {}", clean(&i.user_name));
        let _ = writeln!(out, "  email:      {}", opt(i.email.as_deref()));
        let name = [i.given_name.as_deref(), i.family_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  name:       {}",
            if name.is_empty() {
                "-".into()
            } else {
                clean(&name)
            }
        );
        let _ = writeln!(out, "  status:     {}", i.status.as_str());
        let _ = writeln!(out, "  department: {}", opt(i.department.as_deref()));
        let _ = writeln!(out, "  groups:     {}", clean(&i.groups.join(", ")));
    }

    /// Whether the person is in scope and why, and with which role and groups.
    fn scope_and_role(&self, out: &mut String) {
        let (config, directory) = (self.config, &self.loaded.directory);
        let desired = policy::desired_state(directory, &config.policy_settings());
        let _ = writeln!(out, "\nScope");
        let protected = &self.protected;
        // The directory userName first (it protects every account of the
        // person), for someone deleted from the directory the one the ledger
        // keeps, as the plan takes it; then the account's own.
        // Deleted, a person has lost protection for good: the name the ledger
        // keeps of them counts by its exception alone, as in the plan.
        let departed_name = || {
            self.identity
                .is_none()
                .then(|| {
                    self.departed_link()
                        .or_else(|| self.departed_owner())
                        .map(|l| l.identity_id.as_str())
                        .or_else(|| self.settled_duplicate().map(|(identity_id, _)| identity_id))
                        .and_then(|identity_id| protected.departed_name(identity_id))
                })
                .flatten()
        };
        let names = || {
            self.identity
                .map(|i| i.user_name.as_str())
                .into_iter()
                .chain(self.account.map(|a| a.user_name.as_str()))
        };
        let is_protected = names().any(|name| protected.permanently(name));
        let exception = departed_name()
            .and_then(|name| protected.exception_for_departed(name))
            .or_else(|| names().find_map(|name| protected.exception_for(name)));
        match self.identity {
            Some(i) => {
                if let Some(want) = desired.active.get(&i.id) {
                    let scope = if config.policy.scope_groups.is_empty() {
                        "every active identity is in scope".to_owned()
                    } else {
                        let via: Vec<&str> = config
                            .policy
                            .scope_groups
                            .iter()
                            // Exactly, as the policy compares them.
                            .filter(|g| i.groups.contains(g))
                            .map(String::as_str)
                            .collect();
                        format!("member of scope group {}", clean(&via.join(", ")))
                    };
                    let _ = writeln!(out, "  in scope: active, {scope}");
                    if let Some(episode) = &self.left_since {
                        let now = match (episode.verified_at, episode.excepted_until) {
                            (Some(at), _) => {
                                format!("the account was deactivated {}", self.at(at))
                            }
                            // The sweep put it off (`safety.exceptions`): due only
                            // once the exception ends, as the next plan keeps it.
                            (None, Some(until)) if until > self.now => format!(
                                "the access is kept by an exception until {} (safety.exceptions), \
                                 then due to be removed",
                                self.at(until)
                            ),
                            (None, _) => "the access is due to be removed".to_owned(),
                        };
                        let _ = writeln!(
                            out,
                            "  but since run {} read it: {}, seen {} (see Deprovision ledger): \
                             {now}; the role and next run below are from the older snapshot",
                            self.loaded.run,
                            clean(&episode.reason.to_string()),
                            self.at(episode.detected_at)
                        );
                    }
                    let _ = writeln!(out, "\nRole");
                    let _ = writeln!(
                        out,
                        "  desired:    {}",
                        want.spec.role.map_or("(roles not managed)", |r| r.as_str())
                    );
                    for line in want.justification.iter() {
                        let _ = writeln!(out, "  because:    {}", clean(line));
                    }
                    let groups: Vec<&str> = want.groups.iter().map(String::as_str).collect();
                    let _ = writeln!(out, "  workspace groups: {}", listed(&groups));
                } else if let Some(reason) = desired.inactive.get(&i.id) {
                    let _ = writeln!(out, "  no access: {reason}");
                } else {
                    let _ = writeln!(out, "  no access: identity is not in the desired state");
                }
            }
            None if !self.disputes().is_empty() => {
                let _ = writeln!(
                    out,
                    "  undecided: whose account this is is disputed (see Disputed match)"
                );
            }
            // Linked to someone the directory no longer has: the plan takes the
            // account's access away as theirs (no orphan: the link stands).
            None if let Some(link) = self.departed_link() => {
                let _ = writeln!(
                    out,
                    "  no access: its linked identity {} is not in the directory snapshot \
                     ({})",
                    clean(&link.identity_id),
                    if self.loaded.directory.complete {
                        "deleted from the directory"
                    } else {
                        "read incompletely: perhaps one it missed"
                    }
                );
            }
            // A duplicate of someone deleted from the directory, deprovisioned
            // with their linked account.
            None if let Some(owner) = self.departed_owner() => {
                let deprovisioned =
                    self.next.actions.iter().any(|a| {
                        a.kind.is_deprovision() && a.kind.account_id() == self.account_id()
                    });
                let _ = writeln!(
                    out,
                    "  no access: a duplicate of identity {}'s linked account {}, and {} is \
                     not in the directory snapshot ({}){}",
                    clean(&owner.identity_id),
                    clean(&owner.account_id),
                    clean(&owner.identity_id),
                    if self.loaded.directory.complete {
                        "deleted from the directory"
                    } else {
                        "read incompletely: perhaps one it missed"
                    },
                    if deprovisioned {
                        ": deprovisioned with it"
                    } else {
                        ""
                    }
                );
            }
            // As above, the linked account gone from the workspace since.
            None if let Some((identity_id, linked)) = self.settled_duplicate() => {
                let deprovisioned =
                    self.next.actions.iter().any(|a| {
                        a.kind.is_deprovision() && a.kind.account_id() == self.account_id()
                    });
                let _ = writeln!(
                    out,
                    "  no access: a duplicate of identity {}'s linked account {}, gone from the \
                     workspace since, and {} is not in the directory snapshot ({}){}",
                    clean(identity_id),
                    clean(linked),
                    clean(identity_id),
                    if self.loaded.directory.complete {
                        "deleted from the directory"
                    } else {
                        "read incompletely: perhaps one it missed"
                    },
                    if deprovisioned {
                        ": deprovisioned as theirs"
                    } else {
                        ""
                    }
                );
            }
            // What the setting makes of an orphan, unless protection or an
            // exception (told below) keeps the plan off it: "no access" alone
            // read as access about to go where `report` or `adopt` keep it.
            None => match self.account {
                Some(a) if !is_protected && exception.is_none() => {
                    let _ = writeln!(
                        out,
                        "  no access: no directory identity justifies this account; an orphan, {}",
                        orphan_fate(config.policy.unmatched_accounts, a.active)
                    );
                    if let Some(remembered) = self
                        .next
                        .disputed_candidates
                        .iter()
                        .find(|c| crate::plan::no_longer_their_duplicate(c, a))
                    {
                        let _ = writeln!(
                            out,
                            "  remembered as a duplicate of identity {} ({}), whom the directory \
                             deleted, it no longer matches them by externalId, userName or email \
                             (renamed since?): not deprovisioned as theirs",
                            clean(&remembered.identity_id),
                            clean(&remembered.user_name)
                        );
                    }
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "  no access: no directory identity justifies this account"
                    );
                }
            },
        }
        // The account is protected only because its person is: say so, and
        // what settles it, as the report's PROTECTED BY PERSON does.
        let shielded = self.account.and_then(|a| {
            self.next
                .protected_by_person
                .iter()
                .find(|p| p.account_id == a.id)
        });
        if let Some(p) = shielded {
            let admin = self.config.admin_command();
            let _ = writeln!(
                out,
                "  protected: only through protected {} (identity {}), tied to it {}; its own \
                 userName {} is not protected (safety.protected / protected_groups), yet \
                 seatwarden never touches the account, not even when it is due",
                clean(&p.user_name),
                clean(&p.identity_id),
                p.tie(),
                clean(&p.account_user_name)
            );
            let _ = writeln!(
                out,
                "  settle it: {}",
                clean(&crate::report::protected_by_person_remedies(p, &admin))
            );
        } else if is_protected {
            let _ = writeln!(
                out,
                "  protected: yes (safety.protected / protected_groups): seatwarden never touches it"
            );
        } else if let Some(exception) = exception {
            let _ = writeln!(
                out,
                "  exception: kept as it is until {} (safety.exceptions for {}): {}; then \
                 seatwarden manages it again",
                self.at(exception.until),
                clean(&exception.user_name),
                clean(&exception.reason)
            );
        }
    }

    fn link(&self, out: &mut String) {
        let _ = writeln!(out, "\nLink");
        match self.link {
            // A link made by hand names who made it, from the audit trail: the
            // first question about a link nobody remembers making.
            Some(l) if l.method == crate::model::LinkMethod::Manual => {
                let detail = crate::approval::linked_detail(&l.identity_id, &l.account_id);
                let by = self
                    .loaded
                    .manual_links
                    .iter()
                    .rev()
                    .find(|row| {
                        row.entry.detail == detail
                            || row.entry.detail.starts_with(&format!("{detail};"))
                    })
                    .map(|row| format!(" by {}", clean(&row.entry.user)))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} ↔ account {}, linked by hand (`link`){by} at {}",
                    clean(&l.identity_id),
                    clean(&l.account_id),
                    self.at(l.linked_at)
                );
            }
            Some(l) => {
                let _ = writeln!(
                    out,
                    "  {} ↔ account {}, {} at {}",
                    clean(&l.identity_id),
                    clean(&l.account_id),
                    how_linked(l.method),
                    self.at(l.linked_at)
                );
            }
            None => {
                // A link someone took away (`unlink`) is the first question about an
                // account or a person left without one.
                if let Some(row) = self.unlinked() {
                    let _ = writeln!(
                        out,
                        "  {} by {} at {} (`unlink`)",
                        clean(&row.entry.detail),
                        clean(&row.entry.user),
                        self.at(row.entry.at)
                    );
                }
                // The rule the next run's plan matches by: an externalId naming the
                // person is evidence, a userName or an email only a likeness, and
                // the one to check when the account looks like someone else's.
                let rule = match (self.identity_id(), self.account_id()) {
                    (Some(identity), Some(account)) => self
                        .next
                        .new_links
                        .iter()
                        .find(|l| l.identity_id == identity && l.account_id == account)
                        .map(|l| match l.method {
                            crate::model::LinkMethod::ExternalId => "its externalId",
                            crate::model::LinkMethod::UserName => "its userName",
                            crate::model::LinkMethod::Email => "its email",
                            crate::model::LinkMethod::Adopted => "adoption",
                            crate::model::LinkMethod::Created
                            | crate::model::LinkMethod::Manual => "a link",
                        }),
                    _ => None,
                };
                // The person is linked to another account: this one only matches
                // them, a duplicate the plan treats with the linked one.
                let linked_elsewhere = self.identity.and_then(|i| {
                    let other = self.loaded.links.iter().find(|l| l.identity_id == i.id)?;
                    let by = matched_by(&self.loaded.links, i, self.account?)?;
                    Some((other, by))
                });
                let candidate = match (rule, linked_elsewhere) {
                    (Some(rule), _) => Cow::Owned(format!(
                        " (the account below is a match candidate by {rule}, not linked yet)"
                    )),
                    (None, Some((other, by))) => Cow::Owned(format!(
                        " (the account below matches this person by {}, but they are linked \
                         to account {}: a duplicate, treated with it)",
                        clean(&by),
                        clean(&other.account_id)
                    )),
                    (None, None) => {
                        Cow::Borrowed(" (the account below is a match candidate, not linked yet)")
                    }
                };
                let _ = writeln!(
                    out,
                    "  no stored link{}",
                    if self.account.is_some() && !self.disputes().is_empty() {
                        Cow::Borrowed(" (the account below is one of the disputed candidates)")
                    } else if let Some(owner) = self.departed_owner() {
                        Cow::Owned(format!(
                            " (the plan takes the account below for a duplicate of identity {}, \
                             since deleted from the directory, who is linked to account {}: \
                             treated with it)",
                            clean(&owner.identity_id),
                            clean(&owner.account_id)
                        ))
                    } else if let Some((identity_id, linked)) = self.settled_duplicate() {
                        Cow::Owned(format!(
                            " (the plan takes the account below for a duplicate of identity {}, \
                             since deleted from the directory, whose linked account {} is gone \
                             from the workspace: treated as theirs)",
                            clean(identity_id),
                            clean(linked)
                        ))
                    } else if self.account.is_some() && self.identity.is_none() {
                        Cow::Borrowed(" (no directory identity matches the account below)")
                    } else if self.account.is_some() {
                        candidate
                    } else if !self.disputes().is_empty() {
                        Cow::Borrowed(" (the match is disputed: the candidates are below)")
                    } else {
                        Cow::Borrowed("")
                    }
                );
            }
        }
    }

    /// The newest `unlink` of this account (or, for a person without an account
    /// here, of theirs), when no link was made by hand since.
    fn unlinked(&self) -> Option<&crate::store::AuditRow> {
        let (identity_id, account_id) = (self.identity_id(), self.account_id());
        let concerns = |detail: &str| match account_id {
            Some(account) => detail.ends_with(&format!(" account {account}")),
            None => identity_id.is_some_and(|identity| {
                detail.starts_with(&format!("unlinked identity {identity} from "))
            }),
        };
        self.loaded
            .manual_links
            .iter()
            .rev()
            .find(|row| {
                let detail = row.entry.detail.split(';').next().unwrap_or_default();
                concerns(detail)
            })
            .filter(|row| row.entry.command == "unlink")
    }

    /// The next plan's disputed-match items about this person or this account. A
    /// dispute has one item: a person's lists the accounts that may be theirs, so
    /// an account is found in the item of an identity it matches; an account that
    /// matches several people has the item, so a person is found in it.
    fn disputes(&self) -> Vec<&DriftItem> {
        // A person deleted from the directory whose stored link the plan doubts
        // (the account's externalId names someone else) has the item.
        let (identity_id, account_id) = (self.person_id(), self.account_id());
        let workspace = &self.loaded.workspace;
        let directory = &self.loaded.directory;
        let matches = |identity_id: &str, account_id: &str| {
            let identity = directory.identities.iter().find(|i| i.id == identity_id);
            let account = workspace.accounts.iter().find(|a| a.id == account_id);
            identity
                .zip(account)
                .is_some_and(|(i, a)| matched_by(&self.loaded.links, i, a).is_some())
        };
        self.next
            .drift
            .iter()
            .filter(|d| d.kind == DriftKind::DisputedMatch)
            .filter(|d| {
                match (
                    identity_id,
                    d.identity_id.as_deref(),
                    d.account_id.as_deref(),
                ) {
                    (Some(id), Some(of), _) => of == id,
                    (Some(id), None, Some(account)) => matches(id, account),
                    (None, _, Some(account)) => account_id == Some(account),
                    (None, Some(of), None) => {
                        account_id.is_some_and(|account| matches(of, account))
                    }
                    _ => false,
                }
            })
            .collect()
    }

    /// `seatwarden link IDENTITY ACCOUNT` (run as `report.admin_command`), with
    /// `--replace` when either already has a stored link to someone else (the
    /// command refuses otherwise).
    fn link_command(&self, identity_id: &str, account_id: &str) -> String {
        let moves = self.loaded.links.iter().any(|l| {
            (l.identity_id == identity_id) != (l.account_id == account_id)
                && (l.identity_id == identity_id || l.account_id == account_id)
        });
        crate::model::admin_command_line(
            &self.config.admin_command(),
            "link",
            // Escaped by the command line: cleaned, they would name other ids.
            &[identity_id, account_id],
            if moves { &["--replace"] } else { &[] },
        )
    }

    /// A match the plan will not act on: every account that may be the person's,
    /// by what it matched, and the command that settles it.
    fn dispute(&self, out: &mut String) {
        let items = self.disputes();
        if items.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nDisputed match");
        match self.identity {
            Some(identity) => self.identity_dispute(out, identity, &items),
            None if !self.remembered.is_empty() => self.deleted_dispute(out, &items),
            None => self.account_dispute(out, &items),
        }
    }

    /// A person deleted from the directory whose match was disputed: the accounts
    /// the last reconcile saw match them, none deactivated until someone says
    /// which was theirs.
    fn deleted_dispute(&self, out: &mut String, items: &[&DriftItem]) {
        let Some(identity_id) = self.identity_id() else {
            return;
        };
        let accounts: Vec<(&Account, &crate::model::DisputedCandidate)> = self
            .remembered
            .iter()
            .filter_map(|c| {
                let account = self
                    .loaded
                    .workspace
                    .accounts
                    .iter()
                    .find(|a| a.id == c.account_id)?;
                Some((account, *c))
            })
            .collect();
        let _ = writeln!(
            out,
            "  DISPUTED: {} workspace account(s) may have been this person's; seatwarden \
             writes to none of them until a person chooses:",
            accounts.len()
        );
        for (account, candidate) in &accounts {
            let _ = writeln!(
                out,
                "    {} {} — matched by {} when the directory had them; {}",
                clean(&account.id),
                clean(&account.user_name),
                candidate.method.as_str(),
                if account.active {
                    "active"
                } else {
                    "deactivated"
                }
            );
        }
        for item in items {
            let _ = writeln!(out, "  why: {}", clean(&item.detail));
        }
        if let Some(leaver) = self
            .next
            .disputed_leavers
            .iter()
            .find(|l| l.identity_id == identity_id)
        {
            let _ = writeln!(
                out,
                "  LOST ACCESS ({}): the deprovisioning episode is held waiting for that \
                 choice; none of {} is deactivated until then, and the episode goes overdue \
                 like any other",
                leaver.reason,
                clean(&leaver.active.join(", "))
            );
        }
        let _ = writeln!(
            out,
            "  say which was theirs (the next run deactivates it, and the others as \
             duplicates) with one of:"
        );
        for (account, _) in &accounts {
            let _ = writeln!(out, "    {}", self.link_command(identity_id, &account.id));
        }
    }

    fn identity_dispute(&self, out: &mut String, identity: &Identity, items: &[&DriftItem]) {
        let workspace = &self.loaded.workspace;
        let leaver = self
            .next
            .disputed_leavers
            .iter()
            .find(|l| l.identity_id == identity.id);
        let named: Vec<&str> = items
            .iter()
            .filter_map(|d| d.account_id.as_deref())
            .chain(
                leaver
                    .into_iter()
                    .flat_map(|l| l.accounts.iter().map(String::as_str)),
            )
            .collect();
        let candidates: Vec<(&Account, String)> = workspace
            .accounts
            .iter()
            .filter_map(|a| {
                let by = matched_by(&self.loaded.links, identity, a);
                (by.is_some() || named.contains(&a.id.as_str()))
                    .then(|| (a, by.unwrap_or_else(|| "named by the plan".to_owned())))
            })
            .collect();
        // The identity itself is disputed: no account is theirs until a person
        // says which. So is its linked account when another person claims that
        // (by externalId). Otherwise its link stands and only other accounts are.
        let linked = self.link.map(|l| l.account_id.as_str());
        let whole = items.iter().any(|d| {
            d.account_id.is_none()
                || (d.identity_id.is_none()
                    && linked.is_some()
                    && d.account_id.as_deref() == linked)
        }) || (self.link.is_none() && items.iter().any(|d| d.identity_id.is_none()));
        if whole {
            let _ = writeln!(
                out,
                "  DISPUTED: {} workspace account(s) may be this person's; seatwarden writes \
                 to none of them, and creates none, until a person chooses:",
                candidates.len()
            );
        } else {
            let _ = writeln!(
                out,
                "  DISPUTED: other accounts match this person besides the linked one; \
                 seatwarden writes nothing to them until a person chooses:"
            );
        }
        for (account, by) in &candidates {
            let _ = writeln!(
                out,
                "    {} {} — matched by {}; {}",
                clean(&account.id),
                clean(&account.user_name),
                clean(by),
                if account.active {
                    "active"
                } else {
                    "deactivated"
                }
            );
        }
        for item in items {
            let _ = writeln!(out, "  why: {}", clean(&item.detail));
        }
        if let Some(leaver) = leaver {
            let _ = writeln!(
                out,
                "  LOST ACCESS ({}): the deprovisioning episode is held waiting for that \
                 choice; none of {} is deactivated until then, and the episode goes overdue \
                 like any other",
                leaver.reason,
                clean(&leaver.active.join(", "))
            );
        }
        if whole {
            let _ = writeln!(out, "  choose the person's account with one of:");
        } else {
            let _ = writeln!(
                out,
                "  the linked account stays theirs; if another is theirs instead, move the \
                 link (else delete or rename the other in the workspace):"
            );
        }
        for (account, _) in &candidates {
            if whole || linked != Some(account.id.as_str()) {
                let _ = writeln!(out, "    {}", self.link_command(&identity.id, &account.id));
            }
        }
    }

    fn account_dispute(&self, out: &mut String, items: &[&DriftItem]) {
        let Some(account) = self.account else {
            return;
        };
        let _ = writeln!(
            out,
            "  DISPUTED: seatwarden writes nothing to this account until a person says whose it is"
        );
        let identities: Vec<(&Identity, String)> = self
            .loaded
            .directory
            .identities
            .iter()
            .filter_map(|i| Some((i, matched_by(&self.loaded.links, i, account)?)))
            .collect();
        for (identity, by) in &identities {
            let _ = writeln!(
                out,
                "    identity {} {} — matched by {}; {}",
                clean(&identity.id),
                clean(&identity.user_name),
                clean(by),
                identity.status.as_str()
            );
        }
        for item in items {
            let _ = writeln!(out, "  why: {}", clean(&item.detail));
        }
        let _ = writeln!(out, "  choose its person with one of:");
        for (identity, _) in &identities {
            let _ = writeln!(out, "    {}", self.link_command(&identity.id, &account.id));
        }
        if identities.is_empty() {
            let _ = writeln!(out, "    {}", self.link_command("IDENTITY", &account.id));
        }
    }

    /// The account as the run's workspace snapshot shows it, and when it is
    /// deleted after a retention period.
    /// The writes about this person applied after the snapshots were read (the
    /// snapshot run's own, an approval's, a sweep's): the snapshot is taken
    /// before a run applies anything, so right after a run it shows the account
    /// as it was before.
    fn applied_since_snapshot(&self) -> Result<Vec<crate::store::JournalEntry>, StoreError> {
        let Some(read_at) = self.loaded.record.as_ref().map(|r| r.started_at) else {
            return Ok(Vec::new());
        };
        let mut applied: Vec<crate::store::JournalEntry> = self
            .store
            .actions_about(self.person_id(), self.account_id(), 50)?
            .into_iter()
            .filter(|e| e.state == crate::store::ActionState::Applied && e.updated_at >= read_at)
            .collect();
        applied.sort_by_key(|e| (e.updated_at, e.run, e.action.seq));
        Ok(applied)
    }

    fn workspace_account(
        &self,
        out: &mut String,
        since: &[crate::store::JournalEntry],
    ) -> Result<(), StoreError> {
        let _ = writeln!(
            out,
            "\nWorkspace account (run {} snapshot, read before that run applied anything)",
            self.loaded.run
        );
        if !since.is_empty() {
            let _ = writeln!(out, "  applied since this snapshot, not shown in it:");
            for entry in since {
                let _ = writeln!(
                    out,
                    "    {} {} — run {} #{} ({})",
                    entry.action.kind.name(),
                    clean(&entry.action.subject),
                    entry.run,
                    entry.action.seq,
                    self.at(entry.updated_at)
                );
            }
        }
        let Some(a) = self.account else {
            let created_since = since
                .iter()
                .any(|e| matches!(e.action.kind, ActionKind::CreateAccount { .. }));
            let none = match self.link {
                _ if !self.disputes().is_empty() => {
                    "none chosen: the match is disputed (see above)".to_owned()
                }
                Some(link) if created_since => format!(
                    "none in this snapshot: account {} was created since (above)",
                    clean(&link.account_id)
                ),
                // seatwarden drops the link of an account it deletes: one still
                // linked and not there was deleted by someone else.
                Some(link) => format!(
                    "none: the linked account {} is not in the workspace as run {} read it: \
                     deleted there by someone other than seatwarden, which drops the link of \
                     an account it deletes",
                    clean(&link.account_id),
                    self.loaded.run
                ),
                None => "none".to_owned(),
            };
            let _ = writeln!(out, "  {none}");
            return Ok(());
        };
        let _ = writeln!(out, "  id:         {}", clean(&a.id));
        let _ = writeln!(out, "  userName:   {}", clean(&a.user_name));
        let _ = writeln!(out, "  externalId: {}", opt(a.external_id.as_deref()));
        let _ = writeln!(out, "  active:     {}", a.active);
        let _ = writeln!(out, "  roles:      {}", clean(&a.roles.join(", ")));
        let groups: Vec<&str> = self
            .loaded
            .workspace
            .groups
            .iter()
            .filter(|g| g.members.contains(&a.id))
            .map(|g| g.display_name.as_str())
            .collect();
        let _ = writeln!(out, "  groups:     {}", listed(&groups));
        if let Some(delete_after) = self.config.delete_after()
            && let Some(since) = self.store.deactivated_since()?.get(&a.id)
        {
            // The clock counts only while the plan retains the account (its
            // person without access, not suspended, nothing protecting or
            // excepting it); otherwise the next reconcile forgets it, and a
            // due time already past would read as a deletion the plan does not
            // make.
            if self.next.retained.contains(&a.id) {
                let due = chrono::TimeDelta::from_std(delete_after)
                    .ok()
                    .and_then(|d| since.checked_add_signed(d));
                let _ = writeln!(
                    out,
                    "  deletion:   seen deactivated since {}; deleted from {} \
                     (deprovision.delete_after)",
                    self.at(*since),
                    due.map_or("never".to_owned(), |d| self.at(d))
                );
            } else {
                let _ = writeln!(
                    out,
                    "  deletion:   seen deactivated since {}, but the next run does not delete \
                     it (it has access, or is suspended, protected, excepted or disputed, see \
                     above) and a reconcile that reads the whole directory forgets that clock",
                    self.at(*since)
                );
            }
        }
        Ok(())
    }

    fn last_actions(&self, out: &mut String) -> Result<(), StoreError> {
        let _ = writeln!(out, "\nLast actions");
        // Of reconciles and sweeps only: a plan's or a dry run's were never sent,
        // and "Next run" says what would happen now.
        let history = self
            .store
            .actions_about(self.person_id(), self.account_id(), 10)?;
        if history.is_empty() {
            let _ = writeln!(out, "  none journaled");
        }
        for entry in &history {
            use crate::store::ActionState;
            // Kept back unsent is no failed write, and a row still planned in a
            // run that is over was never sent (the writes stopped before its
            // phase): said as the run's report says them.
            let what = match (&entry.action.held, &entry.last_error) {
                (_, Some(error))
                    if entry.state == ActionState::Failed
                        && crate::apply::not_sent(Some(error)) =>
                {
                    clean(error).into_owned()
                }
                _ if entry.state == ActionState::Planned
                    && self
                        .store
                        .run(entry.run)?
                        .is_some_and(|run| run.status != crate::store::RunStatus::Running) =>
                {
                    crate::report::NOT_SENT_UNREACHED.to_owned()
                }
                (Some(held), _) if entry.state == ActionState::Held => {
                    format!("{}: {}", entry.state, self.held(held))
                }
                (_, Some(error)) => format!("{}: {}", entry.state, clean(error)),
                _ => entry.state.to_string(),
            };
            let _ = writeln!(
                out,
                "  run {} #{} {} — {what} ({})",
                entry.run,
                entry.action.seq,
                entry.action.kind.name(),
                self.at(entry.updated_at)
            );
        }
        Ok(())
    }

    fn ledger(&self, out: &mut String) -> Result<(), StoreError> {
        let _ = writeln!(out, "\nDeprovision ledger");
        let lines = ledger_lines(self.store, self.person_id(), self.now, self.tz)?;
        if lines.is_empty() {
            // Someone the snapshot shows without access has not been "never seen
            // losing access": the ledger records a loss only as a reconcile or
            // the sweep finds an active account of theirs to deactivate.
            let lost = self.departed_link().is_some()
                || self.identity.is_some_and(|identity| {
                    policy::access_loss(identity, &self.config.policy_settings()).is_some()
                });
            if lost {
                let _ = writeln!(
                    out,
                    "  none: no episode recorded (a reconcile or the daemon's sweep opens one \
                     when it finds an active account of theirs to deactivate; a plan opens \
                     none, and an account already inactive needs none)"
                );
            } else {
                let _ = writeln!(out, "  none: never seen losing access");
            }
        }
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
        Ok(())
    }

    /// The actions about this person that a run now would plan from the stored
    /// snapshots, with what the guard and the settle window would hold.
    fn next_run(&self, out: &mut String, since: &[crate::store::JournalEntry]) {
        let loaded = self.loaded;
        let _ = writeln!(
            out,
            "\nNext run (re-planned from run {}'s snapshots)",
            loaded.run
        );
        // Re-planned from snapshots read before these were applied, the plan
        // still holds them; a run now reads the workspace afresh and would not.
        let done = |action: &crate::model::Action| {
            since.iter().find(|e| {
                e.action.kind.name() == action.kind.name()
                    && e.action.kind.account_id() == action.kind.account_id()
                    && e.action.identity_id == action.identity_id
            })
        };
        let (identity_id, account_id) = (self.person_id(), self.account_id());
        let is_mine = |a: &crate::model::Action| {
            (identity_id.is_some() && a.identity_id.as_deref() == identity_id)
                || a.kind.account_id().is_some_and(|id| Some(id) == account_id)
                || match &a.kind {
                    ActionKind::RemoveMembers { members, .. } => {
                        account_id.is_some_and(|id| members.iter().any(|m| m == id))
                    }
                    ActionKind::AddMembers { members, .. } => members.iter().any(|m| match m {
                        AccountRef::Existing { id } => Some(id.as_str()) == account_id,
                        AccountRef::Created { identity_id: who } => {
                            Some(who.as_str()) == identity_id
                        }
                    }),
                    _ => false,
                }
        };
        let mine: Vec<String> = self
            .next
            .actions
            .iter()
            .filter(|a| is_mine(a))
            .map(|a| match done(a) {
                Some(entry) => format!(
                    "  {} — already applied since the snapshot (run {} #{}, {}): not planned again",
                    a.kind.name(),
                    entry.run,
                    entry.action.seq,
                    self.at(entry.updated_at)
                ),
                None => format!(
                    "  {} — {}{}",
                    a.kind.name(),
                    membership_of_theirs(
                        &a.kind,
                        clean(&crate::report::on_clock(
                            &a.detail,
                            crate::report::deactivated_since_of(&a.kind),
                            self.tz
                        ))
                    ),
                    a.held
                        .as_ref()
                        .map(|h| format!(" [HELD: {}]", self.held(h)))
                        .unwrap_or_default()
                ),
            })
            .collect();
        // A create or rename the plan does not send: why, in place of the action.
        let not_sent = self.next.drift.iter().filter(|d| {
            plan::is_user_name_conflict(d)
                && ((identity_id.is_some() && d.identity_id.as_deref() == identity_id)
                    || (account_id.is_some() && d.account_id.as_deref() == account_id))
        });
        let mut nothing = mine.is_empty();
        let sent = self
            .next
            .actions
            .iter()
            .any(|a| a.held.is_none() && is_mine(a) && done(a).is_none());
        for line in mine {
            let _ = writeln!(out, "{line}");
        }
        // A run while the breaker is open writes nothing (`safety::apply_with_circuit`):
        // "deactivate" alone would read as done at the next run.
        if sent && let crate::circuit::CircuitState::Open { since, until } = self.circuit {
            let _ = writeln!(
                out,
                "  not sent while the circuit breaker is open (since {}{}): runs write \
                 nothing until {} (the cool-down) or `{} resume`",
                self.at(since),
                self.circuit_reason
                    .as_deref()
                    .map(|r| format!(": {}", clean(r)))
                    .unwrap_or_default(),
                self.at(until),
                self.config.admin_command()
            );
        }
        for item in not_sent {
            nothing = false;
            let _ = writeln!(out, "  {}", clean(&item.detail));
        }
        if nothing {
            let _ = writeln!(out, "  nothing");
        }
        self.user_name_wanted(out);
    }

    /// The people whose create or rename the next run does not make because this
    /// person's account holds the userName they want: one line each (a few named,
    /// the rest counted), after what the run does for the person.
    fn user_name_wanted(&self, out: &mut String) {
        let Some(account) = self.account else {
            return;
        };
        let mut waiting = self.next.drift.iter().filter(|d| {
            d.conflict
                .as_ref()
                .is_some_and(|c| c.held_by.contains(&account.id))
        });
        for item in waiting.by_ref().take(WANTED_NAMED) {
            let their = match &item.account_id {
                Some(renamed) => format!("their account {renamed} is not renamed to it"),
                None => "their account is not created".to_owned(),
            };
            let line = format!(
                "holds the userName person {} wants ({:?}): {their} while this account \
                 keeps it; two people cannot share a userName: fix it in the directory, or \
                 free it (rename or delete account {}) if it should be theirs",
                item.identity_id.as_deref().unwrap_or("?"),
                item.user_name,
                account.id
            );
            let _ = writeln!(out, "  {}", clean(&line));
        }
        let more = waiting.count();
        if more > 0 {
            let _ = writeln!(
                out,
                "  and {more} more people want its userName, each waiting likewise"
            );
        }
    }
}

/// How many of the people who want an account's userName `explain` names.
const WANTED_NAMED: usize = 5;

/// After `seatwarden link IDENTITY ACCOUNT`: one line for each other workspace
/// account that matched the person (by `externalId`, userName or email, not
/// linked to anyone else), saying what the next run does with it, re-planned from
/// the stored snapshots with the new link (as [`explain`]'s "next run"). A
/// leaver's duplicate is deactivated with the linked account; an active person's
/// is only reported. Said at link time so that nobody is surprised by a
/// deactivation of an account they did not name.
pub fn other_candidates(
    config: &Config,
    store: &Store,
    identity_id: &str,
    account_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ExplainError> {
    let loaded = Loaded::require(store, config)?;
    let Some(identity) = loaded
        .directory
        .identities
        .iter()
        .find(|i| i.id == identity_id)
    else {
        return Ok(Vec::new());
    };
    let candidates: Vec<(&Account, String)> = loaded
        .workspace
        .accounts
        .iter()
        .filter(|a| a.id != account_id)
        .filter_map(|a| {
            let by = matched_by(&loaded.links, identity, a)?;
            // Linked to someone else: that person's account, not a candidate.
            (!by.contains("stored link")).then_some((a, by))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let next = next_actions(config, store, &loaded, now)?;
    let tz = config.report_timezone()?;
    let admin = config.admin_command();
    let held = |reason: &HoldReason| match reason {
        HoldReason::Settling { settles_at, .. } => {
            format!(
                "waiting for the settle window until {}",
                crate::report::local_time(*settles_at, tz)
            )
        }
        other => clean(&other.describe(&admin).to_string()).into_owned(),
    };
    Ok(candidates
        .into_iter()
        .map(|(account, by)| {
            let named = format!(
                "{} (userName {}) matched this person by {by}",
                clean(&account.id),
                clean(&account.user_name)
            );
            let deprovision = next.actions.iter().find(|a| {
                a.kind.is_deprovision() && a.kind.account_id() == Some(account.id.as_str())
            });
            match deprovision {
                Some(action) => format!(
                    "{named}: the next run {}s it with {} because the person no longer has \
                     access ({}){}",
                    action.kind.name(),
                    clean(account_id),
                    clean(loss_of(&action.detail)),
                    action
                        .held
                        .as_ref()
                        .map(|h| format!("; held: {}", held(h)))
                        .unwrap_or_default()
                ),
                None if !account.active => {
                    format!("{named}: it is inactive already; nothing is done to it")
                }
                None if next.drift.iter().any(|d| {
                    d.kind == DriftKind::DisputedMatch
                        && d.account_id.as_deref() == Some(account.id.as_str())
                }) =>
                {
                    format!(
                        "{named}: the person has access, so it is left active and reported as \
                         a duplicate until someone deactivates it or links it to its owner"
                    )
                }
                None => format!("{named}: the next run plans nothing for it"),
            }
        })
        .collect())
}

/// What the next run does once the stored link of `account_id` is gone, re-planned
/// from the stored snapshots without it (policy, plan, guard and the settle
/// window, as [`explain`]'s "next run"): what `seatwarden unlink` says, and
/// what it refuses on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterUnlink {
    /// A rule (`externalId`, `userName`, `email`) matches the account to the
    /// same person again: the next reconcile would store the link anew, and
    /// the unlink would be undone without anyone seeing it.
    pub same_again: Option<&'static str>,
    /// The next run deprovisions the account as the linked person's (they lost
    /// access) and, unlinked, it would stay active: the action and why.
    pub deprovision_dropped: Option<String>,
    /// Unlinked, the next run deactivates or deletes the account all the same
    /// (an orphan under `policy.unmatched_accounts = "deactivate"`, say).
    pub deprovisioned: bool,
    /// What the next run does with the account (after `account ID: `).
    pub account: String,
    /// What it does with the person, after their id and userName.
    pub person: String,
}

/// The rule a link method stands for, as the report names it.
fn rule_name(method: crate::model::LinkMethod) -> &'static str {
    match method {
        crate::model::LinkMethod::ExternalId => "externalId",
        crate::model::LinkMethod::UserName => "userName",
        crate::model::LinkMethod::Email => "email",
        other => other.as_str(),
    }
}

/// A hold as a person reads it, the settle window on the report's clock.
fn held_text(reason: &HoldReason, tz: Tz, admin: &str) -> String {
    match reason {
        HoldReason::Settling { settles_at, .. } => format!(
            "waiting for the settle window until {}",
            crate::report::local_time(*settles_at, tz)
        ),
        other => clean(&other.describe(admin).to_string()).into_owned(),
    }
}

/// [`AfterUnlink`] for the stored link `link`: the next run's plan with it, and
/// without it.
pub fn after_unlink(
    config: &Config,
    store: &Store,
    link: &StoredLink,
    now: DateTime<Utc>,
) -> Result<AfterUnlink, ExplainError> {
    let mut loaded = Loaded::require(store, config)?;
    let before = next_actions(config, store, &loaded, now)?;
    loaded
        .links
        .retain(|l| !(l.account_id == link.account_id && l.identity_id == link.identity_id));
    let after = next_actions(config, store, &loaded, now)?;
    let tz = config.report_timezone()?;
    let admin = config.admin_command();
    let account_id = link.account_id.as_str();
    let identity_id = link.identity_id.as_str();
    let account = loaded
        .workspace
        .accounts
        .iter()
        .find(|a| a.id == account_id);
    let person_named = |id: &str| {
        loaded
            .directory
            .identities
            .iter()
            .find(|i| i.id == id)
            .map(|i| format!(" ({})", clean(&i.user_name)))
            .unwrap_or_default()
    };
    // Every action of the next run on the account, with its hold.
    let actions_on = |plan: &crate::model::Plan| -> Vec<String> {
        plan.actions
            .iter()
            .filter(|a| a.kind.account_id() == Some(account_id))
            .map(|a| {
                format!(
                    "{} ({}){}",
                    a.kind.name(),
                    clean(&a.detail),
                    a.held
                        .as_ref()
                        .map(|h| format!("; held: {}", held_text(h, tz, &admin)))
                        .unwrap_or_default()
                )
            })
            .collect()
    };
    let planned = |plan: &crate::model::Plan| {
        let actions = actions_on(plan);
        if actions.is_empty() {
            String::new()
        } else {
            format!("; the next run plans: {}", actions.join(", "))
        }
    };
    let matched = after.new_links.iter().find(|l| l.account_id == account_id);
    let same_again = matched
        .filter(|l| l.identity_id == identity_id)
        .map(|l| rule_name(l.method));
    let active = account.is_some_and(|a| a.active);
    let deprovisioned = |plan: &crate::model::Plan| {
        plan.actions
            .iter()
            .find(|a| a.kind.is_deprovision() && a.kind.account_id() == Some(account_id))
            .cloned()
    };
    let deprovision_dropped = match (deprovisioned(&before), deprovisioned(&after)) {
        (Some(action), None) if active => Some(format!(
            "{} ({})",
            action.kind.name(),
            clean(&action.detail)
        )),
        _ => None,
    };
    let protected = safety::plan_settings(config, &loaded.directory, now).protected;
    let disputed = |plan: &crate::model::Plan, account: bool| {
        plan.drift.iter().any(|d| {
            d.kind == DriftKind::DisputedMatch
                && if account {
                    d.account_id.as_deref() == Some(account_id)
                } else {
                    d.identity_id.as_deref() == Some(identity_id)
                }
        })
    };
    // The person whose dispute item lists `account` as a candidate, and by what.
    let candidate_of = |plan: &crate::model::Plan, account: &Account| {
        plan.drift
            .iter()
            .filter(|d| d.kind == DriftKind::DisputedMatch && d.account_id.is_none())
            .filter_map(|d| d.identity_id.as_deref())
            .find_map(|of| {
                let identity = loaded.directory.identities.iter().find(|i| i.id == of)?;
                matched_by(&loaded.links, identity, account).map(|by| (of.to_owned(), by))
            })
    };
    let account_text = match (account, matched) {
        (None, _) => {
            "it is not in the newest workspace snapshot: nothing is planned for it".to_owned()
        }
        (Some(_), Some(l)) if l.identity_id != identity_id => format!(
            "matched by {} to identity {}{}, whose account it becomes (the next reconcile \
             stores that link){}",
            rule_name(l.method),
            clean(&l.identity_id),
            person_named(&l.identity_id),
            planned(&after)
        ),
        (Some(_), Some(l)) => format!(
            "matched by {} to identity {} again{}",
            rule_name(l.method),
            clean(identity_id),
            planned(&after)
        ),
        (Some(a), None) if protected.permanently(&a.user_name) => format!(
            "linked to nobody; protected by its own userName {} (safety.protected / \
             protected_groups): left alone, as before",
            clean(&a.user_name)
        ),
        // Kept for a time, not for good: an orphan then.
        (Some(a), None) if let Some(e) = protected.exception_for(&a.user_name) => format!(
            "linked to nobody; kept as it is by an exception (safety.exceptions) until {}: \
             {}; then an orphan (policy.unmatched_accounts)",
            crate::report::local_minute(e.until, tz),
            clean(&e.reason)
        ),
        (Some(_), None) if disputed(&after, true) => format!(
            "disputed: more than one person matches it; nothing is written to it until \
             `{}` says whose it is{}",
            crate::model::admin_command_line(&admin, "link", &["IDENTITY", account_id], &[]),
            planned(&after)
        ),
        // One of several accounts a person's dispute lists: that item is the
        // person's, and names this account only in its text.
        (Some(a), None) if let Some((of, by)) = candidate_of(&after, a) => format!(
            "disputed: it may be the account of identity {}{} (matched by {by}), as may \
             others; nothing is written to it until `{}` says which is theirs{}",
            clean(&of),
            person_named(&of),
            crate::model::admin_command_line(&admin, "link", &[&of, "ACCOUNT"], &[]),
            planned(&after)
        ),
        (Some(a), None) => {
            let orphan = orphan_fate(config.policy.unmatched_accounts, a.active);
            let orphan = match config.policy.unmatched_accounts {
                // Adopted, it is nobody's to deprovision and is in no report: say
                // so, as the audit row is then the only trace of whose it was.
                policy::UnmatchedAccounts::Adopt if a.active => Cow::Owned(format!(
                    "{orphan}: if it is in fact the person's, nothing deactivates it when \
                     they leave"
                )),
                _ => Cow::Borrowed(orphan),
            };
            format!(
                "no rule (externalId, userName, email) matches it to anyone: an orphan, {orphan}{}",
                planned(&after)
            )
        }
    };
    let created = after.actions.iter().find(|a| {
        a.identity_id.as_deref() == Some(identity_id)
            && matches!(a.kind, ActionKind::CreateAccount { .. })
    });
    let theirs = after
        .new_links
        .iter()
        .find(|l| l.identity_id == identity_id && l.account_id != account_id);
    let still_linked = loaded
        .links
        .iter()
        .find(|l| l.identity_id == identity_id)
        .map(|l| l.account_id.clone());
    let person_text = if let Some(other) = still_linked {
        format!("still linked to account {}", clean(&other))
    } else if let Some(l) = theirs {
        format!(
            "matched by {} to account {}{}",
            rule_name(l.method),
            clean(&l.account_id),
            loaded
                .workspace
                .accounts
                .iter()
                .find(|a| a.id == l.account_id)
                .map(|a| format!(" ({})", clean(&a.user_name)))
                .unwrap_or_default()
        )
    } else if let Some(create) = created {
        format!(
            "gets a new account{}, created by the next reconcile{}",
            create
                .kind
                .wanted_user_name()
                .map(|n| format!(" ({})", clean(n)))
                .unwrap_or_default(),
            create
                .held
                .as_ref()
                .map(|h| format!("; held: {}", held_text(h, tz, &admin)))
                .unwrap_or_default()
        )
    } else if disputed(&after, false) {
        format!(
            "disputed: several accounts match them; `{}` lists them",
            crate::model::admin_command_line(&admin, "explain", &[identity_id], &[])
        )
    } else if let Some(e) = loaded
        .directory
        .identities
        .iter()
        .find(|i| i.id == identity_id)
        .and_then(|i| protected.exception_for(&i.user_name))
    {
        format!(
            "kept as they are by an exception (safety.exceptions) until {}: {}; has no \
             account then, and no run makes a change for them before it ends",
            crate::report::local_minute(e.until, tz),
            clean(&e.reason)
        )
    } else if loaded
        .directory
        .identities
        .iter()
        .any(|i| i.id == identity_id && protected.permanently(&i.user_name))
    {
        // A reconcile returns before anything else for a protected person: no
        // create either.
        "protected (safety.protected / protected_groups): has no account then, and the next \
         run creates none (it makes no change for a protected person)"
            .to_owned()
    } else {
        "has no account then, and the next run creates none (they have no access, or \
         `explain` says why not)"
            .to_owned()
    };
    Ok(AfterUnlink {
        same_again,
        deprovision_dropped,
        deprovisioned: deprovisioned(&after).is_some(),
        account: account_text,
        person: format!(
            "identity {}{}: {person_text}",
            clean(identity_id),
            person_named(identity_id)
        ),
    })
}

/// What the plan makes of an orphan (an account no directory identity matches)
/// under `policy.unmatched_accounts`, `active` or not.
fn orphan_fate(unmatched: policy::UnmatchedAccounts, active: bool) -> &'static str {
    match unmatched {
        policy::UnmatchedAccounts::Deactivate if active => {
            "deactivated by the next reconcile and taken out of the managed groups it is in \
             (policy.unmatched_accounts = \"deactivate\"; never deleted), through the guard's \
             thresholds as any deactivation"
        }
        policy::UnmatchedAccounts::Deactivate => {
            "inactive already, so left as it is, in its groups too (policy.unmatched_accounts \
             = \"deactivate\")"
        }
        policy::UnmatchedAccounts::Report => {
            "left as it is and reported every run as orphaned (policy.unmatched_accounts = \
             \"report\")"
        }
        policy::UnmatchedAccounts::Adopt => {
            "adopted as it is, never touched nor reported (policy.unmatched_accounts = \"adopt\")"
        }
    }
}

/// The loss of access a deprovision's detail states: "identity is suspended in
/// the directory" out of "duplicate account of …: identity is suspended in the
/// directory; account is still active".
fn loss_of(detail: &str) -> &str {
    let why = detail.rsplit(": ").next().unwrap_or(detail);
    why.split("; account").next().unwrap_or(why)
}

/// A membership action's line in one person's Next run: the action is the
/// group's (`8 member(s) missing from Finance`), which read alone says nothing of
/// what it does to this person; so it says that first.
fn membership_of_theirs<'d>(kind: &ActionKind, detail: Cow<'d, str>) -> Cow<'d, str> {
    match kind {
        ActionKind::AddMembers { group, .. } => Cow::Owned(format!(
            "added to {} (one write for the group: {detail})",
            clean(group.display_name())
        )),
        ActionKind::RemoveMembers { group, .. } => Cow::Owned(format!(
            "removed from {} (one write for the group: {detail})",
            clean(group.display_name())
        )),
        _ => detail,
    }
}

/// How a stored link came to be, as a reader names it: the attributes as the
/// workspace spells them (`userName`, not the store's `user_name`), and a link
/// seatwarden made by creating the account, or by adopting it, said so ("matched
/// by created" named no rule).
fn how_linked(method: LinkMethod) -> &'static str {
    match method {
        LinkMethod::ExternalId => "matched by externalId",
        LinkMethod::UserName => "matched by userName",
        LinkMethod::Email => "matched by email",
        LinkMethod::Created => "created by seatwarden for them",
        LinkMethod::Adopted => "adopted as it was (policy.unmatched_accounts = \"adopt\")",
        LinkMethod::Manual => "linked by hand (`link`)",
    }
}

/// What ties `account` to `identity`, as matching tries it: a stored link, the
/// `externalId`, the userName, the email; `None` when nothing does.
fn matched_by(links: &[StoredLink], identity: &Identity, account: &Account) -> Option<String> {
    let linked_elsewhere = links
        .iter()
        .find(|l| l.account_id == account.id && l.identity_id != identity.id)
        .map(|l| format!(" (stored link to identity {})", l.identity_id));
    let by = if links
        .iter()
        .any(|l| l.account_id == account.id && l.identity_id == identity.id)
    {
        "stored link"
    } else if account.external_id.as_deref() == Some(identity.id.as_str()) {
        "externalId"
    } else if crate::model::same_name(&account.user_name, &identity.user_name) {
        "userName"
    } else if crate::plan::matches_by_email(account, identity) {
        // An account with no email of its own (a workspace that names accounts
        // by email address) is found by its userName: "by email" alone would
        // send a reader to an attribute it does not have.
        let by_own_email = account
            .email
            .as_deref()
            .zip(identity.email.as_deref())
            .is_some_and(|(own, theirs)| crate::model::same_name(own, theirs));
        if by_own_email {
            "email"
        } else {
            "email (the account's userName is their email)"
        }
    } else {
        return None;
    };
    Some(format!("{by}{}", linked_elsewhere.unwrap_or_default()))
}

/// The account as the workspace shows it now (`--live`).
fn live_account(out: &mut String, live: &LiveAccount) {
    let _ = writeln!(out, "\nWorkspace account now (read live)");
    match live {
        Err(error) => {
            let _ = writeln!(out, "  could not be read: {}", clean(error));
        }
        Ok(None) => {
            let _ = writeln!(out, "  none");
        }
        Ok(Some(a)) => {
            let _ = writeln!(
                out,
                "  {} {} active={} roles={}",
                clean(&a.id),
                clean(&a.user_name),
                a.active,
                clean(&a.roles.join(", "))
            );
        }
    }
}

/// `a, b` ([`clean`]ed), or `-` for none.
fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "-".to_owned()
    } else {
        clean(&names.join(", ")).into_owned()
    }
}

/// The plan a run now would make from the stored snapshots and links, with what
/// the guard and the settle window would hold.
fn next_actions(
    config: &Config,
    store: &Store,
    loaded: &Loaded,
    now: DateTime<Utc>,
) -> Result<crate::model::Plan, StoreError> {
    let (directory, workspace) = (&loaded.directory, &loaded.workspace);
    let links: Vec<Link> = loaded
        .links
        .iter()
        .map(|l| Link {
            identity_id: l.identity_id.clone(),
            account_id: l.account_id.clone(),
        })
        .collect();
    let links = links.as_slice();
    let desired = policy::desired_state(directory, &config.policy_settings());
    let planned = plan::plan(
        &desired,
        directory,
        workspace,
        links,
        &store.disputed_candidates()?,
        &safety::plan_settings_at(config, directory, store, now)?,
    );
    let approved = safety::approved_deprovision_accounts(store)?;
    // As the run holds them: only an approval of a look-alike hold answered it.
    let approved_look_alike = safety::approved_look_alike_deprovision_accounts(store)?;
    let planned = safety::hold_look_alikes(planned, config, directory, links, &approved_look_alike);
    // As the run counts them, so that a percentage threshold holds here what the
    // run would hold.
    let managed = crate::run::managed_accounts(workspace, links, &planned);
    let input = safety::guard_input(store, now, directory.complete, managed, false)?;
    let guarded = guard::guard_approved(
        planned,
        workspace,
        &safety::guard_settings(config, &desired),
        &input,
        &approved,
    );
    // A create that met a 409 with no account in sight is held for a person, as a
    // run holds it: offering it again would be the write every run refuses.
    let out_of_sight = store.creates_out_of_sight(crate::apply::OUT_OF_SIGHT)?;
    let guarded = safety::hold_out_of_sight(guarded, &out_of_sight);
    // The settle window as the next run would see it (read only: nothing recorded).
    let keys: Vec<String> = guarded
        .actions
        .iter()
        .flat_map(guard::settle_keys)
        .collect();
    let first_seen = store.drift_first_seen(&keys)?;
    Ok(guard::hold_dependents(guard::hold_unsettled(
        guarded,
        &first_seen,
        now,
        config.settle(),
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::{Action, DriftKind, IdentityStatus, Plan};
    use crate::store::RunKind;

    /// A file directory and a workspace URL nothing answers, with `extra` (TOML
    /// sections) added; the state database beside them.
    fn configured(extra: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
        let file = dir.path().join("seatwarden.toml");
        std::fs::write(
            &file,
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
                 [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n{extra}"
            ),
        )
        .unwrap();
        let config = Config::load_with_env(&file, Some(Default::default())).unwrap();
        (dir, config)
    }

    /// A store whose one run saw `identities` and `accounts`, with a config in
    /// `report.timezone = "Europe/Berlin"`; the run started at 08:00 UTC.
    fn stored(identities: Vec<Identity>, accounts: Vec<Account>) -> (tempfile::TempDir, Config) {
        stored_with("", identities, accounts)
    }

    /// [`stored`], with `extra` (TOML sections) added to the config.
    fn stored_with(
        extra: &str,
        identities: Vec<Identity>,
        accounts: Vec<Account>,
    ) -> (tempfile::TempDir, Config) {
        let (dir, config) = configured(&format!("[report]\ntimezone = \"Europe/Berlin\"\n{extra}"));
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Plan, t0()).unwrap();
        store
            .save_directory_snapshot(
                run,
                &DirectorySnapshot {
                    identities,
                    complete: true,
                },
            )
            .unwrap();
        store
            .save_workspace_snapshot(
                run,
                &WorkspaceSnapshot {
                    accounts,
                    groups: vec![],
                },
            )
            .unwrap();
        store
            .finish_run(run, t0(), RunStatus::Succeeded, None)
            .unwrap();
        (dir, config)
    }

    /// `explain` said "as of run N" alike whether run N succeeded, was stopped,
    /// failed or was cut off before verifying its writes. It says how the run
    /// ended when it did not finish cleanly.
    #[test]
    fn a_run_that_did_not_finish_cleanly_says_how_it_ended() {
        let ended_or_running = |status: Option<(RunStatus, Option<&str>)>, still_running: bool| {
            let (_dir, config) = configured("");
            let mut store = Store::open(&config.state.path).unwrap();
            let run = store.begin_run(RunKind::Reconcile, t0()).unwrap();
            let ada = person("p1", "ada@example.com", IdentityStatus::Active);
            store
                .save_directory_snapshot(
                    run,
                    &DirectorySnapshot {
                        identities: vec![ada],
                        complete: true,
                    },
                )
                .unwrap();
            store
                .save_workspace_snapshot(run, &WorkspaceSnapshot::default())
                .unwrap();
            let later = t0() + chrono::Duration::minutes(5);
            // Still under way: its process holds the writer lock.
            let mut _writing = None;
            match status {
                Some((status, error)) => store.finish_run(run, later, status, error).unwrap(),
                None if still_running => {
                    _writing = Some(
                        crate::store::WriterLock::acquire_blocking(&config.state.path, |_| {})
                            .unwrap(),
                    );
                }
                None => {}
            }
            let text = explain(&config, &store, "ada@example.com", later).unwrap();
            text.lines().nth(1).unwrap_or_default().to_owned()
        };
        let ended = |status| ended_or_running(status, false);
        assert_eq!(ended(Some((RunStatus::Succeeded, None))), "");
        assert_eq!(
            ended(Some((RunStatus::Stopped, None))),
            "  run 1 was stopped at 2026-11-29 08:05:00 UTC before it finished (SIGTERM or \
             Ctrl-C): what it planned may not all have been sent or verified"
        );
        assert_eq!(
            ended(Some((RunStatus::Failed, Some("HTTP 503 from /Users")))),
            "  run 1 failed at 2026-11-29 08:05:00 UTC: HTTP 503 from /Users; what it planned \
             may not all have been sent or verified"
        );
        assert_eq!(
            ended(Some((
                RunStatus::Failed,
                Some(crate::store::INTERRUPTED_RUN_ERROR)
            ))),
            "  run 1 was interrupted: its process stopped before the run finished (closed at \
             2026-11-29 08:05:00 UTC), so what it planned may not all have been sent or verified"
        );
        // Recorded as running, and nobody holds the writer lock: cut off.
        assert_eq!(
            ended(None),
            "  run 1 was cut off: its process stopped before the run finished, and no later \
             run has recovered it yet; what it planned may not all have been sent or verified"
        );
        assert!(
            ended_or_running(None, true)
                .starts_with("  run 1 has not finished: it is still running"),
            "{}",
            ended_or_running(None, true)
        );
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn person(id: &str, user_name: &str, status: IdentityStatus) -> Identity {
        Identity {
            id: id.into(),
            user_name: user_name.into(),
            email: Some(user_name.into()),
            given_name: None,
            family_name: None,
            display_name: None,
            status,
            department: None,
            groups: vec![],
        }
    }

    /// Someone deleted from the directory is found by the userName their ledger
    /// episode keeps. A person deleted, re-added under another id and deleted
    /// again has two episodes under that name: the first (the older, whose
    /// account a retention deletion took with its link) hid the second, and
    /// explain said the name was not found while the plan kept the second's
    /// account by an exception naming it. Only someone with a link is found;
    /// two such are refused, naming both, as two identities of one name are.
    #[test]
    fn a_departed_person_is_found_past_an_older_episode_of_their_name() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let link = |identity: &str, account: &str| StoredLink {
            identity_id: identity.into(),
            account_id: account.into(),
            method: crate::model::LinkMethod::UserName,
            linked_at: at,
        };
        let mut loaded = Loaded {
            run: 1,
            record: None,
            cut_off: false,
            directory: DirectorySnapshot {
                identities: Vec::new(),
                complete: true,
            },
            workspace: WorkspaceSnapshot {
                accounts: vec![account("x2", "dlee@corp.example", "dlee@corp.example")],
                groups: Vec::new(),
            },
            links: vec![link("00u-second", "x2")],
            remembered: Vec::new(),
            manual_links: Vec::new(),
            departed: vec![
                ("00u-first".into(), "dana@example.com".into()),
                ("00u-second".into(), "dana@example.com".into()),
            ],
        };
        let (identity, found_link, found_account) = loaded.find("Dana@example.com", &[]).unwrap();
        assert!(identity.is_none());
        assert_eq!(
            found_link.map(|l| l.identity_id.as_str()),
            Some("00u-second")
        );
        assert_eq!(found_account.map(|a| a.id.as_str()), Some("x2"));
        // By id, as before.
        let (_, by_id, _) = loaded.find("00u-second", &[]).unwrap();
        assert!(by_id.is_some());

        loaded.links.push(link("00u-first", "x1"));
        let Err(error) = loaded.find("dana@example.com", &[]) else {
            panic!("two departed people of one name");
        };
        let error = error.to_string();
        assert!(
            error.contains("00u-first") && error.contains("00u-second"),
            "{error}"
        );
    }

    fn account(id: &str, user_name: &str, email: &str) -> Account {
        Account {
            id: id.into(),
            user_name: user_name.into(),
            external_id: None,
            given_name: None,
            family_name: None,
            display_name: None,
            email: Some(email.into()),
            active: true,
            roles: vec![],
        }
    }

    /// A person the directory holds as "ada@example.com " (white space kept) is
    /// found by the userName an operator types, as matching finds them: it said
    /// no such person, and an account named so was found by neither.
    #[test]
    fn a_person_and_an_account_with_white_space_at_an_end_are_found() {
        let mut ada = person("p1", "Ada@example.com ", IdentityStatus::Active);
        ada.email = Some(" ada@example.com".into());
        let directory = DirectorySnapshot {
            identities: vec![ada],
            complete: true,
        };
        assert_eq!(
            find_identity(&directory, "ada@example.com")
                .unwrap()
                .map(|i| i.id.as_str()),
            Some("p1")
        );
        let (_dir, config) = stored(
            vec![],
            vec![account("a1", "bo@example.com ", "bo@example.com")],
        );
        let store = Store::open(&config.state.path).unwrap();
        let text = explain(&config, &store, "bo@example.com", t0()).unwrap();
        assert!(text.contains("a1"), "{text}");
    }

    /// The scope groups named are those that brought the person in, compared as
    /// the policy compares them (exactly): a group whose name differs only in case
    /// did not, and is not named.
    #[test]
    fn the_scope_groups_named_are_those_the_policy_counted() {
        let mut ada = person("p1", "ada@example.com", IdentityStatus::Active);
        ada.groups = vec!["Contractors".into(), "taskade users".into()];
        let (_dir, config) = stored_with(
            "[policy]\nscope_groups = [\"Taskade Users\", \"Contractors\"]\n",
            vec![ada],
            vec![],
        );
        let store = Store::open(&config.state.path).unwrap();
        let text = explain(&config, &store, "p1", t0()).unwrap();
        assert!(
            text.lines()
                .any(|l| l == "  in scope: active, member of scope group Contractors"),
            "{text}"
        );
    }

    /// A leaver two accounts may belong to: explain names the dispute, every
    /// candidate with what matched it and its state, that nothing is written and
    /// the deprovisioning waits, and the commands that settle it.
    #[test]
    fn a_disputed_leaver_shows_every_candidate_and_the_link_commands() {
        let (_dir, config) = stored(
            vec![person(
                "p1",
                "ada@example.com",
                IdentityStatus::Deprovisioned,
            )],
            vec![
                account("a1", "ada@example.com", "ada@example.com"),
                account("a2", "a.lovelace@example.com", "ADA@example.com"),
            ],
        );
        let store = Store::open(&config.state.path).unwrap();

        let text = explain(&config, &store, "ada@example.com", t0()).unwrap();

        for line in [
            "  DISPUTED: 2 workspace account(s) may be this person's; seatwarden writes to none of \
             them, and creates none, until a person chooses:",
            "    a1 ada@example.com — matched by userName; active",
            "    a2 a.lovelace@example.com — matched by email; active",
            "    seatwarden link p1 a1",
            "    seatwarden link p1 a2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            text.contains(
                "LOST ACCESS (deprovisioned in the directory): the deprovisioning episode is \
                 held waiting for that choice"
            ),
            "{text}"
        );
        // No candidate is shown as theirs: that is the choice left to a person.
        assert!(
            text.contains("no stored link (the match is disputed: the candidates are below)")
                && text.contains("  none chosen: the match is disputed (see above)"),
            "{text}"
        );
    }

    /// Explain follows the plan's matching, not a copy of its rules: an account
    /// whose externalId names someone else is not shown as the person's because
    /// their userName matches it.
    #[test]
    fn the_account_shown_is_the_one_the_plan_matches() {
        let mut claimed = account("a1", "ada@example.com", "ada@example.com");
        claimed.external_id = Some("p2".into());
        let (_dir, config) = stored(
            vec![
                person("p1", "ada@example.com", IdentityStatus::Active),
                person("p2", "grace@example.com", IdentityStatus::Active),
            ],
            vec![claimed],
        );
        let store = Store::open(&config.state.path).unwrap();
        let ada = explain(&config, &store, "p1", t0()).unwrap();
        let account = explain(&config, &store, "a1", t0()).unwrap();
        assert!(
            ada.contains("read before that run applied anything)\n  none\n")
                && ada
                    .contains("create_account — identity is in scope but has no workspace account"),
            "{ada}"
        );
        assert!(account.contains("  id:         p2\n"), "{account}");
    }

    /// Looked up by the other account, the view says whose it may be and how to
    /// settle it, not that nobody justifies it.
    #[test]
    fn a_disputed_account_names_the_person_it_may_belong_to() {
        let (_dir, config) = stored(
            vec![person("p1", "ada@example.com", IdentityStatus::Active)],
            vec![
                account("a1", "ada@example.com", "ada@example.com"),
                account("a2", "a.lovelace@example.com", "ada@example.com"),
            ],
        );
        let store = Store::open(&config.state.path).unwrap();

        let text = explain(&config, &store, "a.lovelace@example.com", t0()).unwrap();

        assert!(
            text.contains("    identity p1 ada@example.com — matched by email; active"),
            "{text}"
        );
        assert!(text.contains("    seatwarden link p1 a2\n"), "{text}");
        assert!(!text.contains("no directory identity justifies"), "{text}");
        assert!(!text.contains("LOST ACCESS"), "{text}");
    }

    /// The commands that settle a dispute are spelled as people run seatwarden here
    /// (`report.admin_command`), as the alerts and the digest spell theirs.
    #[test]
    fn the_link_commands_are_run_as_the_configured_admin_command() {
        let (_dir, config) = stored_with(
            "admin_command = \"sudo -u seatwarden seatwarden --config /etc/sw.toml\"\n",
            vec![person("p1", "ada@example.com", IdentityStatus::Active)],
            vec![
                account("a1", "ada@example.com", "ada@example.com"),
                account("a2", "a.lovelace@example.com", "ada@example.com"),
            ],
        );
        let store = Store::open(&config.state.path).unwrap();

        let text = explain(&config, &store, "a.lovelace@example.com", t0()).unwrap();

        assert!(
            text.contains("    sudo -u seatwarden seatwarden --config /etc/sw.toml link p1 a2\n"),
            "{text}"
        );
        assert!(!text.contains("    seatwarden link"), "{text}");
    }

    /// Before any run stored snapshots, `explain` says to run a plan first, with
    /// the configured command.
    #[test]
    fn without_snapshots_it_says_to_run_the_configured_plan_command() {
        let (_dir, config) = configured("[report]\nadmin_command = \"sudo seatwarden-admin\"\n");
        let store = Store::open(&config.state.path).unwrap();

        assert_eq!(
            live_target(&store, &config, "ada@example.com", Utc::now()).unwrap(),
            None
        );
        let err = explain(&config, &store, "ada@example.com", t0()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no run has stored snapshots yet: run `sudo seatwarden-admin plan` first"
        );
    }

    /// The person's linked account is claimed by another person's externalId:
    /// their match is disputed whole, not "the linked account stays theirs".
    #[test]
    fn a_linked_account_another_person_claims_is_a_dispute_of_the_person() {
        let claimed = Account {
            external_id: Some("p2".into()),
            ..account("x", "x@example.com", "x@example.com")
        };
        let (_dir, config) = stored(
            vec![
                person("p1", "ann@example.com", IdentityStatus::Active),
                person("p2", "bob@example.com", IdentityStatus::Active),
            ],
            vec![claimed],
        );
        let mut store = Store::open(&config.state.path).unwrap();
        store
            .upsert_links(
                &[crate::model::NewLink {
                    identity_id: "p1".into(),
                    account_id: "x".into(),
                    method: crate::model::LinkMethod::UserName,
                }],
                t0(),
            )
            .unwrap();

        let text = explain(&config, &store, "p1", t0()).unwrap();

        assert!(
            text.contains("  DISPUTED: 1 workspace account(s) may be this person's"),
            "{text}"
        );
        assert!(!text.contains("the linked account stays theirs"), "{text}");
        assert!(text.contains("claimed by identity p1"), "{text}");
    }

    /// Times are on the report's clock, as the reports show them, with the zone.
    #[test]
    fn times_are_in_the_report_timezone() {
        let (_dir, config) = stored(
            vec![person("p1", "ada@example.com", IdentityStatus::Active)],
            vec![account("a1", "ada@example.com", "ada@example.com")],
        );
        let mut store = Store::open(&config.state.path).unwrap();
        store
            .upsert_links(
                &[crate::model::NewLink {
                    identity_id: "p1".into(),
                    account_id: "a1".into(),
                    method: crate::model::LinkMethod::UserName,
                }],
                t0(),
            )
            .unwrap();

        let text = explain(&config, &store, "p1", t0()).unwrap();

        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("(plan, 2026-11-29 09:00:00 +01:00 (CET); times in Europe/Berlin)"),
            "{text}"
        );
        assert!(
            text.contains("matched by userName at 2026-11-29 09:00:00 +01:00 (CET)"),
            "{text}"
        );
        assert!(!text.contains("UTC") && !text.contains(":00Z"), "{text}");
    }

    /// A retention delete the next run would make states since when the account
    /// has been deactivated on the report's clock, as the report shows it, not in
    /// the plan's UTC.
    #[test]
    fn a_retention_delete_in_the_next_run_is_on_the_report_clock() {
        let inactive = Account {
            active: false,
            ..account("a1", "ada@example.com", "ada@example.com")
        };
        let (_dir, config) = stored_with(
            "[deprovision]\naction = \"delete\"\ndelete_after = \"30d\"\n",
            vec![person(
                "p1",
                "ada@example.com",
                IdentityStatus::Deprovisioned,
            )],
            vec![inactive],
        );
        let mut store = Store::open(&config.state.path).unwrap();
        store
            .upsert_links(
                &[crate::model::NewLink {
                    identity_id: "p1".into(),
                    account_id: "a1".into(),
                    method: crate::model::LinkMethod::UserName,
                }],
                t0(),
            )
            .unwrap();
        // 2026-10-20 08:00 UTC: summer time in Berlin still.
        let since = t0() - chrono::Duration::days(40);
        store
            .update_deactivated(&["a1".into()], &[], since)
            .unwrap();

        let text = explain(&config, &store, "p1", t0()).unwrap();

        let next = text
            .split("\nNext run")
            .nth(1)
            .unwrap_or_else(|| panic!("no next run in:\n{text}"));
        assert!(
            next.contains(
                "  delete — identity is deprovisioned in the directory; account deactivated \
                 since 2026-10-20 10:00:00 +02:00 (CEST), past the retention of 30 days"
            ),
            "{next}"
        );
        assert!(!text.contains("UTC"), "{text}");
    }

    /// An LDAP `sn`, a department, a group, a workspace userName and a stored
    /// provider error holding a line break, a carriage return and terminal escapes
    /// stay on their own line of the view: nothing forges a `status:` line.
    #[test]
    fn values_from_the_directory_and_the_workspace_cannot_forge_lines() {
        let (_dir, config) = configured("");
        let t0 = DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let forged = "\n  status:     active\r\u{1b}[2J\u{1b}]0;title\u{7}";
        let directory = DirectorySnapshot {
            identities: vec![Identity {
                id: "p1".into(),
                user_name: "ada@example.com".into(),
                email: Some("ada@example.com".into()),
                given_name: Some("Ada".into()),
                family_name: Some(format!("Smith{forged}")),
                display_name: None,
                status: IdentityStatus::Suspended,
                department: Some(format!("R&D{forged}")),
                groups: vec![format!("Engineering{forged}")],
            }],
            complete: true,
        };
        let workspace = WorkspaceSnapshot {
            accounts: vec![Account {
                id: "a1".into(),
                user_name: "ada@example.com".into(),
                external_id: Some(format!("p1{forged}")),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                active: true,
                roles: vec![format!("Viewer{forged}")],
            }],
            groups: vec![],
        };
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
        store.save_directory_snapshot(run, &directory).unwrap();
        store.save_workspace_snapshot(run, &workspace).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: "a1".into(),
                },
                reason: DriftKind::StaleAccess,
                subject: "ada@example.com".into(),
                identity_id: Some("p1".into()),
                detail: "suspended".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, t0).unwrap();
        store.mark_in_flight(run, 0, t0).unwrap();
        store
            .mark_failed(run, 0, t0, &format!("HTTP 400: bad{forged}"))
            .unwrap();
        store
            .finish_run(run, t0, RunStatus::Succeeded, None)
            .unwrap();
        let live: LiveAccount = Err(format!("HTTP 500{forged}"));

        let text = explain_with(&config, &store, "p1", t0, Some(&live)).unwrap();

        let status_lines: Vec<&str> = text
            .lines()
            .filter(|line| line.trim_start().starts_with("status:"))
            .collect();
        assert_eq!(status_lines, ["  status:     suspended"], "{text}");
        assert!(
            !text.contains(['\u{1b}', '\r', '\u{7}']),
            "control characters reach the terminal: {text:?}"
        );
        for label in [
            "  name:",
            "  department:",
            "  groups:",
            "  externalId:",
            "  roles:",
            "  could not be read:",
        ] {
            assert!(
                text.lines()
                    .any(|line| line.starts_with(label) && line.contains("status:     active")),
                "{label} is not kept on its line: {text}"
            );
        }
        assert!(
            text.lines()
                .any(|line| line.contains("HTTP 400: bad") && line.contains("status:     active")),
            "{text}"
        );
    }
}
