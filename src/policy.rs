//! Desired state: which directory identities should have a workspace account, with
//! which attributes, role and workspace groups, and which must not have access.
//!
//! `desired_state` is a pure function of a directory snapshot and the policy
//! settings (design brief, pipeline step 2). It says nothing about the workspace;
//! `plan` diffs its result against what the workspace is.
//!
//! Rules:
//! - In scope = status `active` and (no scope groups configured, or member of at least
//!   one scope group).
//! - Role = the highest role of every mapping whose directory group the identity is in,
//!   else the default role. With `manage_roles = false` the spec carries no role.
//! - Workspace groups = the `workspace_group` of every mapping that applies.
//! - Directory group names compare exactly (case-sensitively): directories treat group
//!   names as identifiers, and a case-folded match could silently widen a mapping.
//!   Both sides arrive composed (NFC: the directory's from `Directory::snapshot`,
//!   the configuration's from its load), so an accent written decomposed matches.
//!
//! Representation: the result keeps one entry per directory identity (a grant index
//! or an inactive reason) beside one id index over the snapshot's identities; the
//! distinct role/groups/justification combinations ("grants") are computed once and
//! shared. Desired accounts are assembled on request ([`ActiveIdentities::get`]), and
//! `plan` reuses the id index for matching, so at a million identities the desired
//! state costs about 24 MiB instead of an owned spec per person. The id index and
//! the entries (in chunks of identities) are computed on two threads and merged in
//! directory order, so the result does not depend on which thread did what.
//!
//! [`Protected`] lives here too because it is part of the policy a plan obeys:
//! break-glass accounts that seatwarden never touches.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, Index};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::model::{AccountSpec, DirectorySnapshot, Identity, IdentityStatus, Role};

/// A small, fast, non-cryptographic hasher (the FxHash mixing step) for the core's
/// in-memory indexes. Keys come from our own snapshots; iteration order of the maps
/// built with it never reaches any output.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The little-endian word of the tail bytes, assembled without the
            // variable-length copy (which compiles to a memcpy call per hash).
            let word = rest
                .iter()
                .rev()
                .fold(0u64, |word, &b| (word << 8) | u64::from(b));
            self.add(word ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak (they only see the low input bits);
        // hashbrown takes buckets from the low bits, so finish with a full mix.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// Runs `task(i)` for every `i` in `0..n` beside `first`: a second thread takes
/// tasks one index at a time while the caller runs `first`, then the caller takes
/// the ones left. Results come back in index order, so they do not depend on which
/// thread ran what. On a busy machine, where the second thread may get no core,
/// the caller waits at most for the one task that thread has in hand.
pub(crate) fn beside<R: Send, T>(
    n: usize,
    task: impl Fn(usize) -> R + Sync,
    first: impl FnOnce() -> T,
) -> (Vec<R>, T) {
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            done.push((i, task(i)));
        }
        done
    };
    let (mut done, (t, more)) = join(worker, || {
        let t = first();
        (t, worker())
    });
    done.extend(more);
    done.sort_unstable_by_key(|&(i, _)| i);
    (done.into_iter().map(|(_, result)| result).collect(), t)
}

/// The items of chunk `chunk` of `items`, chunks being `CHUNK` long.
pub(crate) fn chunk<T>(items: &[T], chunk: usize) -> &[T] {
    let start = chunk.saturating_mul(CHUNK).min(items.len());
    let end = start.saturating_add(CHUNK).min(items.len());
    items.get(start..end).unwrap_or_default()
}

/// Runs `a` on a second thread while the caller runs `b`, and returns both results.
/// The core is pure, so the two sides share only immutable borrows and the result
/// cannot depend on which finishes first. `a` is `Fn` so that it is still at hand
/// when no thread can be started: then both run here, one after the other. A panic
/// on the second thread is passed on to the caller.
fn join<RA: Send, RB>(a: impl Fn() -> RA + Sync, b: impl FnOnce() -> RB) -> (RA, RB) {
    std::thread::scope(
        |scope| match std::thread::Builder::new().spawn_scoped(scope, &a) {
            Ok(handle) => {
                let rb = b();
                match handle.join() {
                    Ok(ra) => (ra, rb),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Err(_) => (a(), b()),
        },
    )
}

/// Directory group → workspace group (a Taskade workspace or folder) and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub group: String,
    pub workspace_group: String,
    pub role: Role,
}

/// What to do with workspace accounts that no directory identity justifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnmatchedAccounts {
    /// Report them as orphaned; change nothing.
    Report,
    /// Accept them as they are: not drift, never touched.
    Adopt,
    /// Deactivate them and take them out of managed groups.
    Deactivate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySettings {
    /// Directory groups that bring people into scope; empty means every active
    /// identity is in scope.
    pub scope_groups: Vec<String>,
    pub default_role: Role,
    pub mappings: Vec<Mapping>,
    /// False when roles do not travel over SCIM (`role_attribute = "none"`): specs
    /// carry no role and there is no role drift.
    pub manage_roles: bool,
}

/// Why an identity in the directory must not have workspace access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InactiveReason {
    Suspended,
    Deprovisioned,
    OutOfScope,
}

impl fmt::Display for InactiveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InactiveReason::Suspended => "identity is suspended in the directory",
            InactiveReason::Deprovisioned => "identity is deprovisioned in the directory",
            InactiveReason::OutOfScope => "identity is not in any scope group",
        })
    }
}

/// Why an account looks like it does: one "Group → Role" line per mapping that
/// applied, or "default role". Shared by every identity the same mappings apply to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Justification(Arc<Vec<String>>);

impl Deref for Justification {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Justification {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.0.len() == N && self.0.iter().zip(other).all(|(a, b)| a == b)
    }
}

impl PartialEq<Vec<String>> for Justification {
    fn eq(&self, other: &Vec<String>) -> bool {
        *self.0 == *other
    }
}

/// The attributes seatwarden manages on an account, borrowed from the directory
/// snapshot; [`DesiredSpec::to_spec`] gives the owned [`AccountSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesiredSpec<'a> {
    pub user_name: &'a str,
    /// Always the directory identity id.
    pub external_id: &'a str,
    pub given_name: Option<&'a str>,
    pub family_name: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub email: Option<&'a str>,
    /// `None` when roles are not managed.
    pub role: Option<Role>,
}

impl DesiredSpec<'_> {
    pub fn to_spec(&self) -> AccountSpec {
        AccountSpec {
            user_name: self.user_name.to_owned(),
            external_id: self.external_id.to_owned(),
            given_name: self.given_name.map(str::to_owned),
            family_name: self.family_name.map(str::to_owned),
            display_name: self.display_name.map(str::to_owned),
            email: self.email.map(str::to_owned),
            role: self.role,
        }
    }
}

