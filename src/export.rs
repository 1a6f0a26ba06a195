//! The access-review export: every workspace account with its role, workspace
//! groups, the directory identity behind it (linked, else as the plan matches it:
//! a first `plan` stores no links) and the mapping that justifies its
//! access (or why none does: `orphaned`, `disputed`, `protected`), and when
//! seatwarden last changed it — "who has access to which workspace, and why", from
//! the latest stored snapshots, links and journal. Nothing is read from the
//! directory or the workspace.
//!
//! A run reads its snapshots before it applies anything, and approvals and the
//! sweep write after it: the writes applied and verified since the snapshot was
//! read (creations, deactivations, reactivations, deletions, attributes, roles,
//! group memberships) are laid over it, so an approved deactivation shows as done
//! and the accounts a run created are there, with the groups it added them to: an
//! access review that left out the newest accounts would understate access. The
//! export says as of when, on every CSV row: `snapshot_at` and `applied_through`
//! (the last write accounted for), and each account's `since_snapshot` says
//! what seatwarden did to it since (`deleted|deactivated|reactivated|created
//! TIME (run N)`): the row shows it done, and this says it is seatwarden's
//! doing since the snapshot, not what the snapshot read. An account deleted
//! since is listed, inactive, with no groups, as `deleted by seatwarden (run N)
//! after run M read the workspace: the account is gone, no access`, with the
//! person the journal names (the delete took its link): evidence of the
//! removal, not an orphan or a match for someone. A person the daemon's sweep saw lose access
//! after the snapshot was read (the deprovisioning ledger's open or verified
//! episode, detected since) is shown so (`identity is deprovisioned in the
//! directory since run N read it: …`, `identity_status` from the episode), not by
//! the mappings the older snapshot still gives them. From a directory read that
//! was incomplete, someone it left out is not called gone, nor an account only
//! they would match orphaned: the read says so instead.
//!
//! [`workspace_seed`] writes the latest stored workspace snapshot as a seed for
//! `seatwarden sandbox`, so a configuration can be rehearsed against a copy of
//! the workspace.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::model::{Account, AccountRef, ActionKind, DriftKind, Identity, IdentityStatus};
use crate::policy::PolicySettings;
use crate::store::{JournalEntry, RunId, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRow {
    pub account_id: String,
    pub user_name: String,
    pub active: bool,
    /// The account's role(s) as the workspace reported them, in its order
    /// (one a line of the CSV's cell, `lines_cell`; a list in the JSON).
    pub role: Vec<String>,
    /// Workspace groups (workspaces or folders) the account is a member of.
    pub workspace_groups: Vec<String>,
    pub identity_id: Option<String>,
    pub identity_user_name: Option<String>,
    pub identity_status: Option<String>,
    /// The mapping(s) that grant this access, `in scope: default role …`, why it
    /// should go (`…: access due to be removed` while the account is active,
    /// `…: account deactivated (no access)` once it is not — so, too, for an
    /// active person whose account is deactivated), or, for an account linked to
    /// nobody, why: `protected` (its userName in `safety.protected` or `protected_groups`:
    /// seatwarden never touches it; a linked one says so after its reason, and
    /// its removal, when due, is one to make by hand; so does an account linked to
    /// a protected person, protected only through them; an active account an
    /// exception in force keeps says `access kept by an exception
    /// (safety.exceptions) until T: REASON`, after `orphaned; ` for an orphan
    /// `policy.unmatched_accounts = "deactivate"` would deactivate), `disputed: …` (it may be the account of the
    /// person named; `link`, run as `report.admin_command`, settles it, with
    /// `--replace` when that person is linked to another account; a person
    /// named who left is said to have, as their access stays until then) or
    /// `orphaned` (no directory identity matches it).
    pub justification: String,
    /// The last action seatwarden applied to the account (its membership changes
    /// included), else when it was linked.
    pub last_change: Option<DateTime<Utc>>,
    /// What seatwarden did to the account after the snapshot was read, and when:
    /// `deleted|deactivated|reactivated|created YYYY-MM-DD HH:MM:SS UTC (run N)`, the
    /// latest such write; `None` when it did none of them. The other columns
    /// already show the account so (a deleted one inactive, with no groups);
    /// this says that it is seatwarden's doing since the snapshot, not what the
    /// snapshot read.
    pub since_snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessExport {
    /// The run whose snapshots this is.
    pub run_id: RunId,
    /// When the snapshots were read.
    pub snapshot_at: DateTime<Utc>,
    /// When the last write applied since the snapshot was, which the rows show
    /// done; `None` when nothing was applied since.
    pub applied_through: Option<DateTime<Utc>>,
    pub accounts: Vec<AccessRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the state database for the export: {0}")]
    Store(#[from] StoreError),
    #[error(
        "no run with directory and workspace snapshots is recorded yet; run `{admin_command} plan` first"
    )]
    NoSnapshots {
        /// `report.admin_command`, which the message tells to run.
        admin_command: String,
    },
    #[error("{}", crate::explain::only_refused(*run, admin_command))]
    OnlyRefused {
        /// The newest run with a report, whose directory was refused.
        run: RunId,
        admin_command: String,
    },
    #[error("writing the CSV export: {0}")]
    Csv(#[from] csv::Error),
}

impl crate::retry::Transient for ExportError {
    fn is_transient(&self) -> bool {
        false
    }
}

fn in_scope(groups: &[String], policy: &PolicySettings) -> bool {
    policy.scope_groups.is_empty() || policy.scope_groups.iter().any(|g| groups.contains(g))
}

/// What becomes of the access of someone who lost it. A deactivated account has
/// none left: a review that called its removal pending would count it among the
/// open findings and send a reviewer after access that is already gone.
fn removal(active: bool) -> &'static str {
    if active {
        "access due to be removed"
    } else {
        "account deactivated (no access)"
    }
}

/// Lays the writes applied since the snapshot over its accounts and group
/// memberships, oldest first. The journal does not say which id the workspace gave
/// an account it created: the link stored with the create does (`created`:
/// identity id → account id). A create whose link has gone since (the account was
/// deleted again, or relinked) is left out, as is a membership of such an account.
fn apply_since<'a>(
    accounts: &mut Vec<Account>,
    groups_of: &mut HashMap<String, Vec<String>>,
    applied: &'a [JournalEntry],
    created: &HashMap<&str, &str>,
) -> HashMap<String, Lifecycle<'a>> {
    let mut lifecycle = HashMap::new();
    let mut record = |account_id: &str, what, entry: &'a JournalEntry| {
        lifecycle.insert(
            account_id.to_owned(),
            Lifecycle {
                what,
                at: entry.updated_at,
                run: entry.run,
                identity_id: entry.action.identity_id.as_deref(),
            },
        );
    };
    let member_id = |member: &AccountRef| match member {
        AccountRef::Existing { id } => Some(id.clone()),
        AccountRef::Created { identity_id } => {
            created.get(identity_id.as_str()).map(|id| (*id).to_owned())
        }
    };
    for entry in applied {
        match &entry.action.kind {
            ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. } => {
                if let Some(account) = accounts.iter_mut().find(|a| &a.id == account_id) {
                    account.active = false;
                }
                if matches!(entry.action.kind, ActionKind::Delete { .. }) {
                    groups_of.remove(account_id);
                    record(account_id, Change::Deleted, entry);
                } else {
                    record(account_id, Change::Deactivated, entry);
                }
            }
            ActionKind::Reactivate { account_id } => {
                if let Some(account) = accounts.iter_mut().find(|a| &a.id == account_id) {
                    account.active = true;
                }
                record(account_id, Change::Reactivated, entry);
            }
            ActionKind::CreateAccount { identity_id, spec } => {
                let Some(id) = created.get(identity_id.as_str()) else {
                    continue;
                };
                record(id, Change::Created, entry);
                if accounts.iter().any(|a| a.id == *id) {
                    continue;
                }
                accounts.push(Account::created((*id).to_owned(), spec));
            }
            ActionKind::UpdateAttributes {
                account_id,
                changes,
            } => {
                if let Some(account) = accounts.iter_mut().find(|a| &a.id == account_id) {
                    for change in changes {
                        change.apply_to(account);
                    }
                }
            }
            ActionKind::SetRole { account_id, to, .. } => {
                if let Some(account) = accounts.iter_mut().find(|a| &a.id == account_id) {
                    account.roles = vec![to.to_string()];
                }
            }
            ActionKind::AddMembers { group, members } => {
                for id in members.iter().filter_map(member_id) {
                    let groups = groups_of.entry(id).or_default();
                    if !groups.iter().any(|g| g == group.display_name()) {
                        groups.push(group.display_name().to_owned());
                    }
                }
            }
            ActionKind::RemoveMembers { group, members } => {
                for id in members {
                    if let Some(groups) = groups_of.get_mut(id) {
                        groups.retain(|g| g != group.display_name());
                    }
                }
            }
            ActionKind::CreateGroup { .. } => {}
        }
    }
    lifecycle
}

