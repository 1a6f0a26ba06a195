//! Session 48: an account tied to a PROTECTED person whose own userName is not
//! protected. A reconcile leaves every account of a protected person alone, so
//! such an account is never deactivated, renamed or regrouped, and no drift item
//! names it. `link` refuses to make one since session 47; one made before (a
//! stored link), or found by a matching rule (a protected group's member matched
//! by email), stays. It stays protected — protection only ever adds — and every
//! run's report lists it (PROTECTED BY PERSON, in every format and in the JSON),
//! `explain` says so for the account, and the commands the report names settle it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use chrono::Utc;
use chrono_tz::UTC;
use seatwarden::config::Config;
use seatwarden::model::{Account, LinkMethod, LossReason, NewLink, WorkspaceSnapshot};
use seatwarden::report::{self, Report, State};
use seatwarden::sandbox::Sandbox;
use seatwarden::store::Store;

use crate::qa_cli::{account, first_plan_stored, person, seatwarden};

const TOKEN: &str = "s48-token";

/// A directory file of `users` (JSON objects) and a configuration for the
/// sandbox at `url`, with `extra` TOML (a `[safety]` table at least) appended.
pub(crate) fn configured(dir: &Path, url: &str, users: serde_json::Value, extra: &str) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
    let path = dir.join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"{}\"\n\n\
             [policy]\nunmatched_accounts = \"deactivate\"\n\n{extra}",
            dir.join("state.db").display()
        ),
    )
    .unwrap();
    Config::load_with_env(&path, Some(Default::default())).unwrap()
}

pub(crate) fn user(
    id: &str,
    user_name: &str,
    email: &str,
    status: &str,
    groups: &[&str],
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "userName": user_name, "email": email, "status": status, "groups": groups
    })
}

pub(crate) fn linked(id: &str, user_name: &str, external_id: &str) -> Account {
    let mut a = account(id, user_name, user_name);
    a.external_id = Some(external_id.into());
    a
}

pub(crate) async fn sandbox(accounts: Vec<Account>) -> Sandbox {
    crate::fixtures::sandbox(
        TOKEN,
        WorkspaceSnapshot {
            accounts,
            groups: Vec::new(),
        },
    )
    .await
}

pub(crate) async fn reconcile(config: &Config) -> Report {
    crate::fixtures::reconcile(config).await.report
}

pub(crate) fn account_in(sandbox: &Sandbox, id: &str) -> Account {
    sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.id == id)
        .unwrap()
}

/// What the report says of the accounts only a protected person shields: the
/// headline, then each finding as the text and the HTML show it.
pub(crate) fn findings(report: &Report) -> String {
    let (_, headline) = report::headline(report, "seatwarden");
    let mut out = format!("{headline}\n");
    for f in report::safety_findings(report, UTC, "seatwarden") {
        out.push_str(&format!("{}: {}\n", f.label.unwrap_or("-"), f.text));
        for d in f.details {
            out.push_str(&format!("  {d}\n"));
        }
    }
    out
}

