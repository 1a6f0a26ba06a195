//! Session 53 review: what `explain` tells an operator about one person or
//! account agrees with what the plan does with them. Each scenario stores a
//! run's snapshots, links and ledger, makes the plan a run would make from them
//! (policy, `safety::plan_settings_at`, remembered disputes) and reads `explain`
//! for every identity and account; the property test does the same over
//! generated scenarios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use seatwarden::config::Config;
use seatwarden::model::{
    Account, ActionKind, DirectorySnapshot, Identity, IdentityStatus, Link, LinkMethod, LossReason,
    NewLink, Plan, WorkspaceGroup, WorkspaceSnapshot,
};
use seatwarden::store::{RunKind, RunStatus, Store};

pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The time `explain` and the plan are judged at: an hour after the run.
pub(crate) fn now() -> DateTime<Utc> {
    t0() + Duration::hours(1)
}

pub(crate) fn identity(
    id: &str,
    user_name: &str,
    status: IdentityStatus,
    groups: &[&str],
) -> Identity {
    Identity {
        id: id.into(),
        user_name: user_name.into(),
        email: Some(user_name.into()),
        given_name: None,
        family_name: None,
        display_name: None,
        status,
        department: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

pub(crate) fn account(
    id: &str,
    user_name: &str,
    external_id: Option<&str>,
    active: bool,
) -> Account {
    Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: external_id.map(str::to_owned),
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some(user_name.into()),
        active,
        roles: vec!["Viewer".into()],
    }
}

/// A stored run's state and the config it is read with.
pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub(crate) config: Config,
    pub(crate) store: Store,
}

/// One scenario: what the run read, the links stored, the ledger's open
/// deprovisions (`(identity id, account id, directory userName)`) and `extra`
/// TOML for the config.
pub(crate) struct Scenario<'a> {
    pub(crate) extra: &'a str,
    pub(crate) identities: Vec<Identity>,
    pub(crate) accounts: Vec<Account>,
    pub(crate) groups: Vec<WorkspaceGroup>,
    pub(crate) links: Vec<(&'a str, &'a str)>,
    pub(crate) departed: Vec<(&'a str, &'a str, &'a str)>,
}

impl Scenario<'_> {
    pub(crate) fn store(self) -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
        let file = dir.path().join("seatwarden.toml");
        std::fs::write(
            &file,
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
                 [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n{}",
                self.extra
            ),
        )
        .unwrap();
        let config = Config::load_with_env(&file, Some(HashMap::new())).unwrap();
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, t0()).unwrap();
        store
            .save_directory_snapshot(
                run,
                &DirectorySnapshot {
                    identities: self.identities,
                    complete: true,
                },
            )
            .unwrap();
        store
            .save_workspace_snapshot(
                run,
                &WorkspaceSnapshot {
                    accounts: self.accounts,
                    groups: self.groups,
                },
            )
            .unwrap();
        let links: Vec<NewLink> = self
            .links
            .iter()
            .map(|(identity_id, account_id)| NewLink {
                identity_id: (*identity_id).into(),
                account_id: (*account_id).into(),
                method: LinkMethod::ExternalId,
            })
            .collect();
        store.upsert_links(&links, t0()).unwrap();
        let open: Vec<seatwarden::sla::NewEntry> = self
            .departed
            .iter()
            .map(
                |(identity_id, account_id, user_name)| seatwarden::sla::NewEntry {
                    identity_id: (*identity_id).into(),
                    account_id: Some((*account_id).into()),
                    user_name: (*user_name).into(),
                    reason: LossReason::Suspended,
                    detected_at: t0() - Duration::days(2),
                    due_at: t0() - Duration::days(2) + Duration::hours(1),
                },
            )
            .collect();
        store
            .update_ledger(
                &seatwarden::sla::LedgerChanges {
                    open,
                    ..Default::default()
                },
                t0() - Duration::days(2),
            )
            .unwrap();
        store
            .finish_run(run, t0(), RunStatus::Succeeded, None)
            .unwrap();
        World {
            _dir: dir,
            config,
            store,
        }
    }
}

impl World {
    /// The plan a run at [`now`] makes from the stored state, before the guard
    /// (which only holds actions, never adds or drops one).
    pub(crate) fn plan(&self) -> Plan {
        let run = self.store.latest_snapshot_run().unwrap().unwrap();
        let directory = self.store.load_directory_snapshot(run).unwrap().unwrap();
        let workspace = self.store.load_workspace_snapshot(run).unwrap().unwrap();
        let links: Vec<Link> = self
            .store
            .links()
            .unwrap()
            .into_iter()
            .map(|l| Link {
                identity_id: l.identity_id,
                account_id: l.account_id,
            })
            .collect();
        let desired = seatwarden::policy::desired_state(&directory, &self.config.policy_settings());
        seatwarden::plan::plan(
            &desired,
            &directory,
            &workspace,
            &links,
            &self.store.disputed_candidates().unwrap(),
            &seatwarden::safety::plan_settings_at(&self.config, &directory, &self.store, now())
                .unwrap(),
        )
    }

