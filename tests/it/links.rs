//! Stored links against the workspace as it is now: a link the linked account's
//! own `externalId` contradicts is not trusted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use seatwarden::model::{DriftKind, WorkspaceSnapshot};
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Sandbox, SandboxOptions};
use seatwarden::store::Store;
use seatwarden::synth::{self, SynthSpec};

use crate::fixtures::synth_config;

const TOKEN: &str = "links-token";

async fn sandbox(seed: WorkspaceSnapshot) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap()
}

/// A state database built against one workspace, used against another in which
/// two accounts' SCIM ids are swapped (each keeping its own externalId, name,
/// role and groups): the stored links now give each person the other's account.
/// Nothing is written to either account; both pairs are reported as disputed.
#[tokio::test]
async fn a_state_database_reused_against_swapped_ids_touches_neither_account() {
    let data = synth::generate(&SynthSpec {
        people: 60,
        groups: 2,
        drift_percent: 0.0,
        seed: 7,
    });
    let first = sandbox(data.workspace.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = synth_config(dir.path(), &data, first.base_url().as_ref(), TOKEN, 4);
    let open = || Store::open(&config.state.path).unwrap();
    run::execute(&config, open(), Mode::Reconcile)
        .await
        .unwrap();
    let converged = first.snapshot();
    let links: HashMap<String, String> = open()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.account_id, l.identity_id))
        .collect();
    // Two active accounts linked to the identity their externalId names, with
    // different userNames and roles or groups to lose.
    let pair: Vec<usize> = converged
        .accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.active && a.external_id.is_some())
        .filter(|(_, a)| links.get(&a.id) == a.external_id.as_ref())
        .map(|(i, _)| i)
        .take(2)
        .collect();
    assert_eq!(pair.len(), 2);
    let (a, b) = (pair[0], pair[1]);
    let (id_a, id_b) = (
        converged.accounts[a].id.clone(),
        converged.accounts[b].id.clone(),
    );
    let mut swapped = converged.clone();
    swapped.accounts[a].id = id_b.clone();
    swapped.accounts[b].id = id_a.clone();
    for group in &mut swapped.groups {
        for member in &mut group.members {
            if *member == id_a {
                *member = id_b.clone();
            } else if *member == id_b {
                *member = id_a.clone();
            }
        }
    }
    drop(first);
    let second = sandbox(swapped.clone()).await;
    let config = synth_config(dir.path(), &data, second.base_url().as_ref(), TOKEN, 4);
    // The same workspace restored: at the same URL, which a second sandbox is not.
    open()
        .set_state_value(
            run::WORKSPACE_KEY,
            Some(second.base_url().as_str().trim_end_matches('/')),
        )
        .unwrap();

    let outcome = run::execute(&config, open(), Mode::Reconcile)
        .await
        .unwrap();
    let people = [
        converged.accounts[a].external_id.clone().unwrap(),
        converged.accounts[b].external_id.clone().unwrap(),
    ];
    let touching: Vec<_> = outcome
        .plan
        .actions
        .iter()
        .filter(|action| {
            action
                .kind
                .account_id()
                .is_some_and(|id| id == id_a || id == id_b)
                || action
                    .identity_id
                    .as_ref()
                    .is_some_and(|id| people.contains(id))
        })
        .collect();
    assert!(touching.is_empty(), "{touching:#?}");
    let disputed: Vec<_> = outcome
        .plan
        .drift
        .iter()
        .filter(|d| d.kind == DriftKind::DisputedMatch)
        .collect();
    // One item per person, naming both accounts and how each matched.
    for person in &people {
        assert!(
            disputed
                .iter()
                .any(|d| d.identity_id.as_ref() == Some(person)
                    && d.detail.contains("externalId names")
                    && d.detail.contains(&format!("{id_a} ("))
                    && d.detail.contains(&format!("{id_b} ("))),
            "{disputed:#?}"
        );
    }
    // The workspace still has both accounts as the seed had them.
    let after = second.snapshot();
    for i in [a, b] {
        let want = &swapped.accounts[i];
        let now = after.accounts.iter().find(|x| x.id == want.id).unwrap();
        assert_eq!(now, want);
    }
}

/// One account stored-linked to two people cannot arise, whatever order links
/// are made in: the links table refuses it (`account_id` has been UNIQUE since
/// the first schema, and every migration that rebuilt the table kept it and
/// copied the rows into it, so an old or restored database cannot carry one
/// either); `upsert_links`, which every run and `apply` store links through,
/// moves an account's link rather than adding a second; and `seatwarden link`
/// refuses to take a linked account without `--replace`, and moves the link with
/// it. What does arise is one account whose link is to one person while its
/// externalId names another: the plan reports that as one dispute.
#[test]
fn an_account_is_never_stored_linked_to_two_people() {
    use seatwarden::model::{
        Account, DirectorySnapshot, Identity, IdentityStatus, LinkMethod, NewLink,
    };
    use seatwarden::store::RunKind;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    let now = chrono::Utc::now();
    let person = |id: &str| Identity {
        id: id.into(),
        user_name: format!("{id}@example.com"),
        email: None,
        given_name: None,
        family_name: None,
        display_name: None,
        status: IdentityStatus::Active,
        department: None,
        groups: vec![],
    };
    // `link` takes its ids from the newest stored snapshots.
    let run = store.begin_run(RunKind::Reconcile, now).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: vec![person("ann"), person("bob")],
                complete: true,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &WorkspaceSnapshot {
                accounts: vec![Account {
                    id: "x".into(),
                    user_name: "ann@example.com".into(),
                    external_id: Some("bob".into()),
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    email: None,
                    active: true,
                    roles: vec![],
                }],
                groups: vec![],
            },
        )
        .unwrap();
    let new_link = |identity: &str| NewLink {
        identity_id: identity.into(),
        account_id: "x".into(),
        method: LinkMethod::UserName,
    };
    let pairs = |store: &Store| -> Vec<(String, String)> {
        store
            .links()
            .unwrap()
            .into_iter()
            .map(|l| (l.identity_id, l.account_id))
            .collect()
    };
    let only = |identity: &str| vec![(identity.to_owned(), "x".to_owned())];

    store.upsert_links(&[new_link("ann")], now).unwrap();
    let refused =
        seatwarden::approval::link(&mut store, "bob", "x", false, "seatwarden", now).unwrap_err();
    assert!(refused.to_string().contains("pass --replace"), "{refused}");
    assert_eq!(pairs(&store), only("ann"));
    let replaced =
        seatwarden::approval::link(&mut store, "bob", "x", true, "seatwarden", now).unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(pairs(&store), only("bob"));
    // A run's match (or a create's 409) linking the account to ann moves it back.
    store.upsert_links(&[new_link("ann")], now).unwrap();
    assert_eq!(pairs(&store), only("ann"));
    // Both in one batch: the last one stands.
    store
        .upsert_links(&[new_link("bob"), new_link("ann")], now)
        .unwrap();
    assert_eq!(pairs(&store), only("ann"));

    // The table itself refuses a second link, whoever writes it.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let second = raw.execute(
        "INSERT INTO links (identity_id, account_id, method, linked_at)
         VALUES ('bob', 'x', 'manual', '2026-12-01T00:00:00Z')",
        [],
    );
    let error = second.unwrap_err().to_string();
    assert!(
        error.contains("UNIQUE constraint failed: links.account_id"),
        "{error}"
    );
    assert_eq!(pairs(&store), only("ann"));
}