/// `export access --format json` on `config`: each account id's justification.
fn justifications(config: &Path) -> impl Fn(&str) -> String {
    let (ok, out, err) = seatwarden(config, &["export", "access", "--format", "json"]);
    assert!(ok, "{err}");
    let export: serde_json::Value = serde_json::from_str(&out).unwrap();
    move |id: &str| {
        export["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["account_id"] == id)
            .unwrap_or_else(|| panic!("{id} not exported: {export}"))["justification"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A link Eve (protected as `admin.*@example.com`) → w7 (a contractor's
/// account, `contractor@example.com`) stored before `link` refused it. With
/// `unmatched_accounts = "deactivate"`, w7 would be deactivated unlinked; linked,
/// it is left alone, and every reconcile reports it: the text, Markdown and
/// HTML reports, the JSON, and `explain w7`. `link OWNER w7 --replace`, the
/// command the report names, ties it to its owner, a leaver, and the next
/// reconcile deactivates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_link_to_a_protected_person_is_reported_until_it_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(vec![
        linked("w2", "ben@example.com", "00u2"),
        account("w7", "contractor@example.com", "contractor@example.com"),
    ])
    .await;
    let config = configured(
        dir.path(),
        sandbox.base_url().as_str(),
        serde_json::json!([
            user("00u2", "ben@example.com", "ben@example.com", "ACTIVE", &[]),
            user(
                "00u5",
                "admin.eve@example.com",
                "eve@example.com",
                "ACTIVE",
                &[]
            ),
            user(
                "00u7",
                "carl@example.com",
                "carl@example.com",
                "DEPROVISIONED",
                &[]
            ),
        ]),
        "[safety]\nsettle = \"0s\"\nprotected = [\"admin.*@example.com\"]\n",
    );
    // As `link 00u5 w7` stored it before session 47.
    Store::open(&config.state.path)
        .unwrap()
        .upsert_links(
            &[NewLink {
                identity_id: "00u5".into(),
                account_id: "w7".into(),
                method: LinkMethod::Manual,
            }],
            Utc::now(),
        )
        .unwrap();

    reconcile(&config).await;
    let report = reconcile(&config).await;
    assert!(account_in(&sandbox, "w7").active, "never touched");
    assert!(
        report.actions.is_empty() && report.drift.is_empty(),
        "{report:#?}"
    );
    let shielded = &report.safety.protected_by_person;
    assert_eq!(shielded.len(), 1, "{shielded:#?}");
    assert_eq!(
        (
            shielded[0].account_id.as_str(),
            shielded[0].identity_id.as_str(),
            shielded[0].matched_by,
            shielded[0].active,
        ),
        ("w7", "00u5", None, true)
    );
    // Not "in sync": nothing compared w7 with anyone.
    assert_eq!(State::of(&report), State::Drift);
    insta::assert_snapshot!("stale_link_findings", findings(&report));
    insta::assert_json_snapshot!("stale_link_json", report.safety);
    // Every format shows the account, the person and the command.
    let text = report::render_text(&report, UTC, "seatwarden", false);
    let markdown = report::render_markdown(&report, UTC, "seatwarden").unwrap();
    let html = report::render_html(&report, UTC, "seatwarden").unwrap();
    for (format, out) in [("text", &text), ("markdown", &markdown), ("html", &html)] {
        assert!(out.contains("PROTECTED BY PERSON"), "{format}: {out}");
        assert!(
            out.contains("account w7 (contractor@example.com, active) of protected admin.eve@example.com (identity 00u5)"),
            "{format}: {out}"
        );
        assert!(
            out.contains("seatwarden link OWNER w7 --replace"),
            "{format}: {out}"
        );
    }

    let (ok, out, err) = seatwarden(&dir.path().join("seatwarden.toml"), &["explain", "w7"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(
            "protected: only through protected admin.eve@example.com (identity 00u5), tied to \
             it by a stored link; its own userName contractor@example.com is not protected \
             (safety.protected / protected_groups), yet seatwarden never touches the account, \
             not even when it is due"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "settle it: theirs → add contractor@example.com to safety.protected; someone \
             else's → `seatwarden link OWNER w7 --replace`; nobody's → `seatwarden unlink w7`"
        ),
        "{out}"
    );

    // w7 is Carl's, who left: tied to him, it is deprovisioned like any leaver's.
    let (ok, out, err) = seatwarden(
        &dir.path().join("seatwarden.toml"),
        &["link", "00u7", "w7", "--replace"],
    );
    assert!(ok, "{out}{err}");
    let report = reconcile(&config).await;
    assert!(report.safety.protected_by_person.is_empty(), "{report:#?}");
    assert!(!account_in(&sandbox, "w7").active, "{report:#?}");
}

/// A member of a protected group (`IT Admins`) whose account is found by email
/// under another userName: the plan lists it as matched by email this run, the
/// reconcile stores the link and writes nothing to it (not even the rename to
/// the directory's userName), and the next run lists it by its stored link. Once
/// its own userName is protected too, it is not listed; nor is an account a
/// person of their own name, protected by that name, has: that one, of a
/// suspended person, is listed under PROTECTED LEAVERS instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_group_members_account_matched_by_email_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(vec![
        account("w8", "dana-legacy@example.com", "dana.ops@example.com"),
        linked("w9", "ivan@example.com", "00u9"),
    ])
    .await;
    let users = serde_json::json!([
        user(
            "00u8",
            "dana@example.com",
            "dana.ops@example.com",
            "ACTIVE",
            &["IT Admins"]
        ),
        user(
            "00u9",
            "ivan@example.com",
            "ivan@example.com",
            "SUSPENDED",
            &["it admins"]
        ),
    ]);
    let config = configured(
        dir.path(),
        sandbox.base_url().as_str(),
        users.clone(),
        "[safety]\nsettle = \"0s\"\nprotected_groups = [\"IT Admins\"]\n",
    );
    let open = || Store::open(&config.state.path).unwrap();
    let plan = seatwarden::run::execute(&config, open(), seatwarden::run::Mode::Plan)
        .await
        .unwrap()
        .report;
    let tie = |r: &Report| {
        r.safety
            .protected_by_person
            .iter()
            .map(|p| {
                (
                    p.account_id.clone(),
                    p.identity_id.clone(),
                    p.matched_by,
                    p.lost,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tie(&plan),
        [("w8".into(), "00u8".into(), Some(LinkMethod::Email), None)],
        "{plan:#?}"
    );
    assert!(findings(&plan).contains(
        "account w8 (dana-legacy@example.com, active) of protected dana@example.com (identity \
         00u8), by email (matched this run): theirs → add dana-legacy@example.com to \
         safety.protected"
    ));

    reconcile(&config).await;
    let again = reconcile(&config).await;
    assert_eq!(
        tie(&again),
        [("w8".into(), "00u8".into(), None, None)],
        "{again:#?}"
    );
    let w8 = account_in(&sandbox, "w8");
    assert!(
        w8.active && w8.user_name == "dana-legacy@example.com",
        "{w8:?}"
    );
    assert!(
        account_in(&sandbox, "w9").active,
        "Ivan is protected, by name too"
    );

    // Protected by its own name as well: nothing left to report.
    let config = configured(
        dir.path(),
        sandbox.base_url().as_str(),
        users,
        "[safety]\nsettle = \"0s\"\nprotected_groups = [\"IT Admins\"]\n\
         protected = [\"dana-legacy@example.com\"]\n",
    );
    let settled = reconcile(&config).await;
    assert!(
        settled.safety.protected_by_person.is_empty(),
        "{settled:#?}"
    );
    // Ivan, suspended, keeps his account only by the protection: not in sync,
    // and said so (PROTECTED LEAVERS), though nothing is to be done by seatwarden.
    let kept: Vec<(&str, &str)> = settled
        .safety
        .protected_leavers
        .iter()
        .map(|p| (p.account_id.as_str(), p.identity_id.as_str()))
        .collect();
    assert_eq!(kept, [("w9", "00u9")], "{settled:#?}");
    assert_eq!(State::of(&settled), State::Drift);
    assert_eq!(
        report::headline(&settled, "seatwarden").1,
        "1 leaver's account kept active by safety.protected — see PROTECTED LEAVERS"
    );
}

/// `link` judges protection as a reconcile does: a person by their directory
/// userName, an account by its own userName, never by an email. An account
/// whose email alone matched `admin.*@example.com` passed for protected, so a
/// protected person could still be linked to an account the plan then left alone
/// only for them; and a person whose email alone matched could be linked to a
/// protected account, which made their access one nothing takes away.
#[test]
fn link_judges_protection_by_user_name_as_a_reconcile_does() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = first_plan_stored(
        dir.path(),
        vec![
            person("00u5", "admin.eve@example.com", "eve@example.com"),
            person("00u6", "frank@example.com", "admin.frank@example.com"),
        ],
        vec![
            account("w9", "eve.tmp@example.com", "admin.eve.tmp@example.com"),
            account("w10", "admin.frank@example.com", "frank@example.com"),
        ],
    );
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!("{text}\n[safety]\nprotected = [\"admin.*@example.com\"]\n"),
    )
    .unwrap();

    let (ok, out, err) = seatwarden(&config_path, &["link", "00u5", "w9"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "identity 00u5 (admin.eve@example.com) is protected (safety.protected / \
             protected_groups) and account w9 (eve.tmp@example.com) is not"
        ),
        "{err}"
    );
    let (ok, out, err) = seatwarden(&config_path, &["link", "00u6", "w10"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "account w10 (admin.frank@example.com) is protected (safety.protected / \
             protected_groups) and identity 00u6 (frank@example.com) is not"
        ),
        "{err}"
    );
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    assert!(store.links().unwrap().is_empty());
}

/// A protected person who left keeps their account as it is: the line says so.
#[test]
fn the_line_of_a_protected_leaver_says_they_lost_access() {
    let line = report::protected_by_person_line(
        &seatwarden::model::ProtectedByPerson {
            account_id: "w7".into(),
            account_user_name: "contractor@example.com".into(),
            active: true,
            identity_id: "00u5".into(),
            user_name: "admin.eve@example.com".into(),
            matched_by: None,
            duplicate: false,
            lost: Some(LossReason::Deprovisioned),
        },
        "sudo seatwarden",
    );
    assert_eq!(
        line,
        "account w7 (contractor@example.com, active) of protected admin.eve@example.com \
         (identity 00u5), by a stored link; they lost access (deprovisioned in the \
         directory): theirs → add contractor@example.com to safety.protected; someone \
         else's → `sudo seatwarden link OWNER w7 --replace`; nobody's → `sudo seatwarden \
         unlink w7`"
    );
}

/// The access review says of an account protected only through its person that
/// seatwarden never changes it, and, once the person left, that its removal is
/// one to make by hand ("access due to be removed" would wait forever).
#[test]
fn the_access_review_says_an_account_is_protected_only_through_its_person() {
    let dir = tempfile::tempdir().unwrap();
    let mut eve = person("00u5", "admin.eve@example.com", "eve@example.com");
    eve.status = seatwarden::model::IdentityStatus::Deprovisioned;
    let config_path = first_plan_stored(
        dir.path(),
        vec![
            person("00u2", "admin.ben@example.com", "ben@example.com"),
            eve,
        ],
        vec![
            account("w2", "ben.old@example.com", "ben@example.com"),
            account("w7", "contractor@example.com", "contractor@example.com"),
        ],
    );
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!("{text}\n[safety]\nprotected = [\"admin.*@example.com\"]\n"),
    )
    .unwrap();
    Store::open(&dir.path().join("state.db"))
        .unwrap()
        .upsert_links(
            &[NewLink {
                identity_id: "00u5".into(),
                account_id: "w7".into(),
                method: LinkMethod::Manual,
            }],
            Utc::now(),
        )
        .unwrap();
    let why = justifications(&config_path);
    // Ben's account, found by email under another name.
    assert_eq!(
        why("w2"),
        "in scope: default role Viewer; protected only through its person \
         (safety.protected / protected_groups name them, not the account): seatwarden \
         never changes it (the report lists it under PROTECTED BY PERSON)"
    );
    assert_eq!(
        why("w7"),
        "identity is deprovisioned in the directory: access due to be removed by hand: the \
         person is protected (safety.protected / protected_groups), so seatwarden never \
         changes their accounts"
    );
}

