//! The safety net end to end against the sandbox (issue 6): source sanity,
//! thresholds per run and per 24 h with approval, workspace sanity, the circuit
//! breaker, the settle window, and `explain`. Time-dependent rules get their time
//! through `RunOptions::now`; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use seatwarden::approval::{self, Only};
use seatwarden::cli::{exit, exit_code_for};
use seatwarden::config::Config;
use seatwarden::guard::SourceFault;
use seatwarden::model::{
    Account, ActionClass, ActionKind, DirectorySnapshot, DriftKind, HoldReason, IdentityStatus,
    Role, ThresholdWindow, WorkspaceSnapshot,
};
use seatwarden::retry::RetryPolicy;
use seatwarden::run::{self, Mode, RunOptions, RunOutcome};
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::Store;
use seatwarden::synth::{self, Synth, SynthSpec};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "safety-token";

struct Env {
    sandbox: Sandbox,
    _dir: tempfile::TempDir,
    data: Synth,
    config: Config,
}

/// Generous limits unless `safety` says otherwise; settle off unless given.
fn write_config(dir: &Path, data: &Synth, url: &str, safety: &str) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
    let mut keys: Vec<(&str, String)> = vec![
        ("max_deprovisions", "100000".into()),
        ("max_deprovision_percent", "100".into()),
        ("max_deprovisions_per_day", "100000".into()),
        ("max_membership_removals", "100000".into()),
        ("max_membership_removals_per_day", "100000".into()),
        ("max_role_downgrades", "100000".into()),
        ("max_role_downgrades_per_day", "100000".into()),
        ("min_population_for_percent", "100000".into()),
        ("settle", "\"0s\"".into()),
    ];
    let mut circuit = String::new();
    for line in safety.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("circuit.") {
            circuit.push_str(rest);
            circuit.push('\n');
            continue;
        }
        let (key, value) = line.split_once('=').unwrap();
        keys.retain(|(k, _)| *k != key.trim());
        keys.push((key.trim(), value.trim().to_owned()));
    }
    let mut toml = format!(
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\nmax_concurrency = 4\n\
         requests_per_second = 10000\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n[safety]\n"
    );
    for (key, value) in keys {
        toml.push_str(&format!("{key} = {value}\n"));
    }
    if !circuit.is_empty() {
        toml.push_str("\n[safety.circuit]\n");
        toml.push_str(&circuit);
    }
    for (group, role) in &data.roles {
        toml.push_str(&format!(
            "\n[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"{group}\"\nrole = \"{role}\"\n"
        ));
    }
    std::fs::write(dir.join("seatwarden.toml"), toml).unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

async fn env_with(people: usize, seed: Option<WorkspaceSnapshot>, safety: &str) -> Env {
    let data = synth::generate(&SynthSpec {
        people,
        groups: 2,
        drift_percent: 0.0,
        seed: 6,
    });
    let sandbox =
        crate::fixtures::sandbox(TOKEN, seed.unwrap_or_else(|| data.workspace.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &data, sandbox.base_url().as_ref(), safety);
    Env {
        sandbox,
        _dir: dir,
        data,
        config,
    }
}

impl Env {
    fn store(&self) -> Store {
        Store::open(&self.config.state.path).unwrap()
    }

    fn client(&self, retries: usize) -> ScimClient {
        let mut settings = self.config.scim_settings().unwrap();
        settings.retry = RetryPolicy::immediate(retries);
        ScimClient::new(settings).unwrap()
    }

    async fn run(&self, mode: Mode, options: RunOptions) -> RunOutcome {
        self.run_with(&self.client(3), mode, options).await
    }

    /// `seatwarden approve RUN`, now.
    async fn approve_all(
        &self,
        run: seatwarden::store::RunId,
    ) -> Result<approval::Approval, approval::ApprovalError> {
        approval::approve(
            &self.config,
            &self.client(3),
            self.store(),
            run,
            &Only::All,
            Utc::now(),
        )
        .await
    }

    async fn run_with(&self, client: &ScimClient, mode: Mode, options: RunOptions) -> RunOutcome {
        run::execute_with_options(
            &self.config,
            &run::directory_from_config(&self.config),
            client,
            self.store(),
            mode,
            options,
        )
        .await
        .unwrap()
    }

    /// Reloads the configuration with `deprovision.action = "delete"` after
    /// `delete_after`.
    fn deprovision_by_deleting(&mut self, delete_after: &str) {
        let path = self._dir.path().join("seatwarden.toml");
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml.push_str(&format!(
            "\n[deprovision]\naction = \"delete\"\ndelete_after = \"{delete_after}\"\n"
        ));
        std::fs::write(&path, toml).unwrap();
        self.config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
    }

    fn write_directory(&self, directory: &DirectorySnapshot) {
        let seatwarden::config::DirectoryConfig::File { path } = &self.config.directory else {
            panic!("the safety scenarios use a directory file");
        };
        std::fs::write(path, synth::directory_json(directory)).unwrap();
    }

    /// Marks `n` more in-scope, active, non-Owner people with an account
    /// deprovisioned and writes the directory.
    fn leave(&mut self, n: usize) -> Vec<String> {
        let owner_groups: Vec<String> = self
            .data
            .roles
            .iter()
            .filter(|(_, role)| *role == Role::Owner)
            .map(|(g, _)| g.clone())
            .collect();
        let linked: Vec<String> = self
            .data
            .workspace
            .accounts
            .iter()
            .filter(|a| a.active)
            .filter_map(|a| a.external_id.clone())
            .collect();
        let mut left = Vec::new();
        for identity in self
            .data
            .directory
            .identities
            .iter_mut()
            .filter(|i| i.status == IdentityStatus::Active)
            .filter(|i| i.groups.iter().any(|g| g == "Taskade Users"))
            .filter(|i| !i.groups.iter().any(|g| owner_groups.contains(g)))
            .filter(|i| linked.contains(&i.id))
            .take(n)
        {
            identity.status = IdentityStatus::Deprovisioned;
            left.push(identity.id.clone());
        }
        assert_eq!(left.len(), n, "not enough people to let go");
        let directory = self.data.directory.clone();
        self.write_directory(&directory);
        left
    }

    fn active_accounts(&self) -> usize {
        self.sandbox
            .snapshot()
            .accounts
            .iter()
            .filter(|a| a.active)
            .count()
    }
}

/// A sweep at `at` sees `identity` with access again: their open episode ends.
fn sweep_sees_back(store: &mut Store, identity: &str, at: chrono::DateTime<Utc>) {
    let current = store.current_deprovisions().unwrap();
    let changes = seatwarden::sla::observe(
        &current,
        &[],
        &[identity.to_owned()],
        at,
        Duration::hours(1),
    );
    store.update_ledger(&changes, at).unwrap();
}

fn deactivations(outcome: &RunOutcome) -> Vec<&seatwarden::model::Action> {
    outcome
        .plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Deactivate { .. }))
        .collect()
}

#[tokio::test]
async fn a_truncated_directory_plans_nothing_and_is_a_source_fault() {
    let env = env_with(100, None, "").await;
    let first = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(first.report.safety.source_fault, None);
    let writes = env.sandbox.stats().writes;

    // The export was cut to 10% (people of the scope group among them, or the
    // file source would refuse it as naming no scope group): 90 would look deleted.
    let mut truncated = env.data.directory.clone();
    truncated
        .identities
        .sort_by_key(|i| !i.groups.iter().any(|g| g == "Taskade Users"));
    truncated.identities.truncate(10);
    env.write_directory(&truncated);
    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert!(
        outcome.plan.actions.is_empty(),
        "{:#?}",
        outcome.plan.actions
    );
    assert_eq!(
        outcome.report.safety.source_fault,
        Some(SourceFault::Shrank {
            previous: 100,
            current: 10,
            shrink_percent: 90.0,
            limit_percent: 20.0,
        })
    );
    assert_eq!(exit_code_for(&outcome.report), exit::SOURCE_FAULT);
    assert_eq!(env.sandbox.stats().writes, writes, "nothing written");
    let json = outcome.report.to_json();
    assert!(json.contains("\"source_fault\""), "{json}");
    let text =
        seatwarden::report::render_text(&outcome.report, chrono_tz::UTC, "seatwarden", false);
    assert!(
        text.contains("SOURCE FAULT the directory shrank from 100 to 10 identities"),
        "{text}"
    );

    // The rejected snapshot is no baseline: the next truncated read is rejected
    // too, and the whole directory is accepted again.
    let again = env.run(Mode::Plan, RunOptions::default()).await;
    assert!(again.report.safety.source_fault.is_some());
    env.write_directory(&env.data.directory);
    let whole = env.run(Mode::Plan, RunOptions::default()).await;
    assert_eq!(whole.report.safety.source_fault, None);
    assert!(whole.plan.is_empty());

    // A person says the shrink is real: `--accept-directory` plans from it (the
    // thresholds still hold the mass deprovision), it is audited, and it is the
    // baseline from then on.
    env.write_directory(&truncated);
    let text = seatwarden::report::render_text(&again.report, chrono_tz::UTC, "seatwarden", false);
    assert!(text.contains("--accept-directory"), "{text}");
    let accept = || RunOptions {
        accept_directory: true,
        ..RunOptions::default()
    };
    let accepted = env.run(Mode::Reconcile, accept()).await;
    assert_eq!(accepted.report.safety.source_fault, None);
    assert!(
        accepted
            .plan
            .actions
            .iter()
            .any(|a| a.kind.is_deprovision()),
        "the leavers are planned"
    );
    let audit = env.store().audit().unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.command == "accept_directory" && a.detail.contains("from 100 to 10")),
        "{audit:?}"
    );
    let after = env.run(Mode::Plan, RunOptions::default()).await;
    assert_eq!(after.report.safety.source_fault, None, "the new baseline");

    // An empty directory is always a fault, accepted or not.
    env.write_directory(&DirectorySnapshot {
        identities: Vec::new(),
        complete: true,
    });
    let empty = env.run(Mode::Plan, RunOptions::default()).await;
    assert_eq!(empty.report.safety.source_fault, Some(SourceFault::Empty));
    assert!(empty.plan.actions.is_empty());
    let forced = env.run(Mode::Reconcile, accept()).await;
    assert_eq!(forced.report.safety.source_fault, Some(SourceFault::Empty));
    assert!(forced.plan.actions.is_empty());
}

/// `plan` and `reconcile --dry-run` judge the export against the baseline a
/// reconcile accepted, and leave it there: previews of an export shrinking a
/// little at a time must not walk the baseline down until a cut the limit
/// refuses passes unnoticed, and a dry `--accept-directory` accepts nothing.
#[tokio::test]
async fn previews_leave_the_shrink_baseline_where_a_reconcile_put_it() {
    let env = env_with(100, None, "").await;
    let first = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(first.report.safety.source_fault, None);
    let cut_to = |n: usize| {
        let mut cut = env.data.directory.clone();
        cut.identities
            .sort_by_key(|i| !i.groups.iter().any(|g| g == "Taskade Users"));
        cut.identities.truncate(n);
        cut
    };

    // 85 of 100 is within the 20% limit; 70 of 100 is not, though 70 of 85 is.
    env.write_directory(&cut_to(85));
    let within = env.run(Mode::Plan, RunOptions::default()).await;
    assert_eq!(within.report.safety.source_fault, None);
    let dry = env.run(Mode::DryRun, RunOptions::default()).await;
    assert_eq!(dry.report.safety.source_fault, None);
    env.write_directory(&cut_to(70));
    let beyond = env.run(Mode::Plan, RunOptions::default()).await;
    assert!(
        matches!(
            beyond.report.safety.source_fault,
            Some(SourceFault::Shrank {
                previous: 100,
                current: 70,
                ..
            })
        ),
        "{:?}",
        beyond.report.safety.source_fault
    );

    // A dry run with --accept-directory plans as the acceptance would, and
    // records neither the acceptance nor the new baseline.
    let accept = RunOptions {
        accept_directory: true,
        ..RunOptions::default()
    };
    let previewed = env.run(Mode::DryRun, accept).await;
    assert_eq!(previewed.report.safety.source_fault, None);
    assert!(
        previewed
            .plan
            .actions
            .iter()
            .any(|a| a.kind.is_deprovision()),
        "the preview shows the leavers"
    );
    let audit = env.store().audit().unwrap();
    assert!(
        !audit.iter().any(|a| a.command == "accept_directory"),
        "{audit:?}"
    );
    let still = env.run(Mode::Plan, RunOptions::default()).await;
    assert!(still.report.safety.source_fault.is_some(), "baseline kept");
}

