//! `seatwarden status` and the digest name the run whose approval releases a
//! guard's hold; `export access` is current as of the writes applied since its
//! snapshot and says when it is from.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use seatwarden::store::{RunKind, Store};

/// A leaver whose deprovision the guard held in a sweep run (as a sweep pass
/// journals it: held for the last-Owner check, which `approve` re-checks; not for
/// an incomplete directory, which no sweep holds for and no approval releases),
/// the episode open from `t0`; returns the run.
fn sweep_held_one(store: &mut Store, t0: DateTime<Utc>) -> i64 {
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::sla::{self, Leaver, LossReason};

    let leaver = Leaver {
        identity_id: "00u1".to_owned(),
        account_id: Some("acc-1".to_owned()),
        user_name: "leaver1@example.com".to_owned(),
        reason: LossReason::Deleted,
    };
    let open = store.current_deprovisions().unwrap();
    let changes = sla::observe(
        &open,
        std::slice::from_ref(&leaver),
        &[],
        t0,
        chrono::Duration::hours(1),
    );
    store.update_ledger(&changes, t0).unwrap();
    let run = store.begin_run(RunKind::Sweep, t0).unwrap();
    let plan = Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::Deactivate {
                account_id: "acc-1".to_owned(),
            },
            reason: DriftKind::StaleAccess,
            subject: leaver.user_name.clone(),
            identity_id: Some(leaver.identity_id.clone()),
            detail: "deleted from the directory".into(),
            held: Some(HoldReason::LastOwner),
        }],
        ..Plan::default()
    };
    store.save_plan(run, &plan, t0).unwrap();
    for entry in store.open_deprovisions().unwrap() {
        store
            .deprovision_held(entry.id, "held", t0 + chrono::Duration::minutes(15))
            .unwrap();
    }
    run
}