/// The access review judges an account protected as a reconcile does, by its own
/// userName: an orphan whose email alone matches a protected name is deactivated
/// by the next reconcile (`unmatched_accounts = "deactivate"`), so the review
/// calls it orphaned, not protected.
#[test]
fn the_access_review_judges_an_account_protected_by_its_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = first_plan_stored(
        dir.path(),
        vec![person("00u2", "ben@example.com", "ben@example.com")],
        vec![
            account("w2", "ben@example.com", "ben@example.com"),
            account("w3", "temp.ops@example.com", "admin.ops@example.com"),
            account("w4", "admin.root@example.com", "root@example.com"),
        ],
    );
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!(
            "{text}\n[policy]\nunmatched_accounts = \"deactivate\"\n\n\
             [safety]\nprotected = [\"admin.*@example.com\"]\n"
        ),
    )
    .unwrap();
    let why = justifications(&config_path);
    assert_eq!(why("w3"), "orphaned");
    assert_eq!(why("w4"), "protected");
}

/// `seatwarden_safety_finding{finding="protected_by_person"}` is 1 after a
/// daemon's reconcile that left an account alone only for its protected person,
/// so monitoring can alert on it as on the other findings. The demo's workspace
/// with a stale link of a protected person (Ben, by `safety.protected`) to the
/// freelancer's orphan account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_gauges_protected_by_person() {
    use crate::review_s41_ops::sample;
    let metrics =
        reconciled_daemon_metrics("breakglass@example.com,ben.wong@example.com", |state| {
            Store::open(state)
                .unwrap()
                .upsert_links(
                    &[NewLink {
                        identity_id: "00u1001".into(),
                        account_id: "ws-0902".into(),
                        method: LinkMethod::Manual,
                    }],
                    Utc::now(),
                )
                .unwrap();
        })
        .await;
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="protected_by_person"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="source_fault"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
}

