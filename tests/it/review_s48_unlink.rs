//! Session 48: `seatwarden unlink ACCOUNT`, the undo of `link`. A stored link
//! could not be removed: an account tied by a stale link to a protected person
//! (the report's PROTECTED BY PERSON) that belongs to nobody in the directory
//! could only be protected (wrong) or linked to someone else (wrong), and an
//! admin who linked the wrong account by hand had no undo. `unlink` removes the
//! link, audited, under the writer lock, and says what the next run does with
//! the account and the person; it refuses an unlink the next reconcile would undo
//! (a rule matches the same person) and one that would keep a leaver's account
//! active.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use seatwarden::model::{Account, IdentityStatus, LinkMethod, NewLink, WorkspaceSnapshot};
use seatwarden::store::{Acquired, Store, WriterLock};

use crate::qa_cli::{account, first_plan_stored, person, seatwarden};

const TOKEN: &str = "s48-unlink-token";

/// `seatwarden --config CONFIG ARGS` as operator `alice`: the exit code, stdout
/// and stderr.
pub(crate) fn run(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .env("SEATWARDEN_OPERATOR", "alice")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Stores the links `pairs` (identity, account), as `link` or a reconcile
/// stored them.
pub(crate) fn store_links(database: &Path, pairs: &[(&str, &str)]) {
    Store::open(database)
        .unwrap()
        .upsert_links(
            &pairs
                .iter()
                .map(|(identity, account)| NewLink {
                    identity_id: (*identity).into(),
                    account_id: (*account).into(),
                    method: LinkMethod::Manual,
                })
                .collect::<Vec<_>>(),
            Utc::now(),
        )
        .unwrap();
}

fn links(database: &Path) -> Vec<(String, String)> {
    Store::open(database)
        .unwrap()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect()
}

/// Opens a deprovision episode for `identity` (a leaver, deprovisioned in the
/// directory), naming `account`, as a reconcile or a sweep opens one.
pub(crate) fn open_deprovision(
    database: &Path,
    identity: &str,
    account: Option<&str>,
    user_name: &str,
    now: chrono::DateTime<Utc>,
) {
    let changes = seatwarden::sla::observe(
        &[],
        &[seatwarden::sla::Leaver {
            identity_id: identity.into(),
            account_id: account.map(Into::into),
            user_name: user_name.into(),
            reason: seatwarden::model::LossReason::Deprovisioned,
        }],
        &[],
        now,
        chrono::Duration::hours(8),
    );
    Store::open(database)
        .unwrap()
        .update_ledger(&changes, now)
        .unwrap();
}

fn append(config: &Path, text: &str) {
    let before = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("{before}\n{text}")).unwrap();
}