/// One identity that should have an active workspace account (its id is the
/// key it is stored under, and `spec.external_id`). Borrows from the directory
/// snapshot it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAccount<'a> {
    pub spec: DesiredSpec<'a>,
    /// Workspace group names (as the mappings spell them). Shared by every identity
    /// the same mappings apply to.
    pub groups: Arc<BTreeSet<String>>,
    pub justification: Justification,
}

pub(crate) fn fx_hash(s: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(s.as_bytes());
    hasher.finish()
}

/// An open-addressing index of strings stored elsewhere (at positions `0..n` of
/// some list): each slot holds a position + 1 (0 = empty) and the high half of the
/// key's hash, so a probe reads 8 bytes and only a tag match reads the key. Sized
/// up front for at most `capacity` keys; never fuller than half.
#[derive(Debug, Clone, Default)]
pub(crate) struct StrIndex {
    slots: Vec<(u32, u32)>,
}

impl StrIndex {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        StrIndex {
            slots: vec![(0, 0); (capacity.saturating_mul(2)).next_power_of_two().max(16)],
        }
    }

    /// The position of `key`, else the empty slot where it would go.
    pub(crate) fn find<'k>(
        &self,
        key: &str,
        hash: u64,
        key_at: impl Fn(usize) -> Option<&'k str>,
    ) -> Result<usize, usize> {
        let mask = self.slots.len().wrapping_sub(1);
        let tag = (hash >> 32) as u32;
        let mut pos = hash as usize & mask;
        loop {
            let Some(&(entry, slot_tag)) = self.slots.get(pos) else {
                return Err(usize::MAX);
            };
            if entry == 0 {
                return Err(pos);
            }
            let position = entry as usize - 1;
            if slot_tag == tag && key_at(position) == Some(key) {
                return Ok(position);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Fills the empty slot `find` returned; false when it cannot.
    pub(crate) fn fill(&mut self, slot: usize, position: usize, hash: u64) -> bool {
        match (self.slots.get_mut(slot), u32::try_from(position + 1)) {
            (Some(s), Ok(entry)) => {
                *s = (entry, (hash >> 32) as u32);
                true
            }
            _ => false,
        }
    }
}

/// The first identity of each id in a directory snapshot, by id: a [`StrIndex`]
/// over positions in the snapshot's identity list. Built once by [`desired_state`]
/// and shared with matching, so an identity is found by one lookup and everything
/// else about it is indexed by its position.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityIndex<'a> {
    identities: &'a [Identity],
    index: StrIndex,
}

impl<'a> IdentityIndex<'a> {
    /// Indexes every identity; `first(position)` is called once per identity with
    /// whether it is the first of its id.
    pub(crate) fn build(identities: &'a [Identity], mut first: impl FnMut(usize, bool)) -> Self {
        let mut index = StrIndex::with_capacity(identities.len());
        for (position, identity) in identities.iter().enumerate() {
            let id = identity.id.as_str();
            let hash = fx_hash(id);
            let new = match index.find(id, hash, |p| identities.get(p).map(|i| i.id.as_str())) {
                Ok(_) => false,
                Err(slot) => index.fill(slot, position, hash),
            };
            first(position, new);
        }
        IdentityIndex { identities, index }
    }

    pub(crate) fn identities(&self) -> &'a [Identity] {
        self.identities
    }

    /// The position of the first identity with this id.
    pub(crate) fn position(&self, id: &str) -> Option<u32> {
        if self.identities.is_empty() {
            return None;
        }
        let identities = self.identities;
        let found = self.index.find(id, fx_hash(id), |p| {
            identities.get(p).map(|i| i.id.as_str())
        });
        found.ok().and_then(|p| u32::try_from(p).ok())
    }

    pub(crate) fn at(&self, position: u32) -> Option<&'a Identity> {
        self.identities.get(position as usize)
    }
}

/// What the desired state says about the identity at one directory position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A later identity with an id seen before: the first one decides.
    Repeat,
    /// Should have access, with the grant at this index.
    Active(u32),
    Inactive(InactiveReason),
}

#[derive(Debug, Default)]
struct Inner<'a> {
    index: IdentityIndex<'a>,
    /// By directory position.
    entries: Vec<Entry>,
    grants: Vec<Grant>,
    active_len: usize,
    inactive_len: usize,
    manage_roles: bool,
}

impl<'a> Inner<'a> {
    fn entry(&self, id: &str) -> Option<(u32, Entry)> {
        let position = self.index.position(id)?;
        Some((position, *self.entries.get(position as usize)?))
    }

    fn account(&self, position: u32, grant: u32) -> Option<DesiredAccount<'a>> {
        let identity = self.index.at(position)?;
        let grant = self.grants.get(grant as usize)?;
        Some(DesiredAccount {
            spec: spec_of(identity, grant, self.manage_roles),
            groups: Arc::clone(&grant.groups),
            justification: grant.justification.clone(),
        })
    }
}

fn spec_of<'a>(identity: &'a Identity, grant: &Grant, manage_roles: bool) -> DesiredSpec<'a> {
    DesiredSpec {
        // White space at an end is a typo (some directories keep it): never
        // created or renamed to, and matched without it.
        user_name: identity.user_name.trim(),
        external_id: &identity.id,
        given_name: identity.given_name.as_deref(),
        family_name: identity.family_name.as_deref(),
        display_name: identity.display_name.as_deref(),
        // Trimmed as the userName is: a provider that stores it trimmed would
        // otherwise show attribute drift, and be sent the same update, every run.
        email: identity
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty()),
        role: manage_roles.then_some(grant.role),
    }
}

/// Identity id → desired account, for identities in scope and active, in directory
/// order. Values are built on request from the identity and its shared grant.
#[derive(Debug, Clone, Default)]
pub struct ActiveIdentities<'a>(Arc<Inner<'a>>);

impl<'a> ActiveIdentities<'a> {
    pub fn get(&self, id: &str) -> Option<DesiredAccount<'a>> {
        match self.0.entry(id)? {
            (position, Entry::Active(grant)) => self.0.account(position, grant),
            _ => None,
        }
    }

    pub fn contains_key(&self, id: &str) -> bool {
        matches!(self.0.entry(id), Some((_, Entry::Active(_))))
    }

    pub fn len(&self) -> usize {
        self.0.active_len
    }

    pub fn is_empty(&self) -> bool {
        self.0.active_len == 0
    }

    /// Ids in directory order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// Every workspace group some identity here is given (as the mappings spell
    /// them): each grant is looked at once, however many identities share it.
    pub fn granted_groups(&self) -> BTreeSet<&str> {
        let inner = &self.0;
        let mut used = vec![false; inner.grants.len()];
        for entry in &inner.entries {
            if let Entry::Active(grant) = *entry
                && let Some(used) = used.get_mut(grant as usize)
            {
                *used = true;
            }
        }
        inner
            .grants
            .iter()
            .zip(used)
            .filter(|(_, used)| *used)
            .flat_map(|(grant, _)| grant.groups.iter().map(String::as_str))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, DesiredAccount<'a>)> + '_ {
        let inner = &self.0;
        inner
            .index
            .identities()
            .iter()
            .zip(&inner.entries)
            .zip(0u32..)
            .filter_map(|((identity, entry), position)| match *entry {
                Entry::Active(grant) => {
                    Some((identity.id.as_str(), inner.account(position, grant)?))
                }
                _ => None,
            })
    }
}

