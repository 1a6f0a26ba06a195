//! Session 38's review of what an operator does after a run: a reconcile killed
//! mid-apply with deprovisions held, as `status` and `report --run` tell it
//! before and after `approve RUN` (whose recovery resolves its rows).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use seatwarden::store::{ActionState, RunStatus};

use crate::review_s37_crash::{Scenario, count, scenario};

/// The binary with `args`, to its end: exit code, stdout, stderr.
fn cli(s: &Scenario, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(s.dir.path().join("seatwarden.toml"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env("SEATWARDEN_OPERATOR", "review")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `status`'s "Last reconcile:" line.
fn last_reconcile_line(s: &Scenario) -> String {
    let (code, out, err) = cli(s, &["status"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned()
}

/// A reconcile holding its deactivations (over the limit) killed after 40
/// creates: before `approve`, `status` and `report --run` say what it holds and
/// the command that approves it (there is no report to count them from); after
/// `approve RUN` resolved its rows and applied the held ones, the run is closed,
/// not "cut off" waiting for a recovery that happened, and `report --run` says
/// what it wrote, as `status` counts it, with the times it started and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reconcile_with_held_deprovisions_before_and_after_approve() {
    let s = scenario(400, &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "5")]).await;
    let child = s.spawn(&["reconcile"], "killed");
    s.kill_when(child, "killed", |seen| count(seen, "POST", "/Users") >= 40)
        .await;
    let run = s.newest_reconcile();
    let held = s
        .store()
        .journal(run)
        .unwrap()
        .iter()
        .filter(|row| row.state == ActionState::Held)
        .count();
    assert!(held > 5, "{held}");

    let line = last_reconcile_line(&s);
    assert!(
        line.starts_with(&format!("Last reconcile: run {run} cut off (")),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            ": {held} actions held for approval (`seatwarden approve {run}`)"
        )),
        "{line}"
    );
    let (code, _, err) = cli(&s, &["report", "--run", &run.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("run {run} (reconcile) was cut off: "))
            && err.contains(&format!("Its writes: {held} held for a human, "))
            && err.contains(&format!("then `seatwarden approve {run}`")),
        "{err}"
    );

    let code = s.run(&["approve", &run.to_string()], "approve").await;
    assert_eq!(code, 0, "{}", s.stderr("approve"));
    let record = s.store().run(run).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed, "{record:?}");
    assert!(record.closed_as_interrupted(), "{record:?}");
    let applied = s
        .store()
        .journal(run)
        .unwrap()
        .iter()
        .filter(|row| row.state == ActionState::Applied)
        .count();
    assert!(applied >= 40 + held, "{applied}");

    let line = last_reconcile_line(&s);
    assert!(
        line.starts_with(&format!(
            "Last reconcile: run {run} interrupted (its process stopped before it finished; \
             its writes resolved since): "
        )) && line.contains(&format!("actions: {applied} applied, "))
            && !line.contains("held for approval"),
        "{line}"
    );
    let (code, _, err) = cli(&s, &["report", "--run", &run.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "run {run} (reconcile) was interrupted: the process stopped before it finished \
             (started "
        )) && err.contains("; closed at ")
            && err.contains(&format!("Its writes: {applied} applied, "))
            && !err.contains("held for a human"),
        "{err}"
    );
    let (_, json, _) = cli(&s, &["status", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["last_reconcile"]["status"], "failed", "{json}");
    assert_eq!(json["last_reconcile_cut_off"], false, "{json}");
}

/// A directory listing that ended short of its `totalResults` holds the
/// deactivation of the person it left out (they are not known to be gone):
/// `approve RUN`, which reads no directory, refuses it, saying why and what
/// decides it, and the account stays active. Before, the approval sent it: a
/// person merely missing from a partial read lost their access. The reconcile
/// that held it says so, rather than pointing at `approve`; the refusal names
/// the action and whom it is about, not only its number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_refuses_a_deprovision_held_for_an_incomplete_directory() {
    use crate::scim_directory::{THREE, mount_people, three_provisioned};
    let idp = wiremock::MockServer::start().await;
    let (workspace, dir, _config) = three_provisioned(&idp).await;
    mount_people(&idp, &THREE[..2], 3).await;
    let binary = |args: &[&str]| {
        let config = dir.path().join("seatwarden.toml");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_seatwarden"))
                    .arg("--config")
                    .arg(config)
                    .args(args)
                    .env_remove("SEATWARDEN_CONFIG")
                    .env("SEATWARDEN_OPERATOR", "review")
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };

    let out = binary(&["reconcile", "--format", "json"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = report["run_id"].as_i64().unwrap().to_string();
    assert!(
        err.contains(
            "1 action held because the directory read was incomplete (someone only missing \
             from it looks gone): no approval sends them; `seatwarden reconcile` again once \
             the directory reads whole"
        ) && !err.contains("approve"),
        "{err}"
    );

    let out = binary(&["approve", &run]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("0 approved (0 applied, 0 failed), 0 obsolete, 1 refused")
            && said.contains(&format!(
                " deactivate cy@example.com: planned from run {run}'s incomplete directory \
                 read, in which someone only missing looks gone: no approval takes access \
                 away on it. Run `seatwarden reconcile` once the directory reads whole"
            )),
        "{said}"
    );
    let cy = workspace
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.user_name == "cy@example.com")
        .unwrap();
    assert!(cy.active, "{said}");
    workspace.shutdown().await;
}

