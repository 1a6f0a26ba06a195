//! Golden reports: a plan with every drift kind, rendered as text and JSON. A
//! change in what a person reads (or in the JSON schema) shows up as a diff here.
//! The reconcile with failures and holds is a real run against the sandbox (the
//! guard's thresholds, the executor's failures), not outcomes handed out by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::UTC;

use seatwarden::guard::{self, GuardInput, GuardSettings};
use seatwarden::model::{
    Account, Action, DirectorySnapshot, DriftKind, HoldReason, Identity, IdentityStatus, Link,
    Plan, WorkspaceGroup, WorkspaceSnapshot,
};
use seatwarden::plan::{self, DeprovisionAction, PlanSettings};
use seatwarden::policy::{self, Mapping, PolicySettings, Protected, UnmatchedAccounts};
use seatwarden::report::{self, ActionOutcome, Outcome, Report, SafetyReport, Summary};

fn identity(id: &str, user: &str, status: IdentityStatus, groups: &[&str]) -> Identity {
    let (given, family) = user.split_once('.').unwrap_or((user, "Example"));
    Identity {
        id: id.into(),
        user_name: format!("{user}@example.com"),
        email: Some(format!("{user}@example.com")),
        given_name: Some(given.into()),
        family_name: Some(family.into()),
        display_name: Some(format!("{given} {family}")),
        status,
        department: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn account(id: &str, of: &Identity, active: bool, role: &str) -> Account {
    Account {
        id: id.into(),
        user_name: of.user_name.clone(),
        external_id: Some(of.id.clone()),
        given_name: of.given_name.clone(),
        family_name: of.family_name.clone(),
        display_name: of.display_name.clone(),
        email: of.email.clone(),
        active,
        roles: vec![role.into()],
    }
}

/// The directory, the workspace and the stored links of [`scenario`], before
/// anything is planned from them.
struct World {
    directory: DirectorySnapshot,
    workspace: WorkspaceSnapshot,
    links: Vec<Link>,
}

/// A plan made and guarded from a [`World`], with the number of managed accounts
/// the guard was given.
struct Scenario {
    world: World,
    plan: Plan,
    managed: usize,
}

const SCOPE: &str = "Taskade Users";

/// When fay's account was first seen deactivated.
fn deactivated_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap()
}

/// The time the scenario is planned at: 40 days later, past the 30-day retention.
fn judged_at() -> DateTime<Utc> {
    deactivated_at() + chrono::TimeDelta::days(40)
}

/// Every drift kind: two leavers, a new hire, a returner, a wrong role, a renamed
/// person, a missing folder membership, a hand-made account, a disputed match, and
/// a leaver whose deactivated account is past its retention period.
fn world() -> World {
    let scope = SCOPE;
    let ada = identity(
        "u1",
        "ada.lovelace",
        IdentityStatus::Active,
        &[scope, "Engineering"],
    );
    let bob = identity("u2", "bob.leaver", IdentityStatus::Deprovisioned, &[scope]);
    let cyd = identity(
        "u3",
        "cyd.newhire",
        IdentityStatus::Active,
        &[scope, "Engineering"],
    );
    let dan = identity("u4", "dan.returner", IdentityStatus::Active, &[scope]);
    let eve = identity("u5", "eve.twice", IdentityStatus::Active, &[scope]);
    let fay = identity("u6", "fay.gone", IdentityStatus::Deprovisioned, &[scope]);
    let gil = identity("u8", "gil.leaver", IdentityStatus::Deprovisioned, &[scope]);
    let mut renamed = account("a1", &ada, true, "Viewer");
    renamed.display_name = Some("Ada King".into());
    let mut second_eve = account("a6", &eve, true, "Viewer");
    second_eve.user_name = "eve.second@example.com".into();
    second_eve.email = None;
    let mallory = Account {
        id: "a9".into(),
        user_name: "mallory@example.com".into(),
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: Some("Mallory".into()),
        email: None,
        active: true,
        roles: vec!["Editor".into()],
    };
    let directory = DirectorySnapshot {
        identities: vec![
            ada.clone(),
            bob.clone(),
            cyd,
            dan.clone(),
            eve.clone(),
            fay.clone(),
            gil.clone(),
        ],
        complete: true,
    };
    let workspace = WorkspaceSnapshot {
        accounts: vec![
            renamed,
            account("a2", &bob, true, "Viewer"),
            account("a4", &dan, false, "Viewer"),
            account("a5", &eve, true, "Viewer"),
            second_eve,
            mallory,
            account("a7", &fay, false, "Viewer"),
            account("a8", &gil, true, "Viewer"),
        ],
        groups: vec![WorkspaceGroup {
            id: "g1".into(),
            display_name: "Engineering".into(),
            members: vec!["a9".into()],
        }],
    };
    let links = vec![
        Link {
            identity_id: "u1".into(),
            account_id: "a1".into(),
        },
        Link {
            identity_id: "u2".into(),
            account_id: "a2".into(),
        },
    ];
    World {
        directory,
        workspace,
        links,
    }
}

fn plan_settings() -> PlanSettings {
    PlanSettings {
        deprovision: DeprovisionAction::Delete,
        retention: plan::Retention {
            delete_after: chrono::TimeDelta::days(30),
            deactivated_since: [("a7".to_owned(), deactivated_at())].into(),
            now: judged_at(),
        },
        unmatched_accounts: UnmatchedAccounts::Report,
        manage_roles: true,
        protected: Protected::new(&["breakglass@example.com".into()]),
        admin_command: seatwarden::model::DEFAULT_ADMIN_COMMAND.to_owned(),
    }
}

/// Accounts linked, or matched by this plan, to an identity: what a run hands the
/// guard (and the report) as managed accounts.
fn managed_accounts(world: &World, plan: &Plan) -> usize {
    let existing: HashSet<&str> = world
        .workspace
        .accounts
        .iter()
        .map(|a| a.id.as_str())
        .collect();
    world
        .links
        .iter()
        .map(|l| l.account_id.as_str())
        .chain(plan.new_links.iter().map(|l| l.account_id.as_str()))
        .filter(|id| existing.contains(id))
        .collect::<HashSet<_>>()
        .len()
}

/// [`world`] planned and guarded with the default thresholds (which hold nothing
/// here).
fn scenario() -> Scenario {
    let world = world();
    let policy_settings = PolicySettings {
        scope_groups: vec![SCOPE.into()],
        default_role: seatwarden::model::Role::Viewer,
        mappings: vec![Mapping {
            group: "Engineering".into(),
            workspace_group: "Engineering".into(),
            role: seatwarden::model::Role::Editor,
        }],
        manage_roles: true,
    };
    let desired = policy::desired_state(&world.directory, &policy_settings);
    let planned = plan::plan(
        &desired,
        &world.directory,
        &world.workspace,
        &world.links,
        &[],
        &plan_settings(),
    );
    let managed = managed_accounts(&world, &planned);
    let plan = guard::guard(
        planned,
        &world.workspace,
        &GuardSettings::default(),
        &GuardInput {
            directory_complete: true,
            managed_accounts: managed,
            ..GuardInput::default()
        },
    );
    Scenario {
        world,
        plan,
        managed,
    }
}

/// [`scenario`] on its first sighting with a 10-minute settle window: the guard
/// holds every create and update, waiting; deprovisions go.
fn settling() -> Scenario {
    let mut scenario = scenario();
    scenario.plan = guard::hold_unsettled(
        scenario.plan,
        &HashMap::new(),
        judged_at(),
        std::time::Duration::from_secs(600),
    );
    scenario
}

/// A report as a run builds it from its plan: held actions say the guard's rule
/// (waiting when it is the settle window); `outcome_of` decides for the runnable
/// ones. The counts come from the scenario.
fn report_of(
    scenario: &Scenario,
    mode: &str,
    outcome_of: impl Fn(&Action) -> (Outcome, Option<String>),
) -> Report {
    let plan = &scenario.plan;
    let actions: Vec<ActionOutcome> = plan
        .actions
        .iter()
        .map(|a| {
            let (outcome, error) = match &a.held {
                Some(hold) => (Outcome::Held, Some(hold.to_string())),
                None => outcome_of(a),
            };
            ActionOutcome {
                seq: a.seq,
                op: a.kind.name().into(),
                reason: a.reason,
                subject: a.subject.clone(),
                detail: a.detail.clone(),
                outcome,
                attempts: u32::from(matches!(outcome, Outcome::Applied | Outcome::Failed)),
                error,
                waiting: a.held.as_ref().is_some_and(HoldReason::is_waiting),
                settle_window: a.held.as_ref().and_then(report::SettleWindow::of),
                deactivated_since: report::deactivated_since_of(&a.kind),
            }
        })
        .collect();
    let count = |o: Outcome| actions.iter().filter(|a| a.outcome == o).count();
    let actions_waiting = actions.iter().filter(|a| a.waiting).count();
    Report {
        schema_version: report::SCHEMA_VERSION,
        run_id: 7,
        mode: mode.into(),
        started_at: Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).unwrap(),
        finished_at: Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 3).unwrap(),
        directory: "file /etc/seatwarden/directory.json".into(),
        workspace: "https://www.taskade.com/scim/v2".into(),
        summary: Summary {
            identities: scenario.world.directory.identities.len(),
            accounts: scenario.world.workspace.accounts.len(),
            managed_accounts: scenario.managed,
            drift_total: plan.drift.len(),
            drift_by_kind: report::count_by_kind(&plan.drift),
            actions_planned: actions.len(),
            actions_applied: count(Outcome::Applied),
            actions_failed: count(Outcome::Failed),
            actions_held: count(Outcome::Held),
            actions_not_run: count(Outcome::NotRun),
            retries: 0,
            recovered: 0,
            converged: count(Outcome::Applied) == actions.len(),
        },
        drift: plan.drift.clone(),
        actions,
        safety: SafetyReport {
            actions_waiting,
            ..SafetyReport::default()
        },
    }
}

