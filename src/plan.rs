//! The diff: desired state against the workspace as it is, giving an ordered list of
//! actions, each with the drift that caused it (design brief, pipeline step 3).
//!
//! Pure: no I/O, no clock. The same inputs always give the same plan, byte for byte,
//! whatever order the directory, the workspace and the store list them in (a
//! provider need not keep its order between reads; a changed action would restart
//! its settle window, a changed detail reads as new drift).
//! Independent parts run on two threads (the account index beside the links'
//! identity lookups, the managed groups' members beside the identities, the two
//! sorts); each part's result lands in a fixed place, so the plan never depends on
//! which thread finished first.
//!
//! # Matching accounts to identities
//!
//! Every directory identity is a candidate, whatever its status: a leaver's account
//! must be found to be deactivated. For each workspace account, in order:
//!
//! 1. a stored link (a link whose account no longer exists is ignored; a link to an
//!    identity absent from the directory means that identity was *deleted*);
//! 2. `externalId` equal to the identity id;
//! 3. `userName` equal to the identity's, trimmed, case-insensitively and
//!    composed (NFC) ([`crate::model::fold_case`]: a character outside ASCII never
//!    folds into an ASCII one, so look-alikes differ); an account matched so whose
//!    userName differs beyond case (white space at an end) is renamed to the
//!    directory's, trimmed;
//! 4. the identity's primary email equal to the account's primary email, or to
//!    its userName, the same way: a workspace that names accounts by email
//!    address (Taskade does) may carry no separate email, and an account an
//!    admin made under a person's address, beside the one their directory login
//!    names, is theirs as much (left an orphan, it would be deactivated as
//!    nobody's, or stay active when they leave): both are candidates, and the
//!    person's match is disputed until `seatwarden link` says which is theirs;
//!    then the other is their duplicate.
//!
//! The first heuristic rule (2–4) that yields any candidate decides. Matches found
//! by 2–4 are proposed in [`Plan::new_links`]; linking needs no workspace write.
//!
//! A match is **disputed** — reported as [`DriftKind::DisputedMatch`] and never acted
//! on, for the accounts nor for the identities involved — when stored links are not
//! one-to-one, when an account's deciding rule yields several identities, or when
//! several unlinked accounts match the same identity; and when the only match of an
//! active identity is a deactivated account found by userName or email whose
//! `externalId` names nobody in the directory (a former employee's, which a new hire
//! given the same address must not get back with its projects); and when a stored
//! link's account has an `externalId` that names another identity in the directory
//! (a state database used against another workspace, reused ids: trusted, the link
//! would hand one person's account to another). An identity whose own account
//! matches it by `externalId` keeps that match although another account matches it
//! among others by a weaker rule: that other account alone is disputed, so a stray
//! account sharing a leaver's email cannot keep the leaver's account active.
//!
//! A disputed person the directory no longer has would leave nothing to tie them
//! to their accounts, which would pass for orphans while the leaver went
//! unrecorded. The plan lists each dispute's candidates, active or deactivated
//! ([`Plan::disputed_candidates`]), which the store keeps for the next plan: from
//! a complete directory, a remembered person who is absent is disputed and
//! deleted, with the remembered accounts nobody else now claims as suspects; once
//! a stored link says which was theirs, the others are its duplicates.
//! Duplicates are listed too, each with the account it duplicates
//! ([`DisputedCandidate::duplicate_of`]): a linked person the directory deletes
//! keeps them (not orphans left active), and once their linked account is gone
//! (deleted after the retention period) they are still that leaver's, on the
//! same deprovisioning path, never disputed again, while it still matches them
//! as the directory last had them (their id, userName or email, kept with the
//! memory): one renamed since is an orphan, under `unmatched_accounts`, its
//! item saying why. Only a linked account that
//! exists unlinked (`unlink` took the decision back), or an account another
//! deleted person's memory names too, makes the person disputed again.
//!
//! A dispute is reported once: an identity's item names every account that may be
//! theirs and how each matched, and those accounts get no item of their own. An
//! account keeps its own item only where no identity item names it — one account
//! matching several people, whose identities get an item only when they lost access.
//! So does one account two people claim (its stored link is to one, its externalId
//! names the other, who has no account of their own by a link): its item names both
//! and how each claims it, and a person gets an item of their own besides only when
//! they lost access or another account may be theirs too.
//!
//! A stored link decides an identity's account. An unlinked account whose only
//! candidate is an identity already linked to another account is a **duplicate** of
//! that identity: reported as a dispute while the person is active, and deprovisioned
//! along with the linked account once the person loses access, under its own
//! userName with a detail that begins [`DUPLICATE_OF`] the person. Letting a leaver keep
//! a second account would defeat deprovisioning, and treating it as an orphan would
//! make it flip to "matched" as soon as the linked account is deleted.
//!
//! # What is managed
//!
//! - Attributes: only those the directory provides. A desired `None` never clears a
//!   workspace value, so a directory without display names does not wipe them.
//!   userName and email compare case-insensitively (a case change alone is not drift),
//!   the rest exactly.
//! - Roles: when `manage_roles` and the spec has a role; an account whose single role
//!   value names the desired role (in any case) is in line. One holding several
//!   role values (a provider's multi-valued `roles`, two role groups) has no single
//!   role: it is set to the desired one, which replaces them all, and its item
//!   says it holds several. The `SetRole` lists them known roles highest first,
//!   whatever order the workspace sent, so its settle key does not change between
//!   reads; it counts as a downgrade when one of them ranks above the desired role
//!   or is a value no role parses from.
//! - Groups: only groups a mapping names (matched to workspace groups by display name,
//!   case-insensitively). A name several workspace groups share is a disputed match:
//!   none of them is touched, nor is another created.
//!   Members of people who lost access are left alone: deactivated accounts keep their
//!   projects, so reactivation restores access without loss. So are a deactivated
//!   orphan's: they grant nothing, and what a provider says of a deactivated
//!   account's groups may be stale (a removal would then change nothing, planned
//!   again on every run).
//! - Protected accounts (by the account's or the identity's userName) appear in no
//!   action at all, not even in member lists. Protection only ever adds: every
//!   account of a protected person is left alone, whatever its own userName (an
//!   admin's account found by externalId or email under another name is theirs;
//!   judged by its own name it would be renamed, regrouped or demoted). One whose
//!   own userName is not protected is listed in [`Plan::protected_by_person`],
//!   with how it is tied to the person, so a link that should not be (made by
//!   `link` before it refused one, or a rule's match) is in every report.
//! - Deprovisions: a person without access has their account deactivated. With
//!   `deprovision.action = "delete"` a suspended person's is still only deactivated;
//!   anyone else's is deleted at once when [`Retention::delete_after`] is zero, and
//!   otherwise deactivated and deleted only once [`Retention::deactivated_since`]
//!   says it has been seen deactivated that long. Every deactivated account waiting
//!   so is listed in [`Plan::retained`], whose changes keep the store's clocks.
//! - Orphans (accounts no identity matches) follow `unmatched_accounts`: `report`
//!   gives drift items only (also for an active one's memberships of managed
//!   groups), `adopt` accepts them as they are (no drift), `deactivate` deactivates
//!   active ones and takes them out of managed groups in the same run — never
//!   deletes them, whatever `deprovision` says: "existing users keep their data".
//!
//! # Two people, one userName
//!
//! The workspace holds a userName once (case aside), and a directory other than an
//! export can give two people the same one. A create or a userName change is made
//! only when no other account holds its userName (folded as matching folds it) and
//! no other create or rename of the plan wants it; otherwise the person gets a
//! [`DriftKind::MissingAccount`] or [`DriftKind::AttributeDrift`] item with no
//! action, marked by [`DriftItem::conflict`] ([`is_user_name_conflict`]) with who
//! is in the way (every account holding the userName, the first few other people
//! wanting it), whom its detail names too, and the account's other attribute
//! changes go ahead. Two people wanting one userName are both
//! reported: which of them it belongs to the plan cannot tell. An account the plan
//! deletes, or renames by a change that is made, frees its userName: deprovisions
//! run before renames, and renames before creates. Such a delete names the
//! userName it frees (`frees_user_name`), and the executor sends nothing behind
//! one that failed. So a chain of renames is made
//! whole (the executor sends each link once the rename it waits on was accepted,
//! and none behind one that failed) and a swap is not. One
//! map of the wanted userNames and one pass over the accounts, after the identities.
//! The guard may then hold that delete or rename: what relied on it is held with it
//! (`guard::guard` for a delete, `guard::hold_dependents` for a rename), so no
//! create is sent onto an account that kept its name.
//!
//! # Order
//!
//! Deprovisions first, then create group, create account, reactivate, update
//! attributes, set role, add members, remove members; within a class by subject,
//! then account id. Drift items sort by kind, then userName.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

pub(crate) use crate::model::same_ci;
use crate::model::{
    Account, AccountRef, Action, ActionKind, Attribute, AttributeChange, DirectorySnapshot,
    DisputedCandidate, DisputedLeaver, DriftItem, DriftKind, ExceptedAccount, GroupRef, Identity,
    IdentityStatus, Link, LinkMethod, NewLink, Plan, ProtectedByPerson, ProtectedLeaver,
    UserNameConflict, WorkspaceGroup, WorkspaceSnapshot,
};
use crate::policy::{
    CHUNK, DesiredSpec, DesiredState, Entry, FxHashMap, IdentityIndex, InactiveReason, Protected,
    StrIndex, UnmatchedAccounts, Want, beside, chunk, fx_hash,
};
use crate::sla::LossReason;

/// What losing access does to an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeprovisionAction {
    Deactivate,
    Delete,
}

/// `deprovision.action = "delete"`: how long a deprovisioned person's account
/// stays deactivated before it is deleted, and since when each such account has
/// been seen deactivated (kept by the store from [`Plan::retained`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Zero: accounts are deleted at once, active or not.
    pub delete_after: TimeDelta,
    /// Account id → when it was first seen deactivated without anyone to justify it.
    pub deactivated_since: BTreeMap<String, DateTime<Utc>>,
    /// The time the retention is judged at.
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    pub deprovision: DeprovisionAction,
    /// Only read when `deprovision` deletes.
    pub retention: Retention,
    pub unmatched_accounts: UnmatchedAccounts,
    pub manage_roles: bool,
    pub protected: Protected,
    /// How people run seatwarden's commands (`report.admin_command`), for the
    /// commands drift details tell them to run; stored with the run, they name
    /// the command configured when it planned. Default
    /// [`crate::model::DEFAULT_ADMIN_COMMAND`].
    pub admin_command: String,
}

impl PlanSettings {
    /// What losing access does to an account that is still active: deleted at once
    /// only when deprovisioning deletes with no retention period and the person is
    /// not merely suspended (a suspension may be lifted); otherwise deactivated,
    /// and with a retention period deleted once it has been seen deactivated that
    /// long. The plan and the sweep both decide through it.
    pub fn revoke_active(&self, account_id: String, suspended: bool) -> ActionKind {
        let deletes_at_once = self.deprovision == DeprovisionAction::Delete
            && !suspended
            && self.retention.delete_after <= TimeDelta::zero();
        if deletes_at_once {
            ActionKind::Delete {
                account_id,
                deactivated_since: None,
                frees_user_name: None,
            }
        } else {
            ActionKind::Deactivate { account_id }
        }
    }
}

/// How the detail of a deprovision of a leaver's duplicate account begins (its
/// subject is the duplicate's own userName, not the person's): the ledger tells
/// it from the deprovision of the person's linked account by this.
pub const DUPLICATE_OF: &str = "duplicate account of ";

pub use crate::model::{NOT_CREATED, NOT_RENAMED};

/// Whether `item` reports a create or userName change the plan did not make
/// because another account holds, or another person wants, the userName: no
/// action goes with it. Its [`DriftItem::conflict`] says so (and who); an item
/// an older version stored without it loads with it set when its detail begins
/// with [`NOT_CREATED`] or [`NOT_RENAMED`], as that version wrote them.
pub fn is_user_name_conflict(item: &DriftItem) -> bool {
    item.conflict.is_some()
}

/// Whether `action` deprovisions a leaver's duplicate account rather than the
/// account linked to them.
pub fn is_duplicate_deprovision(action: &Action) -> bool {
    action.reason == DriftKind::StaleAccess && action.detail.starts_with(DUPLICATE_OF)
}

/// Diffs `desired` against `workspace`. `directory` is the snapshot `desired` was
/// computed from; it supplies the match candidates and tells deleted identities
/// (absent) from inactive ones. `remembered` is the last complete reconcile's
/// [`Plan::disputed_candidates`]: what ties a disputed person the directory no
/// longer has to the accounts that may be theirs (read only from a complete
/// directory, where absent means deleted). Never sets [`Action::held`]; that is
/// the guard's job.
pub fn plan(
    desired: &DesiredState<'_>,
    directory: &DirectorySnapshot,
    workspace: &WorkspaceSnapshot,
    links: &[Link],
    remembered: &[DisputedCandidate],
    settings: &PlanSettings,
) -> Plan {
    // The desired state indexed the directory's identities already; matching reuses
    // that index when `desired` was computed from this very snapshot (it always is).
    let own;
    let shared = std::ptr::eq(
        desired.index().identities(),
        directory.identities.as_slice(),
    );
    let index = if shared {
        desired.index()
    } else {
        own = IdentityIndex::build(&directory.identities, |_, _| {});
        &own
    };
    let remembered = if directory.complete { remembered } else { &[] };
    let matching = Matching::build(
        index,
        (!shared).then_some(desired),
        workspace,
        links,
        remembered,
        &settings.admin_command,
    );
    let mut planner = Planner::new(desired, shared, settings, &matching);
    let existing = ExistingGroups::of(workspace);
    // The managed groups' workspace members as account slots (about two million
    // lookups at 1M people): the largest single cost, and it depends on nothing
    // but the account index. The second thread resolves groups while this one
    // plans the identities, then this one takes the groups that are left.
    let to_resolve: Vec<Option<&WorkspaceGroup>> = planner
        .managed
        .iter()
        .map(|g| existing.get(g.key.as_str()))
        .collect();
    let (resolved, ()) = beside(
        to_resolve.len(),
        |position| {
            to_resolve
                .get(position)
                .copied()
                .flatten()
                .map(|group| matching.member_slots(group))
        },
        || {
            planner.disputes();
            planner.identities();
            planner.orphans();
            planner.user_names();
        },
    );
    planner.groups(&existing, resolved);
    let Out {
        actions,
        drift,
        mut retained,
        mut disputed_leavers,
        mut disputed_candidates,
        mut protected_by_person,
        mut excepted,
        mut protected_leavers,
    } = planner.out;
    excepted.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id));
    excepted.dedup_by(|a, b| a.account_id == b.account_id);
    protected_leavers.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id));
    protected_leavers.dedup_by(|a, b| a.account_id == b.account_id);
    // A read that was not whole does not show who was deleted: a person it
    // lacks may only be missing from it, and listed, their break-glass account
    // would be reported (and alerted on) as a leaver's to deactivate by hand.
    if !directory.complete {
        protected_leavers.retain(|p| index.position(&p.identity_id).is_some());
    }
    // A primary account matched this run carries its rule; a stored link none.
    // Few people are protected: the new links are read once, only for them.
    if !protected_by_person.is_empty() {
        let mut primaries: FxHashMap<(&str, &str), usize> = FxHashMap::default();
        for (i, p) in protected_by_person.iter().enumerate() {
            if !p.duplicate {
                primaries.insert((p.identity_id.as_str(), p.account_id.as_str()), i);
            }
        }
        let found: Vec<(usize, LinkMethod)> = matching
            .new_links
            .iter()
            .filter_map(|l| {
                primaries
                    .get(&(l.identity_id.as_str(), l.account_id.as_str()))
                    .map(|&i| (i, l.method))
            })
            .collect();
        for (i, method) in found {
            if let Some(p) = protected_by_person.get_mut(i) {
                p.matched_by = Some(method);
            }
        }
        protected_by_person.sort_unstable_by(|a, b| {
            (&a.account_id, &a.identity_id).cmp(&(&b.account_id, &b.identity_id))
        });
    }
    retained.sort_unstable();
    retained.dedup();
    // In the order of the map they came from: sorted, so the plan is the same
    // every time.
    disputed_leavers.sort_unstable_by(|a, b| a.identity_id.cmp(&b.identity_id));
    disputed_candidates.extend(
        matching
            .remembered_duplicates
            .iter()
            // While the account exists, deactivated or not: forgotten, it would
            // be nobody's, an orphan (reported, taken out of its groups, never
            // deleted after the retention period).
            .filter(|c| {
                matching
                    .slot(&c.account_id)
                    .and_then(|slot| matching.at(slot))
                    .is_some()
            })
            .map(|&c| {
                let mut kept = c.clone();
                if kept.email.is_none() {
                    kept.email = matching
                        .key_of(&c.identity_id)
                        .and_then(|key| matching.email_of(key))
                        .map(str::to_owned);
                }
                kept
            }),
    );
    // Renamed since: nobody's now, and remembered as it was, so every report
    // says why it is (and `explain` too). Matching them again, it is theirs.
    disputed_candidates.extend(matching.unmatched_since.values().map(|&c| c.clone()));
    // A duplicate's memory, which names the linked account, before a
    // dispute's of the same pair: one is kept, the same every run.
    disputed_candidates.sort_unstable_by(|a, b| {
        (&a.identity_id, &a.account_id, b.duplicate_of.is_some()).cmp(&(
            &b.identity_id,
            &b.account_id,
            a.duplicate_of.is_some(),
        ))
    });
    disputed_candidates
        .dedup_by(|a, b| (&a.identity_id, &a.account_id) == (&b.identity_id, &b.account_id));

    // The two sorts are independent; each keeps its own input order for ties.
    let drift = Mutex::new(drift);
    let sort_drift = || {
        if let Ok(mut drift) = drift.lock() {
            drift.sort_by(|a, b| {
                (
                    a.kind,
                    &a.user_name,
                    &a.account_id,
                    &a.identity_id,
                    &a.detail,
                )
                    .cmp(&(
                        b.kind,
                        &b.user_name,
                        &b.account_id,
                        &b.identity_id,
                        &b.detail,
                    ))
            });
        }
    };
    let (_, actions) = beside(
        1,
        |_| sort_drift(),
        || {
            let mut actions = actions;
            actions.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            for (seq, action) in actions.iter_mut().enumerate() {
                action.seq = u32::try_from(seq).unwrap_or(u32::MAX);
            }
            actions
        },
    );
    let drift = drift
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut new_links = matching.new_links;
    new_links.sort_by(|a, b| (&a.identity_id, &a.account_id).cmp(&(&b.identity_id, &b.account_id)));
    Plan {
        actions,
        drift,
        new_links,
        retained,
        disputed_leavers,
        disputed_candidates,
        protected_by_person,
        excepted,
        protected_leavers,
    }
}

/// Deprovisions first (they are the urgent part and the guard's subject), then the
/// order in which later actions can rely on earlier ones: groups and accounts exist
/// before members are added, and a userName is given up (a rename) before a new
/// account is created with it.
fn sort_key(action: &Action) -> (u8, &str, &str) {
    let (class, secondary) = match &action.kind {
        ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. } => {
            (0, account_id.as_str())
        }
        ActionKind::CreateGroup { display_name } => (1, display_name.as_str()),
        ActionKind::UpdateAttributes { account_id, .. } if action.kind.renames() => {
            (1, account_id.as_str())
        }
        ActionKind::CreateAccount { identity_id, .. } => (2, identity_id.as_str()),
        ActionKind::Reactivate { account_id } => (3, account_id.as_str()),
        ActionKind::UpdateAttributes { account_id, .. } => (4, account_id.as_str()),
        ActionKind::SetRole { account_id, .. } => (5, account_id.as_str()),
        ActionKind::AddMembers { group, .. } => (6, group.display_name()),
        ActionKind::RemoveMembers { group, .. } => (7, group.display_name()),
    };
    (class, action.subject.as_str(), secondary)
}

/// How one account relates to the directory (identities by key, see [`Matching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The identity's account: a one-to-one stored link or a clean new match.
    Primary(u32),
    /// Matches only an identity that is linked to another account (at slot
    /// `linked_to`; NONE once that account is gone and only the memory of a
    /// person the directory deleted says whose duplicate it was).
    Duplicate {
        identity: u32,
        linked_to: u32,
        method: LinkMethod,
    },
    /// Why, as an index into `Matching::details`.
    Disputed(u32),
    Orphan,
}

/// How a suspect account is tied to a disputed identity: by a stored link, or by
/// the matching rule that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    StoredLink,
    Rule(LinkMethod),
}

impl Via {
    /// As a reader names it: the attribute as the workspace spells it.
    fn as_str(self) -> &'static str {
        match self {
            Via::StoredLink => "a stored link",
            Via::Rule(LinkMethod::ExternalId) => "externalId",
            Via::Rule(LinkMethod::UserName) => "userName",
            Via::Rule(LinkMethod::Email) => "email",
            Via::Rule(method) => method.as_str(),
        }
    }
}

/// A short list that needs no allocation for a single value (the common case for
/// link and match candidates).
#[derive(Debug, Clone, Default)]
enum Few<T> {
    #[default]
    Empty,
    One(T),
    Many(Vec<T>),
}

impl<T: Copy> Few<T> {
    fn push(&mut self, value: T) {
        match self {
            Few::Empty => *self = Few::One(value),
            Few::One(first) => *self = Few::Many(vec![*first, value]),
            Few::Many(values) => values.push(value),
        }
    }

    fn as_slice(&self) -> &[T] {
        match self {
            Few::Empty => &[],
            Few::One(value) => std::slice::from_ref(value),
            Few::Many(values) => values,
        }
    }

    /// Sorts by `key` and drops repeats of the same key, as a `BTreeSet` would.
    fn sort_dedup_by_key<K: Ord>(&mut self, key: impl Fn(&T) -> K) {
        if let Few::Many(values) = self {
            values.sort_unstable_by_key(|v| key(v));
            values.dedup_by(|a, b| key(a) == key(b));
        }
    }
}

/// No value (an identity key or account slot).
const NONE: u32 = u32::MAX;
/// Several values; they are in the side table.
const MANY: u32 = u32::MAX - 1;

/// One value per position, with the rare positions that have several in a side
/// table: stored links by account slot and by identity key.
struct Firsts {
    first: Vec<u32>,
    more: FxHashMap<u32, Vec<u32>>,
}

impl Firsts {
    fn new(len: usize) -> Self {
        Firsts {
            first: vec![NONE; len],
            more: FxHashMap::default(),
        }
    }

    fn push(&mut self, at: u32, value: u32) {
        let Some(first) = self.first.get_mut(at as usize) else {
            return;
        };
        match *first {
            NONE => *first = value,
            MANY => self.more.entry(at).or_default().push(value),
            v if v == value => {}
            v => {
                *first = MANY;
                self.more.insert(at, vec![v, value]);
            }
        }
    }

    fn get(&self, at: u32) -> &[u32] {
        match self.first.get(at as usize) {
            None | Some(&NONE) => &[],
            Some(&MANY) => self.more.get(&at).map_or(&[][..], Vec::as_slice),
            Some(value) => std::slice::from_ref(value),
        }
    }

    fn has(&self, at: u32) -> bool {
        self.first.get(at as usize).is_some_and(|&v| v != NONE)
    }

    /// Sorts each several by `key` and drops repeats of the same key.
    fn sort_dedup_by_key<K: Ord>(&mut self, key: impl Fn(u32) -> K) {
        for values in self.more.values_mut() {
            values.sort_unstable_by_key(|&v| key(v));
            values.dedup_by(|a, b| key(*a) == key(*b));
        }
    }
}

/// The first account of each id, in workspace order, indexed by id.
struct ById<'a> {
    /// The accounts' ids, so a probe reads the key without the account.
    ids: Vec<&'a str>,
    index: StrIndex,
}

impl<'a> ById<'a> {
    fn build(all: &'a [Account]) -> (Vec<&'a Account>, Self) {
        let mut items: Vec<&'a Account> = Vec::with_capacity(all.len());
        let mut ids: Vec<&'a str> = Vec::with_capacity(all.len());
        let mut index = StrIndex::with_capacity(all.len());
        for item in all {
            let id = item.id.as_str();
            let hash = fx_hash(id);
            if let Err(slot) = index.find(id, hash, |p| ids.get(p).copied())
                && index.fill(slot, items.len(), hash)
            {
                items.push(item);
                ids.push(id);
            }
        }
        (items, ById { ids, index })
    }

    fn position(&self, id: &str) -> Option<u32> {
        let found = self
            .index
            .find(id, fx_hash(id), |p| self.ids.get(p).copied());
        found.ok().and_then(|p| u32::try_from(p).ok())
    }
}

/// The identities one matching rule finds (identity keys).
enum Cands<'x> {
    One(u32),
    Slice(&'x [u32]),
    /// The email rule's, when the account's email and its userName find
    /// different people.
    Union(Vec<u32>),
}

impl Cands<'_> {
    fn as_slice(&self) -> &[u32] {
        match self {
            Cands::One(key) => std::slice::from_ref(key),
            Cands::Slice(keys) => keys,
            Cands::Union(keys) => keys,
        }
    }
}

/// Identities are referred to by **key**: the position of the first identity of an
/// id in the directory snapshot, or, for ids only stored links (or a desired state
/// from another snapshot) know, the number of identities plus an index into `extra`.
struct Matching<'a> {
    /// The directory's identities by id; the desired state's own index when it was
    /// computed from this directory.
    index: &'a IdentityIndex<'a>,
    /// Ids no directory identity has, by key − number of identities.
    extra: Vec<&'a str>,
    extra_index: FxHashMap<&'a str, u32>,
    /// Accounts by slot: the first account of each id, in workspace order.
    accounts: Vec<&'a Account>,
    /// Account id → slot.
    account_index: ById<'a>,
    /// Account slot → owner.
    owners: Vec<Owner>,
    /// The details of `Owner::Disputed`.
    details: Vec<String>,
    /// Identity key → its account's slot, or NONE.
    primary: Vec<u32>,
    /// Identity key → why it is disputed.
    disputed: FxHashMap<u32, String>,
    /// Disputed identity key → the slots of the accounts that may be theirs and
    /// how each is tied to them (unsorted, maybe repeated): whether a leaver among
    /// them still has access, and what the identity's drift item lists.
    suspects: FxHashMap<u32, Vec<(u32, Via)>>,
    /// Disputed account slot → the identity keys it matches, when its deciding
    /// rule found several.
    several: FxHashMap<u32, Vec<u32>>,
    /// Disputed account slot → the two people who claim it and how: the one its
    /// stored link is to, and the one its externalId names, who has no account
    /// of their own by a link.
    contested: FxHashMap<u32, [(u32, Via); 2]>,
    new_links: Vec<NewLink>,
    /// Key of a remembered disputed person the directory no longer has → the
    /// userName it last had.
    remembered_names: FxHashMap<u32, &'a str>,
    /// Key of a remembered person the directory no longer has → the email it
    /// last had, when one was kept.
    remembered_emails: FxHashMap<u32, &'a str>,
    /// Remembered duplicates of a person the directory deleted whose linked
    /// account is gone: remembered again as they were.
    remembered_duplicates: Vec<&'a DisputedCandidate>,
    /// Account slot → the remembered duplicate of a person the directory
    /// deleted that it no longer matches ([`still_matches`]): renamed since, an
    /// unmatched account, whose item says so. Remembered again as it was.
    unmatched_since: FxHashMap<u32, &'a DisputedCandidate>,
}

/// Why a deactivated account matched only by userName or email is not taken for
/// this person: its externalId names someone the directory no longer has. That is
/// a former employee's account, and a new hire given the same address would be
/// handed it, projects and all, by its reactivation. A returner is the other
/// reading; either way a person decides (`link`, run as `admin`, hands it over;
/// deleting or renaming the old account in the workspace lets a fresh one be
/// created).
fn someone_elses(account: Option<&Account>, method: LinkMethod, admin: &str) -> Option<String> {
    let account = account?;
    let external_id = account.external_id.as_deref()?.trim();
    let by_name = matches!(method, LinkMethod::UserName | LinkMethod::Email);
    (by_name && !account.active && !external_id.is_empty()).then(|| {
        format!(
            "it is deactivated and its externalId {external_id:?} names nobody in the directory \
             (a former employee's account, a new hire given their address?): `{admin} link` \
             hands it over, projects included; delete or rename it in the workspace for a new one"
        )
    })
}

/// The directory identity (key and id) an account's `externalId` names, if any.
fn named_by_external_id<'x>(
    account: Option<&'x Account>,
    index: &IdentityIndex<'_>,
) -> Option<(u32, &'x str)> {
    let external_id = account?.external_id.as_deref()?;
    index.position(external_id).map(|key| (key, external_id))
}

/// Lower-cased as [`same_ci`] compares ([`crate::model::fold_case`]), borrowing
/// when the string has nothing to lower.
fn fold(s: &str) -> Cow<'_, str> {
    if !s.is_ascii() {
        Cow::Owned(crate::model::fold_case(s))
    } else if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A userName or email as matching and the userName checks compare it: trimmed
/// (white space at either end is a typo, never part of the name; protection
/// compares names trimmed too), then [`fold`]ed.
fn name_key(s: &str) -> Cow<'_, str> {
    fold(s.trim())
}

/// How a retention delete's detail states since when the account has been
/// deactivated. The plan knows no time zone; the report renders the same time on
/// its own clock by replacing this text (see [`crate::report::ActionOutcome`]).
pub fn retention_clock_utc(since: DateTime<Utc>) -> String {
    since.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// How the disputed item of someone who left says why, as the plan has always
/// worded it (the [`InactiveReason`] texts).
fn lost_text(reason: LossReason) -> String {
    match reason {
        LossReason::Suspended => InactiveReason::Suspended.to_string(),
        LossReason::Deprovisioned => InactiveReason::Deprovisioned.to_string(),
        LossReason::OutOfScope => InactiveReason::OutOfScope.to_string(),
        LossReason::Deleted => "identity was deleted from the directory".to_owned(),
    }
}

fn joined<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<S> = items.into_iter().collect();
    let parts: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    parts.join(", ")
}

/// An attribute value as a person reads it in a report.
fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"))
}

fn slot_of(index: usize) -> Option<u32> {
    u32::try_from(index).ok()
}