/// The last of the writes that change whether an account exists or is active,
/// applied to it since the snapshot (see [`AccessRow::since_snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lifecycle<'a> {
    what: Change,
    at: DateTime<Utc>,
    run: RunId,
    /// The person the write was for, as the journal names them: a delete takes
    /// the account's link with it, so this is who a deleted account was.
    identity_id: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Deactivated,
    Reactivated,
    Deleted,
}

impl Lifecycle<'_> {
    fn text(&self) -> String {
        let what = match self.what {
            Change::Created => "created",
            Change::Deactivated => "deactivated",
            Change::Reactivated => "reactivated",
            Change::Deleted => "deleted",
        };
        // As the CSV's time columns write it, with its zone: this cell is text.
        format!("{what} {} UTC (run {})", csv_time(self.at), self.run)
    }
}

/// When seatwarden last applied a change to each account: an action on the
/// account itself, or a membership change (added to or removed from a group)
/// that named it. A member the same run created is named by its person in the
/// journal, and found through that person's stored link.
fn last_change_by_account(
    store: &Store,
    links: &[crate::store::StoredLink],
) -> Result<HashMap<String, DateTime<Utc>>, ExportError> {
    let mut changes = store.last_applied_change_by_account()?;
    let linked: HashMap<&str, &str> = links
        .iter()
        .map(|l| (l.identity_id.as_str(), l.account_id.as_str()))
        .collect();
    for entry in store.applied_membership_changes()? {
        let members: Vec<&str> = match &entry.action.kind {
            ActionKind::AddMembers { members, .. } => members
                .iter()
                .filter_map(|member| match member {
                    AccountRef::Existing { id } => Some(id.as_str()),
                    AccountRef::Created { identity_id } => {
                        linked.get(identity_id.as_str()).copied()
                    }
                })
                .collect(),
            ActionKind::RemoveMembers { members, .. } => {
                members.iter().map(String::as_str).collect()
            }
            _ => continue,
        };
        for id in members {
            let last = changes.entry(id.to_owned()).or_insert(entry.updated_at);
            *last = (*last).max(entry.updated_at);
        }
    }
    Ok(changes)
}

