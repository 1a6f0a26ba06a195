//! Synthetic directories and workspaces, for benchmarks and tests.
//!
//! [`generate`] builds a directory of `people` identities and the workspace a
//! correct reconciler would have produced from it, then perturbs `drift_percent` of
//! the people. It is deterministic for a seed (a SplitMix64 generator; no `rand`),
//! and the directory depends only on `people`, `groups` and `seed`: the same seed
//! at drift 0 and at drift 5 % gives the same directory and workspaces that differ
//! in exactly the perturbed people.
//!
//! # The directory
//!
//! - Person `n` (from 1) has id `u{n:06}` (`u000001`, …), userName and email
//!   `first.last.n@example.com`, given/family/display name (`"First Last"`) from
//!   small lists, a department, and 1–3 distinct memberships among the mapped groups
//!   (fewer when there are fewer groups; none when `groups` is 0), listed in group
//!   order.
//! - About 3 % are `suspended`, 2 % `deprovisioned`, the rest `active`.
//! - Everyone except about 1 % is also in the scope group [`SCOPE_GROUP`]
//!   (`"Taskade Users"`), listed last. The scope group is not a mapped group.
//! - The directory snapshot is `complete`.
//!
//! # The configuration it assumes
//!
//! - Mappings: directory group `group_names[i]` → workspace group of the same name,
//!   with role `roles[i].1 = ROLE_CYCLE[i % 7]` (Owner, Maintainer, Editor,
//!   Commenter, Collaborator, Participant, Viewer, then Owner again).
//! - Default role [`DEFAULT_ROLE`] (Viewer); `scope_groups = ["Taskade Users"]`.
//!
//! # The converged workspace (drift 0)
//!
//! - One workspace group per mapped group, `id` `g{i+1:04}`, `display_name`
//!   `group_names[i]`, present even when it has no members.
//! - Every person **in scope** has exactly one account; people out of scope have
//!   none. Person `n`'s account has id `a{n:06}` (so ids have gaps where people are
//!   out of scope), `externalId` = the identity id, userName, email, given, family
//!   and display name equal to the identity's, and `roles` = `[role]` where role is
//!   the highest role of the person's mapped groups, else Viewer.
//! - The account is `active` exactly when the identity is `active`: the accounts of
//!   suspended and deprovisioned people exist and are deactivated (`active=false`),
//!   and — as deactivation keeps a person's access for a later reactivation — they
//!   keep the role and group memberships they would have if active.
//! - Each account is a member of the workspace groups of its mapped directory groups
//!   (members are listed in account id order). There are no other accounts.
//!
//! # Drift
//!
//! `round(people × drift_percent / 100)` distinct people are chosen (deterministic
//! for the seed); each gets exactly one perturbation, which changes exactly one
//! account id's state (the account itself or its memberships):
//! - in scope and suspended/deprovisioned: the account is active again (stale access);
//! - out of scope: an active account exists, with role and memberships (stale access);
//! - in scope and active, one of: the account is missing (with its memberships); its
//!   role is another one; it is missing from its first mapped group (a changed
//!   display name when it has none); its display name changed; or an orphan account
//!   `o{n:06}` (userName `former.n@example.com`, `externalId` `x{n:06}`, active,
//!   Viewer, no groups) exists that no identity justifies, the person's own account
//!   being untouched.

use crate::model::{
    Account, DirectorySnapshot, Identity, IdentityStatus, Role, WorkspaceGroup, WorkspaceSnapshot,
};

/// The directory group that puts people in scope.
pub const SCOPE_GROUP: &str = "Taskade Users";

/// The role of people whose groups map to none.
pub const DEFAULT_ROLE: Role = Role::Viewer;

