//! Property tests of the pure core (policy → plan → guard, with `simulate` standing in
//! for the workspace): convergence, idempotence, protected accounts, guard limits and
//! disputed matches, over random small directories, workspaces and links.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::subsequence;

use seatwarden::guard::{GuardInput, GuardSettings, Limits, day_limit, guard, run_limit};
use seatwarden::model::{
    Account, AccountRef, ActionClass, ActionKind, DirectorySnapshot, DisputedCandidate, DriftKind,
    Exception, Identity, IdentityStatus, Link, LinkMethod, Plan, Role, WorkspaceGroup,
    WorkspaceSnapshot,
};
use seatwarden::plan::{
    DeprovisionAction, PlanSettings, Retention, is_user_name_conflict, plan, simulate,
};
use seatwarden::policy::{
    DesiredState, Mapping, PolicySettings, Protected, UnmatchedAccounts, desired_state,
};

const IDENTITY_IDS: usize = 34; // ids beyond the directory size make dead references
const ACCOUNT_IDS: usize = 32;

fn cased(base: String, upper: bool) -> String {
    if upper { base.to_uppercase() } else { base }
}

fn email() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(0.8, (0..30usize, any::<bool>()))
        .prop_map(|e| e.map(|(n, up)| cased(format!("mail{n}@ex.com"), up)))
}

/// `userN`, and now and then with an accent written composed (`usérN`) or as `e`
/// and a combining accent, which name the same account; with a Turkish dotted
/// capital I or a Kelvin sign in front (look-alikes of `iuserN`, `kuserN` that
/// name no ASCII account), or with a trailing space (another name).
fn user_name() -> impl Strategy<Value = String> {
    let stem = prop_oneof![
        6 => Just("user"),
        1 => Just("us\u{e9}r"),
        1 => Just("use\u{301}r"),
        1 => Just("\u{130}user"),
        1 => Just("\u{212A}user"),
    ];
    let tail = prop_oneof![12 => Just(""), 1 => Just(" ")];
    (stem, 0..40usize, any::<bool>(), tail)
        .prop_map(|(stem, n, up, tail)| cased(format!("{stem}{n}{tail}"), up))
}

/// An account's userName: mostly a directory-style `userN`, sometimes one of the
/// addresses identities carry as their email (an account matched, or protected,
/// by an identity's email rather than its userName).
/// Identities draw their userNames the same way, so one person's userName can
/// be another's email.
fn account_user_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => user_name(),
        1 => (0..30usize, any::<bool>()).prop_map(|(n, up)| cased(format!("mail{n}@ex.com"), up)),
    ]
}

/// Protected directory groups as an operator might spell them: never exactly the
/// directory's lower-case names, so a comparison that does not fold case (and
/// trim) protects nobody.
fn protected_groups() -> impl Strategy<Value = Vec<String>> {
    subsequence(vec!["Eng", "OPS", " Misc "], 0..=2)
        .prop_map(|groups| groups.into_iter().map(str::to_owned).collect())
}

/// Whether a protected group spelling names the directory group `group`, as
/// `safety.protected_groups` documents: trimmed, case aside.
fn names_group(spelling: &str, group: &str) -> bool {
    spelling.trim().eq_ignore_ascii_case(group.trim())
}

/// The documented glob, written out independently of `Protected::matches`: `*`
/// any run of characters, `?` exactly one, case aside (ASCII names here).
fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((p, rest)) => text
            .split_first()
            .is_some_and(|(t, text)| (*p == '?' || p.eq_ignore_ascii_case(t)) && glob(rest, text)),
    }
}

/// The first create or rename of `plan`'s write batches that wants a userName
/// an account of `workspace` (as the batches before it leave it) still has.
fn user_name_taken_in_a_batch(workspace: &WorkspaceSnapshot, plan: &Plan) -> Option<String> {
    let fold = seatwarden::model::fold_case;
    let mut names: BTreeMap<String, String> = workspace
        .accounts
        .iter()
        .map(|a| (a.id.clone(), fold(&a.user_name)))
        .collect();
    for batch in seatwarden::apply::write_batches(plan) {
        for action in &batch {
            let Some(target) = action.kind.wanted_user_name().map(fold) else {
                continue;
            };
            let own = action.kind.account_id();
            if let Some(holder) = names
                .iter()
                .find(|(id, name)| **name == target && Some(id.as_str()) != own)
            {
                return Some(format!("{target} still {holder:?}'s: {:#?}", plan.actions));
            }
        }
        for action in &batch {
            match &action.kind {
                ActionKind::Delete { account_id, .. } => {
                    names.remove(account_id);
                }
                ActionKind::CreateAccount { identity_id, spec } => {
                    names.insert(format!("created {identity_id}"), fold(&spec.user_name));
                }
                kind => {
                    if let (Some(id), Some((_, Some(to)))) =
                        (kind.account_id(), kind.user_name_change())
                    {
                        names.insert(id.to_owned(), fold(to));
                    }
                }
            }
        }
    }
    None
}

/// Both sides trimmed: `"admin@x.com "` is the protected `admin@x.com`.
fn glob_protects(patterns: &[String], user_name: &str) -> bool {
    let text: Vec<char> = user_name.trim().chars().collect();
    patterns
        .iter()
        .any(|p| glob(&p.trim().chars().collect::<Vec<_>>(), &text))
}

fn small_name(prefix: &'static str) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(0..3usize).prop_map(move |n| n.map(|n| format!("{prefix}{n}")))
}

fn identity(index: usize) -> impl Strategy<Value = Identity> {
    (
        account_user_name(),
        email(),
        small_name("G"),
        small_name("F"),
        small_name("D"),
        prop_oneof![
            6 => Just(IdentityStatus::Active),
            1 => Just(IdentityStatus::Suspended),
            1 => Just(IdentityStatus::Deprovisioned),
        ],
        // Directory group names as a directory may spell them: another case, a
        // space at an end (mappings and scope compare them folded).
        subsequence(
            vec!["eng", "leads", "design", "ops", "misc", "Eng", " OPS"],
            0..=3,
        ),
    )
        .prop_map(
            move |(user_name, email, given, family, display, status, groups)| Identity {
                id: format!("i{index}"),
                user_name,
                email,
                given_name: given,
                family_name: family,
                display_name: display,
                status,
                department: None,
                groups: groups.into_iter().map(str::to_owned).collect(),
            },
        )
}

/// An account's role values: mostly one, in any case; sometimes several known
/// ones in any order (an account in two role groups, a multi-valued `roles`),
/// an unknown one beside a known one, or an Owner written with spaces around.
fn roles() -> impl Strategy<Value = Vec<String>> {
    let role = (proptest::sample::select(Role::ALL.to_vec()), any::<bool>())
        .prop_map(|(r, up)| cased(r.as_str().to_owned(), up));
    prop_oneof![
        1 => Just(vec![]),
        6 => role.clone().prop_map(|r| vec![r]),
        1 => Just(vec!["Owner".to_owned(), "Viewer".to_owned()]),
        1 => Just(vec!["bogus".to_owned()]),
        2 => proptest::collection::vec(role.clone(), 2..4),
        1 => role.prop_map(|r| vec!["bogus".to_owned(), r]),
        1 => Just(vec![" owner ".to_owned()]),
    ]
}

fn account(index: usize) -> impl Strategy<Value = Account> {
    (
        proptest::option::weighted(0.5, 0..IDENTITY_IDS),
        account_user_name(),
        email(),
        small_name("G"),
        small_name("F"),
        small_name("D"),
        proptest::bool::weighted(0.8),
        roles(),
    )
        .prop_map(
            move |(external, user_name, email, given, family, display, active, roles)| Account {
                id: format!("a{index}"),
                user_name,
                external_id: external.map(|n| format!("i{n}")),
                given_name: given,
                family_name: family,
                display_name: display,
                email,
                active,
                roles,
            },
        )
}

fn group(index: usize) -> impl Strategy<Value = WorkspaceGroup> {
    (
        // With look-alikes of mapped groups: a zero-width space, a Greek capital
        // Epsilon (other groups, which no mapping names).
        proptest::sample::select(vec![
            "Engineering",
            "engineering",
            "Design",
            "Ops",
            "Other",
            "Engineering\u{200B}",
            "\u{395}ngineering",
        ]),
        proptest::collection::vec(0..ACCOUNT_IDS, 0..8),
    )
        .prop_map(move |(name, members)| WorkspaceGroup {
            id: format!("g{index}"),
            display_name: name.to_owned(),
            members: members.into_iter().map(|m| format!("a{m}")).collect(),
        })
}

