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
//!
//! [`Protected`] lives here too because it is part of the policy a plan obeys:
//! break-glass accounts that seatwarden never touches.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, Index};
use std::sync::Arc;

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

    pub(crate) fn has_room_for(&self, len: usize) -> bool {
        len.saturating_mul(2) <= self.slots.len()
    }

    /// Rebuilds with room for `capacity` keys from the hashes of the `len` stored ones.
    pub(crate) fn rebuild(&mut self, capacity: usize, len: usize, hash_at: impl Fn(usize) -> u64) {
        *self = StrIndex::with_capacity(capacity);
        let mask = self.slots.len() - 1;
        for position in 0..len {
            let hash = hash_at(position);
            let mut pos = hash as usize & mask;
            while self.slots.get(pos).is_some_and(|s| s.0 != 0) {
                pos = (pos + 1) & mask;
            }
            self.fill(pos, position, hash);
        }
    }
}

/// A value an [`IdMap`] holds; one that carries its own id needs no key stored
/// beside it.
pub trait IdValue {
    fn own_id(&self) -> Option<&str> {
        None
    }
}

impl IdValue for DesiredAccount<'_> {
    fn own_id(&self) -> Option<&str> {
        Some(self.spec.external_id)
    }
}

impl IdValue for InactiveReason {}

/// Identity id → value, in insertion (directory) order, borrowing the ids from
/// the snapshot. The index is a [`StrIndex`] over entry positions.
#[derive(Debug, Clone)]
pub struct IdMap<'a, V> {
    values: Vec<V>,
    /// Ids of values without their own, by position.
    keys: Vec<&'a str>,
    index: StrIndex,
}

impl<V> Default for IdMap<'_, V> {
    fn default() -> Self {
        IdMap {
            values: Vec::new(),
            keys: Vec::new(),
            index: StrIndex::default(),
        }
    }
}

impl<V: IdValue + PartialEq> PartialEq for IdMap<'_, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<V: IdValue + Eq> Eq for IdMap<'_, V> {}

impl<'a, V: IdValue> IdMap<'a, V> {
    fn with_capacity(capacity: usize) -> Self {
        IdMap {
            values: Vec::with_capacity(capacity),
            keys: Vec::new(),
            index: StrIndex::with_capacity(capacity),
        }
    }

    fn key_at(&self, position: usize) -> Option<&str> {
        let value = self.values.get(position)?;
        value.own_id().or_else(|| self.keys.get(position).copied())
    }

    fn find(&self, id: &str, hash: u64) -> Result<usize, usize> {
        self.index.find(id, hash, |p| self.key_at(p))
    }

    /// Inserts unless the id is present; returns whether it inserted. A value with
    /// its own id must carry `id`.
    fn insert_new(&mut self, id: &'a str, value: V) -> bool {
        let len = self.values.len();
        if !self.index.has_room_for(len + 1) {
            let grown = (len + 1) * 2;
            let hashes: Vec<u64> = (0..len)
                .map(|p| self.key_at(p).map_or(0, fx_hash))
                .collect();
            self.index
                .rebuild(grown, len, |p| hashes.get(p).copied().unwrap_or(0));
        }
        let hash = fx_hash(id);
        let Err(slot) = self.find(id, hash) else {
            return false;
        };
        if !self.index.fill(slot, len, hash) {
            return false;
        }
        if value.own_id().is_none() {
            self.keys.resize(len, "");
            self.keys.push(id);
        } else if !self.keys.is_empty() {
            self.keys.push("");
        }
        self.values.push(value);
        true
    }

    pub fn get(&self, id: &str) -> Option<&V> {
        if self.values.is_empty() {
            return None;
        }
        let position = self.find(id, fx_hash(id)).ok()?;
        self.values.get(position)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Ids in directory order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        (0..self.values.len()).map(|p| self.key_at(p).unwrap_or_default())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.keys().zip(&self.values)
    }
}