#[test]
fn the_scenario_has_every_drift_kind() {
    let plan = scenario().plan;
    let counts = report::count_by_kind(&plan.drift);
    for kind in DriftKind::ALL {
        assert!(counts[&kind] > 0, "missing {kind}: {counts:?}");
    }
}

#[test]
fn plan_report_text() {
    let report = report_of(&scenario(), "plan", |_| (Outcome::NotRun, None));
    insta::assert_snapshot!(report::render_text(
        &report,
        chrono_tz::UTC,
        "seatwarden",
        false
    ));
}

#[test]
fn reconcile_report_text_with_a_failure_and_a_hold() {
    let report = failure_and_hold();
    let text = report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    assert!(!text.contains('\x1b'), "no colour when not asked");
    insta::assert_snapshot!(text);
    let coloured = report::render_text(&report, chrono_tz::UTC, "seatwarden", true);
    assert!(coloured.contains("\x1b[31m"), "failures in red on a TTY");
}

#[test]
fn report_json_schema() {
    let report = report_of(&scenario(), "reconcile", |_| (Outcome::Applied, None));
    let json = report.to_json();
    insta::assert_snapshot!(json);
    assert_eq!(
        Report::from_json(&json).unwrap(),
        report,
        "the JSON round-trips"
    );
}

/// The scenario reconciled for real, against the in-process sandbox seeded with its
/// workspace: see [`reconcile_with_a_failure_and_a_hold`].
struct RealRun {
    plan: Plan,
    report: Report,
}

/// Run once per test binary (several tests read it).
fn real_run() -> &'static RealRun {
    static RUN: std::sync::OnceLock<RealRun> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(reconcile_with_a_failure_and_a_hold())
    })
}

/// The report of [`real_run`].
fn failure_and_hold() -> Report {
    real_run().report.clone()
}

/// The sandbox's fault draws for `seed`: its splitmix64, one number in [0, 1) per
/// write (with `Faults::writes_only`), in arrival order.
fn fault_draws(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// The first seed under which, at `rate` 5xx on writes, the writes fail exactly as
/// `fails` says (true: 503).
fn seed_failing(rate: f64, fails: &[bool]) -> u64 {
    (0..1_000_000u64)
        .find(|&seed| {
            fault_draws(seed, fails.len())
                .iter()
                .zip(fails)
                .all(|(x, fail)| (*x < rate) == *fail)
        })
        .expect("a seed with that pattern")
}

/// The scenario through `run::execute_with_options`: a file directory, the stored
/// links and retention clock, the sandbox seeded with the workspace, at most one
/// deprovision a run (the two leavers are over it, so the guard holds both), and
/// 503s for every attempt of cyd's create. The writes, in the executor's phases:
/// fay's deletion, cyd's create (three attempts), the three updates, the membership
/// add; only the create's attempts are faulted. Where and when it ran is then
/// replaced by fixed values, so the goldens stay put.
async fn reconcile_with_a_failure_and_a_hold() -> RealRun {
    use seatwarden::config::Config;
    use seatwarden::model::{LinkMethod, NewLink};
    use seatwarden::retry::RetryPolicy;
    use seatwarden::run::{self, Mode, RunOptions};
    use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions};
    use seatwarden::store::Store;
    use seatwarden::workspace::ScimClient;

    const TOKEN: &str = "report-token";
    const RETRIES: usize = 2;
    let world = world();
    let mut writes = vec![false];
    writes.extend([true; RETRIES + 1]);
    writes.extend([false; 8]);
    let faults = Faults {
        rate_5xx: 0.5,
        writes_only: true,
        seed: seed_failing(0.5, &writes),
        ..Faults::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = Sandbox::start(
        listener,
        SandboxOptions {
            token: TOKEN.to_owned(),
            faults,
            ..SandboxOptions::default()
        },
        world.workspace.clone(),
    )
    .await
    .unwrap();
    let base = sandbox.base_url().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.json"),
        seatwarden::synth::directory_json(&world.directory),
    )
    .unwrap();
    let toml = format!(
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"{base}\"\ntoken = \"{TOKEN}\"\nrequests_per_second = 10000\n\n\
         [policy]\nscope_groups = [\"{SCOPE}\"]\ndefault_role = \"Viewer\"\n\
         unmatched_accounts = \"report\"\n\n\
         [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\n\
         role = \"Editor\"\n\n\
         [deprovision]\naction = \"delete\"\ndelete_after = \"30d\"\n\n\
         [safety]\nprotected = [\"breakglass@example.com\"]\nmax_deprovisions = 1\n\
         settle = \"0s\"\n"
    );
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
    let mut store = Store::open(&config.state.path).unwrap();
    let links: Vec<NewLink> = world
        .links
        .iter()
        .map(|l| NewLink {
            identity_id: l.identity_id.clone(),
            account_id: l.account_id.clone(),
            method: LinkMethod::ExternalId,
        })
        .collect();
    store.upsert_links(&links, deactivated_at()).unwrap();
    store
        .update_deactivated(&["a7".to_owned()], &[], deactivated_at())
        .unwrap();
    let mut settings = config.scim_settings().unwrap();
    settings.retry = RetryPolicy::immediate(RETRIES);
    let client = ScimClient::new(settings).unwrap();
    let outcome = run::execute_with_options(
        &config,
        &run::directory_from_config(&config),
        &client,
        store,
        Mode::Reconcile,
        RunOptions {
            now: Some(judged_at()),
            ..RunOptions::default()
        },
    )
    .await
    .unwrap();
    let stats = sandbox.stats();
    assert_eq!(
        stats.faults_5xx,
        RETRIES as u64 + 1,
        "only cyd's create is faulted, on each attempt: {stats:?}"
    );
    sandbox.shutdown().await;

    let mut report = outcome.report;
    let workspace = "https://www.taskade.com/scim/v2";
    let base = base.trim_end_matches('/');
    for action in &mut report.actions {
        if let Some(error) = &mut action.error {
            *error = error.replace(base, workspace);
        }
    }
    report.run_id = 7;
    report.started_at = Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).unwrap();
    report.finished_at = Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 3).unwrap();
    report.directory = "file /etc/seatwarden/directory.json".into();
    report.workspace = workspace.into();
    RealRun {
        plan: outcome.plan,
        report,
    }
}