#[derive(Debug, Clone)]
struct Scenario {
    directory: DirectorySnapshot,
    workspace: WorkspaceSnapshot,
    links: Vec<Link>,
    /// The last reconcile's `Plan::disputed_candidates`, as the store keeps them.
    remembered: Vec<DisputedCandidate>,
    policy: PolicySettings,
    settings: PlanSettings,
}

impl Scenario {
    fn desired(&self) -> DesiredState<'_> {
        desired_state(&self.directory, &self.policy)
    }

    fn plan_against(&self, workspace: &WorkspaceSnapshot, links: &[Link]) -> Plan {
        self.plan_remembering(workspace, links, &self.remembered)
    }

    /// With the disputes a run before remembered (`Plan::disputed_candidates`).
    fn plan_remembering(
        &self,
        workspace: &WorkspaceSnapshot,
        links: &[Link],
        remembered: &[DisputedCandidate],
    ) -> Plan {
        plan(
            &self.desired(),
            &self.directory,
            workspace,
            links,
            remembered,
            &self.settings,
        )
    }

    fn plan(&self) -> Plan {
        self.plan_against(&self.workspace, &self.links)
    }
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let identities = (0..30usize).prop_flat_map(|n| (0..n).map(identity).collect::<Vec<_>>());
    let accounts = (0..30usize).prop_flat_map(|n| (0..n).map(account).collect::<Vec<_>>());
    let groups = (0..5usize).prop_flat_map(|n| (0..n).map(group).collect::<Vec<_>>());
    let links = proptest::collection::vec((0..IDENTITY_IDS, 0..ACCOUNT_IDS), 0..10);
    let knobs = (
        any::<bool>(),
        any::<bool>(),
        proptest::sample::select(vec![
            DeprovisionAction::Deactivate,
            DeprovisionAction::Delete,
        ]),
        proptest::sample::select(vec![
            UnmatchedAccounts::Report,
            UnmatchedAccounts::Adopt,
            UnmatchedAccounts::Deactivate,
        ]),
    );
    // With a retention period (`Some`): days each account has been seen
    // deactivated, if at all; the store keeps clocks of inactive accounts only.
    let retention = proptest::option::of(proptest::collection::vec(
        proptest::option::of(0..60i64),
        30,
    ));
    // Protected accounts: a few patterns, and the members of protected directory
    // groups (spelt in another case than the directory's).
    let protected = (
        subsequence(vec!["user1*", "USER?", "*3", "MAIL2*", "u*r5"], 0..=2),
        protected_groups(),
    );
    // Disputes the last run remembered: a person (often one the directory no
    // longer has) and an account that may be theirs, by the rule that matched.
    let remembered = proptest::collection::vec(
        (
            0..IDENTITY_IDS,
            0..ACCOUNT_IDS,
            proptest::sample::select(vec![
                LinkMethod::ExternalId,
                LinkMethod::UserName,
                LinkMethod::Email,
            ]),
            account_user_name(),
        ),
        0..4,
    );
    // Time-bound exceptions (`safety.exceptions`), in force or ended, and the
    // people the directory no longer has under the name the ledger keeps.
    let exceptions = (
        proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "user1",
                    "USER2",
                    "user3 ",
                    "mail2@ex.com",
                    "us\u{e9}r5",
                ]),
                any::<bool>(),
            ),
            0..3,
        ),
        // Half the time a name an exception may name, or the ledger's name would
        // rarely be one.
        proptest::collection::vec(
            (
                0..IDENTITY_IDS,
                prop_oneof![
                    proptest::sample::select(vec!["user1", "USER3", "mail2@ex.com"])
                        .prop_map(str::to_owned),
                    account_user_name(),
                ],
            ),
            0..3,
        ),
    );
    (
        (
            identities, accounts, groups, links, knobs, retention, protected,
        ),
        (remembered, exceptions),
    )
        .prop_map(
            |(
                (
                    identities,
                    accounts,
                    groups,
                    links,
                    (scoped, manage_roles, deprovision, unmatched),
                    retention,
                    (patterns, protected_groups),
                ),
                (remembered, (exceptions, departed)),
            )| {
                let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
                let retention = match retention {
                    None => Retention::default(),
                    Some(days) => Retention {
                        delete_after: chrono::TimeDelta::days(30),
                        deactivated_since: accounts
                            .iter()
                            .zip(days)
                            .filter(|(account, _)| !account.active)
                            .filter_map(|(account, days)| {
                                Some((account.id.clone(), now - chrono::TimeDelta::days(days?)))
                            })
                            .collect(),
                        now,
                    },
                };
                let mapping = |group: &str, workspace_group: &str, role| Mapping {
                    group: group.into(),
                    workspace_group: workspace_group.into(),
                    role,
                };
                // The plan does not read `complete` (the guard holds what an
                // incomplete read would take away: `guard_limits_hold`), so the
                // plan-level properties keep complete directories.
                let directory = DirectorySnapshot {
                    identities,
                    complete: true,
                };
                let patterns: Vec<String> = patterns.into_iter().map(str::to_owned).collect();
                let exceptions: Vec<Exception> = exceptions
                    .into_iter()
                    .map(|(user_name, in_force)| Exception {
                        user_name: user_name.trim().to_owned(),
                        until: now + chrono::TimeDelta::days(if in_force { 3 } else { -3 }),
                        reason: "handover".to_owned(),
                    })
                    .collect();
                let present = |id: &str| directory.identities.iter().find(|i| i.id == id);
                // The ledger keeps a departed person's last directory userName;
                // only people the directory no longer has are departed.
                let departed: Vec<(String, String)> = departed
                    .into_iter()
                    .map(|(i, name)| (format!("i{i}"), name))
                    .filter(|(id, _)| present(id).is_none())
                    .collect();
                let protected = Protected::new(&patterns)
                    .with_members_of(&protected_groups, &directory)
                    .with_exceptions(&exceptions, now)
                    .with_departed(departed);
                // A remembered person the directory still has was remembered
                // under their directory userName. A remembered account may be
                // inactive (deactivated as a duplicate, or by hand since).
                let remembered = remembered
                    .into_iter()
                    .map(|(i, a, method, name)| {
                        let identity_id = format!("i{i}");
                        DisputedCandidate {
                            user_name: present(&identity_id).map_or(name, |p| p.user_name.clone()),
                            identity_id,
                            account_id: format!("a{a}"),
                            method,
                            duplicate_of: None,
                            email: None,
                        }
                    })
                    .collect();
                Scenario {
                    directory,
                    workspace: WorkspaceSnapshot { accounts, groups },
                    links: links
                        .into_iter()
                        .map(|(i, a)| Link {
                            identity_id: format!("i{i}"),
                            account_id: format!("a{a}"),
                        })
                        .collect(),
                    remembered,
                    policy: PolicySettings {
                        scope_groups: if scoped {
                            vec!["eng".into(), "design".into(), "ops".into()]
                        } else {
                            vec![]
                        },
                        default_role: Role::Viewer,
                        mappings: vec![
                            mapping("eng", "Engineering", Role::Editor),
                            mapping("leads", "ENGINEERING", Role::Maintainer),
                            mapping("design", "Design", Role::Commenter),
                            mapping("ops", "Ops", Role::Owner),
                        ],
                        manage_roles,
                    },
                    settings: PlanSettings {
                        deprovision,
                        retention,
                        unmatched_accounts: unmatched,
                        manage_roles,
                        protected,
                        admin_command: seatwarden::model::DEFAULT_ADMIN_COMMAND.to_owned(),
                    },
                }
            },
        )
}

/// `committed` cases, or as many as `PROPTEST_CASES` says: proptest reads that
/// variable only for a configuration that sets no count of its own, so a long
/// search (`PROPTEST_CASES=20000 cargo test --test it core::`) needs this.
fn cases(committed: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(committed);
    ProptestConfig::with_cases(cases)
}