/// Identity id → why it must not have access, in directory order.
#[derive(Debug, Clone, Default)]
pub struct InactiveIdentities<'a>(Arc<Inner<'a>>);

impl<'a> InactiveIdentities<'a> {
    pub fn get(&self, id: &str) -> Option<InactiveReason> {
        match self.0.entry(id)? {
            (_, Entry::Inactive(reason)) => Some(reason),
            _ => None,
        }
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.inactive_len
    }

    pub fn is_empty(&self) -> bool {
        self.0.inactive_len == 0
    }

    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.iter().map(|(id, _)| id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, InactiveReason)> + '_ {
        let inner = &self.0;
        inner
            .index
            .identities()
            .iter()
            .zip(&inner.entries)
            .filter_map(|(identity, entry)| match *entry {
                Entry::Inactive(reason) => Some((identity.id.as_str(), reason)),
                _ => None,
            })
    }
}

impl<Q: Borrow<str> + ?Sized> Index<&Q> for InactiveIdentities<'_> {
    type Output = InactiveReason;

    #[allow(clippy::panic)]
    fn index(&self, id: &Q) -> &InactiveReason {
        match self.get(id.borrow()) {
            Some(InactiveReason::Suspended) => &InactiveReason::Suspended,
            Some(InactiveReason::Deprovisioned) => &InactiveReason::Deprovisioned,
            Some(InactiveReason::OutOfScope) => &InactiveReason::OutOfScope,
            None => panic!("no entry for id {:?}", id.borrow()),
        }
    }
}

/// The desired state of a directory snapshot. It borrows from the snapshot and
/// stores one entry per identity (a grant index or an inactive reason) beside one id
/// index, which [`crate::plan::plan`] reuses for matching.
#[derive(Debug, Clone, Default)]
pub struct DesiredState<'a> {
    /// Identity id → desired account, for identities in scope and active.
    pub active: ActiveIdentities<'a>,
    /// Identity id → why it must not have access.
    pub inactive: InactiveIdentities<'a>,
    /// Every workspace group any mapping names; only these groups' memberships are
    /// managed.
    pub managed_groups: BTreeSet<String>,
}

impl PartialEq for DesiredState<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.managed_groups == other.managed_groups
            && self.active.len() == other.active.len()
            && self.inactive.len() == other.inactive.len()
            && self.active.iter().eq(other.active.iter())
            && self.inactive.iter().eq(other.inactive.iter())
    }
}

impl Eq for DesiredState<'_> {}

/// An active identity's desired spec and grant, borrowed (no reference counts).
pub(crate) struct Want<'a> {
    pub(crate) spec: DesiredSpec<'a>,
    pub(crate) grant: u32,
}

impl<'a> DesiredState<'a> {
    pub(crate) fn index(&self) -> &IdentityIndex<'a> {
        &self.active.0.index
    }

    /// The entry of the identity at a directory position.
    pub(crate) fn entry_at(&self, position: u32) -> Entry {
        self.active
            .0
            .entries
            .get(position as usize)
            .copied()
            .unwrap_or(Entry::Repeat)
    }

    /// The entry of the first identity with this id, and its position.
    pub(crate) fn entry_of(&self, id: &str) -> Option<(u32, Entry)> {
        self.active.0.entry(id)
    }

    pub(crate) fn want_at(&self, position: u32) -> Option<Want<'a>> {
        let inner = &self.active.0;
        let Entry::Active(grant) = self.entry_at(position) else {
            return None;
        };
        let identity = inner.index.at(position)?;
        let g = inner.grants.get(grant as usize)?;
        Some(Want {
            spec: spec_of(identity, g, inner.manage_roles),
            grant,
        })
    }

    /// The workspace groups of each grant, by grant index.
    pub(crate) fn grant_groups(&self) -> impl Iterator<Item = &BTreeSet<String>> {
        self.active.0.grants.iter().map(|g| g.groups.as_ref())
    }
}

/// What a set of applied mappings gives: computed once per distinct set.
#[derive(Debug)]
struct Grant {
    role: Role,
    groups: Arc<BTreeSet<String>>,
    justification: Justification,
}

/// Computes the desired state. When the snapshot holds the same identity id twice,
/// the first occurrence wins (connectors should never do that; this keeps the result
/// deterministic if one does).
pub fn desired_state<'a>(
    directory: &'a DirectorySnapshot,
    policy: &PolicySettings,
) -> DesiredState<'a> {
    let managed_groups: BTreeSet<String> = policy
        .mappings
        .iter()
        .map(|m| m.workspace_group.clone())
        .collect();
    // Directory group name → whether it is a scope group, and the indices of the
    // mappings that name it: one lookup per listed group decides both.
    let mut group_info: FxHashMap<&str, (bool, Vec<u32>)> = FxHashMap::default();
    for (index, m) in policy.mappings.iter().enumerate() {
        if let Ok(index) = u32::try_from(index) {
            group_info
                .entry(m.group.as_str())
                .or_default()
                .1
                .push(index);
        }
    }
    for g in &policy.scope_groups {
        group_info.entry(g.as_str()).or_default().0 = true;
    }
    let identities = directory.identities.as_slice();
    // The id index (on this thread) and the entries of chunks of identities (on
    // both, see `beside`) are independent. A chunk computes each identity's entry as if it were the
    // first of its id, numbering the distinct sets of applied mappings it meets;
    // the chunks are then merged in directory order, so grants get the same
    // numbers whichever thread did what. The index tells the (rare) later
    // identities of an id, which become `Repeat`. A grant only such a repeat uses
    // stays unused; grant numbers never reach the output.
    let chunks = identities.len().div_ceil(CHUNK);
    let (parts, (index, repeats)) = beside(
        chunks,
        |c| chunk_entries(chunk(identities, c), policy, &group_info),
        || {
            let mut repeats: Vec<usize> = Vec::new();
            let index = IdentityIndex::build(identities, |position, first| {
                if !first {
                    repeats.push(position);
                }
            });
            (index, repeats)
        },
    );
    let mut entries: Vec<Entry> = Vec::with_capacity(identities.len());
    let mut grant_of: FxHashMap<Vec<u32>, u32> = FxHashMap::default();
    let mut grants: Vec<Grant> = Vec::new();
    for ChunkEntries {
        entries: local,
        applied,
    } in parts
    {
        // Chunk grant number → grant number.
        let global: Vec<Option<u32>> = applied
            .into_iter()
            .map(|applied| match grant_of.get(applied.as_slice()) {
                Some(&g) => Some(g),
                None => {
                    let g = u32::try_from(grants.len()).ok()?;
                    grants.push(grant(&applied, policy));
                    grant_of.insert(applied, g);
                    Some(g)
                }
            })
            .collect();
        entries.extend(local.into_iter().map(|entry| match entry {
            Entry::Active(g) => match global.get(g as usize) {
                Some(&Some(g)) => Entry::Active(g),
                _ => Entry::Repeat,
            },
            other => other,
        }));
    }
    for position in repeats {
        if let Some(entry) = entries.get_mut(position) {
            *entry = Entry::Repeat;
        }
    }
    let (mut active_len, mut inactive_len) = (0, 0);
    for entry in &entries {
        match entry {
            Entry::Active(_) => active_len += 1,
            Entry::Inactive(_) => inactive_len += 1,
            Entry::Repeat => {}
        }
    }
    let inner = Arc::new(Inner {
        index,
        entries,
        grants,
        active_len,
        inactive_len,
        manage_roles: policy.manage_roles,
    });
    DesiredState {
        active: ActiveIdentities(Arc::clone(&inner)),
        inactive: InactiveIdentities(inner),
        managed_groups,
    }
}