/// Whether `account` may be `identity`'s, as matching tries it: the externalId,
/// the userName, the email (the account's, or its userName).
fn may_be_theirs(identity: &Identity, account: &Account) -> bool {
    account.external_id.as_deref() == Some(identity.id.as_str())
        || crate::model::same_name(&account.user_name, &identity.user_name)
        || crate::plan::matches_by_email(account, identity)
}

/// The matches the plan finds that no stored link records yet: after a first
/// `plan`, every account's; later, those of people matched since the last
/// reconcile (a reconcile stores them as it applies). Without them an access
/// review would list the accounts of people in the directory as orphaned.
pub(crate) fn matched_unlinked(
    config: &Config,
    directory: &crate::model::DirectorySnapshot,
    workspace: &crate::model::WorkspaceSnapshot,
    links: &[crate::store::StoredLink],
    remembered: &[crate::model::DisputedCandidate],
    now: DateTime<Utc>,
) -> Vec<crate::model::NewLink> {
    let links: Vec<crate::model::Link> = links
        .iter()
        .map(|l| crate::model::Link {
            identity_id: l.identity_id.clone(),
            account_id: l.account_id.clone(),
        })
        .collect();
    let desired = crate::policy::desired_state(directory, &config.policy_settings());
    crate::plan::plan(
        &desired,
        directory,
        workspace,
        &links,
        remembered,
        &crate::safety::plan_settings(config, directory, now),
    )
    .new_links
}

/// The newest run with stored snapshots (not one whose directory was refused).
fn latest_snapshot_run(
    store: &Store,
    config: &Config,
) -> Result<(RunId, crate::store::RunRecord), ExportError> {
    let Some(run_id) = store.latest_snapshot_run()? else {
        return Err(match crate::explain::newest_run_if_refused(store)? {
            Some(run) => ExportError::OnlyRefused {
                run,
                admin_command: config.admin_command(),
            },
            None => no_snapshots(config),
        });
    };
    let run = store.run(run_id)?.ok_or_else(|| no_snapshots(config))?;
    Ok((run_id, run))
}

fn no_snapshots(config: &Config) -> ExportError {
    ExportError::NoSnapshots {
        admin_command: config.admin_command(),
    }
}

/// Builds the export from the latest run that stored both snapshots (not one
/// whose directory was refused as a source fault), with the writes applied since
/// laid over them.
pub fn access(store: &Store, config: &Config) -> Result<AccessExport, ExportError> {
    access_at(store, config, Utc::now())
}