/// Every existing account id an action names, and every identity it is for.
fn touched(plan: &Plan) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut accounts = BTreeSet::new();
    let mut identities = BTreeSet::new();
    for action in &plan.actions {
        accounts.extend(action.kind.account_id().map(str::to_owned));
        identities.extend(action.identity_id.clone());
        match &action.kind {
            ActionKind::CreateAccount { identity_id, .. } => {
                identities.insert(identity_id.clone());
            }
            ActionKind::AddMembers { members, .. } => {
                for member in members {
                    match member {
                        AccountRef::Existing { id } => accounts.insert(id.clone()),
                        AccountRef::Created { identity_id } => {
                            identities.insert(identity_id.clone())
                        }
                    };
                }
            }
            ActionKind::RemoveMembers { members, .. } => {
                accounts.extend(members.iter().cloned());
            }
            _ => {}
        }
    }
    (accounts, identities)
}

/// The per-run limit as documented, computed here rather than by the guard: the
/// count, tightened to floor(percent × managed / 100) once there are at least
/// `min_population` managed accounts. Percentages are drawn in quarters of a
/// percent, so this is exact integer arithmetic. The 24 h limit is documented
/// the same way, from the per-day count and percentage.
fn documented_run_cap(
    per_run: usize,
    quarter_percent: u32,
    min_population: usize,
    managed: usize,
) -> usize {
    if managed < min_population {
        per_run
    } else {
        per_run.min(quarter_percent as usize * managed / 400)
    }
}

fn quarter_percents(below: u32) -> impl Strategy<Value = u32> {
    0..below * 4
}

/// A percentage the decimal way does not round: 29 % of 100 accounts is 29.
#[test]
fn a_percentage_limit_is_not_lost_to_rounding() {
    for (percent, managed, cap) in [
        (29.0, 100, 29),
        (58.0, 50, 29),
        (57.0, 100, 57),
        (10.0, 30, 3),
    ] {
        let limits = Limits {
            per_run: 1000,
            percent,
            per_day: 1000,
            percent_per_day: percent,
        };
        assert_eq!(
            run_limit(&limits, 0, managed),
            cap,
            "{percent} % of {managed}"
        );
        assert_eq!(
            day_limit(&limits, 0, managed),
            cap,
            "{percent} % of {managed} per 24 h"
        );
    }
}

/// What a plan does to the existing account `id`: each action naming it (a
/// membership batch by its group and direction only, since its other members are
/// not this account's business), without seqs.
fn naming(plan: &Plan, id: &str) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|action| match &action.kind {
            ActionKind::AddMembers { group, members } => members
                .iter()
                .any(|m| matches!(m, AccountRef::Existing { id: m } if m == id))
                .then(|| format!("add to {group:?} ({:?})", action.reason)),
            ActionKind::RemoveMembers { group, members } => members
                .iter()
                .any(|m| m == id)
                .then(|| format!("remove from {group:?} ({:?})", action.reason)),
            // Which other write a delete frees a userName for says what happens
            // to another person, not to this account.
            ActionKind::Delete {
                account_id,
                deactivated_since,
                ..
            } if account_id == id => Some(format!(
                "delete, deactivated since {deactivated_since:?} ({:?}, {})",
                action.reason, action.subject
            )),
            kind if kind.account_id() == Some(id) => Some(format!(
                "{kind:?} ({:?}, {})",
                action.reason, action.subject
            )),
            _ => None,
        })
        .collect()
}

fn active_owners(workspace: &WorkspaceSnapshot) -> usize {
    workspace
        .accounts
        .iter()
        .filter(|a| a.active && a.is_owner())
        .count()
}