/// What the goldens of [`failure_and_hold`] show follows the guard's and the
/// executor's rules: both deprovisions held for the one threshold they break, in
/// its own words; cyd's create failed, and so did the membership add that needed
/// the account; the rest applied. The synthetic scenario plans what the run found.
#[test]
fn the_real_run_holds_and_fails_by_the_rules() {
    use seatwarden::model::{ActionClass, ActionKind, ThresholdWindow};

    let RealRun { plan, report } = real_run();
    assert_eq!(report.drift, scenario().plan.drift, "same drift as planned");
    let outcome = |seq: u32| report.actions.iter().find(|a| a.seq == seq).unwrap();
    let deprovisions: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| {
            a.kind
                .threshold_class()
                .is_some_and(|(c, _)| c == ActionClass::Deprovision)
        })
        .collect();
    assert_eq!(deprovisions.len(), 2, "{:#?}", plan.actions);
    for action in &deprovisions {
        let hold = action.held.as_ref().unwrap();
        assert!(
            matches!(
                hold,
                HoldReason::Threshold {
                    class: ActionClass::Deprovision,
                    window: ThresholdWindow::Run,
                    planned: 2,
                    limit: 1,
                    ..
                }
            ),
            "{hold:?}"
        );
        let shown = outcome(action.seq);
        assert_eq!(shown.outcome, Outcome::Held);
        assert_eq!(shown.error.as_deref(), Some(hold.to_string().as_str()));
        assert_eq!(shown.attempts, 0, "nothing sent");
    }
    assert_eq!(
        plan.held().count(),
        2,
        "only the deprovisions are held: {:#?}",
        plan.actions
    );
    let create = plan
        .actions
        .iter()
        .find(|a| matches!(&a.kind, ActionKind::CreateAccount { identity_id, .. } if identity_id == "u3"))
        .unwrap();
    assert_eq!(outcome(create.seq).outcome, Outcome::Failed);
    let add = plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::AddMembers { .. }))
        .unwrap();
    assert_eq!(
        outcome(add.seq).outcome,
        Outcome::Failed,
        "cyd is one of the members to add, and has no account: {:#?}",
        outcome(add.seq)
    );
    assert!(
        outcome(add.seq).error.as_deref().unwrap().contains("u3"),
        "{:?}",
        outcome(add.seq).error
    );
    let failed: Vec<u32> = report
        .actions
        .iter()
        .filter(|a| a.outcome == Outcome::Failed)
        .map(|a| a.seq)
        .collect();
    assert_eq!(failed, [create.seq, add.seq]);
    assert_eq!(
        report.summary.actions_applied,
        plan.actions.len() - 4,
        "the rest applied: {:#?}",
        report.actions
    );
    assert!(!report.summary.converged);
    assert_eq!(
        report.summary.retries, 2,
        "cyd's create was tried three times"
    );
}

#[test]
fn reconcile_report_markdown() {
    let report = failure_and_hold();
    insta::assert_snapshot!(report::render_markdown(&report, UTC, "seatwarden").unwrap());
}

#[test]
fn reconcile_report_html() {
    let report = failure_and_hold();
    insta::assert_snapshot!(report::render_html(&report, UTC, "seatwarden").unwrap());
}

/// Run times read on `report.timezone`'s wall clock, in every human format (the
/// text one is an email's text/plain part), as the digest and alerts beside them
/// in the same inbox do.
#[test]
fn report_times_are_shown_in_the_report_time_zone() {
    let report = failure_and_hold();
    let run = "2026-11-29 09:00:00 +01:00 (CET) → 2026-11-29 09:00:03 +01:00 (CET)";
    let berlin = chrono_tz::Europe::Berlin;
    let markdown = report::render_markdown(&report, berlin, "seatwarden").unwrap();
    assert!(markdown.contains(&format!("- Run: {run}")), "{markdown}");
    assert!(
        report::render_html(&report, berlin, "seatwarden")
            .unwrap()
            .contains(run)
    );
    let text = report::render_text(&report, berlin, "seatwarden", false);
    assert!(text.contains(&format!("\n  run: {run}\n")), "{text}");
}

