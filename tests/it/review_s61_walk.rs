//! Session 61, an access review read in a spreadsheet and a person with two
//! candidate accounts, through the binary as the engineer who runs it does.
//!
//! - The access export's times carried nanoseconds and an offset
//!   (`2026-12-06T10:00:00.123456789+00:00`), which Excel and LibreOffice keep as
//!   text: an auditor could not sort or filter by date.
//! - Workspace groups were joined with `;` in one cell: a group named `Legal;Ops`
//!   and the two groups `Legal` and `Ops` read the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use seatwarden::model::{Account, WorkspaceGroup};

use crate::review_s43_audit::seatwarden_out;
use crate::review_s60_walk::run;

const TOKEN: &str = "review-s61-walk";

/// What a test adds to the demo before its first reconcile: workspace groups
/// (no mapping names them, so a reconcile leaves them as they are), workspace
/// accounts, and directory people (as `directory.json` writes them).
#[derive(Default)]
struct DemoAdditions<'x> {
    groups: &'x [(&'x str, &'x [&'x str])],
    accounts: Vec<Account>,
    people: Vec<serde_json::Value>,
}

/// The demo with `more` added, reconciled once from its directory by the
/// binary: the sandbox (keep it), the folder of the configuration and state,
/// and the environment that points the binary at them.
async fn reconciled_demo_with(
    more: DemoAdditions<'_>,
) -> (
    seatwarden::sandbox::Sandbox,
    tempfile::TempDir,
    Vec<(String, String)>,
) {
    let mut seed = seatwarden::sandbox::load_seed(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/workspace.json"),
    )
    .unwrap();
    for (n, (name, members)) in more.groups.iter().enumerate() {
        seed.groups.push(WorkspaceGroup {
            id: format!("grp-s61-{n}"),
            display_name: (*name).to_owned(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        });
    }
    seed.accounts.extend(more.accounts);
    let sandbox = crate::fixtures::sandbox(TOKEN, seed).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    if !more.people.is_empty() {
        let path = dir.path().join("directory.json");
        let mut directory: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        directory["users"]
            .as_array_mut()
            .unwrap()
            .extend(more.people);
        std::fs::write(&path, directory.to_string()).unwrap();
    }
    let (code, _, stderr) = run(dir.path(), &env, &["reconcile"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    (sandbox, dir, env)
}

/// The CSV's rows by account id, each a map of column → cell, read as a CSV
/// reader (and a spreadsheet) reads them.
fn rows_by_account(
    csv: &str,
) -> std::collections::HashMap<String, std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            let row: std::collections::HashMap<String, String> = header
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_owned))
                .collect();
            (row["account_id"].clone(), row)
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS`, the date and time Excel and LibreOffice read as one.
fn is_spreadsheet_time(cell: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(cell, "%Y-%m-%d %H:%M:%S").is_ok()
}

/// The times of the access export are ones a spreadsheet reads as dates (UTC to
/// the second, as the README's table says); the JSON keeps them whole, in
/// RFC 3339 with `Z`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_export_times_are_dates_to_a_spreadsheet() {
    let (_sandbox, dir, env) = reconciled_demo_with(DemoAdditions::default()).await;
    // The reconcile's own writes are laid over its snapshot: `applied_through`
    // has a time too.
    let (code, csv, stderr) = run(dir.path(), &env, &["export", "access"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let rows = rows_by_account(&csv);
    let ava = &rows["ws-0001"];
    for column in ["last_change", "snapshot_at"] {
        assert!(is_spreadsheet_time(&ava[column]), "{column}: {ava:?}");
    }
    assert!(is_spreadsheet_time(&ava["applied_through"]), "{ava:?}");
    for row in rows.values() {
        for column in ["last_change", "snapshot_at", "applied_through"] {
            let cell = &row[column];
            assert!(
                cell.is_empty() || is_spreadsheet_time(cell),
                "{column}: {cell:?}"
            );
        }
    }

    let (code, json, stderr) =
        run(dir.path(), &env, &["export", "access", "--format", "json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let snapshot_at = json["snapshot_at"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(snapshot_at).unwrap();
    assert!(snapshot_at.ends_with('Z'), "{snapshot_at}");
    assert_eq!(
        parsed.format("%Y-%m-%d %H:%M:%S").to_string(),
        ava["snapshot_at"],
        "the CSV's time is the JSON's to the second"
    );
}

/// A group named `Legal;Ops` and the two groups `Legal` and `Ops` are told
/// apart in the CSV: one group a line of the cell. A group whose name starts a
/// formula is neutralised wherever it falls in the cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_with_a_semicolon_are_told_apart_from_two_groups() {
    let (_sandbox, dir, env) = reconciled_demo_with(DemoAdditions {
        groups: &[
            ("Legal;Ops", &["ws-0003"]),
            ("Legal", &["ws-0004"]),
            ("Ops", &["ws-0004"]),
            ("=HYPERLINK(\"https://evil.example\")", &["ws-0004"]),
        ],
        ..DemoAdditions::default()
    })
    .await;
    let (code, csv, stderr) = run(dir.path(), &env, &["export", "access"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let rows = rows_by_account(&csv);
    let groups = |account: &str| -> Vec<String> {
        rows[account]["workspace_groups"]
            .split('\n')
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(groups("ws-0003"), ["Legal;Ops", "Marketing"]);
    assert_eq!(
        groups("ws-0004"),
        [
            "'=HYPERLINK(\"https://evil.example\")",
            "Legal",
            "Ops",
            "Sales"
        ]
    );
    // The JSON lists the names as the workspace has them.
    let (code, json, stderr) =
        run(dir.path(), &env, &["export", "access", "--format", "json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let chloe = json["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == "ws-0003")
        .unwrap();
    assert_eq!(
        chloe["workspace_groups"],
        serde_json::json!(["Legal;Ops", "Marketing"])
    );
}

/// A workspace account under the person's directory login, `nsato`, beside one
/// under her email, `naomi.sato@example.com`, that an admin invited by hand
/// (Taskade names accounts by email address, and this one has no other): both
/// may be hers. She was linked to `nsato` and the invited account reported as
/// nobody's, left active when she leaves; it is a disputed match naming both,
/// in `report`, `explain` and the access export, and nothing is done to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_under_a_persons_email_beside_their_login_is_disputed() {
    let account = |id: &str, user_name: &str| Account {
        id: id.to_owned(),
        user_name: user_name.to_owned(),
        external_id: None,
        given_name: Some("Naomi".to_owned()),
        family_name: Some("Sato".to_owned()),
        display_name: None,
        email: None,
        active: true,
        roles: vec!["Viewer".to_owned()],
    };
    let (sandbox, dir, env) = reconciled_demo_with(DemoAdditions {
        accounts: vec![
            account("ws-0960", "nsato"),
            account("ws-0961", "naomi.sato@example.com"),
        ],
        people: vec![serde_json::json!({
            "id": "00u2000",
            "userName": "nsato",
            "email": "naomi.sato@example.com",
            "givenName": "Naomi",
            "familyName": "Sato",
            "status": "active",
            "groups": ["Taskade Users"]
        })],
        ..DemoAdditions::default()
    })
    .await;
    // Nothing was written to either account.
    let workspace = sandbox.snapshot();
    for id in ["ws-0960", "ws-0961"] {
        let now = workspace.accounts.iter().find(|a| a.id == id).unwrap();
        assert_eq!(now, &account(id, &now.user_name), "{id}");
    }

    let (code, report, stderr) = run(dir.path(), &env, &["report"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let dispute = report
        .lines()
        .skip_while(|line| !line.contains("00u2000"))
        .take(6)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        dispute.contains("ws-0960") && dispute.contains("ws-0961"),
        "{report}"
    );

    let (code, explain, stderr) = run(dir.path(), &env, &["explain", "nsato"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        explain.contains("DISPUTED: 2 workspace account(s) may be this person's")
            && explain.contains("ws-0960 nsato — matched by userName; active")
            && explain.contains(
                "ws-0961 naomi.sato@example.com — matched by email (the account's userName \
                 is their email); active"
            ),
        "{explain}"
    );

    let (code, csv, stderr) = run(dir.path(), &env, &["export", "access"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let rows = rows_by_account(&csv);
    for id in ["ws-0960", "ws-0961"] {
        let justification = &rows[id]["justification"];
        assert!(
            justification.starts_with("disputed: may be the account of 00u2000"),
            "{id}: {justification}"
        );
    }
}

/// `seatwarden explain` walked for a person in each kind of drift of the demo,
/// after a `plan` and after a `reconcile`:
/// - a leaver's ledger said "never seen losing access" under a Scope that said
///   they had lost it (a plan records no episode; nor does a reconcile for an
///   account already inactive);
/// - a link read "matched by created" (and "by external_id", "by user_name",
///   the store's spelling) where the rest of `explain` says `externalId` and
///   `userName`;
/// - a membership's line in Next run was the group's action alone ("8
///   member(s) missing from Finance"), not what it does to the person;
/// - a disputed account's directory record read "not in the directory snapshot
///   (deleted, or never there)", while the person it may be is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_why_a_leaver_has_no_episode_and_how_each_link_was_made() {
    let sandbox =
        crate::fixtures::demo_sandbox(TOKEN, seatwarden::sandbox::Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    let (code, _, stderr) = run(dir.path(), &env, &["plan"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let explain = |person: &'static str| {
        let (dir, env) = (dir.path().to_owned(), env.clone());
        async move {
            let (code, text, stderr) = tokio::task::spawn_blocking(move || {
                seatwarden_out(&dir, &env, &["explain", person])
            })
            .await
            .unwrap();
            assert_eq!(code, Some(0), "{person}: {stderr}");
            text
        }
    };
    let no_episode = "none: no episode recorded (a reconcile or the daemon's sweep opens one \
                      when it finds an active account of theirs to deactivate; a plan opens \
                      none, and an account already inactive needs none)";
    // Olivia left the directory; the plan deactivates her account next.
    let olivia = explain("olivia.haddad@example.com").await;
    assert!(
        olivia.contains("no access: identity is deprovisioned in the directory")
            && olivia.contains(no_episode)
            && !olivia.contains("never seen losing access"),
        "{olivia}"
    );

    // The account Emma's email matches is disputed: its directory record is not
    // "deleted, or never there" while the person it may be is in the directory.
    let disputed_account = explain("ws-0901").await;
    assert!(
        disputed_account.contains(
            "Directory record\n  none chosen: whose account this is is disputed (the people \
             it may be are under Disputed match)\n"
        ) && disputed_account
            .contains("identity 00u1004 emma.novak@example.com — matched by email"),
        "{disputed_account}"
    );
    // Diana's next run adds her to Finance: the action is the group's, and
    // read alone ("8 member(s) missing from Finance") said nothing of her.
    let diana = explain("diana.garcia@example.com").await;
    assert!(
        diana.contains(
            "  add_members — added to Finance (one write for the group: 8 member(s) \
             missing from Finance)"
        ),
        "{diana}"
    );

    let (code, _, stderr) = run(dir.path(), &env, &["reconcile"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    // Peter is suspended, his account inactive already: nothing to record.
    let peter = explain("peter.hart@example.com").await;
    assert!(
        peter.contains("no access: identity is suspended in the directory")
            && peter.contains(no_episode),
        "{peter}"
    );
    // Someone in scope has never lost access.
    let liam = explain("liam.kowalski@example.com").await;
    assert!(
        liam.contains("none: never seen losing access")
            && liam.contains("00u1011 ↔ account ws-0012, matched by externalId at "),
        "{liam}"
    );
    // The new hire's account is one seatwarden created.
    let noah = explain("noah.muller@example.com").await;
    assert!(
        noah.contains(", created by seatwarden for them at ")
            && !noah.contains("matched by created"),
        "{noah}"
    );
}