/// `link` of an account the plan matches to someone else (here by userName,
/// after a first `plan`, so no link is stored yet) was taken silently: the next
/// reconcile would have renamed Ben's account to Ada's userName and created Ben
/// an empty one. It is refused without --replace, naming whose it is and what
/// would follow; the right link, and the same with --replace, go through.
#[test]
fn link_refuses_an_account_the_plan_matches_to_someone_else() {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    let dir = tempfile::tempdir().unwrap();
    let mut adas = account("w1", "ada.old@example.com", "ada.old@example.com");
    adas.external_id = Some("00u1".into());
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u1", "ada@example.com", "ada@example.com"),
            person("00u2", "ben@example.com", "ben@example.com"),
        ],
        vec![adas, account("w2", "ben@example.com", "ben@example.com")],
    );
    let links = || {
        seatwarden::store::Store::open(&dir.path().join("state.db"))
            .unwrap()
            .links()
            .unwrap()
            .into_iter()
            .map(|l| (l.identity_id, l.account_id))
            .collect::<Vec<_>>()
    };

    let (ok, out, err) = seatwarden(&config, &["link", "00u1", "w2"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "account w2 (ben@example.com) matches identity 00u2 (ben@example.com) by userName \
             (not linked yet): linked to 00u1 (ada@example.com), the next reconcile would \
             rename it to their userName and give 00u2 a new, empty account. Check the \
             account id (`seatwarden explain 00u1` shows the accounts that may be theirs); if \
             it is 00u1's all the same, pass --replace"
        ),
        "{err}"
    );
    assert!(links().is_empty());

    let (ok, out, err) = seatwarden(&config, &["link", "00u2", "w2"]);
    assert!(ok, "{out}{err}");
    assert_eq!(links(), vec![("00u2".to_owned(), "w2".to_owned())]);
    let (ok, out, err) = seatwarden(&config, &["link", "00u1", "w1"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = seatwarden(&config, &["link", "00u1", "w2", "--replace"]);
    assert!(ok, "{out}{err}");
    assert!(links().contains(&("00u1".to_owned(), "w2".to_owned())));
}

/// `explain` of someone no stored snapshot has (added to the directory since the
/// last run, say) said only that they matched nothing in run N's snapshots: it
/// says when those were read and the command that reads both sides again.
#[test]
fn explain_of_someone_in_no_snapshot_says_when_they_were_read_and_what_reads_again() {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![person("00u1", "ada@example.com", "ada@example.com")],
        vec![account("w1", "ada@example.com", "ada@example.com")],
    );
    let (ok, out, err) = seatwarden(&config, &["explain", "new.hire@example.com"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "\"new.hire@example.com\" matches no directory identity (id, userName, email) and \
             no workspace account (id, userName) in the snapshots of run 1 (read 20"
        ) && err.contains(
            " UTC); someone added or renamed since is found once `seatwarden plan` has read \
             both sides again"
        ),
        "{err}"
    );
}