    pub(crate) fn explain(&self, person: &str) -> String {
        seatwarden::explain::explain(&self.config, &self.store, person, now())
            .unwrap_or_else(|e| panic!("explain {person}: {e}"))
    }
}

/// The lines of `text`'s section that starts with `header`, up to the next
/// section (a line that does not start with a space).
pub(crate) fn section<'t>(text: &'t str, header: &str) -> Vec<&'t str> {
    text.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The plan's actions that write to `account_id`.
pub(crate) fn actions_on<'p>(plan: &'p Plan, account_id: &str) -> Vec<&'p ActionKind> {
    plan.actions
        .iter()
        .map(|a| &a.kind)
        .filter(|k| {
            k.account_id() == Some(account_id)
                || matches!(k, ActionKind::RemoveMembers { members, .. }
                    if members.iter().any(|m| m == account_id))
                || matches!(k, ActionKind::AddMembers { members, .. }
                    if members.iter().any(|m| matches!(m,
                        seatwarden::model::AccountRef::Existing { id } if id == account_id)))
        })
        .collect()
}

/// HR keeps a leaver's access for their notice period; the exception names
/// their directory userName, their account has another. The directory then
/// deletes them while their deprovision is open in the ledger: the plan keeps
/// the account by the name the ledger keeps (`safety::with_departed`) and lists
/// it as excepted. `explain` of the account said "no access: no directory
/// identity justifies this account" and nothing of the exception, as if the
/// next run's "nothing" were an oversight; explained by the person's id or
/// directory userName, it found nobody at all.
#[test]
fn an_exception_for_a_departed_person_is_told_as_the_plan_keeps_it() {
    let world = Scenario {
        extra: "[[safety.exceptions]]\nuser_name = \"leaver@example.com\"\n\
                until = \"2026-12-20\"\nreason = \"notice period\"\n",
        identities: vec![identity(
            "p2",
            "stays@example.com",
            IdentityStatus::Active,
            &[],
        )],
        accounts: vec![
            account("a1", "renamed@example.com", Some("p1"), true),
            account("a2", "stays@example.com", Some("p2"), true),
        ],
        groups: vec![],
        links: vec![("p1", "a1"), ("p2", "a2")],
        departed: vec![("p1", "a1", "leaver@example.com")],
    }
    .store();
    let plan = world.plan();
    assert!(actions_on(&plan, "a1").is_empty(), "{plan:?}");
    assert_eq!(plan.excepted.len(), 1, "{plan:?}");

    for person in ["a1", "renamed@example.com", "p1", "leaver@example.com"] {
        let text = world.explain(person);
        assert!(
            section(&text, "Deprovision ledger")[0].contains("suspended in the directory"),
            "{text}"
        );
        let scope = section(&text, "Scope").join("\n");
        assert!(
            scope.contains("exception: kept as it is until")
                && scope.contains("safety.exceptions for leaver@example.com"),
            "{text}"
        );
        assert!(
            !scope.contains("no directory identity justifies this account"),
            "{text}"
        );
        assert_eq!(section(&text, "Next run"), ["  nothing"], "{text}");
    }
}

/// A person deleted from the directory is linked to an account whose externalId
/// names someone else: the plan doubts the link, lists the person as a disputed
/// leaver and deactivates nothing until someone says whose account it is.
/// `explain` of the account showed no dispute and said its person had no
/// access, beside a "Next run: nothing" that then read as an oversight.
#[test]
fn a_doubted_link_of_a_departed_person_is_told_as_the_dispute_it_is() {
    let world = Scenario {
        extra: "",
        identities: vec![identity(
            "p2",
            "u2@example.com",
            IdentityStatus::Active,
            &[],
        )],
        accounts: vec![
            account("a0", "u2@example.com", Some("p2"), true),
            account("a2", "u0@example.com", Some("p2"), true),
        ],
        groups: vec![],
        links: vec![("p2", "a0"), ("p0", "a2")],
        departed: vec![],
    }
    .store();
    let plan = world.plan();
    assert!(actions_on(&plan, "a2").is_empty(), "{plan:?}");
    assert_eq!(plan.disputed_leavers.len(), 1, "{plan:?}");
    for person in ["a2", "p0"] {
        let text = world.explain(person);
        assert_eq!(
            section(&text, "Scope"),
            ["  undecided: whose account this is is disputed (see Disputed match)"],
            "{text}"
        );
        let dispute = section(&text, "Disputed match").join("\n");
        assert!(
            dispute.contains("whose externalId names identity p2")
                && dispute.contains("seatwarden link p2 a2 --replace"),
            "{text}"
        );
    }
}