/// `approve` takes a run id and refuses `latest`, and the newest run may be a
/// `plan` it refuses: `status` (text and JSON) and the digest name the run whose
/// held action it is, with the commands.
#[test]
fn status_and_digest_name_the_run_holding_a_guards_hold() {
    use seatwarden::daemon::status::{self, Settings};

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
    let run = sweep_held_one(&mut store, t0);
    // A later plan: the newest run, and not one `approve` takes.
    let later = store
        .begin_run(RunKind::Plan, t0 + chrono::Duration::minutes(20))
        .unwrap();
    assert!(later > run);

    let now = t0 + chrono::Duration::minutes(30);
    let status = status::collect(
        &store,
        now,
        Settings {
            tz: chrono_tz::UTC,
            delete_after: None,
            cool_down: std::time::Duration::from_secs(600),
            database: None,
            schedule: None,
            admin_command: "seatwarden".to_owned(),
            resolve_after: None,
            certificates: Vec::new(),
            exceptions: Vec::new(),
        },
    )
    .unwrap();
    let text = status::render_text(&status);
    let line = text
        .lines()
        .find(|l| l.contains("leaver1@example.com"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!(
            "held by the guard in run {run}, waiting for `seatwarden approve {run}` \
             or `seatwarden reject {run}`"
        )),
        "{text}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["deprovisions"]["open"][0]["hold"], "guard", "{json}");
    assert_eq!(json["deprovisions"]["open"][0]["hold_run"], run, "{json}");

    let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
    assert_eq!(deprovisions.len(), 1);
    assert_eq!(deprovisions[0].hold_run, Some(run), "{deprovisions:?}");
}

/// The demo's state with, in a newer plan run's snapshots: a protected account
/// (`breakglass@example.com`, in `safety.protected`), two accounts that may both
/// be dana's (by userName and by email: the plan's disputed match), and the demo's
/// hand-made `freelancer.max@gmail.com`, which no one matches. Then a later run
/// (an approval, say) deactivates liam's account: applied after the snapshot.
struct Approved {
    _dir: tempfile::TempDir,
    config: seatwarden::config::Config,
    store: Store,
    snapshot_run: i64,
    deactivated_at: DateTime<Utc>,
}

async fn approved_after_the_snapshot() -> Approved {
    use seatwarden::model::{Action, ActionKind, DriftItem, DriftKind, Plan};

    let dir = tempfile::tempdir().unwrap();
    seatwarden::demo::run(dir.path(), false).await.unwrap();
    let mut config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(Default::default()),
    )
    .unwrap();
    config.safety.protected = vec!["breakglass@example.com".to_owned()];
    let mut store = Store::open(&config.state.path).unwrap();
    let demo_run = store.latest_snapshot_run().unwrap().unwrap();
    let mut directory = store.load_directory_snapshot(demo_run).unwrap().unwrap();
    let mut workspace = store.load_workspace_snapshot(demo_run).unwrap().unwrap();

    let mut dana = directory.identities[0].clone();
    dana.id = "00u9dana".to_owned();
    dana.user_name = "dana.dup@example.com".to_owned();
    dana.email = Some("dana@example.com".to_owned());
    directory.identities.push(dana);
    let template = workspace.accounts[0].clone();
    let account = |id: &str, user_name: &str, email: Option<&str>| {
        let mut account = template.clone();
        account.id = id.to_owned();
        account.user_name = user_name.to_owned();
        account.email = email.map(str::to_owned);
        account.external_id = None;
        account.active = true;
        account
    };
    workspace.accounts.extend([
        account("acc-dup-1", "dana.dup@example.com", None),
        account(
            "acc-dup-2",
            "dana.d@contractor.example",
            Some("dana@example.com"),
        ),
        account("acc-breakglass", "breakglass@example.com", None),
    ]);

    let t0 = Utc::now();
    let snapshot_run = store.begin_run(RunKind::Plan, t0).unwrap();
    store
        .save_directory_snapshot(snapshot_run, &directory)
        .unwrap();
    store
        .save_workspace_snapshot(snapshot_run, &workspace)
        .unwrap();
    let disputed = Plan {
        drift: vec![DriftItem {
            kind: DriftKind::DisputedMatch,
            identity_id: Some("00u9dana".to_owned()),
            account_id: None,
            user_name: "dana.dup@example.com".to_owned(),
            detail: "several accounts match".to_owned(),
            conflict: None,
        }],
        ..Plan::default()
    };
    store.save_plan(snapshot_run, &disputed, t0).unwrap();

    let liam = workspace
        .accounts
        .iter()
        .find(|a| a.user_name == "liam.kowalski@example.com")
        .unwrap();
    assert!(liam.active);
    let approval = store
        .begin_run(RunKind::Reconcile, t0 + chrono::Duration::seconds(1))
        .unwrap();
    let deactivation = Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::Deactivate {
                account_id: liam.id.clone(),
            },
            reason: DriftKind::StaleAccess,
            subject: liam.user_name.clone(),
            identity_id: None,
            detail: "approved".to_owned(),
            held: None,
        }],
        ..Plan::default()
    };
    let deactivated_at = t0 + chrono::Duration::seconds(2);
    store
        .save_plan(approval, &deactivation, t0 + chrono::Duration::seconds(1))
        .unwrap();
    store.mark_in_flight(approval, 0, deactivated_at).unwrap();
    store
        .mark_applied(approval, 0, deactivated_at, None)
        .unwrap();
    Approved {
        _dir: dir,
        config,
        store,
        snapshot_run,
        deactivated_at,
    }
}

fn row<'a>(
    export: &'a seatwarden::export::AccessExport,
    user: &str,
) -> &'a seatwarden::export::AccessRow {
    export
        .accounts
        .iter()
        .find(|r| r.user_name == user)
        .unwrap_or_else(|| panic!("{user} not exported: {export:?}"))
}

/// A deactivation applied after the snapshot was read (an approval's) shows as
/// done: the access review must not list access that is gone as still there.
#[tokio::test]
async fn the_access_export_shows_writes_applied_since_its_snapshot() {
    let approved = approved_after_the_snapshot().await;
    let export = seatwarden::export::access(&approved.store, &approved.config).unwrap();
    assert_eq!(export.run_id, approved.snapshot_run);
    let liam = row(&export, "liam.kowalski@example.com");
    assert!(!liam.active, "{liam:?}");
    assert!(
        liam.justification
            .ends_with("account deactivated (no access)"),
        "{liam:?}"
    );
    assert_eq!(liam.last_change, Some(approved.deactivated_at));
    assert_eq!(export.applied_through, Some(approved.deactivated_at));
}