#[tokio::test]
async fn thirty_leavers_over_a_limit_of_25_are_all_held_until_approved() {
    let mut env = env_with(200, None, "max_deprovisions = 25").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    env.leave(30);

    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    let deactivations = deactivations(&outcome);
    assert_eq!(deactivations.len(), 30);
    for action in &deactivations {
        assert!(
            matches!(
                action.held,
                Some(HoldReason::Threshold {
                    class: ActionClass::Deprovision,
                    window: ThresholdWindow::Run,
                    planned: 30,
                    limit: 25,
                    ..
                })
            ),
            "{:?}",
            action.held
        );
    }
    assert_eq!(exit_code_for(&outcome.report), exit::HELD);
    assert_eq!(env.active_accounts(), active_before, "nothing deactivated");
    // The same-day ledger knows them, held.
    let open = env.store().open_deprovisions().unwrap();
    assert_eq!(open.len(), 30);
    assert!(
        open.iter()
            .all(|e| e.held.is_some() && e.verified_at.is_none())
    );

    let approval = approval::approve(
        &env.config,
        &env.client(3),
        env.store(),
        outcome.run_id,
        &Only::Class(ActionClass::Deprovision),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(approval.approved.len(), 30);
    assert_eq!(approval.applied.applied, 30);
    assert_eq!(approval.applied.failed, 0);
    assert!(approval.refused.is_empty() && approval.obsolete.is_empty());
    assert_eq!(env.active_accounts(), active_before - 30);

    let store = env.store();
    // Verified in the ledger by the approval itself, not at the next hold re-check.
    assert!(store.open_deprovisions().unwrap().is_empty());
    let current = store.current_deprovisions().unwrap();
    assert_eq!(current.len(), 30);
    assert!(
        current
            .iter()
            .all(|e| e.enforced_at.is_some() && e.verified_at.is_some())
    );
    let audit = store.audit().unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].command, "approve");
    assert_eq!(audit[0].run, Some(outcome.run_id));
    assert!(!audit[0].user.is_empty());
    // The stored report follows the approval.
    let report =
        seatwarden::report::Report::from_json(&store.report(outcome.run_id).unwrap().unwrap())
            .unwrap();
    assert_eq!(report.summary.actions_held, 0);
    assert_eq!(report.summary.actions_applied, 30);
    drop(store);

    // Nothing left to approve, and the next run has nothing to deactivate.
    let again = env.approve_all(outcome.run_id).await;
    assert!(matches!(
        again,
        Err(approval::ApprovalError::NothingHeld { .. })
    ));
    let after = env.run(Mode::Plan, RunOptions::default()).await;
    assert!(after.plan.is_empty(), "{:#?}", after.plan.actions);
}

/// A mass rename (a changed `user_name_attribute`, a domain change) is held whole
/// past `safety.max_renames`, without holding the day's deprovisions, and a create
/// that wants a name one of them frees waits with it; approved, the renames go
/// first and the create after them.
#[tokio::test]
async fn renames_over_their_limit_are_held_with_a_create_that_wants_a_freed_name() {
    let mut env = env_with(200, None, "max_renames = 3").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let left = env.leave(1);
    let linked: Vec<String> = env
        .data
        .workspace
        .accounts
        .iter()
        .filter(|a| a.active)
        .filter_map(|a| a.external_id.clone())
        .filter(|id| !left.contains(id))
        .collect();
    let mut renamed = Vec::new();
    for identity in env
        .data
        .directory
        .identities
        .iter_mut()
        .filter(|i| i.status == IdentityStatus::Active && linked.contains(&i.id))
        .take(5)
    {
        identity.user_name = identity.user_name.replace('@', ".renamed@");
        renamed.push(identity.user_name.clone());
    }
    assert_eq!(renamed.len(), 5);
    // A new hire is given the address the first renamed person gives up: their
    // create waits behind the held rename (sent now, it would meet 409).
    let given_up = renamed[0].replace(".renamed@", "@");
    let mut new_hire = env
        .data
        .directory
        .identities
        .iter()
        .find(|i| i.user_name == renamed[0])
        .unwrap()
        .clone();
    new_hire.id = "new-hire".into();
    new_hire.user_name = given_up.clone();
    new_hire.email = Some(given_up.clone());
    env.data.directory.identities.push(new_hire);
    let directory = env.data.directory.clone();
    env.write_directory(&directory);
    let names = |env: &Env| -> Vec<String> {
        env.sandbox
            .snapshot()
            .accounts
            .iter()
            .map(|a| a.user_name.clone())
            .filter(|n| renamed.contains(n))
            .collect()
    };

    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    let renames: Vec<_> = outcome
        .plan
        .actions
        .iter()
        .filter(|a| a.kind.renames())
        .collect();
    assert_eq!(renames.len(), 5);
    for action in &renames {
        assert!(
            matches!(
                action.held,
                Some(HoldReason::Threshold {
                    class: ActionClass::Rename,
                    planned: 5,
                    limit: 3,
                    ..
                })
            ),
            "{:?}",
            action.held
        );
    }
    let create = outcome
        .plan
        .actions
        .iter()
        .find(|a| matches!(&a.kind, ActionKind::CreateAccount { spec, .. } if spec.user_name == given_up))
        .unwrap();
    assert_eq!(
        create.held, renames[0].held,
        "the create waits with the rename"
    );
    assert_eq!(deactivations(&outcome).len(), 1);
    assert!(
        deactivations(&outcome)[0].held.is_none(),
        "the leaver goes today"
    );
    assert_eq!(exit_code_for(&outcome.report), exit::HELD);
    assert!(names(&env).is_empty(), "nobody renamed yet");

    // Approved together, the renames go first and free the name for the create
    // (the re-check does not take the name's current holder for the new hire's).
    let approval = env.approve_all(outcome.run_id).await.unwrap();
    assert!(approval.obsolete.is_empty(), "{:?}", approval.obsolete);
    assert!(approval.refused.is_empty(), "{:?}", approval.refused);
    assert_eq!(approval.applied.failed, 0);
    assert_eq!(names(&env).len(), 5);
    assert!(
        env.sandbox
            .snapshot()
            .accounts
            .iter()
            .any(|a| a.user_name == given_up && a.external_id.as_deref() == Some("new-hire")),
        "the new hire has an account of their own"
    );
    let after = env.run(Mode::Plan, RunOptions::default()).await;
    assert!(after.plan.is_empty(), "{:#?}", after.plan.actions);
}

/// 30 leavers over a limit of 25: a reconcile holds all of their deactivations.
/// Returns the environment, the active accounts before they left, that run and
/// the held actions' numbers.
async fn thirty_leavers_held() -> (Env, usize, RunOutcome, Vec<u32>) {
    let mut env = env_with(200, None, "max_deprovisions = 25").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    env.leave(30);
    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    let seqs: Vec<u32> = deactivations(&outcome).iter().map(|a| a.seq).collect();
    (env, active_before, outcome, seqs)
}

/// An approval cut off after it committed its decisions (a crash, Ctrl-C, an error,
/// a breaker that opened before their phase) left the approved actions unsent:
/// some released to `planned`, some still `held` (cut off between the two
/// commits). Approving the run again takes them up, re-checks and applies them,
/// rather than answering that nothing is held.
#[tokio::test]
async fn an_interrupted_approval_is_finished_by_approving_again() {
    use seatwarden::store::{ActionState, Decision};

    let (env, active_before, outcome, seqs) = thirty_leavers_held().await;
    assert_eq!(seqs.len(), 30);
    {
        // What the first approval committed before it died.
        let mut store = env.store();
        let approved: Vec<(u32, Decision, Option<String>)> = seqs
            .iter()
            .map(|seq| (*seq, Decision::Approved, None))
            .collect();
        store
            .record_decisions(outcome.run_id, &approved, "alice", Utc::now())
            .unwrap();
        store
            .release_held(outcome.run_id, &seqs[..20], Utc::now())
            .unwrap();
        let journal = store.journal(outcome.run_id).unwrap();
        let state = |seq: u32| journal.iter().find(|e| e.action.seq == seq).unwrap().state;
        assert_eq!(state(seqs[0]), ActionState::Planned);
        assert_eq!(state(seqs[29]), ActionState::Held);
    }
    assert_eq!(env.active_accounts(), active_before, "nothing sent yet");

    let approval = env.approve_all(outcome.run_id).await.unwrap();
    assert_eq!(approval.approved.len(), 30);
    assert_eq!((approval.applied.applied, approval.applied.failed), (30, 0));
    assert_eq!(env.active_accounts(), active_before - 30);
    let store = env.store();
    assert!(store.open_deprovisions().unwrap().is_empty());
    let audit = store.audit().unwrap();
    assert!(
        audit[0]
            .detail
            .contains("30 approved before and not sent yet"),
        "{audit:?}"
    );
    drop(store);

    let again = env.approve_all(outcome.run_id).await;
    assert!(matches!(
        again,
        Err(approval::ApprovalError::NothingHeld { .. })
    ));
}

/// An approval whose writes were kept back mid-phase left them failed without
/// sending them: SIGTERM or Ctrl-C ("not sent: seatwarden was stopping"), a
/// circuit breaker that opened ("not sent: the circuit breaker opened"), a
/// workspace an earlier write found down, or a token it refused. Approving
/// the run again sends them, as it does for an approval cut off by a crash; one
/// that was sent and refused stays failed.
#[tokio::test]
async fn writes_an_approval_kept_back_are_sent_by_approving_again() {
    use seatwarden::store::{ActionState, Decision};

    let (env, active_before, outcome, seqs) = thirty_leavers_held().await;
    assert_eq!(seqs.len(), 30);
    {
        // What the first approval journaled before it stopped sending.
        let mut store = env.store();
        let approved: Vec<(u32, Decision, Option<String>)> = seqs
            .iter()
            .map(|seq| (*seq, Decision::Approved, None))
            .collect();
        let now = Utc::now();
        store
            .record_decisions(outcome.run_id, &approved, "alice", now)
            .unwrap();
        store.release_held(outcome.run_id, &seqs, now).unwrap();
        store
            .mark_all_in_flight(outcome.run_id, &seqs, now)
            .unwrap();
        for (i, seq) in seqs.iter().enumerate() {
            let why = match i % 5 {
                0 => seatwarden::apply::NOT_SENT_STOPPING.to_owned(),
                1 => seatwarden::apply::NOT_SENT_BREAKER.to_owned(),
                2 => format!(
                    "{} (PATCH /Users/x: connection refused); the next run plans it again",
                    seatwarden::apply::NOT_SENT_DOWN
                ),
                3 => format!(
                    "{} (an earlier write was answered HTTP 401); check workspace.token",
                    seatwarden::apply::NOT_SENT_TOKEN
                ),
                _ => "HTTP 400 from PATCH /Users/x: invalidValue".to_owned(),
            };
            store.mark_failed(outcome.run_id, *seq, now, &why).unwrap();
        }
    }
    assert_eq!(env.active_accounts(), active_before, "nothing sent yet");

    let approval = env.approve_all(outcome.run_id).await.unwrap();
    assert_eq!((approval.applied.applied, approval.applied.failed), (24, 0));
    assert_eq!(env.active_accounts(), active_before - 24);
    let journal = env.store().journal(outcome.run_id).unwrap();
    let state = |seq: u32| journal.iter().find(|e| e.action.seq == seq).unwrap().state;
    for (i, seq) in seqs.iter().enumerate() {
        let expected = if i % 5 == 4 {
            ActionState::Failed
        } else {
            ActionState::Applied
        };
        assert_eq!(state(*seq), expected, "action {seq}");
    }
}

/// An approval cut off after recording its decision but before releasing the rows
/// leaves them held: `reject` can still drop them (nothing was sent), and after it
/// `approve` has nothing to take.
#[tokio::test]
async fn an_interrupted_approval_can_still_be_rejected() {
    use seatwarden::store::Decision;

    let (env, active_before, outcome, seqs) = thirty_leavers_held().await;
    let approved: Vec<(u32, Decision, Option<String>)> = seqs
        .iter()
        .map(|seq| (*seq, Decision::Approved, None))
        .collect();
    env.store()
        .record_decisions(outcome.run_id, &approved, "alice", Utc::now())
        .unwrap();

    let rejected = approval::reject(
        &mut env.store(),
        outcome.run_id,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        Utc::now(),
    )
    .unwrap();
    assert_eq!(rejected.rejected, 30);
    let decisions = env.store().decisions(outcome.run_id).unwrap();
    assert!(
        seqs.iter()
            .all(|seq| decisions.get(seq) == Some(&Decision::Rejected)),
        "{decisions:?}"
    );
    let again = env.approve_all(outcome.run_id).await;
    assert!(matches!(
        again,
        Err(approval::ApprovalError::NothingHeld { .. })
    ));
    assert_eq!(env.active_accounts(), active_before, "nothing sent");
    // The stored report says why each was not run.
    let stored: seatwarden::report::Report =
        serde_json::from_str(&env.store().report(outcome.run_id).unwrap().unwrap()).unwrap();
    let text = seatwarden::report::render_text(&stored, chrono_tz::UTC, "seatwarden", false);
    let rejected_lines = text
        .lines()
        .filter(|l| l.contains(" not_run ") && l.contains(" — rejected (seatwarden reject)"))
        .count();
    assert_eq!(rejected_lines, 30, "{text}");
}

/// `seatwarden approve RUN` killed mid-phase: the approval's future is dropped once
/// the sandbox took `after` of its writes (each one slowed down so that the rest
/// are still to come), as a `kill -9` would leave it: its phase journaled in
/// flight, part of it sent. Returns how many writes reached the workspace, once
/// the ones already on their way have landed.
async fn approve_cut_off(env: &Env, run: seatwarden::store::RunId, after: u64) -> u64 {
    let before = env.sandbox.stats().writes;
    let latency = std::time::Duration::from_millis(25);
    env.sandbox.set_faults(Faults {
        latency,
        ..Faults::default()
    });
    {
        let approving = env.approve_all(run);
        tokio::pin!(approving);
        loop {
            tokio::select! {
                done = &mut approving => panic!("the approval was not cut off: {done:?}"),
                () = tokio::time::sleep(std::time::Duration::from_millis(2)) => {
                    if env.sandbox.stats().writes - before >= after {
                        break;
                    }
                }
            }
        }
    }
    // The requests already sent are answered by the workspace all the same.
    tokio::time::sleep(latency * 8).await;
    env.sandbox.set_faults(Faults::default());
    env.sandbox.stats().writes - before
}

