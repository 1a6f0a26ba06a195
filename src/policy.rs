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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{AccountSpec, DirectorySnapshot, Identity, IdentityStatus, Role};

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

/// One identity that should have an active workspace account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredAccount {
    pub identity_id: String,
    pub spec: AccountSpec,
    /// Workspace group names (as the mappings spell them).
    pub groups: BTreeSet<String>,
    /// Why the account looks like this, for `explain` and reports: one
    /// "Group → Role" line per mapping that applied, or "default role".
    pub justification: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Identity id → desired account, for identities in scope and active.
    pub active: BTreeMap<String, DesiredAccount>,
    /// Identity id → why it must not have access.
    pub inactive: BTreeMap<String, InactiveReason>,
    /// Every workspace group any mapping names; only these groups' memberships are
    /// managed.
    pub managed_groups: BTreeSet<String>,
}

/// Computes the desired state. When the snapshot holds the same identity id twice,
/// the first occurrence wins (connectors should never do that; this keeps the result
/// deterministic if one does).
pub fn desired_state(directory: &DirectorySnapshot, policy: &PolicySettings) -> DesiredState {
    let mut state = DesiredState {
        managed_groups: policy
            .mappings
            .iter()
            .map(|m| m.workspace_group.clone())
            .collect(),
        ..DesiredState::default()
    };
    for identity in &directory.identities {
        if state.active.contains_key(&identity.id) || state.inactive.contains_key(&identity.id) {
            continue;
        }
        match inactive_reason(identity, policy) {
            Some(reason) => {
                state.inactive.insert(identity.id.clone(), reason);
            }
            None => {
                state
                    .active
                    .insert(identity.id.clone(), desired_account(identity, policy));
            }
        }
    }
    state
}

fn inactive_reason(identity: &Identity, policy: &PolicySettings) -> Option<InactiveReason> {
    match identity.status {
        IdentityStatus::Suspended => Some(InactiveReason::Suspended),
        IdentityStatus::Deprovisioned => Some(InactiveReason::Deprovisioned),
        IdentityStatus::Active => {
            let in_scope = policy.scope_groups.is_empty()
                || policy
                    .scope_groups
                    .iter()
                    .any(|g| identity.groups.contains(g));
            (!in_scope).then_some(InactiveReason::OutOfScope)
        }
    }
}

fn desired_account(identity: &Identity, policy: &PolicySettings) -> DesiredAccount {
    let applied: Vec<&Mapping> = policy
        .mappings
        .iter()
        .filter(|m| identity.groups.contains(&m.group))
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
    DesiredAccount {
        identity_id: identity.id.clone(),
        spec: AccountSpec {
            user_name: identity.user_name.clone(),
            external_id: identity.id.clone(),
            given_name: identity.given_name.clone(),
            family_name: identity.family_name.clone(),
            display_name: identity.display_name.clone(),
            email: identity.email.clone(),
            role: policy.manage_roles.then_some(role),
        },
        groups: applied.iter().map(|m| m.workspace_group.clone()).collect(),
        justification,
    }
}

/// Protected accounts: exact userNames or glob patterns (`*` any run of characters,
/// `?` exactly one), all compared case-insensitively because workspaces fold
/// userName case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Lower-cased patterns, as chars so `?` matches one character, not one byte.
    patterns: Vec<Vec<char>>,
}

impl Protected {
    pub fn new(patterns: &[String]) -> Protected {
        Protected {
            patterns: patterns.iter().map(|p| fold(p)).collect(),
        }
    }

    pub fn matches(&self, user_name: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let name = fold(user_name);
        self.patterns.iter().any(|p| glob_matches(p, &name))
    }
}

fn fold(s: &str) -> Vec<char> {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Iterative glob match with single-star backtracking: linear in practice and no
/// recursion depth to worry about with hostile patterns.
fn glob_matches(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
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
        assert!(Protected::new(&["*".to_owned()]).matches(""));
        assert!(Protected::new(&["a*b*c".to_owned()]).matches("aXbYbZc"));
        assert!(!Protected::new(&["a*b*c".to_owned()]).matches("aXbYbZ"));
    }
}