proptest! {
    #![proptest_config(cases(256))]

    /// Applying a plan and planning again plans nothing; applying that plan changes
    /// nothing. The one exception is bookkeeping, not a write: when the first plan
    /// deleted a leaver's linked account, a second account of theirs that it left
    /// alone (a duplicate whose own retention clock still runs, or a protected
    /// one) is linked in its place by the next plan. Each plan remembers the
    /// disputes of the one before, as the store keeps them.
    #[test]
    fn plans_converge_and_are_idempotent(s in scenario()) {
        let first = s.plan();
        let (mut workspace, mut links) = simulate(&s.workspace, &s.links, &first);
        let mut remembered = first.disputed_candidates.clone();
        let mut second = s.plan_remembering(&workspace, &links, &remembered);
        prop_assert!(second.actions.is_empty(), "second plan: {:#?}", second.actions);
        if !second.new_links.is_empty() {
            let deleted_for: Vec<&str> = first
                .actions
                .iter()
                .filter(|a| matches!(a.kind, ActionKind::Delete { .. }))
                .filter_map(|a| a.identity_id.as_deref())
                .collect();
            for link in &second.new_links {
                prop_assert!(deleted_for.contains(&link.identity_id.as_str()), "{:#?}", second.new_links);
            }
            (workspace, links) = simulate(&workspace, &links, &second);
            remembered = second.disputed_candidates.clone();
            second = s.plan_remembering(&workspace, &links, &remembered);
            prop_assert!(second.actions.is_empty(), "third plan: {:#?}", second.actions);
        }
        prop_assert!(second.new_links.is_empty(), "{:#?}", second.new_links);
        // Only disputes, reported drift and userName conflicts (nothing to send) survive.
        for item in &second.drift {
            prop_assert!(
                matches!(item.kind, DriftKind::DisputedMatch | DriftKind::OrphanedAccount | DriftKind::GroupDrift)
                    || is_user_name_conflict(item),
                "{item:?}"
            );
        }
        let (again, again_links) = simulate(&workspace, &links, &second);
        prop_assert_eq!(&again, &workspace);
        prop_assert_eq!(&again_links, &links);
        let third = s.plan_remembering(&again, &again_links, &second.disputed_candidates);
        prop_assert_eq!(&third, &second);
    }

    /// With a retention period no account is deleted before it has been seen
    /// deactivated that long, and no active account is deleted at all; every
    /// deactivated account waiting for deletion is listed for its clock.
    #[test]
    fn nothing_is_deleted_before_its_retention_period(s in scenario()) {
        let plan = s.plan();
        let retention = &s.settings.retention;
        let retaining = s.settings.deprovision == DeprovisionAction::Delete
            && retention.delete_after > chrono::TimeDelta::zero();
        if !retaining {
            prop_assert!(plan.retained.is_empty());
        }
        for action in &plan.actions {
            let ActionKind::Delete { account_id, deactivated_since, .. } = &action.kind else {
                continue;
            };
            if !retaining {
                prop_assert_eq!(deactivated_since, &None);
                continue;
            }
            let since = retention.deactivated_since.get(account_id);
            prop_assert!(since.is_some(), "{account_id} deleted without a clock");
            prop_assert_eq!(deactivated_since.as_ref(), since);
            prop_assert!(since.is_some_and(|t| retention.now - *t >= retention.delete_after));
            prop_assert!(plan.retained.contains(account_id));
            let account = s.workspace.accounts.iter().find(|a| &a.id == account_id);
            prop_assert!(account.is_some_and(|a| !a.active), "{account_id} is active");
        }
    }

    /// Same inputs, same plan; seqs are 0..n in order.
    #[test]
    fn plans_are_deterministic_and_numbered(s in scenario()) {
        let plan = s.plan();
        prop_assert_eq!(&plan, &s.plan());
        for (i, action) in plan.actions.iter().enumerate() {
            prop_assert_eq!(action.seq as usize, i);
            prop_assert!(action.held.is_none());
            prop_assert!(
                plan.drift.iter().any(|d| d.kind == action.reason),
                "no drift item for {:?}", action
            );
        }
    }

    /// No two creates or renames of a plan want one userName (case and
    /// composition aside), and none wants one an account keeps: an account not
    /// deleted or renamed by the same plan. Each conflict item has no action of its
    /// person's that sends the userName.
    #[test]
    fn no_plan_sends_a_user_name_twice_or_onto_a_kept_one(s in scenario()) {
        let plan = s.plan();
        let fold = seatwarden::model::fold_case;
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        let mut moved: BTreeSet<&str> = BTreeSet::new();
        let mut targets: Vec<(String, Option<&str>)> = Vec::new();
        for action in &plan.actions {
            match &action.kind {
                ActionKind::CreateAccount { spec, .. } => targets.push((fold(&spec.user_name), None)),
                ActionKind::UpdateAttributes { account_id, changes } => {
                    for change in changes {
                        if change.attribute == seatwarden::model::Attribute::UserName {
                            let to = change.to.as_deref().unwrap_or_default();
                            targets.push((fold(to), Some(account_id.as_str())));
                            moved.insert(account_id);
                        }
                    }
                }
                ActionKind::Delete { account_id, .. } => {
                    moved.insert(account_id);
                }
                _ => {}
            }
        }
        for (target, renamed) in &targets {
            prop_assert!(wanted.insert(target.clone()), "{target} wanted twice: {:#?}", plan.actions);
            for account in &s.workspace.accounts {
                if Some(account.id.as_str()) != *renamed && fold(&account.user_name) == *target {
                    prop_assert!(
                        moved.contains(account.id.as_str()),
                        "{target} is kept by {}: {:#?}", account.id, plan.actions
                    );
                }
            }
        }
        for item in plan.drift.iter().filter(|item| is_user_name_conflict(item)) {
            let sends = plan.actions.iter().any(|a| {
                a.identity_id == item.identity_id
                    && (a.kind.renames() || matches!(a.kind, ActionKind::CreateAccount { .. }))
            });
            prop_assert!(!sends, "{item:?}: {:#?}", plan.actions);
        }
    }

    /// The executor's write batches never send a create or rename onto a userName
    /// an account has when its batch starts (a batch's writes go side by side): a
    /// chain of renames goes link by link.
    #[test]
    fn no_write_batch_sends_a_user_name_an_account_still_has(s in scenario()) {
        let plan = s.plan();
        let taken = user_name_taken_in_a_batch(&s.workspace, &plan);
        prop_assert!(taken.is_none(), "{}", taken.unwrap_or_default());
    }

    /// A create or rename of the plan that takes the userName of an account the
    /// plan deletes is announced by that delete (`frees_user_name`), which is
    /// how the executor knows to send nothing behind it if it fails; a delete
    /// whose userName nothing takes announces none.
    #[test]
    fn a_delete_names_the_user_name_it_frees_for_a_create_or_rename(s in scenario()) {
        let plan = s.plan();
        // Trimmed, as the plan compares userNames.
        let fold = |name: &str| seatwarden::model::fold_case(name.trim());
        let wanted: BTreeSet<String> = plan
            .runnable()
            .chain(plan.held())
            .filter_map(|a| a.kind.wanted_user_name().map(fold))
            .collect();
        for action in &plan.actions {
            let ActionKind::Delete { account_id, frees_user_name, .. } = &action.kind else {
                continue;
            };
            let Some(account) = s.workspace.accounts.iter().find(|a| &a.id == account_id) else {
                continue;
            };
            let expected = wanted
                .contains(&fold(&account.user_name))
                .then(|| account.user_name.clone());
            prop_assert_eq!(frees_user_name, &expected, "{:#?}", plan.actions);
        }
    }

    /// Protected accounts never appear in any action.
    #[test]
    fn protected_accounts_are_never_touched(
        mut s in scenario(),
        patterns in proptest::collection::vec(
            proptest::sample::select(vec!["user1*", "USER?", "*3", "user2", "u*r5", "*"]),
            0..3,
        ),
    ) {
        let patterns: Vec<String> = patterns.into_iter().map(str::to_owned).collect();
        let protected = Protected::new(&patterns);
        s.settings.protected = protected.clone();
        let plan = s.plan();
        let (accounts, identities) = touched(&plan);
        for account in &s.workspace.accounts {
            if protected.matches(&account.user_name) {
                prop_assert!(!accounts.contains(&account.id), "{} touched", account.user_name);
            }
        }
        for identity in &s.directory.identities {
            if protected.matches(&identity.user_name) {
                prop_assert!(!identities.contains(&identity.id), "{} touched", identity.user_name);
            }
        }
        for action in &plan.actions {
            if let ActionKind::CreateAccount { spec, .. } = &action.kind {
                prop_assert!(!protected.matches(&spec.user_name));
            }
        }
        // What is listed as left alone only for a protected person is exactly
        // that: untouched, its person protected, its own userName not.
        for p in &plan.protected_by_person {
            prop_assert!(!accounts.contains(&p.account_id), "{p:?} touched");
            prop_assert!(protected.matches(&p.user_name) && !protected.matches(&p.account_user_name), "{p:?}");
            let person = s.directory.identities.iter().find(|i| i.id == p.identity_id);
            // As the policy trims it.
            prop_assert!(person.is_none_or(|i| i.user_name.trim() == p.user_name), "{p:?}");
        }
        if patterns.iter().any(|p| p == "*") {
            let only_groups = plan
                .actions
                .iter()
                .all(|a| matches!(a.kind, ActionKind::CreateGroup { .. }));
            prop_assert!(only_groups, "everything is protected: {:#?}", plan.actions);
        }
    }

    /// An exception is protection until its end and nothing after: in force, the
    /// plan is the one the same exact names in `safety.protected` give, every
    /// active account it keeps from losing access is listed and touched by no
    /// action; at its end, the plan is the one without it.
    #[test]
    fn an_exception_is_protection_until_its_end_and_nothing_after(
        mut s in scenario(),
        names in subsequence(vec!["user1", "USER2", "user3", "mail2@ex.com", "usér5"], 1..=3),
    ) {
        use chrono::TimeZone;
        let until = chrono::Utc.with_ymd_and_hms(2026, 12, 15, 23, 0, 0).unwrap();
        let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        let exceptions: Vec<seatwarden::model::Exception> = names
            .iter()
            .map(|name| seatwarden::model::Exception {
                user_name: name.clone(),
                until,
                reason: "handover".to_owned(),
            })
            .collect();
        s.settings.protected = Protected::new(&names);
        let protected = s.plan();
        s.settings.protected = Protected::default();
        let open = s.plan();
        s.settings.protected =
            Protected::default().with_exceptions(&exceptions, until - chrono::TimeDelta::seconds(1));
        let excepted = s.plan();
        prop_assert_eq!(&excepted.actions, &protected.actions);
        prop_assert_eq!(&excepted.drift, &protected.drift);
        let (touched_accounts, _) = touched(&excepted);
        for kept in &excepted.excepted {
            prop_assert!(!touched_accounts.contains(&kept.account_id), "{kept:?} touched");
            // Without the exception, its access would go.
            prop_assert!(
                open.actions.iter().any(|a| matches!(&a.kind,
                    ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. }
                        if *account_id == kept.account_id)),
                "{kept:?} listed, yet nothing would take its access: {:#?}", open.actions
            );
        }
        s.settings.protected = Protected::default().with_exceptions(&exceptions, until);
        let ended = s.plan();
        prop_assert_eq!(&ended.actions, &open.actions);
        prop_assert!(ended.excepted.is_empty());
    }

    /// Protection takes away exactly what it protects and nothing else: for every
    /// account the patterns do not match (judged by the documented glob, not by
    /// `Protected::matches`) and that no protected identity claims, the actions
    /// naming it are the same with and without the patterns.
    #[test]
    fn protection_changes_nothing_for_the_unprotected(
        mut s in scenario(),
        patterns in subsequence(
            vec!["user1*", "USER?", "*3", "user2", "u*r5", "MAIL1?@EX.COM", "*l2*"],
            1..=3,
        ),
    ) {
        let patterns: Vec<String> = patterns.into_iter().map(str::to_owned).collect();
        s.settings.protected = Protected::default();
        let open = s.plan();
        s.settings.protected = Protected::new(&patterns);
        let guarded = s.plan();
        // An account an action for a protected identity names is protected through
        // that identity (its directory userName).
        let protected_identities: BTreeSet<&str> = s
            .directory
            .identities
            .iter()
            .filter(|i| glob_protects(&patterns, &i.user_name))
            .map(|i| i.id.as_str())
            .collect();
        let claimed: BTreeSet<&str> = s
            .workspace
            .accounts
            .iter()
            .filter(|account| {
                open.actions.iter().any(|a| {
                    a.identity_id.as_deref().is_some_and(|i| protected_identities.contains(i))
                        && !naming(&Plan { actions: vec![a.clone()], ..Plan::default() }, &account.id).is_empty()
                })
            })
            .map(|account| account.id.as_str())
            .collect();
        // A protected account keeps its userName and a protected person still wants
        // theirs: a rename onto either is a conflict in one plan and not the other.
        let conflicted: BTreeSet<&str> = open
            .drift
            .iter()
            .chain(&guarded.drift)
            .filter(|item| is_user_name_conflict(item))
            .filter_map(|item| item.account_id.as_deref())
            .collect();
        // Every account protection takes out of the plan only for its person is
        // listed, so no report can miss it.
        let listed: BTreeSet<&str> = guarded
            .protected_by_person
            .iter()
            .map(|p| p.account_id.as_str())
            .collect();
        for account in &s.workspace.accounts {
            if claimed.contains(account.id.as_str()) && !glob_protects(&patterns, &account.user_name) {
                prop_assert!(
                    listed.contains(account.id.as_str()),
                    "{} left alone for a protected person, not listed: {:#?}",
                    account.user_name,
                    guarded.protected_by_person
                );
            }
        }
        for account in &s.workspace.accounts {
            if glob_protects(&patterns, &account.user_name)
                || claimed.contains(account.id.as_str())
                || conflicted.contains(account.id.as_str())
            {
                continue;
            }
            prop_assert_eq!(
                naming(&open, &account.id),
                naming(&guarded, &account.id),
                "{}",
                account.user_name
            );
        }
    }

    /// The guard lets no more deprovisions through than its limit, none from an
    /// incomplete directory, never leaves the workspace without an active Owner, and
    /// never adds, drops or reorders actions.
    #[test]
    fn guard_limits_hold(
        s in scenario(),
        max in 0..12usize,
        quarter_percent in quarter_percents(60),
        min_population in 0..20usize,
        managed in 0..40usize,
        complete in proptest::bool::weighted(0.8),
    ) {
        let plan = s.plan();
        let settings = GuardSettings {
            max_deprovisions: max,
            max_deprovision_percent: f64::from(quarter_percent) / 4.0,
            min_population_for_percent: min_population,
            ..GuardSettings::unlimited()
        };
        let input = GuardInput { directory_complete: complete, managed_accounts: managed, ..GuardInput::default() };
        let guarded = guard(plan.clone(), &s.workspace, &settings, &input);

        prop_assert_eq!(guarded.actions.len(), plan.actions.len());
        for (before, after) in plan.actions.iter().zip(&guarded.actions) {
            prop_assert_eq!(&before.kind, &after.kind);
            prop_assert_eq!(before.seq, after.seq);
        }
        let deprovisions = guarded
            .runnable()
            .filter(|a| a.kind.threshold_class().is_some_and(|(c, _)| c == ActionClass::Deprovision))
            .count();
        let cap = documented_run_cap(max, quarter_percent, min_population, managed);
        prop_assert!(deprovisions <= cap, "{deprovisions} > {cap}");
        if complete {
            // The guard holds a class only when the whole of it is over the limit.
            let planned = plan
                .actions
                .iter()
                .filter(|a| a.kind.threshold_class().is_some_and(|(c, _)| c == ActionClass::Deprovision))
                .count();
            let threshold_held = guarded.held().any(|a| {
                a.kind.threshold_class().is_some_and(|(c, _)| c == ActionClass::Deprovision)
                    && matches!(a.held, Some(seatwarden::model::HoldReason::Threshold { .. }))
            });
            if planned <= cap {
                prop_assert!(!threshold_held, "{} within {} held", planned, cap);
            } else {
                prop_assert_eq!(deprovisions, 0, "over {} all wait", cap);
            }
        }
        if !complete {
            // Nothing that takes access away: an incomplete read proves nothing.
            let takes_access = |a: &&seatwarden::model::Action| {
                a.kind.threshold_class().is_some_and(|(class, _)| class.takes_access_away())
            };
            prop_assert_eq!(guarded.runnable().filter(takes_access).count(), 0);
        }
        let owners_before = active_owners(&s.workspace);
        let (after, _) = simulate(&s.workspace, &s.links, &guarded);
        if owners_before > 0 {
            prop_assert!(active_owners(&after) > 0, "guarded: {:#?}", guarded.actions);
        }
    }

    /// Members of a protected directory group, and accounts carrying their
    /// userName or email, never appear in any action.
    #[test]
    fn protected_group_members_are_never_touched(
        mut s in scenario(),
        groups in protected_groups().prop_filter("some group", |g| !g.is_empty()),
    ) {
        s.settings.protected = Protected::default().with_members_of(&groups, &s.directory);
        let plan = s.plan();
        let (accounts, identities) = touched(&plan);
        for identity in &s.directory.identities {
            if !identity.groups.iter().any(|g| groups.iter().any(|p| names_group(p, g))) {
                continue;
            }
            prop_assert!(!identities.contains(&identity.id), "{} touched", identity.user_name);
            for account in &s.workspace.accounts {
                let same = account.user_name.eq_ignore_ascii_case(&identity.user_name)
                    || identity.email.as_deref().is_some_and(|e| account.user_name.eq_ignore_ascii_case(e));
                if same {
                    prop_assert!(!accounts.contains(&account.id), "{} touched", account.user_name);
                }
            }
        }
    }

    /// No class of destructive actions passes its per-run or 24 h limit (count or
    /// percentage), whatever the counts already made today; the override lifts
    /// exactly the thresholds.
    #[test]
    fn no_plan_passes_a_threshold(
        s in scenario(),
        limits in proptest::collection::vec((0..8usize, quarter_percents(50), 0..16usize, quarter_percents(100)), 5),
        recent in proptest::collection::vec(0..12usize, 5),
        min_population in 0..20usize,
        managed in 0..40usize,
        allow in proptest::bool::weighted(0.2),
        owner_mapped in proptest::bool::ANY,
        every_other_group_granted_to_nobody in proptest::bool::ANY,
    ) {
        let plan = s.plan();
        // Half the groups the plan removes members from, when drawn.
        let mut removed_from: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                seatwarden::model::ActionKind::RemoveMembers { group, .. } => {
                    Some(seatwarden::policy::fold_group_name(group.display_name()))
                }
                _ => None,
            })
            .collect();
        removed_from.sort();
        removed_from.dedup();
        let granted_to_nobody: std::collections::BTreeSet<String> = removed_from
            .into_iter()
            .step_by(2)
            .filter(|_| every_other_group_granted_to_nobody)
            .collect();
        let settings = GuardSettings {
            max_deprovisions: limits[0].0,
            max_deprovision_percent: f64::from(limits[0].1) / 4.0,
            max_deprovisions_per_day: limits[0].2,
            max_deprovision_percent_per_day: f64::from(limits[0].3) / 4.0,
            max_membership_removals: limits[1].0,
            max_membership_removal_percent: f64::from(limits[1].1) / 4.0,
            max_membership_removals_per_day: limits[1].2,
            max_membership_removal_percent_per_day: f64::from(limits[1].3) / 4.0,
            max_role_downgrades: limits[2].0,
            max_role_downgrade_percent: f64::from(limits[2].1) / 4.0,
            max_role_downgrades_per_day: limits[2].2,
            max_role_downgrade_percent_per_day: f64::from(limits[2].3) / 4.0,
            max_deletions: limits[3].0,
            max_deletion_percent: f64::from(limits[3].1) / 4.0,
            max_deletions_per_day: limits[3].2,
            max_deletion_percent_per_day: f64::from(limits[3].3) / 4.0,
            max_renames: limits[4].0,
            max_rename_percent: f64::from(limits[4].1) / 4.0,
            max_renames_per_day: limits[4].2,
            max_rename_percent_per_day: f64::from(limits[4].3) / 4.0,
            min_population_for_percent: min_population,
            owner_mapped,
            granted_to_nobody: granted_to_nobody.clone(),
        };
        let input = GuardInput {
            directory_complete: true,
            managed_accounts: managed,
            recent: seatwarden::model::RecentCounts {
                deprovisions: recent[0],
                membership_removals: recent[1],
                role_downgrades: recent[2],
                deletions: recent[3],
                renames: recent[4],
            },
            allow_over_threshold: allow,
            unread: seatwarden::model::RecentCounts::default(),
        };
        let guarded = guard(plan.clone(), &s.workspace, &settings, &input);
        prop_assert_eq!(guarded.actions.len(), plan.actions.len());
        // Without a mapping to Owner, no Owner is demoted without a human, even
        // with the thresholds lifted.
        if !owner_mapped {
            let demoted = guarded.runnable().any(|a| {
                matches!(&a.kind, seatwarden::model::ActionKind::SetRole { from, to, .. }
                    if *to != seatwarden::model::Role::Owner
                        && from.iter().any(|r| r.parse() == Ok(seatwarden::model::Role::Owner)))
            });
            prop_assert!(!demoted);
        }
        // Nobody is removed from a group no mapping gives to anyone without a
        // human, even with the thresholds lifted.
        let emptied = guarded.runnable().any(|a| {
            matches!(&a.kind, seatwarden::model::ActionKind::RemoveMembers { group, .. }
                if granted_to_nobody.contains(&seatwarden::policy::fold_group_name(group.display_name())))
        });
        prop_assert!(!emptied);
        for class in ActionClass::ALL {
            let runnable: usize = guarded
                .runnable()
                .filter_map(|a| a.kind.threshold_class())
                .filter(|(c, _)| *c == class)
                .map(|(_, n)| n)
                .sum();
            let planned: usize = plan
                .actions
                .iter()
                .filter_map(|a| a.kind.threshold_class())
                .filter(|(c, _)| *c == class)
                .map(|(_, n)| n)
                .sum();
            if allow {
                // The override lifts the thresholds; the rules that are not
                // limits (last Owner, a wanted userName) still hold.
                let held_by_threshold = guarded.held().any(|a| {
                    a.kind.threshold_class().is_some_and(|(c, _)| c == class)
                        && matches!(
                            a.held,
                            Some(seatwarden::model::HoldReason::Threshold { .. })
                        )
                });
                prop_assert!(!held_by_threshold);
                continue;
            }
            let limits = settings.limits(class);
            // Drawn in quarters of a percent: read back exactly.
            let quarter_percent = (limits.percent * 4.0).round() as u32;
            let run_cap = documented_run_cap(limits.per_run, quarter_percent, min_population, managed);
            let quarter_percent_per_day = (limits.percent_per_day * 4.0).round() as u32;
            let day_cap = documented_run_cap(limits.per_day, quarter_percent_per_day, min_population, managed);
            let within = planned <= run_cap && planned + input.recent.get(class) <= day_cap;
            let threshold_held = guarded.held().any(|a| {
                a.kind.threshold_class().is_some_and(|(c, _)| c == class)
                    && matches!(a.held, Some(seatwarden::model::HoldReason::Threshold { .. }))
            });
            // Within its limits a class is never held by a threshold.
            prop_assert_eq!(threshold_held, !within && planned > 0, "{}", class);
            if runnable > 0 {
                prop_assert!(runnable <= run_cap, "{class}: {runnable}");
                prop_assert!(runnable + input.recent.get(class) <= day_cap, "{class}: {runnable}");
            }
        }
    }

    /// The settle window, with each drift key its own age (some never seen before,
    /// so first seen now): deprovisions never wait; an action that goes has every
    /// key settled, one that waits has at least one unsettled; a membership batch
    /// that settles in part goes with its settled members, and the others wait in
    /// an action appended with a new seq; no member is lost or doubled, and nothing
    /// else changes, moves or disappears.
    #[test]
    fn the_settle_window_never_delays_deprovisions(
        s in scenario(),
        ages in proptest::collection::vec(proptest::option::weighted(0.7, 0..20i64), 64),
        settle_minutes in 0..15i64,
    ) {
        use std::collections::HashMap;
        use seatwarden::guard::{hold_unsettled, settle_keys};
        use seatwarden::model::{Action, HoldReason};

        let plan = s.plan();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let settle = chrono::Duration::minutes(settle_minutes);
        let mut keys: Vec<String> = plan.actions.iter().flat_map(settle_keys).collect();
        keys.sort();
        keys.dedup();
        // A key without an age is missing from the map: seen for the first time now.
        let first_seen: HashMap<String, _> = keys
            .iter()
            .zip(ages.iter().cycle())
            .filter_map(|(k, age)| Some((k.clone(), now - chrono::Duration::minutes((*age)?))))
            .collect();
        let settled = |key: &String| {
            settle_minutes == 0 || first_seen.get(key).is_some_and(|t| now - *t >= settle)
        };
        let out = hold_unsettled(plan.clone(), &first_seen, now, settle.to_std().unwrap());

        prop_assert!(out.actions.len() >= plan.actions.len());
        let (kept, added) = out.actions.split_at(plan.actions.len());
        for (before, after) in plan.actions.iter().zip(kept) {
            prop_assert_eq!(before.seq, after.seq);
            match (&before.kind, &after.kind) {
                (
                    ActionKind::AddMembers { group: a, .. },
                    ActionKind::AddMembers { group: b, .. },
                )
                | (
                    ActionKind::RemoveMembers { group: a, .. },
                    ActionKind::RemoveMembers { group: b, .. },
                ) => prop_assert_eq!(a, b),
                (a, b) => prop_assert_eq!(a, b),
            }
        }
        let old_max = plan.actions.iter().map(|a| a.seq).max();
        let mut seqs = BTreeSet::new();
        for action in added {
            prop_assert!(
                matches!(
                    action.kind,
                    ActionKind::AddMembers { .. } | ActionKind::RemoveMembers { .. }
                ),
                "only a membership batch is split: {:?}",
                action
            );
            prop_assert!(action.held.is_some(), "{:?}", action);
            prop_assert!(old_max.is_some_and(|m| action.seq > m), "{:?}", action);
            prop_assert!(seqs.insert(action.seq), "seq {} twice", action.seq);
        }
        for action in &out.actions {
            let keys = settle_keys(action);
            match &action.held {
                None => prop_assert!(
                    keys.iter().all(settled),
                    "runs with an unsettled key: {:?}",
                    action
                ),
                Some(HoldReason::Settling { first_seen, settles_at }) => {
                    prop_assert!(!action.kind.is_deprovision(), "{:?}", action);
                    prop_assert!(
                        keys.iter().any(|k| !settled(k)),
                        "waits with every key settled: {:?}",
                        action
                    );
                    prop_assert!(*settles_at > now && *settles_at == *first_seen + settle);
                }
                Some(other) => prop_assert!(false, "held for {other:?}"),
            }
        }
        // Every batch's members, by kind and group, before and after.
        let members = |actions: &[Action]| {
            let mut by_group: BTreeMap<(bool, String), Vec<String>> = BTreeMap::new();
            for action in actions {
                let (add, group, members): (bool, String, Vec<String>) = match &action.kind {
                    ActionKind::AddMembers { group, members } => (
                        true,
                        format!("{group:?}"),
                        members.iter().map(|m| format!("{m:?}")).collect(),
                    ),
                    ActionKind::RemoveMembers { group, members } => {
                        (false, format!("{group:?}"), members.clone())
                    }
                    _ => continue,
                };
                by_group.entry((add, group)).or_default().extend(members);
            }
            for members in by_group.values_mut() {
                members.sort();
            }
            by_group
        };
        prop_assert_eq!(members(&plan.actions), members(&out.actions));
    }

    /// A person the directory no longer has, whom an exception in force keeps
    /// under the name the ledger has of them, gets no action, nor does an
    /// account a stored link gives them alone.
    #[test]
    fn a_departed_person_an_exception_keeps_is_untouched(s in scenario()) {
        let plan = s.plan();
        let (accounts, identities) = touched(&plan);
        for (departed, _) in s.settings.protected.departed() {
            prop_assert!(!identities.contains(departed), "{departed}: {:#?}", plan.actions);
            for link in s.links.iter().filter(|l| l.identity_id == departed) {
                let shared = s.links.iter().any(|l| l.account_id == link.account_id && l.identity_id != departed);
                if !shared {
                    prop_assert!(!accounts.contains(&link.account_id), "{link:?}: {:#?}", plan.actions);
                }
            }
        }
    }

    /// Disputed identities and accounts get no actions.
    #[test]
    fn disputes_are_never_acted_on(s in scenario()) {
        let plan = s.plan();
        let (accounts, identities) = touched(&plan);
        for item in plan.drift.iter().filter(|d| d.kind == DriftKind::DisputedMatch) {
            match (&item.account_id, &item.identity_id) {
                (Some(account), _) => prop_assert!(!accounts.contains(account), "{item:?}"),
                // An identity-level dispute: nothing for that person at all.
                (None, Some(identity)) => prop_assert!(!identities.contains(identity), "{item:?}"),
                // A group name several workspace groups share: no group of that
                // name is written to or created.
                (None, None) => {
                    let named = |name: &str| name.eq_ignore_ascii_case(&item.user_name);
                    prop_assert!(
                        !plan.actions.iter().any(|a| match &a.kind {
                            ActionKind::AddMembers { group, .. }
                            | ActionKind::RemoveMembers { group, .. } => named(group.display_name()),
                            ActionKind::CreateGroup { display_name } => named(display_name),
                            _ => false,
                        }),
                        "{item:?}"
                    );
                    prop_assert!(
                        s.workspace.groups.iter().filter(|g| named(&g.display_name)).count() > 1,
                        "dispute names nothing: {item:?}"
                    );
                }
            }
        }
        for link in &plan.new_links {
            prop_assert!(!plan.drift.iter().any(|d| d.kind == DriftKind::DisputedMatch
                && (d.account_id.as_ref() == Some(&link.account_id)
                    || (d.account_id.is_none() && d.identity_id.as_ref() == Some(&link.identity_id)))));
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A deactivated account's memberships change only with its reactivation:
    /// a leaver's and an orphan's are left alone (they grant nothing, and a
    /// provider's `groups` of a deactivated account, from which the workspace
    /// read counts its memberships, may be stale: a removal would change
    /// nothing, planned again on every run), under every `unmatched_accounts`.
    #[test]
    fn a_deactivated_accounts_memberships_change_only_with_its_reactivation(s in scenario()) {
        let plan = s.plan();
        let reactivated: BTreeSet<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::Reactivate { account_id } => Some(account_id.as_str()),
                _ => None,
            })
            .collect();
        let inactive: BTreeSet<&str> = s
            .workspace
            .accounts
            .iter()
            .filter(|a| !a.active)
            .map(|a| a.id.as_str())
            .collect();
        for action in &plan.actions {
            let members: Vec<&str> = match &action.kind {
                ActionKind::AddMembers { members, .. } => members
                    .iter()
                    .filter_map(|m| match m {
                        AccountRef::Existing { id } => Some(id.as_str()),
                        AccountRef::Created { .. } => None,
                    })
                    .collect(),
                ActionKind::RemoveMembers { members, .. } => {
                    members.iter().map(String::as_str).collect()
                }
                _ => continue,
            };
            for id in members {
                prop_assert!(
                    !inactive.contains(id) || reactivated.contains(id),
                    "{:?}: deactivated {id} is not reactivated: {:#?}",
                    s.settings.unmatched_accounts,
                    plan.actions
                );
            }
        }
    }

    /// No account is deprovisioned that someone who should have access claims by
    /// the rule that decides it, as the matching order documents it: a stored
    /// link or an `externalId` naming someone in the directory, else the
    /// userName, else (no userName match) the email, case, composition and white
    /// space at either end aside.
    #[test]
    fn no_account_someone_should_keep_is_deprovisioned(s in scenario()) {
        let plan = s.plan();
        let desired = s.desired();
        let fold = seatwarden::model::fold_case;
        let ids: BTreeSet<&str> = s.directory.identities.iter().map(|i| i.id.as_str()).collect();
        for action in &plan.actions {
            let (ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. }) =
                &action.kind
            else {
                continue;
            };
            // Nobody the directory shows active and in scope loses an account
            // for being a leaver.
            if let Some(person) = &action.identity_id {
                prop_assert!(
                    !desired.active.contains_key(person.as_str()),
                    "{} should have access, yet {:#?}", person, action
                );
            }
            let Some(account) = s.workspace.accounts.iter().find(|a| &a.id == account_id) else {
                continue;
            };
            let mut claimants: Vec<&str> = s
                .links
                .iter()
                .filter(|l| &l.account_id == account_id)
                .map(|l| l.identity_id.as_str())
                .collect();
            claimants.extend(account.external_id.as_deref().filter(|e| ids.contains(e)));
            if claimants.is_empty() {
                let by = |same: &dyn Fn(&Identity) -> bool| -> Vec<&str> {
                    s.directory.identities.iter().filter(|i| same(i)).map(|i| i.id.as_str()).collect()
                };
                // Trimmed, as matching compares them (white space at an end is a typo).
                let key = |name: &str| fold(name.trim());
                claimants = by(&|i| key(&i.user_name) == key(&account.user_name));
                if claimants.is_empty() {
                    claimants = by(&|i| {
                        i.email.is_some() && i.email.as_deref().map(key) == account.email.as_deref().map(key)
                    });
                }
            }
            for claimant in claimants {
                prop_assert!(
                    !desired.active.contains_key(claimant),
                    "{} deprovisioned, but {} should have access and claims it: {:#?}",
                    account_id, claimant, action
                );
            }
        }
    }

    /// A leaver plainly linked to an active account (one link each way, its
    /// `externalId` naming nobody else in the directory, neither side protected)
    /// has that account deprovisioned: no rule lets a leaver slip through.
    #[test]
    fn a_plainly_linked_leaver_is_deprovisioned(s in scenario()) {
        let plan = s.plan();
        let desired = s.desired();
        let ids: BTreeSet<&str> = s.directory.identities.iter().map(|i| i.id.as_str()).collect();
        let deprovisioned: BTreeSet<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::Deactivate { account_id } | ActionKind::Delete { account_id, .. } => {
                    Some(account_id.as_str())
                }
                _ => None,
            })
            .collect();
        for link in &s.links {
            let leaver = link.identity_id.as_str();
            if desired.active.contains_key(leaver)
                || s.links
                    .iter()
                    .filter(|l| l.identity_id == link.identity_id || l.account_id == link.account_id)
                    .count()
                    != 1
            {
                continue;
            }
            let Some(account) = s.workspace.accounts.iter().find(|a| a.id == link.account_id) else {
                continue;
            };
            let names_another = account
                .external_id
                .as_deref()
                .is_some_and(|e| e != leaver && ids.contains(e));
            let protected = s.settings.protected.matches(&account.user_name)
                || s
                    .directory
                    .identities
                    .iter()
                    .find(|i| i.id == leaver)
                    .is_some_and(|i| s.settings.protected.matches(&i.user_name))
                // A person the directory no longer has, kept by an exception
                // under the name the ledger keeps.
                || s.settings.protected.departed_name(leaver).is_some();
            if !account.active || names_another || protected {
                continue;
            }
            prop_assert!(
                deprovisioned.contains(account.id.as_str()),
                "leaver {} keeps {}: {:#?}",
                leaver, account.id, plan.actions
            );
        }
    }

    /// The order in which the directory lists people, the workspace lists
    /// accounts, groups and members, and the store returns links changes nothing
    /// in the plan; the order of an account's several role values changes none
    /// of its settle keys (a provider need not keep either order between reads,
    /// and a changed key restarts the settle window).
    #[test]
    fn the_plan_does_not_depend_on_listing_order(
        s in scenario(),
        reverse in proptest::array::uniform4(any::<bool>()),
        rotate in 0..7usize,
    ) {
        let plan = s.plan();
        let mut shuffled = s.clone();
        if reverse[0] {
            shuffled.workspace.accounts.reverse();
        }
        let n = shuffled.workspace.accounts.len();
        if n > 0 {
            shuffled.workspace.accounts.rotate_left(rotate % n);
        }
        if reverse[1] {
            shuffled.workspace.groups.reverse();
            for group in &mut shuffled.workspace.groups {
                group.members.reverse();
            }
        }
        if reverse[2] {
            shuffled.directory.identities.reverse();
        }
        if reverse[3] {
            shuffled.links.reverse();
        }
        prop_assert_eq!(&plan, &shuffled.plan());
        let mut reordered = s.clone();
        for account in &mut reordered.workspace.accounts {
            account.roles.reverse();
        }
        let keys = |p: &Plan| p.actions.iter().flat_map(seatwarden::guard::settle_keys).collect::<Vec<_>>();
        prop_assert_eq!(keys(&plan), keys(&reordered.plan()));
    }
}