/// A leaver's deactivated account waits out `deprovision.delete_after`; HR then
/// asks to keep it, and an exception names it. The plan keeps it (no delete,
/// and the next reconcile forgets its retention clock), but `explain` still
/// said "deleted from" a time already past, beside "Next run: nothing": the
/// operator who added the exception could not tell which to believe. The same
/// for a suspended leaver (a suspension never deletes) and a person back in
/// the directory.
#[test]
fn a_retention_clock_the_plan_does_not_delete_by_is_not_told_as_a_deletion() {
    let world = Scenario {
        extra: "[deprovision]\naction = \"delete\"\ndelete_after = \"30d\"\n\
                [[safety.exceptions]]\nuser_name = \"kept@example.com\"\n\
                until = \"2026-12-20\"\nreason = \"legal hold\"\n",
        identities: vec![
            identity("p1", "kept@example.com", IdentityStatus::Deprovisioned, &[]),
            identity("p2", "gone@example.com", IdentityStatus::Deprovisioned, &[]),
            identity("p3", "paused@example.com", IdentityStatus::Suspended, &[]),
            identity("p4", "back@example.com", IdentityStatus::Active, &[]),
        ],
        accounts: vec![
            account("a1", "kept@example.com", Some("p1"), false),
            account("a2", "gone@example.com", Some("p2"), false),
            account("a3", "paused@example.com", Some("p3"), false),
            account("a4", "back@example.com", Some("p4"), false),
        ],
        groups: vec![],
        links: vec![("p1", "a1"), ("p2", "a2"), ("p3", "a3"), ("p4", "a4")],
        departed: vec![],
    }
    .store();
    let mut world = world;
    let ids: Vec<String> = ["a1", "a2", "a3", "a4"].map(str::to_owned).to_vec();
    world
        .store
        .update_deactivated(&ids, &[], t0() - Duration::days(40))
        .unwrap();
    let plan = world.plan();
    let deleted: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Delete { .. }))
        .filter_map(|a| a.kind.account_id())
        .collect();
    assert_eq!(deleted, ["a2"], "{plan:?}");
    let deletion = |person: &str| {
        let text = world.explain(person);
        section(&text, "Workspace account")
            .into_iter()
            .find(|l| l.starts_with("  deletion:"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no deletion line\n{text}"))
    };
    assert!(
        deletion("a2").contains("; deleted from "),
        "{}",
        deletion("a2")
    );
    for kept in ["a1", "a3", "a4"] {
        let line = deletion(kept);
        assert!(!line.contains("deleted from"), "{kept}: {line}");
        assert!(
            line.contains("the next run does not delete it"),
            "{kept}: {line}"
        );
    }
}

/// A suspended leaver is linked to one account and a second one matches them
/// by userName: the plan deactivates both, the second as a duplicate. `explain`
/// of that second account said "no directory identity justifies this account"
/// and "no directory identity matches the account below", an orphan, beside a
/// next run that deactivates it as the leaver's duplicate, with no ledger. It
/// shows the leaver and says the account is a duplicate of their linked one.
#[test]
fn a_leavers_duplicate_is_explained_with_the_leaver() {
    let world = Scenario {
        extra: "",
        identities: vec![identity(
            "p0",
            "u0@example.com",
            IdentityStatus::Suspended,
            &[],
        )],
        accounts: vec![
            account("a0", "u0@example.com", None, true),
            account("a1", "first@example.com", Some("p0"), true),
        ],
        groups: vec![],
        links: vec![("p0", "a1")],
        departed: vec![("p0", "a1", "u0@example.com")],
    }
    .store();
    let plan = world.plan();
    assert!(
        actions_on(&plan, "a0")
            .iter()
            .any(|k| matches!(k, ActionKind::Deactivate { .. })),
        "{plan:?}"
    );
    let text = world.explain("a0");
    assert_eq!(
        section(&text, "Scope"),
        ["  no access: identity is suspended in the directory"],
        "{text}"
    );
    assert_eq!(
        section(&text, "Link"),
        [
            "  no stored link (the account below matches this person by userName, but they are \
          linked to account a1: a duplicate, treated with it)"
        ],
        "{text}"
    );
    assert!(
        section(&text, "Deprovision ledger")[0].contains("suspended in the directory"),
        "{text}"
    );
}

/// An orphan (no directory identity matches it) is deactivated, reported or
/// adopted by `policy.unmatched_accounts`; `explain` said "no access: no
/// directory identity justifies this account" under each alike, which beside
/// "Next run: nothing" under `report` or `adopt` read as an account about to
/// lose access that keeps it. It says what the setting makes of it, as the
/// plan does: under `deactivate`, its memberships of managed groups go with
/// its access (and a deactivated one's are left alone, as it is).
#[test]
fn an_orphan_is_told_as_its_setting_makes_the_plan_treat_it() {
    for (setting, told, deactivated) in [
        (
            "report",
            "left as it is and reported every run as orphaned",
            false,
        ),
        (
            "adopt",
            "adopted as it is, never touched nor reported",
            false,
        ),
        (
            "deactivate",
            "deactivated by the next reconcile and taken out of the managed groups it is in",
            true,
        ),
    ] {
        let world = Scenario {
            extra: &format!("[policy]\nunmatched_accounts = \"{setting}\"\n"),
            identities: vec![],
            accounts: vec![account("a9", "stray@example.com", None, true)],
            groups: vec![],
            links: vec![],
            departed: vec![],
        }
        .store();
        let plan = world.plan();
        assert_eq!(!actions_on(&plan, "a9").is_empty(), deactivated, "{plan:?}");
        let text = world.explain("a9");
        let scope = section(&text, "Scope").join("\n");
        assert!(
            scope.contains(told) && scope.contains(&format!("unmatched_accounts = \"{setting}\"")),
            "{setting}: {text}"
        );
    }
}

/// A person under an exception while they have access is linked to one
/// account; a second matches them by externalId. The plan leaves every account
/// of theirs alone, the duplicate included, and lists it nowhere (no action,
/// no drift, not excepted: nobody lost access). `explain` of the duplicate said
/// it was an orphan that `unmatched_accounts = "deactivate"` deactivates next
/// run, beside "Next run: nothing". It shows the person, and the exception
/// that keeps the duplicate with them. (A person protected for good lists it
/// as protected only through them: shown so since the previous commits.)
#[test]
fn a_protected_or_excepted_persons_duplicate_is_not_told_as_an_orphan() {
    for (name, extra) in [
        ("root1@example.com", "[safety]\nprotected = [\"root*\"]\n"),
        (
            "u1@example.com",
            "[[safety.exceptions]]\nuser_name = \"u1@example.com\"\nuntil = \"2026-12-20\"\n\
             reason = \"r\"\n",
        ),
    ] {
        let world = Scenario {
            extra: &format!("[policy]\nunmatched_accounts = \"deactivate\"\n{extra}"),
            identities: vec![identity("p1", name, IdentityStatus::Active, &[])],
            accounts: vec![
                account("a0", name, Some("p1"), true),
                account("a4", "other@example.com", Some("p1"), true),
            ],
            groups: vec![],
            links: vec![("p1", "a0")],
            departed: vec![],
        }
        .store();
        let plan = world.plan();
        assert!(actions_on(&plan, "a4").is_empty(), "{plan:?}");
        let text = world.explain("a4");
        let scope = [section(&text, "Scope"), section(&text, "Role")]
            .concat()
            .join("\n");
        assert!(!scope.contains("orphan"), "{name}: {text}");
        assert!(
            scope.contains("in scope: active")
                && (scope.contains("protected: only through")
                    || scope.contains("exception: kept as it is")),
            "{name}: {text}"
        );
        assert_eq!(section(&text, "Next run"), ["  nothing"], "{name}: {text}");
    }
}

/// The sweep sees a person suspended after the snapshot was read, and puts
/// their deprovision off: an exception names them until the 20th. `explain`
/// said "the access is due to be removed" in its scope, as if the next pass
/// would take it; the sweep and the next reconcile's plan both keep it until the
/// exception ends. It says so.
#[test]
fn a_leaver_the_sweep_put_off_by_an_exception_is_not_told_as_due() {
    let mut world = Scenario {
        extra: "[[safety.exceptions]]\nuser_name = \"kept@example.com\"\n\
                until = \"2026-12-20\"\nreason = \"notice period\"\n",
        identities: vec![identity(
            "p1",
            "kept@example.com",
            IdentityStatus::Active,
            &[],
        )],
        accounts: vec![account("a1", "kept@example.com", Some("p1"), true)],
        groups: vec![],
        links: vec![("p1", "a1")],
        departed: vec![],
    }
    .store();
    let seen = t0() + Duration::minutes(10);
    world
        .store
        .update_ledger(
            &seatwarden::sla::LedgerChanges {
                open: vec![seatwarden::sla::NewEntry {
                    identity_id: "p1".into(),
                    account_id: Some("a1".into()),
                    user_name: "kept@example.com".into(),
                    reason: LossReason::Suspended,
                    detected_at: seen,
                    due_at: seen + Duration::hours(1),
                }],
                ..Default::default()
            },
            seen,
        )
        .unwrap();
    let id = world.store.open_deprovisions().unwrap()[0].id;
    let until = DateTime::parse_from_rfc3339("2026-12-21T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    world
        .store
        .deprovision_excepted(
            id,
            "notice period",
            until,
            until,
            until + Duration::hours(1),
        )
        .unwrap();
    let text = world.explain("p1");
    let scope = section(&text, "Scope").join("\n");
    assert!(
        !scope.contains(": the access is due to be removed"),
        "{text}"
    );
    assert!(
        scope.contains("kept by an exception until 2026-12-21 00:00:00 UTC"),
        "{text}"
    );
}

/// A generated scenario: up to four people (present in the directory or
/// deleted from it, leavers or not, in scope or not, admins), up to five
/// accounts with names and externalIds drawn from theirs, stored links, and a
/// config drawn from the settings that decide what a run does with them.
#[derive(Debug, Clone)]
struct Generated {
    /// `(present, status, groups bits: 1 Users, 2 Eng, 4 Admins, protected by pattern)`.
    people: Vec<(bool, IdentityStatus, u8, bool)>,
    /// `(userName index, externalId index, active, member of Eng)`: a name index
    /// below the people's count is theirs, above it another's.
    accounts: Vec<(usize, Option<usize>, bool, bool)>,
    /// `(person, account, how linked)` indices.
    links: Vec<(usize, usize, LinkMethod)>,
    /// Disputes the last reconcile remembered: `(person, account, rule,
    /// duplicate of account, email)` indices (the person may be one the
    /// directory no longer has). With a `duplicate of`, a settled leaver's
    /// duplicate; the email is kept as none (a row from before store migration
    /// 22), the person's, or another name's (the account renamed since, or
    /// the person's address changed before they were deleted).
    remembered: Vec<Remembered>,
    /// How the directory spells the mapped group `Eng` (mappings and scope
    /// compare group names folded: case, spaces at the ends).
    eng_spelling: &'static str,
    /// Members (account indices) of a workspace group that only looks like
    /// `Eng` (a zero-width space at its end), which no mapping names.
    look_alike: Option<Vec<usize>>,
    scoped: bool,
    unmatched: &'static str,
    delete: bool,
    /// `(name index, ended)`.
    exception: Option<(usize, bool)>,
    /// Every deactivated account's retention clock started 40 days before the
    /// run (with `delete`, past a `delete_after` of 30 days).
    clocks: bool,
}

/// A remembered dispute or duplicate as [`Generated::remembered`] draws it.
type Remembered = (usize, usize, LinkMethod, Option<usize>, Option<usize>);

/// How a stored link was made: by a rule, by seatwarden's create, or by a
/// person with `seatwarden link`.
fn link_method() -> impl Strategy<Value = LinkMethod> {
    proptest::sample::select(vec![
        LinkMethod::ExternalId,
        LinkMethod::UserName,
        LinkMethod::Email,
        LinkMethod::Created,
        LinkMethod::Manual,
    ])
}

fn generated() -> impl Strategy<Value = Generated> {
    let status = prop_oneof![
        3 => Just(IdentityStatus::Active),
        1 => Just(IdentityStatus::Suspended),
        1 => Just(IdentityStatus::Deprovisioned),
    ];
    let person = (
        proptest::bool::weighted(0.8),
        status,
        0u8..8,
        proptest::bool::weighted(0.2),
    );
    (
        proptest::collection::vec(person, 1..=4),
        proptest::collection::vec(
            (
                0usize..6,
                proptest::option::of(0usize..4),
                any::<bool>(),
                any::<bool>(),
            ),
            1..=5,
        ),
        proptest::collection::vec((0usize..4, 0usize..5, link_method()), 0..=3),
        any::<bool>(),
        proptest::sample::select(vec!["report", "adopt", "deactivate"]),
        any::<bool>(),
        proptest::option::of((0usize..6, any::<bool>())),
        any::<bool>(),
        (
            proptest::collection::vec(
                (
                    0usize..4,
                    0usize..5,
                    proptest::sample::select(vec![
                        LinkMethod::ExternalId,
                        LinkMethod::UserName,
                        LinkMethod::Email,
                    ]),
                    proptest::option::weighted(0.6, 0usize..5),
                    proptest::option::weighted(0.7, 0usize..6),
                ),
                0..=3,
            ),
            proptest::sample::select(vec!["Eng", "eng", "ENG ", " eng"]),
            proptest::option::of(proptest::collection::vec(0usize..5, 0..=3)),
        ),
    )
        .prop_map(
            |(
                people,
                accounts,
                links,
                scoped,
                unmatched,
                delete,
                exception,
                clocks,
                (remembered, eng_spelling, look_alike),
            )| Generated {
                people,
                accounts,
                links,
                remembered,
                eng_spelling,
                look_alike,
                scoped,
                unmatched,
                delete,
                exception,
                clocks,
            },
        )
}

/// The userName of name index `n`: a person's (protected by pattern when
/// theirs is), else someone the directory does not have.
fn name_of(g: &Generated, n: usize) -> String {
    match g.people.get(n) {
        Some((_, _, _, true)) => format!("root{n}@example.com"),
        Some(_) => format!("u{n}@example.com"),
        None => format!("other{n}@example.com"),
    }
}

impl Generated {
    fn world(&self) -> World {
        let mut extra = String::from("[policy]\ndefault_role = \"Viewer\"\n");
        if self.scoped {
            extra.push_str("scope_groups = [\"Users\"]\n");
        }
        extra.push_str(&format!("unmatched_accounts = \"{}\"\n", self.unmatched));
        extra.push_str(
            "[[policy.mapping]]\ngroup = \"Eng\"\nworkspace_group = \"Eng\"\nrole = \"Editor\"\n",
        );
        if self.delete {
            extra.push_str("[deprovision]\naction = \"delete\"\ndelete_after = \"30d\"\n");
        }
        extra.push_str(
            "[safety]\nprotected = [\"root*\"]\nprotected_groups = [\"Admins\"]\n\
             max_deprovisions = 1000\nmax_deprovision_percent = 100\n",
        );
        if let Some((n, ended)) = self.exception {
            extra.push_str(&format!(
                "[[safety.exceptions]]\nuser_name = \"{}\"\nuntil = \"{}\"\nreason = \"r\"\n",
                name_of(self, n),
                if ended { "2026-11-30" } else { "2026-12-20" }
            ));
        }
        let ids: Vec<String> = (0..self.people.len()).map(|i| format!("p{i}")).collect();
        let identities = self
            .people
            .iter()
            .enumerate()
            .filter(|(_, (present, ..))| *present)
            .map(|(i, &(_, status, bits, _))| {
                let groups: Vec<&str> = [(1, "Users"), (2, self.eng_spelling), (4, "Admins")]
                    .into_iter()
                    .filter(|(bit, _)| bits & bit != 0)
                    .map(|(_, g)| g)
                    .collect();
                identity(&ids[i], &name_of(self, i), status, &groups)
            })
            .collect();
        let accounts: Vec<Account> = self
            .accounts
            .iter()
            .enumerate()
            .map(|(j, &(n, external, active, _))| {
                account(
                    &format!("a{j}"),
                    &name_of(self, n),
                    external
                        .filter(|&e| e < self.people.len())
                        .map(|e| ids[e].as_str()),
                    active,
                )
            })
            .collect();
        let members: Vec<String> = self
            .accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.3)
            .map(|(j, _)| format!("a{j}"))
            .collect();
        // One link per person and per account, as the store keeps them.
        let mut links: Vec<(String, String)> = Vec::new();
        let mut methods: Vec<LinkMethod> = Vec::new();
        for &(i, j, method) in &self.links {
            let (i, j) = (
                format!("p{}", i % self.people.len()),
                format!("a{}", j % accounts.len()),
            );
            if !links.iter().any(|(p, a)| *p == i || *a == j) {
                links.push((i, j));
                methods.push(method);
            }
        }
        // A person deleted from the directory while their deprovision was open:
        // the ledger keeps their directory userName.
        let departed: Vec<(String, String, String)> = links
            .iter()
            .filter_map(|(p, a)| {
                let i: usize = p[1..].parse().ok()?;
                (!self.people[i].0).then(|| (p.clone(), a.clone(), name_of(self, i)))
            })
            .collect();
        let links_ref: Vec<(&str, &str)> = links
            .iter()
            .map(|(p, a)| (p.as_str(), a.as_str()))
            .collect();
        let departed_ref: Vec<(&str, &str, &str)> = departed
            .iter()
            .map(|(p, a, n)| (p.as_str(), a.as_str(), n.as_str()))
            .collect();
        let inactive: Vec<String> = accounts
            .iter()
            .filter(|a| !a.active && self.clocks)
            .map(|a| a.id.clone())
            .collect();
        let mut groups = vec![WorkspaceGroup {
            id: "g1".into(),
            display_name: "Eng".into(),
            members,
        }];
        if let Some(members) = &self.look_alike {
            groups.push(WorkspaceGroup {
                id: "g2".into(),
                display_name: "Eng\u{200B}".into(),
                members: members
                    .iter()
                    .map(|j| format!("a{}", j % accounts.len()))
                    .collect(),
            });
        }
        let remembered: Vec<seatwarden::model::DisputedCandidate> = self
            .remembered
            .iter()
            .map(
                |&(i, j, method, duplicate_of, email)| seatwarden::model::DisputedCandidate {
                    identity_id: format!("p{}", i % self.people.len()),
                    user_name: name_of(self, i % self.people.len()),
                    account_id: format!("a{}", j % accounts.len()),
                    method,
                    duplicate_of: duplicate_of
                        .map(|k| k % accounts.len())
                        .filter(|&k| k != j % accounts.len())
                        .map(|k| format!("a{k}")),
                    email: email.map(|n| name_of(self, n)),
                },
            )
            .collect();
        let mut world = Scenario {
            extra: &extra,
            identities,
            accounts,
            groups,
            // Stored below, each by the method drawn for it.
            links: Vec::new(),
            departed: departed_ref,
        }
        .store();
        let stored: Vec<NewLink> = links_ref
            .iter()
            .zip(&methods)
            .map(|(&(identity_id, account_id), &method)| NewLink {
                identity_id: identity_id.into(),
                account_id: account_id.into(),
                method,
            })
            .collect();
        world.store.upsert_links(&stored, t0()).unwrap();
        world
            .store
            .replace_disputed_candidates(&remembered)
            .unwrap();
        world
            .store
            .update_deactivated(&inactive, &[], t0() - Duration::days(40))
            .unwrap();
        world
    }
}

/// `committed` cases, or as many as `PROPTEST_CASES` says (a count set here
/// overrides proptest's own reading of it).
fn cases(committed: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(committed)
}

/// What `explain` of one account says against what the plan does with it.
fn account_agrees(world: &World, plan: &Plan, account: &Account) -> Result<(), String> {
    let text = world.explain(&account.id);
    // The protection lines follow the role of someone in scope.
    let scope = [section(&text, "Scope"), section(&text, "Role")]
        .concat()
        .join("\n");
    let next = section(&text, "Next run");
    let on = actions_on(plan, &account.id);
    let fail = |why: &str| Err(format!("{why}\n{text}\nplan: {plan:#?}"));
    let kept = scope.contains("protected: yes")
        || scope.contains("protected: only through")
        || scope.contains("exception: kept as it is");
    if kept && !on.is_empty() {
        return fail("told protected or excepted, yet the plan writes to it");
    }
    for kind in &on {
        if !next
            .iter()
            .any(|l| l.starts_with(&format!("  {} — ", kind.name())))
        {
            return fail(&format!("the plan's {} is not in Next run", kind.name()));
        }
    }
    // And the converse: every action Next run tells is one the plan makes on
    // this account or for a person the text names.
    let people_named: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 2 && w.starts_with('p'))
        .collect();
    for line in &next {
        let Some((name, _)) = line.trim_start().split_once(" — ") else {
            continue;
        };
        let planned = plan.actions.iter().any(|a| {
            a.kind.name() == name
                && (on.contains(&&a.kind)
                    || a.identity_id
                        .as_deref()
                        .is_some_and(|p| people_named.contains(&p)))
        });
        if !planned {
            return fail(&format!(
                "Next run tells {name}, which the plan does not make"
            ));
        }
    }
    if plan.excepted.iter().any(|e| e.account_id == account.id)
        && !scope.contains("exception: kept as it is")
    {
        return fail("the plan keeps it by an exception; explain does not say so");
    }
    if plan
        .protected_by_person
        .iter()
        .any(|p| p.account_id == account.id)
        && !scope.contains("protected: only through")
    {
        return fail("the plan keeps it only through its person; explain does not say so");
    }
    let nobody = scope.contains("no directory identity justifies")
        || text.contains("no directory identity matches the account below");
    if let Some(action) = plan
        .actions
        .iter()
        .find(|a| a.identity_id.is_some() && a.kind.account_id() == Some(account.id.as_str()))
        && nobody
    {
        return fail(&format!(
            "told nobody's, yet the plan's {} is about identity {:?}",
            action.kind.name(),
            action.identity_id
        ));
    }
    // A settled leaver's duplicate renamed since is nobody's: never
    // deprovisioned, let alone deleted, as theirs.
    if scope.contains("no longer matches them by externalId, userName or email")
        && let Some(action) = plan
            .actions
            .iter()
            .find(|a| a.identity_id.is_some() && a.kind.account_id() == Some(account.id.as_str()))
    {
        return fail(&format!(
            "told no longer the leaver's, yet the plan's {} is about identity {:?}",
            action.kind.name(),
            action.identity_id
        ));
    }
    let added = plan.actions.iter().any(|a| {
        matches!(&a.kind, ActionKind::AddMembers { members, .. }
            if members.iter().any(|m| matches!(m,
                seatwarden::model::AccountRef::Existing { id } if *id == account.id)))
    });
    if added && !scope.contains("workspace groups: Eng") {
        return fail("the plan adds it to Eng; explain does not give that group");
    }
    let told_deleted = section(&text, "Workspace account")
        .iter()
        .any(|l| l.contains("; deleted from "));
    let deleted_by_clock = on.iter().any(|k| {
        matches!(
            k,
            ActionKind::Delete {
                deactivated_since: Some(_),
                ..
            }
        )
    });
    if (told_deleted && !plan.retained.contains(&account.id)) || (deleted_by_clock && !told_deleted)
    {
        return fail("the deletion told differs from the plan's retention");
    }
    let deprovisioned = on.iter().any(|k| k.is_deprovision());
    if scope.contains("an orphan, deactivated by the next reconcile") != (nobody && deprovisioned)
        && nobody
    {
        return fail("told an orphan the next reconcile deactivates, unlike the plan");
    }
    if scope.contains("in scope: active") && deprovisioned {
        return fail("told in scope, yet the plan deprovisions it");
    }
    let disputed = text.contains("\nDisputed match\n") || scope.contains("undecided");
    if account.active
        && !kept
        && !disputed
        && scope.contains("  no access: ")
        && !deprovisioned
        && !scope.contains("no directory identity justifies")
    {
        return fail("told its person has no access, yet the plan leaves it active");
    }
    Ok(())
}