/// The run's rows by state.
fn states(store: &Store, run: seatwarden::store::RunId) -> HashMap<String, usize> {
    let mut states = HashMap::new();
    for row in store.journal(run).unwrap() {
        *states.entry(format!("{:?}", row.state)).or_default() += 1;
    }
    states
}

/// An approval killed mid-apply left its whole phase in flight, part of it sent.
/// Approving the run again resolves those rows first: what reached the workspace
/// is done (and in the ledger), the rest is re-checked and applied by this
/// approval; none of it is held again for a second human, and no account is
/// written twice.
#[tokio::test]
async fn an_approval_killed_mid_apply_is_finished_by_approving_again() {
    use seatwarden::store::{ActionState, Decision};

    let mut env = env_with(300, None, "max_deprovisions = 10").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    env.leave(40);
    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(outcome.plan.held().count(), 40);
    let writes_before = env.sandbox.stats().writes;

    let sent = approve_cut_off(&env, outcome.run_id, 8).await;
    assert!((8..40).contains(&sent), "{sent}");
    assert_eq!(env.active_accounts(), active_before - sent as usize);
    {
        let store = env.store();
        assert_eq!(
            states(&store, outcome.run_id).get("InFlight"),
            Some(&40),
            "the phase went in flight whole"
        );
        let decisions = store.decisions(outcome.run_id).unwrap();
        assert_eq!(
            decisions
                .values()
                .filter(|d| **d == Decision::Approved)
                .count(),
            40
        );
    }

    let approval = env.approve_all(outcome.run_id).await.unwrap();
    let unsent = 40 - sent as usize;
    assert_eq!(approval.approved.len(), unsent, "{approval:?}");
    assert_eq!(
        (approval.applied.applied, approval.applied.failed),
        (unsent, 0)
    );
    assert!(approval.refused.is_empty() && approval.obsolete.is_empty());
    assert_eq!(env.active_accounts(), active_before - 40);
    assert_eq!(
        env.sandbox.stats().writes - writes_before,
        40,
        "every leaver written once"
    );

    let store = env.store();
    let journal = store.journal(outcome.run_id).unwrap();
    assert!(
        journal
            .iter()
            .filter(|e| matches!(e.action.kind, ActionKind::Deactivate { .. }))
            .all(|e| e.state == ActionState::Applied),
        "{journal:#?}"
    );
    // The ledger has all 40 verified: those the killed approval sent, found by
    // recovery, and those this one sent.
    assert!(store.open_deprovisions().unwrap().is_empty());
    let current = store.current_deprovisions().unwrap();
    assert_eq!(current.len(), 40);
    assert!(current.iter().all(|e| e.verified_at.is_some()));
    let report =
        seatwarden::report::Report::from_json(&store.report(outcome.run_id).unwrap().unwrap())
            .unwrap();
    assert_eq!(report.summary.actions_applied, 40, "{:?}", report.summary);
    assert_eq!(report.summary.actions_held, 0);
    drop(store);

    // Nothing is held again, nothing left to approve.
    let next = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert!(deactivations(&next).is_empty(), "{:#?}", next.plan.actions);
    assert_eq!(next.plan.held().count(), 0);
    assert!(matches!(
        env.approve_all(outcome.run_id).await,
        Err(approval::ApprovalError::NothingHeld { .. })
    ));
    assert_eq!(env.sandbox.stats().writes - writes_before, 40);
}

/// A reconcile between the killed approval and the next one recovers the rows in
/// flight and plans the unsent ones again in its own run, where the threshold
/// does not hold them again: a person approved them (since session 59; they were
/// held again, waiting for a second approval, while the leavers kept access).
/// Approving the old run after finds them done (obsolete) and writes nothing: no
/// account is written twice.
#[tokio::test]
async fn a_reconcile_after_a_killed_approval_sends_the_rest_and_nothing_is_sent_twice() {
    let mut env = env_with(300, None, "max_deprovisions = 10").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    env.leave(40);
    let first = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(first.plan.held().count(), 40);
    let writes_before = env.sandbox.stats().writes;
    let sent = approve_cut_off(&env, first.run_id, 8).await as usize;
    assert!((8..30).contains(&sent), "{sent}");

    let second = env.run(Mode::Reconcile, RunOptions::default()).await;
    let again = deactivations(&second);
    assert_eq!(again.len(), 40 - sent);
    assert!(
        again.iter().all(|a| a.held.is_none()),
        "approved already: not held by the limit of 10 again"
    );
    assert_eq!(states(&env.store(), first.run_id).get("InFlight"), None);
    assert_eq!(env.active_accounts(), active_before - 40);
    assert!(matches!(
        env.approve_all(second.run_id).await,
        Err(approval::ApprovalError::NothingHeld { .. })
    ));

    let late = env.approve_all(first.run_id).await.unwrap();
    assert_eq!(late.obsolete.len(), 40 - sent, "{late:?}");
    assert!(
        late.approved.is_empty() && late.refused.is_empty(),
        "{late:?}"
    );
    assert_eq!(late.applied.applied, 0);
    assert_eq!(
        env.sandbox.stats().writes - writes_before,
        40,
        "every leaver written once"
    );
    let store = env.store();
    assert!(store.open_deprovisions().unwrap().is_empty());
    assert!(
        store
            .current_deprovisions()
            .unwrap()
            .iter()
            .all(|e| e.verified_at.is_some())
    );
    drop(store);
    assert!(matches!(
        env.approve_all(first.run_id).await,
        Err(approval::ApprovalError::NothingHeld { .. })
    ));
}

/// The other order, the old run approved again before any reconcile: it sends
/// what its killed approval did not (the decision was made); the reconcile
/// after finds nothing left to do, and nothing is written twice.
#[tokio::test]
async fn the_old_run_approved_again_before_a_reconcile_leaves_it_nothing_to_send() {
    let mut env = env_with(300, None, "max_deprovisions = 10").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    env.leave(40);
    let first = env.run(Mode::Reconcile, RunOptions::default()).await;
    let writes_before = env.sandbox.stats().writes;
    let sent = approve_cut_off(&env, first.run_id, 8).await as usize;

    let finished = env.approve_all(first.run_id).await.unwrap();
    assert_eq!(finished.applied.applied, 40 - sent, "{finished:?}");
    assert_eq!(env.active_accounts(), active_before - 40);
    let second = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert!(deactivations(&second).is_empty(), "{:?}", second.plan);
    assert_eq!(env.sandbox.stats().writes - writes_before, 40);
}

/// Rejecting the run after its approval was killed mid-apply takes back what that
/// approval did not send: the rows in flight are rejected, what of them reached
/// the workspace is found applied by the next recovery, and nothing else is ever
/// sent from that run; the next reconcile plans the rest again (held again).
#[tokio::test]
async fn a_killed_approval_can_still_be_rejected() {
    use seatwarden::store::Decision;

    let mut env = env_with(300, None, "max_deprovisions = 10").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    env.leave(40);
    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    let writes_before = env.sandbox.stats().writes;
    let sent = approve_cut_off(&env, outcome.run_id, 8).await as usize;

    let rejected = approval::reject(
        &mut env.store(),
        outcome.run_id,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        Utc::now(),
    )
    .unwrap();
    assert_eq!(rejected.rejected, 40);
    let decisions = env.store().decisions(outcome.run_id).unwrap();
    assert!(decisions.values().all(|d| *d == Decision::Rejected));
    // Approving again resolves the rows in flight and sends nothing.
    assert!(matches!(
        env.approve_all(outcome.run_id).await,
        Err(approval::ApprovalError::NothingHeld { .. })
    ));
    assert_eq!(env.sandbox.stats().writes - writes_before, sent as u64);
    assert_eq!(env.active_accounts(), active_before - sent);
    let store = env.store();
    let states = states(&store, outcome.run_id);
    assert_eq!(states.get("Applied"), Some(&sent), "{states:?}");
    assert_eq!(states.get("Failed"), Some(&(40 - sent)), "{states:?}");
    let report =
        seatwarden::report::Report::from_json(&store.report(outcome.run_id).unwrap().unwrap())
            .unwrap();
    assert_eq!(report.summary.actions_applied, sent, "{:?}", report.summary);
    drop(store);

    let next = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(deactivations(&next).len(), 40 - sent);
    assert_eq!(next.plan.held().count(), 40 - sent);
    assert_eq!(env.sandbox.stats().writes - writes_before, sent as u64);
}