/// [`access`] with the exceptions (`safety.exceptions`) in force at `now`.
pub fn access_at(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<AccessExport, ExportError> {
    let policy: &PolicySettings = &config.policy_settings();
    let admin_command = config.admin_command();
    let (run_id, run) = latest_snapshot_run(store, config)?;
    let directory = store
        .load_directory_snapshot(run_id)?
        .ok_or_else(|| no_snapshots(config))?;
    let workspace = store
        .load_workspace_snapshot(run_id)?
        .ok_or_else(|| no_snapshots(config))?;
    let links = store.links()?;
    let changes = last_change_by_account(store, &links)?;
    // The snapshots are read when the run starts, before it applies anything.
    let applied = store.applied_since(run.started_at)?;
    let protected = crate::safety::plan_settings(config, &directory, now).protected;
    // A person deleted from the directory is known by the directory userName
    // their open deprovision keeps, as the reconcile knows them.
    let protected = crate::safety::with_departed(protected, &directory, store)?;
    // Disputes as the snapshot run found them: an account's own item, or a
    // person's, whose candidate accounts are those that may be theirs.
    let disputes = store.drift(run_id)?;
    let disputed_by_identity: Vec<&str> = disputes
        .iter()
        .filter(|d| d.kind == DriftKind::DisputedMatch && d.account_id.is_none())
        .filter_map(|d| d.identity_id.as_deref())
        .collect();
    // A disputed person since deleted from the directory: only the memory of
    // their dispute says whose the accounts may be.
    let remembered = store.disputed_candidates()?;
    // People the daemon's sweep saw lose access after the snapshot was read (it
    // reads the directory's changes, and stores no snapshot): the snapshot still
    // shows them active and in scope, and its mappings would justify access that is
    // due to be removed, or call a deactivation the sweep made one of someone
    // active in the directory.
    let ledger = store.current_deprovisions()?;
    let left_since: HashMap<&str, crate::model::LossReason> = ledger
        .iter()
        .filter(|entry| entry.detected_at >= run.started_at)
        .map(|entry| (entry.identity_id.as_str(), entry.reason))
        .collect();

    let identities: HashMap<&str, &crate::model::Identity> = directory
        .identities
        .iter()
        .map(|i| (i.id.as_str(), i))
        .collect();
    let link_of: HashMap<&str, &crate::store::StoredLink> =
        links.iter().map(|l| (l.account_id.as_str(), l)).collect();
    let new_links = matched_unlinked(config, &directory, &workspace, &links, &remembered, now);
    let matched: HashMap<&str, &str> = new_links
        .iter()
        .map(|l| (l.account_id.as_str(), l.identity_id.as_str()))
        .collect();
    let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
    for group in &workspace.groups {
        for member in &group.members {
            groups_of
                .entry(member.clone())
                .or_default()
                .push(group.display_name.clone());
        }
    }
    let created: HashMap<&str, &str> = links
        .iter()
        .map(|l| (l.identity_id.as_str(), l.account_id.as_str()))
        .collect();
    let mut current = workspace.accounts.clone();
    let lifecycle = apply_since(&mut current, &mut groups_of, &applied, &created);
    // By its own userName, as a reconcile judges it: an account whose email alone
    // matches a protected name is deactivated like any orphan, so calling it
    // protected would tell the reviewer the opposite of what happens to it.
    // An exception in force is no protection to report: it ends.
    let is_protected = |account: &Account| protected.permanently(&account.user_name);
    let unlinked = |account: &Account| -> String {
        if is_protected(account) {
            return "protected".to_owned();
        }
        let mut claimed_by: Vec<&str> = disputes
            .iter()
            .filter(|d| {
                d.kind == DriftKind::DisputedMatch && d.account_id.as_deref() == Some(&account.id)
            })
            .filter_map(|d| d.identity_id.as_deref())
            .chain(disputed_by_identity.iter().copied().filter(|id| {
                identities
                    .get(id)
                    .is_some_and(|identity| may_be_theirs(identity, account))
            }))
            .chain(
                remembered
                    .iter()
                    .filter(|c| c.account_id == account.id)
                    .map(|c| c.identity_id.as_str()),
            )
            .collect();
        claimed_by.sort_unstable();
        claimed_by.dedup();
        if claimed_by.is_empty() {
            return if let (true, true, Some(exception)) = (
                account.active,
                config.policy.unmatched_accounts == crate::policy::UnmatchedAccounts::Deactivate,
                protected.exception_for(&account.user_name),
            ) {
                // Deactivated as an orphan but for the exception: a reviewer
                // must see that its access stays, and until when.
                format!(
                    "orphaned; access kept by an exception (safety.exceptions) until {}: {}; \
                     seatwarden deactivates it then",
                    exception
                        .until
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    exception.reason
                )
            } else if directory.complete {
                "orphaned".to_owned()
            } else {
                format!(
                    "orphaned in run {run_id}'s directory read, which was incomplete: \
                     its person may be one the read missed"
                )
            };
        }
        // A claimant who lost access makes the account, if theirs, a leaver's
        // access that stays: nothing disputed is deprovisioned until `link`.
        let gone: Vec<String> = claimed_by
            .iter()
            .filter_map(|id| match identities.get(id) {
                None if !directory.complete => Some(format!(
                    "{id} is not in run {run_id}'s directory read, which was incomplete"
                )),
                None => Some(format!("{id} is no longer in the directory")),
                Some(i) if i.status != IdentityStatus::Active => {
                    Some(format!("{id} is {} in the directory", i.status.as_str()))
                }
                Some(i) if !in_scope(&i.groups, policy) => Some(format!("{id} is out of scope")),
                Some(_) => left_since
                    .get(id)
                    .map(|reason| format!("{id} is {reason} since run {run_id} read it")),
            })
            .collect();
        // With one claimant the command is spelled out; with several, which of
        // them is the reviewer's to find out first.
        let person = match claimed_by.as_slice() {
            [only] => *only,
            _ => "PERSON",
        };
        // A claimant linked to another account already (a duplicate of theirs):
        // `link` refuses to move that link without --replace, so the command
        // without it would only be refused.
        let linked_elsewhere: Vec<String> = claimed_by
            .iter()
            .filter_map(|id| {
                created
                    .get(id)
                    .filter(|linked| **linked != account.id)
                    .map(|linked| format!("{id} is linked to account {linked}"))
            })
            .collect();
        let replace: &[&str] = if claimed_by.len() == 1 && !linked_elsewhere.is_empty() {
            &["--replace"]
        } else {
            &[]
        };
        let mut why = format!(
            "disputed: may be the account of {}; `{}` settles it if it is theirs",
            claimed_by.join(", "),
            crate::model::admin_command_line(
                &admin_command,
                "link",
                &[person, &account.id],
                replace
            )
        );
        if !linked_elsewhere.is_empty() {
            why.push_str(&format!(
                " ({}: --replace moves that link)",
                linked_elsewhere.join(", ")
            ));
        }
        if !gone.is_empty() {
            why.push_str(&format!(
                "; {}: if it is theirs, a leaver keeps access until then",
                gone.join(", ")
            ));
        }
        why
    };

    let mut accounts: Vec<AccessRow> = current
        .iter()
        .map(|account| {
            let link = link_of.get(account.id.as_str());
            let since = lifecycle.get(account.id.as_str());
            // A delete takes the account's link with it, and what the plan would
            // match the account to now is no one's: it is gone. The journal says
            // whose it was.
            let deleted = since.filter(|since| since.what == Change::Deleted);
            let identity_id = match deleted {
                Some(deleted) => link.map(|l| l.identity_id.as_str()).or(deleted.identity_id),
                None => link
                    .map(|l| l.identity_id.as_str())
                    .or_else(|| matched.get(account.id.as_str()).copied()),
            };
            let identity = identity_id.and_then(|id| identities.get(id).copied());
            // Every account of a protected person is left alone as the account's
            // own protection leaves it (the plan judges a person by their
            // directory userName): one whose own userName is not protected is
            // protected only through its person, as the report's PROTECTED BY
            // PERSON lists it.
            let through_person = deleted.is_none()
                && !is_protected(account)
                && identity.is_some_and(|i| protected.permanently(&i.user_name));
            let exception = [
                Some(account.user_name.as_str()),
                identity.map(|i| i.user_name.as_str()),
                identity_id.and_then(|id| protected.departed_name(id)),
            ]
            .into_iter()
            .flatten()
            .find_map(|name| protected.exception_for(name));
            let kept = exception.map(|e| {
                format!(
                    "access kept by an exception (safety.exceptions) until {}: {}; seatwarden \
                     removes it then",
                    e.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    e.reason
                )
            });
            // A protected account is never written to: a removal "due" would never
            // come, and a reviewer must know it is theirs to take away.
            let removal = |active: bool| -> Cow<'static, str> {
                if let (true, Some(kept)) = (active, &kept) {
                    return Cow::Owned(kept.clone());
                }
                Cow::Borrowed(if active && is_protected(account) {
                    "access due to be removed by hand: the account is protected \
                     (safety.protected / protected_groups), which seatwarden never changes"
                } else if active && through_person {
                    "access due to be removed by hand: the person is protected \
                     (safety.protected / protected_groups), so seatwarden never changes \
                     their accounts"
                } else {
                    removal(active)
                })
            };
            let justification = match (identity_id, identity) {
                // Not as the snapshot read it (an account that exists, linked to
                // someone or orphaned): a reviewer would look for access to take
                // away that seatwarden already took, with the account.
                _ if deleted.is_some() => format!(
                    "deleted by seatwarden (run {}) after run {run_id} read the workspace: \
                     the account is gone, no access",
                    deleted.map(|d| d.run).unwrap_or_default()
                ),
                (None, _) => unlinked(account),
                // A partial read (a SCIM directory's listing short twice) leaves
                // people out who have not left: a run holds their removal, and
                // the review must not report it as due.
                (Some(id), None) if !directory.complete => format!(
                    "linked to {id}, who is not in run {run_id}'s directory read, which was \
                     incomplete: not known to have left (a run holds the removal of access \
                     until a whole read)"
                ),
                (Some(id), None) => format!(
                    "linked to {id} which is no longer in the directory: {}",
                    removal(account.active)
                ),
                (Some(_), Some(identity)) if identity.status != IdentityStatus::Active => {
                    format!(
                        "identity is {} in the directory: {}",
                        identity.status.as_str(),
                        removal(account.active)
                    )
                }
                (Some(_), Some(identity)) if !in_scope(&identity.groups, policy) => {
                    format!("identity is out of scope: {}", removal(account.active))
                }
                (Some(id), Some(_)) if left_since.contains_key(id) => {
                    let reason = left_since
                        .get(id)
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    format!(
                        "identity is {reason} since run {run_id} read it: {}",
                        removal(account.active)
                    )
                }
                // The mappings say what the account would grant, but a deactivated
                // account grants nothing: listing them would show access that is not.
                (Some(_), Some(_)) if !account.active => {
                    format!("identity is active in the directory: {}", removal(false))
                }
                (Some(_), Some(identity)) => {
                    let mappings: Vec<String> = policy
                        .mappings
                        .iter()
                        .filter(|m| identity.groups.contains(&m.group))
                        .map(|m| format!("{} → {} as {}", m.group, m.workspace_group, m.role))
                        .collect();
                    if mappings.is_empty() {
                        format!("in scope: default role {}", policy.default_role)
                    } else {
                        mappings.join("; ")
                    }
                }
            };
            let justification = if identity_id.is_some()
                && deleted.is_none()
                && is_protected(account)
                && !justification.contains("protected")
            {
                format!(
                    "{justification}; protected (safety.protected / protected_groups): \
                     seatwarden never changes it"
                )
            } else if through_person && !justification.contains("protected") {
                format!(
                    "{justification}; protected only through its person (safety.protected / \
                     protected_groups name them, not the account): seatwarden never changes \
                     it (the report lists it under PROTECTED BY PERSON)"
                )
            } else {
                justification
            };
            let mut workspace_groups = groups_of.remove(account.id.as_str()).unwrap_or_default();
            workspace_groups.sort();
            AccessRow {
                account_id: account.id.clone(),
                user_name: account.user_name.clone(),
                active: account.active,
                role: account.roles.clone(),
                workspace_groups,
                identity_id: identity_id.map(str::to_owned),
                identity_user_name: identity.map(|i| i.user_name.clone()),
                identity_status: identity.map(|i| {
                    use crate::model::LossReason;
                    match left_since.get(i.id.as_str()) {
                        Some(reason @ (LossReason::Suspended | LossReason::Deprovisioned)) => {
                            reason.as_str().to_owned()
                        }
                        Some(LossReason::Deleted) => "deleted".to_owned(),
                        _ => i.status.as_str().to_owned(),
                    }
                }),
                justification,
                last_change: changes
                    .get(&account.id)
                    .copied()
                    .or_else(|| link.map(|l| l.linked_at)),
                since_snapshot: since.map(Lifecycle::text),
            }
        })
        .collect();
    // By userName, then by id: two accounts whose userNames differ only in case
    // (a workspace that does not keep them unique so) keep one order from one
    // export to the next, whatever order the workspace listed them in.
    accounts.sort_by_cached_key(|a| (a.user_name.to_lowercase(), a.account_id.clone()));
    Ok(AccessExport {
        run_id,
        snapshot_at: run.started_at,
        applied_through: applied.last().map(|e| e.updated_at),
        accounts,
    })
}