/// The safety net's findings reach the emailed formats too, not only the terminal:
/// the same lines in Markdown and HTML as in text.
#[test]
fn safety_findings_show_in_every_format() {
    use seatwarden::circuit::{CircuitState, FailedWrite};
    use seatwarden::report::CircuitReport;

    let mut report = report_of(&settling(), "reconcile", |_| (Outcome::Applied, None));
    assert!(
        report.safety.actions_waiting > 0
            && report.safety.actions_waiting <= report.summary.actions_held,
        "{:?}",
        report.summary
    );
    let at = |h| Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap();
    report.safety.circuit = Some(CircuitReport {
        state: CircuitState::Open {
            since: at(8),
            until: at(9),
        },
        reason: Some("6 of 8 writes failed".into()),
        failures: vec![FailedWrite {
            op: "deactivate".into(),
            subject: "ben@example.com".into(),
            message: "HTTP 503".into(),
        }],
    });
    report.safety.workspace_listing_short = true;
    let text = report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    let markdown = report::render_markdown(&report, UTC, "seatwarden").unwrap();
    let html = report::render_html(&report, UTC, "seatwarden").unwrap();
    for finding in report::safety_findings(&report, chrono_tz::UTC, "seatwarden") {
        assert!(text.contains(&finding.text), "{text}");
        for detail in &finding.details {
            assert!(
                text.contains(detail.as_str()) && html.contains(detail.as_str()),
                "{detail}"
            );
        }
    }
    assert!(html.contains(">Safety</h2>") && html.contains(">SHORT LISTING</span>"));
    let safety = markdown.split("## Safety").nth(1).unwrap();
    insta::assert_snapshot!(safety.split("\n## ").next().unwrap());
}

/// A run that did not converge still leaves out of the drift gauges the items
/// whose every action was applied, and keeps those with an action held or failed.
#[test]
fn unfixed_drift_leaves_out_what_a_run_fixed_even_when_it_did_not_converge() {
    let report = failure_and_hold();
    assert!(!report.summary.converged);
    let unfixed = report::unfixed_drift(&report);
    let actions_of = |d: &seatwarden::model::DriftItem| -> Vec<&ActionOutcome> {
        report
            .actions
            .iter()
            .filter(|a| a.reason == d.kind && a.subject == d.user_name)
            .collect()
    };
    let fixed: Vec<_> = report
        .drift
        .iter()
        .filter(|d| {
            let actions = actions_of(d);
            !actions.is_empty() && actions.iter().all(|a| a.outcome == Outcome::Applied)
        })
        .collect();
    assert!(!fixed.is_empty(), "the scenario fixes something");
    assert_eq!(unfixed.len(), report.drift.len() - fixed.len());
    for item in &unfixed {
        assert!(!fixed.contains(item), "{item:?}");
    }
    // A held deprovision's drift stays.
    assert!(unfixed.iter().any(|d| d.kind == DriftKind::StaleAccess));
}

/// An action waiting for the settle window is not under "Needs attention", so the
/// text report says on its own line until when it waits.
#[test]
fn the_text_report_says_until_when_an_action_waits() {
    let report = report_of(&settling(), "reconcile", |_| (Outcome::Applied, None));
    let text = report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    let waiting: Vec<&ActionOutcome> = report.actions.iter().filter(|a| a.waiting).collect();
    assert!(!waiting.is_empty());
    for action in waiting {
        let line = text
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("#{:<4} held", action.seq))
            })
            .unwrap_or_else(|| panic!("no line for #{}: {text}", action.seq));
        assert!(line.contains("acted on from 2026-"), "{line}");
    }
}

/// Every human format of one report, for `tz`.
fn rendered(report: &Report, tz: chrono_tz::Tz) -> [String; 3] {
    [
        report::render_text(report, tz, "seatwarden", false),
        report::render_markdown(report, tz, "seatwarden").unwrap(),
        report::render_html(report, tz, "seatwarden").unwrap(),
    ]
}

/// Leavers deactivated while new hires wait for the settle window: the headline
/// says both, in every format, and so when something is held or failed too.
#[test]
fn the_headline_says_what_was_applied_beside_what_waits_or_is_held() {
    let settling = report_of(&settling(), "reconcile", |_| (Outcome::Applied, None));
    let (applied, held) = (
        settling.summary.actions_applied,
        settling.summary.actions_held,
    );
    assert!(applied > 0 && held > 1, "{:?}", settling.summary);
    let expected = format!(
        "{applied} actions applied and verified; {held} actions wait for the settle window"
    );
    assert_eq!(report::headline(&settling, "seatwarden").1, expected);
    for out in rendered(&settling, UTC) {
        assert!(out.contains(&expected), "{out}");
    }

    let mut for_a_human = settling.clone();
    let first = for_a_human.actions.iter_mut().find(|a| a.waiting).unwrap();
    first.waiting = false;
    first.settle_window = None;
    for_a_human.safety.actions_waiting -= 1;
    assert_eq!(
        report::headline(&for_a_human, "seatwarden").1,
        format!(
            "{applied} actions applied and verified; 1 action held by the guard — needs a human"
        )
    );

    let real = failure_and_hold();
    assert!(real.summary.actions_applied > 0 && real.summary.actions_failed > 0);
    assert_eq!(
        report::headline(&real, "seatwarden").1,
        format!(
            "{} actions applied and verified; {} actions failed",
            real.summary.actions_applied, real.summary.actions_failed
        )
    );
}