/// The plan held as a run holds it: the guard with small limits, the settle
/// window with some of the drift first seen now, and what depends on a held
/// action (`hold_dependents`).
fn held_as_a_run_holds(s: &Scenario, limits: &[usize], settled: &[bool]) -> Plan {
    use seatwarden::guard::{hold_dependents, hold_unsettled, settle_keys};
    let settings = GuardSettings {
        max_deprovisions: limits[0],
        max_membership_removals: limits[1],
        max_role_downgrades: limits[2],
        max_deletions: limits[3],
        max_renames: limits[4],
        ..GuardSettings::unlimited()
    };
    let input = GuardInput {
        directory_complete: true,
        managed_accounts: 10,
        ..GuardInput::default()
    };
    let guarded = guard(s.plan(), &s.workspace, &settings, &input);
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut keys: Vec<String> = guarded.actions.iter().flat_map(settle_keys).collect();
    keys.sort();
    keys.dedup();
    let first_seen: std::collections::HashMap<String, _> = keys
        .iter()
        .zip(settled.iter().cycle())
        .map(|(k, &old)| {
            let seen = if old {
                now - chrono::Duration::hours(1)
            } else {
                now
            };
            (k.clone(), seen)
        })
        .collect();
    hold_dependents(hold_unsettled(
        guarded,
        &first_seen,
        now,
        std::time::Duration::from_secs(600),
    ))
}