/// A CSV cell a spreadsheet shows as text. Folder names and hand-made userNames are
/// chosen by workspace members, and a cell starting with `=`, `+`, `-`, `@`, a tab or
/// a carriage return is a formula to Excel and LibreOffice (`=HYPERLINK(…)` would
/// run when an auditor opens the export); such a cell is prefixed with `'`, as
/// OWASP advises. So is every part of it after a `;` or a line break: where the
/// list separator is `;` (Excel in much of Europe opens a `.csv` so), the file is
/// split there and the commas' quoting means nothing, so a folder named
/// `Team;=HYPERLINK(…)` would start a cell of its own; and each group of a
/// `workspace_groups` cell is a line of it, which a reader that splits lines
/// starts a cell with. The JSON export carries every value unchanged.
fn inert(value: &str) -> Cow<'_, str> {
    let is_formula = |c: char| matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r');
    let starts_part = |previous: Option<char>| matches!(previous, None | Some(';' | '\n' | '\r'));
    let mut previous = None;
    let needs_marks = value.chars().any(|c| {
        let marked = starts_part(previous) && is_formula(c);
        previous = Some(c);
        marked
    });
    if !needs_marks {
        return Cow::Borrowed(value);
    }
    let mut marked = String::with_capacity(value.len() + 4);
    let mut previous = None;
    for c in value.chars() {
        if starts_part(previous) && is_formula(c) {
            marked.push('\'');
        }
        marked.push(c);
        previous = Some(c);
    }
    Cow::Owned(marked)
}