/// Each refusal says why and changes nothing: no state database, an account
/// nobody knows, an account with no stored link, and an account a rule matches
/// to the same person again (the next reconcile would link it anew: the unlink
/// undone unseen).
#[test]
fn unlink_refuses_what_it_cannot_or_must_not_undo() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u1", "ada@example.com", "ada@example.com"),
            person("00u2", "ben@example.com", "ben@example.com"),
        ],
        vec![
            account("w1", "ada@example.com", "ada@example.com"),
            account("w2", "ben.old@example.com", "ben@example.com"),
            account("w3", "stray@example.com", "stray@example.com"),
        ],
    );
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u1", "w1"), ("00u2", "w2"), ("00u3", "w9")]);

    let (code, out, err) = run(&config, &["unlink", "w99"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "account \"w99\" is not in the newest workspace snapshot (run 1) and no link \
             names it"
        ),
        "{err}"
    );

    let (code, out, err) = run(&config, &["unlink", "w3"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("account w3 (stray@example.com) has no stored link: nothing to undo"),
        "{err}"
    );

    // w1 is Ada's by its userName, w2 Ben's by email: either would be linked
    // to the same person by the next reconcile.
    let (code, out, err) = run(&config, &["unlink", "w1"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "account w1 (ada@example.com) matches identity 00u1 (ada@example.com) by \
             userName: unlinked, the next reconcile would match it to them again and store \
             the link anew, so nothing would change"
        ),
        "{err}"
    );
    let (code, out, err) = run(&config, &["unlink", "w2"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("matches identity 00u2 (ben@example.com) by email"),
        "{err}"
    );
    assert_eq!(
        links(&database),
        [
            ("00u1".into(), "w1".into()),
            ("00u2".into(), "w2".into()),
            ("00u3".into(), "w9".into())
        ]
    );
    let store = Store::open(&database).unwrap();
    assert!(
        store.audit().unwrap().is_empty(),
        "a refusal is no decision"
    );
    drop(store);

    // A link to an account the newest snapshot lacks (deleted in the workspace
    // since): nothing to foresee, and nothing against removing it.
    let (code, out, err) = run(&config, &["unlink", "w9"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "account w9: it is not in the newest workspace snapshot: nothing is planned for it"
        ),
        "{out}"
    );
    assert_eq!(
        links(&database),
        [("00u1".into(), "w1".into()), ("00u2".into(), "w2".into())]
    );

    // No state database: refused, none made.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(&config, empty.path().join("seatwarden.toml")).unwrap();
    let (code, out, err) = run(&empty.path().join("seatwarden.toml"), &["unlink", "w1"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("state database"), "{err}");
    assert!(!empty.path().join("state.db").exists());
}

/// A link made by hand to the wrong account: `unlink` removes it, audited with
/// who and what, and says what the next run does: the account no rule matches
/// is an orphan (reported, under the default `unmatched_accounts`), and the
/// person gets a new account. `audit` lists the decision.
#[test]
fn unlink_removes_a_wrong_link_audited_and_says_what_the_next_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![account(
            "w3",
            "contractor@example.com",
            "contractor@example.com",
        )],
    );
    append(&config, "[safety]\nsettle = \"0s\"\n");
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u1", "w3")]);

    let (code, out, err) = run(&config, &["unlink", "w3"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        "account w3 is no longer linked to identity 00u1\n\
         the next run:\n  \
         - account w3: no rule (externalId, userName, email) matches it to anyone: an \
         orphan, left as it is and reported every run as orphaned \
         (policy.unmatched_accounts = \"report\")\n  \
         - identity 00u1 (ada@example.com): gets a new account (ada@example.com), created \
         by the next reconcile\n"
    );
    assert!(links(&database).is_empty());
    let audit = Store::open(&database).unwrap().audit().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].user.starts_with("alice"), "{audit:?}");
    assert_eq!(
        (audit[0].command.as_str(), audit[0].detail.as_str()),
        ("unlink", "unlinked identity 00u1 from account w3")
    );
    let (ok, out, err) = seatwarden(&config, &["audit"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("alice") && out.contains("  unlink: unlinked identity 00u1 from account w3"),
        "{out}"
    );
    // Undone once: a second unlink has nothing to undo.
    let (code, _, err) = run(&config, &["unlink", "w3"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("has no stored link"), "{err}");
}

/// A leaver's account must not be kept active by unlinking it: the next run
/// deprovisions it as theirs, and unlinked, an orphan that
/// `unmatched_accounts = "report"` only reports would stay active. Refused,
/// naming `link OWNER ACCOUNT --replace`. With `"deactivate"`, the orphan is
/// deactivated all the same (through the guard): allowed, and said.
#[test]
fn unlink_does_not_let_a_leavers_account_escape_its_deprovisioning() {
    let dir = tempfile::tempdir().unwrap();
    let mut carl = person("00u7", "carl@example.com", "carl@example.com");
    carl.status = IdentityStatus::Deprovisioned;
    let config = first_plan_stored(
        dir.path(),
        vec![carl],
        vec![account("w7", "c.temp@example.com", "c.temp@example.com")],
    );
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u7", "w7")]);

    let (code, out, err) = run(&config, &["unlink", "w7"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "identity 00u7 (carl@example.com) lost access and account w7 \
             (c.temp@example.com) is theirs by this link: the next run deprovisions it \
             (deactivate ("
        ) && err.contains("Unlinked, it would stay active (no rule")
            && err.contains("`seatwarden link OWNER w7 --replace`"),
        "{err}"
    );
    assert_eq!(links(&database), [("00u7".into(), "w7".into())]);

    append(&config, "[policy]\nunmatched_accounts = \"deactivate\"\n");
    let (code, out, err) = run(&config, &["unlink", "w7"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "account w7: no rule (externalId, userName, email) matches it to anyone: an \
             orphan, deactivated by the next reconcile and taken out of the managed groups \
             it is in (policy.unmatched_accounts = \"deactivate\"; never deleted), through \
             the guard's thresholds as any deactivation; the next run plans: deactivate (no directory identity matches \
             this account)"
        ),
        "{out}"
    );
    assert!(
        out.contains("identity 00u7 (carl@example.com): has no account then"),
        "{out}"
    );
}

/// An account protected by its own userName stays protected once unlinked
/// (the plan judges it by that name, linked or not), and `unlink` says so; an
/// account a rule matches to another person is said to become theirs.
#[test]
fn unlink_says_a_protected_account_stays_protected_and_names_a_new_owner() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u5", "admin.eve@example.com", "eve@example.com"),
            person("00u1", "ada@example.com", "ada@example.com"),
            person("00u2", "ben@example.com", "ben@example.com"),
        ],
        vec![
            account("w5", "admin.breakglass@example.com", "ops@example.com"),
            account("w6", "ada.old@example.com", "ada@example.com"),
        ],
    );
    append(
        &config,
        "[safety]\nprotected = [\"admin.*@example.com\"]\n[policy]\nunmatched_accounts = \
         \"deactivate\"\n",
    );
    let database = dir.path().join("state.db");
    // w6 (Ada's by email) linked to Ben by a slip of the hand.
    store_links(&database, &[("00u5", "w5"), ("00u2", "w6")]);

    let (code, out, err) = run(&config, &["unlink", "w5"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "account w5: linked to nobody; protected by its own userName \
             admin.breakglass@example.com (safety.protected / protected_groups): left \
             alone, as before"
        ) && !out.contains("deactivate"),
        "{out}"
    );

    let (code, out, err) = run(&config, &["unlink", "w6"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "account w6: matched by email to identity 00u1 (ada@example.com), whose account \
             it becomes (the next reconcile stores that link); the next run plans: \
             update_attributes ("
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "identity 00u2 (ben@example.com): gets a new account (ben@example.com), created \
             by the next reconcile"
        ),
        "{out}"
    );
    assert!(links(&database).is_empty());
}