/// A plan's changes one by one, a membership batch member by member, and a
/// member created by the plan under the id `simulate` gives it once made.
fn atoms(plan: &Plan, only_held: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for action in &plan.actions {
        if only_held && action.held.is_none() {
            continue;
        }
        match &action.kind {
            ActionKind::AddMembers { group, members } => {
                for member in members {
                    let id = match member {
                        AccountRef::Existing { id } => id.strip_prefix("new:").unwrap_or(id),
                        AccountRef::Created { identity_id } => identity_id,
                    };
                    out.insert(format!("add {} {id}", group.display_name().to_lowercase()));
                }
            }
            ActionKind::RemoveMembers { group, members } => {
                for member in members {
                    out.insert(format!(
                        "remove {} {member}",
                        group.display_name().to_lowercase()
                    ));
                }
            }
            ActionKind::CreateGroup { display_name } => {
                out.insert(format!("create group {}", display_name.to_lowercase()));
            }
            // Which userName a delete frees depends on what else goes with it.
            ActionKind::Delete { account_id, .. } => {
                out.insert(format!("delete {account_id}"));
            }
            kind => {
                out.insert(format!("{kind:?}"));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(cases(256))]

    /// A plan applied in part — what the guard, the settle window and the holds
    /// that follow them let through — leaves nothing new to do: the next plan
    /// holds only what was held, and a write batch never sends a create or
    /// rename onto a userName an account still has because what freed it is held.
    #[test]
    fn a_plan_applied_in_part_leaves_only_what_was_held(
        s in scenario(),
        limits in proptest::collection::vec(0..4usize, 5),
        settled in proptest::collection::vec(any::<bool>(), 64),
    ) {
        let held = held_as_a_run_holds(&s, &limits, &settled);
        let taken = user_name_taken_in_a_batch(&s.workspace, &held);
        prop_assert!(taken.is_none(), "{}", taken.unwrap_or_default());
        let (workspace, links) = simulate(&s.workspace, &s.links, &held);
        let next = s.plan_remembering(&workspace, &links, &held.disputed_candidates);
        let was_held = atoms(&held, true);
        let again = atoms(&next, false);
        let new: Vec<&String> = again.difference(&was_held).collect();
        prop_assert!(new.is_empty(), "new after a partial apply: {new:#?}\nfirst: {:#?}", held.actions);
    }
}

proptest! {
    // Thirteen plans a case: fewer cases keep the module's time.
    #![proptest_config(cases(48))]

    /// Every account tied to a person the directory then deletes — linked to
    /// them, or reported as their duplicate — is deleted once time has passed
    /// the retention period, whichever of them was deactivated (and so
    /// deleted) first: none stays disputed or an orphan for good. Only a
    /// person left in the directory may claim one of them instead.
    #[test]
    fn a_deleted_persons_accounts_all_go_in_the_end(
        s in scenario(),
        leaving in proptest::collection::vec(any::<bool>(), IDENTITY_IDS),
        held in proptest::collection::vec(any::<bool>(), ACCOUNT_IDS),
    ) {
        let mut s = s;
        s.settings.deprovision = DeprovisionAction::Delete;
        s.settings.unmatched_accounts = UnmatchedAccounts::Report;
        s.settings.protected = Protected::default();
        s.settings.retention.delete_after = chrono::TimeDelta::days(30);
        s.settings.retention.deactivated_since.clear();
        s.directory.complete = true;
        let flag = |flags: &[bool], id: &str| {
            id.get(1..)
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| flags.get(n).copied())
                .unwrap_or(false)
        };
        // One reconcile as the daemon makes it: plan, apply what is not held,
        // keep the retention clocks and the remembered disputes.
        let day = |s: &mut Scenario, hold: bool| {
            let plan = s.plan();
            let mut applied = plan.clone();
            applied.actions.retain(|a| {
                !(hold && a.kind.account_id().is_some_and(|id| flag(&held, id)))
            });
            let changes = seatwarden::safety::clock_changes(
                &s.settings.retention.deactivated_since,
                &plan.retained,
                &s.workspace,
                true,
                true,
            );
            let now = s.settings.retention.now;
            let clocks = &mut s.settings.retention.deactivated_since;
            for id in changes.forget {
                clocks.remove(&id);
            }
            for id in changes.start {
                clocks.insert(id, now);
            }
            (s.workspace, s.links) = simulate(&s.workspace, &s.links, &applied);
            s.remembered = plan.disputed_candidates.clone();
            s.settings.retention.now += chrono::TimeDelta::days(1);
            plan
        };
        day(&mut s, false);
        let before = day(&mut s, false);
        let present: BTreeSet<String> = s.directory.identities.iter().map(|i| i.id.clone()).collect();
        let disputed: BTreeSet<&str> = before
            .drift
            .iter()
            .filter(|d| d.kind == DriftKind::DisputedMatch && d.account_id.is_none())
            .filter_map(|d| d.identity_id.as_deref())
            .collect();
        let leavers: BTreeSet<String> = present
            .iter()
            .filter(|id| flag(&leaving, id) && !disputed.contains(id.as_str()))
            .cloned()
            .collect();
        // Tied to a leaver: a link, or their duplicate's item.
        let tied: BTreeMap<String, String> = s
            .links
            .iter()
            .filter(|l| leavers.contains(&l.identity_id))
            .map(|l| (l.account_id.clone(), l.identity_id.clone()))
            .chain(before.drift.iter().filter_map(|d| {
                let identity = d.identity_id.as_ref()?;
                let account = d.account_id.clone()?;
                (d.kind == DriftKind::DisputedMatch
                    && d.detail.starts_with("duplicate account:")
                    && leavers.contains(identity))
                .then(|| (account, identity.clone()))
            }))
            .filter(|(account, _)| s.workspace.accounts.iter().any(|a| &a.id == account))
            // A link in dispute (its account's externalId names someone
            // else, say) ties nobody for sure.
            .filter(|(account, _)| {
                !before.drift.iter().any(|d| {
                    d.kind == DriftKind::DisputedMatch
                        && d.account_id.as_ref() == Some(account)
                        && !d.detail.starts_with("duplicate account:")
                })
            })
            .collect();
        s.directory.identities.retain(|i| !leavers.contains(&i.id));
        for _ in 0..3 {
            day(&mut s, true);
        }
        day(&mut s, false);
        let mut last = day(&mut s, false);
        for _ in 0..3 {
            s.settings.retention.now += chrono::TimeDelta::days(31);
            last = day(&mut s, false);
        }
        let claimed: BTreeSet<&str> = s
            .links
            .iter()
            .filter(|l| present.contains(&l.identity_id) && !leavers.contains(&l.identity_id))
            .map(|l| l.account_id.as_str())
            .chain(last.new_links.iter().map(|l| l.account_id.as_str()))
            .chain(last.drift.iter().filter_map(|d| {
                let identity = d.identity_id.as_ref()?;
                (!leavers.contains(identity) && present.contains(identity))
                    .then_some(d.account_id.as_deref())
                    .flatten()
            }))
            // An account that may be the account of someone left in the
            // directory (a candidate of their disputed match, or one several
            // of them match, whose own item names them): kept until `link`
            // says whose it is, never deleted.
            .chain(
                last.disputed_candidates
                    .iter()
                    .filter(|c| {
                        !leavers.contains(&c.identity_id) && present.contains(&c.identity_id)
                    })
                    .map(|c| c.account_id.as_str()),
            )
            .chain(last.drift.iter().filter_map(|d| {
                (d.kind == DriftKind::DisputedMatch
                    && d.identity_id.is_none()
                    && d.detail.starts_with("matches several identities"))
                .then_some(d.account_id.as_deref())
                .flatten()
            }))
            .collect();
        for (account, identity) in &tied {
            let left = s.workspace.accounts.iter().find(|a| &a.id == account);
            prop_assert!(
                left.is_none() || claimed.contains(account.as_str()),
                "account {account} of deleted {identity} stays: {left:#?}; the last plan: {last:#?}"
            );
        }
    }
}