/// The CSV is what auditors keep: every row says as of when (the snapshot, and
/// the last write laid over it), in columns any CSV reader takes.
#[tokio::test]
async fn every_csv_row_says_as_of_when() {
    let approved = approved_after_the_snapshot().await;
    let export = seatwarden::export::access(&approved.store, &approved.config).unwrap();
    let csv = export.to_csv().unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column: {headers:?}"))
    };
    let (snapshot_at, applied_through) = (column("snapshot_at"), column("applied_through"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), export.accounts.len());
    for record in &rows {
        // UTC to the second, as a spreadsheet reads a date and time.
        let cell_time =
            |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M:%S").to_string();
        assert_eq!(&record[snapshot_at], cell_time(export.snapshot_at));
        assert_eq!(&record[applied_through], cell_time(approved.deactivated_at));
    }
}

/// An account linked to nobody is told apart: protected, disputed (naming whose
/// it may be) or orphaned, not all `unmanaged`.
#[tokio::test]
async fn accounts_linked_to_nobody_say_why() {
    let approved = approved_after_the_snapshot().await;
    let export = seatwarden::export::access(&approved.store, &approved.config).unwrap();
    assert_eq!(
        row(&export, "freelancer.max@gmail.com").justification,
        "orphaned"
    );
    assert_eq!(
        row(&export, "breakglass@example.com").justification,
        "protected"
    );
    for user in ["dana.dup@example.com", "dana.d@contractor.example"] {
        let disputed = row(&export, user);
        assert!(
            disputed
                .justification
                .starts_with("disputed: may be the account of 00u9dana;"),
            "{disputed:?}"
        );
    }
    assert!(
        export
            .accounts
            .iter()
            .all(|r| r.justification != "unmanaged"),
        "{export:?}"
    );
}

/// Right after a reconcile, before any later run reads the workspace again, the
/// export shows the workspace as it is: the accounts the run created (with the
/// groups it added them to), renamed ones under their new userName, and every
/// other write the run made. An access review that left out the newest accounts
/// would understate who has access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_export_after_a_reconcile_matches_the_workspace() {
    use std::collections::BTreeMap;

    const TOKEN: &str = "export-after-reconcile";
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let env = [
        (
            "SEATWARDEN__WORKSPACE__URL".to_owned(),
            sandbox.base_url().to_string(),
        ),
        ("SEATWARDEN__WORKSPACE__TOKEN".to_owned(), TOKEN.to_owned()),
        ("SEATWARDEN__STATE__PATH".to_owned(), "state.db".to_owned()),
    ];
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(env.into_iter().collect()),
    )
    .unwrap();
    let outcome = seatwarden::run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Reconcile,
    )
    .await
    .unwrap();
    let ops: Vec<&str> = outcome.plan.runnable().map(|a| a.kind.name()).collect();
    for op in ["create_account", "update_attributes", "add_members"] {
        assert!(ops.contains(&op), "the demo's run makes no {op}: {ops:?}");
    }

    let workspace = sandbox.snapshot();
    let mut groups_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for group in &workspace.groups {
        for member in &group.members {
            groups_of
                .entry(member.as_str())
                .or_default()
                .push(group.display_name.as_str());
        }
    }
    let actual: BTreeMap<&str, (&str, bool, String, Vec<&str>)> = workspace
        .accounts
        .iter()
        .map(|a| {
            let mut groups = groups_of.get(a.id.as_str()).cloned().unwrap_or_default();
            groups.sort_unstable();
            (
                a.id.as_str(),
                (a.user_name.as_str(), a.active, a.roles.join(","), groups),
            )
        })
        .collect();

    let store = Store::open(&config.state.path).unwrap();
    let export = seatwarden::export::access(&store, &config).unwrap();
    let exported: BTreeMap<&str, (&str, bool, String, Vec<&str>)> = export
        .accounts
        .iter()
        .map(|r| {
            (
                r.account_id.as_str(),
                (
                    r.user_name.as_str(),
                    r.active,
                    r.role.join(","),
                    r.workspace_groups.iter().map(String::as_str).collect(),
                ),
            )
        })
        .collect();
    assert_eq!(exported, actual);
}