/// Another writer holds the writer lock: `unlink` gives up after
/// `--lock-timeout` with exit 75, having removed nothing.
#[test]
fn unlink_waits_for_the_writer_lock_and_gives_up_with_75() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![account("w3", "stray@example.com", "stray@example.com")],
    );
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u1", "w3")]);
    let Acquired::Taken(held) =
        WriterLock::acquire_within(&database, "the daemon's reconcile job", None, |_, _| {
            panic!("nobody else holds it")
        })
        .unwrap()
    else {
        panic!("nobody else holds it")
    };
    let (code, out, err) = run(&config, &["unlink", "w3", "--lock-timeout", "0"]);
    assert_eq!(code, Some(75), "{out}{err}");
    assert!(
        err.contains("the daemon's reconcile job") && err.contains("nothing was done"),
        "{err}"
    );
    assert_eq!(links(&database), [("00u1".into(), "w3".into())]);
    drop(held);
}

/// End to end against the sandbox: a contractor's account tied by a stale link
/// to protected Eve is left alone by every reconcile, and the report names
/// `unlink w7` for it (it belongs to nobody in the directory). Unlinked, the
/// next reconcile treats it as the rules say: no rule matches it, so under
/// `unmatched_accounts = "deactivate"` it is deactivated, and nothing is listed
/// under PROTECTED BY PERSON any more. The decision is in `audit` and in the
/// digest's decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_unlink_the_next_reconcile_treats_the_account_as_the_rules_say() {
    let dir = tempfile::tempdir().unwrap();
    let mut ben = account("w2", "ben@example.com", "ben@example.com");
    ben.external_id = Some("00u2".into());
    let sandbox = crate::fixtures::sandbox(
        TOKEN,
        WorkspaceSnapshot {
            accounts: vec![
                ben,
                account("w7", "contractor@example.com", "contractor@example.com"),
            ],
            groups: Vec::new(),
        },
    )
    .await;
    std::fs::write(
        dir.path().join("directory.json"),
        serde_json::json!({ "users": [
            {"id": "00u2", "userName": "ben@example.com", "email": "ben@example.com",
             "status": "ACTIVE", "groups": []},
            {"id": "00u5", "userName": "admin.eve@example.com", "email": "eve@example.com",
             "status": "ACTIVE", "groups": []},
        ]})
        .to_string(),
    )
    .unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"state.db\"\n\n\
             [policy]\nunmatched_accounts = \"deactivate\"\n\n\
             [safety]\nsettle = \"0s\"\nprotected = [\"admin.*@example.com\"]\n",
            sandbox.base_url()
        ),
    )
    .unwrap();
    let config =
        seatwarden::config::Config::load_with_env(&path, Some(Default::default())).unwrap();
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u5", "w7")]);
    let w7 = |sandbox: &seatwarden::sandbox::Sandbox| -> Account {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.id == "w7")
            .unwrap()
    };

    crate::fixtures::reconcile(&config).await;
    let report = crate::fixtures::reconcile(&config).await.report;
    assert!(w7(&sandbox).active, "left alone for Eve");
    let text = seatwarden::report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    assert!(text.contains("nobody's → `seatwarden unlink w7`"), "{text}");
    let (ok, out, err) = seatwarden(&path, &["explain", "w7"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "settle it: theirs → add contractor@example.com to safety.protected; someone \
             else's → `seatwarden link OWNER w7 --replace`; nobody's → `seatwarden unlink w7`"
        ),
        "{out}"
    );

    let (code, out, err) = run(&path, &["unlink", "w7"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("account w7: no rule (externalId, userName, email) matches it to anyone: an orphan, deactivated by the next reconcile"),
        "{out}"
    );
    assert!(
        out.contains(
            "identity 00u5 (admin.eve@example.com): protected (safety.protected / \
             protected_groups): has no account then, and the next run creates none (it makes \
             no change for a protected person)"
        ),
        "{out}"
    );
    assert!(
        w7(&sandbox).active,
        "unlink writes nothing to the workspace"
    );

    let report = crate::fixtures::reconcile(&config).await.report;
    assert!(!w7(&sandbox).active, "{report:#?}");
    assert!(report.safety.protected_by_person.is_empty(), "{report:#?}");
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.op == "deactivate"
                && a.reason == seatwarden::model::DriftKind::OrphanedAccount),
        "{report:#?}"
    );
    assert!(
        !links(&database).iter().any(|(_, account)| account == "w7"),
        "not linked again"
    );

    let (ok, out, err) = seatwarden(&path, &["audit"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("alice") && out.contains("  unlink: unlinked identity 00u5 from account w7"),
        "{out}"
    );
    let (ok, out, err) = seatwarden(&path, &["digest", "--period", "1d"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("unlink") && out.contains("unlinked identity 00u5 from account w7"),
        "{out}"
    );
}

/// The report and `explain` name `unlink` only for a stored link: a tie a rule
/// finds each run (or a duplicate's) comes back whatever is unlinked.
#[test]
fn the_report_names_unlink_only_for_a_stored_link() {
    let mut p = seatwarden::model::ProtectedByPerson {
        account_id: "w8".into(),
        account_user_name: "dana-legacy@example.com".into(),
        active: true,
        identity_id: "00u8".into(),
        user_name: "dana@example.com".into(),
        matched_by: None,
        duplicate: false,
        lost: None,
    };
    assert!(
        seatwarden::report::protected_by_person_line(&p, "seatwarden")
            .ends_with("; nobody's → `seatwarden unlink w8`")
    );
    p.matched_by = Some(LinkMethod::Email);
    let line = seatwarden::report::protected_by_person_line(&p, "seatwarden");
    assert!(
        line.ends_with("someone else's → `seatwarden link OWNER w8 --replace`"),
        "{line}"
    );
    p.duplicate = true;
    let line = seatwarden::report::protected_by_person_line(&p, "seatwarden");
    assert!(!line.contains("unlink"), "{line}");
}

/// A leaver the daemon's sweep saw leave after the stored snapshot was read:
/// the snapshot still shows them with access, but their open deprovision names
/// the account. Unlinked, it would deactivate nothing: refused, the episode
/// left as it was. Once the orphan would be deactivated all the same, allowed.
#[test]
fn unlink_refuses_an_account_an_open_deprovision_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u7", "carl@example.com", "carl@example.com")],
        vec![account("w7", "c.temp@example.com", "c.temp@example.com")],
    );
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u7", "w7")]);
    let now = Utc::now();
    open_deprovision(&database, "00u7", Some("w7"), "carl@example.com", now);

    let (code, out, err) = run(&config, &["unlink", "w7"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "identity 00u7 (carl@example.com) lost access and account w7 \
             (c.temp@example.com) is theirs by this link: their open deprovision (#1: \
             deprovisioned in the directory) deactivates it. Unlinked, it would stay active"
        ),
        "{err}"
    );
    assert_eq!(links(&database), [("00u7".into(), "w7".into())]);
    let open = Store::open(&database).unwrap().open_deprovisions().unwrap();
    assert_eq!(open[0].account_id.as_deref(), Some("w7"));

    // Unlinked, the orphan is deactivated all the same: allowed, and the episode
    // no longer names the account (it waits for the next reconcile's match, as
    // after `link --replace`).
    append(&config, "[policy]\nunmatched_accounts = \"deactivate\"\n");
    let (code, out, err) = run(&config, &["unlink", "w7"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(links(&database).is_empty());
    let open = Store::open(&database).unwrap().open_deprovisions().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].account_id, None);
}