/// Items per task given to the two threads (identities, links): small enough that
/// the threads finish close together, large enough that a task's overhead (and a
/// desired-state chunk's own numbering of grants) is noise.
pub(crate) const CHUNK: usize = 1 << 14;

/// The entries of a run of identities; `Entry::Active` holds an index into
/// `applied`, the distinct sets of mapping indices in the order first met.
struct ChunkEntries {
    entries: Vec<Entry>,
    applied: Vec<Vec<u32>>,
}

fn chunk_entries(
    identities: &[Identity],
    policy: &PolicySettings,
    group_info: &FxHashMap<&str, (bool, Vec<u32>)>,
) -> ChunkEntries {
    let mut number_of: FxHashMap<Vec<u32>, u32> = FxHashMap::default();
    let mut numbered: Vec<Vec<u32>> = Vec::new();
    let mut applied: Vec<u32> = Vec::new();
    let entries = identities
        .iter()
        .map(|identity| {
            let reason = match identity.status {
                IdentityStatus::Suspended => Some(InactiveReason::Suspended),
                IdentityStatus::Deprovisioned => Some(InactiveReason::Deprovisioned),
                IdentityStatus::Active => None,
            };
            if let Some(reason) = reason {
                return Entry::Inactive(reason);
            }
            let mut in_scope = policy.scope_groups.is_empty();
            applied.clear();
            for group in &identity.groups {
                if let Some((scope, indices)) = group_info.get(group.as_str()) {
                    in_scope |= *scope;
                    applied.extend_from_slice(indices);
                }
            }
            if !in_scope {
                return Entry::Inactive(InactiveReason::OutOfScope);
            }
            // A mapping applies once however often its group is listed.
            applied.sort_unstable();
            applied.dedup();
            match number_of.get(applied.as_slice()) {
                Some(&n) => Entry::Active(n),
                None => match u32::try_from(numbered.len()) {
                    Ok(n) => {
                        numbered.push(applied.clone());
                        number_of.insert(applied.clone(), n);
                        Entry::Active(n)
                    }
                    Err(_) => Entry::Repeat,
                },
            }
        })
        .collect();
    ChunkEntries {
        entries,
        applied: numbered,
    }
}

/// Why this one identity must not have workspace access, if it must not: the
/// same rule [`desired_state`] applies, for callers that look at a few identities
/// (the daemon's sweep) rather than a whole directory.
pub fn access_loss(identity: &Identity, policy: &PolicySettings) -> Option<InactiveReason> {
    let scope: FxHashMap<&str, ()> = policy
        .scope_groups
        .iter()
        .map(|g| (g.as_str(), ()))
        .collect();
    inactive_reason(identity, policy, &scope)
}

fn inactive_reason(
    identity: &Identity,
    policy: &PolicySettings,
    scope: &FxHashMap<&str, ()>,
) -> Option<InactiveReason> {
    match identity.status {
        IdentityStatus::Suspended => Some(InactiveReason::Suspended),
        IdentityStatus::Deprovisioned => Some(InactiveReason::Deprovisioned),
        IdentityStatus::Active => {
            let in_scope = policy.scope_groups.is_empty()
                || identity
                    .groups
                    .iter()
                    .any(|g| scope.contains_key(g.as_str()));
            (!in_scope).then_some(InactiveReason::OutOfScope)
        }
    }
}

/// Role, groups and justification for the mappings at `applied` (ascending indices,
/// so justification lines keep the mappings' order).
fn grant(applied: &[u32], policy: &PolicySettings) -> Grant {
    let applied: Vec<&Mapping> = applied
        .iter()
        .filter_map(|&i| policy.mappings.get(i as usize))
        .collect();
    let role = applied
        .iter()
        .map(|m| m.role)
        .max()
        .unwrap_or(policy.default_role);
    let justification = if applied.is_empty() {
        vec!["default role".to_owned()]
    } else {
        applied
            .iter()
            .map(|m| format!("{} → {}", m.group, m.role))
            .collect()
    };
    Grant {
        role,
        groups: Arc::new(applied.iter().map(|m| m.workspace_group.clone()).collect()),
        justification: Justification(Arc::new(justification)),
    }
}

/// A directory group name as `safety.protected_groups` is compared: trimmed,
/// composed (NFC, as every group name is once read) and without regard to case
/// (full Unicode lower-casing).
pub fn fold_group_name(name: &str) -> String {
    crate::model::compose(name.trim()).to_lowercase()
}

pub use crate::model::Exception;

/// Protected accounts: exact userNames or glob patterns (`*` any run of characters,
/// `?` exactly one), all compared case-insensitively because workspaces fold
/// userName case; and the exceptions in force at the time they were given
/// ([`Protected::with_exceptions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Lower-cased patterns, as chars so `?` matches one character, not one byte.
    patterns: Vec<Pattern>,
    /// Lower-cased names taken from the directory, compared whole: a `*` that a
    /// person puts in their own email is a character, not a pattern that would
    /// protect everyone else.
    names: HashSet<String>,
    /// Exceptions not yet ended, by folded userName.
    exceptions: HashMap<String, Exception>,
    /// People the directory no longer has, by identity id, under the name the
    /// deprovisioning ledger keeps of them, when an exception in force names it
    /// ([`Protected::with_departed`]).
    departed: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    chars: Vec<char>,
    /// Without `*` the folded name has exactly this many characters.
    fixed_len: Option<usize>,
}