/// Every time a person reads in one report is on the report's clock with its
/// zone: the settle window and the circuit breaker's too. The JSON keeps UTC.
#[test]
fn settle_window_and_circuit_breaker_times_are_in_the_report_time_zone() {
    use seatwarden::circuit::CircuitState;

    let mut report = report_of(&settling(), "reconcile", |_| (Outcome::Applied, None));
    let at = |h| Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap();
    report.safety.circuit = Some(report::CircuitReport {
        state: CircuitState::Open {
            since: at(8),
            until: at(9),
        },
        reason: None,
        failures: Vec::new(),
    });
    let berlin = chrono_tz::Europe::Berlin;
    let window = report.actions.iter().find_map(|a| a.settle_window).unwrap();
    let local = |t: DateTime<Utc>| {
        t.with_timezone(&berlin)
            .format("%Y-%m-%d %H:%M:%S %:z (%Z)")
            .to_string()
    };
    let text = report::render_text(&report, berlin, "seatwarden", false);
    let waits = format!(
        "waiting for the settle window: first seen {}, acted on from {}",
        local(window.first_seen),
        local(window.settles_at)
    );
    assert!(text.contains(&waits), "{text}");
    let breaker =
        "open since 2026-12-01 09:00:00 +01:00 (CET) until 2026-12-01 10:00:00 +01:00 (CET)";
    for out in rendered(&report, berlin) {
        assert!(out.contains(breaker), "{out}");
        assert!(
            !out.contains(":00Z"),
            "a UTC time in a Berlin report: {out}"
        );
    }
    let json = report.to_json();
    assert!(
        json.contains(&format!(
            "\"settles_at\": \"{}\"",
            window
                .settles_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        "{json}"
    );
    assert!(
        json.contains("\"since\": \"2026-12-01T08:00:00Z\""),
        "{json}"
    );
    assert_eq!(Report::from_json(&json).unwrap(), report);
}

/// A retention delete says since when the account has been deactivated on the
/// report's clock, in its action and its drift item alike; JSON keeps UTC.
#[test]
fn retention_delete_times_are_in_the_report_time_zone() {
    let report = report_of(&scenario(), "reconcile", |_| (Outcome::Applied, None));
    let berlin = chrono_tz::Europe::Berlin;
    let local = deactivated_at()
        .with_timezone(&berlin)
        .format("%Y-%m-%d %H:%M:%S %:z (%Z)")
        .to_string();
    assert!(local.ends_with("+02:00 (CEST)"), "{local}");
    let says = format!("account deactivated since {local}, past the retention of 30 days");
    let utc = deactivated_at().format("%Y-%m-%d %H:%M UTC").to_string();
    for out in rendered(&report, berlin) {
        assert_eq!(
            out.matches(&says).count(),
            2,
            "action and drift item: {out}"
        );
        assert!(!out.contains(&utc), "a UTC time in a Berlin report: {out}");
    }
    let json = report.to_json();
    assert!(json.contains(&format!("deactivated since {utc}")), "{json}");
    assert!(
        json.contains(&format!(
            "\"deactivated_since\": \"{}\"",
            deactivated_at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        "{json}"
    );
    assert_eq!(Report::from_json(&json).unwrap(), report);
}

/// A run stopped by a source fault computed no drift: its report says so and that
/// nothing was written, never "No drift.".
#[test]
fn a_rejected_directory_is_not_reported_as_no_drift() {
    let mut rejected = report_of(&scenario(), "reconcile", |_| (Outcome::NotRun, None));
    rejected.drift.clear();
    rejected.actions.clear();
    rejected.summary = Summary::default();
    rejected.safety.source_fault = Some(seatwarden::guard::SourceFault::Empty);
    for out in rendered(&rejected, UTC) {
        assert!(!out.contains("No drift."), "{out}");
        assert!(
            out.contains("Drift not computed: the directory snapshot was refused (source fault)")
                && out.contains("nothing was written"),
            "{out}"
        );
    }
}

/// `/metrics` reads a stored report's count of actions awaiting approval without
/// building the report: it must agree with the report itself, waiting-for-settle
/// holds left out, on a real run's report and on one with settling actions.
#[test]
fn the_awaiting_approval_count_is_read_from_a_stored_report() {
    let settling = report_of(&settling(), "reconcile", |_| (Outcome::Applied, None));
    let reports = [failure_and_hold(), settling];
    for report in &reports {
        let for_a_human = report
            .actions
            .iter()
            .filter(|a| a.outcome == Outcome::Held && !a.waiting)
            .count();
        assert_eq!(report.awaiting_approval(), for_a_human);
        assert_eq!(
            report::awaiting_approval_in(&report.to_json()).unwrap(),
            for_a_human
        );
    }
    assert!(
        reports[1].safety.actions_waiting > 0,
        "settling actions wait"
    );
    assert!(
        reports[1].awaiting_approval() < reports[1].summary.actions_held,
        "waiting holds are left out"
    );
    assert!(reports[0].awaiting_approval() > 0, "the real run holds");
    assert!(report::awaiting_approval_in("{}").is_err(), "not a report");
}

#[test]
fn plan_report_markdown() {
    let report = report_of(&scenario(), "plan", |_| (Outcome::NotRun, None));
    insta::assert_snapshot!(report::render_markdown(&report, UTC, "seatwarden").unwrap());
}

#[test]
fn html_and_markdown_escape_what_the_directory_says() {
    let mut report = report_of(&scenario(), "plan", |_| (Outcome::NotRun, None));
    report.drift[0].user_name = "<script>alert(1)</script>@example.com".into();
    report.drift[0].detail = "a | b *c*".into();
    let html = report::render_html(&report, UTC, "seatwarden").unwrap();
    assert!(!html.contains("<script>"), "HTML-escaped");
    assert!(html.contains("&lt;script&gt;"));
    let markdown = report::render_markdown(&report, UTC, "seatwarden").unwrap();
    assert!(markdown.contains("\\<script\\>"), "{markdown}");
    assert!(markdown.contains("a \\| b \\*c\\*"), "{markdown}");
}

#[test]
fn subjects_tell_the_state() {
    let plan = scenario();
    let report = failure_and_hold();
    assert_eq!(
        report::subject("acme", &report),
        "[seatwarden] acme run 7: 2 failed actions, 2 held actions, 12 drift items"
    );
    let mut converged = report_of(&plan, "reconcile", |_| (Outcome::Applied, None));
    assert_eq!(
        report::subject("acme", &converged),
        "[seatwarden] acme run 7: 3 drift items",
        "disputed matches and reported orphans (with their memberships) stay after a converged reconcile"
    );
    assert_eq!(
        report::headline(&converged, "seatwarden").1,
        "converged: 8 actions applied and verified; 3 drift items left to review"
    );
    assert!(
        report::render_html(&converged, UTC, "seatwarden")
            .unwrap()
            .contains("drift items found, 3 left")
    );
    converged.drift.retain(|d| {
        !matches!(
            d.kind,
            DriftKind::DisputedMatch | DriftKind::OrphanedAccount
        )
    });
    assert_eq!(
        report::subject("acme", &converged),
        "[seatwarden] acme run 7: in sync"
    );
    let planned = report_of(&plan, "plan", |_| (Outcome::NotRun, None));
    assert_eq!(
        report::subject("acme", &planned),
        "[seatwarden] acme run 7: 12 drift items"
    );
}

/// A name someone gave an account by hand, with a terminal escape sequence and a
/// line break: the text report shows neither raw (no terminal control, no forged
/// line).
#[test]
fn control_characters_in_names_never_reach_a_terminal() {
    let mut report = report_of(&scenario(), "plan", |_| (Outcome::NotRun, None));
    let evil = "mallory\u{1b}[2J\nFAILED #1 deactivate ceo@example.com";
    report.drift[0].user_name = evil.into();
    report.actions[0].subject = evil.into();
    let text = report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(!text.contains("\nFAILED #1 deactivate ceo"), "{text}");
    assert!(text.contains("mallory\u{fffd}[2J\u{fffd}FAILED"), "{text}");
    assert_eq!(report::printable("a\tb\nc\u{7}", true), "a\tb\nc\u{fffd}");

    // The circuit breaker's lines quote account names and provider answers.
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    report.safety.circuit = Some(report::CircuitReport {
        state: seatwarden::circuit::CircuitState::Open {
            since: at,
            until: at,
        },
        reason: Some("too many writes failed".into()),
        failures: vec![seatwarden::circuit::FailedWrite {
            op: "deactivate".into(),
            subject: evil.into(),
            message: "HTTP 500: \u{1b}]0;pwned\u{7}".into(),
        }],
    });
    let text = report::render_text(&report, chrono_tz::UTC, "seatwarden", false);
    assert!(text.contains("pwned"), "the failure is shown: {text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );

    // `report --format markdown|html` prints to a terminal too; and a bidi
    // override would show "moc.elpmaxe@oec" as another name.
    report.drift[1].user_name = "admin\u{202e}moc.elpmaxe@oec".into();
    for rendered in [
        report::render_markdown(&report, UTC, "seatwarden").unwrap(),
        report::render_html(&report, UTC, "seatwarden").unwrap(),
    ] {
        assert!(rendered.contains("pwned"), "{rendered}");
        assert!(
            !rendered.contains(['\u{1b}', '\u{7}', '\u{202e}']),
            "{rendered}"
        );
        assert!(rendered.contains("admin\u{fffd}moc"), "{rendered}");
    }
    assert_eq!(
        report::printable("a\u{2066}b\u{2028}c", true),
        "a\u{fffd}b\u{fffd}c"
    );
}

mod digest {
    //! The digest over a day: a plan the day before, a reconcile with a failure and a
    //! hold today, an overdue and a pending deprovision, shown in Berlin time.

    use std::time::Duration;

    use chrono::{DateTime, TimeZone, Utc};

    use seatwarden::model::DriftKind;
    use seatwarden::report::digest::{
        DeprovisionHold, Digest, DigestDeprovision, DigestInput, DigestVerified, SweepActions,
    };
    use seatwarden::report::{Outcome, Report, State};
    use seatwarden::store::{RunKind, RunStatus, Store};

    use super::{failure_and_hold, report_of, scenario};

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    fn previous() -> Report {
        let mut report = report_of(&scenario(), "plan", |_| (Outcome::NotRun, None));
        report.run_id = 5;
        report.started_at = at(28, 10);
        report.finished_at = at(28, 10);
        report
    }

    fn today() -> Report {
        let mut report = failure_and_hold();
        report.run_id = 6;
        report.started_at = at(29, 9);
        report.finished_at = at(29, 9);
        report
    }

    fn ledger() -> Vec<DigestDeprovision> {
        vec![
            DigestDeprovision {
                user_name: "bob.leaver@example.com".into(),
                identity_id: "u2".into(),
                reason: "deprovisioned in the directory".into(),
                detected_at: at(30, 5),
                due_at: at(30, 6),
                held: Some(DeprovisionHold::Guard),
                hold_run: Some(41),
                hold_decided: None,
                why_open: None,
            },
            DigestDeprovision {
                user_name: "fay.leaving@example.com".into(),
                identity_id: "u7".into(),
                reason: "left the scope group Taskade Users".into(),
                detected_at: at(30, 7),
                due_at: at(30, 8) + chrono::Duration::minutes(30),
                held: None,
                hold_run: None,
                hold_decided: None,
                why_open: None,
            },
        ]
    }

    fn digest() -> Digest {
        let reports = [today()];
        let previous = [previous()];
        let deprovisions = ledger();
        Digest::build(&DigestInput {
            name: "acme",
            admin_command: "seatwarden",
            timezone: chrono_tz::Europe::Berlin,
            now: at(30, 8),
            period: Duration::from_secs(24 * 3600),
            reports: &reports,
            previous: &previous,
            previous_span: None,
            previous_latest: None,
            latest: None,
            failed_runs: 1,
            failed: &[],
            failed_runs_previous: 0,
            deprovisions: &deprovisions,
            verified: &[DigestVerified {
                user_name: "dan.gone@example.com".into(),
                reason: "deprovisioned in the directory".into(),
                detected_at: at(29, 22),
                verified_at: at(29, 22) + chrono::Duration::minutes(4),
                excepted_until: None,
            }],
            // dan.gone's deactivation, and one the day before: by the sweep.
            sweeps: &SweepActions {
                applied_by_kind: [("deactivate".to_owned(), 1)].into(),
                failed: 0,
                ..SweepActions::default()
            },
            sweeps_previous: &SweepActions {
                applied_by_kind: [("deactivate".to_owned(), 1)].into(),
                failed: 1,
                ..SweepActions::default()
            },
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

    /// A rejected directory plans nothing and so shows no drift; a day of failed
    /// runs leaves only the day before's report. Neither is "in sync". A create
    /// that only waits for the settle window is nothing to approve.
    #[test]
    fn a_rejected_directory_failed_runs_or_settle_waits_are_not_misread() {
        let mut rejected = report_of(&scenario(), "reconcile", |_| (Outcome::NotRun, None));
        rejected.run_id = 8;
        rejected.drift.clear();
        rejected.actions.clear();
        rejected.safety.source_fault = Some(seatwarden::guard::SourceFault::Empty);
        let build = |reports: &[Report], failed_runs| {
            Digest::build(&DigestInput {
                name: "acme",
                admin_command: "seatwarden",
                timezone: chrono_tz::UTC,
                now: at(30, 8),
                period: Duration::from_secs(24 * 3600),
                reports,
                previous: &[],
                previous_span: None,
                previous_latest: None,
                latest: None,
                failed_runs,
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
        };
        let digest = build(std::slice::from_ref(&rejected), 0);
        assert_eq!(digest.state, State::NeedsAttention);
        // Its drift was never computed: not "No drift." in any form.
        for rendered in [
            digest.render_text(),
            digest.render_markdown().unwrap(),
            digest.render_html().unwrap(),
        ] {
            assert!(!rendered.contains("No drift."), "{rendered}");
            assert!(
                rendered.contains(
                    "Drift not computed: run 8 refused the directory snapshot (source fault)"
                ),
                "{rendered}"
            );
        }
        assert!(
            digest.subject.contains("directory rejected"),
            "{}",
            digest.subject
        );
        assert!(
            seatwarden::report::subject("acme", &rejected).contains("directory rejected"),
            "{}",
            seatwarden::report::subject("acme", &rejected)
        );
        let digest = build(&[], 3);
        assert_eq!(digest.state, State::NeedsAttention);
        assert_eq!(
            digest.subject,
            "[seatwarden] acme: 3 failed runs, no run has stored a report yet: drift unknown"
        );
        // The body says the same, not "No drift." in all three forms.
        let text = digest.render_text();
        assert!(
            text.contains("Drift unknown: no run has stored a report yet."),
            "{text}"
        );
        assert!(!text.contains("No drift."), "{text}");
        for rendered in [
            digest.render_markdown().unwrap(),
            digest.render_html().unwrap(),
        ] {
            assert!(rendered.contains("Drift unknown: no run has stored a report yet."));
            assert!(!rendered.contains("No drift."), "{rendered}");
        }

        let settling = report_of(&super::settling(), "reconcile", |_| {
            (Outcome::Applied, None)
        });
        assert!(settling.summary.actions_held > 0);
        assert_eq!(
            settling.safety.actions_waiting,
            settling.summary.actions_held
        );
        let digest = build(std::slice::from_ref(&settling), 0);
        assert!(digest.held.is_empty(), "{:?}", digest.held);
        assert!(!seatwarden::report::subject("acme", &settling).contains("held"));
        assert!(
            !seatwarden::report::render_text(&settling, chrono_tz::UTC, "seatwarden", false)
                .contains("Needs attention")
        );
    }

    /// An open deprovision held for a disputed match waits for `link`, not for the
    /// guard's `approve`: the digest says which, in every form.
    #[test]
    fn a_disputed_hold_is_not_called_the_guards() {
        let deprovisions = [
            DigestDeprovision {
                user_name: "nia.disputed@example.com".into(),
                identity_id: "u9".into(),
                reason: "suspended in the directory".into(),
                detected_at: at(30, 7),
                due_at: at(30, 9),
                held: Some(DeprovisionHold::DisputedMatch),
                hold_run: None,
                hold_decided: None,
                why_open: None,
            },
            DigestDeprovision {
                user_name: "bob.leaver@example.com".into(),
                identity_id: "u2".into(),
                reason: "deprovisioned in the directory".into(),
                detected_at: at(30, 7),
                due_at: at(30, 9),
                held: Some(DeprovisionHold::Guard),
                hold_run: Some(8),
                hold_decided: None,
                why_open: None,
            },
        ];
        let digest = Digest::build(&DigestInput {
            name: "acme",
            admin_command: "seatwarden",
            timezone: chrono_tz::UTC,
            now: at(30, 8),
            period: Duration::from_secs(24 * 3600),
            reports: &[],
            previous: &[],
            previous_span: None,
            previous_latest: None,
            latest: None,
            failed_runs: 0,
            failed: &[],
            failed_runs_previous: 0,
            deprovisions: &deprovisions,
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
        });
        let text = digest.render_text();
        let line = |who: &str| {
            text.lines()
                .find(|l| l.contains(who))
                .unwrap_or_else(|| panic!("{who} missing: {text}"))
                .to_owned()
        };
        assert!(
            line("nia.disputed")
                .ends_with(" — held: disputed match, waiting for `seatwarden link u9 ACCOUNT`"),
            "{text}"
        );
        assert!(!line("nia.disputed").contains("guard"), "{text}");
        assert!(
            line("bob.leaver").ends_with(
                " — held by the guard in run 8, waiting for `seatwarden approve 8` \
                 or `seatwarden reject 8`"
            ),
            "{text}"
        );
        let markdown = digest.render_markdown().unwrap();
        assert!(
            markdown.contains("held: disputed match, waiting for \\`seatwarden link u9 ACCOUNT\\`"),
            "{markdown}"
        );
        let html = digest.render_html().unwrap();
        assert!(html.contains("held: disputed match, waiting for"), "{html}");
        assert!(
            html.contains("held by the guard in run 8, waiting for"),
            "{html}"
        );
        let json: serde_json::Value = serde_json::from_str(&digest.to_json()).unwrap();
        let bob = json["overdue"]
            .as_array()
            .into_iter()
            .chain(json["pending"].as_array())
            .flatten()
            .find(|d| d["user_name"] == "bob.leaver@example.com")
            .unwrap_or_else(|| panic!("{json}"));
        assert_eq!(bob["hold_run"], 8, "{json}");
    }

    /// A line break in a name cannot forge a line of the digest (text or email).
    #[test]
    fn a_name_cannot_forge_digest_lines() {
        let verified = [DigestVerified {
            user_name: "bob\n  - ceo@example.com (deprovisioned): verified".into(),
            reason: "deprovisioned in the directory".into(),
            detected_at: at(29, 22),
            verified_at: at(29, 23),
            excepted_until: None,
        }];
        let digest = Digest::build(&DigestInput {
            name: "acme",
            admin_command: "seatwarden",
            timezone: chrono_tz::UTC,
            now: at(30, 8),
            period: Duration::from_secs(24 * 3600),
            reports: &[],
            previous: &[],
            previous_span: None,
            previous_latest: None,
            latest: None,
            failed_runs: 0,
            failed: &[],
            failed_runs_previous: 0,
            deprovisions: &[],
            verified: &verified,
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
        });
        let text = digest.render_text();
        assert!(!text.contains("\n  - ceo@example.com"), "{text}");
    }

    #[test]
    fn digest_says_what_needs_a_human() {
        let digest = digest();
        assert_eq!(digest.state, State::NeedsAttention);
        assert_eq!(
            digest.subject,
            "[seatwarden] acme: 1 failed run, 1 overdue deprovision, 2 held actions, \
             2 failed actions, 1 pending deprovision, 12 drift items"
        );
        assert_eq!(digest.overdue[0].due, "2026-11-30 07:00 +01:00 (CET)");
        assert_eq!(digest.held[0].approve_command, "seatwarden approve 6");
        assert_eq!(digest.period.runs, 2, "the failed run counts");
        assert_eq!(digest.trend.drift_change, "±0");
        let oldest = digest.oldest_drift.as_ref().unwrap();
        assert!(oldest.at_least, "seen since the first report loaded");
        assert_eq!(oldest.since, "2026-11-28 11:00 +01:00 (CET)");
    }

    /// A `plan` after the last reconcile holds nothing anyone can approve: the
    /// digest asks to approve the reconcile's held actions, not the plan's.
    #[test]
    fn the_digest_asks_to_approve_the_latest_reconcile_not_a_later_plan() {
        let mut plan = today();
        plan.mode = "plan".into();
        plan.run_id = 7;
        plan.started_at = at(29, 10);
        plan.finished_at = at(29, 10);
        assert!(
            plan.actions
                .iter()
                .any(|a| a.outcome == Outcome::Held && !a.waiting)
        );
        let reports = [today(), plan];
        let digest = Digest::build(&DigestInput {
            name: "acme",
            admin_command: "seatwarden",
            timezone: chrono_tz::Europe::Berlin,
            now: at(30, 8),
            period: Duration::from_secs(24 * 3600),
            reports: &reports,
            previous: &[],
            previous_span: None,
            previous_latest: None,
            latest: None,
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
        });
        let runs: Vec<i64> = digest.held.iter().map(|h| h.run_id).collect();
        assert_eq!(runs, [6]);
    }

    #[test]
    fn digest_text() {
        insta::assert_snapshot!(digest().render_text());
    }

    #[test]
    fn digest_markdown() {
        insta::assert_snapshot!(digest().render_markdown().unwrap());
    }

    #[test]
    fn digest_html() {
        insta::assert_snapshot!(digest().render_html().unwrap());
    }

    #[test]
    fn digest_json() {
        insta::assert_snapshot!(digest().to_json());
    }

    #[test]
    fn a_converged_day_shows_only_what_is_never_acted_on() {
        let mut converged = report_of(&scenario(), "reconcile", |_| (Outcome::Applied, None));
        converged.started_at = at(29, 9);
        let reports = [converged];
        let digest = Digest::build(&DigestInput {
            name: "acme",
            admin_command: "seatwarden",
            timezone: chrono_tz::UTC,
            now: at(30, 8),
            period: Duration::from_secs(24 * 3600),
            reports: &reports,
            previous: &[],
            previous_span: None,
            previous_latest: None,
            latest: None,
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
        });
        assert_eq!(digest.state, State::Drift);
        assert_eq!(digest.subject, "[seatwarden] acme: 3 drift items");
        let kinds: Vec<DriftKind> = digest.drift.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                DriftKind::GroupDrift,
                DriftKind::OrphanedAccount,
                DriftKind::DisputedMatch
            ]
        );
        assert_eq!(digest.period.actions_by_kind["deactivate"], 2);
        assert_eq!(digest.trend.drift_change, "n/a");
    }

    /// A period without runs changes nothing in the workspace's drift: the digest
    /// shows the newest stored report's drift and state, not "in sync"; the period
    /// only chooses the runs and actions counted. With no report ever stored the
    /// state is unknown, never in sync.
    #[test]
    fn a_period_without_runs_keeps_the_newest_reports_drift() {
        let build = |store: &Store| {
            seatwarden::report::digest::build_from_store(
                store,
                "acme",
                chrono_tz::UTC,
                at(30, 8),
                Duration::from_secs(1),
                &[],
                "seatwarden",
            )
            .unwrap()
        };
        let mut store = Store::open_in_memory().unwrap();
        let empty = build(&store);
        assert_eq!(empty.state, State::Unknown);
        assert_ne!(empty.state_label, "In sync");
        assert!(empty.subject.contains("drift unknown"), "{}", empty.subject);
        assert!(!empty.subject.contains("in sync"), "{}", empty.subject);

        let old = previous();
        let run = store.begin_run(RunKind::Plan, at(20, 10)).unwrap();
        let mut stored = old.clone();
        stored.run_id = run;
        store.save_report(run, &stored.to_json()).unwrap();
        store
            .finish_run(run, at(20, 10), RunStatus::Succeeded, None)
            .unwrap();
        let residual = seatwarden::report::residual_drift(&stored).len();
        assert!(residual > 0);

        let digest = build(&store);
        assert_eq!(digest.period.runs, 0, "the period holds no run");
        assert_eq!(digest.latest_run, Some(run));
        assert_eq!(digest.drift_total, residual);
        assert_eq!(digest.trend.drift_now, residual);
        // No run in the period: the schedule stopped, which needs a look.
        assert_eq!(digest.state, State::NeedsAttention);
        assert!(
            digest.subject.contains(&format!("{residual} drift items")),
            "{}",
            digest.subject
        );
        assert!(
            digest
                .subject
                .contains(&format!("no run in this period: drift as of run {run} (")),
            "{}",
            digest.subject
        );
        let json: serde_json::Value = serde_json::from_str(&digest.to_json()).unwrap();
        assert_eq!(json["state"], "needs_attention");
        assert_eq!(json["drift_total"], residual);
    }

    /// The sweep's runs store no report: their deactivations come from the
    /// journal into the period's totals, labelled as the sweep's, once. A
    /// reconcile's are counted from its report only; a leaver the stop kept from
    /// being sent is no failed action.
    #[test]
    fn digest_totals_include_the_sweeps_deactivations_once() {
        use seatwarden::model::{Action, ActionKind, Plan};
        let mut store = Store::open_in_memory().unwrap();
        let deactivate = |seq: u32| Action {
            seq,
            kind: ActionKind::Deactivate {
                account_id: format!("acc{seq}"),
            },
            reason: DriftKind::StaleAccess,
            subject: format!("leaver{seq}@example.com"),
            identity_id: Some(format!("u{seq}")),
            detail: "deprovisioned in the directory".into(),
            held: None,
        };
        // A reconcile with its report: its journal (a deactivation) is counted
        // from the report, not read again.
        let reconcile = today();
        let run = store
            .begin_run(RunKind::Reconcile, reconcile.started_at)
            .unwrap();
        let journaled = Plan {
            actions: vec![deactivate(0)],
            ..Plan::default()
        };
        store
            .save_plan(run, &journaled, reconcile.started_at)
            .unwrap();
        store.mark_in_flight(run, 0, reconcile.started_at).unwrap();
        store
            .mark_applied(run, 0, reconcile.started_at, None)
            .unwrap();
        let mut stored = reconcile.clone();
        stored.run_id = run;
        store.save_report(run, &stored.to_json()).unwrap();
        store
            .finish_run(run, reconcile.finished_at, RunStatus::Succeeded, None)
            .unwrap();
        let from_report = |op: &str, outcome: Outcome| {
            reconcile
                .actions
                .iter()
                .filter(|a| a.op == op && a.outcome == outcome)
                .count()
        };

        // A sweep: one deactivation applied, one failed, one the stop kept back.
        let started = at(29, 22);
        let sweep = store.begin_run(RunKind::Sweep, started).unwrap();
        let plan = Plan {
            actions: (0..3).map(deactivate).collect(),
            ..Plan::default()
        };
        store.save_plan(sweep, &plan, started).unwrap();
        for seq in 0..3 {
            store.mark_in_flight(sweep, seq, started).unwrap();
        }
        store.mark_applied(sweep, 0, started, None).unwrap();
        store.mark_failed(sweep, 1, started, "HTTP 503").unwrap();
        // `apply::NOT_SENT_STOPPING`, as the apply journals it.
        store
            .mark_failed(
                sweep,
                2,
                started,
                "not sent: seatwarden was stopping; the next run plans it again",
            )
            .unwrap();
        store
            .finish_run(sweep, started, RunStatus::Succeeded, None)
            .unwrap();

        let digest = seatwarden::report::digest::build_from_store(
            &store,
            "acme",
            chrono_tz::UTC,
            at(30, 8),
            Duration::from_secs(86_400),
            &[],
            "seatwarden",
        )
        .unwrap();
        let p = &digest.period;
        assert_eq!(p.runs, 1, "the sweep is not among the runs");
        assert_eq!(p.actions_applied, reconcile.summary.actions_applied + 1);
        assert_eq!(p.actions_failed, reconcile.summary.actions_failed + 1);
        assert_eq!(
            p.actions_by_kind.get("deactivate").copied().unwrap_or(0),
            from_report("deactivate", Outcome::Applied) + 1
        );
        assert_eq!(p.sweep_actions_applied, 1);
        assert_eq!(
            p.sweep_actions_by_kind,
            [("deactivate".to_owned(), 1)].into()
        );
        let text = digest.render_text();
        assert!(
            text.contains(&format!(
                "{} actions applied (1 by the deprovisioning sweep)",
                p.actions_applied
            )),
            "{text}"
        );
        assert!(text.contains("(by the sweep: 1 deactivate)"), "{text}");
    }

    #[test]
    fn digest_reads_the_periods_from_the_store() {
        let mut store = Store::open_in_memory().unwrap();
        let mut save = |report: &Report, status: RunStatus| {
            let run = store.begin_run(RunKind::Plan, report.started_at).unwrap();
            if status == RunStatus::Succeeded {
                let mut report = report.clone();
                report.run_id = run;
                store.save_report(run, &report.to_json()).unwrap();
            }
            store
                .finish_run(run, report.finished_at, status, None)
                .unwrap();
        };
        save(&previous(), RunStatus::Succeeded);
        let mut broken = today();
        broken.started_at = at(29, 12);
        broken.finished_at = broken.started_at + chrono::Duration::minutes(1);
        save(&broken, RunStatus::Failed);
        save(&today(), RunStatus::Succeeded);
        let mut too_old = previous();
        too_old.started_at = at(27, 7);
        too_old.finished_at = too_old.started_at + chrono::Duration::minutes(1);
        save(&too_old, RunStatus::Succeeded);
        let stored =
            seatwarden::report::digest::collect(&store, at(30, 8), Duration::from_secs(86_400))
                .unwrap();
        assert_eq!(stored.reports.len(), 1);
        assert_eq!(stored.failed_runs, 1);
        assert_eq!(
            stored.previous.len(),
            1,
            "the run before the previous period is left out"
        );
        assert_eq!(stored.previous[0].started_at, at(28, 10));
    }
}