/// The deactivation an unlink leads to goes through the guard as any other:
/// past `safety.max_deprovisions`, `unlink` says it is held, and why.
#[test]
fn unlink_says_when_the_guard_would_hold_the_orphans_deactivation() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![
            account("w1", "ada@example.com", "ada@example.com"),
            account("w3", "contractor@example.com", "contractor@example.com"),
        ],
    );
    append(
        &config,
        "[policy]\nunmatched_accounts = \"deactivate\"\n[safety]\nmax_deprovisions = 0\n",
    );
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u1", "w1"), ("00u9", "w3")]);

    let (code, out, err) = run(&config, &["unlink", "w3"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "the next run plans: deactivate (no directory identity matches this account); \
             held: 1 deprovision planned, the per-run limit is 0"
        ),
        "{out}"
    );
}

/// An account that goes back to being one of a person's disputed candidates
/// (linked by hand to settle a dispute, then unlinked) is said to be disputed,
/// naming the person and the rule, not an orphan that no rule matches; and
/// `explain` of either says who took the link away, and when.
#[test]
fn unlink_says_an_account_goes_back_to_its_persons_dispute() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u4", "emma@example.com", "emma@example.com")],
        vec![
            account("w4", "emma@example.com", "emma.n@example.com"),
            account("w9", "e.jones@example.com", "emma@example.com"),
        ],
    );
    let database = dir.path().join("state.db");
    store_links(&database, &[("00u4", "w9")]);

    let (code, out, err) = run(&config, &["unlink", "w9"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "account w9: disputed: it may be the account of identity 00u4 \
             (emma@example.com) (matched by email), as may others; nothing is written to \
             it until `seatwarden link 00u4 ACCOUNT` says which is theirs"
        ) && !out.contains("orphan"),
        "{out}"
    );
    assert!(links(&database).is_empty());
    // `explain` of the account, and of the person, says who took the link away.
    for subject in ["w9", "00u4"] {
        let (code, out, err) = run(&config, &["explain", subject]);
        assert_eq!(code, Some(0), "{out}{err}");
        let link = out.split("\nLink\n").nth(1).unwrap_or_default();
        assert!(
            link.starts_with("  unlinked identity 00u4 from account w9 by alice")
                && link.lines().next().unwrap().ends_with("(`unlink`)"),
            "{out}"
        );
    }
    let (_, out, _) = run(&config, &["explain", "w4"]);
    assert!(!out.contains("unlinked"), "{out}");
}