impl Protected {
    pub fn new(patterns: &[String]) -> Protected {
        Protected {
            patterns: patterns
                .iter()
                .map(|p| {
                    let chars: Vec<char> = crate::model::compose(p.trim())
                        .chars()
                        .flat_map(char::to_lowercase)
                        .collect();
                    let fixed_len = (!chars.contains(&'*')).then_some(chars.len());
                    Pattern { chars, fixed_len }
                })
                .collect(),
            names: HashSet::new(),
            exceptions: HashMap::new(),
            departed: HashMap::new(),
        }
    }

    /// Whether any exception is in force.
    pub fn has_exceptions(&self) -> bool {
        !self.exceptions.is_empty()
    }

    /// Whether an exception in force names `user_name` (compared folded),
    /// permanent protection aside.
    pub fn exception_names(&self, user_name: &str) -> bool {
        !self.exceptions.is_empty() && self.exceptions.contains_key(&fold_user_name(user_name))
    }

    /// Adds people the directory no longer has (`(identity id, userName)`), as
    /// the ledger remembers them, whose name an exception in force names.
    /// Deleted, a person is known to the plan by their account's link alone,
    /// and that account's own userName need not be the directory's the
    /// exception names: the reconcile would deactivate the account the sweep
    /// keeps. Not for permanent protection, which a person deleted from the
    /// directory loses, as a protected group's member who left it does.
    pub fn with_departed(
        mut self,
        people: impl IntoIterator<Item = (String, String)>,
    ) -> Protected {
        for (identity_id, user_name) in people {
            if self.exception_names(&user_name) {
                self.departed
                    .insert(identity_id, user_name.trim().to_owned());
            }
        }
        self
    }

    /// The people the directory no longer has that an exception keeps, by
    /// identity id, with the name it names ([`Protected::with_departed`]).
    pub fn departed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.departed
            .iter()
            .map(|(identity_id, user_name)| (identity_id.as_str(), user_name.as_str()))
    }

    /// The name under which an exception keeps a person the directory no
    /// longer has ([`Protected::with_departed`]).
    pub fn departed_name(&self, identity_id: &str) -> Option<&str> {
        self.departed.get(identity_id).map(String::as_str)
    }

    /// Adds the members of the directory groups `groups` (by name, case-insensitively,
    /// e.g. "IT Admins") as exact names: their directory userName and email, so
    /// an account matched by either is protected too. A person stops being protected
    /// only when the directory says they left the group.
    pub fn with_members_of(
        mut self,
        groups: &[String],
        directory: &DirectorySnapshot,
    ) -> Protected {
        if groups.is_empty() {
            return self;
        }
        let wanted: BTreeSet<String> = groups.iter().map(|g| fold_group_name(g)).collect();
        for identity in &directory.identities {
            if identity
                .groups
                .iter()
                .any(|g| wanted.contains(&fold_group_name(g)))
            {
                for name in std::iter::once(&identity.user_name).chain(identity.email.as_ref()) {
                    self.names.insert(fold_user_name(name));
                }
            }
        }
        self
    }

    /// Adds the exceptions that have not ended at `now` (an exception ends at its
    /// `until`). Two for one name: the one that ends last.
    pub fn with_exceptions(
        mut self,
        exceptions: &[Exception],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Protected {
        for exception in exceptions.iter().filter(|e| e.until > now) {
            let key = fold_user_name(&exception.user_name);
            match self.exceptions.get(&key) {
                Some(kept) if kept.until >= exception.until => {}
                _ => {
                    self.exceptions.insert(key, exception.clone());
                }
            }
        }
        self
    }

    /// The exception in force for `user_name`, compared as [`Protected::matches`]
    /// compares, when no permanent protection ([`Protected::permanently`]) covers
    /// it already.
    pub fn exception_for(&self, user_name: &str) -> Option<&Exception> {
        if self.exceptions.is_empty() {
            return None;
        }
        self.exceptions
            .get(&fold_user_name(user_name))
            .filter(|_| !self.permanently(user_name))
    }

    /// The exception in force for a person the directory no longer has, by the
    /// name the ledger keeps of them ([`Protected::with_departed`]), protected
    /// for good or not: deleted, a person loses permanent protection, so the
    /// exception is what keeps their account, until its end.
    pub fn exception_for_departed(&self, user_name: &str) -> Option<&Exception> {
        if self.exceptions.is_empty() {
            return None;
        }
        self.exceptions.get(&fold_user_name(user_name))
    }

    /// The exceptions in force that name no account of `workspace` and no person
    /// of `directory` by userName, sorted by name: they keep nothing. A typo, or
    /// a person whose account and directory userName are both another name;
    /// either way the access HR or legal asked to keep would be taken away.
    /// `None` when it cannot be told: from an incomplete directory read a person
    /// absent may still be there. (Told as none, it would also resolve the
    /// alert a whole read raised.)
    pub fn exceptions_naming_nobody(
        &self,
        directory: &DirectorySnapshot,
        workspace: &crate::model::WorkspaceSnapshot,
    ) -> Option<Vec<Exception>> {
        if self.exceptions.is_empty() {
            return Some(Vec::new());
        }
        let mut left: HashMap<&str, &Exception> = self
            .exceptions
            .iter()
            .map(|(name, exception)| (name.as_str(), exception))
            .collect();
        let names = workspace
            .accounts
            .iter()
            .map(|a| a.user_name.as_str())
            .chain(directory.identities.iter().map(|i| i.user_name.as_str()))
            .chain(self.departed.values().map(String::as_str));
        for name in names {
            if left.is_empty() {
                break;
            }
            left.remove(fold_user_name(name).as_str());
        }
        let mut nobody: Vec<Exception> = left.into_values().cloned().collect();
        nobody.sort_by(|a, b| a.user_name.cmp(&b.user_name));
        // Everyone named was found: a read cut short lists fewer people, never
        // more, so that holds for it too.
        (nobody.is_empty() || directory.complete).then_some(nobody)
    }

    /// Protected (a name, a pattern or a protected group's member) or under an
    /// exception in force: seatwarden leaves the account alone.
    pub fn matches(&self, user_name: &str) -> bool {
        self.permanently(user_name) || self.exception_names(user_name)
    }

    /// Protected for good, not only by an exception: case-insensitive (full
    /// Unicode lower-casing, character by character), composed (NFC,
    /// [`crate::model::compose`]) and without leading or trailing white space (a
    /// workspace account `"admin@x.com "` is the protected `admin@x.com`); an
    /// ASCII name is matched without allocating.
    pub fn permanently(&self, user_name: &str) -> bool {
        let user_name = user_name.trim();
        if !self.names.is_empty() && self.names.contains(&fold_user_name(user_name)) {
            return true;
        }
        if self.patterns.is_empty() {
            return false;
        }
        if user_name.is_ascii() {
            self.patterns.iter().any(|p| {
                p.fixed_len.is_none_or(|n| n == user_name.len())
                    && glob_matches(
                        &p.chars,
                        user_name
                            .bytes()
                            .map(|b| char::from(b.to_ascii_lowercase())),
                    )
            })
        } else {
            self.patterns.iter().any(|p| {
                glob_matches(
                    &p.chars,
                    crate::model::compose(user_name)
                        .chars()
                        .flat_map(char::to_lowercase),
                )
            })
        }
    }
}