/// Matching's rule 4 for one person and one account, as the export and
/// `explain` ask it: the person's email is the account's primary email or its
/// userName (compared as [`crate::model::same_name`] does; an empty email is
/// nobody's).
pub(crate) fn matches_by_email(account: &Account, identity: &Identity) -> bool {
    let Some(email) = identity.email.as_deref().filter(|e| !e.trim().is_empty()) else {
        return false;
    };
    account
        .email
        .as_deref()
        .is_some_and(|own| crate::model::same_name(own, email))
        || crate::model::same_name(&account.user_name, email)
}

/// Why an account remembered as the duplicate of someone the directory
/// deleted is nobody's now: `plan`'s orphan item and `explain` say it.
pub(crate) fn unmatched_since_text(remembered: &DisputedCandidate) -> String {
    format!(
        "no directory identity matches this account: it was remembered as a duplicate of \
         identity {} ({}), whom the directory deleted, but it no longer matches them by \
         externalId, userName or email (renamed since?), so it is not deprovisioned as theirs",
        remembered.identity_id, remembered.user_name
    )
}

/// Whether `remembered` is the duplicate of someone the directory deleted
/// that `account` (its account as the workspace has it now) no longer matches:
/// the plan takes it for nobody's ([`unmatched_since_text`] says why).
pub(crate) fn no_longer_their_duplicate(remembered: &DisputedCandidate, account: &Account) -> bool {
    remembered.duplicate_of.is_some()
        && remembered.account_id == account.id
        && !still_matches(account, remembered)
}

/// Whether `account` still matches the person `remembered` names by one of
/// matching's rules 2–4, as the directory last had them: their id as its
/// externalId, their userName, their email (its own, or its userName). A
/// duplicate remembered by email before the email was kept (store migration
/// 22) cannot be told: it stays theirs, as before, and the first reconcile
/// keeps the address its account shows then ([`email_matched`]), unless
/// another such duplicate of theirs shows another (one was renamed before the
/// upgrade, which one nothing says): then none is kept, and both stay theirs.
fn still_matches(account: &Account, remembered: &DisputedCandidate) -> bool {
    let email = match remembered.email.as_deref() {
        Some(email) => Some(email),
        None if remembered.method == LinkMethod::Email => return true,
        None => None,
    };
    account
        .external_id
        .as_deref()
        .is_some_and(|id| id == remembered.identity_id)
        || same_key(&account.user_name, &remembered.user_name)
        || email.is_some_and(|email| {
            account
                .email
                .as_deref()
                .is_some_and(|own| same_key(own, email))
                || same_key(&account.user_name, email)
        })
}

/// The address an account matched by email shows: the person's email, as far
/// as an account can say (its own email, else its userName). What a duplicate
/// remembered before the person's email was kept (store migration 22) keeps
/// from the first reconcile after the upgrade.
fn email_matched(account: &Account) -> &str {
    account
        .email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or(account.user_name.as_str())
}

/// Two userNames or emails as matching compares them ([`name_key`]); an empty
/// one is nobody's.
fn same_key(a: &str, b: &str) -> bool {
    !a.trim().is_empty() && name_key(a) == name_key(b)
}

fn found<'x>(index: &'x FxHashMap<Cow<'_, str>, Few<u32>>, key: &str) -> Option<&'x [u32]> {
    index
        .get(name_key(key).as_ref())
        .map(Few::as_slice)
        .filter(|keys| !keys.is_empty())
}

/// The identity keys of ids no directory identity has.
struct Extra<'a> {
    n: u32,
    ids: Vec<&'a str>,
    index: FxHashMap<&'a str, u32>,
}

impl<'a> Extra<'a> {
    fn key(&mut self, id: &'a str, directory: &IdentityIndex<'_>) -> Option<u32> {
        self.key_at(id, directory.position(id).unwrap_or(NONE))
    }

    /// As [`Extra::key`], with the id's directory position (or NONE) looked up
    /// already.
    fn key_at(&mut self, id: &'a str, position: u32) -> Option<u32> {
        if position != NONE {
            return Some(position);
        }
        if let Some(&key) = self.index.get(id) {
            return Some(key);
        }
        let key = self
            .n
            .checked_add(u32::try_from(self.ids.len()).ok()?)
            .filter(|&k| k < MANY)?;
        self.ids.push(id);
        self.index.insert(id, key);
        Some(key)
    }
}

/// Matching's rules 2–4 (externalId, userName, email) for some accounts against
/// the directory's identities: the plan asks them of its unlinked accounts, and
/// [`claims`] of any account. Only the userNames and emails those accounts carry
/// are indexed, then the identities are read once.
struct Rules<'i, 'a> {
    index: &'i IdentityIndex<'a>,
    by_user_name: FxHashMap<Cow<'a, str>, Few<u32>>,
    by_email: FxHashMap<Cow<'a, str>, Few<u32>>,
}

impl<'i, 'a> Rules<'i, 'a> {
    fn build(accounts: impl Iterator<Item = &'a Account>, index: &'i IdentityIndex<'a>) -> Self {
        let mut rules = Rules {
            index,
            by_user_name: FxHashMap::default(),
            by_email: FxHashMap::default(),
        };
        // An empty value is no key: every account and person without an email
        // would otherwise "share" one, and a match through it be disputed.
        let key_worthy = |value: &&str| !value.trim().is_empty();
        for account in accounts {
            if rules.by_external_id(account).is_none() {
                if key_worthy(&account.user_name.as_str()) {
                    rules
                        .by_user_name
                        .entry(name_key(&account.user_name))
                        .or_default();
                }
                if let Some(email) = account.email.as_deref().filter(key_worthy) {
                    rules.by_email.entry(name_key(email)).or_default();
                }
                // A workspace that names accounts by email address (Taskade
                // does) may carry no separate email: an account whose userName
                // is a person's email may be theirs (see rule 4).
                if key_worthy(&account.user_name.as_str()) {
                    rules
                        .by_email
                        .entry(name_key(&account.user_name))
                        .or_default();
                }
            }
        }
        if rules.by_user_name.is_empty() && rules.by_email.is_empty() {
            return rules;
        }
        let identities = index.identities();
        for (position, identity) in identities.iter().enumerate() {
            let Some(key) = slot_of(position) else {
                continue;
            };
            let first = || index.position(&identity.id) == Some(key);
            if let Some(keys) = rules
                .by_user_name
                .get_mut(name_key(&identity.user_name).as_ref())
                && first()
            {
                keys.push(key);
            }
            if let Some(email) = &identity.email
                && let Some(keys) = rules.by_email.get_mut(name_key(email).as_ref())
                && first()
            {
                keys.push(key);
            }
        }
        let id_of = |key: u32| identities.get(key as usize).map_or("", |i| i.id.as_str());
        for keys in rules
            .by_user_name
            .values_mut()
            .chain(rules.by_email.values_mut())
        {
            keys.sort_dedup_by_key(|&k| id_of(k));
        }
        rules
    }

    fn by_external_id(&self, account: &Account) -> Option<u32> {
        account
            .external_id
            .as_deref()
            .and_then(|e| self.index.position(e))
    }

    /// The first rule that finds anyone for `account`, and whom it finds
    /// (identity keys: directory positions). `account` must be one of those the
    /// rules were built for.
    fn candidates(&self, account: &Account) -> Option<(LinkMethod, Cands<'_>)> {
        if let Some(key) = self.by_external_id(account) {
            return Some((LinkMethod::ExternalId, Cands::One(key)));
        }
        if let Some(keys) = found(&self.by_user_name, &account.user_name) {
            return Some((LinkMethod::UserName, Cands::Slice(keys)));
        }
        let by_own_email = account
            .email
            .as_deref()
            .and_then(|email| found(&self.by_email, email));
        let by_name_as_email = found(&self.by_email, &account.user_name);
        let keys = match (by_own_email, by_name_as_email) {
            (Some(own), Some(named)) if own != named => {
                let identities = self.index.identities();
                let id_of = |key: u32| identities.get(key as usize).map_or("", |i| i.id.as_str());
                let mut keys: Vec<u32> = own.iter().chain(named).copied().collect();
                keys.sort_unstable_by_key(|&k| id_of(k));
                keys.dedup();
                Cands::Union(keys)
            }
            (Some(keys), _) | (None, Some(keys)) => Cands::Slice(keys),
            (None, None) => return None,
        };
        Some((LinkMethod::Email, keys))
    }
}

/// Whom matching's rules 2–4 would find for each of `accounts` among
/// `directory`'s identities, as the plan finds them for an account no stored
/// link decides: the first rule that finds anyone, and everyone it finds. What
/// `approve` asks of an account a held action would take from someone: whether
/// someone the directory has now would claim it.
pub(crate) fn claims<'d>(
    directory: &'d DirectorySnapshot,
    accounts: &[&'d Account],
) -> Vec<Option<(LinkMethod, Vec<&'d Identity>)>> {
    let index = IdentityIndex::build(&directory.identities, |_, _| {});
    let rules = Rules::build(accounts.iter().copied(), &index);
    accounts
        .iter()
        .map(|account| {
            let (method, found) = rules.candidates(account)?;
            let people: Vec<&'d Identity> = found
                .as_slice()
                .iter()
                .filter_map(|&k| index.at(k))
                .collect();
            Some((method, people))
        })
        .collect()
}

impl<'a> Matching<'a> {
    /// `desired` is given when it was computed from another snapshot than `index`
    /// indexes: its identities need keys too. The details of disputes tell the
    /// commands that settle them run as `admin` ([`PlanSettings::admin_command`]).
    fn build(
        index: &'a IdentityIndex<'a>,
        desired: Option<&'a DesiredState<'a>>,
        workspace: &'a WorkspaceSnapshot,
        links: &'a [Link],
        remembered: &'a [DisputedCandidate],
        admin: &str,
    ) -> Self {
        let identities = index.identities();
        let n = identities.len();
        let mut extra = Extra {
            n: u32::try_from(n).unwrap_or(MANY),
            ids: Vec::new(),
            index: FxHashMap::default(),
        };
        if let Some(desired) = desired {
            for (position, identity) in desired.index().identities().iter().enumerate() {
                if slot_of(position).is_some_and(|p| desired.entry_at(p) != Entry::Repeat) {
                    extra.key(&identity.id, index);
                }
            }
        }
        // The account index on this thread, the stored links' identity positions in
        // chunks beside it; then the links' account slots in chunks on both.
        let chunks = links.len().div_ceil(CHUNK);
        let (link_positions, (accounts, account_index)) = beside(
            chunks,
            |c| {
                chunk(links, c)
                    .iter()
                    .map(|l| index.position(&l.identity_id).unwrap_or(NONE))
                    .collect::<Vec<u32>>()
            },
            || ById::build(&workspace.accounts),
        );
        let (link_slots, ()) = beside(
            chunks,
            |c| {
                chunk(links, c)
                    .iter()
                    .map(|l| account_index.position(&l.account_id).unwrap_or(NONE))
                    .collect::<Vec<u32>>()
            },
            || {},
        );
        let account_id = |slot: u32| accounts.get(slot as usize).map_or("", |a| a.id.as_str());

        let mut owners: Vec<Owner> = vec![Owner::Orphan; accounts.len()];
        let mut details: Vec<String> = Vec::new();
        let mut disputed: FxHashMap<u32, String> = FxHashMap::default();
        let mut suspects: FxHashMap<u32, Vec<(u32, Via)>> = FxHashMap::default();
        let mut several: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut new_links = Vec::new();

        // Stored links: only one-to-one pairs decide; anything else is disputed.
        // Identities whose id the externalId of an account linked to someone else
        // names, with that account and the identity it is linked to.
        let mut claimed_elsewhere: Vec<(u32, u32, &str, u32)> = Vec::new();
        let mut by_account = Firsts::new(accounts.len());
        let mut by_identity = Firsts::new(n);
        let link_slots = link_slots.iter().flatten();
        let link_positions = link_positions.iter().flatten();
        for ((link, &slot), &position) in links.iter().zip(link_slots).zip(link_positions) {
            if slot != NONE
                && let Some(key) = extra.key_at(&link.identity_id, position)
            {
                by_account.push(slot, key);
                if by_identity.first.len() <= key as usize {
                    by_identity.first.resize(key as usize + 1, NONE);
                }
                by_identity.push(key, slot);
            }
        }
        let Extra {
            ids: mut extra,
            index: mut extra_index,
            ..
        } = extra;
        let id_of = |key: u32| match key.checked_sub(u32::try_from(n).unwrap_or(MANY)) {
            None => identities.get(key as usize).map_or("", |i| i.id.as_str()),
            Some(k) => extra.get(k as usize).copied().unwrap_or(""),
        };
        by_account.sort_dedup_by_key(id_of);
        by_identity.sort_dedup_by_key(account_id);
        let mut primary: Vec<u32> = vec![NONE; n + extra.len()];
        for (slot, owner) in owners.iter_mut().enumerate() {
            let Some(slot) = slot_of(slot) else { continue };
            let keys = by_account.get(slot);
            if keys.is_empty() {
                continue;
            }
            let clean = keys.len() == 1 && keys.iter().all(|&k| by_identity.get(k).len() == 1);
            let account = accounts.get(slot as usize).copied();
            if clean
                && let &[key] = keys
                && let Some((named, named_id)) = named_by_external_id(account, index)
                && named != key
            {
                // The account says whose it is, and it is someone else in the
                // directory: a state database from another workspace, or ids a
                // provider reused. Trusted, the link would hand this account
                // (name, projects) to the linked person.
                let linked_id = id_of(key);
                let this = account_id(slot);
                *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                details.push(format!(
                    "its stored link is to identity {linked_id}, but its externalId names \
                     identity {named_id} (a state database from another workspace, or reused \
                     ids?): if the link is right, set the account's externalId to {linked_id:?} \
                     in the workspace; if the account is {named_id}'s, `{}` moves the link",
                    crate::model::admin_command_line(
                        admin,
                        "link",
                        &[named_id, this],
                        &["--replace"]
                    )
                ));
                disputed.entry(key).or_insert_with(|| {
                    format!(
                        "its stored link is to account {this}, whose externalId names identity \
                         {named_id}: if the link is right, set the account's externalId to \
                         {linked_id:?} in the workspace; if the account is {named_id}'s, \
                         `{}` moves the link",
                        crate::model::admin_command_line(
                            admin,
                            "link",
                            &[named_id, this],
                            &["--replace"]
                        )
                    )
                });
                suspects
                    .entry(key)
                    .or_default()
                    .push((slot, Via::StoredLink));
                claimed_elsewhere.push((named, slot, this, key));
            } else if clean {
                for &key in keys {
                    *owner = Owner::Primary(key);
                    if let Some(p) = primary.get_mut(key as usize) {
                        *p = slot;
                    }
                }
            } else {
                // The store keeps links one-to-one (both of its columns are unique),
                // so only links handed to `plan` directly get here: each person's
                // item names the account, which gets none of its own.
                *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                details.push(format!(
                    "stored links are not one-to-one (account is linked to {})",
                    joined(keys.iter().map(|&k| id_of(k)))
                ));
                for &key in keys {
                    disputed.entry(key).or_insert_with(|| {
                        format!(
                            "stored links are not one-to-one (identity is linked to {})",
                            joined(by_identity.get(key).iter().map(|&s| account_id(s)))
                        )
                    });
                    suspects.entry(key).or_default().extend(
                        by_identity
                            .get(key)
                            .iter()
                            .map(|&linked| (linked, Via::StoredLink)),
                    );
                }
            }
        }

        // Named by a contradicted link's account and with no account of their own
        // by a link: matched afresh, they would get a second account (or be created
        // one under a userName that account holds). One whose own link stands keeps
        // it: a leaver's account is not kept active by another account's claim.
        let mut contested: FxHashMap<u32, [(u32, Via); 2]> = FxHashMap::default();
        // By account id, not listing order: of several, the item names the same
        // account in every run.
        claimed_elsewhere.sort_unstable_by(|a, b| (a.0, a.2, a.1).cmp(&(b.0, b.2, b.1)));
        for (named, slot, account, linked) in claimed_elsewhere {
            if primary.get(named as usize).is_some_and(|&p| p == NONE) {
                let linked_id = id_of(linked);
                disputed.entry(named).or_insert_with(|| {
                    format!(
                        "account {account}'s externalId names this identity, but its stored \
                         link is to identity {linked_id}"
                    )
                });
                let by_external_id = Via::Rule(LinkMethod::ExternalId);
                suspects
                    .entry(named)
                    .or_default()
                    .push((slot, by_external_id));
                contested.insert(slot, [(linked, Via::StoredLink), (named, by_external_id)]);
            }
        }

        // Heuristic matching for accounts without a stored link.
        let unlinked = || {
            accounts
                .iter()
                .enumerate()
                .filter_map(|(slot, account)| Some((slot_of(slot)?, *account)))
                .filter(|&(slot, _)| !by_account.has(slot))
        };
        let rules = Rules::build(unlinked().map(|(_, account)| account), index);
        let candidates = |account: &Account| rules.candidates(account);

        let mut tentative: FxHashMap<u32, Few<(u32, LinkMethod)>> = FxHashMap::default();
        // Identity → the lowest account id that matches it among several others.
        let mut ambiguous: FxHashMap<u32, (&'a str, LinkMethod)> = FxHashMap::default();
        for (slot, account) in unlinked() {
            let Some(owner) = owners.get_mut(slot as usize) else {
                continue;
            };
            let Some((method, found)) = candidates(account) else {
                *owner = Owner::Orphan;
                continue;
            };
            let candidates = found.as_slice();
            match candidates {
                &[only] => {
                    let linked_to = primary.get(only as usize).copied().unwrap_or(NONE);
                    if linked_to != NONE {
                        *owner = Owner::Duplicate {
                            identity: only,
                            linked_to,
                            method,
                        };
                    } else if by_identity.has(only) {
                        suspects
                            .entry(only)
                            .or_default()
                            .push((slot, Via::Rule(method)));
                        *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                        details.push(format!(
                            "matches identity {} by {}, whose stored links are disputed",
                            id_of(only),
                            method.as_str()
                        ));
                    } else {
                        tentative.entry(only).or_default().push((slot, method));
                    }
                }
                _ => {
                    let detail = format!(
                        "matches several identities by {}: {}",
                        method.as_str(),
                        joined(candidates.iter().map(|&k| id_of(k)))
                    );
                    for &key in candidates {
                        // A stored link already decides a linked identity's account.
                        if !by_identity.has(key) {
                            suspects
                                .entry(key)
                                .or_default()
                                .push((slot, Via::Rule(method)));
                            let this = (account.id.as_str(), method);
                            ambiguous
                                .entry(key)
                                .and_modify(|first| {
                                    if this.0 < first.0 {
                                        *first = this;
                                    }
                                })
                                .or_insert(this);
                        }
                    }
                    several.insert(slot, candidates.to_vec());
                    *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                    details.push(detail);
                }
            }
        }
        // Identities disputed only because some other account matches them among
        // others, by a weaker rule than an externalId of their own.
        let mut only_ambiguous: std::collections::HashSet<u32> = std::collections::HashSet::new();
        for (key, (account, method)) in ambiguous {
            disputed.entry(key).or_insert_with(|| {
                only_ambiguous.insert(key);
                format!(
                    "account {account} matches this and other identities by {}",
                    method.as_str()
                )
            });
        }
        for (key, mut matched) in tentative {
            matched.sort_dedup_by_key(|&(slot, _)| account_id(slot));
            let identity_id = id_of(key);
            // An account whose externalId is this identity's id is this person's,
            // whatever another account's shared email says: the stray account
            // stays disputed, but a leaver's own account is not kept active by it.
            let own_external_id = |method: LinkMethod| {
                method == LinkMethod::ExternalId && only_ambiguous.contains(&key)
            };
            if let &[(slot, method)] = matched.as_slice()
                && let Some(why) =
                    someone_elses(accounts.get(slot as usize).copied(), method, admin).filter(
                        |_| {
                            identities
                                .get(key as usize)
                                .is_none_or(|i| i.status == IdentityStatus::Active)
                        },
                    )
            {
                if let Some(owner) = owners.get_mut(slot as usize) {
                    *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                    details.push(format!(
                        "matches identity {identity_id} by {}, but {why}",
                        method.as_str()
                    ));
                }
                disputed.entry(key).or_insert_with(|| {
                    format!("its only match, account {}, {why}", account_id(slot))
                });
                suspects
                    .entry(key)
                    .or_default()
                    .push((slot, Via::Rule(method)));
                continue;
            }
            match matched.as_slice() {
                &[(slot, method)] if !disputed.contains_key(&key) || own_external_id(method) => {
                    disputed.remove(&key);
                    suspects.remove(&key);
                    if let Some(owner) = owners.get_mut(slot as usize) {
                        *owner = Owner::Primary(key);
                    }
                    if let Some(p) = primary.get_mut(key as usize) {
                        *p = slot;
                    }
                    new_links.push(NewLink {
                        identity_id: identity_id.to_owned(),
                        account_id: account_id(slot).to_owned(),
                        method,
                    });
                }
                matched => {
                    let ids = joined(matched.iter().map(|&(slot, _)| account_id(slot)));
                    for &(slot, method) in matched {
                        if let Some(owner) = owners.get_mut(slot as usize) {
                            *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                            details.push(format!(
                                "matches identity {identity_id} by {}, as do other accounts or identities ({ids})",
                                method.as_str()
                            ));
                        }
                    }
                    disputed
                        .entry(key)
                        .or_insert_with(|| "several accounts match this identity".to_owned());
                    suspects.entry(key).or_default().extend(
                        matched
                            .iter()
                            .map(|&(slot, method)| (slot, Via::Rule(method))),
                    );
                }
            }
        }
        // Disputes an earlier run remembered, of people the directory no longer
        // has: nothing else ties them to the accounts that may be theirs, which
        // would pass for orphans (reported and left active, or deactivated as
        // such) while the person's loss of access went unrecorded.
        let mut remembered_names: FxHashMap<u32, &'a str> = FxHashMap::default();
        let mut remembered_emails: FxHashMap<u32, &'a str> = FxHashMap::default();
        // People whose legacy duplicates (store migration 22) disagree on
        // the address they were matched by.
        let mut unsure_emails: BTreeSet<u32> = BTreeSet::new();
        let mut remembered_duplicates: Vec<&'a DisputedCandidate> = Vec::new();
        // A remembered duplicate is the person's only while it still matches
        // them as the directory last had them: one renamed since (repurposed
        // for someone else) is an unmatched account, under
        // `unmatched_accounts`, never deactivated or deleted as theirs. Left
        // out of the settlement below: it ties no one to anyone now.
        let mut unmatched_since: FxHashMap<u32, &'a DisputedCandidate> = FxHashMap::default();
        let no_longer_theirs = |candidate: &DisputedCandidate| {
            account_index
                .position(&candidate.account_id)
                .and_then(|slot| accounts.get(slot as usize))
                .is_some_and(|account| no_longer_their_duplicate(candidate, account))
        };
        // People the directory deleted whose dispute a link settled, and whose
        // linked account is gone since (deleted after the retention period):
        // each remembered account of theirs that still exists was remembered
        // as a duplicate of an account the workspace no longer has. Those stay
        // the person's duplicates, deprovisioned as theirs; disputed again,
        // they would wait for a `link` to a person who is gone, and never be
        // deleted. One whose linked account still exists unlinked (`unlink`
        // took the decision back), or a remembered account still disputed,
        // leaves the person disputed, as does an account of theirs another
        // deleted person's memory names too (whichever came first in the
        // store's order would otherwise have it).
        let deleted_people: Vec<&'a DisputedCandidate> = remembered
            .iter()
            .filter(|c| {
                index.position(&c.identity_id).is_none()
                    && account_index.position(&c.account_id).is_some()
                    && !no_longer_theirs(c)
            })
            .collect();
        let mut remembered_by: FxHashMap<&'a str, (&'a str, bool)> = FxHashMap::default();
        for candidate in &deleted_people {
            remembered_by
                .entry(candidate.account_id.as_str())
                .and_modify(|(first, shared)| *shared |= *first != candidate.identity_id)
                .or_insert((candidate.identity_id.as_str(), false));
        }
        let mut settled_gone: FxHashMap<&'a str, bool> = FxHashMap::default();
        // People one of whose remembered accounts another deleted person's
        // memory names too: disputed again for that one, every duplicate of
        // theirs is, and their item says why whichever the store lists first.
        let mut sharing: BTreeSet<&'a str> = BTreeSet::new();
        for candidate in &deleted_people {
            let shared = remembered_by
                .get(candidate.account_id.as_str())
                .is_some_and(|&(_, shared)| shared);
            if shared {
                sharing.insert(candidate.identity_id.as_str());
            }
            let gone = !shared
                && candidate
                    .duplicate_of
                    .as_deref()
                    .is_some_and(|linked| account_index.position(linked).is_none());
            settled_gone
                .entry(candidate.identity_id.as_str())
                .and_modify(|settled| *settled &= gone)
                .or_insert(gone);
        }
        for candidate in remembered {
            let identity_id = candidate.identity_id.as_str();
            if index.position(identity_id).is_some() {
                // Still in the directory: matched afresh.
                continue;
            }
            let Some(slot) = account_index.position(&candidate.account_id) else {
                continue;
            };
            if no_longer_theirs(candidate) {
                // Someone the directory has may claim it now; if not, it is
                // nobody's, and remembered so the report keeps saying why.
                if owners.get(slot as usize) == Some(&Owner::Orphan) {
                    unmatched_since.entry(slot).or_insert(candidate);
                }
                continue;
            }
            let key = match extra_index.get(identity_id) {
                Some(&key) => key,
                None => {
                    let Some(key) = u32::try_from(n + extra.len()).ok().filter(|&k| k < MANY)
                    else {
                        continue;
                    };
                    extra.push(identity_id);
                    extra_index.insert(identity_id, key);
                    primary.push(NONE);
                    key
                }
            };
            remembered_names
                .entry(key)
                .or_insert(candidate.user_name.as_str());
            match (candidate.email.as_deref(), accounts.get(slot as usize)) {
                (Some(email), _) => {
                    remembered_emails.entry(key).or_insert(email);
                }
                (None, Some(account))
                    if candidate.method == LinkMethod::Email
                        && candidate.duplicate_of.is_some()
                        && !unsure_emails.contains(&key) =>
                {
                    // Two of their accounts showing different addresses: one
                    // was renamed before the upgrade, and which one nothing
                    // says. Kept, the wrong address would make their true
                    // duplicate nobody's; none is kept, and both stay theirs.
                    let shown = email_matched(account);
                    match remembered_emails.get(&key) {
                        Some(kept) if !same_key(kept, shown) => {
                            remembered_emails.remove(&key);
                            unsure_emails.insert(key);
                        }
                        Some(_) => {}
                        None => {
                            remembered_emails.insert(key, shown);
                        }
                    }
                }
                (None, _) => {}
            }
            let linked_to = primary.get(key as usize).copied().filter(|&p| p != NONE);
            let Some(owner) = owners.get_mut(slot as usize) else {
                continue;
            };
            match (*owner, linked_to) {
                // `seatwarden link` said which account is theirs: the others that
                // matched them go with it, as a present leaver's duplicates do.
                (Owner::Orphan, Some(linked_to)) => {
                    *owner = Owner::Duplicate {
                        identity: key,
                        linked_to,
                        method: candidate.method,
                    };
                }
                // Settled, and the linked account deleted since: still theirs,
                // remembered as it was.
                (Owner::Orphan, None) if settled_gone.get(identity_id) == Some(&true) => {
                    *owner = Owner::Duplicate {
                        identity: key,
                        linked_to: NONE,
                        method: candidate.method,
                    };
                    remembered_duplicates.push(candidate);
                }
                (Owner::Orphan | Owner::Disputed(_), None) => {
                    // Disputed for now (another deleted person's memory names
                    // it too): still remembered as the duplicate it was, so the
                    // settlement is not lost with the other dispute. One whose
                    // linked account exists unlinked is a dispute from now on.
                    // Why, as it was: a duplicate's settlement is no dispute
                    // the person had, and the reader must know what to undo.
                    let disputed_why = || {
                        "the directory no longer has this identity, whose match was disputed \
                         while it did"
                            .to_owned()
                    };
                    let shared_why = || {
                        "the directory no longer has this identity, and an account remembered \
                         as their duplicate is remembered for another person the directory lost \
                         too"
                        .to_owned()
                    };
                    let shared = remembered_by
                        .get(candidate.account_id.as_str())
                        .is_some_and(|&(_, shared)| shared);
                    let shares_another = sharing.contains(identity_id);
                    let (how, why) = match candidate.duplicate_of.as_deref() {
                        None => ("while its match was disputed".to_owned(), disputed_why()),
                        Some(linked) if account_index.position(linked).is_some() => (
                            format!(
                                "as a duplicate of account {linked}, which is linked to them \
                                 no more (`unlink`, or `link --replace` gave it to someone else)"
                            ),
                            format!(
                                "the directory no longer has this identity, and the link that \
                                 made account {linked} theirs is gone (`unlink`, or `link \
                                 --replace` gave it to someone else)"
                            ),
                        ),
                        Some(_) if shared => {
                            remembered_duplicates.push(candidate);
                            (
                                "as a duplicate of the account linked to them (deleted since), \
                                 which another person the directory lost may have too"
                                    .to_owned(),
                                shared_why(),
                            )
                        }
                        Some(_) => {
                            remembered_duplicates.push(candidate);
                            (
                                "as a duplicate of the account linked to them (deleted since)"
                                    .to_owned(),
                                if shares_another {
                                    shared_why()
                                } else {
                                    disputed_why()
                                },
                            )
                        }
                    };
                    if *owner == Owner::Orphan {
                        *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                        details.push(format!(
                            "matched identity {identity_id} by {} {how}, before the directory \
                             lost it",
                            candidate.method.as_str()
                        ));
                    }
                    disputed.entry(key).or_insert(why);
                    suspects
                        .entry(key)
                        .or_default()
                        .push((slot, Via::Rule(candidate.method)));
                }
                // Someone the directory has, or a stored link, claims it now.
                _ => {}
            }
        }
        // A settled person one of whose accounts another deleted person's
        // dispute names is disputed after all: their duplicates are listed
        // with it (left out, they would be neither deprovisioned nor reported),
        // and still remembered as duplicates.
        for candidate in &remembered_duplicates {
            let (Some(&key), Some(slot)) = (
                extra_index.get(candidate.identity_id.as_str()),
                account_index.position(&candidate.account_id),
            ) else {
                continue;
            };
            if disputed.contains_key(&key)
                && let Some(owner) = owners.get_mut(slot as usize)
                && matches!(owner, Owner::Duplicate { .. })
            {
                *owner = Owner::Disputed(slot_of(details.len()).unwrap_or(NONE));
                details.push(format!(
                    "matched identity {} by {} as a duplicate of the account linked to \
                     them, before the directory lost them",
                    candidate.identity_id,
                    candidate.method.as_str()
                ));
                suspects
                    .entry(key)
                    .or_default()
                    .push((slot, Via::Rule(candidate.method)));
            }
        }
        Matching {
            index,
            extra,
            extra_index,
            accounts,
            account_index,
            owners,
            details,
            primary,
            disputed,
            suspects,
            several,
            contested,
            new_links,
            remembered_names,
            remembered_emails,
            remembered_duplicates,
            unmatched_since,
        }
    }