/// Mapped group `i` grants `ROLE_CYCLE[i % 7]`.
pub const ROLE_CYCLE: [Role; 7] = [
    Role::Owner,
    Role::Maintainer,
    Role::Editor,
    Role::Commenter,
    Role::Collaborator,
    Role::Participant,
    Role::Viewer,
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthSpec {
    pub people: usize,
    /// Directory groups, each mapped to a workspace group of the same name.
    pub groups: usize,
    /// Share of people perturbed, 0–100.
    pub drift_percent: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synth {
    pub directory: DirectorySnapshot,
    pub workspace: WorkspaceSnapshot,
    /// The mapped groups, in mapping order (the scope group is not among them).
    pub group_names: Vec<String>,
    /// Group name → the role its mapping grants, cycling through all seven roles.
    pub roles: Vec<(String, Role)>,
}

const FIRST_NAMES: [&str; 32] = [
    "Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger",
    "Radia", "Tim", "Hedy", "John", "Sophie", "Niklaus", "Karen", "Donald", "Shafi", "Leslie",
    "Joan", "Bjarne", "Anita", "Guido", "Carol", "Vint", "Mary", "Rob", "Lynn", "James", "Fei",
    "Yukihiro",
];

const FAMILY_NAMES: [&str; 32] = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners",
    "Lamarr",
    "Backus",
    "Wilson",
    "Wirth",
    "Jones",
    "Knuth",
    "Goldwasser",
    "Lamport",
    "Clarke",
    "Stroustrup",
    "Borg",
    "Rossum",
    "Shaw",
    "Cerf",
    "Keller",
    "Pike",
    "Conway",
    "Gosling",
    "Li",
    "Matsumoto",
];

const DEPARTMENTS: [&str; 10] = [
    "Engineering",
    "Product",
    "Design",
    "Sales",
    "Marketing",
    "Support",
    "Finance",
    "Legal",
    "People",
    "Operations",
];

const TEAMS: [&str; 16] = [
    "Platform",
    "Mobile",
    "Web",
    "Data",
    "Security",
    "Growth",
    "Billing",
    "Search",
    "Design Ops",
    "Field Sales",
    "Partners",
    "Support Tier 2",
    "Finance Ops",
    "Legal Review",
    "Recruiting",
    "Leadership",
];

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to spread
/// synthetic data; not for anything secret.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is negligible here).
    /// `n` must be non-zero.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len())]
    }
}

/// The name of mapped group `i`: a team name, numbered after the first round.
fn group_name(i: usize) -> String {
    let team = TEAMS[i % TEAMS.len()];
    match i / TEAMS.len() {
        0 => team.to_owned(),
        round => format!("{team} {}", round + 1),
    }
}

/// What happens to one chosen person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drift {
    /// Inactive or out of scope, yet an active account exists.
    StaleAccess,
    MissingAccount,
    WrongRole,
    MissingMembership,
    DisplayName,
    Orphan,
}

const ACTIVE_DRIFTS: [Drift; 5] = [
    Drift::MissingAccount,
    Drift::WrongRole,
    Drift::MissingMembership,
    Drift::DisplayName,
    Drift::Orphan,
];

/// Marks `round(people × percent / 100)` distinct people.
fn choose_drifted(people: usize, percent: f64, rng: &mut SplitMix64) -> Vec<bool> {
    let share = if percent.is_finite() {
        percent.clamp(0.0, 100.0) / 100.0
    } else {
        0.0
    };
    let count = ((people as f64) * share).round() as usize;
    let count = count.min(people);
    // Rejection sampling stays fast while at most half are chosen; beyond that,
    // choose the ones left alone instead.
    let (count, mark) = if count <= people / 2 {
        (count, true)
    } else {
        (people - count, false)
    };
    let mut chosen = vec![!mark; people];
    let mut marked = 0;
    while marked < count {
        let i = rng.below(people);
        if chosen[i] != mark {
            chosen[i] = mark;
            marked += 1;
        }
    }
    chosen
}