/// A held deactivation of someone a sweep has since seen with access again (back
/// from leave, re-hired into the directory) is refused by `approve`, not applied
/// to a person who is no longer leaving.
#[tokio::test]
async fn approve_refuses_a_held_deprovision_of_someone_back_since() {
    let mut env = env_with(200, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let left = env.leave(3);
    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(outcome.plan.held().count(), 3);
    {
        // A sweep sees the first one back: their open episode is cancelled.
        let mut store = env.store();
        sweep_sees_back(&mut store, &left[0], Utc::now() + Duration::minutes(5));
    }
    let approval = approval::approve(
        &env.config,
        &env.client(3),
        env.store(),
        outcome.run_id,
        &Only::Class(ActionClass::Deprovision),
        Utc::now() + Duration::minutes(10),
    )
    .await
    .unwrap();
    assert_eq!(approval.applied.applied, 2, "{approval:?}");
    assert_eq!(approval.refused.len(), 1, "{approval:?}");
    assert!(
        approval.refused[0].1.contains("access again"),
        "{:?}",
        approval.refused
    );
}

/// People deleted from the directory and restored before anyone approved their
/// held deactivations: the reconcile that sees them back ends their episodes, as
/// a sweep would (run by hand, without the daemon, nothing else ever would: they
/// stayed pending, went overdue), and `approve` then refuses the deactivations.
#[tokio::test]
async fn a_reconcile_that_sees_held_leavers_back_ends_their_episodes() {
    let mut env = env_with(200, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    let whole = env.data.directory.clone();
    let gone = env.leave(3);
    let mut shrunk = whole.clone();
    shrunk.identities.retain(|i| !gone.contains(&i.id));
    env.write_directory(&shrunk);
    let held = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(deactivations(&held).len(), 3);
    assert_eq!(held.plan.held().count(), 3);
    assert_eq!(env.store().open_deprovisions().unwrap().len(), 3);

    env.write_directory(&whole);
    let back = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert!(back.plan.is_empty(), "{:#?}", back.plan.actions);
    let store = env.store();
    assert!(
        store.open_deprovisions().unwrap().is_empty(),
        "{:#?}",
        store.open_deprovisions().unwrap()
    );
    for identity in &gone {
        let history = store.deprovision_history(identity, 1).unwrap();
        assert!(
            history[0].closed_at.is_some() && history[0].verified_at.is_none(),
            "{history:?}"
        );
    }
    drop(store);

    let approval = env.approve_all(held.run_id).await.unwrap();
    assert_eq!(approval.applied.applied, 0, "{approval:?}");
    assert_eq!(approval.refused.len(), 3, "{approval:?}");
    assert!(
        approval
            .refused
            .iter()
            .all(|(_, why)| why.contains("access again")),
        "{:?}",
        approval.refused
    );
    assert_eq!(env.active_accounts(), active_before, "nobody deactivated");
}

/// A reconcile ends only the episodes opened before it began: one a sweep opened
/// while the reconcile was going rests on a directory newer than the one the
/// reconcile read, which may still show the person in.
#[tokio::test]
async fn a_reconcile_leaves_an_episode_opened_after_it_began_alone() {
    let mut env = env_with(200, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let whole = env.data.directory.clone();
    let gone = env.leave(3);
    let held = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(held.plan.held().count(), 3);
    // The first leaver's episode ended and a new one opened after the next
    // reconcile's start, as by a sweep reading a newer directory meanwhile.
    let later = Utc::now() + Duration::hours(1);
    {
        let mut store = env.store();
        sweep_sees_back(&mut store, &gone[0], Utc::now());
        let current = store.current_deprovisions().unwrap();
        let entry = store.deprovision_history(&gone[0], 1).unwrap().remove(0);
        let changes = seatwarden::sla::observe(
            &current,
            &[seatwarden::sla::Leaver {
                identity_id: gone[0].clone(),
                account_id: entry.account_id.clone(),
                user_name: entry.user_name.clone(),
                reason: seatwarden::sla::LossReason::Deleted,
            }],
            &[],
            later,
            Duration::hours(1),
        );
        assert_eq!(changes.open.len(), 1);
        store.update_ledger(&changes, later).unwrap();
    }
    env.write_directory(&whole);
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let store = env.store();
    let open: Vec<String> = store
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .map(|e| e.identity_id)
        .collect();
    assert_eq!(open, [gone[0].clone()], "the later episode stands");
}

/// `approve` judges a held deprovision by the newest directory read it has, not
/// only by the ledger: a `plan` (which leaves the ledger alone) that saw one of
/// the held leavers back is enough to refuse that one, and only that one, when
/// the directory cannot be read now (its own read goes first).
#[tokio::test]
async fn approve_refuses_a_held_deprovision_a_newer_directory_read_shows_back() {
    let mut env = env_with(200, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    let whole = env.data.directory.clone();
    let gone = env.leave(3);
    let held = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(held.plan.held().count(), 3);

    let mut one_back = env.data.directory.clone();
    let returning = whole
        .identities
        .iter()
        .find(|i| i.id == gone[0])
        .unwrap()
        .clone();
    for identity in one_back.identities.iter_mut() {
        if identity.id == returning.id {
            *identity = returning.clone();
        }
    }
    env.write_directory(&one_back);
    let plan = env.run(Mode::Plan, RunOptions::default()).await;
    // The ledger still has all three pending: only the directory read says otherwise.
    assert_eq!(env.store().open_deprovisions().unwrap().len(), 3);
    let seatwarden::config::DirectoryConfig::File { path } = &env.config.directory else {
        panic!("the safety scenarios use a directory file");
    };
    std::fs::write(path, "{\"users\": [").unwrap();

    let approval = env.approve_all(held.run_id).await.unwrap();
    assert!(
        approval
            .directory_note
            .as_deref()
            .is_some_and(|note| note.starts_with("the directory could not be read now (")),
        "{approval:?}"
    );
    assert_eq!(approval.applied.applied, 2, "{approval:?}");
    assert_eq!(approval.refused.len(), 1, "{approval:?}");
    let back_seq = deactivations(&held)
        .iter()
        .find(|a| a.identity_id.as_deref() == Some(gone[0].as_str()))
        .unwrap()
        .seq;
    assert_eq!(approval.refused[0].0, back_seq);
    let why = &approval.refused[0].1;
    assert!(
        why.contains("access again") && why.contains(&format!("run {}", plan.run_id)),
        "{why}"
    );
    assert_eq!(env.active_accounts(), active_before - 2);
}

/// A newer directory read that the source check rejected (here: shrunk to half,
/// as a stale or cut export would be) is no evidence that a held leaver is back:
/// `approve` applies all three.
#[tokio::test]
async fn approve_ignores_a_newer_directory_read_the_source_check_rejected() {
    let mut env = env_with(200, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let active_before = env.active_accounts();
    let whole = env.data.directory.clone();
    let gone = env.leave(3);
    let held = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(held.plan.held().count(), 3);

    let returning = whole
        .identities
        .iter()
        .find(|i| i.id == gone[0])
        .unwrap()
        .clone();
    let mut cut = env.data.directory.clone();
    cut.identities.retain(|i| i.id != returning.id);
    cut.identities
        .sort_by_key(|i| !i.groups.iter().any(|g| g == "Taskade Users"));
    cut.identities.truncate(99);
    cut.identities.push(returning);
    env.write_directory(&cut);
    let plan = env.run(Mode::Plan, RunOptions::default()).await;
    assert!(plan.report.safety.source_fault.is_some());

    let approval = env.approve_all(held.run_id).await.unwrap();
    // Nor is the same read made by the approval itself.
    assert!(
        approval.directory_note.as_deref().is_some_and(
            |note| note.starts_with("the directory read now was refused as a source fault (")
        ),
        "{approval:?}"
    );
    assert!(approval.refused.is_empty(), "{approval:?}");
    assert_eq!(approval.applied.applied, 3, "{approval:?}");
    assert_eq!(env.active_accounts(), active_before - 3);
}

/// An approval cut off after releasing what it approved leaves those rows
/// `planned`; the approval that finishes them re-checks them, and one it refuses
/// (here: the person is back) goes back to `held`, as a refusal of a first
/// approval leaves it, with the re-check's reason in the journal and the report:
/// not "not run", which would say nothing and ask nobody for anything.
#[tokio::test]
async fn a_released_action_the_next_approval_refuses_is_held_again_with_the_reason() {
    use seatwarden::report::{Outcome, Report};
    use seatwarden::store::{ActionState, Decision};

    let mut env = env_with(200, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let left = env.leave(3);
    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    let seqs: Vec<u32> = deactivations(&outcome).iter().map(|a| a.seq).collect();
    assert_eq!(seqs.len(), 3);
    let back = deactivations(&outcome)
        .iter()
        .find(|a| a.identity_id.as_deref() == Some(left[0].as_str()))
        .unwrap()
        .seq;
    {
        // The first approval decided and released all three, then died.
        let mut store = env.store();
        let approved: Vec<(u32, Decision, Option<String>)> = seqs
            .iter()
            .map(|seq| (*seq, Decision::Approved, None))
            .collect();
        store
            .record_decisions(outcome.run_id, &approved, "alice", Utc::now())
            .unwrap();
        store
            .release_held(outcome.run_id, &seqs, Utc::now())
            .unwrap();
        // A sweep then sees the first leaver back.
        sweep_sees_back(&mut store, &left[0], Utc::now() + Duration::minutes(5));
    }
    let approval = approval::approve(
        &env.config,
        &env.client(3),
        env.store(),
        outcome.run_id,
        &Only::All,
        Utc::now() + Duration::minutes(10),
    )
    .await
    .unwrap();
    assert_eq!(approval.applied.applied, 2, "{approval:?}");
    assert_eq!(approval.refused.len(), 1, "{approval:?}");
    assert_eq!(approval.refused[0].0, back);

    let store = env.store();
    let journal = store.journal(outcome.run_id).unwrap();
    let row = journal.iter().find(|e| e.action.seq == back).unwrap();
    assert_eq!(row.state, ActionState::Held);
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused by the re-check") && e.contains("access again")),
        "{row:?}"
    );
    let report = Report::from_json(&store.report(outcome.run_id).unwrap().unwrap()).unwrap();
    let shown = report.actions.iter().find(|a| a.seq == back).unwrap();
    assert_eq!(shown.outcome, Outcome::Held);
    assert!(
        shown
            .error
            .as_deref()
            .is_some_and(|e| e.contains("access again")),
        "{shown:?}"
    );
    assert_eq!(report.summary.actions_not_run, 0, "{:?}", report.summary);
    assert_eq!(report.summary.actions_held, 1, "{:?}", report.summary);
    drop(store);

    // Still decidable: rejecting drops it for good.
    let rejected = approval::reject(
        &mut env.store(),
        outcome.run_id,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        Utc::now(),
    )
    .unwrap();
    assert_eq!(rejected.rejected, 1);
}

/// `approve` re-reads the workspace to see what a held action still means: an
/// account missing from that listing would make its deactivation "obsolete".
/// A listing that ended short of its `totalResults` is no such proof, so
/// nothing is decided and everything stays held.
#[tokio::test]
async fn approve_decides_nothing_on_a_workspace_listing_that_ended_short() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let mut env = env_with(60, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    env.leave(3);
    let held = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(held.plan.held().count(), 3);

    // The same workspace seen through a provider whose listing stops after one
    // account while announcing ten.
    let server = MockServer::start().await;
    let some = env.sandbox.snapshot().accounts[0].clone();
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "totalResults": 10,
            "Resources": [{"id": some.id, "userName": some.user_name, "active": true}],
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Groups"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"totalResults": 0, "Resources": []})),
        )
        .mount(&server)
        .await;
    let mut settings = env.config.scim_settings().unwrap();
    settings.base_url = format!("{}/scim/v2", server.uri()).parse().unwrap();
    let short = ScimClient::new(settings).unwrap();

    let err = approval::approve(
        &env.config,
        &short,
        env.store(),
        held.run_id,
        &Only::All,
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, approval::ApprovalError::ShortListing),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was approved"), "{err}");
    let open = env.store().open_deprovisions().unwrap();
    assert_eq!(open.iter().filter(|e| e.held.is_some()).count(), 3);
    // With the whole workspace in view the same approval goes through.
    let approval = env.approve_all(held.run_id).await.unwrap();
    assert_eq!(approval.applied.applied, 3);
}

/// A plan or a dry run holds what a reconcile would have held then; approving it
/// would apply a plan nobody ran to apply. Both are refused, and nothing is written.
#[tokio::test]
async fn the_held_actions_of_a_plan_or_a_dry_run_cannot_be_decided_on() {
    let mut env = env_with(60, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    env.leave(3);
    let active = env.active_accounts();
    for mode in [Mode::Plan, Mode::DryRun] {
        let held = env.run(mode, RunOptions::default()).await;
        assert_eq!(held.plan.held().count(), 3, "{mode:?}");
        let err = env.approve_all(held.run_id).await.unwrap_err();
        assert!(
            matches!(err, approval::ApprovalError::NotApplying { .. }),
            "{mode:?}: {err}"
        );
        assert!(err.to_string().contains("seatwarden reconcile"), "{err}");
        let err = approval::reject(
            &mut env.store(),
            held.run_id,
            &Only::All,
            "seatwarden",
            chrono_tz::UTC,
            Utc::now(),
        )
        .unwrap_err();
        assert!(
            matches!(err, approval::ApprovalError::NotApplying { .. }),
            "{mode:?}: {err}"
        );
    }
    assert_eq!(env.active_accounts(), active, "nothing deactivated");
}

#[tokio::test]
async fn reject_and_the_override_are_audited() {
    let mut env = env_with(60, None, "max_deprovisions = 2").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    env.leave(3);
    let held = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(held.plan.held().count(), 3);
    let mut store = env.store();
    let rejected = approval::reject(
        &mut store,
        held.run_id,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        Utc::now(),
    )
    .unwrap();
    assert_eq!(rejected.rejected, 3);
    // What follows is said: the next reconcile plans them again, the leavers'
    // episodes stay open, and how to end it for good.
    let said = rejected.to_string();
    assert!(
        said.contains(&format!("reconcile run {}", held.run_id))
            && said.contains("The next reconcile plans again")
            && said.contains("The 3 deprovisions among them stay open")
            && said.contains("safety.protected"),
        "{said}"
    );
    // The stored report stops asking for a human: what was rejected is not run.
    let report =
        seatwarden::report::Report::from_json(&store.report(held.run_id).unwrap().unwrap())
            .unwrap();
    assert_eq!(report.summary.actions_held, 0, "{:?}", report.actions);
    let rejected_actions: Vec<_> = report
        .actions
        .iter()
        .filter(|a| {
            a.error
                .as_deref()
                .is_some_and(|e| e.starts_with("rejected"))
        })
        .collect();
    assert_eq!(rejected_actions.len(), 3, "{:?}", report.actions);
    assert!(
        rejected_actions
            .iter()
            .all(|a| a.outcome == seatwarden::report::Outcome::NotRun)
    );
    drop(store);
    let approve = env.approve_all(held.run_id).await;
    assert!(
        matches!(approve, Err(approval::ApprovalError::NothingHeld { .. })),
        "rejected actions cannot be approved"
    );

    let forced = env
        .run(
            Mode::Reconcile,
            RunOptions {
                allow_over_threshold: true,
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(forced.report.summary.actions_applied, 3);
    assert!(forced.report.safety.allow_over_threshold);
    let commands: Vec<String> = env
        .store()
        .audit()
        .unwrap()
        .into_iter()
        .map(|a| a.command)
        .collect();
    assert_eq!(commands, ["reject", "allow_over_threshold"]);
}

#[tokio::test]
async fn twenty_leavers_a_run_pass_twice_and_the_third_run_hits_the_24h_limit() {
    let mut env = env_with(
        600,
        None,
        "max_deprovisions = 25\nmax_deprovisions_per_day = 50",
    )
    .await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let now = Utc::now();
    for (round, hour) in [(0, 1), (1, 2)] {
        env.leave(20);
        let outcome = env
            .run(
                Mode::Reconcile,
                RunOptions {
                    now: Some(now + Duration::hours(hour)),
                    ..RunOptions::default()
                },
            )
            .await;
        assert_eq!(deactivations(&outcome).len(), 20);
        assert_eq!(outcome.plan.held().count(), 0, "round {round}");
        assert_eq!(outcome.report.summary.actions_applied, 20);
        // Each verified in the ledger, with its latency for the daemon's histogram.
        assert_eq!(outcome.deprovision_latencies.len(), 20);
        assert!(
            outcome
                .deprovision_latencies
                .iter()
                .all(|l| *l >= Duration::zero()),
            "{:?}",
            outcome.deprovision_latencies
        );
    }
    env.leave(20);
    let third = env
        .run(
            Mode::Reconcile,
            RunOptions {
                now: Some(now + Duration::hours(3)),
                ..RunOptions::default()
            },
        )
        .await;
    let held: Vec<_> = third.plan.held().collect();
    assert_eq!(held.len(), 20);
    assert_eq!(
        held[0].held,
        Some(HoldReason::Threshold {
            class: ActionClass::Deprovision,
            window: ThresholdWindow::Day,
            planned: 20,
            recent: 40,
            limit: 50,
            managed: third.report.summary.managed_accounts,
            by_percent: false,
        })
    );
    assert_eq!(third.report.summary.actions_applied, 0);
    assert!(
        third.deprovision_latencies.is_empty(),
        "held: none verified"
    );

    // A day later the window has moved on: the same 20 go through.
    let next_day = env
        .run(
            Mode::Reconcile,
            RunOptions {
                now: Some(now + Duration::hours(30)),
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(next_day.report.summary.actions_applied, 20);
}

#[tokio::test]
async fn a_workspace_that_returns_only_its_first_page_gets_no_duplicate_creates() {
    let env = env_with(250, None, "").await;
    let first = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(first.report.summary.actions_failed, 0);
    let users = env.sandbox.snapshot().accounts.len();
    assert!(users > 200);
    let writes = env.sandbox.stats().writes;

    env.sandbox.set_faults(Faults {
        first_page_only: true,
        ..Faults::default()
    });
    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    let creates = outcome
        .plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::CreateAccount { .. }))
        .count();
    assert_eq!(creates, 0, "{:#?}", outcome.plan.actions);
    assert!(outcome.plan.is_empty(), "{:#?}", outcome.plan.actions);
    assert_eq!(env.sandbox.stats().writes, writes, "no write at all");
    assert_eq!(env.sandbox.snapshot().accounts.len(), users);

    // The lie goes on: the next run still compares against the whole workspace.
    let again = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert!(again.plan.is_empty(), "{:#?}", again.plan.actions);
    assert_eq!(env.sandbox.stats().writes, writes);
}

/// A mapping to Owner whose group nobody in the directory is in (a misspelt name
/// in an export, which cannot show an empty group) plans every Owner down, as no
/// mapping would: each demotion waits for a human. One member in it is enough to
/// take the mapping at its word.
#[tokio::test]
async fn an_owner_mapping_that_gives_owner_to_nobody_holds_owner_demotions() {
    let env = env_with(40, None, "").await;
    let (owner_group, role) = env.data.roles[0].clone();
    assert_eq!(role, Role::Owner);
    let demotions = |outcome: &RunOutcome| -> Vec<Option<HoldReason>> {
        outcome
            .plan
            .actions
            .iter()
            .filter(|a| {
                matches!(&a.kind, ActionKind::SetRole { from, to, .. }
                    if *to != Role::Owner && from.iter().any(|r| r == "Owner"))
            })
            .map(|a| a.held.clone())
            .collect()
    };
    let mut directory = env.data.directory.clone();
    let members: Vec<usize> = (0..directory.identities.len())
        .filter(|&i| directory.identities[i].groups.contains(&owner_group))
        .collect();
    assert!(members.len() >= 3, "{members:?}");
    for identity in &mut directory.identities {
        identity.groups.retain(|g| *g != owner_group);
    }
    env.write_directory(&directory);
    let nobody = env.run(Mode::Plan, RunOptions::default()).await;
    let held = demotions(&nobody);
    assert!(held.len() >= 3, "{held:?}");
    assert!(
        held.iter()
            .all(|h| *h == Some(HoldReason::OwnerWithoutMapping)),
        "{held:?}"
    );

    // Half of them back in the group: the other half's demotions go ahead.
    for &i in &members[..members.len() / 2] {
        directory.identities[i].groups.push(owner_group.clone());
    }
    env.write_directory(&directory);
    let some = env.run(Mode::Plan, RunOptions::default()).await;
    let held = demotions(&some);
    assert!(!held.is_empty());
    assert!(held.iter().all(Option::is_none), "{held:?}");
}

/// A mapping whose directory group nobody is in (a misspelt name in an export,
/// which cannot show an empty group) would empty its workspace group: the removals
/// wait for a human, however low the thresholds are set. One member back in the
/// group is enough to take the mapping at its word.
#[tokio::test]
async fn a_workspace_group_no_mapping_gives_to_anyone_is_not_emptied_without_a_human() {
    let env = env_with(40, None, "").await;
    let (group, role) = env.data.roles[1].clone();
    assert_ne!(role, Role::Owner);
    let removals = |outcome: &RunOutcome| -> Vec<(usize, Option<HoldReason>)> {
        outcome
            .plan
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::RemoveMembers { group: g, members } if g.display_name() == group => {
                    Some((members.len(), a.held.clone()))
                }
                _ => None,
            })
            .collect()
    };
    let mut directory = env.data.directory.clone();
    let members: Vec<usize> = (0..directory.identities.len())
        .filter(|&i| directory.identities[i].groups.contains(&group))
        .collect();
    assert!(members.len() >= 3, "{members:?}");
    for identity in &mut directory.identities {
        identity.groups.retain(|g| *g != group);
    }
    env.write_directory(&directory);
    let workspace_group = |sandbox: &Sandbox| {
        sandbox
            .snapshot()
            .groups
            .into_iter()
            .find(|g| g.display_name == group)
            .unwrap()
    };
    let before = workspace_group(&env.sandbox).members.len();
    assert!(before >= 3, "{before}");
    let nobody = env.run(Mode::Reconcile, RunOptions::default()).await;
    let held = removals(&nobody);
    // Leavers' memberships go with their deactivation, not by a removal.
    let removed = held.iter().map(|(n, _)| n).sum::<usize>();
    assert!(removed + 2 >= before && removed > 0, "{before}: {held:?}");
    assert!(
        held.iter().all(|(_, h)| *h
            == Some(HoldReason::GroupGrantedToNobody {
                group: group.clone()
            })),
        "{held:?}"
    );
    assert_eq!(workspace_group(&env.sandbox).members.len(), before);
    // `status` says the last reconcile held them, though it succeeded.
    let status = seatwarden::daemon::status::collect(
        &env.store(),
        chrono::Utc::now(),
        seatwarden::daemon::status::Settings {
            tz: chrono_tz::UTC,
            delete_after: None,
            cool_down: std::time::Duration::from_secs(900),
            database: None,
            schedule: None,
            admin_command: "seatwarden".into(),
            resolve_after: None,
            certificates: Vec::new(),
            exceptions: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(
        status.last_reconcile_actions.get("held"),
        Some(&held.len()),
        "{:?}",
        status.last_reconcile_actions
    );
    assert!(
        seatwarden::daemon::status::render_text(&status).contains(&format!(" {} held", held.len())),
        "{}",
        seatwarden::daemon::status::render_text(&status)
    );

    // One of them back in the group: the others' removals go ahead.
    let back = members
        .iter()
        .copied()
        .find(|&i| directory.identities[i].status == IdentityStatus::Active)
        .unwrap();
    directory.identities[back].groups.push(group.clone());
    env.write_directory(&directory);
    let one = env.run(Mode::Reconcile, RunOptions::default()).await;
    let planned = removals(&one);
    assert_eq!(
        planned.iter().map(|(n, _)| n).sum::<usize>(),
        removed - 1,
        "{planned:?}"
    );
    assert!(planned.iter().all(|(_, h)| h.is_none()), "{planned:?}");
    assert_eq!(
        workspace_group(&env.sandbox).members.len(),
        before - (removed - 1)
    );
}

/// A half-open trial of one failed write cannot tell a failing workspace from
/// one account it refuses: the breaker stays half-open, and is reported so (its
/// alert is not resolved), while the run's exit code is its own.
#[tokio::test]
async fn a_trial_too_small_to_tell_leaves_the_circuit_half_open() {
    let env = env_with(
        40,
        None,
        "circuit.failure_ratio = 0.5\ncircuit.window = 10\ncircuit.cool_down = \"15m\"",
    )
    .await;
    let mut directory = env.data.directory.clone();
    let leaver = directory
        .identities
        .iter_mut()
        .find(|i| i.status == IdentityStatus::Active)
        .unwrap();
    leaver.status = IdentityStatus::Suspended;
    env.write_directory(&directory);
    let t0 = Utc::now();
    env.store()
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(t0 - Duration::minutes(20)),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    env.sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        seed: 2,
        ..Faults::default()
    });
    let trial = env
        .run_with(
            &env.client(0),
            Mode::Reconcile,
            RunOptions {
                now: Some(t0),
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(
        trial.report.summary.actions_failed, 1,
        "{:?}",
        trial.report.summary
    );
    let circuit = trial.report.safety.circuit.as_ref().expect("reported");
    assert_eq!(circuit.state.as_str(), "half_open", "{circuit:?}");
    assert_eq!(exit_code_for(&trial.report), exit::FAILED);
    assert!(env.store().circuit().unwrap().opened_at.is_some());
}

#[tokio::test]
async fn the_circuit_is_stored_open_the_moment_it_opens() {
    // A run that fails (or is killed) after the breaker opened must still leave it
    // open: so the executor stores the opening itself, before any caller does.
    let env = env_with(
        40,
        Some(WorkspaceSnapshot::default()),
        "circuit.failure_ratio = 0.5\ncircuit.window = 10\ncircuit.cool_down = \"15m\"",
    )
    .await;
    let planned = env.run(Mode::Plan, RunOptions::default()).await;
    assert!(planned.plan.runnable().count() > 20);
    env.sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        seed: 3,
        ..Faults::default()
    });
    let store = std::sync::Arc::new(std::sync::Mutex::new(env.store()));
    // On the run's clock (a day ahead here), as the caller stamps it.
    let t0 = Utc::now() + Duration::days(1);
    let summary = seatwarden::apply::apply_with_breaker(
        &env.client(0),
        &store,
        planned.run_id,
        &planned.plan,
        2,
        usize::MAX,
        seatwarden::circuit::Breaker::new(env.config.circuit_settings()),
        t0,
        &env.config.admin_command(),
    )
    .await
    .unwrap();
    assert!(summary.circuit_opened.is_some());
    // No caller stored the summary's opening: this is the executor's record.
    let stored = env.store().circuit().unwrap();
    assert!(
        stored
            .opened_at
            .is_some_and(|at| at >= t0 && at < t0 + Duration::minutes(5)),
        "{stored:?}"
    );
    assert!(
        stored
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("of the last 10 writes failed")),
        "{stored:?}"
    );
    assert!(
        stored.failures.iter().all(|f| f.message.contains("503")) && !stored.failures.is_empty(),
        "{stored:?}"
    );
    let (state, _) =
        seatwarden::safety::circuit_state(&env.store(), &env.config, t0 + Duration::minutes(1))
            .unwrap();
    assert_eq!(state.as_str(), "open");
}

#[tokio::test]
async fn the_cool_down_starts_when_the_writes_stopped_on_the_runs_clock() {
    let env = env_with(
        40,
        Some(WorkspaceSnapshot::default()),
        "circuit.failure_ratio = 0.5\ncircuit.window = 10\ncircuit.cool_down = \"15m\"",
    )
    .await;
    env.sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        latency: std::time::Duration::from_millis(150),
        seed: 5,
        ..Faults::default()
    });
    // A run's clock is its own (a day ahead here): the opening is stamped on it,
    // moved on by what the apply took, not at the moment the run began.
    let t0 = Utc::now() + Duration::days(1);
    let run = env
        .run_with(
            &env.client(0),
            Mode::Reconcile,
            RunOptions {
                now: Some(t0),
                ..RunOptions::default()
            },
        )
        .await;
    let opened_at = env.store().circuit().unwrap().opened_at.unwrap();
    let after = opened_at - t0;
    assert!(
        after >= Duration::milliseconds(150) && after < Duration::minutes(5),
        "opened {after} after the run's start"
    );
    let circuit = run.report.safety.circuit.as_ref().expect("opened");
    assert_eq!(
        circuit.state,
        seatwarden::circuit::CircuitState::Open {
            since: opened_at,
            until: opened_at + Duration::minutes(15),
        }
    );
}

/// The exploratory tester's outage, small: the workspace is killed in the middle
/// of the writes. The breaker opens; verification then reads no listing, and
/// once a read finds the workspace answering nothing it sends no further read:
/// the rows it could not read are journaled failed ("not verified"), never
/// applied, none left in flight. Before, each row was read twice, every read a
/// whole retry cycle against the dead host. And the report's "open since" is when
/// the breaker opened, not when the run ended.
#[tokio::test]
async fn a_workspace_killed_mid_run_is_not_read_row_by_row() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use seatwarden::apply::ApplyProgress;

    // An empty workspace: every person needs a create.
    let env = env_with(
        80,
        Some(WorkspaceSnapshot::default()),
        "circuit.failure_ratio = 0.5\ncircuit.window = 10\ncircuit.cool_down = \"15m\"",
    )
    .await;
    let Env {
        sandbox,
        _dir: dir,
        config,
        ..
    } = env;
    let client = {
        let mut settings = config.scim_settings().unwrap();
        settings.retry = RetryPolicy::immediate(2);
        ScimClient::new(settings).unwrap()
    };
    const ATTEMPTS: u64 = 3;
    let sandbox = Arc::new(Mutex::new(Some(sandbox)));
    let requests_at_verification = Arc::new(AtomicU64::new(u64::MAX));
    // The opening as stored when the verification began: the executor's stamp.
    let stored_before_verification: Arc<Mutex<Option<DateTime<Utc>>>> = Arc::default();
    let hook: seatwarden::apply::ProgressHook = {
        let (sandbox, client) = (Arc::clone(&sandbox), client.clone());
        let (requests, stored) = (
            Arc::clone(&requests_at_verification),
            Arc::clone(&stored_before_verification),
        );
        let state = config.state.path.clone();
        Arc::new(move |progress| match progress {
            ApplyProgress::Writing { done: 20, .. } => {
                if let Some(sandbox) = sandbox.lock().unwrap().take() {
                    tokio::spawn(sandbox.shutdown());
                }
            }
            ApplyProgress::Verifying { .. } => {
                requests.store(client.stats().requests, Ordering::SeqCst);
                *stored.lock().unwrap() = Store::open(&state).unwrap().circuit().unwrap().opened_at;
            }
            ApplyProgress::Writing { .. } | ApplyProgress::Recovering { .. } => {}
        })
    };
    let run = seatwarden::apply::with_progress(
        hook,
        run::execute_with_options(
            &config,
            &run::directory_from_config(&config),
            &client,
            Store::open(&config.state.path).unwrap(),
            Mode::Reconcile,
            RunOptions::default(),
        ),
    )
    .await
    .unwrap();
    assert!(
        sandbox.lock().unwrap().is_none(),
        "the workspace was killed"
    );

    let circuit = run.report.safety.circuit.as_ref().expect("opened");
    let seatwarden::circuit::CircuitState::Open { since, .. } = circuit.state else {
        panic!("{circuit:?}");
    };
    let stored = stored_before_verification.lock().unwrap().expect("stored");
    assert_eq!(
        since, stored,
        "open since when it opened, not when the run ended"
    );
    assert_eq!(
        Store::open(&config.state.path)
            .unwrap()
            .circuit()
            .unwrap()
            .opened_at,
        Some(since)
    );

    // Twenty writes were answered before the kill: their rows wait on a read.
    let unverified: Vec<&str> = run
        .report
        .actions
        .iter()
        .filter_map(|a| a.error.as_deref())
        .filter(|e| e.starts_with("not verified"))
        .collect();
    assert!(unverified.len() >= 20, "{unverified:#?}");
    let unread = unverified
        .iter()
        .filter(|e| e.contains(seatwarden::workspace::NOT_READ))
        .count();
    assert!(unread + 4 >= unverified.len(), "{unverified:#?}");
    assert_eq!(run.report.summary.actions_applied, 0);
    let store = Store::open(&config.state.path).unwrap();
    assert!(store.interrupted().unwrap().is_empty());

    // The reads that found the workspace down, at most one round of the
    // concurrency limit, each with its retries: not two reads of every row.
    let during_verification =
        client.stats().requests - requests_at_verification.load(Ordering::SeqCst);
    assert!(
        during_verification <= 4 * ATTEMPTS,
        "{during_verification} requests after the verification began"
    );
    drop(dir);
}

#[tokio::test]
async fn a_workspace_failing_most_writes_opens_the_circuit_and_resume_finishes() {
    // An empty workspace: every person needs a create (plus memberships).
    let env = env_with(
        80,
        Some(WorkspaceSnapshot::default()),
        "circuit.failure_ratio = 0.5\ncircuit.window = 10\ncircuit.cool_down = \"15m\"",
    )
    .await;
    env.sandbox.set_faults(Faults {
        rate_5xx: 0.8,
        writes_only: true,
        seed: 11,
        ..Faults::default()
    });
    // No retries: each injected 503 is a final failure for the breaker to see.
    let flaky = env.client(0);
    let t0 = Utc::now();
    let at = |minutes: i64| RunOptions {
        now: Some(t0 + Duration::minutes(minutes)),
        ..RunOptions::default()
    };
    let first = env.run_with(&flaky, Mode::Reconcile, at(0)).await;
    let planned = first.plan.actions.len();
    assert!(planned > 60, "{planned}");
    let circuit = first
        .report
        .safety
        .circuit
        .as_ref()
        .expect("circuit opened");
    assert_eq!(circuit.state.as_str(), "open");
    assert!(
        circuit
            .reason
            .as_deref()
            .unwrap()
            .contains("of the last 10 writes failed")
    );
    assert!(!circuit.failures.is_empty());
    assert!(
        circuit
            .failures
            .iter()
            .all(|f| f.message.contains("503") && !f.subject.is_empty()),
        "{:#?}",
        circuit.failures
    );
    assert_eq!(exit_code_for(&first.report), exit::CIRCUIT_OPEN);
    let text = seatwarden::report::render_text(&first.report, chrono_tz::UTC, "seatwarden", false);
    assert!(text.contains("CIRCUIT BREAKER open since"), "{text}");
    assert!(
        text.contains("sandbox fault: service unavailable"),
        "{text}"
    );
    // Nothing is lost: every action is applied, failed with a message, or not run;
    // none is left in flight.
    let s = &first.report.summary;
    assert_eq!(
        s.actions_applied + s.actions_failed + s.actions_not_run,
        planned
    );
    assert!(s.actions_applied < planned);
    assert!(env.store().interrupted().unwrap().is_empty());
    assert!(
        first
            .report
            .actions
            .iter()
            .filter(|a| a.outcome == seatwarden::report::Outcome::Failed)
            .all(|a| a.error.is_some())
    );
    let created = env.sandbox.snapshot().accounts.len();

    // Still open ten minutes later (the state survived the restart): nothing sent.
    let writes = env.sandbox.stats().writes;
    let requests = env.sandbox.stats().requests;
    let second = env.run_with(&flaky, Mode::Reconcile, at(10)).await;
    assert_eq!(
        second
            .report
            .safety
            .circuit
            .as_ref()
            .map(|c| c.state.as_str()),
        Some("open")
    );
    assert_eq!(second.report.summary.actions_applied, 0);
    assert!(env.sandbox.stats().requests > requests, "it did read");
    assert_eq!(env.sandbox.stats().writes, writes, "but wrote nothing");
    assert_eq!(env.sandbox.snapshot().accounts.len(), created);
    let (state, _) =
        seatwarden::safety::circuit_state(&env.store(), &env.config, t0 + Duration::minutes(16))
            .unwrap();
    assert_eq!(state.as_str(), "half_open", "after the cool-down");
    // The half-open trial meets the same failing workspace and opens it again.
    let trial = env.run_with(&flaky, Mode::Reconcile, at(16)).await;
    let reopened = trial.report.safety.circuit.as_ref().expect("opened again");
    // Stamped when the trial's writes ended, on the run's clock.
    let seatwarden::circuit::CircuitState::Open { since, until } = reopened.state else {
        panic!("{:?}", reopened.state);
    };
    assert!(
        since >= t0 + Duration::minutes(16) && since < t0 + Duration::minutes(17),
        "{since}"
    );
    assert_eq!(until, since + Duration::minutes(15));

    // The workspace recovers; `resume` closes the breaker and the run finishes.
    env.sandbox.set_faults(Faults::default());
    assert!(approval::resume(&mut env.store(), Utc::now()).unwrap());
    let resumed = env.run(Mode::Reconcile, at(17)).await;
    crate::fixtures::assert_clean_reconcile(&resumed.report);
    assert_eq!(resumed.report.safety.circuit, None);
    let converged = env.run(Mode::Plan, at(18)).await;
    assert!(converged.plan.is_empty(), "{:#?}", converged.plan.actions);
    let in_scope = env
        .data
        .directory
        .identities
        .iter()
        .filter(|i| {
            i.status == IdentityStatus::Active && i.groups.iter().any(|g| g == "Taskade Users")
        })
        .count();
    assert_eq!(
        env.sandbox.snapshot().accounts.len(),
        in_scope,
        "no duplicates"
    );
}

#[tokio::test]
async fn creates_wait_for_the_settle_window_and_deprovisions_do_not() {
    let mut env = env_with(40, None, "settle = \"10m\"").await;
    env.run(Mode::Reconcile, RunOptions::default()).await;
    // A new hire (an account removed from the workspace) and a leaver.
    let snapshot = env.sandbox.snapshot();
    let left = env.leave(1);
    let hire = env
        .data
        .directory
        .identities
        .iter()
        .find(|i| {
            i.status == IdentityStatus::Active
                && i.groups.iter().any(|g| g == "Taskade Users")
                && !left.contains(&i.id)
        })
        .unwrap()
        .clone();
    let account = snapshot
        .accounts
        .iter()
        .find(|a| a.external_id.as_deref() == Some(hire.id.as_str()))
        .unwrap();
    let client = env.client(3);
    client.delete_account(&account.id).await.unwrap();

    let t0: DateTime<Utc> = Utc::now();
    let at = |minutes: i64| RunOptions {
        now: Some(t0 + Duration::minutes(minutes)),
        ..RunOptions::default()
    };
    let first = env.run(Mode::Reconcile, at(0)).await;
    let create = first
        .plan
        .actions
        .iter()
        .find(|a| matches!(a.kind, ActionKind::CreateAccount { .. }))
        .unwrap();
    assert!(matches!(create.held, Some(HoldReason::Settling { .. })));
    assert_eq!(deactivations(&first).len(), 1);
    assert!(
        deactivations(&first)[0].held.is_none(),
        "deprovisions never wait"
    );
    assert!(first.report.safety.actions_waiting >= 1);
    assert_eq!(
        exit_code_for(&first.report),
        exit::OK,
        "waiting is not a hold for a human"
    );
    let text = seatwarden::report::render_text(&first.report, chrono_tz::UTC, "seatwarden", false);
    assert!(
        text.contains("actions wait for the settle window"),
        "{text}"
    );

    let early = env.run(Mode::Reconcile, at(9)).await;
    assert!(early.plan.actions.iter().all(|a| a.held.is_some()));
    let settled = env.run(Mode::Reconcile, at(10)).await;
    crate::fixtures::assert_clean_reconcile(&settled.report);
    assert!(
        env.sandbox
            .snapshot()
            .accounts
            .iter()
            .any(|a| a.user_name.eq_ignore_ascii_case(&hire.user_name))
    );
}

#[test]
fn explain_shows_one_person_from_directory_to_next_run() {
    use seatwarden::model::{
        Account, Action, DriftKind, Identity, LinkMethod, NewLink, Plan, WorkspaceGroup,
    };
    use seatwarden::store::{RunKind, RunStatus};

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [[policy.mapping]]\ngroup = \"Engineering\"\nworkspace_group = \"Engineering\"\nrole = \"Editor\"\n\n\
         [safety]\nprotected_groups = [\"IT Admins\"]\n",
    )
    .unwrap();
    let config =
        Config::load_with_env(&dir.path().join("seatwarden.toml"), Some(HashMap::new())).unwrap();
    let t0 = DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let person = |id: &str, user: &str, groups: &[&str]| Identity {
        id: id.into(),
        user_name: user.into(),
        email: Some(user.to_uppercase()),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        display_name: None,
        status: IdentityStatus::Active,
        department: Some("R&D".into()),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    let directory = DirectorySnapshot {
        identities: vec![
            person("p1", "ada@example.com", &["Taskade Users", "Engineering"]),
            person("p2", "root@example.com", &["Taskade Users", "IT Admins"]),
        ],
        complete: true,
    };
    let account = |id: &str, user: &str, roles: &[&str]| Account {
        id: id.into(),
        user_name: user.into(),
        external_id: Some(format!("p{}", &id[1..])),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        display_name: None,
        email: Some(user.into()),
        active: true,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    let workspace = WorkspaceSnapshot {
        accounts: vec![
            account("a1", "ada@example.com", &["Viewer"]),
            account("a2", "root@example.com", &["Owner"]),
        ],
        groups: vec![WorkspaceGroup {
            id: "g1".into(),
            display_name: "Engineering".into(),
            members: vec![],
        }],
    };
    let mut store = Store::open(&config.state.path).unwrap();
    let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
    store.save_directory_snapshot(run, &directory).unwrap();
    store.save_workspace_snapshot(run, &workspace).unwrap();
    store
        .upsert_links(
            &[NewLink {
                identity_id: "p1".into(),
                account_id: "a1".into(),
                method: LinkMethod::UserName,
            }],
            t0,
        )
        .unwrap();
    let action = |seq: u32, kind: ActionKind, held: Option<HoldReason>| Action {
        seq,
        kind,
        reason: DriftKind::RoleDrift,
        subject: "ada@example.com".into(),
        identity_id: Some("p1".into()),
        detail: "role Viewer should be Editor".into(),
        held,
    };
    let plan = Plan {
        actions: vec![
            action(
                0,
                ActionKind::UpdateAttributes {
                    account_id: "a1".into(),
                    changes: vec![],
                },
                None,
            ),
            action(
                1,
                ActionKind::SetRole {
                    account_id: "a1".into(),
                    from: vec!["Viewer".into()],
                    to: Role::Editor,
                },
                Some(HoldReason::Settling {
                    first_seen: t0,
                    settles_at: t0 + Duration::minutes(10),
                }),
            ),
        ],
        ..Plan::default()
    };
    store.save_plan(run, &plan, t0).unwrap();
    store.mark_in_flight(run, 0, t0).unwrap();
    store
        .mark_failed(run, 0, t0, "HTTP 503 from PATCH /Users/a1")
        .unwrap();
    store
        .finish_run(run, t0 + Duration::seconds(3), RunStatus::Succeeded, None)
        .unwrap();

    let text = seatwarden::explain::explain(&config, &store, "ADA@example.com", t0).unwrap();
    insta::assert_snapshot!(text);
    let by_id = seatwarden::explain::explain(&config, &store, "p1", t0).unwrap();
    assert_eq!(
        by_id.lines().skip(1).collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>()
    );
    let live = seatwarden::explain::explain_with(
        &config,
        &store,
        "p1",
        t0,
        Some(&Ok(Some(account("a1", "ada@example.com", &["Editor"])))),
    )
    .unwrap();
    assert!(
        live.contains(
            "Workspace account now (read live)\n  a1 ada@example.com active=true roles=Editor"
        ),
        "{live}"
    );
    assert_eq!(
        seatwarden::explain::live_target(&store, &config, "ada@example.com", t0).unwrap(),
        Some(seatwarden::explain::LiveTarget::Id("a1".into()))
    );
    let protected = seatwarden::explain::explain(&config, &store, "root@example.com", t0).unwrap();
    assert!(protected.contains("protected: yes"), "{protected}");
    assert!(matches!(
        seatwarden::explain::explain(&config, &store, "nobody", t0),
        Err(seatwarden::explain::ExplainError::NotFound { .. })
    ));
}

#[test]
fn the_binary_audits_resume_and_explains_its_errors() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seatwarden.toml");
    std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
    std::fs::write(
        &config,
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
         [workspace]\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_seatwarden"));
        command
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("USER", "auditor");
        command.output().unwrap()
    };
    let help = run(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "approve",
        "reject",
        "resume",
        "explain",
        "5  source fault",
        "6  the circuit",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }

    let out = run(&["resume", "--no-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already closed"));
    let out = run(&["approve", "42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no run 42"));
    // A kind that does not exist is a usage error, refused before the database.
    let out = run(&["approve", "42", "--only", "everything"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(seatwarden::cli::exit::USAGE))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--only takes"));
    let out = run(&["explain", "ada@example.com"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run has stored snapshots"));

    let store = Store::open(&dir.path().join("seatwarden.db")).unwrap();
    let audit = store.audit().unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].command, "resume");
    assert_eq!(audit[0].user, "auditor");
}

/// The binary against an empty sandbox workspace and a directory file: the
/// sandbox, the directory holding `seatwarden.toml` (with `extra` appended), and
/// how to write the people of the directory file.
struct BinarySetup {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl BinarySetup {
    async fn start(extra: &str) -> BinarySetup {
        let sandbox = crate::fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("seatwarden.toml");
        std::fs::write(
            &config,
            format!(
                "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
                 [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n{extra}",
                sandbox.base_url()
            ),
        )
        .unwrap();
        BinarySetup {
            sandbox,
            dir,
            config,
        }
    }

    fn people(&self, names: &[&str]) {
        let users: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({"id": n, "userName": format!("{n}@example.com"), "status": "active"}))
            .collect();
        std::fs::write(
            self.dir.path().join("directory.json"),
            serde_json::json!({ "users": users }).to_string(),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }
}

/// A reconcile that holds actions for a human exits 3 and says, on stderr, which
/// commands decide on them, in the form people run them here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_reconcile_says_how_to_approve_it() {
    let setup = BinarySetup::start(
        "[safety]\nsettle = \"0s\"\nmax_deprovisions = 0\nmax_directory_shrink_percent = 100\n\
         [report]\nadmin_command = \"sudo seatwarden-admin\"\n",
    )
    .await;
    setup.people(&["ada", "ben", "cy"]);
    let first = setup.run(&["reconcile"]);
    assert_eq!(first.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&first.stderr).contains("approve"));
    setup.people(&["ada", "ben"]);
    let held = setup.run(&["reconcile"]);
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert_eq!(held.status.code(), Some(i32::from(exit::HELD)), "{stderr}");
    assert!(
        stderr.contains("`sudo seatwarden-admin approve 2`")
            && stderr.contains("`sudo seatwarden-admin reject 2`")
            && stderr.contains("`sudo seatwarden-admin report --run 2`"),
        "{stderr}"
    );
    // `reconcile | head`: the reader went away before the report was printed. The
    // exit code and the hint still say that actions wait.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(&setup.config)
        .arg("reconcile")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert_eq!(
        closed.status.code(),
        Some(i32::from(exit::HELD)),
        "{stderr}"
    );
    assert!(
        stderr.contains("`sudo seatwarden-admin approve 3`"),
        "{stderr}"
    );
    setup.sandbox.shutdown().await;
}

/// The exit codes scripts rely on, from the binary: `plan` on a rejected
/// directory is 5 (with or without `--detailed-exitcode`, which would otherwise say
/// 0, "in sync"), and `approve` while the breaker is open is 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_on_a_source_fault_exits_5_and_approve_with_the_breaker_open_exits_6() {
    let setup = BinarySetup::start(
        "[safety]\nsettle = \"0s\"\nmax_deprovisions = 0\nmax_directory_shrink_percent = 100\n",
    )
    .await;
    let people = ["ada", "ben", "cy"];
    let directory = |names: &[&str]| setup.people(names);
    let run = |args: &[&str]| setup.run(args).status.code();
    let dir = &setup.dir;
    directory(&people);
    assert_eq!(run(&["plan", "--detailed-exitcode"]), Some(2));
    directory(&[]);
    assert_eq!(run(&["plan", "--detailed-exitcode"]), Some(5));
    assert_eq!(run(&["plan"]), Some(5));
    directory(&people);
    assert_eq!(run(&["plan"]), Some(0));
    assert_eq!(run(&["reconcile"]), Some(0));
    // Cy's deactivation is held for a human.
    directory(&people[..2]);
    assert_eq!(run(&["reconcile"]), Some(3));

    let mut store = Store::open(&dir.path().join("seatwarden.db")).unwrap();
    let reconcile = store
        .latest_run(&[seatwarden::store::RunKind::Reconcile])
        .unwrap()
        .unwrap()
        .id;
    store
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(chrono::Utc::now()),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    drop(store);
    assert_eq!(run(&["approve", &reconcile.to_string()]), Some(6));
    setup.sandbox.shutdown().await;
}

/// Blocks until `/proc/locks` lists `pid` as waiting for a lock: the child is
/// parked in flock, not merely about to be. Panics if it exits first.
fn wait_until_blocked_on_a_lock(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        // "1: -> FLOCK  ADVISORY  WRITE <pid> <dev:inode> 0 EOF" for a waiter.
        let waiting = locks.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"->") && fields.get(5) == Some(&pid.as_str())
        });
        if waiting {
            return;
        }
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "exited without waiting for the lock: {exited:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "never waited for the lock:\n{locks}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A reconcile run by hand while a daemon job writes waits for it (the writer
/// lock), rather than resolving the job's in-flight journal rows as if a dead
/// process had left them and sending them again. It says so on stderr; until the
/// lock is released it has begun no run and written nothing, then it does its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_run_by_hand_waits_for_the_writer_lock() {
    use std::io::BufRead;
    // An empty workspace: the reconcile has every account to create.
    let env = env_with(10, Some(WorkspaceSnapshot::default()), "").await;
    let held = seatwarden::store::WriterLock::acquire_blocking(&env.config.state.path, |_| {
        panic!("nobody else holds it")
    })
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(env._dir.path().join("seatwarden.toml"))
        .arg("reconcile")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Nothing says a daemon holds it: a second command run by hand does too.
    let waiting = "another seatwarden process holds the state database's writer lock";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains(waiting) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "no {waiting:?} on stderr ({e}); exit: {:?}",
                child.try_wait()
            ),
        }
    }
    // Not a pause long enough to hope a reconcile going on regardless would have
    // shown itself: the child is seen parked on the lock, and whatever it did before
    // is on record. The lock comes first, so nothing at all, not even a read, has
    // reached the workspace.
    wait_until_blocked_on_a_lock(&mut child);
    assert_eq!(
        env.sandbox.stats().requests,
        0,
        "nothing sent while waiting: {:?}",
        env.sandbox.stats()
    );
    assert_eq!(
        env.store().latest_run(&[]).unwrap(),
        None,
        "no run begun while waiting"
    );

    drop(held);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        env.sandbox.stats().writes >= 10,
        "{:?}",
        env.sandbox.stats()
    );
    let run = env.store().latest_run(&[]).unwrap().unwrap();
    assert_eq!(
        run.status,
        seatwarden::store::RunStatus::Succeeded,
        "{run:?}"
    );
}