/// A `workspace_groups` or `role` cell: one name a line, so a group named
/// `Legal;Ops` is told from the two groups `Legal` and `Ops`, and a role the
/// provider named with a `,` from two roles (joined with `,`, they were not).
/// A name's own backslash is written `\\`, its line feed `\n` and its carriage
/// return `\r`, so each line is one whole name and reads back as it.
fn lines_cell(names: &[String]) -> String {
    let escaped: Vec<Cow<'_, str>> = names
        .iter()
        .map(|name| {
            if name.contains(['\\', '\n', '\r']) {
                Cow::Owned(
                    name.replace('\\', "\\\\")
                        .replace('\n', "\\n")
                        .replace('\r', "\\r"),
                )
            } else {
                Cow::Borrowed(name.as_str())
            }
        })
        .collect();
    escaped.join("\n")
}

/// A time in a CSV cell: UTC to the second, as `2026-12-04 09:30:00`, the form
/// Excel and LibreOffice read as a date and time (RFC 3339's `T`, fraction and
/// offset leave it text to them, which an auditor cannot sort or filter by
/// date). The zone is the README's and `--help`'s to say: a spreadsheet reads a
/// cell with one as text. Fixed width, so it sorts as text too.
fn csv_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

impl AccessExport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// One row per account; roles and groups one a line of their cell
    /// ([`lines_cell`]);
    /// times UTC to the second ([`csv_time`]); `snapshot_at` and
    /// `applied_through` repeated on every row.
    pub fn to_csv(&self) -> Result<String, ExportError> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record([
            "account_id",
            "user_name",
            "active",
            "role",
            "workspace_groups",
            "identity_id",
            "identity_user_name",
            "identity_status",
            "justification",
            "last_change",
            "snapshot_at",
            "applied_through",
            "since_snapshot",
        ])?;
        // On every row: a CSV has no header block, and an extract of rows kept
        // for an audit still says as of when.
        let snapshot_at = csv_time(self.snapshot_at);
        let applied_through = self.applied_through.map(csv_time).unwrap_or_default();
        for row in &self.accounts {
            let roles = lines_cell(&row.role);
            let groups = lines_cell(&row.workspace_groups);
            let cells = [
                inert(&row.account_id),
                inert(&row.user_name),
                Cow::Borrowed(if row.active { "true" } else { "false" }),
                inert(&roles),
                inert(&groups),
                inert(row.identity_id.as_deref().unwrap_or("")),
                inert(row.identity_user_name.as_deref().unwrap_or("")),
                inert(row.identity_status.as_deref().unwrap_or("")),
                inert(&row.justification),
                Cow::Owned(row.last_change.map(csv_time).unwrap_or_default()),
                Cow::Borrowed(snapshot_at.as_str()),
                Cow::Borrowed(applied_through.as_str()),
                Cow::Borrowed(row.since_snapshot.as_deref().unwrap_or("")),
            ];
            writer.write_record(cells.iter().map(|cell| cell.as_bytes()))?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| ExportError::Csv(e.into_error().into()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The workspace as the latest run with snapshots read it, before that run's
/// writes, as a seed for `seatwarden sandbox --seed`: `{"users": [SCIM Users],
/// "groups": [SCIM Groups]}` with the workspace's own ids. A configuration can
/// then be rehearsed against a copy of the real workspace with nothing of it
/// written. Roles are written as core `roles` (the sandbox's), whatever
/// `workspace.role_attribute` read them from. A group seatwarden neither
/// manages nor reads roles from has the members the Groups listing showed: it
/// is not read on its own, so a workspace that leaves `members` out of listings
/// leaves it empty here.
pub fn workspace_seed(store: &Store, config: &Config) -> Result<WorkspaceSeed, ExportError> {
    let (run_id, run) = latest_snapshot_run(store, config)?;
    let workspace = store
        .load_workspace_snapshot(run_id)?
        .ok_or_else(|| no_snapshots(config))?;
    Ok(WorkspaceSeed {
        run_id,
        snapshot_at: run.started_at,
        seed: seed_json(&workspace),
    })
}

/// [`workspace_seed`]'s answer: the seed, and which run read it when.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceSeed {
    pub run_id: RunId,
    pub snapshot_at: DateTime<Utc>,
    pub seed: serde_json::Value,
}

fn seed_json(workspace: &crate::model::WorkspaceSnapshot) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let users: Vec<Value> = workspace
        .accounts
        .iter()
        .map(|account| {
            let mut user = Map::new();
            user.insert("schemas".into(), json!([SCHEMA_USER]));
            user.insert("id".into(), account.id.clone().into());
            user.insert("userName".into(), account.user_name.clone().into());
            if let Some(external_id) = &account.external_id {
                user.insert("externalId".into(), external_id.clone().into());
            }
            let mut name = Map::new();
            if let Some(given) = &account.given_name {
                name.insert("givenName".into(), given.clone().into());
            }
            if let Some(family) = &account.family_name {
                name.insert("familyName".into(), family.clone().into());
            }
            if !name.is_empty() {
                user.insert("name".into(), Value::Object(name));
            }
            if let Some(display) = &account.display_name {
                user.insert("displayName".into(), display.clone().into());
            }
            if let Some(email) = &account.email {
                user.insert(
                    "emails".into(),
                    json!([{"value": email, "type": "work", "primary": true}]),
                );
            }
            user.insert("active".into(), account.active.into());
            if !account.roles.is_empty() {
                let roles: Vec<Value> = account
                    .roles
                    .iter()
                    .enumerate()
                    .map(|(i, role)| json!({"value": role, "primary": i == 0}))
                    .collect();
                user.insert("roles".into(), Value::Array(roles));
            }
            Value::Object(user)
        })
        .collect();
    let groups: Vec<Value> = workspace
        .groups
        .iter()
        .map(|group| {
            let members: Vec<Value> = group
                .members
                .iter()
                .map(|id| json!({"value": id, "type": "User"}))
                .collect();
            json!({
                "schemas": [SCHEMA_GROUP],
                "id": group.id,
                "displayName": group.display_name,
                "members": members,
            })
        })
        .collect();
    json!({"users": users, "groups": groups})
}