/// Builds the directory and workspace described in the module docs.
pub fn generate(spec: &SynthSpec) -> Synth {
    let mut rng = SplitMix64(spec.seed);
    // Drift draws from its own stream, so the directory does not depend on it.
    let mut drift_rng = SplitMix64(spec.seed ^ 0xD1F7_D1F7_D1F7_D1F7);
    let drifted = choose_drifted(spec.people, spec.drift_percent, &mut drift_rng);

    let group_names: Vec<String> = (0..spec.groups).map(group_name).collect();
    let roles: Vec<(String, Role)> = group_names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), ROLE_CYCLE[i % ROLE_CYCLE.len()]))
        .collect();

    let mut identities = Vec::with_capacity(spec.people);
    let mut accounts = Vec::with_capacity(spec.people);
    let members_hint = (spec.people * 2).checked_div(spec.groups).unwrap_or(0);
    let mut members: Vec<Vec<String>> = (0..spec.groups)
        .map(|_| Vec::with_capacity(members_hint))
        .collect();

    for (index, &is_drifted) in drifted.iter().enumerate() {
        let n = index + 1;
        let given = rng.pick(&FIRST_NAMES);
        let family = rng.pick(&FAMILY_NAMES);
        let department = rng.pick(&DEPARTMENTS);
        let status = match rng.below(1000) {
            0..30 => IdentityStatus::Suspended,
            30..50 => IdentityStatus::Deprovisioned,
            _ => IdentityStatus::Active,
        };
        let wanted = (1 + rng.below(3)).min(spec.groups);
        let mut mapped: Vec<usize> = Vec::with_capacity(wanted);
        while mapped.len() < wanted {
            let g = rng.below(spec.groups);
            if !mapped.contains(&g) {
                mapped.push(g);
            }
        }
        mapped.sort_unstable();
        let in_scope = rng.below(100) != 0;

        let id = format!("u{n:06}");
        let user_name = format!(
            "{}.{}.{n}@example.com",
            given.to_ascii_lowercase(),
            family.to_ascii_lowercase()
        );
        let display_name = format!("{given} {family}");
        let mut groups: Vec<String> = Vec::with_capacity(mapped.len() + 1);
        groups.extend(mapped.iter().map(|&g| group_names[g].clone()));
        if in_scope {
            groups.push(SCOPE_GROUP.to_owned());
        }
        let role = mapped
            .iter()
            .map(|&g| ROLE_CYCLE[g % ROLE_CYCLE.len()])
            .max()
            .unwrap_or(DEFAULT_ROLE);

        let drift = match (is_drifted, in_scope, status) {
            (false, _, _) => None,
            (true, true, IdentityStatus::Active) => {
                match ACTIVE_DRIFTS[drift_rng.below(ACTIVE_DRIFTS.len())] {
                    Drift::MissingMembership if mapped.is_empty() => Some(Drift::DisplayName),
                    kind => Some(kind),
                }
            }
            (true, _, _) => Some(Drift::StaleAccess),
        };
        let stale = drift == Some(Drift::StaleAccess);
        let has_account = in_scope || stale;
        if has_account && drift != Some(Drift::MissingAccount) {
            let account_id = format!("a{n:06}");
            let skipped_group = match drift {
                Some(Drift::MissingMembership) => mapped.first().copied(),
                _ => None,
            };
            for &g in &mapped {
                if Some(g) != skipped_group {
                    members[g].push(account_id.clone());
                }
            }
            let account_role = match drift {
                Some(Drift::WrongRole) => {
                    let shift = 1 + drift_rng.below(Role::ALL.len() - 1);
                    Role::ALL[(role as usize + shift) % Role::ALL.len()]
                }
                _ => role,
            };
            let account_display_name = if drift == Some(Drift::DisplayName) {
                let other = FAMILY_NAMES
                    .iter()
                    .copied()
                    .filter(|&f| f != family)
                    .nth(drift_rng.below(FAMILY_NAMES.len() - 1))
                    .unwrap_or("Former");
                format!("{given} {other}")
            } else {
                display_name.clone()
            };
            accounts.push(Account {
                id: account_id,
                user_name: user_name.clone(),
                external_id: Some(id.clone()),
                given_name: Some(given.to_owned()),
                family_name: Some(family.to_owned()),
                display_name: Some(account_display_name),
                email: Some(user_name.clone()),
                active: status == IdentityStatus::Active || stale,
                roles: vec![account_role.as_str().to_owned()],
            });
        }
        if drift == Some(Drift::Orphan) {
            accounts.push(Account {
                id: format!("o{n:06}"),
                user_name: format!("former.{n}@example.com"),
                external_id: Some(format!("x{n:06}")),
                given_name: None,
                family_name: None,
                display_name: None,
                email: Some(format!("former.{n}@example.com")),
                active: true,
                roles: vec![DEFAULT_ROLE.as_str().to_owned()],
            });
        }

        identities.push(Identity {
            id,
            email: Some(user_name.clone()),
            user_name,
            given_name: Some(given.to_owned()),
            family_name: Some(family.to_owned()),
            display_name: Some(display_name),
            status,
            department: Some(department.to_owned()),
            groups,
        });
    }

    let groups = group_names
        .iter()
        .zip(members)
        .enumerate()
        .map(|(i, (name, members))| WorkspaceGroup {
            id: format!("g{:04}", i + 1),
            display_name: name.clone(),
            members,
        })
        .collect();

    Synth {
        directory: DirectorySnapshot {
            identities,
            complete: true,
        },
        workspace: WorkspaceSnapshot { accounts, groups },
        group_names,
        roles,
    }
}