/// `seatwarden resume` waits for a job that is writing (the writer lock), as its
/// docs say: that job records the breaker when it ends, which would undo a resume
/// made under it. Once the lock is free it closes the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_waits_for_the_writer_lock() {
    use std::io::BufRead;
    let env = env_with(10, None, "").await;
    env.store()
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(Utc::now()),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    let held = seatwarden::store::WriterLock::acquire_blocking(&env.config.state.path, |_| {
        panic!("nobody else holds it")
    })
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(env._dir.path().join("seatwarden.toml"))
        .args(["resume", "--no-run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    // Nothing says a daemon holds it: a second command run by hand does too.
    let waiting = "another seatwarden process holds the state database's writer lock";
    loop {
        match seen.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.contains(waiting) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "no {waiting:?} on stderr ({e}); exit: {:?}",
                child.try_wait()
            ),
        }
    }
    // Seen parked on the lock rather than given a while: a resume that went on
    // regardless has closed the breaker or exited by the time it waits on anything.
    wait_until_blocked_on_a_lock(&mut child);
    assert!(env.store().circuit().unwrap().opened_at.is_some());

    drop(held);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(env.store().circuit().unwrap().opened_at, None);

    // With its reconcile: the lock is let go first, or the reconcile waits on it.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(env._dir.path().join("seatwarden.toml"))
        .arg("resume")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("resume did not finish: its reconcile waits for its own lock");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let run = env
        .store()
        .latest_run(&[seatwarden::store::RunKind::Reconcile])
        .unwrap()
        .unwrap();
    assert_eq!(run.status, seatwarden::store::RunStatus::Succeeded);
}