    fn slot(&self, account_id: &str) -> Option<u32> {
        self.account_index.position(account_id)
    }

    /// The slots of a group's members that are workspace accounts, in member order.
    fn member_slots(&self, group: &WorkspaceGroup) -> Vec<u32> {
        group
            .members
            .iter()
            .filter_map(|member| self.slot(member))
            .collect()
    }

    fn at(&self, slot: u32) -> Option<&'a Account> {
        self.accounts.get(slot as usize).copied()
    }

    fn owner(&self, slot: u32) -> Option<&Owner> {
        self.owners.get(slot as usize)
    }

    fn n(&self) -> usize {
        self.index.identities().len()
    }

    /// The directory identity of a key (none for ids only links know).
    fn identity(&self, key: u32) -> Option<&'a Identity> {
        if (key as usize) < self.n() {
            self.index.at(key)
        } else {
            None
        }
    }

    /// The userName a person goes by: the directory's, else the one a remembered
    /// dispute kept, else their id.
    fn user_name_of(&self, key: u32) -> &'a str {
        match self.identity(key) {
            Some(identity) => identity.user_name.as_str(),
            None => self
                .remembered_names
                .get(&key)
                .copied()
                .unwrap_or_else(|| self.id_of(key)),
        }
    }

    /// The email a person goes by: the directory's, else the one a remembered
    /// dispute or duplicate kept.
    fn email_of(&self, key: u32) -> Option<&'a str> {
        match self.identity(key) {
            Some(identity) => identity.email.as_deref(),
            None => self.remembered_emails.get(&key).copied(),
        }
    }

    fn id_of(&self, key: u32) -> &'a str {
        match (key as usize).checked_sub(self.n()) {
            None => self.index.at(key).map_or("", |i| i.id.as_str()),
            Some(k) => self.extra.get(k).copied().unwrap_or(""),
        }
    }

    fn key_of(&self, id: &str) -> Option<u32> {
        self.index
            .position(id)
            .or_else(|| self.extra_index.get(id).copied())
    }

    fn primary_of(&self, key: u32) -> Option<u32> {
        self.primary
            .get(key as usize)
            .copied()
            .filter(|&s| s != NONE)
    }

    fn detail(&self, index: u32) -> &str {
        self.details.get(index as usize).map_or("", String::as_str)
    }
}
/// Workspace groups by lower-cased display name: those whose name is theirs
/// alone, and the names several groups share (their ids, sorted).
struct ExistingGroups<'a> {
    unique: BTreeMap<Cow<'a, str>, &'a WorkspaceGroup>,
    shared: BTreeMap<Cow<'a, str>, Vec<&'a str>>,
}

impl<'a> ExistingGroups<'a> {
    fn of(workspace: &'a WorkspaceSnapshot) -> Self {
        let mut by_name: BTreeMap<Cow<'a, str>, Vec<&'a WorkspaceGroup>> = BTreeMap::new();
        for group in &workspace.groups {
            by_name
                .entry(fold(&group.display_name))
                .or_default()
                .push(group);
        }
        let mut unique = BTreeMap::new();
        let mut shared = BTreeMap::new();
        for (name, groups) in by_name {
            match groups.as_slice() {
                [one] => {
                    unique.insert(name, *one);
                }
                several => {
                    let mut ids: Vec<&str> = several.iter().map(|g| g.id.as_str()).collect();
                    ids.sort_unstable();
                    shared.insert(name, ids);
                }
            }
        }
        ExistingGroups { unique, shared }
    }

    fn get(&self, key: &str) -> Option<&'a WorkspaceGroup> {
        self.unique.get(key).copied()
    }
}

#[derive(Default)]
struct Out {
    actions: Vec<Action>,
    drift: Vec<DriftItem>,
    retained: Vec<String>,
    disputed_leavers: Vec<DisputedLeaver>,
    disputed_candidates: Vec<DisputedCandidate>,
    protected_by_person: Vec<ProtectedByPerson>,
    excepted: Vec<ExceptedAccount>,
    protected_leavers: Vec<ProtectedLeaver>,
}

/// Per-account flags.
const UNTOUCHABLE: u8 = 1;
/// Accounts whose memberships seatwarden manages (desired-active people).
const MANAGED_MEMBER: u8 = 2;

/// A managed workspace group and the members the desired state gives it.
struct ManagedGroup<'p> {
    /// Lower-cased name.
    key: String,
    /// The name as a mapping spells it.
    name: &'p str,
    want_existing: Vec<u32>,
    /// Identity id and directory userName of people whose account is to be created.
    want_created: Vec<(&'p str, &'p str)>,
}

struct Planner<'p, 'a> {
    desired: &'p DesiredState<'p>,
    /// Whether the matching keys are the desired state's directory positions.
    shared: bool,
    settings: &'p PlanSettings,
    matching: &'p Matching<'a>,
    out: Out,
    /// Managed groups, sorted by lower-cased name, one per lower-cased name.
    managed: Vec<ManagedGroup<'p>>,
    /// Group name (as spelled) → index in `managed`.
    managed_by_name: FxHashMap<&'p str, usize>,
    /// Grant index → the indices in `managed` of its workspace groups.
    grant_groups: Vec<Vec<usize>>,
    /// Account slot → UNTOUCHABLE | MANAGED_MEMBER.
    flags: Vec<u8>,
    /// The creates and userName changes, made or reported once every person's
    /// wanted userName is known ([`Planner::user_names`]).
    claims: Vec<Claim<'p>>,
}

/// A create or a userName change, waiting for [`Planner::user_names`].
struct Claim<'p> {
    action: Action,
    /// The renamed account (none for a create).
    account_id: Option<String>,
    /// The renamed account's slot; NONE for a create.
    slot: u32,
    /// The userName wanted, as the directory spells it.
    target: &'p str,
    /// The account's userName before the rename.
    from: Option<&'p str>,
    /// A create's person, their directory userName and their grant: the groups
    /// they join once created.
    joins: Option<(&'p str, &'p str, u32)>,
}

struct Item<'s> {
    kind: DriftKind,
    identity_id: Option<&'s str>,
    account_id: Option<&'s str>,
    user_name: &'s str,
    detail: String,
}