/// The directory in the file source's JSON format (one user per line), so the CLI
/// and benchmarks can read it back with [`crate::directory::FileSource`].
pub fn directory_json(directory: &DirectorySnapshot) -> String {
    // Escaped by hand: serde_json's writers return a `Result` even where they
    // cannot fail, and this function has no error to report.
    let mut out = String::with_capacity(directory.identities.len() * 256 + 16);
    out.push_str("{\"users\": [");
    for (i, identity) in directory.identities.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        out.push('{');
        push_field(&mut out, "id", &identity.id);
        out.push_str(", ");
        push_field(&mut out, "userName", &identity.user_name);
        let optional = [
            ("email", identity.email.as_ref()),
            ("givenName", identity.given_name.as_ref()),
            ("familyName", identity.family_name.as_ref()),
            ("displayName", identity.display_name.as_ref()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                out.push_str(", ");
                push_field(&mut out, name, value);
            }
        }
        out.push_str(", ");
        push_field(&mut out, "status", identity.status.as_str());
        if let Some(department) = &identity.department {
            out.push_str(", ");
            push_field(&mut out, "department", department);
        }
        out.push_str(", \"groups\": [");
        for (j, group) in identity.groups.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            push_json_string(&mut out, group);
        }
        out.push_str("]}");
    }
    out.push_str("\n]}\n");
    out
}

fn push_field(out: &mut String, name: &str, value: &str) {
    push_json_string(out, name);
    out.push_str(": ");
    push_json_string(out, value);
}