/// Two accounts carry Ada's email: the match is disputed and nothing is done for
/// her. `seatwarden link` says which account is hers; the next plan updates that
/// one and still leaves the other alone. A link either side already has is only
/// moved with `--replace`; every link is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_resolves_a_disputed_match() {
    use std::process::Command;
    let account = |id: &str, user_name: &str| Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: None,
        email: Some("ada@example.com".into()),
        active: true,
        roles: vec!["Viewer".into()],
    };
    let sandbox = crate::fixtures::sandbox(
        "t0ken",
        WorkspaceSnapshot {
            accounts: vec![
                account("w1", "ada.l@example.com"),
                account("w2", "ada.lovelace@example.com"),
            ],
            groups: Vec::new(),
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.json"),
        serde_json::json!({"users": [
            {"id": "00u1", "userName": "ada@example.com", "email": "ada@example.com", "status": "active"},
            {"id": "00u2", "userName": "ben@example.com", "email": "ben@example.com", "status": "active"}
        ]})
        .to_string(),
    )
    .unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &path,
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t0ken\"\n[safety]\nsettle = \"0s\"\n",
            sandbox.base_url()
        ),
    )
    .unwrap();
    let config = Config::load_with_env(&path, Some(HashMap::new())).unwrap();
    let plan = || async {
        run::execute(
            &config,
            Store::open(&config.state.path).unwrap(),
            Mode::Plan,
        )
        .await
        .unwrap()
        .plan
    };
    let touches = |plan: &seatwarden::model::Plan, id: &str| {
        plan.actions
            .iter()
            .any(|a| format!("{:?}", a.kind).contains(&format!("{id:?}")))
    };
    let disputed = plan().await;
    assert!(!touches(&disputed, "w1") && !touches(&disputed, "w2"));
    assert!(
        disputed
            .drift
            .iter()
            .any(|d| d.kind == DriftKind::DisputedMatch),
        "{:#?}",
        disputed.drift
    );

    let link = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(&path)
            .arg("link")
            .args(args)
            .output()
            .unwrap()
    };
    let out = link(&["00u1", "w1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved = plan().await;
    assert!(touches(&resolved, "w1"), "{:#?}", resolved.actions);
    assert!(!touches(&resolved, "w2"), "{:#?}", resolved.actions);

    // Ben's link may not take Ada's account without --replace.
    let out = link(&["00u2", "w1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));
    let out = link(&["00u9", "w1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the newest directory snapshot"));
    let out = link(&["00u2", "w1", "--replace"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&config.state.path).unwrap();
    let links: Vec<(String, String)> = store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect();
    assert_eq!(links, [("00u2".to_owned(), "w1".to_owned())]);
    let audit: Vec<String> = store
        .audit()
        .unwrap()
        .into_iter()
        .filter(|a| a.command == "link")
        .map(|a| a.detail)
        .collect();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit[1].contains("replaced identity 00u1"), "{audit:?}");
    sandbox.shutdown().await;
}

#[test]
fn safety_keys_default_as_documented_and_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.toml");
    let base = "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
                [workspace]\nurl = \"https://x.example/scim/v2\"\ntoken = \"t\"\n";
    std::fs::write(&path, base).unwrap();
    let env = HashMap::from([(
        "SEATWARDEN__SAFETY__PROTECTED_GROUPS".to_owned(),
        "IT Admins,Security".to_owned(),
    )]);
    let config = Config::load_with_env(&path, Some(env)).unwrap();
    let s = &config.safety;
    assert_eq!(
        (
            s.max_deprovisions,
            s.max_deprovisions_per_day,
            s.max_membership_removals
        ),
        (25, 50, 100)
    );
    assert_eq!(
        (s.max_role_downgrades, s.min_population_for_percent),
        (10, 100)
    );
    assert_eq!(
        (s.max_renames, s.max_rename_percent, s.max_renames_per_day),
        (25, 5.0, 50)
    );
    assert_eq!(s.max_directory_shrink_percent, 20.0);
    assert_eq!(config.settle(), std::time::Duration::from_secs(600));
    assert_eq!(s.protected_groups, ["IT Admins", "Security"]);
    let circuit = config.circuit_settings();
    assert_eq!(circuit.failure_ratio, 0.5);
    assert_eq!(circuit.window, 20);
    assert_eq!(circuit.cool_down, std::time::Duration::from_secs(900));

    for (section, key) in [
        ("[safety]\nsettle = \"soon\"\n", "safety.settle"),
        (
            "[safety]\nmax_directory_shrink_percent = 120\n",
            "safety.max_directory_shrink_percent",
        ),
        (
            "[safety]\nmax_rename_percent = -1\n",
            "safety.max_rename_percent",
        ),
        (
            "[safety.circuit]\nfailure_ratio = 0\n",
            "safety.circuit.failure_ratio",
        ),
        ("[safety.circuit]\nwindow = 0\n", "safety.circuit.window"),
        (
            "[safety.circuit]\ncool_down = \"later\"\n",
            "safety.circuit.cool_down",
        ),
    ] {
        std::fs::write(&path, format!("{base}{section}")).unwrap();
        let error = Config::load_with_env(&path, Some(HashMap::new()))
            .unwrap_err()
            .to_string();
        assert!(error.contains(key), "{key}: {error}");
    }
}

/// The links a plan matched, as stored after the run: identity → account.
fn stored_links(env: &Env) -> HashMap<String, String> {
    env.store()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| (l.identity_id, l.account_id))
        .collect()
}

#[tokio::test]
async fn matched_links_are_stored_except_to_accounts_the_run_deletes() {
    let mut env = env_with(60, None, "").await;
    env.deprovision_by_deleting("0s");
    let left = env.leave(2);

    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(outcome.report.summary.actions_failed, 0);
    let deleted: Vec<&str> = outcome
        .plan
        .runnable()
        .filter_map(|a| match &a.kind {
            ActionKind::Delete { account_id, .. } => Some(account_id.as_str()),
            _ => None,
        })
        .collect();
    // A first run matches everyone, the two leavers included, whose accounts it
    // deletes (with the orphaned ones).
    for identity in &left {
        let link = outcome
            .plan
            .new_links
            .iter()
            .find(|l| &l.identity_id == identity)
            .unwrap();
        assert!(deleted.contains(&link.account_id.as_str()), "{link:?}");
    }
    let stored = stored_links(&env);
    for link in &outcome.plan.new_links {
        if deleted.contains(&link.account_id.as_str()) {
            assert_eq!(stored.get(&link.identity_id), None, "{link:?}");
        } else {
            assert_eq!(stored.get(&link.identity_id), Some(&link.account_id));
        }
    }
    assert!(stored.len() > 50, "{}", stored.len());
    let again = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert!(again.plan.is_empty(), "{:#?}", again.plan.actions);
}

/// A delete the workspace refused keeps its link: without it the account, whose
/// person is gone from the directory, would be an orphan that `report` leaves
/// alone, and nothing would deprovision it again.
#[tokio::test]
async fn a_delete_that_failed_keeps_its_link_and_is_redone() {
    let mut env = env_with(60, None, "").await;
    env.deprovision_by_deleting("0s");
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let left = env.leave(2);
    env.data
        .directory
        .identities
        .retain(|i| !left.contains(&i.id));
    let directory = env.data.directory.clone();
    env.write_directory(&directory);
    let accounts: Vec<String> = left
        .iter()
        .map(|id| stored_links(&env).get(id).cloned().unwrap())
        .collect();

    env.sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let refused = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(refused.report.summary.actions_failed, 2, "the two deletes");
    let stored = stored_links(&env);
    for (identity, account) in left.iter().zip(&accounts) {
        assert_eq!(stored.get(identity), Some(account), "{identity}");
    }

    env.sandbox.set_faults(Faults::default());
    let redone = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert_eq!(redone.report.summary.actions_failed, 0);
    let remaining = env.sandbox.snapshot();
    for account in &accounts {
        assert!(
            !remaining.accounts.iter().any(|a| &a.id == account),
            "{account} was not deleted"
        );
    }
}

#[tokio::test]
async fn matched_links_are_stored_when_the_open_circuit_writes_nothing() {
    let mut env = env_with(40, None, "").await;
    env.leave(1);
    env.store()
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(Utc::now()),
            reason: Some("a test opened it".into()),
            failures: Vec::new(),
        })
        .unwrap();
    let writes = env.sandbox.stats().writes;

    let outcome = env.run(Mode::Reconcile, RunOptions::default()).await;
    assert!(outcome.report.safety.circuit.is_some());
    assert!(outcome.plan.runnable().next().is_some());
    assert_eq!(env.sandbox.stats().writes, writes, "nothing written");
    let stored = stored_links(&env);
    assert!(!outcome.plan.new_links.is_empty());
    for link in &outcome.plan.new_links {
        assert_eq!(stored.get(&link.identity_id), Some(&link.account_id));
    }
}