impl<V: IdValue, Q: Borrow<str> + ?Sized> Index<&Q> for IdMap<'_, V> {
    type Output = V;

    #[allow(clippy::panic)]
    fn index(&self, id: &Q) -> &V {
        match self.get(id.borrow()) {
            Some(v) => v,
            None => panic!("no entry for id {:?}", id.borrow()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState<'a> {
    /// Identity id → desired account, for identities in scope and active.
    pub active: IdMap<'a, DesiredAccount<'a>>,
    /// Identity id → why it must not have access.
    pub inactive: IdMap<'a, InactiveReason>,
    /// Every workspace group any mapping names; only these groups' memberships are
    /// managed.
    pub managed_groups: BTreeSet<String>,
}

/// What a set of applied mappings gives: computed once per distinct set.
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
    let mut state = DesiredState {
        managed_groups: policy
            .mappings
            .iter()
            .map(|m| m.workspace_group.clone())
            .collect(),
        active: IdMap::with_capacity(directory.identities.len()),
        inactive: IdMap::default(),
    };
    // Directory group name → indices of the mappings that name it.
    let mut mappings_of: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
    for (index, m) in policy.mappings.iter().enumerate() {
        if let Ok(index) = u32::try_from(index) {
            mappings_of.entry(m.group.as_str()).or_default().push(index);
        }
    }
    let scope: FxHashMap<&str, ()> = policy
        .scope_groups
        .iter()
        .map(|g| (g.as_str(), ()))
        .collect();
    let mut grants: FxHashMap<Vec<u32>, Grant> = FxHashMap::default();
    let mut applied: Vec<u32> = Vec::new();
    for identity in &directory.identities {
        let id = identity.id.as_str();
        if state.inactive.contains_key(id) {
            continue;
        }
        if let Some(reason) = inactive_reason(identity, policy, &scope) {
            if !state.active.contains_key(id) {
                state.inactive.insert_new(id, reason);
            }
            continue;
        }
        applied.clear();
        for group in &identity.groups {
            if let Some(indices) = mappings_of.get(group.as_str()) {
                applied.extend_from_slice(indices);
            }
        }
        // A mapping applies once however often its group is listed.
        applied.sort_unstable();
        applied.dedup();
        let grant = match grants.get(applied.as_slice()) {
            Some(grant) => grant,
            None => grants
                .entry(applied.clone())
                .or_insert_with(|| grant(&applied, policy)),
        };
        let account = DesiredAccount {
            spec: DesiredSpec {
                user_name: &identity.user_name,
                external_id: id,
                given_name: identity.given_name.as_deref(),
                family_name: identity.family_name.as_deref(),
                display_name: identity.display_name.as_deref(),
                email: identity.email.as_deref(),
                role: policy.manage_roles.then_some(grant.role),
            },
            groups: Arc::clone(&grant.groups),
            justification: grant.justification.clone(),
        };
        state.active.insert_new(id, account);
    }
    state
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

/// Protected accounts: exact userNames or glob patterns (`*` any run of characters,
/// `?` exactly one), all compared case-insensitively because workspaces fold
/// userName case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Lower-cased patterns, as chars so `?` matches one character, not one byte.
    patterns: Vec<Pattern>,
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
                    let chars: Vec<char> = p.chars().flat_map(char::to_lowercase).collect();
                    let fixed_len = (!chars.contains(&'*')).then_some(chars.len());
                    Pattern { chars, fixed_len }
                })
                .collect(),
        }
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
        let wanted: BTreeSet<String> = groups.iter().map(|g| g.trim().to_lowercase()).collect();
        for identity in &directory.identities {
            if identity
                .groups
                .iter()
                .any(|g| wanted.contains(&g.trim().to_lowercase()))
            {
                for name in std::iter::once(&identity.user_name).chain(identity.email.as_ref()) {
                    // A `*` or `?` in a name acts as a glob: it can only protect more.
                    let chars: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
                    let fixed_len = (!chars.contains(&'*')).then_some(chars.len());
                    self.patterns.push(Pattern { chars, fixed_len });
                }
            }
        }
        self
    }

    /// Case-insensitive (full Unicode lower-casing, character by character), without
    /// allocating.
    pub fn matches(&self, user_name: &str) -> bool {
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
            self.patterns
                .iter()
                .any(|p| glob_matches(&p.chars, user_name.chars().flat_map(char::to_lowercase)))
        }
    }
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
        let a = &state.active["a"];
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
        let b = &state.active["b"];
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
        let spec = &desired_state(&dir, &settings(&[])).active["a"].spec;
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
        assert_eq!(state.active["a"].spec.role, None);
        assert!(state.active["a"].groups.contains("Eng"));
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
            ],
            complete: true,
        };
        let by_group = Protected::default().with_members_of(&["it admins".into()], &directory);
        assert!(by_group.matches("admin.one@EXAMPLE.com"));
        assert!(by_group.matches("a1@example.com"));
        assert!(!by_group.matches("staff@example.com"));
        assert!(Protected::new(&["*".to_owned()]).matches(""));
        assert!(Protected::new(&["a*b*c".to_owned()]).matches("aXbYbZc"));
        assert!(!Protected::new(&["a*b*c".to_owned()]).matches("aXbYbZ"));
    }
}
