//! Session 53 review: what `explain` tells an operator about one person or
//! account agrees with what the plan does with them. Each scenario stores a
//! run's snapshots, links and ledger, makes the plan a run would make from them
//! (policy, `safety::plan_settings_at`, remembered disputes) and reads `explain`
//! for every identity and account; the property test does the same over
//! generated scenarios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use seatwarden::config::Config;
use seatwarden::model::{
    Account, ActionKind, DirectorySnapshot, Identity, IdentityStatus, Link, LinkMethod, LossReason,
    NewLink, Plan, WorkspaceGroup, WorkspaceSnapshot,
};
use seatwarden::store::{RunKind, RunStatus, Store};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The time `explain` and the plan are judged at: an hour after the run.
fn now() -> DateTime<Utc> {
    t0() + Duration::hours(1)
}

fn identity(id: &str, user_name: &str, status: IdentityStatus, groups: &[&str]) -> Identity {
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

fn account(id: &str, user_name: &str, external_id: Option<&str>, active: bool) -> Account {
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
struct World {
    _dir: tempfile::TempDir,
    config: Config,
    store: Store,
}

/// One scenario: what the run read, the links stored, the ledger's open
/// deprovisions (`(identity id, account id, directory userName)`) and `extra`
/// TOML for the config.
struct Scenario<'a> {
    extra: &'a str,
    identities: Vec<Identity>,
    accounts: Vec<Account>,
    groups: Vec<WorkspaceGroup>,
    links: Vec<(&'a str, &'a str)>,
    departed: Vec<(&'a str, &'a str, &'a str)>,
}

impl Scenario<'_> {
    fn store(self) -> World {
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
    fn plan(&self) -> Plan {
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

    fn explain(&self, person: &str) -> String {
        seatwarden::explain::explain(&self.config, &self.store, person, now())
            .unwrap_or_else(|e| panic!("explain {person}: {e}"))
    }
}

/// The lines of `text`'s section that starts with `header`, up to the next
/// section (a line that does not start with a space).
fn section<'t>(text: &'t str, header: &str) -> Vec<&'t str> {
    text.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The plan's actions that write to `account_id`.
fn actions_on<'p>(plan: &'p Plan, account_id: &str) -> Vec<&'p ActionKind> {
    plan.actions
        .iter()
        .map(|a| &a.kind)
        .filter(|k| {
            k.account_id() == Some(account_id)
                || matches!(k, ActionKind::RemoveMembers { members, .. }
                    if members.iter().any(|m| m == account_id))
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