/// Two people paged for the same hold approve it at once: one waits for the
/// other's writer lock, then finds nothing left, and is told who approved how
/// many and when, not only "no held actions left to decide on" (did someone
/// reject them? were there none?). Every deprovision is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_approval_at_once_names_who_approved_the_run() {
    let s = scenario(400, &[("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "5")]).await;
    let code = s.run(&["reconcile"], "held").await;
    assert_eq!(code, 3, "{}", s.stderr("held"));
    let run = s.newest_reconcile().to_string();
    let held = s
        .store()
        .journal(run.parse().unwrap())
        .unwrap()
        .iter()
        .filter(|row| row.state == ActionState::Held)
        .count();
    let before = s.sandbox.requests_seen().len();
    let first = s.spawn(&["approve", &run], "first");
    let second = s.spawn(&["approve", &run], "second");
    let (first, second) = tokio::task::spawn_blocking(move || {
        let (mut first, mut second) = (first, second);
        (first.wait().unwrap(), second.wait().unwrap())
    })
    .await
    .unwrap();
    let mut codes = [first.code(), second.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(1)],
        "{} {}",
        s.stderr("first"),
        s.stderr("second")
    );
    let told = if first.code() == Some(1) {
        s.stderr("first")
    } else {
        s.stderr("second")
    };
    assert!(
        told.contains(&format!(
            "run {run} has no held actions left to decide on; decided already: {held} approved \
             by crash-test"
        )) && told.contains(" (last 20")
            && told.contains(" UTC)"),
        "{told}"
    );
    let deactivations = s.sandbox.requests_seen()[before..]
        .iter()
        .filter(|r| {
            r.method == "PATCH" && r.path.starts_with("/Users/") && (200..300).contains(&r.status)
        })
        .count();
    assert_eq!(deactivations, held);
}

/// The access review of a protected account linked to a person: it said
/// "access due to be removed" for a leaver's, a removal seatwarden never makes
/// (it never writes to a protected account), and nothing for an active
/// person's. It says the removal is a person's to make, and that it is
/// protected.
#[test]
fn the_export_says_a_protected_accounts_removal_is_by_hand() {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    let dir = tempfile::tempdir().unwrap();
    let mut gone = person("00u3", "root.cy@example.com", "root.cy@example.com");
    gone.status = seatwarden::model::IdentityStatus::Deprovisioned;
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u1", "root.ada@example.com", "root.ada@example.com"),
            gone,
            person("00u4", "bo@example.com", "bo@example.com"),
        ],
        vec![
            account("w1", "root.ada@example.com", "root.ada@example.com"),
            account("w3", "root.cy@example.com", "root.cy@example.com"),
            account("w4", "bo@example.com", "bo@example.com"),
        ],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[safety]\nprotected = [\"root.*@example.com\"]\n"),
    )
    .unwrap();
    let (ok, out, err) = seatwarden(&config, &["export", "access", "--format", "json"]);
    assert!(ok, "{err}");
    let export: serde_json::Value = serde_json::from_str(&out).unwrap();
    let why = |id: &str| {
        export["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["account_id"] == id)
            .unwrap()["justification"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        why("w3"),
        "identity is deprovisioned in the directory: access due to be removed by hand: the \
         account is protected (safety.protected / protected_groups), which seatwarden never \
         changes"
    );
    assert_eq!(
        why("w1"),
        "in scope: default role Viewer; protected (safety.protected / protected_groups): \
         seatwarden never changes it"
    );
    assert_eq!(why("w4"), "in scope: default role Viewer");
}

/// `explain` of a person the next run matches to an account with no link stored
/// yet says by which rule: an externalId naming them, or only a userName or an
/// email alike (what to check when the account looks like someone else's).
#[test]
fn explain_says_by_which_rule_an_unlinked_account_matches() {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    let dir = tempfile::tempdir().unwrap();
    let mut adas = account("w1", "ada.old@example.com", "ada.old@example.com");
    adas.external_id = Some("00u1".into());
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u1", "ada@example.com", "ada@example.com"),
            person("00u2", "ben@example.com", "ben@example.com"),
            person("00u3", "cy@example.com", "cy@example.com"),
        ],
        vec![
            adas,
            account("w2", "ben@example.com", "ben.b@example.com"),
            account("w3", "cy.c@example.com", "cy@example.com"),
        ],
    );
    for (who, rule) in [
        ("00u1", "its externalId"),
        ("00u2", "its userName"),
        ("00u3", "its email"),
    ] {
        let (ok, out, err) = seatwarden(&config, &["explain", who]);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!(
                "\nLink\n  no stored link (the account below is a match candidate by {rule}, \
                 not linked yet)\n"
            )),
            "{who}: {out}"
        );
    }
}

/// `link` of a protected account (a break-glass admin nobody in the directory
/// is) to an ordinary person went through: the person read "protected: seatwarden
/// never touches it" from then on, and leaving would take none of that access
/// away. It is refused, saying what to change first; a protected person's link
/// to a protected account goes through.
#[test]
fn link_refuses_a_protected_account_for_a_person_who_is_not() {
    use crate::qa_cli::{account, first_plan_stored, person, seatwarden};
    let dir = tempfile::tempdir().unwrap();
    let config = first_plan_stored(
        dir.path(),
        vec![
            person("00u2", "ben@example.com", "ben@example.com"),
            person("00u5", "admin.eve@example.com", "eve@example.com"),
        ],
        vec![
            account("w2", "ben@example.com", "ben@example.com"),
            account("w5", "root@example.com", "root@example.com"),
        ],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[safety]\nprotected = [\"root@example.com\", \"admin.*@example.com\"]\n"),
    )
    .unwrap();
    for replace in [false, true] {
        let args: &[&str] = if replace {
            &["link", "00u2", "w5", "--replace"]
        } else {
            &["link", "00u2", "w5"]
        };
        let (ok, out, err) = seatwarden(&config, args);
        assert!(!ok, "{out}");
        assert!(
            err.contains(
                "account w5 (root@example.com) is protected (safety.protected / \
                 protected_groups) and identity 00u2 (ben@example.com) is not: linked, their \
                 access would be one seatwarden never takes away, not even when they leave. If \
                 the account is theirs, protect them too (or take the account out of \
                 safety.protected), then run `seatwarden link 00u2 w5` again"
            ),
            "{err}"
        );
    }
    let (ok, out, err) = seatwarden(&config, &["link", "00u5", "w5"]);
    assert!(ok, "{out}{err}");
}