/// The `/metrics` of a daemon on the demo's workspace and directory, with
/// `safety.protected` set to `protected` (comma-separated) and its state
/// database first given to `prepare`, once its first reconcile is done.
pub(crate) async fn reconciled_daemon_metrics(
    protected: &str,
    prepare: impl FnOnce(&Path),
) -> String {
    use crate::review_s41_ops::{Running, port_of};
    let token = "review-s48-token";
    let sandbox =
        crate::fixtures::demo_sandbox(token, seatwarden::sandbox::Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        token,
        &[("SEATWARDEN__SAFETY__PROTECTED", protected)],
    );
    prepare(&dir.path().join("state.db"));
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let _daemon = Running(child);
    let port = port_of(&log).await;
    crate::fixtures::metrics_once_reconciled(port, &log).await
}

/// The digest of a period whose newest report lists an account under
/// PROTECTED BY PERSON is not "in sync": its headline counts the accounts, as
/// the report's own headline does, until someone settles each.
#[test]
fn the_digest_counts_accounts_protected_by_person() {
    let mut report = quiet_report();
    let clean = digest_of(&report);
    assert_eq!(clean.state, State::InSync, "{}", clean.headline);
    report
        .safety
        .protected_by_person
        .push(seatwarden::model::ProtectedByPerson {
            account_id: "w7".into(),
            account_user_name: "contractor@example.com".into(),
            active: true,
            identity_id: "00u5".into(),
            user_name: "admin.eve@example.com".into(),
            matched_by: None,
            duplicate: false,
            lost: None,
        });
    let digest = digest_of(&report);
    assert_eq!(digest.state, State::Drift, "{}", digest.headline);
    assert_eq!(
        digest.headline,
        "1 account left alone only for a protected person (PROTECTED BY PERSON)"
    );
}