/// A name folded the way [`Protected`] compares it: trimmed, composed (NFC), then
/// full Unicode lower-casing, character by character. Each step makes more names
/// match, which is the safe side for protection.
pub fn fold_user_name(name: &str) -> String {
    crate::model::compose(name.trim())
        .chars()
        .flat_map(char::to_lowercase)
        .collect()
}

/// Iterative glob match with single-star backtracking: linear in practice and no
/// recursion depth to worry about with hostile patterns. `text` is cloned to
/// remember the backtracking point.
fn glob_matches<I: Iterator<Item = char> + Clone>(pattern: &[char], mut text: I) -> bool {
    let mut p = 0;
    let mut star: Option<(usize, I)> = None;
    loop {
        let mut after = text.clone();
        let Some(c) = after.next() else { break };
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, text.clone()));
                p += 1;
            }
            Some(&pc) if pc == '?' || pc == c => {
                p += 1;
                text = after;
            }
            _ => match &mut star {
                Some((sp, st)) => {
                    p = *sp + 1;
                    st.next();
                    text = st.clone();
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn identity(id: &str, status: IdentityStatus, groups: &[&str]) -> Identity {
        Identity {
            id: id.into(),
            user_name: format!("{id}@example.com"),
            email: Some(format!("{id}@example.com")),
            given_name: Some("Given".into()),
            family_name: None,
            display_name: None,
            status,
            department: None,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn mapping(group: &str, workspace_group: &str, role: Role) -> Mapping {
        Mapping {
            group: group.into(),
            workspace_group: workspace_group.into(),
            role,
        }
    }

    fn settings(scope: &[&str]) -> PolicySettings {
        PolicySettings {
            scope_groups: scope.iter().map(|g| (*g).to_owned()).collect(),
            default_role: Role::Viewer,
            mappings: vec![
                mapping("Engineering", "Eng", Role::Editor),
                mapping("Leads", "Eng", Role::Maintainer),
                mapping("Design", "Design", Role::Commenter),
            ],
            manage_roles: true,
        }
    }

    fn directory(identities: Vec<Identity>) -> DirectorySnapshot {
        DirectorySnapshot {
            identities,
            complete: true,
        }
    }

    /// Several chunks (so both threads and the grant renumbering take part), with
    /// ids repeated across chunks: every identity gets what it would get alone,
    /// and a repeated id what its first identity gets.
    #[test]
    fn many_chunks_decide_like_one_identity_at_a_time() {
        let policy = settings(&["Staff"]);
        let groups: [&[&str]; 6] = [
            &["Staff"],
            &["Staff", "Engineering"],
            &["Design", "Staff", "Leads"],
            &["Leads", "Engineering", "Staff", "Leads"],
            &["Contractors", "Design"],
            &["Design", "Staff"],
        ];
        let statuses = [
            IdentityStatus::Active,
            IdentityStatus::Active,
            IdentityStatus::Suspended,
            IdentityStatus::Active,
            IdentityStatus::Deprovisioned,
        ];
        let n = 2 * CHUNK + 777;
        let mut identities: Vec<Identity> = (0..n)
            .map(|i| {
                identity(
                    &format!("u{i}"),
                    statuses[i % statuses.len()],
                    groups[(i / 3) % groups.len()],
                )
            })
            .collect();
        // Later identities with the ids of earlier ones, in later chunks, and one
        // repeat inside a chunk; only the first of an id counts.
        for (at, id) in [(CHUNK + 5, 3), (2 * CHUNK + 1, 10), (40, 7)] {
            identities[at] = identity(&format!("u{id}"), IdentityStatus::Active, &["Staff"]);
        }
        let dir = directory(identities);
        let state = desired_state(&dir, &policy);
        // What one identity alone gets, by status and groups (ids do not matter):
        // role, workspace groups and justification, or why it has no access.
        type Alone = (
            Option<(Option<Role>, Arc<BTreeSet<String>>, Justification)>,
            Option<InactiveReason>,
        );
        let mut alone: HashMap<(IdentityStatus, Vec<String>), Alone> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let (mut active, mut inactive) = (0, 0);
        for identity in &dir.identities {
            if !seen.insert(identity.id.as_str()) {
                continue;
            }
            let key = (identity.status, identity.groups.clone());
            let (want, reason) = alone.entry(key).or_insert_with(|| {
                let one = directory(vec![identity.clone()]);
                let expected = desired_state(&one, &policy);
                let want = expected
                    .active
                    .get(&identity.id)
                    .map(|a| (a.spec.role, a.groups, a.justification));
                (want, expected.inactive.get(&identity.id))
            });
            let got = state.active.get(&identity.id);
            assert_eq!(got.is_some(), want.is_some(), "{}", identity.id);
            if let (Some(got), Some((role, groups, justification))) = (got, want.as_ref()) {
                assert_eq!(got.spec.role, *role, "{}", identity.id);
                assert_eq!(got.groups, *groups, "{}", identity.id);
                assert_eq!(got.justification, *justification, "{}", identity.id);
                assert_eq!(got.spec.external_id, identity.id);
                active += 1;
            }
            assert_eq!(state.inactive.get(&identity.id), *reason, "{}", identity.id);
            inactive += usize::from(reason.is_some());
        }
        assert_eq!(
            (state.active.len(), state.inactive.len()),
            (active, inactive)
        );
        assert_eq!(state.active.keys().count(), active);
        assert_eq!(state.inactive.keys().count(), inactive);
    }

    #[test]
    fn statuses_and_scope_decide_active_or_inactive() {
        let dir = directory(vec![
            identity("a", IdentityStatus::Active, &["Staff"]),
            identity("s", IdentityStatus::Suspended, &["Staff"]),
            identity("d", IdentityStatus::Deprovisioned, &["Staff"]),
            identity("o", IdentityStatus::Active, &["Contractors"]),
        ]);
        let state = desired_state(&dir, &settings(&["Staff"]));
        assert_eq!(state.active.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(state.inactive["s"], InactiveReason::Suspended);
        assert_eq!(state.inactive["d"], InactiveReason::Deprovisioned);
        assert_eq!(state.inactive["o"], InactiveReason::OutOfScope);

        let unscoped = desired_state(&dir, &settings(&[]));
        assert!(unscoped.active.contains_key("o"));
        assert_eq!(unscoped.inactive.len(), 2);
    }

    #[test]
    fn inactive_reasons_read_as_sentences() {
        assert_eq!(
            InactiveReason::Suspended.to_string(),
            "identity is suspended in the directory"
        );
        assert_eq!(
            InactiveReason::OutOfScope.to_string(),
            "identity is not in any scope group"
        );
    }

    #[test]
    fn scope_group_names_are_case_sensitive() {
        let dir = directory(vec![identity("a", IdentityStatus::Active, &["staff"])]);
        let state = desired_state(&dir, &settings(&["Staff"]));
        assert_eq!(state.inactive["a"], InactiveReason::OutOfScope);
    }

    #[test]
    fn highest_mapped_role_wins_and_groups_union() {
        let dir = directory(vec![
            identity(
                "a",
                IdentityStatus::Active,
                &["Engineering", "Leads", "Design"],
            ),
            identity("b", IdentityStatus::Active, &["Other"]),
        ]);
        let state = desired_state(&dir, &settings(&[]));
        let a = &state.active.get("a").unwrap();
        assert_eq!(a.spec.role, Some(Role::Maintainer));
        assert_eq!(
            a.groups.iter().collect::<Vec<_>>(),
            ["Design", "Eng"].iter().collect::<Vec<_>>()
        );
        assert_eq!(
            a.justification,
            [
                "Engineering → Editor",
                "Leads → Maintainer",
                "Design → Commenter"
            ]
        );
        let b = &state.active.get("b").unwrap();
        assert_eq!(b.spec.role, Some(Role::Viewer));
        assert!(b.groups.is_empty());
        assert_eq!(b.justification, ["default role"]);
        assert_eq!(
            state.managed_groups.iter().collect::<Vec<_>>(),
            ["Design", "Eng"].iter().collect::<Vec<_>>()
        );
    }

    #[test]
    // The spec borrows (`Option<&str>`), so `as_deref` is a no-op kept from the owned days.
    #[allow(clippy::needless_option_as_deref)]
    fn spec_copies_directory_attributes() {
        let dir = directory(vec![identity("a", IdentityStatus::Active, &[])]);
        let spec = &desired_state(&dir, &settings(&[]))
            .active
            .get("a")
            .unwrap()
            .spec;
        assert_eq!(spec.user_name, "a@example.com");
        assert_eq!(spec.external_id, "a");
        assert_eq!(spec.given_name.as_deref(), Some("Given"));
        assert_eq!(spec.family_name, None);
        assert_eq!(spec.email.as_deref(), Some("a@example.com"));
    }

    #[test]
    fn unmanaged_roles_leave_role_out_of_the_spec() {
        let dir = directory(vec![identity("a", IdentityStatus::Active, &["Leads"])]);
        let mut policy = settings(&[]);
        policy.manage_roles = false;
        let state = desired_state(&dir, &policy);
        assert_eq!(state.active.get("a").unwrap().spec.role, None);
        assert!(state.active.get("a").unwrap().groups.contains("Eng"));
    }

    #[test]
    fn duplicate_identity_ids_keep_the_first() {
        let dir = directory(vec![
            identity("a", IdentityStatus::Suspended, &[]),
            identity("a", IdentityStatus::Active, &[]),
        ]);
        let state = desired_state(&dir, &settings(&[]));
        assert!(state.active.is_empty());
        assert_eq!(state.inactive["a"], InactiveReason::Suspended);
    }

    #[test]
    fn an_exception_protects_its_name_until_it_ends() {
        use chrono::TimeZone;
        let at = |h| chrono::Utc.with_ymd_and_hms(2026, 12, 15, h, 0, 0).unwrap();
        let exception = |name: &str, until, reason: &str| Exception {
            user_name: name.to_owned(),
            until,
            reason: reason.to_owned(),
        };
        let exceptions = [
            exception("Dana@Example.com", at(17), "handover"),
            exception("dana@example.com", at(12), "earlier entry"),
            exception("root@example.com", at(17), "also protected"),
        ];
        let protected = Protected::new(&["root@*".to_owned()]);
        let before = protected.clone().with_exceptions(&exceptions, at(11));
        assert!(before.matches(" DANA@example.com"));
        assert!(!before.permanently("dana@example.com"));
        assert_eq!(
            before
                .exception_for("dana@EXAMPLE.com")
                .map(|e| e.reason.as_str()),
            Some("handover"),
            "two for one name: the one that ends last"
        );
        assert!(before.matches("root@example.com"));
        assert!(
            before.exception_for("root@example.com").is_none(),
            "protected for good: no exception to tell"
        );
        assert!(!before.matches("erin@example.com"));
        let at_the_end = protected.with_exceptions(&exceptions, at(17));
        assert!(!at_the_end.matches("dana@example.com"));
        assert!(at_the_end.exception_for("dana@example.com").is_none());
    }

    /// People the directory no longer has are kept under the name their ledger
    /// episode keeps only when an exception in force names it: not for a
    /// permanent protection (which a person deleted from the directory loses),
    /// nor for a name nothing covers.
    #[test]
    fn departed_people_are_known_only_by_an_exception_naming_them() {
        use chrono::TimeZone;
        let at = |h| chrono::Utc.with_ymd_and_hms(2026, 12, 15, h, 0, 0).unwrap();
        let kept = Exception {
            user_name: "Dana@Example.com".to_owned(),
            until: at(17),
            reason: "handover".to_owned(),
        };
        let protected = Protected::new(&["root@*".to_owned()]).with_exceptions(&[kept], at(11));
        let departed = protected.with_departed([
            ("d".to_owned(), " dana@example.com ".to_owned()),
            ("r".to_owned(), "root@example.com".to_owned()),
            ("e".to_owned(), "erin@example.com".to_owned()),
        ]);
        assert_eq!(departed.departed_name("d"), Some("dana@example.com"));
        assert_eq!(departed.departed_name("r"), None, "protected for good");
        assert_eq!(departed.departed_name("e"), None);
        assert_eq!(departed.departed().count(), 1);
    }

    /// An exception naming neither a workspace account nor a person in the
    /// directory keeps nothing: said, so the typo is fixed before the leaver it
    /// was meant for loses access. Not from an incomplete read, where a person
    /// missing is not gone; not for an exception that ended.
    #[test]
    fn exceptions_naming_no_account_and_no_person_are_told() {
        use chrono::TimeZone;
        let at = |h| chrono::Utc.with_ymd_and_hms(2026, 12, 15, h, 0, 0).unwrap();
        let exception = |name: &str, until| Exception {
            user_name: name.to_owned(),
            until,
            reason: "handover".to_owned(),
        };
        let exceptions = [
            exception("A@Example.com", at(17)),
            exception("orphan@example.com", at(17)),
            exception("dnaa@example.com", at(17)),
            exception("ended@example.com", at(10)),
            exception("b@exmaple.com", at(17)),
        ];
        let protected = Protected::default().with_exceptions(&exceptions, at(11));
        let mut dir = directory(vec![
            identity("a", IdentityStatus::Active, &[]),
            identity("b", IdentityStatus::Suspended, &[]),
        ]);
        let workspace = crate::model::WorkspaceSnapshot {
            accounts: vec![crate::model::Account {
                id: "7".into(),
                user_name: "Orphan@example.com".into(),
                external_id: None,
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                active: true,
                roles: Vec::new(),
            }],
            groups: Vec::new(),
        };
        let names = |nobody: Vec<Exception>| -> Vec<String> {
            nobody.into_iter().map(|e| e.user_name).collect()
        };
        assert_eq!(
            names(
                protected
                    .exceptions_naming_nobody(&dir, &workspace)
                    .unwrap()
            ),
            ["b@exmaple.com", "dnaa@example.com"]
        );
        dir.complete = false;
        assert_eq!(protected.exceptions_naming_nobody(&dir, &workspace), None);
        assert_eq!(
            Protected::default().exceptions_naming_nobody(&dir, &workspace),
            Some(Vec::new())
        );
        // Each found all the same: none names nobody, whatever else was missed.
        let found =
            Protected::default().with_exceptions(&[exception("a@example.com", at(17))], at(11));
        assert_eq!(
            found.exceptions_naming_nobody(&dir, &workspace),
            Some(Vec::new())
        );
    }

    #[test]
    fn protected_matches_exact_names_and_globs_case_insensitively() {
        let protected = Protected::new(&[
            "Root@Example.com".to_owned(),
            "breakglass-*@example.com".to_owned(),
            "adm?n".to_owned(),
        ]);
        assert!(protected.matches("root@example.com"));
        assert!(protected.matches("BREAKGLASS-1@example.com"));
        assert!(protected.matches("breakglass-@example.com"));
        assert!(protected.matches("admin"));
        assert!(protected.matches("ADMÍN"));
        assert!(!protected.matches("admiin"));
        assert!(!protected.matches("root@example.co"));
        assert!(!protected.matches("xbreakglass-1@example.com"));
        assert!(!Protected::new(&[]).matches(""));
        let directory = DirectorySnapshot {
            identities: vec![
                Identity {
                    id: "1".into(),
                    user_name: "Admin.One@example.com".into(),
                    email: Some("a1@example.com".into()),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    status: IdentityStatus::Active,
                    department: None,
                    groups: vec!["IT Admins".into()],
                },
                Identity {
                    id: "2".into(),
                    user_name: "staff@example.com".into(),
                    email: None,
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    status: IdentityStatus::Active,
                    department: None,
                    groups: vec!["Staff".into()],
                },
                // Directory values are names, not patterns, even when a person
                // can edit their own email.
                Identity {
                    id: "3".into(),
                    user_name: "it-?@example.com".into(),
                    email: Some("*@example.com".into()),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    status: IdentityStatus::Active,
                    department: None,
                    groups: vec!["IT Admins".into()],
                },
            ],
            complete: true,
        };
        let by_group = Protected::default().with_members_of(&["it admins".into()], &directory);
        assert!(by_group.matches("admin.one@EXAMPLE.com"));
        assert!(by_group.matches("a1@example.com"));
        assert!(by_group.matches("*@EXAMPLE.com"));
        assert!(by_group.matches("IT-?@example.com"));
        assert!(!by_group.matches("staff@example.com"));
        assert!(!by_group.matches("it-x@example.com"));
        let both = Protected::new(&["root@*".to_owned()])
            .with_members_of(&["IT Admins".into()], &directory);
        assert!(both.matches("root@example.com"));
        assert!(both.matches("a1@example.com"));
        assert!(!both.matches("staff@example.com"));
        assert!(Protected::new(&["*".to_owned()]).matches(""));
        assert!(Protected::new(&["a*b*c".to_owned()]).matches("aXbYbZc"));
        assert!(!Protected::new(&["a*b*c".to_owned()]).matches("aXbYbZ"));
    }

    /// A protected name written composed protects the account stored decomposed
    /// (`e` + U+0301), and the other way round, for patterns and directory names.
    #[test]
    fn protected_names_match_whichever_way_an_accent_is_written() {
        let patterns = Protected::new(&["jos\u{e9}@*".to_owned(), "adm?n".to_owned()]);
        assert!(patterns.matches("JOSE\u{301}@example.com"));
        assert!(
            patterns.matches("adme\u{301}n"),
            "one character, as it renders"
        );
        let decomposed = Protected::new(&["rene\u{301}@example.com".to_owned()]);
        assert!(decomposed.matches("REN\u{c9}@example.com"));
        let mut zoe = identity("zoe", IdentityStatus::Active, &["IT Admins"]);
        zoe.user_name = "Zoe\u{308}@example.com".into();
        let directory = DirectorySnapshot {
            identities: vec![zoe],
            complete: true,
        };
        let by_group = Protected::default().with_members_of(&["IT Admins".into()], &directory);
        assert!(by_group.matches("zo\u{eb}@example.com"));
    }

    /// A workspace account whose userName carries white space at either end is
    /// the protected person's account all the same: matching trims both sides
    /// (with `unmatched_accounts = "deactivate"` it was an orphan to deactivate).
    #[test]
    fn protected_names_match_with_white_space_at_either_end() {
        let patterns = Protected::new(&["admin@example.com".to_owned(), " ops-* ".to_owned()]);
        assert!(patterns.matches("admin@example.com "));
        assert!(patterns.matches("\tAdmin@Example.com"));
        assert!(patterns.matches("ops-1@example.com "));
        assert!(Protected::new(&["jos\u{e9}@*".to_owned()]).matches(" JOS\u{c9}@example.com "));
        assert!(!patterns.matches("admin @example.com"));
        let mut zoe = identity("zoe", IdentityStatus::Active, &["IT Admins"]);
        zoe.user_name = " zoe@example.com".into();
        let directory = DirectorySnapshot {
            identities: vec![zoe],
            complete: true,
        };
        let by_group = Protected::default().with_members_of(&["IT Admins".into()], &directory);
        assert!(by_group.matches("ZOE@example.com  "));
        assert!(by_group.matches("zoe@example.com"));
    }
}