/// A JSON string literal (RFC 8259 §7).
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};
    use std::path::Path;

    fn spec(people: usize, drift_percent: f64) -> SynthSpec {
        SynthSpec {
            people,
            groups: 20,
            drift_percent,
            seed: 42,
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let a = generate(&spec(2_000, 5.0));
        let b = generate(&spec(2_000, 5.0));
        assert_eq!(a, b);
        let c = generate(&SynthSpec {
            seed: 43,
            ..spec(2_000, 5.0)
        });
        assert_ne!(a.directory, c.directory);
        assert_ne!(a.workspace, c.workspace);
    }

    #[test]
    fn sizes_and_shares_match_the_spec() {
        let synth = generate(&spec(10_000, 0.0));
        let people = &synth.directory.identities;
        assert_eq!(people.len(), 10_000);
        assert!(synth.directory.complete);
        assert_eq!(synth.group_names.len(), 20);
        assert_eq!(synth.roles.len(), 20);
        assert_eq!(synth.workspace.groups.len(), 20);
        let roles: Vec<Role> = synth.roles.iter().map(|(_, r)| *r).collect();
        assert_eq!(roles[..7], ROLE_CYCLE);
        assert_eq!(roles[7], Role::Owner);
        for ((name, _), group) in synth.roles.iter().zip(&synth.workspace.groups) {
            assert_eq!(name, &group.display_name);
        }

        let share = |f: &dyn Fn(&Identity) -> bool| {
            people.iter().filter(|i| f(i)).count() as f64 / people.len() as f64
        };
        let suspended = share(&|i| i.status == IdentityStatus::Suspended);
        let deprovisioned = share(&|i| i.status == IdentityStatus::Deprovisioned);
        let out_of_scope = share(&|i| !i.groups.iter().any(|g| g == SCOPE_GROUP));
        assert!((0.02..0.04).contains(&suspended), "{suspended}");
        assert!((0.012..0.028).contains(&deprovisioned), "{deprovisioned}");
        assert!((0.005..0.015).contains(&out_of_scope), "{out_of_scope}");
        for person in people {
            let mapped = person.groups.iter().filter(|g| *g != SCOPE_GROUP).count();
            assert!((1..=3).contains(&mapped), "{person:?}");
        }
        let in_scope = people
            .iter()
            .filter(|i| i.groups.iter().any(|g| g == SCOPE_GROUP))
            .count();
        assert_eq!(synth.workspace.accounts.len(), in_scope);
    }

    #[test]
    fn ids_and_user_names_are_unique() {
        let synth = generate(&spec(20_000, 10.0));
        let people = &synth.directory.identities;
        let ids: HashSet<&str> = people.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), people.len());
        assert_eq!(people[0].id, "u000001");
        let names: HashSet<String> = people.iter().map(|i| i.user_name.to_lowercase()).collect();
        assert_eq!(names.len(), people.len());
        let accounts = &synth.workspace.accounts;
        let account_ids: HashSet<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(account_ids.len(), accounts.len());
        let account_names: HashSet<String> = accounts
            .iter()
            .map(|a| a.user_name.to_lowercase())
            .collect();
        assert_eq!(account_names.len(), accounts.len());
    }

    /// The converged workspace, computed independently from the documented rules.
    fn converged(synth: &Synth) -> WorkspaceSnapshot {
        let role_of: BTreeMap<&str, Role> =
            synth.roles.iter().map(|(g, r)| (g.as_str(), *r)).collect();
        let mut groups: Vec<WorkspaceGroup> = synth
            .group_names
            .iter()
            .enumerate()
            .map(|(i, name)| WorkspaceGroup {
                id: format!("g{:04}", i + 1),
                display_name: name.clone(),
                members: vec![],
            })
            .collect();
        let mut accounts = vec![];
        for identity in &synth.directory.identities {
            if !identity.groups.iter().any(|g| g == SCOPE_GROUP) {
                continue;
            }
            let id = format!("a{}", &identity.id[1..]);
            let role = identity
                .groups
                .iter()
                .filter_map(|g| role_of.get(g.as_str()).copied())
                .max()
                .unwrap_or(DEFAULT_ROLE);
            for group in &mut groups {
                if identity.groups.contains(&group.display_name) {
                    group.members.push(id.clone());
                }
            }
            accounts.push(Account {
                id,
                user_name: identity.user_name.clone(),
                external_id: Some(identity.id.clone()),
                given_name: identity.given_name.clone(),
                family_name: identity.family_name.clone(),
                display_name: identity.display_name.clone(),
                email: identity.email.clone(),
                active: identity.status == IdentityStatus::Active,
                roles: vec![role.to_string()],
            });
        }
        WorkspaceSnapshot { accounts, groups }
    }

    #[test]
    fn drift_zero_is_the_converged_state() {
        for groups in [0, 1, 3, 20] {
            let synth = generate(&SynthSpec {
                groups,
                ..spec(3_000, 0.0)
            });
            assert_eq!(synth.workspace, converged(&synth), "groups = {groups}");
        }
    }

    /// Account id → (account, ids of the groups it is in).
    fn state(workspace: &WorkspaceSnapshot) -> BTreeMap<&str, (Option<&Account>, Vec<&str>)> {
        let mut state: BTreeMap<&str, (Option<&Account>, Vec<&str>)> = BTreeMap::new();
        for account in &workspace.accounts {
            state.entry(&account.id).or_default().0 = Some(account);
        }
        for group in &workspace.groups {
            for member in &group.members {
                state.entry(member).or_default().1.push(&group.id);
            }
        }
        state
    }

    /// How many account ids differ (account or memberships) between two workspaces.
    fn changed_accounts(a: &WorkspaceSnapshot, b: &WorkspaceSnapshot) -> usize {
        let (before, after) = (state(a), state(b));
        let ids: HashSet<&str> = before.keys().chain(after.keys()).copied().collect();
        ids.into_iter()
            .filter(|id| before.get(id) != after.get(id))
            .count()
    }

    #[test]
    fn drift_changes_exactly_the_chosen_share_of_people() {
        for groups in [0, 1, 20] {
            let spec = SynthSpec {
                groups,
                ..spec(10_000, 5.0)
            };
            let clean = generate(&SynthSpec {
                drift_percent: 0.0,
                ..spec
            });
            let drifted = generate(&spec);
            assert_eq!(clean.directory, drifted.directory);
            assert_eq!(
                changed_accounts(&clean.workspace, &drifted.workspace),
                500,
                "groups = {groups}"
            );
        }

        let clean = generate(&spec(10_000, 0.0));
        let drifted = generate(&spec(10_000, 5.0));
        // Every kind of drift shows up (about 95 of each among 500).
        let before: BTreeMap<&str, &Account> = clean
            .workspace
            .accounts
            .iter()
            .map(|a| (a.id.as_str(), a))
            .collect();
        let after: BTreeMap<&str, &Account> = drifted
            .workspace
            .accounts
            .iter()
            .map(|a| (a.id.as_str(), a))
            .collect();
        let count = |f: &dyn Fn(&Account, &Account) -> bool| {
            after
                .iter()
                .filter(|(id, a)| before.get(*id).is_some_and(|b| f(b, a)))
                .count()
        };
        let reactivated = count(&|b, a| !b.active && a.active);
        let wrong_role = count(&|b, a| b.roles != a.roles);
        let renamed = count(&|b, a| b.display_name != a.display_name);
        let missing = before.keys().filter(|id| !after.contains_key(*id)).count();
        let new_accounts: Vec<&str> = after
            .keys()
            .filter(|id| !before.contains_key(*id))
            .copied()
            .collect();
        let orphans = new_accounts.iter().filter(|id| id.starts_with('o')).count();
        let out_of_scope = new_accounts.len() - orphans;
        let memberships =
            |w: &WorkspaceSnapshot| -> usize { w.groups.iter().map(|g| g.members.len()).sum() };
        let lost_memberships = memberships(&clean.workspace) - memberships(&drifted.workspace);
        for (kind, n) in [
            ("wrong role", wrong_role),
            ("renamed", renamed),
            ("missing account", missing),
            ("orphan", orphans),
        ] {
            assert!((60..130).contains(&n), "{kind}: {n}");
        }
        // Stale access: 5 % of the 500 are inactive, 1 % out of scope.
        assert!((10..40).contains(&reactivated), "{reactivated}");
        assert!((1..15).contains(&out_of_scope), "{out_of_scope}");
        assert!(lost_memberships > 100, "{lost_memberships}");
    }

    #[test]
    fn drift_percent_is_clamped_and_full_drift_touches_everyone() {
        let people = 1_000;
        let all = generate(&spec(people, 100.0));
        let clean = generate(&spec(people, 0.0));
        assert_eq!(changed_accounts(&clean.workspace, &all.workspace), people);
        assert_eq!(generate(&spec(people, 250.0)), all);
        assert_eq!(generate(&spec(people, f64::NAN)), clean);
        assert_eq!(generate(&spec(people, -3.0)), clean);
    }

    #[test]
    fn empty_spec_gives_empty_snapshots() {
        let synth = generate(&SynthSpec {
            people: 0,
            groups: 0,
            drift_percent: 5.0,
            seed: 1,
        });
        assert!(synth.directory.identities.is_empty());
        assert_eq!(synth.workspace, WorkspaceSnapshot::default());
        assert_eq!(
            crate::directory::file::parse_json(
                &directory_json(&synth.directory),
                Path::new("s.json")
            )
            .unwrap(),
            vec![]
        );
    }

    #[test]
    fn directory_json_reads_back_through_the_file_source() {
        let synth = generate(&spec(2_000, 5.0));
        let text = directory_json(&synth.directory);
        let read = crate::directory::file::parse_json(&text, Path::new("synth.json")).unwrap();
        assert_eq!(read, synth.directory.identities);
    }

    #[test]
    fn directory_json_escapes_what_json_requires() {
        let awkward = "Zoë \"Z\" O'Neil \\ tab\t nl\n cr\r bell\u{7} 🦀";
        let identity = Identity {
            id: "u1".into(),
            user_name: "zoe@example.com".into(),
            email: None,
            given_name: None,
            family_name: None,
            display_name: Some(awkward.into()),
            status: IdentityStatus::Suspended,
            department: Some(awkward.into()),
            groups: vec![awkward.into()],
        };
        let directory = DirectorySnapshot {
            identities: vec![identity.clone()],
            complete: true,
        };
        let text = directory_json(&directory);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["users"][0]["displayName"], awkward);
        let read = crate::directory::file::parse_json(&text, Path::new("z.json")).unwrap();
        assert_eq!(read, vec![identity]);
    }

    /// `cargo test --release --lib synth::tests::a_million -- --ignored --nocapture`
    #[test]
    #[ignore = "timing check; run in release"]
    fn a_million_people_are_generated_quickly() {
        let started = std::time::Instant::now();
        let synth = generate(&SynthSpec {
            people: 1_000_000,
            groups: 200,
            drift_percent: 5.0,
            seed: 7,
        });
        let generated = started.elapsed();
        let started = std::time::Instant::now();
        let json = directory_json(&synth.directory);
        let serialised = started.elapsed();
        let started = std::time::Instant::now();
        let read = crate::directory::file::parse_json(&json, Path::new("synth.json")).unwrap();
        println!(
            "generate: {generated:?}, directory_json: {serialised:?} ({} MB), parse_json: {:?}; \
             accounts: {}",
            json.len() / 1_000_000,
            started.elapsed(),
            synth.workspace.accounts.len()
        );
        assert_eq!(synth.directory.identities.len(), 1_000_000);
        assert!(read == synth.directory.identities);
    }
}