/// A reconcile's report with nothing in it: no drift, no action, an empty summary.
pub(crate) fn quiet_report() -> Report {
    let mut report = crate::review_s38_digest::huge::report();
    report.drift.clear();
    report.actions.clear();
    report.summary = Default::default();
    report
}

/// The digest of a day whose one run stored `report`, an hour after it.
pub(crate) fn digest_of(report: &Report) -> seatwarden::report::digest::Digest {
    use seatwarden::report::digest::{Digest, DigestInput, SweepActions};
    let reports = [report.clone()];
    Digest::build(&DigestInput {
        name: "acme",
        admin_command: "seatwarden",
        timezone: UTC,
        now: report.finished_at + chrono::Duration::hours(1),
        period: std::time::Duration::from_secs(24 * 3600),
        reports: &reports,
        previous: &[],
        previous_span: None,
        previous_latest: None,
        latest: Some(report),
        failed_runs: 0,
        failed: &[],
        failed_runs_previous: 0,
        deprovisions: &[],
        verified: &[],
        sweeps: &SweepActions::default(),
        sweeps_previous: &SweepActions::default(),
        unreported: &SweepActions::default(),
        stopped_runs: 0,
        unreported_previous: &SweepActions::default(),
        stopped_runs_previous: 0,
        unreadable_previous: 0,
        unreadable_earlier: 0,
        decisions: &[],
        unreadable: &[],
    })
}