/// `deprovision.delete_after`: a leaver's account is deactivated at once (same-day
/// deprovisioning) and deleted only once it has been seen deactivated for the
/// retention period. An account push SCIM deactivated before seatwarden saw the
/// person go is on the same clock, and its deletion, which takes no access away,
/// opens no deprovisioning episode (one held past its SLA would alert).
#[tokio::test]
async fn deletion_waits_for_the_retention_period_and_opens_no_ledger_episode() {
    let mut env = env_with(60, None, "").await;
    env.deprovision_by_deleting("30d");
    env.run(Mode::Reconcile, RunOptions::default()).await;
    // The synthetic workspace holds leavers' deactivated accounts already: their
    // clocks started with this first run, a moment before `t0`.
    let earlier = env.store().deactivated_since().unwrap();
    assert!(!earlier.is_empty());
    let left = env.leave(2);
    let links = stored_links(&env);
    let accounts: Vec<String> = left.iter().map(|id| links[id].clone()).collect();
    env.client(0).set_active(&accounts[1], false).await.unwrap();

    let t0 = Utc::now();
    let at = |offset: chrono::TimeDelta| RunOptions {
        now: Some(t0 + offset),
        ..RunOptions::default()
    };
    let by_account = |mut kinds: Vec<ActionKind>| {
        kinds.sort_by_key(|k| k.account_id().map(str::to_owned));
        kinds
    };
    let runnable = |outcome: &RunOutcome| {
        by_account(outcome.plan.runnable().map(|a| a.kind.clone()).collect())
    };
    let deletes = |accounts: &[(&String, DateTime<Utc>)]| {
        by_account(
            accounts
                .iter()
                .map(|(account, since)| ActionKind::Delete {
                    account_id: (*account).clone(),
                    deactivated_since: Some(*since),
                    frees_user_name: None,
                })
                .collect(),
        )
    };
    let hour = chrono::TimeDelta::hours(1);
    let days = chrono::TimeDelta::days;

    let first = env
        .run(Mode::Reconcile, at(chrono::TimeDelta::zero()))
        .await;
    assert_eq!(
        runnable(&first),
        [ActionKind::Deactivate {
            account_id: accounts[0].clone()
        }]
    );
    let episodes = |env: &Env| -> Vec<String> {
        env.store()
            .current_deprovisions()
            .unwrap()
            .into_iter()
            .map(|e| e.identity_id)
            .collect()
    };
    assert_eq!(episodes(&env), [left[0].clone()]);
    let second = env.run(Mode::Reconcile, at(hour)).await;
    assert!(second.plan.is_empty(), "{:#?}", second.plan.actions);
    let mut clocks = earlier.clone();
    clocks.insert(accounts[0].clone(), t0 + hour);
    clocks.insert(accounts[1].clone(), t0);
    assert_eq!(env.store().deactivated_since().unwrap(), clocks);
    let status = seatwarden::daemon::status::collect(
        &env.store(),
        t0 + hour,
        seatwarden::daemon::status::Settings {
            tz: chrono_tz::UTC,
            delete_after: env.config.delete_after(),
            cool_down: std::time::Duration::from_secs(900),
            database: None,
            schedule: None,
            admin_command: "seatwarden".into(),
            resolve_after: None,
            certificates: Vec::new(),
            exceptions: Vec::new(),
        },
    )
    .unwrap();
    let deletions = status.deletions.as_ref().unwrap();
    assert_eq!(deletions.awaiting, clocks.len());
    let first_due = *clocks.values().min().unwrap() + days(30);
    assert_eq!(deletions.next_due, Some(first_due));
    let text = seatwarden::daemon::status::render_text(&status);
    assert!(
        text.contains(&format!(
            "Deactivated accounts awaiting deletion: {} (the first is due {})",
            clocks.len(),
            first_due.format("%Y-%m-%d %H:%M UTC")
        )),
        "{text}"
    );
    let text =
        seatwarden::explain::explain(&env.config, &env.store(), &left[0], t0 + days(30) + hour)
            .unwrap();
    let due = (t0 + hour + days(30)).format("%Y-%m-%d %H:%M:%S UTC");
    assert!(
        text.contains(&format!("deleted from {due} (deprovision.delete_after)")),
        "{text}"
    );
    assert!(text.contains("past the retention of 30 days"), "{text}");
    // A rejected directory (shrunk past the limit) plans nothing, and must not
    // take that for "nobody is waiting for deletion".
    let mut shrunk = env.data.directory.clone();
    shrunk.identities.truncate(5);
    env.write_directory(&shrunk);
    let rejected = env.run(Mode::Reconcile, at(hour * 2)).await;
    assert!(rejected.plan.is_empty());
    assert_eq!(env.store().deactivated_since().unwrap(), clocks);
    let directory = env.data.directory.clone();
    env.write_directory(&directory);

    let not_yet = env.run(Mode::Reconcile, at(days(30) - hour)).await;
    assert!(not_yet.plan.is_empty(), "{:#?}", not_yet.plan.actions);
    let due = env.run(Mode::Reconcile, at(days(30))).await;
    let mut expected: Vec<(&String, DateTime<Utc>)> =
        earlier.iter().map(|(a, t)| (a, *t)).collect();
    expected.push((&accounts[1], t0));
    assert_eq!(runnable(&due), deletes(&expected));
    assert_eq!(due.report.summary.actions_failed, 0);
    let remaining = env.sandbox.snapshot();
    assert!(!remaining.accounts.iter().any(|a| a.id == accounts[1]));
    assert!(remaining.accounts.iter().any(|a| a.id == accounts[0]));
    assert_eq!(episodes(&env), [left[0].clone()], "the delete opened none");

    let later = env.run(Mode::Reconcile, at(days(30) + hour)).await;
    assert_eq!(runnable(&later), deletes(&[(&accounts[0], t0 + hour)]));
    let done = env.run(Mode::Reconcile, at(days(30) + hour * 2)).await;
    assert!(done.plan.is_empty(), "{:#?}", done.plan.actions);
    assert!(env.store().deactivated_since().unwrap().is_empty());
}