/// The ids `link` and `unlink` print are the providers' (an account id is
/// whatever the workspace made it): made printable, as the reports make them,
/// so one with an escape sequence cannot drive the operator's terminal.
#[test]
fn link_and_unlink_print_ids_made_printable() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, account_id) = ("00u\u{1b}]0;owned\u{7}5", "w\u{1b}[2J7");
    let config = first_plan_stored(
        dir.path(),
        vec![person(identity, "eve@example.com", "eve@example.com")],
        vec![account(
            account_id,
            "eve.tmp@example.com",
            "eve.tmp@example.com",
        )],
    );
    for args in [
        vec!["link", identity, account_id],
        vec!["unlink", account_id],
    ] {
        let (code, out, err) = run(&config, &args);
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}') && out.contains('\u{fffd}'),
            "{args:?}: {out:?}"
        );
    }
    assert!(links(&dir.path().join("state.db")).is_empty());
}

/// Under `unmatched_accounts = "adopt"` an unlinked active account no rule
/// matches is adopted, in no report and deactivated by nothing: `unlink` warns
/// that, were it the person's after all, their leaving would not take it.
#[test]
fn unlink_warns_that_an_adopted_account_outlives_its_person() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u5", "eve@example.com", "eve@example.com")],
        vec![account("w7", "e.v@example.com", "ev@example.com")],
    );
    append(&config, "[policy]\nunmatched_accounts = \"adopt\"\n");
    store_links(&dir.path().join("state.db"), &[("00u5", "w7")]);
    let (code, out, err) = run(&config, &["unlink", "w7"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "an orphan, adopted as it is, never touched nor reported \
             (policy.unmatched_accounts = \"adopt\"): if it is in fact the person's, nothing \
             deactivates it when they leave"
        ),
        "{out}"
    );
}