/// What `explain` of one person says against what the plan does with them.
fn person_agrees(world: &World, plan: &Plan, identity_id: &str) -> Result<(), String> {
    let text = world.explain(identity_id);
    let scope = section(&text, "Scope").join("\n");
    let role = section(&text, "Role");
    let next = section(&text, "Next run");
    let fail = |why: &str| Err(format!("{why}\n{text}\nplan: {plan:#?}"));
    for action in plan
        .actions
        .iter()
        .filter(|a| a.identity_id.as_deref() == Some(identity_id))
    {
        if !next
            .iter()
            .any(|l| l.starts_with(&format!("  {} — ", action.kind.name())))
        {
            return fail(&format!(
                "the plan's {} is not in Next run",
                action.kind.name()
            ));
        }
        match &action.kind {
            ActionKind::SetRole { to, .. }
                if !role.contains(&format!("  desired:    {}", to.as_str()).as_str()) =>
            {
                return fail(&format!("the plan gives role {}", to.as_str()));
            }
            ActionKind::CreateAccount { .. } if !scope.contains("in scope: active") => {
                return fail("the plan creates an account for someone told without access");
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    #[test]
    fn explain_tells_what_the_plan_does(g in generated()) {
        let world = g.world();
        let plan = world.plan();
        let run = world.store.latest_snapshot_run().unwrap().unwrap();
        let workspace = world.store.load_workspace_snapshot(run).unwrap().unwrap();
        for account in &workspace.accounts {
            if let Err(why) = account_agrees(&world, &plan, account) {
                prop_assert!(false, "account {}: {why}", account.id);
            }
        }
        // Everyone present, and everyone deleted whom a stored link still ties
        // to an account (found through it).
        let linked: Vec<String> = world
            .store
            .links()
            .unwrap()
            .into_iter()
            .filter(|l| workspace.accounts.iter().any(|a| a.id == l.account_id))
            .map(|l| l.identity_id)
            .collect();
        for (i, (present, ..)) in g.people.iter().enumerate() {
            let id = format!("p{i}");
            if (*present || linked.contains(&id))
                && let Err(why) = person_agrees(&world, &plan, &id)
            {
                prop_assert!(false, "person {id}: {why}");
            }
        }
    }
}