/// A held deletion after the retention period (the backlog of a layoff, over the
/// deletion limit) is approved later: by then the person may be back, or gone
/// again with a new clock. `approve` refuses both rather than delete an account
/// that is in use, or one whose retention has not passed since.
#[tokio::test]
async fn approve_refuses_a_held_retention_delete_once_the_person_is_back() {
    let mut env = env_with(60, None, "max_deletions = 0\nsettle = \"0s\"\n").await;
    env.deprovision_by_deleting("30d");
    env.run(Mode::Reconcile, RunOptions::default()).await;
    let left = env.leave(1);
    let account = stored_links(&env)[&left[0]].clone();
    let t0 = Utc::now();
    let at = |offset: Duration| RunOptions {
        now: Some(t0 + offset),
        ..RunOptions::default()
    };
    env.run(Mode::Reconcile, at(Duration::zero())).await;
    env.run(Mode::Reconcile, at(Duration::hours(1))).await;
    let due = env
        .run(Mode::Reconcile, at(Duration::days(30) + Duration::hours(1)))
        .await;
    let held: Vec<&seatwarden::model::Action> = due
        .plan
        .held()
        .filter(|a| a.kind.account_id() == Some(account.as_str()))
        .collect();
    assert_eq!(held.len(), 1, "{:#?}", due.plan.actions);
    let seq = held[0].seq;
    assert!(matches!(
        held[0].held,
        Some(HoldReason::Threshold {
            class: ActionClass::Deletion,
            ..
        })
    ));
    let client = env.client(3);
    let only = Only::Op("delete".into());
    let approve = || {
        approval::approve(
            &env.config,
            &client,
            env.store(),
            due.run_id,
            &only,
            t0 + Duration::days(31),
        )
    };
    let refused_because = |approval: &approval::Approval, why: &str| {
        !approval.approved.contains(&seq)
            && approval
                .refused
                .iter()
                .any(|(s, because)| *s == seq && because.contains(why))
    };
    let exists = || {
        env.sandbox
            .snapshot()
            .accounts
            .iter()
            .any(|a| a.id == account)
    };

    // Deletion turned off since the run: nothing is deleted by approving it.
    let mut deactivating = env.config.clone();
    deactivating.deprovision.action = seatwarden::plan::DeprovisionAction::Deactivate;
    deactivating.deprovision.delete_after = None;
    let refused = approval::approve(
        &deactivating,
        &client,
        env.store(),
        due.run_id,
        &only,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(refused.approved.is_empty(), "{refused:?}");
    assert!(
        refused_because(&refused, "accounts are not deleted"),
        "{refused:?}"
    );
    assert!(exists());
    // A longer period configured since: not yet due under it.
    let mut longer = env.config.clone();
    longer.deprovision.delete_after = Some("90d".into());
    let refused = approval::approve(
        &longer,
        &client,
        env.store(),
        due.run_id,
        &only,
        t0 + Duration::days(31),
    )
    .await
    .unwrap();
    assert!(refused_because(&refused, "not yet past"), "{refused:?}");
    assert!(exists());

    // The person is back: a reconcile reactivates the account.
    let back = |status: IdentityStatus| {
        let mut directory = env.data.directory.clone();
        for identity in &mut directory.identities {
            if identity.id == left[0] {
                identity.status = status;
            }
        }
        env.write_directory(&directory);
    };
    back(IdentityStatus::Active);
    env.run(Mode::Reconcile, at(Duration::days(31))).await;
    let refused = approve().await.unwrap();
    // That reconcile saw them back and ended their ledger episode: that refuses
    // it before the account (active again) would.
    assert!(refused_because(&refused, "access again"), "{refused:?}");
    assert!(exists());

    // Gone again: deactivated at once, but its retention starts over.
    back(IdentityStatus::Deprovisioned);
    env.run(Mode::Reconcile, at(Duration::days(32))).await;
    let refused = approve().await.unwrap();
    assert!(
        refused_because(&refused, "retention clock restarted"),
        "{refused:?}"
    );
    assert!(exists());
}