const SCHEMA_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const SCHEMA_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{AccountSpec, Action, Attribute, AttributeChange, DriftKind, GroupRef};
    use crate::store::ActionState;

    /// Where `;` separates cells (Excel in a European locale), each part of a
    /// cell after a `;` starts a cell of its own: none may start a formula.
    #[test]
    fn no_part_of_a_cell_after_a_semicolon_starts_a_formula() {
        assert_eq!(inert("Finance"), "Finance");
        assert!(matches!(inert("Finance;Legal"), Cow::Borrowed(_)));
        assert_eq!(inert("=1+1"), "'=1+1");
        assert_eq!(
            inert("Team;=HYPERLINK(\"https://evil.example\")"),
            "Team;'=HYPERLINK(\"https://evil.example\")"
        );
        assert_eq!(inert("=a;@b;c;+d;-e"), "'=a;'@b;c;'+d;'-e");
        assert_eq!(inert("a;;\tb"), "a;;'\tb");
        // A space first is no formula: a mapping's justification joins with "; ".
        assert_eq!(inert("Eng → ws as Editor; Ops"), "Eng → ws as Editor; Ops");
    }

    fn row(account_id: &str, groups: &[&str]) -> AccessRow {
        AccessRow {
            account_id: account_id.to_owned(),
            user_name: format!("{account_id}@example.com"),
            active: true,
            role: vec!["Editor".to_owned()],
            workspace_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            identity_id: None,
            identity_user_name: None,
            identity_status: None,
            justification: "orphaned".to_owned(),
            last_change: None,
            since_snapshot: None,
        }
    }

    /// The cells of the CSV's data rows, as a CSV reader reads them.
    fn csv_rows(export: &AccessExport) -> Vec<csv::StringRecord> {
        let csv = export.to_csv().unwrap();
        csv::Reader::from_reader(csv.as_bytes())
            .records()
            .map(Result::unwrap)
            .collect()
    }

    /// An auditor sorts and filters by the times: Excel and LibreOffice read
    /// `2026-12-06 10:00:00` as a date and time, not RFC 3339 with nanoseconds
    /// and an offset (`…T10:00:00.123456789+00:00` stayed text). The JSON keeps
    /// the instant whole.
    #[test]
    fn csv_times_are_ones_a_spreadsheet_reads_and_json_keeps_them_whole() {
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut account = row("a1", &[]);
        account.last_change = Some(at + chrono::Duration::hours(1));
        let export = AccessExport {
            run_id: 3,
            snapshot_at: at,
            applied_through: Some(at + chrono::Duration::minutes(5)),
            accounts: vec![account],
        };
        let rows = csv_rows(&export);
        assert_eq!(&rows[0][9], "2026-12-06 11:00:00");
        assert_eq!(&rows[0][10], "2026-12-06 10:00:00");
        assert_eq!(&rows[0][11], "2026-12-06 10:05:00");
        let json: serde_json::Value = serde_json::from_str(&export.to_json()).unwrap();
        assert_eq!(json["snapshot_at"], "2026-12-06T10:00:00.123456789Z");
        assert_eq!(
            json["accounts"][0]["last_change"],
            "2026-12-06T11:00:00.123456789Z"
        );
    }

    /// `Legal;Ops` is one group and `Legal` + `Ops` two: joined with `;`, both
    /// read `Legal;Ops`. One group a line tells them apart; a name's own line
    /// break and backslash are escaped, so every cell reads back as the names.
    #[test]
    fn each_group_is_a_line_of_its_cell_and_reads_back_unambiguously() {
        let export = AccessExport {
            run_id: 3,
            snapshot_at: Utc::now(),
            applied_through: None,
            accounts: vec![
                row("a1", &["Legal;Ops"]),
                row("a2", &["Legal", "Ops"]),
                row("a3", &["Two\\nlines", "Two\nlines", "C:\\\\Share"]),
            ],
        };
        let cells: Vec<String> = csv_rows(&export).iter().map(|r| r[4].to_owned()).collect();
        assert_eq!(
            cells,
            [
                "Legal;Ops",
                "Legal\nOps",
                // `Two\nlines` (a backslash and an n), a name with a line break
                // in it, then `C:\\Share`: each backslash doubled.
                "Two\\\\nlines\nTwo\\nlines\nC:\\\\\\\\Share",
            ]
        );
    }

    /// Every group of a cell is a line of it, which a reader that splits lines
    /// (or Excel where `;` separates cells, at each `;`) starts a cell with:
    /// none of them may start a formula.
    #[test]
    fn no_group_in_a_joined_cell_starts_a_formula() {
        assert_eq!(inert("Team\n=HYPERLINK(\"x\")"), "Team\n'=HYPERLINK(\"x\")");
        assert_eq!(inert("a\r\n-b"), "a\r\n'-b");
        let export = AccessExport {
            run_id: 3,
            snapshot_at: Utc::now(),
            applied_through: None,
            accounts: vec![row(
                "a1",
                &[
                    "=HYPERLINK(\"https://evil.example\")",
                    "Finance",
                    "Team;@SUM(1)",
                    "+1",
                ],
            )],
        };
        assert_eq!(
            &csv_rows(&export)[0][4],
            "'=HYPERLINK(\"https://evil.example\")\nFinance\nTeam;'@SUM(1)\n'+1"
        );
    }

    fn applied(seq: u32, kind: ActionKind) -> JournalEntry {
        JournalEntry {
            run: 2,
            action: Action {
                seq,
                kind,
                reason: DriftKind::AttributeDrift,
                subject: String::new(),
                identity_id: None,
                detail: String::new(),
                held: None,
            },
            state: ActionState::Applied,
            attempts: 1,
            last_error: None,
            updated_at: Utc::now(),
        }
    }

    /// A rename shows under the new userName; a create whose link has gone since
    /// (the account deleted again) is left out with its memberships, and one still
    /// linked is there with the group it was added to.
    #[test]
    fn writes_since_the_snapshot_rename_and_create_accounts() {
        let spec = |user_name: &str| AccountSpec {
            user_name: user_name.to_owned(),
            external_id: String::new(),
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            role: Some(crate::model::Role::Editor),
        };
        let mut accounts = vec![Account::created("a1".to_owned(), &spec("old@example.com"))];
        let mut groups_of = HashMap::new();
        let created = HashMap::from([("p2", "a2")]);
        let journal = [
            applied(
                0,
                ActionKind::UpdateAttributes {
                    account_id: "a1".to_owned(),
                    changes: vec![AttributeChange {
                        attribute: Attribute::UserName,
                        from: Some("old@example.com".to_owned()),
                        to: Some("new@example.com".to_owned()),
                    }],
                },
            ),
            applied(
                1,
                ActionKind::CreateAccount {
                    identity_id: "p2".to_owned(),
                    spec: spec("p2@example.com"),
                },
            ),
            applied(
                2,
                ActionKind::CreateAccount {
                    identity_id: "p3".to_owned(),
                    spec: spec("p3@example.com"),
                },
            ),
            applied(
                3,
                ActionKind::AddMembers {
                    group: GroupRef::Created {
                        display_name: "Design".to_owned(),
                    },
                    members: vec![
                        AccountRef::Created {
                            identity_id: "p2".to_owned(),
                        },
                        AccountRef::Created {
                            identity_id: "p3".to_owned(),
                        },
                    ],
                },
            ),
        ];
        apply_since(&mut accounts, &mut groups_of, &journal, &created);
        let names: Vec<(&str, &str, &[String])> = accounts
            .iter()
            .map(|a| (a.id.as_str(), a.user_name.as_str(), a.roles.as_slice()))
            .collect();
        let editor = ["Editor".to_owned()];
        assert_eq!(
            names,
            [
                ("a1", "new@example.com", &editor[..]),
                ("a2", "p2@example.com", &editor[..])
            ]
        );
        assert_eq!(
            groups_of,
            HashMap::from([("a2".to_owned(), vec!["Design".to_owned()])])
        );
    }

    /// `since_snapshot` says the last of the writes that decide whether an
    /// account exists or is active: a deactivation undone by a reactivation
    /// reads `reactivated`, a create `created`; a rename is none of them.
    #[test]
    fn since_snapshot_is_the_last_lifecycle_write() {
        let spec = AccountSpec {
            user_name: "p2@example.com".to_owned(),
            external_id: String::new(),
            given_name: None,
            family_name: None,
            display_name: None,
            email: None,
            role: None,
        };
        let mut accounts = vec![Account::created("a1".to_owned(), &spec)];
        let journal = [
            applied(
                0,
                ActionKind::Deactivate {
                    account_id: "a1".to_owned(),
                },
            ),
            applied(
                1,
                ActionKind::Reactivate {
                    account_id: "a1".to_owned(),
                },
            ),
            applied(
                2,
                ActionKind::CreateAccount {
                    identity_id: "p2".to_owned(),
                    spec: spec.clone(),
                },
            ),
            applied(
                3,
                ActionKind::UpdateAttributes {
                    account_id: "a2".to_owned(),
                    changes: vec![],
                },
            ),
        ];
        let lifecycle = apply_since(
            &mut accounts,
            &mut HashMap::new(),
            &journal,
            &HashMap::from([("p2", "a2")]),
        );
        let texts: HashMap<&str, String> = lifecycle
            .iter()
            .map(|(id, change)| (id.as_str(), change.text()))
            .collect();
        let at = |seq: usize| {
            journal[seq]
                .updated_at
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        };
        assert_eq!(
            texts,
            HashMap::from([
                ("a1", format!("reactivated {} (run 2)", at(1))),
                ("a2", format!("created {} (run 2)", at(2))),
            ])
        );
        assert!(accounts.iter().all(|a| a.active));
    }
}
