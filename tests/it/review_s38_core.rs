//! Session 38's review of the pure core (policy → plan → guard): an account that
//! holds several roles at once, and the safety rules that read role values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use seatwarden::guard::{GuardInput, GuardSettings, guard, hold_unsettled, settle_keys};
use seatwarden::model::{
    Account, ActionClass, ActionKind, DirectorySnapshot, DriftKind, HoldReason, Identity,
    IdentityStatus, Link, Plan, Role, WorkspaceSnapshot,
};
use seatwarden::plan::{DeprovisionAction, PlanSettings, plan, simulate};
use seatwarden::policy::{Mapping, PolicySettings, Protected, UnmatchedAccounts, desired_state};

/// A `SetRole` as the test reads it: account, from, to, threshold class, detail.
type RoleChange<'a> = (&'a str, &'a [String], Role, Option<ActionClass>, &'a str);

fn person(id: &str, groups: &[&str]) -> Identity {
    Identity {
        id: id.into(),
        user_name: format!("{id}@ex.com"),
        email: Some(format!("{id}@ex.com")),
        given_name: None,
        family_name: None,
        display_name: None,
        status: IdentityStatus::Active,
        department: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn account(id: &str, person: &str, roles: &[&str]) -> Account {
    Account {
        id: id.into(),
        user_name: format!("{person}@ex.com"),
        external_id: Some(person.into()),
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some(format!("{person}@ex.com")),
        active: true,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn policy() -> PolicySettings {
    PolicySettings {
        scope_groups: vec![],
        default_role: Role::Viewer,
        mappings: vec![
            Mapping {
                group: "leads".into(),
                workspace_group: "Engineering".into(),
                role: Role::Maintainer,
            },
            Mapping {
                group: "admins".into(),
                workspace_group: "Admin".into(),
                role: Role::Owner,
            },
        ],
        manage_roles: true,
    }
}

fn settings() -> PlanSettings {
    PlanSettings {
        deprovision: DeprovisionAction::Deactivate,
        retention: Default::default(),
        unmatched_accounts: UnmatchedAccounts::Report,
        manage_roles: true,
        protected: Protected::default(),
        admin_command: seatwarden::model::DEFAULT_ADMIN_COMMAND.to_owned(),
    }
}

fn plan_of(directory: &DirectorySnapshot, workspace: &WorkspaceSnapshot, links: &[Link]) -> Plan {
    plan(
        &desired_state(directory, &policy()),
        directory,
        workspace,
        links,
        &[],
        &settings(),
    )
}

/// Everyone in their groups: ann a lead (Maintainer), bob nobody special
/// (Viewer), olga an admin (Owner).
fn directory() -> DirectorySnapshot {
    DirectorySnapshot {
        identities: vec![
            person("ann", &["leads"]),
            person("bob", &[]),
            person("olga", &["admins"]),
        ],
        complete: true,
    }
}

fn workspace(accounts: Vec<Account>) -> WorkspaceSnapshot {
    WorkspaceSnapshot {
        accounts,
        groups: vec![
            seatwarden::model::WorkspaceGroup {
                id: "g-eng".into(),
                display_name: "Engineering".into(),
                members: vec!["1".into()],
            },
            seatwarden::model::WorkspaceGroup {
                id: "g-admin".into(),
                display_name: "Admin".into(),
                members: vec!["3".into()],
            },
        ],
    }
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-04T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::minutes(minutes)
}

/// An account holding several roles at once is given the one its person should
/// have, in a single `SetRole` that says why; it counts as a downgrade exactly
/// when it takes away a higher (or unknown) role; applied, nothing is left to
/// plan. And however the workspace orders the roles on a read, the action is
/// the same, so the settle window that started on one read ends on the next:
/// a provider listing an account's roles in another order each time used to
/// restart the wait every run, and the account never got its one role.
#[test]
fn several_roles_become_the_desired_one_whatever_order_the_workspace_lists_them() {
    let directory = directory();
    let first_read = workspace(vec![
        account("1", "ann", &["Viewer", "Maintainer"]),
        account("2", "bob", &["viewer", "Editor"]),
        account("3", "olga", &["Owner"]),
    ]);
    let first = plan_of(&directory, &first_read, &[]);
    let roles: Vec<RoleChange<'_>> = first
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::SetRole {
                account_id,
                from,
                to,
            } => Some((
                account_id.as_str(),
                from.as_slice(),
                *to,
                a.kind.threshold_class().map(|(c, _)| c),
                a.detail.as_str(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        roles,
        [
            (
                "1",
                &["Maintainer".to_owned(), "Viewer".to_owned()][..],
                Role::Maintainer,
                None,
                "holds several roles (Maintainer, Viewer), where an account has one: \
                 policy gives Maintainer",
            ),
            (
                "2",
                &["Editor".to_owned(), "viewer".to_owned()][..],
                Role::Viewer,
                Some(ActionClass::RoleDowngrade),
                "holds several roles (Editor, viewer), where an account has one: \
                 policy gives Viewer",
            ),
        ],
        "{:#?}",
        first.actions
    );
    assert!(
        first
            .drift
            .iter()
            .filter(|d| d.kind == DriftKind::RoleDrift)
            .count()
            == 2
    );

    // Ten minutes later the workspace lists the same roles the other way round.
    let second_read = workspace(vec![
        account("1", "ann", &["Maintainer", "Viewer"]),
        account("2", "bob", &["Editor", "viewer"]),
        account("3", "olga", &["Owner"]),
    ]);
    let second = plan_of(&directory, &second_read, &[]);
    assert_eq!(first.actions, second.actions, "the same change either way");
    let settle = std::time::Duration::from_secs(600);
    let first_seen: HashMap<String, DateTime<Utc>> = first
        .actions
        .iter()
        .flat_map(settle_keys)
        .map(|k| (k, at(0)))
        .collect();
    let settled = hold_unsettled(second.clone(), &first_seen, at(10), settle);
    let waiting: Vec<_> = settled.held().collect();
    assert!(waiting.is_empty(), "still settling: {waiting:#?}");

    // Guarded (a downgrade is within the default limits) and applied: converged.
    let guarded = guard(
        settled,
        &second_read,
        &GuardSettings::default(),
        &GuardInput {
            directory_complete: true,
            managed_accounts: 3,
            ..GuardInput::default()
        },
    );
    assert_eq!(guarded.held().count(), 0, "{:#?}", guarded.actions);
    let (after, links) = simulate(&second_read, &[], &guarded);
    let roles: Vec<&[String]> = after.accounts.iter().map(|a| a.roles.as_slice()).collect();
    assert_eq!(
        roles,
        [
            &["Maintainer".to_owned()][..],
            &["Viewer".to_owned()][..],
            &["Owner".to_owned()][..]
        ]
    );
    let again = plan_of(&directory, &after, &links);
    assert!(again.actions.is_empty(), "{:#?}", again.actions);
    assert!(again.drift.is_empty(), "{:#?}", again.drift);
}

/// Without a mapping to Owner every demotion of an Owner waits for a human; a
/// role value the workspace sends with spaces around it (`" Owner"`) is an Owner
/// to the plan and to the last-Owner rule, and so it is to this rule too.
#[test]
fn an_owner_value_with_spaces_is_still_an_owner_whose_demotion_waits() {
    let mut policy = policy();
    policy.mappings.retain(|m| m.role != Role::Owner);
    let directory = directory();
    let ws = workspace(vec![
        account("1", "ann", &["Owner "]),
        account("2", "bob", &[" owner"]),
        account("3", "olga", &["Owner"]),
    ]);
    let planned = plan(
        &desired_state(&directory, &policy),
        &directory,
        &ws,
        &[],
        &[],
        &settings(),
    );
    assert_eq!(
        planned
            .actions
            .iter()
            .filter(|a| matches!(a.kind, ActionKind::SetRole { .. }))
            .count(),
        3,
        "{:#?}",
        planned.actions
    );
    let guarded = guard(
        planned,
        &ws,
        &GuardSettings {
            owner_mapped: false,
            ..GuardSettings::unlimited()
        },
        &GuardInput {
            directory_complete: true,
            managed_accounts: 3,
            ..GuardInput::default()
        },
    );
    for action in &guarded.actions {
        assert!(
            matches!(
                action.held,
                Some(HoldReason::OwnerWithoutMapping | HoldReason::LastOwner)
            ),
            "an Owner demoted without a human: {action:#?}"
        );
    }
    assert_eq!(
        guarded
            .actions
            .iter()
            .filter(|a| a.held == Some(HoldReason::OwnerWithoutMapping))
            .count(),
        3,
        "{:#?}",
        guarded.actions
    );
}