impl<'p, 'a: 'p> Planner<'p, 'a> {
    fn new(
        desired: &'p DesiredState<'p>,
        shared: bool,
        settings: &'p PlanSettings,
        matching: &'p Matching<'a>,
    ) -> Self {
        let mut planner = Planner {
            desired,
            shared,
            settings,
            matching,
            out: Out::default(),
            managed: Vec::new(),
            managed_by_name: FxHashMap::default(),
            grant_groups: Vec::new(),
            flags: vec![0; matching.accounts.len()],
            claims: Vec::new(),
        };
        let mut by_key: BTreeMap<String, &'p str> = BTreeMap::new();
        for name in &desired.managed_groups {
            by_key.entry(fold(name).into_owned()).or_insert(name);
        }
        for (key, name) in by_key {
            planner.managed.push(ManagedGroup {
                key,
                name,
                want_existing: Vec::new(),
                want_created: Vec::new(),
            });
        }
        for name in &desired.managed_groups {
            planner.group_index(name);
        }
        for groups in desired.grant_groups() {
            let indices: Vec<usize> = groups.iter().map(|g| planner.group_index(g)).collect();
            planner.grant_groups.push(indices);
        }
        planner
    }

    /// The managed group a desired group name belongs to (added when no mapping
    /// names it, which `desired_state` never does).
    fn group_index(&mut self, name: &'p str) -> usize {
        if let Some(&index) = self.managed_by_name.get(name) {
            return index;
        }
        let key = fold(name);
        let index = match self.managed.binary_search_by(|g| g.key.as_str().cmp(&key)) {
            Ok(index) => index,
            Err(index) => {
                self.managed.insert(
                    index,
                    ManagedGroup {
                        key: key.into_owned(),
                        name,
                        want_existing: Vec::new(),
                        want_created: Vec::new(),
                    },
                );
                // Indices at or after the new group moved up by one.
                for i in self
                    .managed_by_name
                    .values_mut()
                    .chain(self.grant_groups.iter_mut().flatten())
                {
                    if *i >= index {
                        *i += 1;
                    }
                }
                index
            }
        };
        self.managed_by_name.insert(name, index);
        index
    }

    /// The desired account of the identity with this key, if it should have one.
    fn want(&self, key: u32) -> Option<Want<'p>> {
        if self.shared {
            return self.desired.want_at(key);
        }
        let (position, _) = self.desired.entry_of(self.matching.id_of(key))?;
        self.desired.want_at(position)
    }

    /// The directory userName of an identity that should have an account.
    fn desired_user_name(&self, key: u32) -> Option<&'p str> {
        self.want(key).map(|w| w.spec.user_name)
    }

    fn flag(&mut self, slot: u32, flag: u8) {
        if let Some(flags) = self.flags.get_mut(slot as usize) {
            *flags |= flag;
        }
    }

    fn flagged(&self, slot: u32, flag: u8) -> bool {
        self.flags.get(slot as usize).is_some_and(|f| f & flag != 0)
    }

    /// Lists an active account that only an exception in force keeps from losing
    /// access (`why`); one protected for good is not listed.
    fn except(&mut self, account: &Account, identity_id: Option<&str>, why: &str) {
        if !account.active {
            return;
        }
        if let Some(exception) = self.settings.protected.exception_for(&account.user_name) {
            self.out.excepted.push(ExceptedAccount {
                account_id: account.id.clone(),
                user_name: account.user_name.clone(),
                identity_id: identity_id.map(str::to_owned),
                why: why.to_owned(),
                exception: exception.clone(),
            });
        }
    }

    fn untouchable(&mut self, account: &Account) {
        if let Some(slot) = self.matching.slot(&account.id) {
            self.flag(slot, UNTOUCHABLE);
        }
    }

    fn drift(&mut self, item: Item<'_>) {
        self.out.drift.push(DriftItem {
            kind: item.kind,
            identity_id: item.identity_id.map(str::to_owned),
            account_id: item.account_id.map(str::to_owned),
            user_name: item.user_name.to_owned(),
            detail: item.detail,
            conflict: None,
        });
    }

    /// Records an action and the drift item that is its reason.
    fn act(&mut self, kind: ActionKind, item: Item<'_>) {
        let account_id = item.account_id.map(str::to_owned);
        self.emit(action_for(kind, item), account_id);
    }

    /// Records `action` and the drift item that is its reason (about `account_id`).
    fn emit(&mut self, action: Action, account_id: Option<String>) {
        self.out.drift.push(DriftItem {
            kind: action.reason,
            identity_id: action.identity_id.clone(),
            account_id,
            user_name: action.subject.clone(),
            detail: action.detail.clone(),
            conflict: None,
        });
        self.out.actions.push(action);
    }

    fn protected(&self, user_name: &str) -> bool {
        self.settings.protected.matches(user_name)
    }

    /// One drift item per dispute. An identity several accounts may belong to gets
    /// the item, listing each account and how it matched; those accounts get none of
    /// their own. An account keeps its own item when no identity item lists it — one
    /// account matching several identities is the account's dispute, and its
    /// identities get no item unless they lost access, which a reader must not miss.
    fn disputes(&mut self) {
        let m = self.matching;
        let admin = self.settings.admin_command.as_str();
        // Account slot → the identity keys whose emitted item lists it.
        let mut listed_in: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        for (&key, detail) in &m.disputed {
            let identity_id = m.id_of(key);
            let user_name = m.user_name_of(key);
            let email = m.email_of(key);
            // A leaver among them is what a reader must not miss: nothing is
            // deactivated until a human says which account is theirs.
            let lost = match m.identity(key) {
                None => Some(LossReason::Deleted),
                Some(identity) => match self.desired.entry_of(&identity.id) {
                    Some((_, Entry::Inactive(reason))) => Some(LossReason::from(reason)),
                    _ => None,
                },
            };
            let mut suspects: Vec<(&'a Account, u32, Via)> = m
                .suspects
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|&(slot, via)| Some((m.at(slot)?, slot, via)))
                .collect();
            suspects.sort_by(|a, b| a.0.id.cmp(&b.0.id));
            suspects.dedup_by(|a, b| a.0.id == b.0.id);
            let accounts: Vec<&'a Account> = suspects.iter().map(|&(a, _, _)| a).collect();
            let active: Vec<&str> = accounts
                .iter()
                .filter(|a| a.active)
                .map(|a| a.id.as_str())
                .collect();
            self.out
                .disputed_candidates
                .extend(suspects.iter().filter_map(|&(account, _, via)| match via {
                    // A stored link is remembered as a link. A deactivated
                    // account is remembered too: forgotten, it would be an
                    // orphan the run after (reported, taken out of its groups).
                    Via::Rule(method) => Some(DisputedCandidate {
                        identity_id: identity_id.to_owned(),
                        user_name: user_name.to_owned(),
                        account_id: account.id.clone(),
                        method,
                        duplicate_of: None,
                        email: email.map(str::to_owned),
                    }),
                    _ => None,
                }));
            // Someone protected is never touched, and the sweep ends their episodes:
            // one opened here would come back after every sweep.
            if let Some(reason) = lost
                && !active.is_empty()
                && !m
                    .identity(key)
                    .map(|identity| identity.user_name.as_str())
                    .or_else(|| m.remembered_names.get(&key).copied())
                    .is_some_and(|name| self.protected(name))
            {
                self.out.disputed_leavers.push(DisputedLeaver {
                    identity_id: identity_id.to_owned(),
                    user_name: user_name.to_owned(),
                    reason,
                    accounts: accounts.iter().map(|a| a.id.clone()).collect(),
                    active: active.iter().map(|&id| id.to_owned()).collect(),
                });
            }
            let only_through_several = !suspects.is_empty()
                && suspects
                    .iter()
                    .all(|(_, slot, _)| m.several.contains_key(slot));
            // One account two people claim is one dispute: the account's item names
            // both, so someone whose only candidate it is needs no item of their own.
            let only_a_contested_account = matches!(
                suspects.as_slice(),
                [(_, slot, _)] if m
                    .contested
                    .get(slot)
                    .is_some_and(|claims| claims.iter().any(|&(claimant, _)| claimant == key))
            );
            if lost.is_none() && (only_through_several || only_a_contested_account) {
                continue;
            }
            for &(_, slot, _) in &suspects {
                listed_in.entry(slot).or_default().push(key);
            }
            let candidates = joined(suspects.iter().map(|&(account, _, via)| {
                format!("{} ({}) by {}", account.id, account.user_name, via.as_str())
            }));
            let detail = if candidates.is_empty() {
                detail.clone()
            } else {
                format!("{detail}; candidates: {candidates}")
            };
            let link =
                crate::model::admin_command_line(admin, "link", &[identity_id, "ACCOUNT"], &[]);
            let explain = crate::model::admin_command_line(admin, "explain", &[identity_id], &[]);
            let detail = match lost {
                // Every account that may be theirs is inactive: they have no access,
                // and saying none is deactivated would send a reader looking for one.
                Some(lost) if active.is_empty() && !accounts.is_empty() => format!(
                    "{detail}; lost access ({}), and every account that may be theirs is \
                     inactive already: `{link}` settles which is theirs",
                    lost_text(lost)
                ),
                Some(lost) => format!(
                    "{detail}; LOST ACCESS ({}): no account of theirs is deactivated \
                     until `{link}` says which is theirs (`{explain}` compares them)",
                    lost_text(lost)
                ),
                None => {
                    format!("{detail}; `{explain}` compares them, `{link}` settles which is theirs")
                }
            };
            self.drift(Item {
                kind: DriftKind::DisputedMatch,
                identity_id: Some(identity_id),
                account_id: None,
                user_name,
                detail,
            });
        }
        for (slot, (account, owner)) in m.accounts.iter().zip(&m.owners).enumerate() {
            let Owner::Disputed(detail) = *owner else {
                continue;
            };
            let Some(slot) = slot_of(slot) else { continue };
            let listed = listed_in.get(&slot).map_or(&[][..], Vec::as_slice);
            let contested = m.contested.get(&slot);
            let covered = match (m.several.get(&slot), contested) {
                (Some(identities), _) => identities.iter().all(|key| listed.contains(key)),
                (None, Some(claims)) => claims.iter().all(|(key, _)| listed.contains(key)),
                (None, None) => !listed.is_empty(),
            };
            if covered {
                continue;
            }
            let detail = if let Some(claims) = contested {
                // The detail already says which `link … --replace` hands it over.
                let claimants = joined(claims.iter().map(|&(key, via)| {
                    let who = m
                        .identity(key)
                        .map_or("deleted from the directory", |i| i.user_name.as_str());
                    format!("identity {} ({who}) by {}", m.id_of(key), via.as_str())
                }));
                format!(
                    "{}; claimed by {claimants}; `{}` compares them",
                    m.detail(detail),
                    crate::model::admin_command_line(admin, "explain", &[&account.id], &[])
                )
            } else if m.several.contains_key(&slot) {
                format!(
                    "{}; `{}` compares them, `{}` settles whose it is",
                    m.detail(detail),
                    crate::model::admin_command_line(admin, "explain", &[&account.id], &[]),
                    crate::model::admin_command_line(
                        admin,
                        "link",
                        &["IDENTITY", &account.id],
                        &[]
                    )
                )
            } else {
                m.detail(detail).to_owned()
            };
            self.drift(Item {
                kind: DriftKind::DisputedMatch,
                identity_id: None,
                account_id: Some(&account.id),
                user_name: &account.user_name,
                detail,
            });
        }
    }

    fn identities(&mut self) {
        let m = self.matching;
        let desired = self.desired;
        let mut duplicates: FxHashMap<u32, Vec<(&'a Account, u32, LinkMethod)>> =
            FxHashMap::default();
        for (account, owner) in m.accounts.iter().zip(&m.owners) {
            if let Owner::Duplicate {
                identity,
                linked_to,
                method,
            } = *owner
            {
                duplicates
                    .entry(identity)
                    .or_default()
                    .push((account, linked_to, method));
                // Remembered with the account it duplicates: once the directory
                // deletes the person, nothing else ties it to them (an orphan,
                // left active), and once retention deletes their linked account
                // this still says whose it was. One whose linked account is
                // gone already is remembered as it was (see `plan`).
                if let Some(linked) = m.at(linked_to) {
                    self.out.disputed_candidates.push(DisputedCandidate {
                        identity_id: m.id_of(identity).to_owned(),
                        user_name: m.user_name_of(identity).to_owned(),
                        account_id: account.id.clone(),
                        method,
                        duplicate_of: Some(linked.id.clone()),
                        email: m.email_of(identity).map(str::to_owned),
                    });
                }
            }
        }
        // Every identity once: desired ones, then linked ones the desired state lacks
        // (their accounts are the primary accounts no desired identity claimed).
        let mut claimed = vec![false; m.accounts.len()];
        let one = |planner: &mut Self,
                   claimed: &mut Vec<bool>,
                   key: u32,
                   want: Option<Want<'p>>,
                   reason| {
            let primary = m.primary_of(key);
            if let Some(c) = primary.and_then(|slot| claimed.get_mut(slot as usize)) {
                *c = true;
            }
            if !m.disputed.is_empty() && m.disputed.contains_key(&key) {
                return;
            }
            let dupes = if duplicates.is_empty() {
                &[][..]
            } else {
                duplicates.get(&key).map_or(&[][..], Vec::as_slice)
            };
            planner.identity(key, want, reason, primary, dupes);
        };
        let shared = self.shared;
        let identities = desired.index().identities();
        let key_of = |position: u32| {
            if shared {
                Some(position)
            } else {
                let identity = identities.get(position as usize)?;
                m.key_of(&identity.id)
            }
        };
        for position in (0..identities.len()).filter_map(slot_of) {
            if let Some(want) = desired.want_at(position)
                && let Some(key) = key_of(position)
            {
                one(self, &mut claimed, key, Some(want), None);
            }
        }
        for position in (0..identities.len()).filter_map(slot_of) {
            if let Entry::Inactive(reason) = desired.entry_at(position)
                && let Some(key) = key_of(position)
            {
                one(self, &mut claimed, key, None, Some(reason));
            }
        }
        let mut unclaimed: Vec<(&'a str, u32)> = m
            .primary
            .iter()
            .enumerate()
            .filter(|&(_, &slot)| {
                slot != NONE && !claimed.get(slot as usize).copied().unwrap_or(true)
            })
            .filter_map(|(key, _)| {
                let key = slot_of(key)?;
                Some((m.id_of(key), key))
            })
            .collect();
        unclaimed.sort_unstable();
        for (_, key) in unclaimed {
            one(self, &mut claimed, key, None, None);
        }
        // People the directory deleted with no account left by a link (it was
        // deleted after the retention period), only remembered duplicates: no
        // list above has them, and their duplicates go the same way.
        let mut linkless: Vec<(&'a str, u32)> = duplicates
            .keys()
            .filter(|&&key| m.identity(key).is_none() && m.primary_of(key).is_none())
            .map(|&key| (m.id_of(key), key))
            .collect();
        linkless.sort_unstable();
        for (_, key) in linkless {
            one(self, &mut claimed, key, None, None);
        }
    }

    fn identity(
        &mut self,
        key: u32,
        want: Option<Want<'p>>,
        reason: Option<InactiveReason>,
        primary_slot: Option<u32>,
        dupes: &[(&'a Account, u32, LinkMethod)],
    ) {
        let m = self.matching;
        let identity_id = m.id_of(key);
        let primary = primary_slot.and_then(|s| m.at(s));
        let directory_user_name = want
            .as_ref()
            .map(|w| w.spec.user_name)
            .or_else(|| m.identity(key).map(|i| i.user_name.as_str()))
            .or_else(|| self.settings.protected.departed_name(identity_id))
            // Deleted, with no linked account left: the name their remembered
            // duplicates keep, as a disputed leaver is known (and protected) by.
            .or_else(|| {
                primary
                    .is_none()
                    .then(|| m.remembered_names.get(&key).copied())
                    .flatten()
            });
        if let Some(protected_name) = directory_user_name.filter(|u| self.protected(u)) {
            // Every account of a protected person is left alone, whatever its own
            // userName: protection only ever adds. One whose own userName is not
            // protected is listed, so a link that should not be (a stale one, a
            // rule's match) stays in sight of every report.
            let lost = match (want.is_some(), reason) {
                (true, _) => None,
                (false, Some(reason)) => Some(LossReason::from(reason)),
                (false, None) => m.identity(key).is_none().then_some(LossReason::Deleted),
            };
            // Deleted, the person is known by the name the ledger keeps only
            // while an exception names it, and without the protection for good
            // the directory gave them: the exception is what keeps the account.
            let departed = want.is_none() && m.identity(key).is_none();
            let exception = if departed {
                self.settings
                    .protected
                    .exception_for_departed(protected_name)
            } else {
                self.settings.protected.exception_for(protected_name)
            };
            let mut shielded = |account: &Account, duplicate: bool, method: Option<LinkMethod>| {
                if let Some(exception) = exception {
                    // Kept for a time, not for good: listed while it keeps
                    // access the person has lost, and no remedy is due. One
                    // protected by its own name stays after the end: not listed.
                    if let (Some(lost), true, false) = (
                        lost,
                        account.active,
                        self.settings.protected.permanently(&account.user_name),
                    ) {
                        self.out.excepted.push(ExceptedAccount {
                            account_id: account.id.clone(),
                            user_name: account.user_name.clone(),
                            identity_id: Some(identity_id.to_owned()),
                            why: lost.to_string(),
                            exception: exception.clone(),
                        });
                    }
                } else if self.settings.protected.permanently(&account.user_name) {
                    // Protected for good by its own name too, and in no other
                    // list, so a leaver's is listed here. One an exception alone
                    // names is kept for good only through its person: below.
                    if let (Some(lost), true) = (lost, account.active) {
                        self.out.protected_leavers.push(ProtectedLeaver {
                            account_id: account.id.clone(),
                            user_name: account.user_name.clone(),
                            identity_id: identity_id.to_owned(),
                            why: lost.to_string(),
                        });
                    }
                } else if lost.is_some() || !self.protected(&account.user_name) {
                    // Of someone with access, one an exception names is left
                    // alone by its own name for now: not listed.
                    self.out.protected_by_person.push(ProtectedByPerson {
                        account_id: account.id.clone(),
                        account_user_name: account.user_name.clone(),
                        active: account.active,
                        identity_id: identity_id.to_owned(),
                        // A leaver's is the directory's as it is: shown trimmed, as
                        // protection compares it.
                        user_name: protected_name.trim().to_owned(),
                        matched_by: method,
                        duplicate,
                        lost,
                    });
                }
            };
            // The primary's rule, if matched this run, is filled in from the new
            // links once (see `plan`).
            if let Some(account) = primary {
                shielded(account, false, None);
            }
            for &(account, _, method) in dupes {
                shielded(account, true, Some(method));
            }
            if let Some(slot) = primary_slot {
                self.flag(slot, UNTOUCHABLE);
            }
            for (account, _, _) in dupes {
                self.untouchable(account);
            }
            return;
        }
        let subject = directory_user_name
            .or(primary.map(|a| a.user_name.as_str()))
            .unwrap_or(identity_id);

        if let Some(want) = want {
            self.keep(identity_id, &want, subject, primary_slot.zip(primary));
            for &(dupe, linked_to, method) in dupes {
                if self.protected(&dupe.user_name) {
                    self.untouchable(dupe);
                    continue;
                }
                let linked_to = m.at(linked_to).map_or("", |a| a.id.as_str());
                // Under its own userName: the duplicate is the account a reader has
                // to handle, and the person's name would point at their linked one.
                self.drift(Item {
                    kind: DriftKind::DisputedMatch,
                    identity_id: Some(identity_id),
                    account_id: Some(&dupe.id),
                    user_name: &dupe.user_name,
                    detail: format!(
                        "duplicate account: matches {subject} (identity {identity_id}) by {} but \
                         they are linked to account {linked_to}",
                        method.as_str()
                    ),
                });
            }
        } else {
            let why = match reason {
                Some(reason) => reason.to_string(),
                None if m.identity(key).is_none() => {
                    "identity was deleted from the directory".to_owned()
                }
                None => "identity is not in the desired state".to_owned(),
            };
            // A suspension is usually temporary (leave, a locked account): it
            // deactivates, never deletes, whatever `deprovision.action` says.
            let suspended = reason == Some(InactiveReason::Suspended);
            if let Some(account) = primary {
                self.revoke(identity_id, subject, account, &why, suspended);
            }
            for &(dupe, linked_to, method) in dupes {
                // Under its own userName, as while the person is active: the
                // reader must see that a second account goes, and whose it was.
                let linked = match m.at(linked_to) {
                    Some(linked) => format!("linked to account {}", linked.id),
                    None => "whose linked account is gone from the workspace".to_owned(),
                };
                let why = format!(
                    "{DUPLICATE_OF}{subject} (identity {identity_id}, {linked}; matched by {}): \
                     {why}",
                    method.as_str()
                );
                self.revoke(identity_id, &dupe.user_name, dupe, &why, suspended);
            }
        }
    }

    /// A person who should have access, with their account (and its slot) if they
    /// have one.
    fn keep(
        &mut self,
        identity_id: &'p str,
        want: &Want<'p>,
        subject: &str,
        account: Option<(u32, &'a Account)>,
    ) {
        let Some((slot, account)) = account else {
            let action = action_for(
                ActionKind::CreateAccount {
                    identity_id: identity_id.to_owned(),
                    spec: want.spec.to_spec(),
                },
                Item {
                    kind: DriftKind::MissingAccount,
                    identity_id: Some(identity_id),
                    account_id: None,
                    user_name: subject,
                    detail: "identity is in scope but has no workspace account".to_owned(),
                },
            );
            self.claims.push(Claim {
                action,
                account_id: None,
                slot: NONE,
                target: want.spec.user_name,
                from: None,
                joins: Some((identity_id, want.spec.user_name, want.grant)),
            });
            return;
        };
        if self.protected(&account.user_name) {
            self.flag(slot, UNTOUCHABLE);
            return;
        }
        self.fix(identity_id, subject, slot, account, &want.spec);
        self.flag(slot, MANAGED_MEMBER);
        let Some(groups) = self.grant_groups.get(want.grant as usize) else {
            return;
        };
        for &index in groups {
            if let Some(g) = self.managed.get_mut(index) {
                g.want_existing.push(slot);
            }
        }
    }

    /// The managed groups of `grant` want the account to be created for
    /// `identity_id`.
    fn join_created(&mut self, identity_id: &'p str, user_name: &'p str, grant: u32) {
        let Some(groups) = self.grant_groups.get(grant as usize) else {
            return;
        };
        for &index in groups {
            if let Some(g) = self.managed.get_mut(index) {
                g.want_created.push((identity_id, user_name));
            }
        }
    }

    fn fix(
        &mut self,
        identity_id: &str,
        subject: &str,
        slot: u32,
        account: &'p Account,
        spec: &DesiredSpec<'p>,
    ) {
        let item = |kind, detail: String| Item {
            kind,
            identity_id: Some(identity_id),
            account_id: Some(&account.id),
            user_name: subject,
            detail,
        };
        if !account.active {
            self.act(
                ActionKind::Reactivate {
                    account_id: account.id.clone(),
                },
                item(
                    DriftKind::ReactivationDue,
                    "identity is active and in scope but the account is deactivated".to_owned(),
                ),
            );
        }
        let changes = attribute_changes(spec, account);
        let renames = changes.iter().any(|c| c.attribute == Attribute::UserName);
        if !changes.is_empty() {
            let action = attribute_update(identity_id, subject, &account.id, changes);
            if renames {
                self.claims.push(Claim {
                    action,
                    account_id: Some(account.id.clone()),
                    slot,
                    target: spec.user_name,
                    from: Some(&account.user_name),
                    joins: None,
                });
            } else {
                self.emit(action, Some(account.id.clone()));
            }
        }
        if let Some(role) = spec.role.filter(|_| self.settings.manage_roles)
            && account.role() != Some(role)
        {
            let from = ranked_roles(&account.roles);
            let detail = match from.as_slice() {
                [] => format!("role is none, policy gives {role}"),
                [one] => format!("role is {one}, policy gives {role}"),
                several => format!(
                    "holds several roles ({}), where an account has one: policy gives {role}",
                    several.join(", ")
                ),
            };
            self.act(
                ActionKind::SetRole {
                    account_id: account.id.clone(),
                    from,
                    to: role,
                },
                item(DriftKind::RoleDrift, detail),
            );
        }
    }

    /// An account of a person who must not have access.
    fn revoke(
        &mut self,
        identity_id: &str,
        subject: &str,
        account: &'a Account,
        why: &str,
        suspended: bool,
    ) {
        if self.protected(&account.user_name) {
            if account.active
                && self
                    .settings
                    .protected
                    .exception_for(&account.user_name)
                    .is_none()
            {
                // Protected for good (an exception on it is moot, and none is
                // listed): without this no report would show that a leaver keeps
                // access.
                self.out.protected_leavers.push(ProtectedLeaver {
                    account_id: account.id.clone(),
                    user_name: account.user_name.clone(),
                    identity_id: identity_id.to_owned(),
                    why: why.to_owned(),
                });
            } else {
                self.except(account, Some(identity_id), why);
            }
            self.untouchable(account);
            return;
        }
        let deletes = self.settings.deprovision == DeprovisionAction::Delete && !suspended;
        let retention = &self.settings.retention;
        let account_id = account.id.clone();
        let (kind, detail) = if account.active {
            (
                self.settings.revoke_active(account_id, suspended),
                format!("{why}; account is still active"),
            )
        } else if !deletes {
            return;
        } else if retention.delete_after <= TimeDelta::zero() {
            (
                ActionKind::Delete {
                    account_id,
                    deactivated_since: None,
                    frees_user_name: None,
                },
                format!("{why}; account is deactivated and deprovisioning deletes"),
            )
        } else {
            self.out.retained.push(account_id.clone());
            let Some(&since) = retention.deactivated_since.get(&account_id) else {
                return;
            };
            if retention.now - since < retention.delete_after {
                return;
            }
            let detail = format!(
                "{why}; account deactivated since {}, past the retention of {}",
                retention_clock_utc(since),
                days(retention.delete_after)
            );
            (
                ActionKind::Delete {
                    account_id,
                    deactivated_since: Some(since),
                    frees_user_name: None,
                },
                detail,
            )
        };
        let drift = if matches!(
            kind,
            ActionKind::Delete {
                deactivated_since: Some(_),
                ..
            }
        ) {
            DriftKind::RetentionExpired
        } else {
            DriftKind::StaleAccess
        };
        self.act(
            kind,
            Item {
                kind: drift,
                identity_id: Some(identity_id),
                account_id: Some(&account.id),
                user_name: subject,
                detail,
            },
        );
    }

    fn orphans(&mut self) {
        let m = self.matching;
        for (account, owner) in m.accounts.iter().zip(&m.owners) {
            if !matches!(owner, Owner::Orphan) {
                continue;
            }
            if self.protected(&account.user_name) {
                if self.settings.unmatched_accounts == UnmatchedAccounts::Deactivate {
                    self.except(account, None, "no directory identity matches this account");
                }
                self.untouchable(account);
                continue;
            }
            let detail = match m
                .slot(&account.id)
                .and_then(|slot| m.unmatched_since.get(&slot))
            {
                Some(remembered) => unmatched_since_text(remembered),
                None => "no directory identity matches this account".to_owned(),
            };
            let item = Item {
                kind: DriftKind::OrphanedAccount,
                identity_id: None,
                account_id: Some(&account.id),
                user_name: &account.user_name,
                detail,
            };
            match self.settings.unmatched_accounts {
                UnmatchedAccounts::Adopt => {}
                UnmatchedAccounts::Report => self.drift(item),
                UnmatchedAccounts::Deactivate if account.active => self.act(
                    ActionKind::Deactivate {
                        account_id: account.id.clone(),
                    },
                    item,
                ),
                UnmatchedAccounts::Deactivate => {}
            }
        }
    }

    /// Makes each create and userName change whose userName (folded as matching
    /// folds it) no other account holds and no other create or rename of this plan
    /// wants; the others are reported without an action (see the module docs). An
    /// account this plan deletes, or renames by a change that is made, gives its
    /// userName up first (deprovisions and renames run before creates, see
    /// [`sort_key`]). One pass over the accounts, and over the claims a few times.
    fn user_names(&mut self) {
        let claims = std::mem::take(&mut self.claims);
        if claims.is_empty() {
            return;
        }
        let m = self.matching;
        #[derive(Default)]
        struct Wanted {
            /// Indices in `claims`.
            claims: Few<u32>,
            /// Slots of the accounts that have it.
            holders: Few<u32>,
        }
        let mut wanted: FxHashMap<Cow<'_, str>, Wanted> = FxHashMap::default();
        wanted.reserve(claims.len());
        for (index, claim) in claims.iter().enumerate() {
            if let Some(index) = slot_of(index) {
                wanted
                    .entry(name_key(claim.target))
                    .or_default()
                    .claims
                    .push(index);
            }
        }
        for (slot, account) in m.accounts.iter().enumerate() {
            if let Some(w) = wanted.get_mut(name_key(&account.user_name).as_ref())
                && let Some(slot) = slot_of(slot)
            {
                w.holders.push(slot);
            }
        }
        // Named by account id and person id, not in the order the workspace and
        // the directory listed them (which a provider need not keep between
        // reads): the same conflict reads the same in every run's report.
        for w in wanted.values_mut() {
            w.holders
                .sort_dedup_by_key(|&h| (m.at(h).map(|a| a.id.as_str()), h));
            w.claims.sort_dedup_by_key(|&c| {
                let claim = claims.get(c as usize);
                (
                    claim.and_then(|c| c.action.identity_id.as_deref()),
                    claim.and_then(|c| c.account_id.as_deref()),
                    c,
                )
            });
        }
        let deleted: FxHashMap<u32, ()> = self
            .out
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::Delete { account_id, .. } => m.slot(account_id).map(|s| (s, ())),
                _ => None,
            })
            .collect();
        let in_the_way =
            |claim: &Claim<'_>, holder: u32| holder != claim.slot && !deleted.contains_key(&holder);
        // The least set of claims that can be made: one no one else wants, whose
        // holders are all gone or renamed by a claim made. A swap of two
        // userNames is never made (either rename would meet the other's account).
        let mut made = vec![false; claims.len()];
        let mut waiting = vec![0usize; claims.len()];
        let mut ready: Vec<u32> = Vec::new();
        for w in wanted.values() {
            let &[index] = w.claims.as_slice() else {
                continue;
            };
            let Some(claim) = claims.get(index as usize) else {
                continue;
            };
            let count = w
                .holders
                .as_slice()
                .iter()
                .filter(|&&h| in_the_way(claim, h))
                .count();
            if let Some(n) = waiting.get_mut(index as usize) {
                *n = count;
            }
            if count == 0 {
                ready.push(index);
            }
        }
        while let Some(index) = ready.pop() {
            if let Some(done) = made.get_mut(index as usize) {
                *done = true;
            }
            // A rename made frees the account's userName.
            let Some(account) = claims.get(index as usize).and_then(|c| m.at(c.slot)) else {
                continue;
            };
            let Some(w) = wanted.get(name_key(&account.user_name).as_ref()) else {
                continue;
            };
            if let &[next] = w.claims.as_slice()
                && let Some(n) = waiting.get_mut(next as usize)
                && *n > 0
            {
                *n -= 1;
                if *n == 0 {
                    ready.push(next);
                }
            }
        }

        // The deletes a claim made relies on say so: the executor holds the claim
        // back if its delete fails.
        if !deleted.is_empty() {
            let freed: FxHashMap<&str, &str> = claims
                .iter()
                .zip(&made)
                .filter(|&(_, &done)| done)
                .filter_map(|(claim, _)| wanted.get(name_key(claim.target).as_ref()))
                .flat_map(|w| w.holders.as_slice().iter())
                .filter(|&h| deleted.contains_key(h))
                .filter_map(|&h| m.at(h))
                .map(|account| (account.id.as_str(), account.user_name.as_str()))
                .collect();
            for action in &mut self.out.actions {
                if let ActionKind::Delete {
                    account_id,
                    frees_user_name,
                    ..
                } = &mut action.kind
                    && let Some(name) = freed.get(account_id.as_str())
                {
                    *frees_user_name = Some((*name).to_owned());
                }
            }
        }
        // The accounts renamed by a claim made: they hold their userName no more.
        let moved: FxHashMap<u32, ()> = claims
            .iter()
            .zip(&made)
            .filter(|&(c, &done)| done && c.slot != NONE)
            .map(|(c, _)| (c.slot, ()))
            .collect();
        let mut reports = Vec::new();
        for (index, claim) in claims.iter().enumerate() {
            if made.get(index).copied().unwrap_or(false) {
                continue;
            }
            let Some(w) = wanted.get(name_key(claim.target).as_ref()) else {
                continue;
            };
            // By account and person id; a few named, the rest counted.
            let in_place = |&&h: &&u32| in_the_way(claim, h) && !moved.contains_key(&h);
            let mut holders: Vec<String> = w
                .holders
                .as_slice()
                .iter()
                .filter(in_place)
                .take(NAMED)
                .filter_map(|&h| Some(self.holder_text(m.at(h)?, h)))
                .collect();
            let more = w.holders.as_slice().iter().filter(in_place).count();
            counted(&mut holders, more);
            let mut rivals: Vec<String> = w
                .claims
                .as_slice()
                .iter()
                .filter(|&&c| c as usize != index)
                .take(NAMED)
                .filter_map(|&c| claims.get(c as usize))
                .map(rival_text)
                .collect();
            counted(&mut rivals, w.claims.as_slice().len().saturating_sub(1));
            let mut detail = conflict_detail(claim, &holders, &rivals);
            if let Some(hint) = self.rehire_hint(claim, w.holders.as_slice(), &in_place) {
                detail.push_str(&hint);
            }
            // Every holder (few: the workspace holds a userName once, case
            // aside); the first few rivals, as the detail names them.
            let held_by = w
                .holders
                .as_slice()
                .iter()
                .filter(in_place)
                .filter_map(|&h| m.at(h).map(|a| a.id.clone()))
                .collect();
            let wanted_by: Vec<String> = w
                .claims
                .as_slice()
                .iter()
                .filter(|&&c| c as usize != index)
                .take(NAMED)
                .filter_map(|&c| claims.get(c as usize)?.action.identity_id.clone())
                .collect();
            let conflict = UserNameConflict {
                wanted_by_more: w
                    .claims
                    .as_slice()
                    .len()
                    .saturating_sub(1 + wanted_by.len()),
                held_by,
                wanted_by,
            };
            reports.push((index, (detail, conflict)));
        }
        let mut reports = reports.into_iter().peekable();
        for (index, claim) in claims.into_iter().enumerate() {
            let report = reports
                .next_if(|(i, _)| *i == index)
                .map(|(_, report)| report);
            let Claim {
                action,
                account_id,
                joins,
                target,
                ..
            } = claim;
            if made.get(index).copied().unwrap_or(false) {
                if let Some((identity_id, user_name, grant)) = joins {
                    self.join_created(identity_id, user_name, grant);
                }
                self.emit(action, account_id);
                continue;
            }
            let (detail, conflict) = report.unwrap_or_else(|| {
                (
                    format!("userName {target:?} is held or wanted by another account or person"),
                    UserNameConflict::default(),
                )
            });
            self.out.drift.push(DriftItem {
                kind: action.reason,
                identity_id: action.identity_id.clone(),
                account_id: account_id.clone(),
                user_name: action.subject.clone(),
                detail,
                conflict: Some(conflict),
            });
            // The account's other attributes are still brought in line.
            if let ActionKind::UpdateAttributes {
                account_id: id,
                mut changes,
            } = action.kind
            {
                changes.retain(|c| c.attribute != Attribute::UserName);
                if !changes.is_empty() {
                    let update = attribute_update(
                        action.identity_id.as_deref().unwrap_or(""),
                        &action.subject,
                        &id,
                        changes,
                    );
                    self.emit(update, account_id);
                }
            }
        }
    }

    /// An account that has a userName someone else wants, and whose it is.
    /// When the only account in the way of a person's create is one a leaver
    /// keeps by its stored link (deactivated, or deprovisioned by this plan),
    /// the link decides and the create waits for its delete, maybe for the
    /// whole retention period: a leaver rehired under a new directory id (Okta
    /// and Entra ID make a new user object) would lose access till then. Which
    /// reading is right only a person can say, so the command that hands the
    /// account over is named beside the detail's other way out.
    fn rehire_hint(
        &self,
        claim: &Claim<'_>,
        holders: &[u32],
        in_place: &impl Fn(&&u32) -> bool,
    ) -> Option<String> {
        let m = self.matching;
        if claim.account_id.is_some() {
            return None;
        }
        let person = claim.action.identity_id.as_deref()?;
        let mut in_the_way = holders.iter().filter(in_place);
        let (Some(&holder), None) = (in_the_way.next(), in_the_way.next()) else {
            return None;
        };
        let account = m.at(holder)?;
        let &Owner::Primary(key) = m.owner(holder)? else {
            return None;
        };
        let leaver = m.id_of(key);
        let deprovisioned =
            self.out.actions.iter().any(|a| {
                a.kind.is_deprovision() && a.kind.account_id() == Some(account.id.as_str())
            });
        (leaver != person && (deprovisioned || !account.active)).then(|| {
            format!(
                "; if account {} is this person's (identity {leaver} rehired under a new directory \
                 id?), `{}` gives it to them, projects included",
                account.id,
                crate::model::admin_command_line(
                    &self.settings.admin_command,
                    "link",
                    &[person, account.id.as_str()],
                    &["--replace"]
                )
            )
        })
    }

    fn holder_text(&self, account: &Account, slot: u32) -> String {
        let m = self.matching;
        let whose = match m.owner(slot) {
            Some(&Owner::Primary(key)) => format!("person {}", m.id_of(key)),
            Some(&Owner::Duplicate { identity, .. }) => {
                format!("a duplicate account of person {}", m.id_of(identity))
            }
            Some(Owner::Disputed(_)) => "whose match is disputed".to_owned(),
            Some(Owner::Orphan) | None => "no person in the directory".to_owned(),
        };
        format!("account {} ({whose})", account.id)
    }

    /// `members` holds, by position in `managed`, the account slots of the members
    /// of the workspace group `existing` gives it ([`Matching::member_slots`]).
    fn groups(&mut self, existing: &ExistingGroups<'a>, mut members: Vec<Option<Vec<u32>>>) {
        let m = self.matching;
        // Per account slot, the stamp of the last group that wants it, has it as a
        // member, and has seen it; a group's stamp is its position + 1.
        let mut wanted = vec![0u32; m.accounts.len()];
        let mut present = vec![0u32; m.accounts.len()];
        let mut seen = vec![0u32; m.accounts.len()];
        let managed = std::mem::take(&mut self.managed);
        for (position, group) in managed.into_iter().enumerate() {
            let Ok(stamp) = u32::try_from(position + 1) else {
                break;
            };
            let ManagedGroup {
                key,
                name,
                mut want_existing,
                mut want_created,
            } = group;
            // Which of several same-named groups is the mapped one, nothing here
            // can tell; anyone who may create a group could otherwise make a
            // decoy that takes the mapped members while the real group goes
            // unmanaged. None of them is touched until one name is left.
            if let Some(ids) = existing.shared.get(key.as_str()) {
                self.drift(Item {
                    kind: DriftKind::DisputedMatch,
                    identity_id: None,
                    account_id: None,
                    user_name: name,
                    detail: format!(
                        "{} workspace groups are named {name} ({}): seatwarden changes the \
                         members of none of them until only one has the name",
                        ids.len(),
                        joined(ids)
                    ),
                });
                continue;
            }
            want_existing.sort_unstable();
            want_existing.dedup();
            want_created.sort_unstable();
            want_created.dedup();
            for &slot in &want_existing {
                if let Some(w) = wanted.get_mut(slot as usize) {
                    *w = stamp;
                }
            }
            let (group_ref, member_slots): (GroupRef, Vec<u32>) = match existing.get(key.as_str()) {
                Some(group) => (
                    GroupRef::Existing {
                        id: group.id.clone(),
                        display_name: group.display_name.clone(),
                    },
                    members
                        .get_mut(position)
                        .and_then(Option::take)
                        .unwrap_or_else(|| m.member_slots(group)),
                ),
                None => {
                    self.act(
                        ActionKind::CreateGroup {
                            display_name: name.to_owned(),
                        },
                        Item {
                            kind: DriftKind::GroupDrift,
                            identity_id: None,
                            account_id: None,
                            user_name: name,
                            detail: format!("workspace group {name} does not exist"),
                        },
                    );
                    (
                        GroupRef::Created {
                            display_name: name.to_owned(),
                        },
                        Vec::new(),
                    )
                }
            };
            for &slot in &member_slots {
                if let Some(p) = present.get_mut(slot as usize) {
                    *p = stamp;
                }
            }
            let group_name = group_ref.display_name().to_owned();

            let mut add: Vec<AccountRef> = Vec::new();
            for &slot in &want_existing {
                if present.get(slot as usize) == Some(&stamp) {
                    continue;
                }
                let Some(account) = m.at(slot) else {
                    continue;
                };
                let key = match m.owner(slot) {
                    Some(&Owner::Primary(key)) => Some(key),
                    _ => None,
                };
                let user_name = key
                    .and_then(|k| self.desired_user_name(k))
                    .unwrap_or(account.id.as_str());
                self.drift(Item {
                    kind: DriftKind::GroupDrift,
                    identity_id: key.map(|k| m.id_of(k)),
                    account_id: Some(&account.id),
                    user_name,
                    detail: format!("should be a member of workspace group {group_name}"),
                });
                add.push(AccountRef::Existing {
                    id: account.id.clone(),
                });
            }
            // As a BTreeSet<AccountRef> orders them: existing accounts by id, then
            // accounts to be created by identity id.
            add.sort_unstable();
            for &(identity_id, user_name) in &want_created {
                self.drift(Item {
                    kind: DriftKind::GroupDrift,
                    identity_id: Some(identity_id),
                    account_id: None,
                    user_name,
                    detail: format!("should be a member of workspace group {group_name}"),
                });
                add.push(AccountRef::Created {
                    identity_id: identity_id.to_owned(),
                });
            }

            let mut remove: Vec<&str> = Vec::new();
            for &slot in &member_slots {
                let Some(s) = seen.get_mut(slot as usize) else {
                    continue;
                };
                if *s == stamp {
                    continue;
                }
                *s = stamp;
                let Some(account) = m.at(slot) else {
                    continue;
                };
                let member = account.id.as_str();
                if wanted.get(slot as usize) == Some(&stamp)
                    || self.flagged(slot, UNTOUCHABLE)
                    || self.protected(&account.user_name)
                {
                    continue;
                }
                let key = match m.owner(slot) {
                    Some(&Owner::Primary(key)) if self.flagged(slot, MANAGED_MEMBER) => Some(key),
                    // A deactivated orphan's memberships are left alone, as a
                    // leaver's are: they grant nothing while it is deactivated,
                    // and nobody's access is at stake. What is read of them may
                    // be no membership at all: a provider that lists only
                    // active members is read from the account's own `groups`,
                    // which some leave stale, and a removal of a member the
                    // group does not hold is answered success and changes
                    // nothing, so it was planned again on every run with no
                    // word to anyone. An active orphan's, read from the group,
                    // go with its deactivation (and are reported under `report`).
                    Some(Owner::Orphan) if account.active => None,
                    _ => continue,
                };
                let identity_id = key.map(|k| m.id_of(k));
                let subject = key
                    .and_then(|k| self.desired_user_name(k))
                    .unwrap_or(account.user_name.as_str());
                let item = Item {
                    kind: DriftKind::GroupDrift,
                    identity_id,
                    account_id: Some(member),
                    user_name: subject,
                    detail: if identity_id.is_some() {
                        format!("no mapping grants workspace group {group_name} any more")
                    } else {
                        format!("unmatched account is a member of managed group {group_name}")
                    },
                };
                match (identity_id, self.settings.unmatched_accounts) {
                    (Some(_), _) | (None, UnmatchedAccounts::Deactivate) => {
                        self.drift(item);
                        remove.push(member);
                    }
                    (None, UnmatchedAccounts::Report) => self.drift(item),
                    (None, UnmatchedAccounts::Adopt) => {}
                }
            }
            remove.sort_unstable();
            let remove: Vec<String> = remove.into_iter().map(str::to_owned).collect();

            if !add.is_empty() {
                let count = add.len();
                self.out.actions.push(Action {
                    seq: 0,
                    kind: ActionKind::AddMembers {
                        group: group_ref.clone(),
                        members: add,
                    },
                    reason: DriftKind::GroupDrift,
                    subject: group_name.clone(),
                    identity_id: None,
                    detail: format!("{count} member(s) missing from {group_name}"),
                    held: None,
                });
            }
            if !remove.is_empty() {
                let count = remove.len();
                self.out.actions.push(Action {
                    seq: 0,
                    kind: ActionKind::RemoveMembers {
                        group: group_ref,
                        members: remove,
                    },
                    reason: DriftKind::GroupDrift,
                    subject: group_name.clone(),
                    identity_id: None,
                    detail: format!("{count} member(s) of {group_name} not granted by any mapping"),
                    held: None,
                });
            }
        }
    }
}

/// How many of the others a conflict's detail names; the rest it counts.
const NAMED: usize = 3;

/// Adds to the `named` of `total` how many more there are.
fn counted(named: &mut Vec<String>, total: usize) {
    let more = total.saturating_sub(named.len());
    if more > 0 {
        named.push(format!("{more} more"));
    }
}

/// Another person's create or rename that wants the same userName.
fn rival_text(claim: &Claim<'_>) -> String {
    let person = claim.action.identity_id.as_deref().unwrap_or("");
    match &claim.account_id {
        None => format!("person {person} (a new account)"),
        Some(account) => format!("person {person} (account {account} renamed)"),
    }
}

/// Why a create or rename is not made, and what to do: `holders` have the
/// userName, `rivals` want it too.
fn conflict_detail(claim: &Claim<'_>, holders: &[String], rivals: &[String]) -> String {
    let what = match (&claim.account_id, &claim.from) {
        (Some(account), Some(from)) => format!("{NOT_RENAMED}{account} keeps {from:?}: userName "),
        _ => NOT_CREATED.to_owned(),
    };
    let mut why = Vec::new();
    if !holders.is_empty() {
        why.push(format!("is already held by {}", joined(holders)));
    }
    if !rivals.is_empty() {
        why.push(format!("is wanted by {} too", joined(rivals)));
    }
    let free = if holders.is_empty() {
        String::new()
    } else {
        ", or free it in the workspace (rename or delete the account holding it) if it is no \
         longer theirs"
            .to_owned()
    };
    format!(
        "{what}{:?} {}; two people cannot share a userName: fix it in the directory{free}",
        claim.target,
        why.join(" and ")
    )
}

/// The action that fixes the drift `item` describes.
fn action_for(kind: ActionKind, item: Item<'_>) -> Action {
    Action {
        seq: 0,
        kind,
        reason: item.kind,
        subject: item.user_name.to_owned(),
        identity_id: item.identity_id.map(str::to_owned),
        detail: item.detail,
        held: None,
    }
}

/// The update of an account's attributes to the directory's.
fn attribute_update(
    identity_id: &str,
    subject: &str,
    account_id: &str,
    changes: Vec<AttributeChange>,
) -> Action {
    let names = joined(changes.iter().map(|c| {
        format!(
            "{} {} → {}",
            c.attribute.as_str(),
            shown(c.from.as_deref()),
            shown(c.to.as_deref())
        )
    }));
    action_for(
        ActionKind::UpdateAttributes {
            account_id: account_id.to_owned(),
            changes,
        },
        Item {
            kind: DriftKind::AttributeDrift,
            identity_id: Some(identity_id),
            account_id: Some(account_id),
            user_name: subject,
            detail: format!("differs from the directory: {names}"),
        },
    )
}

/// Attribute drift, limited to what the directory provides (see the module docs).
fn attribute_changes(spec: &DesiredSpec<'_>, account: &Account) -> Vec<AttributeChange> {
    let mut changes = Vec::new();
    let mut change = |attribute, from: Option<&String>, to: &str| {
        changes.push(AttributeChange {
            attribute,
            from: from.cloned(),
            to: Some(to.to_owned()),
        });
    };
    if !same_ci(spec.user_name, &account.user_name) {
        change(
            Attribute::UserName,
            Some(&account.user_name),
            spec.user_name,
        );
    }
    if account.external_id.as_deref() != Some(spec.external_id) {
        change(
            Attribute::ExternalId,
            account.external_id.as_ref(),
            spec.external_id,
        );
    }
    for (attribute, want, have) in [
        (Attribute::GivenName, spec.given_name, &account.given_name),
        (
            Attribute::FamilyName,
            spec.family_name,
            &account.family_name,
        ),
        (
            Attribute::DisplayName,
            spec.display_name,
            &account.display_name,
        ),
    ] {
        if let Some(want) = want
            && have.as_deref() != Some(want)
        {
            change(attribute, have.as_ref(), want);
        }
    }
    if let Some(want) = spec.email
        && !account.email.as_ref().is_some_and(|e| same_ci(e, want))
    {
        change(Attribute::Email, account.email.as_ref(), want);
    }
    changes
}

/// The account id [`simulate`] gives an account created for `identity_id`.
pub fn created_account_id(identity_id: &str) -> String {
    format!("new:{identity_id}")
}

/// The group id [`simulate`] gives a group created as `display_name`.
pub fn created_group_id(display_name: &str) -> String {
    format!("new:{display_name}")
}

/// An account's role values in one order whatever order the workspace sent them
/// in: known roles highest first, then values no role parses from, ties by
/// their text. A `SetRole`'s `from` is part of its settle key
/// ([`crate::guard::settle_keys`]): a provider that lists an account's several
/// roles in another order on each read would otherwise restart the settle window
/// every run, and the account would never be given its one role.
fn ranked_roles(roles: &[String]) -> Vec<String> {
    let mut ranked = roles.to_vec();
    ranked.sort_by(|a, b| {
        let rank = |r: &String| r.parse::<crate::model::Role>().ok();
        let (ra, rb) = (rank(a), rank(b));
        rb.cmp(&ra).then_with(|| a.cmp(b))
    });
    ranked
}

/// Pure model of applying a plan's runnable (not held) actions to a workspace:
/// returns the workspace and links as they would be afterwards. Created accounts get
/// id `new:{identity_id}`, created groups `new:{display_name}`. The plan's proposed
/// links are stored; links to deleted accounts are dropped. Actions that refer to
/// something missing (a held create, a vanished account) change nothing, as a
/// workspace would refuse them.
pub fn simulate(
    workspace: &WorkspaceSnapshot,
    links: &[Link],
    plan: &Plan,
) -> (WorkspaceSnapshot, Vec<Link>) {
    let mut ws = workspace.clone();
    let mut links: Vec<Link> = links.to_vec();
    links.extend(plan.new_links.iter().map(|l| Link {
        identity_id: l.identity_id.clone(),
        account_id: l.account_id.clone(),
    }));

    let account_id_of = |r: &AccountRef| match r {
        AccountRef::Existing { id } => id.clone(),
        AccountRef::Created { identity_id } => created_account_id(identity_id),
    };
    let group_id_of = |r: &GroupRef| match r {
        GroupRef::Existing { id, .. } => id.clone(),
        GroupRef::Created { display_name } => created_group_id(display_name),
    };

    for action in plan.runnable() {
        match &action.kind {
            ActionKind::Deactivate { account_id } => {
                for a in ws.accounts.iter_mut().filter(|a| &a.id == account_id) {
                    a.active = false;
                }
            }
            ActionKind::Reactivate { account_id } => {
                for a in ws.accounts.iter_mut().filter(|a| &a.id == account_id) {
                    a.active = true;
                }
            }
            ActionKind::Delete { account_id, .. } => {
                ws.accounts.retain(|a| &a.id != account_id);
                for g in &mut ws.groups {
                    g.members.retain(|m| m != account_id);
                }
                links.retain(|l| &l.account_id != account_id);
            }
            ActionKind::CreateGroup { display_name } => {
                let id = created_group_id(display_name);
                if !ws.groups.iter().any(|g| g.id == id) {
                    ws.groups.push(WorkspaceGroup {
                        id,
                        display_name: display_name.clone(),
                        members: Vec::new(),
                    });
                }
            }
            ActionKind::CreateAccount { identity_id, spec } => {
                let id = created_account_id(identity_id);
                if !ws.accounts.iter().any(|a| a.id == id) {
                    ws.accounts.push(Account::created(id.clone(), spec));
                    links.push(Link {
                        identity_id: identity_id.clone(),
                        account_id: id,
                    });
                }
            }
            ActionKind::UpdateAttributes {
                account_id,
                changes,
            } => {
                for a in ws.accounts.iter_mut().filter(|a| &a.id == account_id) {
                    for change in changes {
                        change.apply_to(a);
                    }
                }
            }
            ActionKind::SetRole { account_id, to, .. } => {
                for a in ws.accounts.iter_mut().filter(|a| &a.id == account_id) {
                    a.roles = vec![to.as_str().to_owned()];
                }
            }
            ActionKind::AddMembers { group, members } => {
                let group_id = group_id_of(group);
                let ids: Vec<String> = members
                    .iter()
                    .map(account_id_of)
                    .filter(|id| ws.accounts.iter().any(|a| &a.id == id))
                    .collect();
                for g in ws.groups.iter_mut().filter(|g| g.id == group_id) {
                    for id in &ids {
                        if !g.members.contains(id) {
                            g.members.push(id.clone());
                        }
                    }
                }
            }
            ActionKind::RemoveMembers { group, members } => {
                let group_id = group_id_of(group);
                for g in ws.groups.iter_mut().filter(|g| g.id == group_id) {
                    g.members.retain(|m| !members.contains(m));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    links.retain(|l| seen.insert(l.clone()));
    (ws, links)
}

/// A retention period as people write it: `30 days`, `36 hours`, `90 minutes`,
/// `45 seconds` (the largest unit it is a whole number of).
fn days(period: TimeDelta) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let whole = |unit: TimeDelta, n: i64| n > 0 && period == unit * i32::try_from(n).unwrap_or(0);
    if whole(TimeDelta::days(1), period.num_days()) {
        plural(period.num_days(), "day")
    } else if whole(TimeDelta::hours(1), period.num_hours()) {
        plural(period.num_hours(), "hour")
    } else if whole(TimeDelta::minutes(1), period.num_minutes()) {
        plural(period.num_minutes(), "minute")
    } else {
        plural(period.num_seconds(), "second")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{AccountSpec, IdentityStatus, Role};
    use crate::policy::{Mapping, PolicySettings, desired_state};

    fn ident(id: &str, status: IdentityStatus, groups: &[&str]) -> Identity {
        Identity {
            id: id.into(),
            user_name: format!("{id}@ex.com"),
            email: Some(format!("{id}@ex.com")),
            given_name: Some(id.to_uppercase()),
            family_name: None,
            display_name: None,
            status,
            department: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn active(id: &str, groups: &[&str]) -> Identity {
        ident(id, IdentityStatus::Active, groups)
    }

    /// An account in line with `ident(identity, ..)` with role Viewer.
    fn acct(id: &str, identity: &str) -> Account {
        Account {
            id: id.into(),
            user_name: format!("{identity}@ex.com"),
            external_id: Some(identity.into()),
            given_name: Some(identity.to_uppercase()),
            family_name: None,
            display_name: None,
            email: Some(format!("{identity}@ex.com")),
            active: true,
            roles: vec!["Viewer".into()],
        }
    }

    fn group(id: &str, name: &str, members: &[&str]) -> WorkspaceGroup {
        WorkspaceGroup {
            id: id.into(),
            display_name: name.into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    fn link(identity: &str, account: &str) -> Link {
        Link {
            identity_id: identity.into(),
            account_id: account.into(),
        }
    }

    struct Fx {
        identities: Vec<Identity>,
        accounts: Vec<Account>,
        groups: Vec<WorkspaceGroup>,
        links: Vec<Link>,
        /// The last run's [`Plan::disputed_candidates`].
        remembered: Vec<DisputedCandidate>,
        policy: PolicySettings,
        settings: PlanSettings,
    }

    impl Fx {
        fn new() -> Self {
            Fx {
                identities: vec![],
                accounts: vec![],
                groups: vec![group("g", "Engineering", &[])],
                links: vec![],
                remembered: vec![],
                policy: PolicySettings {
                    scope_groups: vec![],
                    default_role: Role::Viewer,
                    mappings: vec![
                        Mapping {
                            group: "eng".into(),
                            workspace_group: "Engineering".into(),
                            role: Role::Editor,
                        },
                        Mapping {
                            group: "leads".into(),
                            workspace_group: "Engineering".into(),
                            role: Role::Maintainer,
                        },
                    ],
                    manage_roles: true,
                },
                settings: PlanSettings {
                    deprovision: DeprovisionAction::Deactivate,
                    retention: Default::default(),
                    unmatched_accounts: UnmatchedAccounts::Report,
                    manage_roles: true,
                    protected: Protected::default(),
                    admin_command: crate::model::DEFAULT_ADMIN_COMMAND.to_owned(),
                },
            }
        }

        fn dir(&self) -> DirectorySnapshot {
            DirectorySnapshot {
                identities: self.identities.clone(),
                complete: true,
            }
        }

        fn ws(&self) -> WorkspaceSnapshot {
            WorkspaceSnapshot {
                accounts: self.accounts.clone(),
                groups: self.groups.clone(),
            }
        }

        fn plan(&self) -> Plan {
            let dir = self.dir();
            plan(
                &desired_state(&dir, &self.policy),
                &dir,
                &self.ws(),
                &self.links,
                &self.remembered,
                &self.settings,
            )
        }

        /// Applies the plan and plans again.
        fn replan(&self) -> Plan {
            let first = self.plan();
            let (ws, links) = simulate(&self.ws(), &self.links, &first);
            let dir = self.dir();
            plan(
                &desired_state(&dir, &self.policy),
                &dir,
                &ws,
                &links,
                &first.disputed_candidates,
                &self.settings,
            )
        }
    }

    fn kinds(plan: &Plan) -> Vec<&ActionKind> {
        plan.actions.iter().map(|a| &a.kind).collect()
    }

    fn drift_of(plan: &Plan, kind: DriftKind) -> Vec<&DriftItem> {
        plan.drift.iter().filter(|d| d.kind == kind).collect()
    }

    fn existing(id: &str) -> AccountRef {
        AccountRef::Existing { id: id.into() }
    }

    /// The one decision the plan and the sweep share: an active account is deleted
    /// at once only by a deleting policy without retention, for a leaver who is not
    /// merely suspended.
    #[test]
    fn an_active_account_is_deleted_at_once_only_without_retention_and_not_for_a_suspension() {
        let settings = |deprovision, days: i64| PlanSettings {
            deprovision,
            retention: Retention {
                delete_after: TimeDelta::days(days),
                ..Default::default()
            },
            unmatched_accounts: UnmatchedAccounts::Report,
            manage_roles: true,
            protected: Protected::default(),
            admin_command: crate::model::DEFAULT_ADMIN_COMMAND.to_owned(),
        };
        let deletes = |s: &PlanSettings, suspended: bool| {
            matches!(
                s.revoke_active("a1".into(), suspended),
                ActionKind::Delete {
                    deactivated_since: None,
                    ..
                }
            )
        };
        assert!(deletes(&settings(DeprovisionAction::Delete, 0), false));
        assert!(!deletes(&settings(DeprovisionAction::Delete, 0), true));
        assert!(!deletes(&settings(DeprovisionAction::Delete, 30), false));
        assert!(!deletes(&settings(DeprovisionAction::Deactivate, 0), false));
        assert_eq!(
            settings(DeprovisionAction::Delete, 30).revoke_active("a1".into(), false),
            ActionKind::Deactivate {
                account_id: "a1".into()
            }
        );
    }

    #[test]
    fn converged_workspace_plans_nothing() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &[]), active("b", &["eng"])];
        fx.accounts = vec![acct("1", "a"), acct("2", "b")];
        fx.accounts[1].roles = vec!["Editor".into()];
        fx.groups = vec![group("g", "Engineering", &["2"])];
        fx.links = vec![link("a", "1"), link("b", "2")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.drift.is_empty(), "{:#?}", plan.drift);
        assert!(plan.new_links.is_empty());
    }

    #[test]
    fn missing_account_is_created_and_added_to_its_groups() {
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.identities = vec![active("a", &["eng", "leads"])];
        let plan = fx.plan();
        let spec = AccountSpec {
            user_name: "a@ex.com".into(),
            external_id: "a".into(),
            given_name: Some("A".into()),
            family_name: None,
            display_name: None,
            email: Some("a@ex.com".into()),
            role: Some(Role::Maintainer),
        };
        assert_eq!(
            kinds(&plan),
            [
                &ActionKind::CreateGroup {
                    display_name: "Engineering".into()
                },
                &ActionKind::CreateAccount {
                    identity_id: "a".into(),
                    spec
                },
                &ActionKind::AddMembers {
                    group: GroupRef::Created {
                        display_name: "Engineering".into()
                    },
                    members: vec![AccountRef::Created {
                        identity_id: "a".into()
                    }],
                },
            ]
        );
        assert_eq!(plan.actions[1].reason, DriftKind::MissingAccount);
        assert_eq!(plan.actions[1].subject, "a@ex.com");
        assert_eq!(
            plan.actions.iter().map(|a| a.seq).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(drift_of(&plan, DriftKind::MissingAccount).len(), 1);
        assert!(fx.replan().is_empty());
    }

    #[test]
    fn inactive_identities_lose_access_but_keep_memberships() {
        let mut fx = Fx::new();
        fx.identities = vec![
            ident("s", IdentityStatus::Suspended, &["eng"]),
            ident("d", IdentityStatus::Deprovisioned, &[]),
            ident("o", IdentityStatus::Active, &["contractors"]),
        ];
        fx.policy.scope_groups = vec!["eng".into()];
        fx.accounts = vec![acct("1", "s"), acct("2", "d"), acct("3", "o")];
        fx.accounts[1].given_name = Some("stale".into());
        fx.accounts[1].roles = vec!["Owner".into()];
        fx.groups = vec![group("g", "Engineering", &["1", "2"])];
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [
                &ActionKind::Deactivate {
                    account_id: "2".into()
                },
                &ActionKind::Deactivate {
                    account_id: "3".into()
                },
                &ActionKind::Deactivate {
                    account_id: "1".into()
                },
            ]
        );
        assert!(
            plan.actions
                .iter()
                .all(|a| a.reason == DriftKind::StaleAccess)
        );
        assert!(plan.actions[0].detail.contains("deprovisioned"));
        assert!(plan.actions[1].detail.contains("not in any scope group"));
        assert!(fx.replan().is_empty());
    }

    #[test]
    fn already_inactive_accounts_are_left_unless_deprovisioning_deletes() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("d", IdentityStatus::Deprovisioned, &[])];
        fx.accounts = vec![acct("1", "d")];
        fx.accounts[0].active = false;
        assert!(fx.plan().actions.is_empty());
        fx.settings.deprovision = DeprovisionAction::Delete;
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Delete {
                account_id: "1".into(),
                deactivated_since: None,
                frees_user_name: None,
            }]
        );
        assert!(fx.replan().is_empty());
    }

    #[test]
    fn retention_periods_read_as_people_write_them() {
        assert_eq!(days(TimeDelta::days(30)), "30 days");
        assert_eq!(days(TimeDelta::hours(36)), "36 hours");
        assert_eq!(days(TimeDelta::minutes(1)), "1 minute");
        assert_eq!(days(TimeDelta::seconds(90)), "90 seconds");
    }

    /// With a retention period, a leaver's active account is deactivated, and its
    /// deactivated account is deleted only once it has been seen deactivated that
    /// long. Until then it is listed in `retained`, so the store keeps its clock.
    #[test]
    fn deprovisioning_deletes_only_after_the_retention_period() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("d", IdentityStatus::Deprovisioned, &[])];
        fx.accounts = vec![acct("1", "d")];
        fx.settings.deprovision = DeprovisionAction::Delete;
        fx.settings.retention.delete_after = TimeDelta::days(30);
        let since = DateTime::parse_from_rfc3339("2026-10-01T09:00:00Z")
            .unwrap()
            .to_utc();
        fx.settings.retention.now = since;
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Deactivate {
                account_id: "1".into()
            }]
        );
        assert!(plan.retained.is_empty(), "active: no clock yet");

        fx.accounts[0].active = false;
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "no clock stored yet");
        assert_eq!(plan.retained, ["1"]);

        fx.settings
            .retention
            .deactivated_since
            .insert("1".into(), since);
        fx.settings.retention.now = since + TimeDelta::days(30) - TimeDelta::seconds(1);
        assert!(fx.plan().actions.is_empty(), "a second early");
        assert_eq!(fx.plan().retained, ["1"]);

        fx.settings.retention.now = since + TimeDelta::days(30);
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Delete {
                account_id: "1".into(),
                deactivated_since: Some(since),
                frees_user_name: None,
            }]
        );
        assert_eq!(plan.actions[0].reason, DriftKind::RetentionExpired);
        assert!(
            plan.actions[0]
                .detail
                .contains("deactivated since 2026-10-01 09:00 UTC, past the retention of 30 days"),
            "{}",
            plan.actions[0].detail
        );
        assert_eq!(plan.retained, ["1"]);
        assert!(fx.replan().is_empty());
    }

    /// Only a deactivated account of someone without access is on a retention
    /// clock: not a suspended person's, not a returner's, not a protected one, and
    /// none while deprovisioning only deactivates.
    #[test]
    fn retention_clocks_run_only_for_deactivated_accounts_of_people_without_access() {
        let mut fx = Fx::new();
        fx.identities = vec![
            ident("d", IdentityStatus::Deprovisioned, &[]),
            ident("s", IdentityStatus::Suspended, &[]),
            active("a", &[]),
            ident("p", IdentityStatus::Deprovisioned, &[]),
        ];
        fx.accounts = vec![
            acct("1", "d"),
            acct("2", "s"),
            acct("3", "a"),
            acct("4", "p"),
        ];
        for account in &mut fx.accounts {
            account.active = false;
        }
        fx.settings.protected = Protected::new(&["p@ex.com".into()]);
        fx.settings.deprovision = DeprovisionAction::Delete;
        fx.settings.retention.delete_after = TimeDelta::hours(36);
        let long_ago = DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        fx.settings.retention.now = long_ago + TimeDelta::days(400);
        for id in ["1", "2", "3", "4"] {
            fx.settings
                .retention
                .deactivated_since
                .insert(id.into(), long_ago);
        }
        let plan = fx.plan();
        assert_eq!(plan.retained, ["1"]);
        assert_eq!(
            kinds(&plan),
            [
                &ActionKind::Delete {
                    account_id: "1".into(),
                    deactivated_since: Some(long_ago),
                    frees_user_name: None,
                },
                &ActionKind::Reactivate {
                    account_id: "3".into()
                },
            ]
        );
        assert!(plan.actions[0].detail.ends_with("retention of 36 hours"));

        fx.settings.deprovision = DeprovisionAction::Deactivate;
        let plan = fx.plan();
        assert!(plan.retained.is_empty());
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Reactivate {
                account_id: "3".into()
            }]
        );
    }

    /// A suspension is usually temporary: even when deprovisioning deletes, a
    /// suspended person's account is deactivated, never deleted.
    #[test]
    fn a_suspended_identity_is_deactivated_even_when_deprovisioning_deletes() {
        let mut fx = Fx::new();
        fx.settings.deprovision = DeprovisionAction::Delete;
        fx.identities = vec![ident("s", IdentityStatus::Suspended, &[])];
        fx.accounts = vec![acct("1", "s")];
        assert_eq!(
            kinds(&fx.plan()),
            [&ActionKind::Deactivate {
                account_id: "1".into()
            }]
        );
        fx.accounts[0].active = false;
        assert!(fx.plan().actions.is_empty());
    }

    #[test]
    fn identity_gone_from_the_directory_is_deprovisioned_through_its_link() {
        let mut fx = Fx::new();
        fx.accounts = vec![acct("1", "gone")];
        fx.links = vec![link("gone", "1")];
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Deactivate {
                account_id: "1".into()
            }]
        );
        assert_eq!(plan.actions[0].identity_id.as_deref(), Some("gone"));
        assert!(plan.actions[0].detail.contains("deleted"));
        // Without the link the same account is merely orphaned.
        fx.links.clear();
        let plan = fx.plan();
        assert!(plan.actions.is_empty());
        assert_eq!(drift_of(&plan, DriftKind::OrphanedAccount).len(), 1);
    }

    /// A state database used against another workspace (or a provider that reused
    /// ids): the stored links give each of two accounts to the other person, while
    /// each account's externalId still names its own. Trusted, the links would swap
    /// the two accounts' names, roles and groups; both pairs are disputed instead.
    #[test]
    fn a_stored_link_its_accounts_external_id_contradicts_is_disputed() {
        let mut fx = Fx::new();
        fx.identities = vec![active("ursula", &["eng"]), active("vera", &[])];
        let mut ursulas = acct("1", "ursula");
        ursulas.roles = vec!["Editor".into()];
        fx.accounts = vec![ursulas, acct("2", "vera")];
        fx.groups = vec![group("g", "Engineering", &["1"])];
        fx.links = vec![link("ursula", "1"), link("vera", "2")];
        assert!(fx.plan().is_empty(), "{:#?}", fx.plan().actions);

        fx.links = vec![link("ursula", "2"), link("vera", "1")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.new_links.is_empty(), "{:?}", plan.new_links);
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        // One item per person, listing both accounts: the accounts get none of
        // their own.
        let identities: Vec<_> = disputed
            .iter()
            .filter_map(|d| d.identity_id.as_deref())
            .collect();
        assert_eq!(identities, ["ursula", "vera"], "{disputed:#?}");
        assert!(
            disputed.iter().all(|d| d.account_id.is_none()),
            "{disputed:#?}"
        );
        let vera = disputed
            .iter()
            .find(|d| d.identity_id.as_deref() == Some("vera"))
            .unwrap();
        assert!(
            vera.detail
                .contains("account 1, whose externalId names identity ursula")
                && vera.detail.contains("1 (ursula@ex.com) by a stored link")
                && vera.detail.contains("2 (vera@ex.com) by externalId")
                && vera.detail.contains("`seatwarden link ursula 1 --replace`"),
            "{}",
            vera.detail
        );
    }

    /// One account two people claim: its stored link is to one, its externalId
    /// names the other, who has no account of their own (a link stored before an
    /// admin changed the externalId, or a restored old database). One problem, one
    /// item: the account's, naming both people and how each claims it. Neither
    /// person gets an item of their own unless they lost access, nothing is done to
    /// the account, and the person its externalId names is not created another.
    #[test]
    fn an_account_linked_to_one_person_whose_external_id_names_another_is_one_item() {
        let mut fx = Fx::new();
        fx.identities = vec![active("ursula", &["eng"]), active("vera", &[])];
        let mut claimed = acct("1", "ursula");
        claimed.external_id = Some("vera".into());
        fx.accounts = vec![claimed];
        fx.links = vec![link("ursula", "1")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.new_links.is_empty(), "{:?}", plan.new_links);
        assert!(plan.disputed_leavers.is_empty(), "{plan:#?}");
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(disputed.len(), 1, "{disputed:#?}");
        let item = disputed[0];
        assert_eq!(
            (item.account_id.as_deref(), item.identity_id.as_deref()),
            (Some("1"), None)
        );
        for part in [
            "identity ursula (ursula@ex.com) by a stored link",
            "identity vera (vera@ex.com) by externalId",
            "`seatwarden explain 1`",
            "`seatwarden link vera 1 --replace`",
        ] {
            assert!(item.detail.contains(part), "{part}: {}", item.detail);
        }
        assert!(fx.replan().actions.is_empty());

        // Someone who lost access keeps an item of their own (and is listed as a
        // disputed leaver); the account's item still names both.
        fx.identities[0].status = IdentityStatus::Suspended;
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let leavers: Vec<_> = plan
            .disputed_leavers
            .iter()
            .map(|l| &l.identity_id)
            .collect();
        assert_eq!(leavers, ["ursula"]);
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        let subjects: Vec<_> = disputed
            .iter()
            .map(|d| (d.identity_id.as_deref(), d.account_id.as_deref()))
            .collect();
        assert_eq!(
            subjects,
            [(Some("ursula"), None), (None, Some("1"))],
            "{disputed:#?}"
        );
        assert!(
            disputed[0].detail.contains("LOST ACCESS"),
            "{}",
            disputed[0].detail
        );
        assert!(
            disputed[1]
                .detail
                .contains("identity vera (vera@ex.com) by externalId")
        );

        // The person the link is to was deleted from the directory.
        fx.identities.remove(0);
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let account = drift_of(&plan, DriftKind::DisputedMatch)
            .into_iter()
            .find(|d| d.account_id.as_deref() == Some("1"))
            .unwrap();
        assert!(
            account
                .detail
                .contains("identity ursula (deleted from the directory) by a stored link"),
            "{}",
            account.detail
        );
    }

    /// Only an externalId that names someone else the directory has contradicts a
    /// link: one naming nobody (push SCIM's own ids, a former employee) does not,
    /// and a person whose own link stands keeps their account although another
    /// linked account's externalId names them.
    #[test]
    fn a_link_stands_unless_its_external_id_names_another_person_in_the_directory() {
        let mut fx = Fx::new();
        fx.identities = vec![active("ursula", &[]), active("vera", &[])];
        let mut pushed = acct("1", "ursula");
        pushed.external_id = Some("00u1okta".into());
        fx.accounts = vec![pushed, acct("2", "vera")];
        fx.links = vec![link("ursula", "1"), link("vera", "2")];
        let plan = fx.plan();
        assert!(
            drift_of(&plan, DriftKind::DisputedMatch).is_empty(),
            "{plan:#?}"
        );
        assert_eq!(
            kinds(&plan),
            [&ActionKind::UpdateAttributes {
                account_id: "1".into(),
                changes: vec![AttributeChange {
                    attribute: Attribute::ExternalId,
                    from: Some("00u1okta".into()),
                    to: Some("ursula".into()),
                }],
            }]
        );
        fx.accounts[0].external_id = Some("ursula".into());

        // Account 3 is linked to a leaver but says it is vera's; vera's own link
        // to account 2 stands, and the leaver's link is not trusted.
        fx.identities
            .push(ident("walt", IdentityStatus::Deprovisioned, &[]));
        let mut claims_vera = acct("3", "walt");
        claims_vera.external_id = Some("vera".into());
        fx.accounts.push(claims_vera);
        fx.links.push(link("walt", "3"));
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert!(
            disputed
                .iter()
                .all(|d| d.identity_id.as_deref() != Some("vera")),
            "{disputed:#?}"
        );
        let walt: Vec<_> = disputed
            .iter()
            .filter(|d| d.identity_id.as_deref() == Some("walt"))
            .collect();
        assert!(
            disputed.len() == 1
                && walt.len() == 1
                && walt[0].detail.contains("3 (walt@ex.com) by a stored link"),
            "{disputed:#?}"
        );
        // vera leaving still deactivates her own account.
        fx.identities[1].status = IdentityStatus::Deprovisioned;
        assert_eq!(
            kinds(&fx.plan()),
            [&ActionKind::Deactivate {
                account_id: "2".into()
            }]
        );
    }

    #[test]
    fn inactive_account_of_active_identity_is_reactivated_and_fixed() {
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.identities = vec![active("a", &["eng"])];
        fx.accounts = vec![acct("1", "a")];
        fx.accounts[0].active = false;
        fx.accounts[0].given_name = Some("Old".into());
        fx.links = vec![link("a", "1")];
        let plan = fx.plan();
        let names: Vec<_> = plan.actions.iter().map(|a| a.kind.name()).collect();
        assert_eq!(
            names,
            [
                "create_group",
                "reactivate",
                "update_attributes",
                "set_role",
                "add_members"
            ]
        );
        assert_eq!(plan.actions[1].kind.account_id(), Some("1"));
        assert_eq!(plan.actions[1].reason, DriftKind::ReactivationDue);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| a.kind.name() == "create_account")
        );
        assert!(fx.replan().is_empty());
    }

    #[test]
    fn attribute_drift_ignores_case_of_user_name_and_email_and_never_clears() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &[])];
        fx.identities[0].display_name = None;
        fx.identities[0].family_name = Some("Smith".into());
        fx.accounts = vec![acct("1", "a")];
        fx.accounts[0].user_name = "A@EX.COM".into();
        fx.accounts[0].email = Some("A@Ex.Com".into());
        fx.accounts[0].display_name = Some("Keep me".into());
        fx.accounts[0].given_name = Some("a".into());
        fx.accounts[0].external_id = None;
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::UpdateAttributes {
                account_id: "1".into(),
                changes: vec![
                    AttributeChange {
                        attribute: Attribute::ExternalId,
                        from: None,
                        to: Some("a".into())
                    },
                    AttributeChange {
                        attribute: Attribute::GivenName,
                        from: Some("a".into()),
                        to: Some("A".into())
                    },
                    AttributeChange {
                        attribute: Attribute::FamilyName,
                        from: None,
                        to: Some("Smith".into())
                    },
                ]
            }]
        );
        assert_eq!(plan.actions[0].reason, DriftKind::AttributeDrift);
        assert_eq!(drift_of(&plan, DriftKind::AttributeDrift).len(), 1);
        assert_eq!(plan.new_links.len(), 1);
        assert_eq!(plan.new_links[0].method, LinkMethod::UserName);
    }

    /// Two workspace groups with the mapped name: which one is meant, nothing
    /// tells, and a decoy made by anyone who may create groups must not take the
    /// mapped members (nor leave the real group unmanaged). Neither is touched and
    /// none is created; once one name is left, it is managed again.
    #[test]
    fn a_mapped_name_two_workspace_groups_share_is_disputed() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &["eng"])];
        fx.accounts = vec![acct("1", "a"), acct("2", "b")];
        fx.links = vec![link("a", "1")];
        fx.groups = vec![
            group("z-real", "Engineering", &["2"]),
            group("a-decoy", "engineering", &[]),
        ];
        let plan = fx.plan();
        assert!(
            !plan.actions.iter().any(|a| matches!(
                a.kind,
                ActionKind::AddMembers { .. }
                    | ActionKind::RemoveMembers { .. }
                    | ActionKind::CreateGroup { .. }
            )),
            "{:#?}",
            plan.actions
        );
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(disputed.len(), 1);
        assert_eq!(
            disputed[0].detail,
            "2 workspace groups are named Engineering (a-decoy, z-real): seatwarden changes \
             the members of none of them until only one has the name"
        );

        fx.groups.remove(1);
        let plan = fx.plan();
        assert!(drift_of(&plan, DriftKind::DisputedMatch).is_empty());
        assert!(
            kinds(&plan).contains(&&ActionKind::AddMembers {
                group: GroupRef::Existing {
                    id: "z-real".into(),
                    display_name: "Engineering".into()
                },
                members: vec![existing("1")]
            }),
            "{:#?}",
            plan.actions
        );
    }

    #[test]
    fn role_drift_needs_exactly_the_desired_role() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &["leads"])];
        fx.accounts = vec![acct("1", "a")];
        fx.groups = vec![group("g", "engineering", &["1"])];
        fx.accounts[0].roles = vec!["maintainer".into()];
        assert!(fx.plan().is_empty(), "case of the role value is not drift");

        fx.accounts[0].roles = vec!["Maintainer".into(), "Viewer".into()];
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::SetRole {
                account_id: "1".into(),
                from: vec!["Maintainer".into(), "Viewer".into()],
                to: Role::Maintainer
            }]
        );
        assert_eq!(plan.actions[0].reason, DriftKind::RoleDrift);

        fx.accounts[0].roles = vec![];
        let plan = fx.plan();
        assert_eq!(
            plan.drift[0].detail, "role is none, policy gives Maintainer",
            "{plan:#?}"
        );

        fx.settings.manage_roles = false;
        assert!(fx.plan().is_empty());
        fx.settings.manage_roles = true;
        fx.policy.manage_roles = false;
        assert!(fx.plan().is_empty());
    }

    /// A new hire given a former employee's address must not be handed that
    /// person's deactivated account (their projects) by a match on the name: an
    /// account whose externalId names nobody in the directory is disputed. Without
    /// an externalId, or active (a workspace provisioned by another directory
    /// before), it is matched as before; a leaver is not disputed.
    #[test]
    fn a_deactivated_account_of_someone_gone_is_not_reactivated_for_a_namesake() {
        let mut fx = Fx::new();
        fx.identities = vec![active("new-hire", &[])];
        let mut old = acct("1", "former-employee");
        old.user_name = "new-hire@ex.com".into();
        old.active = false;
        fx.accounts = vec![old];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.new_links.is_empty());
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        // The person's item lists the account: it has none of its own.
        assert_eq!(disputed.len(), 1, "{disputed:#?}");
        assert!(
            disputed[0].identity_id.as_deref() == Some("new-hire")
                && disputed[0]
                    .detail
                    .contains("\"former-employee\" names nobody in the directory")
                && disputed[0]
                    .detail
                    .contains("1 (new-hire@ex.com) by userName"),
            "{disputed:#?}"
        );

        // Matched by email the same.
        fx.accounts[0].user_name = "someone@ex.com".into();
        fx.accounts[0].email = Some("NEW-HIRE@ex.com".into());
        let plan = fx.plan();
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(disputed.len(), 1, "{disputed:#?}");
        assert!(
            disputed[0].detail.contains("1 (someone@ex.com) by email"),
            "{disputed:#?}"
        );

        fx.accounts[0].external_id = None;
        let plan = fx.plan();
        assert!(
            kinds(&plan).contains(&&ActionKind::Reactivate {
                account_id: "1".into()
            }),
            "no externalId: nothing says it was someone else's"
        );
        fx.accounts[0].external_id = Some("former-employee".into());
        fx.accounts[0].active = true;
        let plan = fx.plan();
        assert!(drift_of(&plan, DriftKind::DisputedMatch).is_empty());
        assert_eq!(plan.new_links.len(), 1);

        fx.accounts[0].active = false;
        fx.identities[0].status = IdentityStatus::Deprovisioned;
        assert!(drift_of(&fx.plan(), DriftKind::DisputedMatch).is_empty());
    }

    /// A directory export that decomposes `é` into `e` + U+0301 (macOS, some HR
    /// systems) names the account the workspace stores composed: one person, linked,
    /// not a new hire beside an orphaned account, and no rename of their userName.
    #[test]
    fn a_decomposed_user_name_matches_its_composed_account() {
        let mut fx = Fx::new();
        let mut jose = active("jose", &["eng"]);
        jose.user_name = "jose\u{301}@ex.com".into();
        jose.email = Some("jose\u{301}@ex.com".into());
        fx.identities = vec![jose];
        let mut account = acct("1", "other");
        account.external_id = None;
        account.user_name = "Jos\u{e9}@ex.com".into();
        account.email = Some("jos\u{e9}@ex.com".into());
        fx.accounts = vec![account];
        let plan = fx.plan();
        assert_eq!(plan.new_links.len(), 1, "{:#?}", plan.actions);
        assert_eq!(plan.new_links[0].method, LinkMethod::UserName);
        assert!(
            !plan.actions.iter().any(|a| match &a.kind {
                ActionKind::CreateAccount { .. } => true,
                ActionKind::UpdateAttributes { changes, .. } => changes
                    .iter()
                    .any(|c| matches!(c.attribute, Attribute::UserName | Attribute::Email)),
                _ => false,
            }),
            "{:#?}",
            plan.actions
        );
    }

    /// White space at either end of a workspace userName (a typo some tools let
    /// through) hides no one: the account is Alice's, matched by userName and
    /// renamed to the directory's userName, not an orphan (deactivated under
    /// `unmatched_accounts = "deactivate"`) beside a second account created for
    /// her, which the workspace would refuse with 409 or take as a look-alike.
    #[test]
    fn a_user_name_with_white_space_at_an_end_matches_and_is_corrected() {
        for stored in ["alice@ex.com ", " Alice@ex.com\t"] {
            let mut fx = Fx::new();
            fx.identities = vec![active("alice", &[])];
            let mut account = acct("1", "alice");
            account.external_id = None;
            account.user_name = stored.into();
            fx.accounts = vec![account];
            fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
            let plan = fx.plan();
            assert_eq!(plan.new_links.len(), 1, "{stored:?}: {:#?}", plan.actions);
            assert_eq!(plan.new_links[0].method, LinkMethod::UserName);
            assert!(created(&plan).is_empty(), "{stored:?}: {:#?}", plan.actions);
            assert!(
                drift_of(&plan, DriftKind::OrphanedAccount).is_empty(),
                "{stored:?}"
            );
            let renames: Vec<&AttributeChange> = plan
                .actions
                .iter()
                .filter_map(|a| match &a.kind {
                    ActionKind::UpdateAttributes {
                        account_id,
                        changes,
                    } if account_id == "1" => Some(changes),
                    ActionKind::Deactivate { .. } => panic!("{stored:?}: {:#?}", plan.actions),
                    _ => None,
                })
                .flatten()
                .filter(|c| c.attribute == Attribute::UserName)
                .collect();
            assert_eq!(renames.len(), 1, "{stored:?}: {:#?}", plan.actions);
            assert_eq!(renames[0].to.as_deref(), Some("alice@ex.com"));
            assert!(fx.replan().is_empty(), "{stored:?}");
        }
    }

    /// The other way round: a directory that keeps white space around a userName
    /// (no connector of its own trims it) matches the account without it, renames
    /// nothing, and creates an account for a new hire under the name trimmed. A
    /// userName held with white space around it is held all the same.
    #[test]
    fn a_directory_user_name_with_white_space_is_matched_and_created_trimmed() {
        let mut fx = Fx::new();
        fx.identities = vec![
            with_user_name(active("bob", &[]), " bob@ex.com "),
            with_user_name(active("cy", &[]), "cy@ex.com\n"),
            with_user_name(active("dee", &[]), "ann@ex.com"),
            ident("ann", IdentityStatus::Suspended, &[]),
        ];
        let mut bob = acct("1", "bob");
        bob.external_id = None;
        // Ann left; her deactivated account keeps her userName.
        let mut ann = acct("2", "ann");
        ann.user_name = "ann@ex.com ".into();
        ann.active = false;
        fx.accounts = vec![bob, ann];
        fx.links = vec![link("ann", "2")];
        let plan = fx.plan();
        assert_eq!(plan.new_links.len(), 1, "{:#?}", plan.new_links);
        assert_eq!(plan.new_links[0].method, LinkMethod::UserName);
        assert!(
            !plan.actions.iter().any(|a| matches!(
                &a.kind,
                ActionKind::UpdateAttributes { changes, .. }
                    if changes.iter().any(|c| c.attribute == Attribute::UserName)
            )),
            "{:#?}",
            plan.actions
        );
        let specs: Vec<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::CreateAccount { spec, .. } => Some(spec.user_name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(specs, ["cy@ex.com"], "{:#?}", plan.actions);
        let reported = conflicts(&plan);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!(reported[0].0, "dee");
    }

    /// A directory email with white space at an end is the workspace's email
    /// trimmed: no attribute drift against an account that has it trimmed (a
    /// provider that stores it so was sent the same update every run, and its
    /// verification failed), and a create sends it trimmed.
    #[test]
    fn a_directory_email_with_white_space_is_no_drift_and_is_created_trimmed() {
        let mut fx = Fx::new();
        let mut bob = active("bob", &[]);
        bob.email = Some("Bob@ex.com ".into());
        let mut cy = active("cy", &[]);
        cy.email = Some(" cy@ex.com".into());
        fx.identities = vec![bob, cy];
        fx.accounts = vec![acct("1", "bob")];
        let plan = fx.plan();
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a.kind, ActionKind::UpdateAttributes { .. })),
            "{:#?}",
            plan.actions
        );
        let emails: Vec<Option<&str>> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::CreateAccount { spec, .. } => Some(spec.email.as_deref()),
                _ => None,
            })
            .collect();
        assert_eq!(emails, [Some("cy@ex.com")], "{:#?}", plan.actions);
    }

    /// U+212A KELVIN SIGN lower-cases to `k` in Unicode, and an account named with
    /// it would otherwise be matched to (and given the role of) the person it
    /// imitates. A plain case difference still matches, accented letters too.
    #[test]
    fn a_look_alike_user_name_is_not_matched() {
        let mut fx = Fx::new();
        fx.identities = vec![active("kim", &["eng"])];
        let mut look_alike = acct("1", "other");
        look_alike.external_id = None;
        look_alike.user_name = "\u{212A}im@ex.com".into();
        look_alike.email = None;
        fx.accounts = vec![look_alike];
        let plan = fx.plan();
        assert!(plan.new_links.is_empty(), "{:#?}", plan.new_links);
        assert!(
            plan.actions
                .iter()
                .any(|a| matches!(a.kind, ActionKind::CreateAccount { .. })),
            "{:#?}",
            plan.actions
        );
        assert!(!same_ci("\u{212A}im@ex.com", "kim@ex.com"));
        assert!(!same_ci("\u{130}da@ex.com", "ida@ex.com"));
        assert!(same_ci("Élodie@ex.com", "élodie@EX.com"));
        assert!(same_ci("ΟΔΟΣ@ex.com", "οδος@ex.com"), "a word-final Σ is ς");
        // Composing does not let the look-alike in either (NFC makes it `K`), also
        // beside letters that it does compose.
        assert!(!same_ci("\u{212A}ae\u{301}@ex.com", "kaé@ex.com"));
        assert!(same_ci(
            "\u{212A}ae\u{301}@ex.com",
            "\u{212A}a\u{e9}@EX.com"
        ));
        assert_eq!(fold("Élodie@EX.com"), "élodie@ex.com");

        fx.accounts[0].user_name = "KIM@EX.COM".into();
        let plan = fx.plan();
        assert_eq!(plan.new_links.len(), 1);
        assert_eq!(plan.new_links[0].method, LinkMethod::UserName);
    }

    #[test]
    fn matching_order_and_new_links() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &[]), active("b", &[]), active("c", &[])];
        let mut by_user_name = acct("2", "b");
        by_user_name.external_id = Some("unknown".into());
        by_user_name.user_name = "B@EX.COM".into();
        let mut by_email = acct("3", "c");
        by_email.external_id = None;
        by_email.user_name = "someone-else".into();
        by_email.email = Some("C@ex.com".into());
        fx.accounts = vec![acct("1", "a"), by_user_name, by_email];
        let plan = fx.plan();
        let links: Vec<_> = plan
            .new_links
            .iter()
            .map(|l| (l.identity_id.as_str(), l.account_id.as_str(), l.method))
            .collect();
        assert_eq!(
            links,
            [
                ("a", "1", LinkMethod::ExternalId),
                ("b", "2", LinkMethod::UserName),
                ("c", "3", LinkMethod::Email)
            ]
        );
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| a.kind.name() == "create_account")
        );
        assert!(fx.replan().is_empty());
    }

    #[test]
    fn stored_link_beats_heuristics_and_dead_links_are_ignored() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &[]), active("b", &[])];
        // Account 1 has b's userName and email but is linked to a. (An externalId
        // naming b would contradict the link: see
        // `a_stored_link_its_accounts_external_id_contradicts_is_disputed`.)
        let mut looks_like_b = acct("1", "b");
        looks_like_b.external_id = None;
        fx.accounts = vec![looks_like_b];
        fx.links = vec![link("a", "1"), link("b", "vanished")];
        let plan = fx.plan();
        assert!(plan.new_links.is_empty());
        let update = plan
            .actions
            .iter()
            .find(|a| a.kind.name() == "update_attributes")
            .unwrap();
        assert_eq!(update.identity_id.as_deref(), Some("a"));
        let created: Vec<_> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::CreateAccount { identity_id, .. } => Some(identity_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(created, ["b"]);
    }

    #[test]
    fn several_candidate_identities_are_disputed_and_untouched() {
        let mut fx = Fx::new();
        let mut x = active("x", &[]);
        x.email = Some("Pat@ex.com".into());
        let mut y = ident("y", IdentityStatus::Suspended, &[]);
        y.email = Some("pat@EX.com".into());
        fx.identities = vec![x, y];
        let mut account = acct("1", "nobody");
        account.external_id = None;
        account.email = Some("pat@ex.com".into());
        fx.accounts = vec![account];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.new_links.is_empty());
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        // The account's item names both people; the leaver's own item says they
        // lost access, which a reader must not miss.
        assert_eq!(disputed.len(), 2, "{disputed:#?}");
        assert!(
            disputed[0].account_id.as_deref() == Some("1")
                && disputed[0]
                    .detail
                    .contains("matches several identities by email: x, y"),
            "{disputed:#?}"
        );
        assert!(
            disputed[1].identity_id.as_deref() == Some("y")
                && disputed[1].detail.contains("LOST ACCESS"),
            "{disputed:#?}"
        );
        // Nobody lost access: one dispute, one item, the account's.
        fx.identities[1].status = IdentityStatus::Active;
        let plan = fx.plan();
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(disputed.len(), 1, "{disputed:#?}");
        assert_eq!(disputed[0].account_id.as_deref(), Some("1"));
    }

    /// A leaver's own account (its externalId is their id) is deactivated even when
    /// a stray account shares their email with someone else: that account is
    /// disputed, the leaver's is not.
    #[test]
    fn a_stray_account_sharing_an_email_does_not_shield_a_leavers_own_account() {
        let mut fx = Fx::new();
        let mut x = ident("x", IdentityStatus::Suspended, &[]);
        x.email = Some("pat@ex.com".into());
        let mut y = active("y", &[]);
        y.email = Some("pat@ex.com".into());
        fx.identities = vec![x, y];
        let own = acct("a", "x");
        let mut stray = acct("b", "nobody");
        stray.external_id = None;
        stray.email = Some("pat@ex.com".into());
        fx.accounts = vec![own, stray];
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Deactivate {
                account_id: "a".into()
            }],
            "{:#?}",
            plan.drift
        );
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert!(
            disputed
                .iter()
                .any(|d| d.account_id.as_deref() == Some("b")),
            "{disputed:#?}"
        );
        assert!(
            !disputed
                .iter()
                .any(|d| d.identity_id.as_deref() == Some("x")),
            "{disputed:#?}"
        );
    }

    /// An empty email is no match key: two people and an unlinked account without
    /// one (sent as "") are not a disputed match, and nobody matches by it.
    #[test]
    fn an_empty_email_matches_nobody() {
        let mut fx = Fx::new();
        let mut a = active("a", &[]);
        let mut b = active("b", &[]);
        a.email = Some(String::new());
        b.email = Some(" ".into());
        fx.identities = vec![a, b];
        let mut stray = acct("9", "stray");
        stray.external_id = None;
        stray.email = Some(String::new());
        let mut a_account = acct("1", "a");
        a_account.email = Some(String::new());
        fx.accounts = vec![a_account, stray];
        let plan = fx.plan();
        assert!(
            drift_of(&plan, DriftKind::DisputedMatch).is_empty(),
            "{:#?}",
            plan.drift
        );
        // b gets an account of their own; the stray one is nobody's.
        assert!(plan.actions.iter().any(|a| matches!(
            &a.kind,
            ActionKind::CreateAccount { identity_id, .. } if identity_id == "b"
        )));
        assert_eq!(drift_of(&plan, DriftKind::OrphanedAccount).len(), 1);
    }

    /// The ledger needs to know who left while an account that may be theirs is
    /// still active, and which accounts those are: the plan says so in a field of
    /// its own, not only in the disputed item's words.
    #[test]
    fn a_leaver_with_active_candidates_is_listed_with_every_account() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("a", IdentityStatus::Suspended, &[])];
        let mut by_email = acct("2", "a");
        by_email.external_id = None;
        by_email.user_name = "other".into();
        fx.accounts = vec![by_email, acct("1", "a")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert_eq!(
            plan.disputed_leavers,
            [DisputedLeaver {
                identity_id: "a".into(),
                user_name: "a@ex.com".into(),
                reason: LossReason::Suspended,
                accounts: vec!["1".into(), "2".into()],
                active: vec!["1".into(), "2".into()],
            }]
        );
        // One of them deactivated by hand: the other still has access.
        fx.accounts[1].active = false;
        let plan = fx.plan();
        assert_eq!(plan.disputed_leavers.len(), 1, "{:#?}", plan.drift);
        assert_eq!(plan.disputed_leavers[0].accounts, ["1", "2"]);
        assert_eq!(plan.disputed_leavers[0].active, ["2"]);
    }

    #[test]
    fn a_leaver_whose_candidates_are_all_inactive_is_not_listed() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("a", IdentityStatus::Deprovisioned, &[])];
        let mut by_email = acct("2", "a");
        by_email.external_id = None;
        by_email.user_name = "other".into();
        by_email.active = false;
        let mut own = acct("1", "a");
        own.active = false;
        fx.accounts = vec![own, by_email];
        let plan = fx.plan();
        assert!(
            plan.disputed_leavers.is_empty(),
            "{:#?}",
            plan.disputed_leavers
        );
        let person: Vec<&str> = drift_of(&plan, DriftKind::DisputedMatch)
            .into_iter()
            .filter(|d| d.identity_id.as_deref() == Some("a"))
            .map(|d| d.detail.as_str())
            .collect();
        assert_eq!(person.len(), 1);
        // Nothing of theirs has access: the item does not send a reader looking
        // for an account to deactivate.
        assert!(
            !person[0].contains("LOST ACCESS")
                && !person[0].contains("no account of theirs is deactivated")
                && person[0].contains("candidates: 1 (a@ex.com) by externalId, 2 (other) by email")
                && person[0].contains("every account that may be theirs is inactive already")
                && person[0].contains("seatwarden link a ACCOUNT"),
            "{}",
            person[0]
        );
    }

    #[test]
    fn an_active_or_protected_person_disputed_is_not_listed() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &["eng"])];
        let mut by_email = acct("2", "a");
        by_email.external_id = None;
        by_email.user_name = "other".into();
        fx.accounts = vec![acct("1", "a"), by_email];
        let plan = fx.plan();
        assert_eq!(drift_of(&plan, DriftKind::DisputedMatch).len(), 1);
        assert!(
            plan.disputed_leavers.is_empty(),
            "{:#?}",
            plan.disputed_leavers
        );
        // A protected leaver is never touched; the sweep ends their episodes.
        fx.identities = vec![ident("a", IdentityStatus::Suspended, &[])];
        fx.settings.protected = Protected::new(&["a@ex.com".to_owned()]);
        let plan = fx.plan();
        assert!(
            plan.disputed_leavers.is_empty(),
            "{:#?}",
            plan.disputed_leavers
        );
    }

    /// Someone deleted from the directory is known only by stored links; links
    /// that are not one-to-one dispute them, and both linked accounts are theirs
    /// to answer for.
    #[test]
    fn a_deleted_person_with_links_to_two_accounts_is_listed() {
        let mut fx = Fx::new();
        fx.accounts = vec![acct("1", "gone"), acct("2", "gone2")];
        fx.links = vec![link("gone", "1"), link("gone", "2")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let listed: Vec<_> = plan
            .disputed_leavers
            .iter()
            .map(|l| (l.identity_id.as_str(), l.reason, l.active.clone()))
            .collect();
        assert_eq!(
            listed,
            [(
                "gone",
                LossReason::Deleted,
                vec!["1".to_owned(), "2".to_owned()]
            )]
        );
    }

    /// A leaver rehired under a new directory id while their account is still
    /// linked to the old one: the link decides (the account is deactivated),
    /// and the new person's create waits for its userName. Their item names
    /// the command that hands them the account, as the admin command is
    /// configured; a holder who still has access gets no such hint.
    #[test]
    fn a_create_in_the_way_of_a_leavers_linked_account_names_link_replace() {
        let mut fx = Fx::new();
        fx.settings.admin_command = "sudo -u sw seatwarden".into();
        let mut rehired = active("new", &["eng"]);
        rehired.user_name = "ann@ex.com".into();
        rehired.email = Some("ann@ex.com".into());
        fx.identities = vec![rehired];
        fx.accounts = vec![acct("1", "ann")];
        fx.links = vec![link("ann", "1")];
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Deactivate {
                account_id: "1".into()
            }]
        );
        let item = plan
            .drift
            .iter()
            .find(|d| d.identity_id.as_deref() == Some("new"))
            .unwrap();
        assert_eq!(
            item.detail,
            "not created: userName \"ann@ex.com\" is already held by account 1 (person ann); \
             two people cannot share a userName: fix it in the directory, or free it in the \
             workspace (rename or delete the account holding it) if it is no longer theirs; \
             if account 1 is this person's (identity ann rehired under a new directory id?), \
             `sudo -u sw seatwarden link new 1 --replace` gives it to them, projects included"
        );

        // Ann still has access: her account is not a leaver's.
        let mut ann = active("ann", &["eng"]);
        ann.email = Some("ann.b@ex.com".into());
        fx.identities.push(ann);
        let plan = fx.plan();
        let item = plan
            .drift
            .iter()
            .find(|d| d.identity_id.as_deref() == Some("new"))
            .unwrap();
        assert!(!item.detail.contains("link"), "{}", item.detail);
    }

    /// The demo's Emma Novak: account 1 matches `a` by userName, account 2 by
    /// email; neither carries an externalId.
    fn disputed_by_name_and_email() -> Fx {
        let mut fx = Fx::new();
        fx.identities = vec![ident("a", IdentityStatus::Active, &["eng"])];
        let mut by_user_name = acct("1", "a");
        by_user_name.external_id = None;
        by_user_name.email = None;
        let mut by_email = acct("2", "a");
        by_email.external_id = None;
        by_email.user_name = "other".into();
        fx.accounts = vec![by_user_name, by_email];
        // Orphans would be deactivated: a remembered suspect must not be one.
        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        fx
    }

    fn candidate(identity: &str, account: &str, method: LinkMethod) -> DisputedCandidate {
        DisputedCandidate {
            identity_id: identity.into(),
            user_name: format!("{identity}@ex.com"),
            account_id: account.into(),
            method,
            duplicate_of: None,
            email: Some(format!("{identity}@ex.com")),
        }
    }

    /// Deleted from the directory, a disputed person is known only by what the
    /// last run remembered: still a leaver whose accounts none is deactivated,
    /// and remembered again while they are active.
    #[test]
    fn a_disputed_person_deleted_from_the_directory_is_a_disputed_leaver() {
        let mut fx = disputed_by_name_and_email();
        let disputed = fx.plan();
        assert!(disputed.actions.is_empty(), "{:#?}", disputed.actions);
        let remembered = vec![
            candidate("a", "1", LinkMethod::UserName),
            candidate("a", "2", LinkMethod::Email),
        ];
        assert_eq!(disputed.disputed_candidates, remembered);

        fx.identities.clear();
        fx.remembered = remembered.clone();
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert_eq!(
            plan.disputed_leavers,
            [DisputedLeaver {
                identity_id: "a".into(),
                user_name: "a@ex.com".into(),
                reason: LossReason::Deleted,
                accounts: vec!["1".into(), "2".into()],
                active: vec!["1".into(), "2".into()],
            }]
        );
        let items = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(items.len(), 1, "{items:#?}");
        assert!(
            items[0].detail.contains(
                "candidates: 1 (a@ex.com) by userName, 2 (other) by email; LOST ACCESS \
                 (identity was deleted from the directory)"
            ),
            "{}",
            items[0].detail
        );
        assert_eq!(plan.disputed_candidates, remembered);
    }

    /// An incomplete directory does not show who was deleted: what it lacks
    /// opens nothing (design invariant), and a run reading it remembers nothing.
    #[test]
    fn an_incomplete_directory_reads_no_remembered_dispute() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.remembered = vec![
            candidate("a", "1", LinkMethod::UserName),
            candidate("a", "2", LinkMethod::Email),
        ];
        let mut dir = fx.dir();
        dir.complete = false;
        let plan = plan(
            &desired_state(&dir, &fx.policy),
            &dir,
            &fx.ws(),
            &fx.links,
            &fx.remembered,
            &fx.settings,
        );
        assert!(plan.disputed_leavers.is_empty(), "{plan:#?}");
        assert!(plan.disputed_candidates.is_empty(), "{plan:#?}");
    }

    /// A remembered account found inactive is still remembered: forgotten, it
    /// would be an orphan the run after (reported as nobody's, taken out of its
    /// groups). The person is a disputed leaver only while one is active.
    #[test]
    fn a_remembered_account_found_inactive_is_still_remembered() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.remembered = vec![
            candidate("a", "1", LinkMethod::UserName),
            candidate("a", "2", LinkMethod::Email),
        ];
        fx.accounts[0].active = false;
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert_eq!(plan.disputed_leavers.len(), 1, "{plan:#?}");
        assert_eq!(plan.disputed_leavers[0].accounts, ["1", "2"]);
        assert_eq!(plan.disputed_leavers[0].active, ["2"]);
        assert_eq!(plan.disputed_candidates, fx.remembered);

        fx.accounts[1].active = false;
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.disputed_leavers.is_empty(), "{plan:#?}");
        assert_eq!(plan.disputed_candidates, fx.remembered);
        assert!(
            drift_of(&plan, DriftKind::OrphanedAccount).is_empty(),
            "{plan:#?}"
        );

        // Gone from the workspace, an account is forgotten.
        fx.accounts.remove(0);
        let plan = fx.plan();
        assert_eq!(
            plan.disputed_candidates,
            [candidate("a", "2", LinkMethod::Email)]
        );
    }

    fn duplicate(identity: &str, account: &str, method: LinkMethod, of: &str) -> DisputedCandidate {
        DisputedCandidate {
            duplicate_of: Some(of.into()),
            ..candidate(identity, account, method)
        }
    }

    /// `seatwarden link` settles a deleted person's dispute: the linked account
    /// is deprovisioned as a deleted person's, and the other that matched them
    /// with it as a duplicate, remembered while it exists (forgotten once
    /// deactivated, it would be an orphan: never deleted after the retention
    /// period), with the account it duplicates.
    #[test]
    fn linking_a_deleted_disputed_person_deprovisions_their_accounts() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.remembered = vec![
            candidate("a", "1", LinkMethod::UserName),
            candidate("a", "2", LinkMethod::Email),
        ];
        fx.links = vec![link("a", "1")];
        let plan = fx.plan();
        assert!(plan.disputed_leavers.is_empty(), "{plan:#?}");
        assert_eq!(
            kinds(&plan),
            [
                &ActionKind::Deactivate {
                    account_id: "1".into()
                },
                &ActionKind::Deactivate {
                    account_id: "2".into()
                },
            ]
        );
        assert!(!is_duplicate_deprovision(&plan.actions[0]));
        assert!(is_duplicate_deprovision(&plan.actions[1]));
        assert_eq!(
            plan.disputed_candidates,
            [duplicate("a", "2", LinkMethod::Email, "1")]
        );
        let again = fx.replan();
        assert!(again.actions.is_empty(), "{:#?}", again.actions);
        assert_eq!(
            again.disputed_candidates,
            [duplicate("a", "2", LinkMethod::Email, "1")]
        );
    }

    /// A linked person's duplicate is remembered with the account it
    /// duplicates while they are in the directory: once it deletes them,
    /// nothing else ties it to them (an orphan, left active), and it goes with
    /// their linked account.
    #[test]
    fn a_linked_persons_duplicate_is_remembered_and_goes_when_they_are_deleted() {
        let mut fx = disputed_by_name_and_email();
        fx.links = vec![link("a", "1")];
        let active = fx.plan();
        assert!(
            active
                .actions
                .iter()
                .all(|a| a.kind.account_id() != Some("2")),
            "{:#?}",
            active.actions
        );
        assert_eq!(
            active.disputed_candidates,
            [duplicate("a", "2", LinkMethod::Email, "1")]
        );
        fx.identities.clear();
        fx.remembered = active.disputed_candidates;
        let deleted = fx.plan();
        assert!(
            drift_of(&deleted, DriftKind::OrphanedAccount).is_empty(),
            "{deleted:#?}"
        );
        assert_eq!(
            kinds(&deleted),
            [
                &ActionKind::Deactivate {
                    account_id: "1".into()
                },
                &ActionKind::Deactivate {
                    account_id: "2".into()
                },
            ]
        );
        assert!(is_duplicate_deprovision(&deleted.actions[1]));
    }

    /// Once the linked account of a settled leaver is gone (retention deleted
    /// it), their remembered duplicate is still theirs: deleted at its own due
    /// time as their duplicate, reactivated by hand deactivated again, and
    /// never disputed again with a `link` to run for someone who is gone.
    #[test]
    fn a_settled_leavers_duplicate_stays_theirs_once_their_linked_account_is_gone() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.accounts.remove(0);
        fx.accounts[0].active = false;
        fx.remembered = vec![duplicate("a", "2", LinkMethod::Email, "1")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.drift.is_empty(), "{:#?}", plan.drift);
        assert_eq!(plan.disputed_candidates, fx.remembered);

        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        fx.settings.deprovision = DeprovisionAction::Delete;
        fx.settings.retention = Retention {
            delete_after: TimeDelta::days(30),
            deactivated_since: [("2".to_owned(), now - TimeDelta::days(29))].into(),
            now,
        };
        let waiting = fx.plan();
        assert!(waiting.actions.is_empty(), "{:#?}", waiting.actions);
        assert_eq!(waiting.retained, ["2"]);
        fx.settings.retention.now = now + TimeDelta::days(1);
        let due = fx.plan();
        assert_eq!(
            kinds(&due),
            [&ActionKind::Delete {
                account_id: "2".into(),
                deactivated_since: Some(now - TimeDelta::days(29)),
                frees_user_name: None,
            }]
        );
        assert!(
            due.actions[0].detail.starts_with(
                "duplicate account of a@ex.com (identity a, whose linked account is gone \
                 from the workspace; matched by email): identity was deleted from the \
                 directory; account deactivated since"
            ),
            "{}",
            due.actions[0].detail
        );

        fx.accounts[0].active = true;
        let reactivated = fx.plan();
        assert_eq!(
            kinds(&reactivated),
            [&ActionKind::Deactivate {
                account_id: "2".into()
            }]
        );
        assert!(is_duplicate_deprovision(&reactivated.actions[0]));
        assert!(reactivated.disputed_leavers.is_empty());
    }

    /// A settled leaver's remembered duplicate an admin renamed since (given to
    /// a contractor, say) no longer matches them by any rule: it is theirs no
    /// more, so it is not deleted at its due time as theirs. It is an unmatched
    /// account under `unmatched_accounts` (reported, or deactivated once someone
    /// reactivates it), its item says why, and it stays remembered: renamed
    /// back, it is theirs again.
    #[test]
    fn a_remembered_duplicate_renamed_since_is_theirs_no_more() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.accounts.remove(0);
        fx.accounts[0].active = false;
        fx.remembered = vec![duplicate("a", "2", LinkMethod::Email, "1")];
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        fx.settings.deprovision = DeprovisionAction::Delete;
        fx.settings.retention = Retention {
            delete_after: TimeDelta::days(30),
            deactivated_since: [("2".to_owned(), now - TimeDelta::days(31))].into(),
            now,
        };
        let due = fx.plan();
        assert!(
            matches!(
                due.actions[..],
                [Action {
                    kind: ActionKind::Delete { .. },
                    ..
                }]
            ),
            "{:#?}",
            due.actions
        );

        fx.accounts[0].user_name = "contractor@ex.com".into();
        fx.accounts[0].email = Some("contractor@ex.com".into());
        let renamed = fx.plan();
        assert!(renamed.actions.is_empty(), "{:#?}", renamed.actions);
        assert!(renamed.retained.is_empty(), "{:#?}", renamed.retained);
        assert_eq!(renamed.disputed_candidates, fx.remembered);
        fx.settings.unmatched_accounts = UnmatchedAccounts::Report;
        let reported = fx.plan();
        let orphaned = drift_of(&reported, DriftKind::OrphanedAccount);
        assert_eq!(orphaned.len(), 1, "{:#?}", reported.drift);
        assert_eq!(
            orphaned[0].detail,
            "no directory identity matches this account: it was remembered as a duplicate of \
             identity a (a@ex.com), whom the directory deleted, but it no longer matches them \
             by externalId, userName or email (renamed since?), so it is not deprovisioned as \
             theirs"
        );
        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        fx.accounts[0].active = true;
        let reactivated = fx.plan();
        assert_eq!(
            kinds(&reactivated),
            [&ActionKind::Deactivate {
                account_id: "2".into()
            }]
        );
        assert_eq!(reactivated.actions[0].reason, DriftKind::OrphanedAccount);
        assert!(!is_duplicate_deprovision(&reactivated.actions[0]));

        fx.accounts[0].active = false;
        fx.accounts[0].email = Some("a@ex.com".into());
        let back = fx.plan();
        assert!(
            matches!(
                back.actions[..],
                [Action {
                    kind: ActionKind::Delete { .. },
                    ..
                }]
            ),
            "matching them again, it is theirs again: {:#?}",
            back.actions
        );
    }

    /// The same while the person's linked account is still there: it goes as
    /// theirs, and the duplicate renamed since does not go with it.
    #[test]
    fn a_deleted_persons_duplicate_renamed_since_does_not_go_with_their_account() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.links = vec![link("a", "1")];
        fx.remembered = vec![duplicate("a", "2", LinkMethod::Email, "1")];
        fx.accounts[1].email = Some("contractor@ex.com".into());
        fx.settings.unmatched_accounts = UnmatchedAccounts::Report;
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Deactivate {
                account_id: "1".into()
            }]
        );
        let orphaned = drift_of(&plan, DriftKind::OrphanedAccount);
        assert_eq!(orphaned.len(), 1, "{:#?}", plan.drift);
        assert_eq!(orphaned[0].account_id.as_deref(), Some("2"));
        assert_eq!(plan.disputed_candidates, fx.remembered);
    }

    /// A duplicate remembered by email before the person's email was kept
    /// (store migration 22) cannot be told renamed: it stays theirs, and the
    /// plan keeps the address its account shows now, which a rename after the
    /// upgrade no longer matches.
    #[test]
    fn a_duplicate_remembered_without_the_persons_email_keeps_its_accounts_address() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.links = vec![link("a", "1")];
        let mut legacy = duplicate("a", "2", LinkMethod::Email, "1");
        legacy.user_name = "ann".into();
        legacy.email = None;
        fx.remembered = vec![legacy];
        let upgraded = fx.plan();
        assert_eq!(upgraded.actions.len(), 2, "{:#?}", upgraded.actions);
        assert_eq!(
            upgraded.disputed_candidates[0].email.as_deref(),
            Some("a@ex.com")
        );
        fx.remembered = upgraded.disputed_candidates;
        fx.accounts[1].email = Some("contractor@ex.com".into());
        fx.settings.unmatched_accounts = UnmatchedAccounts::Report;
        let renamed = fx.plan();
        assert_eq!(
            kinds(&renamed),
            [&ActionKind::Deactivate {
                account_id: "1".into()
            }]
        );
    }

    /// Two duplicates remembered by email before the person's email was kept,
    /// one renamed before the upgrade: which address was the person's nothing
    /// says, so none is kept, and the true duplicate stays theirs in every run
    /// after (the wrong one would have made it nobody's).
    #[test]
    fn legacy_duplicates_showing_different_addresses_keep_no_email() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.links = vec![link("a", "1")];
        let mut renamed = acct("0", "c");
        renamed.external_id = None;
        fx.accounts.push(renamed);
        let legacy = |account: &str| {
            let mut legacy = duplicate("a", account, LinkMethod::Email, "1");
            legacy.user_name = "ann".into();
            legacy.email = None;
            legacy
        };
        fx.remembered = vec![legacy("0"), legacy("2")];
        let upgraded = fx.plan();
        assert!(
            upgraded
                .disputed_candidates
                .iter()
                .all(|c| c.email.is_none()),
            "{:#?}",
            upgraded.disputed_candidates
        );
        fx.remembered = upgraded.disputed_candidates;
        let next = fx.plan();
        let on_2: Vec<_> = next
            .actions
            .iter()
            .filter(|a| a.kind.account_id() == Some("2"))
            .map(|a| (a.identity_id.as_deref(), a.reason))
            .collect();
        assert_eq!(
            on_2,
            [(Some("a"), DriftKind::StaleAccess)],
            "{:#?}",
            next.actions
        );
    }

    /// While the account the duplicate was remembered against exists unlinked
    /// (`unlink` took the decision back), or another deleted person's dispute
    /// names one of their accounts, the leaver is disputed: nothing is
    /// deprovisioned as theirs on the strength of a withdrawn link.
    #[test]
    fn a_leavers_duplicate_is_disputed_again_when_the_link_is_withdrawn() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        // Deactivated as theirs before the unlink (`unlink` refuses to leave a
        // leaver's account active).
        fx.accounts[0].active = false;
        fx.remembered = vec![duplicate("a", "2", LinkMethod::Email, "1")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert_eq!(plan.disputed_leavers.len(), 1, "{plan:#?}");
        assert_eq!(plan.disputed_leavers[0].accounts, ["2"]);

        // Account 1 gone, but account 2 also in another leaver's dispute.
        fx.accounts.remove(0);
        fx.remembered = vec![
            duplicate("a", "2", LinkMethod::Email, "1"),
            candidate("b", "2", LinkMethod::UserName),
        ];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let leavers: Vec<(&str, &[String])> = plan
            .disputed_leavers
            .iter()
            .map(|l| (l.identity_id.as_str(), l.accounts.as_slice()))
            .collect();
        assert_eq!(
            leavers,
            [("a", &["2".to_owned()][..]), ("b", &["2".to_owned()][..])]
        );
        assert_eq!(
            plan.disputed_candidates,
            [
                duplicate("a", "2", LinkMethod::Email, "1"),
                candidate("b", "2", LinkMethod::UserName),
            ]
        );
    }

    /// A leaver disputed again because the link that settled them is gone, or
    /// because another leaver's memory names their duplicate, is not said to
    /// have had a disputed match: the reader is told what changed (and what
    /// to undo), as the other leaver's item keeps its own reason.
    #[test]
    fn a_leaver_disputed_again_is_told_why_not_that_their_match_was_disputed() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.accounts[0].active = false;
        fx.remembered = vec![duplicate("a", "2", LinkMethod::Email, "1")];
        let plan = fx.plan();
        let items = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(items.len(), 1, "{items:#?}");
        assert!(
            items[0].detail.starts_with(
                "the directory no longer has this identity, and the link that made account 1 \
                 theirs is gone (`unlink`, or `link --replace` gave it to someone else)"
            ),
            "{}",
            items[0].detail
        );

        fx.accounts.remove(0);
        fx.remembered = vec![
            duplicate("a", "2", LinkMethod::Email, "1"),
            candidate("b", "2", LinkMethod::UserName),
        ];
        let plan = fx.plan();
        let details: Vec<(Option<&str>, &str)> = drift_of(&plan, DriftKind::DisputedMatch)
            .iter()
            .map(|d| (d.identity_id.as_deref(), d.detail.as_str()))
            .collect();
        assert!(
            details.iter().any(|(id, detail)| *id == Some("a")
                && detail.starts_with(
                    "the directory no longer has this identity, and an account remembered as \
                     their duplicate is remembered for another person the directory lost too"
                )),
            "{details:#?}"
        );
        assert!(
            details.iter().any(|(id, detail)| *id == Some("b")
                && detail.starts_with(
                    "the directory no longer has this identity, whose match was disputed"
                )),
            "{details:#?}"
        );
    }

    /// A leaver with two duplicates, one of which another leaver's memory
    /// names too, is disputed for that shared one: their item says so
    /// whichever duplicate the store lists first, not that their match was
    /// disputed (a link settled it).
    #[test]
    fn a_leaver_disputed_again_for_a_shared_duplicate_is_told_so_whatever_the_order() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.accounts.remove(0);
        // Hers by userName, as remembered: a duplicate that no longer matches
        // her would be nobody's.
        let mut third = acct("3", "a");
        third.external_id = None;
        third.email = None;
        fx.accounts.push(third);
        fx.remembered = vec![
            duplicate("a", "2", LinkMethod::Email, "1"),
            duplicate("a", "3", LinkMethod::UserName, "1"),
            candidate("b", "3", LinkMethod::UserName),
        ];
        let plan = fx.plan();
        let details: Vec<(Option<&str>, &str)> = drift_of(&plan, DriftKind::DisputedMatch)
            .iter()
            .map(|d| (d.identity_id.as_deref(), d.detail.as_str()))
            .collect();
        assert!(
            details.iter().any(|(id, detail)| *id == Some("a")
                && detail.starts_with(
                    "the directory no longer has this identity, and an account remembered as \
                     their duplicate is remembered for another person the directory lost too"
                )),
            "{details:#?}"
        );
        assert!(
            !details.iter().any(|(id, detail)| *id == Some("a")
                && detail.contains("whose match was disputed")),
            "{details:#?}"
        );
    }

    /// A remembered account someone in the directory now has (or a stored link
    /// gives to someone) is theirs: the memory ties no one else to it.
    #[test]
    fn a_remembered_account_another_person_claims_is_theirs() {
        let mut fx = disputed_by_name_and_email();
        fx.identities = vec![ident("b", IdentityStatus::Active, &["eng"])];
        fx.accounts[0].external_id = Some("b".into());
        fx.remembered = vec![
            candidate("a", "1", LinkMethod::UserName),
            candidate("a", "2", LinkMethod::Email),
        ];
        let plan = fx.plan();
        assert_eq!(plan.disputed_leavers.len(), 1, "{plan:#?}");
        assert_eq!(plan.disputed_leavers[0].accounts, ["2"]);
        assert!(
            plan.new_links
                .iter()
                .any(|l| l.identity_id == "b" && l.account_id == "1"),
            "{plan:#?}"
        );
    }

    /// Someone protected by the userName the directory last had is never
    /// listed: the sweep ends a protected person's episodes, so one opened for
    /// them would come back after every sweep.
    #[test]
    fn a_remembered_protected_person_is_no_disputed_leaver() {
        let mut fx = disputed_by_name_and_email();
        fx.identities.clear();
        fx.remembered = vec![
            candidate("a", "1", LinkMethod::UserName),
            candidate("a", "2", LinkMethod::Email),
        ];
        fx.settings.protected = Protected::new(&["a@ex.com".to_owned()]);
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.disputed_leavers.is_empty(), "{plan:#?}");
    }

    /// Someone still in the directory is matched afresh, whatever was
    /// remembered of them.
    #[test]
    fn a_person_still_in_the_directory_is_matched_afresh() {
        let mut fx = disputed_by_name_and_email();
        fx.remembered = vec![candidate("a", "9", LinkMethod::Email)];
        fx.accounts.push(acct("9", "nine"));
        let plan = fx.plan();
        assert!(plan.disputed_leavers.is_empty(), "{plan:#?}");
        assert_eq!(
            plan.disputed_candidates,
            [
                candidate("a", "1", LinkMethod::UserName),
                candidate("a", "2", LinkMethod::Email),
            ]
        );
    }

    #[test]
    fn several_accounts_for_one_identity_are_disputed() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("a", IdentityStatus::Suspended, &[])];
        let mut by_email = acct("2", "a");
        by_email.external_id = None;
        by_email.user_name = "other".into();
        fx.accounts = vec![acct("1", "a"), by_email];
        // Each account's deciding rule yields only `a`, but two accounts claim it.
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        // One dispute, one item: the person's, naming each account and how it
        // matched.
        assert_eq!(disputed.len(), 1, "{disputed:#?}");
        assert!(
            disputed[0]
                .detail
                .contains("candidates: 1 (a@ex.com) by externalId, 2 (other) by email"),
            "{}",
            disputed[0].detail
        );
        // The identity's own item says the person has left: nothing is done
        // about their access until a human decides, and the report must say so.
        let person: Vec<&str> = disputed
            .iter()
            .filter(|d| d.identity_id.as_deref() == Some("a"))
            .map(|d| d.detail.as_str())
            .collect();
        assert_eq!(person.len(), 1);
        assert!(
            person[0].contains("LOST ACCESS (identity is suspended in the directory)")
                && person[0].contains("seatwarden link a ACCOUNT"),
            "{}",
            person[0]
        );
        // An active person's dispute says nothing of the kind.
        fx.identities = vec![active("a", &["eng"])];
        let plan = fx.plan();
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        let person: Vec<&str> = disputed
            .iter()
            .filter(|d| d.identity_id.as_deref() == Some("a"))
            .map(|d| d.detail.as_str())
            .collect();
        assert_eq!(person.len(), 1);
        assert!(!person[0].contains("LOST ACCESS"), "{}", person[0]);
        fx.identities = vec![ident("a", IdentityStatus::Suspended, &[])];
        // A stored link decides: the other account is a duplicate.
        fx.links = vec![link("a", "1")];
        let plan = fx.plan();
        let mut ids: Vec<_> = plan
            .actions
            .iter()
            .map(|a| a.kind.account_id().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["1", "2"], "a leaver's duplicate account goes too");
    }

    /// A leaver's duplicate is deactivated under its own userName, saying whose
    /// duplicate it is; the linked account under the person's.
    #[test]
    fn a_leavers_duplicate_is_deprovisioned_under_its_own_name() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("a", IdentityStatus::Suspended, &[])];
        let mut by_email = acct("2", "a");
        by_email.external_id = None;
        by_email.user_name = "other".into();
        fx.accounts = vec![acct("1", "a"), by_email];
        fx.links = vec![link("a", "1")];
        let plan = fx.plan();
        let mut actions: Vec<(&str, &str, &str, bool)> = plan
            .actions
            .iter()
            .map(|a| {
                (
                    a.kind.account_id().unwrap(),
                    a.subject.as_str(),
                    a.detail.as_str(),
                    is_duplicate_deprovision(a),
                )
            })
            .collect();
        actions.sort_unstable();
        assert_eq!(actions.len(), 2, "{actions:#?}");
        assert_eq!(
            (actions[0].0, actions[0].1, actions[0].3),
            ("1", "a@ex.com", false)
        );
        assert_eq!(
            actions[1],
            (
                "2",
                "other",
                "duplicate account of a@ex.com (identity a, linked to account 1; matched by \
                 email): identity is suspended in the directory; account is still active",
                true
            )
        );
    }

    /// A person whose directory userName (`asmith`) names one account and whose
    /// email (`alice@ex.com`) is another account's userName: the workspace keys
    /// accounts by email address, and an admin invited Alice under hers before
    /// the directory's login reached it. Linked by userName alone, the invited
    /// account was an orphan: reported as nobody's (or deactivated, projects and
    /// all, with `unmatched_accounts = "deactivate"`), and left active when Alice
    /// leaves. Both may be hers: a dispute naming both, nothing done to either;
    /// once a link says which is hers, the other is her duplicate, deactivated
    /// with hers when she leaves.
    #[test]
    fn an_account_named_by_a_persons_email_is_a_candidate_beside_their_user_names() {
        let mut fx = Fx::new();
        let mut alice = active("alice", &["eng"]);
        alice.user_name = "asmith".into();
        let mut by_login = acct("1", "alice");
        by_login.user_name = "asmith".into();
        by_login.external_id = None;
        by_login.email = None;
        let mut invited = acct("2", "alice");
        invited.external_id = None;
        invited.email = None;
        assert_eq!(invited.user_name, "alice@ex.com");
        fx.identities = vec![alice];
        fx.accounts = vec![by_login, invited];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        assert!(plan.new_links.is_empty(), "{:?}", plan.new_links);
        assert!(
            drift_of(&plan, DriftKind::OrphanedAccount).is_empty(),
            "{:#?}",
            plan.drift
        );
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(disputed.len(), 1, "{disputed:#?}");
        assert_eq!(disputed[0].identity_id.as_deref(), Some("alice"));
        for part in ["1 (asmith) by userName", "2 (alice@ex.com) by email"] {
            assert!(
                disputed[0].detail.contains(part),
                "{part}: {}",
                disputed[0].detail
            );
        }

        // `link alice 1`: the invited account is her duplicate, reported while
        // she is active and deactivated with hers when she leaves.
        fx.links = vec![link("alice", "1")];
        let plan = fx.plan();
        assert!(
            plan.actions
                .iter()
                .all(|a| a.kind.account_id() != Some("2")),
            "{:#?}",
            plan.actions
        );
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(disputed.len(), 1, "{disputed:#?}");
        assert_eq!(disputed[0].account_id.as_deref(), Some("2"));
        fx.identities[0].status = IdentityStatus::Suspended;
        let plan = fx.plan();
        let mut deactivated: Vec<&str> = plan
            .actions
            .iter()
            .filter(|a| matches!(a.kind, ActionKind::Deactivate { .. }))
            .filter_map(|a| a.kind.account_id())
            .collect();
        deactivated.sort_unstable();
        assert_eq!(deactivated, ["1", "2"]);
    }

    /// The first rule that finds anyone decides: an account whose userName is
    /// one person's login is theirs, though it is another person's email.
    #[test]
    fn a_user_name_match_decides_before_another_persons_email() {
        let mut fx = Fx::new();
        let mut old = active("old", &[]);
        old.user_name = "alice@ex.com".into();
        old.email = Some("old@ex.com".into());
        let mut alice = active("alice", &[]);
        alice.user_name = "asmith".into();
        let mut account = acct("1", "alice");
        account.external_id = None;
        account.email = None;
        fx.identities = vec![old, alice];
        fx.accounts = vec![account];
        let plan = fx.plan();
        assert!(
            drift_of(&plan, DriftKind::DisputedMatch).is_empty(),
            "{:#?}",
            plan.drift
        );
        let links: Vec<(&str, &str, LinkMethod)> = plan
            .new_links
            .iter()
            .map(|l| (l.identity_id.as_str(), l.account_id.as_str(), l.method))
            .collect();
        assert_eq!(links, [("old", "1", LinkMethod::UserName)]);
    }

    #[test]
    fn duplicate_account_of_active_person_is_reported_not_touched() {
        let mut fx = Fx::new();
        fx.identities = vec![active("a", &["eng"])];
        let mut dupe = acct("2", "a");
        dupe.external_id = None;
        dupe.user_name = "a-old".into();
        dupe.roles = vec![];
        fx.accounts = vec![acct("1", "a"), dupe];
        fx.accounts[0].roles = vec!["Editor".into()];
        fx.groups = vec![group("g", "Engineering", &["1", "2"])];
        fx.links = vec![link("a", "1")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        assert_eq!(disputed.len(), 1);
        assert_eq!(disputed[0].account_id.as_deref(), Some("2"));
        assert_eq!(
            disputed[0].user_name, "a-old",
            "reported under the duplicate's own name, not the linked account's"
        );
        assert!(
            disputed[0].detail.contains("identity a") && disputed[0].detail.contains("account 1"),
            "{:#?}",
            disputed[0]
        );
    }

    #[test]
    fn inconsistent_stored_links_are_disputed() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("a", IdentityStatus::Suspended, &[]), active("b", &[])];
        fx.accounts = vec![acct("1", "a")];
        fx.links = vec![link("a", "1"), link("b", "1")];
        let plan = fx.plan();
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
        // Each person's item lists the account; it gets none of its own.
        let disputed = drift_of(&plan, DriftKind::DisputedMatch);
        let identities: Vec<_> = disputed
            .iter()
            .filter_map(|d| d.identity_id.as_deref())
            .collect();
        assert_eq!(identities, ["a", "b"], "{disputed:#?}");
        assert!(
            disputed
                .iter()
                .all(|d| d.account_id.is_none()
                    && d.detail.contains("1 (a@ex.com) by a stored link")),
            "{disputed:#?}"
        );
    }

    #[test]
    fn orphans_follow_the_unmatched_accounts_setting() {
        let mut fx = Fx::new();
        let mut orphan = acct("1", "stranger");
        orphan.external_id = None;
        let mut inactive_orphan = acct("2", "ghost");
        inactive_orphan.active = false;
        fx.accounts = vec![orphan, inactive_orphan];

        let plan = fx.plan();
        assert!(plan.actions.is_empty());
        assert_eq!(drift_of(&plan, DriftKind::OrphanedAccount).len(), 2);

        fx.settings.unmatched_accounts = UnmatchedAccounts::Adopt;
        let plan = fx.plan();
        assert!(plan.actions.is_empty() && plan.drift.is_empty());

        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        fx.settings.deprovision = DeprovisionAction::Delete;
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::Deactivate {
                account_id: "1".into()
            }],
            "orphans are deactivated, never deleted"
        );
        assert_eq!(plan.actions[0].reason, DriftKind::OrphanedAccount);
        assert!(fx.replan().is_empty());
    }

    /// A deactivated orphan in a managed group is left there under every
    /// setting, as a leaver's deactivated account is: no removal and no group
    /// drift (under `report` the account is still reported as an orphan). Its
    /// membership grants nothing, and a provider that lists only active
    /// members is read from the account's own `groups`, which may be stale:
    /// the removal planned before was answered success, changed nothing and
    /// was planned again on every run. An active orphan is still taken out of
    /// the group with its deactivation, and the plan converges.
    #[test]
    fn a_deactivated_orphans_memberships_are_left_alone_as_a_leavers_are() {
        let mut fx = Fx::new();
        fx.identities = vec![
            active("a", &["eng"]),
            ident("s", IdentityStatus::Suspended, &["eng"]),
        ];
        let mut leaver = acct("4", "s");
        leaver.active = false;
        let mut ghost = acct("8", "ghost");
        ghost.external_id = None;
        ghost.active = false;
        let mut stranger = acct("9", "stranger");
        stranger.external_id = None;
        fx.accounts = vec![acct("1", "a"), leaver, ghost, stranger];
        fx.accounts[0].roles = vec!["Editor".into()];
        fx.groups = vec![group("g", "Engineering", &["1", "4", "8", "9"])];
        let names = |plan: &Plan, id: &str| {
            plan.actions.iter().any(|a| match &a.kind {
                ActionKind::RemoveMembers { members, .. } => members.iter().any(|m| m == id),
                kind => kind.account_id() == Some(id),
            })
        };
        for unmatched in [
            UnmatchedAccounts::Report,
            UnmatchedAccounts::Adopt,
            UnmatchedAccounts::Deactivate,
        ] {
            fx.settings.unmatched_accounts = unmatched;
            let plan = fx.plan();
            for id in ["4", "8"] {
                assert!(!names(&plan, id), "{unmatched:?} {id}: {:#?}", plan.actions);
            }
            let ghost_drift: Vec<DriftKind> = plan
                .drift
                .iter()
                .filter(|d| d.account_id.as_deref() == Some("8"))
                .map(|d| d.kind)
                .collect();
            let reported: &[DriftKind] = match unmatched {
                UnmatchedAccounts::Report => &[DriftKind::OrphanedAccount],
                _ => &[],
            };
            assert_eq!(ghost_drift, reported, "{unmatched:?}: {:#?}", plan.drift);
            assert!(fx.replan().is_empty(), "{unmatched:?}");
        }
        let group_ref = GroupRef::Existing {
            id: "g".into(),
            display_name: "Engineering".into(),
        };
        assert_eq!(
            kinds(&fx.plan()),
            [
                &ActionKind::Deactivate {
                    account_id: "9".into()
                },
                &ActionKind::RemoveMembers {
                    group: group_ref,
                    members: vec!["9".into()]
                },
            ]
        );
    }

    #[test]
    fn managed_group_membership_is_repaired() {
        let mut fx = Fx::new();
        fx.identities = vec![
            active("a", &["eng"]),
            active("b", &["eng"]),
            active("c", &[]),
            ident("s", IdentityStatus::Suspended, &[]),
        ];
        fx.accounts = vec![
            acct("1", "a"),
            acct("2", "b"),
            acct("3", "c"),
            acct("4", "s"),
            acct("9", "stranger"),
        ];
        fx.accounts[0].roles = vec!["Editor".into()];
        fx.accounts[1].roles = vec!["Editor".into()];
        fx.accounts[3].active = false;
        fx.accounts[4].external_id = None;
        fx.groups = vec![
            group("g", "ENGINEERING", &["1", "3", "4", "9", "dangling"]),
            group("h", "Unmanaged", &["3", "9"]),
        ];
        let plan = fx.plan();
        let group_ref = GroupRef::Existing {
            id: "g".into(),
            display_name: "ENGINEERING".into(),
        };
        assert_eq!(
            kinds(&plan),
            [
                &ActionKind::AddMembers {
                    group: group_ref.clone(),
                    members: vec![existing("2")]
                },
                &ActionKind::RemoveMembers {
                    group: group_ref.clone(),
                    members: vec!["3".into()]
                },
            ]
        );
        assert_eq!(plan.actions[0].subject, "ENGINEERING");
        let group_drift = drift_of(&plan, DriftKind::GroupDrift);
        assert_eq!(group_drift.len(), 3, "{group_drift:#?}");
        assert!(
            group_drift
                .iter()
                .any(|d| d.account_id.as_deref() == Some("9"))
        );

        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        let plan = fx.plan();
        let names: Vec<_> = plan.actions.iter().map(|a| a.kind.name()).collect();
        assert_eq!(names, ["deactivate", "add_members", "remove_members"]);
        assert_eq!(
            plan.actions[2].kind,
            ActionKind::RemoveMembers {
                group: group_ref,
                members: vec!["3".into(), "9".into()]
            }
        );
        assert_eq!(plan.actions[2].seq, 2);
        assert_eq!(plan.actions[2].reason, DriftKind::GroupDrift);
        assert!(fx.replan().is_empty());
    }

    #[test]
    fn protected_accounts_never_appear_in_actions() {
        let mut fx = Fx::new();
        fx.identities = vec![
            ident("root", IdentityStatus::Suspended, &[]),
            active("admin", &["eng"]),
            active("new-admin", &["eng"]),
        ];
        fx.accounts = vec![acct("1", "root"), acct("2", "admin"), acct("3", "x")];
        fx.accounts[1].active = false;
        fx.accounts[2].user_name = "breakglass".into();
        fx.accounts[2].external_id = None;
        fx.groups = vec![group("g", "Engineering", &["3"])];
        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        fx.settings.protected = Protected::new(&[
            "ROOT@ex.com".into(),
            "*admin@ex.com".into(),
            "break?lass".into(),
        ]);
        // An unprotected leaver beside them: the plan is not simply empty.
        fx.identities
            .push(ident("gone", IdentityStatus::Suspended, &[]));
        fx.accounts.push(acct("4", "gone"));
        // A leaver whose directory userName is not protected, linked to an account
        // whose userName is: the account is left alone all the same.
        fx.identities
            .push(ident("left", IdentityStatus::Deprovisioned, &[]));
        fx.accounts.push(acct("5", "left"));
        fx.accounts[4].user_name = "ops-admin@ex.com".into();
        fx.links.push(link("left", "5"));
        let plan = fx.plan();
        let got: Vec<_> = plan.actions.iter().map(|a| &a.kind).collect();
        assert_eq!(
            got,
            [&ActionKind::Deactivate {
                account_id: "4".into()
            }],
            "{:#?}",
            plan.actions
        );
        assert_eq!(plan.actions[0].identity_id.as_deref(), Some("gone"));
    }

    /// An exception in force leaves the accounts it names (by their own userName
    /// or their person's) alone and lists the active ones that would lose
    /// access; at its end they are planned like any other. One protected for
    /// good is not listed, nor an orphan nothing would deactivate.
    #[test]
    fn accounts_kept_by_an_exception_are_listed_until_it_ends() {
        use chrono::TimeZone;
        let until = chrono::Utc
            .with_ymd_and_hms(2026, 12, 15, 23, 0, 0)
            .unwrap();
        let exception = |name: &str, reason: &str| crate::model::Exception {
            user_name: name.to_owned(),
            until,
            reason: reason.to_owned(),
        };
        let exceptions = [
            exception("dana@ex.com", "handover"),
            exception("orphan@ex.com", "contractor"),
            exception("vip@ex.com", "also protected"),
        ];
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        fx.identities = vec![
            ident("dana", IdentityStatus::Suspended, &[]),
            ident("vip", IdentityStatus::Deprovisioned, &[]),
        ];
        // Dana's two accounts: hers, and a second one, protected for good.
        let mut second = acct("2", "dana");
        second.user_name = "root@ex.com".into();
        second.email = None;
        fx.links = vec![link("dana", "1")];
        let mut orphan = acct("3", "orphan");
        orphan.external_id = None;
        orphan.email = None;
        fx.accounts = vec![acct("1", "dana"), second, orphan, acct("4", "vip")];
        let protected = Protected::new(&["root@ex.com".to_owned(), "vip@ex.com".to_owned()]);
        fx.settings.protected = protected
            .clone()
            .with_exceptions(&exceptions, until - TimeDelta::hours(1));
        let plan = fx.plan();
        assert!(
            plan.actions
                .iter()
                .all(|a| matches!(a.kind, ActionKind::CreateGroup { .. })),
            "{:#?}",
            plan.actions
        );
        let listed: Vec<(&str, &str, &str)> = plan
            .excepted
            .iter()
            .map(|e| {
                (
                    e.account_id.as_str(),
                    e.why.as_str(),
                    e.exception.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("1", "suspended in the directory", "handover"),
                (
                    "3",
                    "no directory identity matches this account",
                    "contractor"
                ),
            ]
        );
        assert!(
            plan.protected_by_person.is_empty(),
            "{:#?}",
            plan.protected_by_person
        );

        fx.settings.unmatched_accounts = UnmatchedAccounts::Adopt;
        let adopted = fx.plan();
        assert!(
            adopted.excepted.iter().all(|e| e.account_id != "3"),
            "an adopted orphan loses nothing: {:#?}",
            adopted.excepted
        );

        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        fx.settings.protected = protected.with_exceptions(&exceptions, until);
        let ended = fx.plan();
        let deactivated: Vec<&str> = ended
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::Deactivate { account_id } => Some(account_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deactivated, ["1", "3"], "{:#?}", ended.actions);
        assert!(ended.excepted.is_empty());
    }

    /// A person deleted from the directory loses permanent protection
    /// ([`crate::policy::Protected::with_departed`]): only the exception naming
    /// the directory userName the ledger keeps of them keeps their account, until
    /// its end. Listed under PROTECTED BY PERSON ("protected for good, add its
    /// userName to safety.protected") while the name was protected too, it is
    /// listed as kept by the exception, the one thing that keeps it.
    #[test]
    fn a_deleted_person_protected_and_excepted_is_listed_as_excepted() {
        use chrono::TimeZone;
        let until = chrono::Utc
            .with_ymd_and_hms(2026, 12, 15, 23, 0, 0)
            .unwrap();
        let exception = crate::model::Exception {
            user_name: "gone@ex.com".to_owned(),
            until,
            reason: "legal hold".to_owned(),
        };
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.identities = vec![active("stay", &[])];
        let mut account = acct("5", "gone");
        account.user_name = "gone.account@ex.com".into();
        fx.accounts = vec![acct("1", "stay"), account];
        fx.links = vec![link("stay", "1"), link("gone", "5")];
        fx.settings.protected = Protected::new(&["gone@ex.com".to_owned()])
            .with_exceptions(
                std::slice::from_ref(&exception),
                until - TimeDelta::hours(1),
            )
            .with_departed([("gone".to_owned(), "gone@ex.com".to_owned())]);
        let plan = fx.plan();
        assert!(
            plan.actions
                .iter()
                .all(|a| a.kind.account_id() != Some("5")),
            "{:#?}",
            plan.actions
        );
        assert!(
            plan.protected_by_person.is_empty(),
            "{:#?}",
            plan.protected_by_person
        );
        let listed: Vec<(&str, &str)> = plan
            .excepted
            .iter()
            .map(|e| (e.account_id.as_str(), e.exception.reason.as_str()))
            .collect();
        assert_eq!(listed, [("5", "legal hold")], "{:#?}", plan.excepted);
    }

    /// An active account of someone who lost access that `safety.protected`
    /// names for good is listed in [`Plan::protected_leavers`]: one renamed into
    /// a protected name by its leaver, and a protected person's own. One only an
    /// exception keeps is listed as excepted instead; an inactive one, a
    /// protected orphan and a protected account of someone who has access are
    /// not listed at all. None is in an action.
    #[test]
    fn a_leavers_account_protected_for_good_is_listed() {
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        let gone = |id| ident(id, IdentityStatus::Deprovisioned, &[]);
        fx.identities = vec![
            gone("ann"),
            gone("old-admin"),
            ident("cid", IdentityStatus::Suspended, &[]),
            gone("dee"),
            active("eve-admin", &[]),
        ];
        let mut anns = acct("1", "ann");
        anns.user_name = "break-glass-admin@ex.com".into();
        let mut cids = acct("3", "cid");
        cids.user_name = "cid-admin@ex.com".into();
        cids.active = false;
        let mut dees = acct("4", "dee");
        dees.user_name = "dee-kept@ex.com".into();
        let mut orphan = acct("6", "root-admin");
        orphan.external_id = None;
        fx.accounts = vec![
            anns,
            acct("2", "old-admin"),
            cids,
            dees,
            acct("5", "eve-admin"),
            orphan,
        ];
        fx.links = vec![link("ann", "1"), link("cid", "3"), link("dee", "4")];
        let until = Utc::now() + TimeDelta::days(3);
        let exception = crate::model::Exception {
            user_name: "dee-kept@ex.com".to_owned(),
            until,
            reason: "handover".to_owned(),
        };
        fx.settings.protected = Protected::new(&["*admin@ex.com".into()])
            .with_exceptions(std::slice::from_ref(&exception), until - TimeDelta::days(1));
        let plan = fx.plan();
        assert!(
            plan.actions.iter().all(|a| a.kind.account_id().is_none()),
            "{:#?}",
            plan.actions
        );
        let listed: Vec<(&str, &str, &str, &str)> = plan
            .protected_leavers
            .iter()
            .map(|p| {
                (
                    p.account_id.as_str(),
                    p.user_name.as_str(),
                    p.identity_id.as_str(),
                    p.why.as_str(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "1",
                    "break-glass-admin@ex.com",
                    "ann",
                    "identity is deprovisioned in the directory"
                ),
                (
                    "2",
                    "old-admin@ex.com",
                    "old-admin",
                    "deprovisioned in the directory"
                ),
            ]
        );
        let excepted: Vec<&str> = plan
            .excepted
            .iter()
            .map(|e| e.account_id.as_str())
            .collect();
        assert_eq!(excepted, ["4"], "{:#?}", plan.excepted);
    }

    /// A protected person who lost access, whose account's own userName only
    /// an exception names: the person's protection keeps it for good, the
    /// exception only for a while. It was listed under PROTECTED LEAVERS as
    /// protected for good by its own name ("take its name out of
    /// safety.protected"), which names it nowhere; it is protected through its
    /// person (PROTECTED BY PERSON), as it is once the exception ends. Of a
    /// protected person who has access, such an account is listed nowhere, as
    /// before.
    #[test]
    fn a_protected_leavers_account_only_excepted_is_listed_as_protected_by_person() {
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.identities = vec![
            ident("old-admin", IdentityStatus::Deprovisioned, &[]),
            active("new-admin", &[]),
        ];
        let mut olds = acct("1", "old-admin");
        olds.user_name = "handover@ex.com".into();
        let mut news = acct("2", "new-admin");
        news.user_name = "on-call@ex.com".into();
        fx.accounts = vec![olds, news];
        fx.links = vec![link("old-admin", "1"), link("new-admin", "2")];
        let until = Utc::now() + TimeDelta::days(3);
        let exception = |user_name: &str| crate::model::Exception {
            user_name: user_name.to_owned(),
            until,
            reason: "handover".to_owned(),
        };
        fx.settings.protected =
            Protected::new(&["old-admin@ex.com".into(), "new-admin@ex.com".into()])
                .with_exceptions(
                    &[exception("handover@ex.com"), exception("on-call@ex.com")],
                    until - TimeDelta::days(1),
                );
        let plan = fx.plan();
        assert!(
            plan.actions.iter().all(|a| a.kind.account_id().is_none()),
            "{:#?}",
            plan.actions
        );
        assert!(
            plan.protected_leavers.is_empty(),
            "{:#?}",
            plan.protected_leavers
        );
        let by_person: Vec<&str> = plan
            .protected_by_person
            .iter()
            .map(|p| p.account_id.as_str())
            .collect();
        assert_eq!(by_person, ["1"], "{:#?}", plan.protected_by_person);
    }

    /// An incomplete directory read does not show who was deleted: a person
    /// it lacks may simply be missing from it. Listed as a leaver whose
    /// protected account keeps access, the report told the operator to
    /// deactivate a break-glass account by hand, and the alert on it fired,
    /// for someone still employed. One whose own record says they left is
    /// listed all the same.
    #[test]
    fn an_incomplete_directory_lists_no_protected_leaver_it_does_not_show() {
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.identities = vec![ident("gone", IdentityStatus::Deprovisioned, &[])];
        let mut absents = acct("1", "absent");
        absents.user_name = "break-glass-admin@ex.com".into();
        let mut gones = acct("2", "gone");
        gones.user_name = "gone-admin@ex.com".into();
        fx.accounts = vec![absents, gones];
        fx.links = vec![link("absent", "1"), link("gone", "2")];
        fx.settings.protected = Protected::new(&["*admin@ex.com".into()]);
        let listed = |complete: bool| {
            let mut dir = fx.dir();
            dir.complete = complete;
            let plan = plan(
                &desired_state(&dir, &fx.policy),
                &dir,
                &fx.ws(),
                &fx.links,
                &fx.remembered,
                &fx.settings,
            );
            plan.protected_leavers
                .iter()
                .map(|p| p.account_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(listed(true), ["1", "2"]);
        assert_eq!(listed(false), ["2"]);
    }

    /// Every account of a protected person is left alone, its own userName
    /// protected or not; one that is not is listed in
    /// [`Plan::protected_by_person`] with how it is tied to the person (a stored
    /// link, the rule that matched it, a duplicate) and whether they left, and
    /// one that is protected by its own name is not.
    #[test]
    fn accounts_left_alone_only_for_a_protected_person_are_listed() {
        let mut fx = Fx::new();
        fx.settings.unmatched_accounts = UnmatchedAccounts::Deactivate;
        fx.settings.protected = Protected::new(&["*admin@ex.com".into()]);
        fx.groups.clear();
        fx.identities = vec![
            active("eve-admin", &[]),
            ident("old-admin", IdentityStatus::Deprovisioned, &[]),
            active("sam-admin", &[]),
            active("ben", &[]),
        ];
        // Eve's stored link to a contractor's account; Sam's account found by
        // its email under another userName, and a second one, a duplicate; the
        // old admin left, linked to an account of their own name (protected).
        let mut contractor = acct("7", "contractor");
        contractor.external_id = None;
        let mut sams = acct("8", "sam");
        sams.external_id = None;
        sams.email = Some("sam-admin@ex.com".into());
        let mut sams_second = acct("9", "sam2");
        sams_second.external_id = Some("sam-admin".into());
        sams_second.active = false;
        fx.accounts = vec![
            acct("1", "eve-admin"),
            acct("2", "old-admin"),
            acct("4", "ben"),
            contractor,
            sams,
            sams_second,
        ];
        fx.links = vec![link("eve-admin", "7"), link("sam-admin", "8")];
        let plan = fx.plan();
        let only_groups = |plan: &Plan| {
            plan.actions
                .iter()
                .all(|a| matches!(a.kind, ActionKind::CreateGroup { .. }))
        };
        assert!(only_groups(&plan), "{:#?}", plan.actions);
        let listed: Vec<_> = plan
            .protected_by_person
            .iter()
            .map(|p| {
                (
                    p.account_id.as_str(),
                    p.identity_id.as_str(),
                    p.matched_by,
                    p.duplicate,
                    p.active,
                    p.lost,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                // Account 1 (eve-admin@ex.com) matches Eve by externalId too, as a
                // duplicate of her linked one, and is protected by its own name.
                ("7", "eve-admin", None, false, true, None),
                ("8", "sam-admin", None, false, true, None),
                (
                    "9",
                    "sam-admin",
                    Some(LinkMethod::ExternalId),
                    true,
                    false,
                    None
                ),
            ]
        );
        assert_eq!(
            plan.protected_by_person[2].tie(),
            "as a duplicate (matches them by externalId; they are linked to another account)"
        );

        // Unlinked, Sam's account is matched by email this run, and a leaver's
        // shielded account says why they have no access.
        fx.links = vec![link("eve-admin", "7")];
        fx.accounts.retain(|a| a.id != "9");
        fx.accounts[1].user_name = "old-ops@ex.com".into();
        let plan = fx.plan();
        assert!(only_groups(&plan), "{:#?}", plan.actions);
        let listed: Vec<_> = plan
            .protected_by_person
            .iter()
            .map(|p| (p.account_id.as_str(), p.matched_by, p.lost))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "2",
                    Some(LinkMethod::ExternalId),
                    Some(LossReason::Deprovisioned)
                ),
                ("7", None, None),
                ("8", Some(LinkMethod::Email), None),
            ]
        );
        assert_eq!(
            plan.protected_by_person[2].tie(),
            "by email (matched this run)"
        );

        // Unprotected, the same accounts are the plan's like any other's.
        fx.settings.protected = Protected::default();
        let plan = fx.plan();
        assert!(plan.protected_by_person.is_empty());
        assert!(
            plan.actions
                .iter()
                .any(|a| a.kind.account_id() == Some("2"))
        );
    }

    #[test]
    fn actions_are_ordered_by_class_then_subject() {
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.identities = vec![
            active("z", &["eng"]),
            active("m", &[]),
            ident("q", IdentityStatus::Suspended, &[]),
            ident("b", IdentityStatus::Suspended, &[]),
        ];
        fx.accounts = vec![acct("1", "m"), acct("2", "q"), acct("3", "b")];
        fx.accounts[0].active = false;
        fx.accounts[0].roles = vec![];
        let plan = fx.plan();
        let got: Vec<_> = plan
            .actions
            .iter()
            .map(|a| (a.seq, a.kind.name(), a.subject.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "deactivate", "b@ex.com"),
                (1, "deactivate", "q@ex.com"),
                (2, "create_group", "Engineering"),
                (3, "create_account", "z@ex.com"),
                (4, "reactivate", "m@ex.com"),
                (5, "set_role", "m@ex.com"),
                (6, "add_members", "Engineering"),
            ]
        );
        let mut sorted = plan.drift.clone();
        sorted.sort_by(|a, b| (a.kind, &a.user_name).cmp(&(b.kind, &b.user_name)));
        assert_eq!(plan.drift, sorted);
        // Every action has a drift item of its kind for its subject.
        for action in &plan.actions {
            assert!(
                plan.drift.iter().any(|d| d.kind == action.reason),
                "{action:?}"
            );
        }
    }

    #[test]
    fn simulate_names_created_objects_and_links_them() {
        let mut fx = Fx::new();
        fx.groups.clear();
        fx.identities = vec![active("a", &["eng"])];
        let plan = fx.plan();
        let (ws, links) = simulate(&fx.ws(), &fx.links, &plan);
        assert_eq!(ws.accounts.len(), 1);
        assert_eq!(ws.accounts[0].id, "new:a");
        assert_eq!(ws.accounts[0].roles, ["Editor"]);
        assert_eq!(ws.groups[0].id, "new:Engineering");
        assert_eq!(ws.groups[0].members, ["new:a"]);
        assert_eq!(links, [link("a", "new:a")]);
    }

    #[test]
    fn simulate_skips_held_actions() {
        let mut fx = Fx::new();
        fx.identities = vec![ident("s", IdentityStatus::Suspended, &[])];
        fx.accounts = vec![acct("1", "s")];
        let mut plan = fx.plan();
        plan.actions[0].held = Some(crate::model::HoldReason::LastOwner);
        let (ws, _) = simulate(&fx.ws(), &fx.links, &plan);
        assert_eq!(ws, fx.ws());
        plan.actions[0].held = None;
        let (ws, links) = simulate(&fx.ws(), &fx.links, &plan);
        assert!(!ws.accounts[0].active);
        assert_eq!(links, [link("s", "1")]);
    }

    /// The disputes' details name the commands that settle them as the settings'
    /// admin command spells them (`report.admin_command`), so a run stores the
    /// command configured when it planned.
    #[test]
    fn dispute_details_name_the_configured_admin_command() {
        const ADMIN: &str = "sudo -u seatwarden seatwarden --config /etc/sw.toml";
        let details = |fx: &mut Fx| -> Vec<String> {
            fx.settings.admin_command = ADMIN.to_owned();
            let details: Vec<String> = drift_of(&fx.plan(), DriftKind::DisputedMatch)
                .into_iter()
                .map(|d| d.detail.clone())
                .collect();
            assert!(!details.is_empty(), "no dispute: {:?}", fx.accounts);
            for detail in &details {
                assert!(
                    detail.contains(&format!("`{ADMIN} ")) && !detail.contains("`seatwarden "),
                    "{detail}"
                );
            }
            details
        };
        let has = |details: &[String], part: &str| {
            assert!(
                details.iter().any(|d| d.contains(part)),
                "{part}: {details:#?}"
            );
        };

        // Two stored links each contradicted by the other account's externalId.
        let mut fx = Fx::new();
        fx.identities = vec![active("ursula", &["eng"]), active("vera", &[])];
        fx.accounts = vec![acct("1", "ursula"), acct("2", "vera")];
        fx.links = vec![link("ursula", "2"), link("vera", "1")];
        has(
            &details(&mut fx),
            &format!("`{ADMIN} link ursula 1 --replace` moves"),
        );

        // An account linked to one person whose externalId names another, who
        // then loses access.
        let mut fx = Fx::new();
        fx.identities = vec![active("ursula", &["eng"]), active("vera", &[])];
        let mut claimed = acct("1", "ursula");
        claimed.external_id = Some("vera".into());
        fx.accounts = vec![claimed];
        fx.links = vec![link("ursula", "1")];
        let found = details(&mut fx);
        has(&found, &format!("`{ADMIN} explain 1` compares them"));
        has(&found, &format!("`{ADMIN} link vera 1 --replace` moves"));
        fx.identities[0].status = IdentityStatus::Suspended;
        let found = details(&mut fx);
        has(
            &found,
            &format!("until `{ADMIN} link ursula ACCOUNT` says which is theirs"),
        );
        has(&found, &format!("(`{ADMIN} explain ursula` compares them)"));

        // A former employee's deactivated account matched by a namesake's userName.
        let mut fx = Fx::new();
        fx.identities = vec![active("new-hire", &[])];
        let mut old = acct("1", "former-employee");
        old.user_name = "new-hire@ex.com".into();
        old.active = false;
        fx.accounts = vec![old];
        let found = details(&mut fx);
        has(&found, &format!("`{ADMIN} link` hands it over"));
        has(
            &found,
            &format!(
                "`{ADMIN} explain new-hire` compares them, `{ADMIN} link new-hire ACCOUNT` \
                 settles which is theirs"
            ),
        );

        // A leaver whose accounts are all inactive already.
        let mut fx = disputed_by_name_and_email();
        fx.identities[0].status = IdentityStatus::Deprovisioned;
        for account in &mut fx.accounts {
            account.active = false;
        }
        has(
            &details(&mut fx),
            &format!("inactive already: `{ADMIN} link a ACCOUNT` settles"),
        );

        // One account two people's shared email matches.
        let mut fx = Fx::new();
        fx.identities = vec![active("p", &[]), active("q", &[])];
        for identity in &mut fx.identities {
            identity.email = Some("shared@ex.com".into());
        }
        let mut shared = acct("1", "nobody");
        shared.external_id = None;
        shared.email = Some("shared@ex.com".into());
        fx.accounts = vec![shared];
        has(
            &details(&mut fx),
            &format!("`{ADMIN} explain 1` compares them, `{ADMIN} link IDENTITY 1` settles"),
        );
    }

    /// The creates of a plan, by identity id.
    fn created(plan: &Plan) -> Vec<&str> {
        plan.actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::CreateAccount { identity_id, .. } => Some(identity_id.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The members a plan adds to workspace groups that are to be created.
    fn joining(plan: &Plan) -> Vec<&str> {
        plan.actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::AddMembers { members, .. } => Some(members),
                _ => None,
            })
            .flatten()
            .filter_map(|m| match m {
                AccountRef::Created { identity_id } => Some(identity_id.as_str()),
                AccountRef::Existing { .. } => None,
            })
            .collect()
    }

    fn conflicts(plan: &Plan) -> Vec<(&str, &str)> {
        plan.drift
            .iter()
            .filter(|d| is_user_name_conflict(d))
            .map(|d| (d.identity_id.as_deref().unwrap_or(""), d.detail.as_str()))
            .collect()
    }

    fn with_user_name(mut identity: Identity, user_name: &str) -> Identity {
        identity.user_name = user_name.into();
        identity
    }

    /// Ada has her account; Ben's directory entry carries her userName. A create
    /// for Ben would meet 409 run after run: he is reported instead, joins no
    /// group, and Ada's account stays hers, untouched. Cy, unrelated, is created.
    #[test]
    fn a_user_name_another_persons_account_holds_is_not_created() {
        let mut fx = Fx::new();
        fx.identities = vec![
            active("ada", &["eng"]),
            with_user_name(active("ben", &["eng"]), "ada@ex.com"),
            active("cy", &["eng"]),
        ];
        fx.accounts = vec![acct("1", "ada")];
        fx.accounts[0].roles = vec!["Editor".into()];
        fx.groups = vec![group("g", "Engineering", &["1"])];
        fx.links = vec![link("ada", "1")];
        let plan = fx.plan();
        assert_eq!(created(&plan), ["cy"], "{:#?}", plan.actions);
        assert_eq!(joining(&plan), ["cy"], "{:#?}", plan.actions);
        assert!(
            plan.actions.iter().all(
                |a| a.kind.account_id() != Some("1") && a.identity_id.as_deref() != Some("ben")
            ),
            "{:#?}",
            plan.actions
        );
        assert_eq!(
            conflicts(&plan),
            [(
                "ben",
                "not created: userName \"ada@ex.com\" is already held by account 1 (person \
                 ada); two people cannot share a userName: fix it in the directory, or free it \
                 in the workspace (rename or delete the account holding it) if it is no longer \
                 theirs"
            )]
        );
        let ben = drift_of(&plan, DriftKind::MissingAccount)
            .into_iter()
            .find(|d| d.identity_id.as_deref() == Some("ben"))
            .unwrap();
        assert_eq!(
            (ben.user_name.as_str(), ben.account_id.as_deref()),
            ("ada@ex.com", None)
        );
        assert_eq!(
            ben.conflict,
            Some(UserNameConflict {
                held_by: vec!["1".into()],
                ..UserNameConflict::default()
            })
        );
        // Every other item says it is none.
        assert_eq!(
            plan.drift.iter().filter(|d| d.conflict.is_some()).count(),
            1,
            "{:#?}",
            plan.drift
        );
        // Nothing Ben's report could be settled by is sent on the next run either.
        let again = fx.replan();
        assert!(again.is_empty(), "{:#?}", again.actions);
        assert_eq!(conflicts(&again).len(), 1);
    }

    /// Two people given one userName (case aside): which one it belongs to nobody
    /// here can tell, so neither is created and each report names the other.
    /// Someone else's create is unaffected.
    #[test]
    fn two_people_wanting_one_user_name_are_neither_created() {
        let mut fx = Fx::new();
        fx.identities = vec![
            with_user_name(active("ann", &["eng"]), "Ann@x.com"),
            with_user_name(active("anna", &["eng"]), "ann@x.com"),
            active("cy", &["eng"]),
        ];
        let plan = fx.plan();
        assert_eq!(created(&plan), ["cy"], "{:#?}", plan.actions);
        assert_eq!(joining(&plan), ["cy"], "{:#?}", plan.actions);
        assert_eq!(
            conflicts(&plan),
            [
                (
                    "ann",
                    "not created: userName \"Ann@x.com\" is wanted by person anna (a new \
                     account) too; two people cannot share a userName: fix it in the directory"
                ),
                (
                    "anna",
                    "not created: userName \"ann@x.com\" is wanted by person ann (a new \
                     account) too; two people cannot share a userName: fix it in the directory"
                ),
            ]
        );

        let wanted = |d: &DriftItem| d.conflict.clone().map(|c| (c.held_by, c.wanted_by));
        assert_eq!(
            plan.drift.iter().filter_map(wanted).collect::<Vec<_>>(),
            [
                (vec![], vec!["anna".to_owned()]),
                (vec![], vec!["ann".to_owned()])
            ]
        );

        // Many people given one userName: a few are named, the rest counted.
        fx.identities = (0..6)
            .map(|n| with_user_name(active(&format!("p{n}"), &[]), "team@x.com"))
            .collect();
        let plan = fx.plan();
        assert!(plan.is_empty(), "{:#?}", plan.actions);
        let reported = conflicts(&plan);
        assert_eq!(reported.len(), 6);
        assert!(
            reported.iter().any(|(id, detail)| *id == "p0"
                && detail.contains(
                    "is wanted by person p1 (a new account), person p2 (a new account), \
                     person p3 (a new account), 2 more too"
                )),
            "{reported:#?}"
        );
        let p0 = plan
            .drift
            .iter()
            .find(|d| d.identity_id.as_deref() == Some("p0"));
        assert_eq!(
            p0.and_then(|d| d.conflict.clone()),
            Some(UserNameConflict {
                held_by: vec![],
                wanted_by: vec!["p1".into(), "p2".into(), "p3".into()],
                wanted_by_more: 2,
            })
        );
    }

    /// Only case tells an existing account's userName from the one a create wants:
    /// the workspace holds it once all the same. So does composition (NFC).
    #[test]
    fn a_user_name_held_in_another_case_or_composition_is_held() {
        for (held, wanted) in [
            ("Ann@x.com", "ann@x.com"),
            ("us\u{e9}r@x.com", "use\u{301}r@x.com"),
        ] {
            let mut fx = Fx::new();
            fx.identities = vec![
                with_user_name(active("ann", &[]), held),
                with_user_name(active("bob", &[]), wanted),
            ];
            let mut account = acct("1", "ann");
            account.user_name = held.into();
            fx.accounts = vec![account];
            fx.links = vec![link("ann", "1")];
            let plan = fx.plan();
            assert!(plan.is_empty(), "{held} / {wanted}: {:#?}", plan.actions);
            let reported = conflicts(&plan);
            assert_eq!(reported.len(), 1, "{reported:?}");
            assert_eq!(reported[0].0, "bob");
            assert!(
                reported[0]
                    .1
                    .contains("is already held by account 1 (person ann)"),
                "{reported:?}"
            );
        }
    }

    /// A rename onto a userName another person's account holds is not sent; the
    /// account's other attributes are still brought in line. A rename onto a
    /// userName a create wants too is made by neither.
    #[test]
    fn a_rename_onto_a_held_or_wanted_user_name_is_not_made() {
        let mut fx = Fx::new();
        fx.identities = vec![
            with_user_name(active("ann", &[]), "bob@ex.com"),
            active("bob", &[]),
        ];
        fx.accounts = vec![acct("1", "ann"), acct("2", "bob")];
        fx.accounts[0].given_name = Some("Annie".into());
        fx.links = vec![link("ann", "1"), link("bob", "2")];
        let plan = fx.plan();
        assert_eq!(
            kinds(&plan),
            [&ActionKind::UpdateAttributes {
                account_id: "1".into(),
                changes: vec![AttributeChange {
                    attribute: Attribute::GivenName,
                    from: Some("Annie".into()),
                    to: Some("ANN".into()),
                }],
            }]
        );
        let reported: Vec<&DriftItem> = plan
            .drift
            .iter()
            .filter(|d| is_user_name_conflict(d))
            .collect();
        assert_eq!(reported.len(), 1, "{:#?}", plan.drift);
        assert_eq!(reported[0].kind, DriftKind::AttributeDrift);
        assert_eq!(reported[0].account_id.as_deref(), Some("1"));
        assert_eq!(
            reported[0].conflict,
            Some(UserNameConflict {
                held_by: vec!["2".into()],
                ..UserNameConflict::default()
            })
        );
        assert_eq!(
            reported[0].detail,
            "not renamed: account 1 keeps \"ann@ex.com\": userName \"bob@ex.com\" is already \
             held by account 2 (person bob); two people cannot share a userName: fix it in the \
             directory, or free it in the workspace (rename or delete the account holding it) \
             if it is no longer theirs"
        );

        // Bob has no account yet: his create and Ann's rename want one userName.
        fx.accounts.truncate(1);
        fx.links.truncate(1);
        let plan = fx.plan();
        assert!(created(&plan).is_empty(), "{:#?}", plan.actions);
        assert!(
            !plan.actions.iter().any(|a| a.kind.renames()),
            "{:#?}",
            plan.actions
        );
        let reported = conflicts(&plan);
        assert_eq!(reported.len(), 2, "{reported:?}");
        let of = |id: &str| reported.iter().find(|(i, _)| *i == id).map(|(_, d)| *d);
        assert!(
            of("ann").is_some_and(|d| d.contains("is wanted by person bob (a new account) too")),
            "{reported:?}"
        );
        assert!(
            of("bob")
                .is_some_and(|d| d.contains("is wanted by person ann (account 1 renamed) too")),
            "{reported:?}"
        );
    }

    /// A userName is free for a create or rename once the account that holds it is
    /// deleted, or renamed by a change that is made, in the same plan (those run
    /// first); two accounts swapping userNames are renamed by neither.
    #[test]
    fn a_user_name_given_up_in_the_same_plan_is_free() {
        // Ann left and her account is deleted; Bob was given her address.
        let mut fx = Fx::new();
        fx.settings.deprovision = DeprovisionAction::Delete;
        fx.identities = vec![
            ident("ann", IdentityStatus::Deprovisioned, &[]),
            with_user_name(active("bob", &[]), "ann@ex.com"),
        ];
        fx.accounts = vec![acct("1", "ann")];
        fx.links = vec![link("ann", "1")];
        let plan = fx.plan();
        assert_eq!(created(&plan), ["bob"], "{:#?}", plan.actions);
        assert!(conflicts(&plan).is_empty());

        // A chain: Cy takes Bob's old userName, Bob takes a free one.
        let mut fx = Fx::new();
        fx.identities = vec![
            with_user_name(active("bob", &[]), "bob2@ex.com"),
            with_user_name(active("cy", &[]), "bob@ex.com"),
        ];
        fx.accounts = vec![acct("1", "bob"), acct("2", "cy")];
        fx.links = vec![link("bob", "1"), link("cy", "2")];
        let plan = fx.plan();
        assert_eq!(
            plan.actions.iter().filter(|a| a.kind.renames()).count(),
            2,
            "{:#?}",
            plan.actions
        );
        assert!(conflicts(&plan).is_empty());

        // A swap: each rename would meet the other account.
        fx.identities[0].user_name = "cy@ex.com".into();
        let plan = fx.plan();
        assert!(plan.is_empty(), "{:#?}", plan.actions);
        assert_eq!(conflicts(&plan).len(), 2);
        let held: Vec<(Option<&str>, Vec<String>)> = plan
            .drift
            .iter()
            .filter_map(|d| Some((d.account_id.as_deref(), d.conflict.clone()?.held_by)))
            .collect();
        assert_eq!(
            held,
            [
                (Some("2"), vec!["1".to_owned()]),
                (Some("1"), vec!["2".to_owned()])
            ]
        );
        // Ann's account, deleted, is in nobody's way: Bob's create names none.
        let mut fx = Fx::new();
        fx.settings.deprovision = DeprovisionAction::Delete;
        fx.identities = vec![
            ident("ann", IdentityStatus::Deprovisioned, &[]),
            with_user_name(active("bob", &[]), "ann@ex.com"),
            with_user_name(active("cy", &[]), "ann@ex.com"),
        ];
        fx.accounts = vec![acct("1", "ann")];
        fx.links = vec![link("ann", "1")];
        let plan = fx.plan();
        assert!(created(&plan).is_empty(), "{:#?}", plan.actions);
        assert_eq!(
            plan.drift
                .iter()
                .filter_map(|d| Some((d.identity_id.as_deref()?, d.conflict.clone()?)))
                .collect::<Vec<_>>(),
            [
                (
                    "bob",
                    UserNameConflict {
                        wanted_by: vec!["cy".into()],
                        ..UserNameConflict::default()
                    }
                ),
                (
                    "cy",
                    UserNameConflict {
                        wanted_by: vec!["bob".into()],
                        ..UserNameConflict::default()
                    }
                ),
            ]
        );
    }

    /// Only a userName conflict carries `conflict`, and only it serialises the
    /// field; an item stored before the field existed loads without it, unless
    /// its detail opens as a conflict's did, which then still counts as one.
    #[test]
    fn a_user_name_conflict_is_marked_and_older_stored_items_still_count() {
        let item = |kind: DriftKind, detail: &str| DriftItem {
            kind,
            identity_id: Some("ben".into()),
            account_id: None,
            user_name: "ada@ex.com".into(),
            detail: detail.into(),
            conflict: None,
        };
        let plain = item(DriftKind::MissingAccount, "identity is in scope");
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("conflict").is_none(), "{json}");
        assert!(!is_user_name_conflict(&plain));
        let marked = DriftItem {
            conflict: Some(UserNameConflict {
                held_by: vec!["1".into()],
                ..UserNameConflict::default()
            }),
            ..item(DriftKind::MissingAccount, "anything")
        };
        let json = serde_json::to_value(&marked).unwrap();
        assert_eq!(json["conflict"], serde_json::json!({"held_by": ["1"]}));
        assert_eq!(serde_json::from_value::<DriftItem>(json).unwrap(), marked);
        assert!(is_user_name_conflict(&marked));

        // As an older version stored them: no `conflict` key at all.
        let stored = |kind: &str, detail: &str| {
            serde_json::from_value::<DriftItem>(serde_json::json!({
                "kind": kind, "identity_id": "ben", "account_id": null,
                "user_name": "ada@ex.com", "detail": detail,
            }))
            .unwrap()
        };
        let old_create = stored(
            "missing_account",
            "not created: userName \"ada@ex.com\" is already held by account 1 (person ada)",
        );
        let old_rename = stored(
            "attribute_drift",
            "not renamed: account 2 keeps \"ben@ex.com\": userName \"ada@ex.com\" is …",
        );
        for old in [&old_create, &old_rename] {
            assert!(is_user_name_conflict(old), "{old:?}");
            assert_eq!(old.conflict, Some(UserNameConflict::default()));
        }
        for (kind, detail) in [
            (
                "missing_account",
                "identity is in scope but has no workspace account",
            ),
            ("stale_access", "not created: userName \"ada@ex.com\""),
            (
                "missing_account",
                "not renamed: account 2 keeps \"ben@ex.com\"",
            ),
        ] {
            let old = stored(kind, detail);
            assert!(!is_user_name_conflict(&old), "{old:?}");
            assert_eq!(old.conflict, None);
        }
        // A stored marker is taken as it is, whatever the detail says.
        let mut json = serde_json::to_value(&marked).unwrap();
        json["detail"] = NOT_CREATED.into();
        assert_eq!(
            serde_json::from_value::<DriftItem>(json).unwrap().conflict,
            marked.conflict
        );
    }
}
