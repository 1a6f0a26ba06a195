//! Small correctness gaps an operator would trip over: a sweep the stop cut short
//! recorded as stopped, `approve` telling writes kept back from failed ones, group
//! names compared composed (NFC) on both sides.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatwarden::apply::{StopSignal, until_stopped};
use seatwarden::config::Config;
use seatwarden::run::{self, Mode};
use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::{RunKind, RunStatus, Store};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "qa-leftovers-token";

/// The demo's files in `dir` pointed at `sandbox`, one write at a time: the
/// environment (for the binary too) and the configuration loaded with it.
fn demo_env(dir: &Path, sandbox: &Sandbox) -> (Vec<(String, String)>, Config) {
    crate::fixtures::demo_env(
        dir,
        sandbox,
        TOKEN,
        &[("SEATWARDEN__WORKSPACE__MAX_CONCURRENCY", "1")],
    )
}

/// Removes from the demo's directory file in `dir` an active person whose
/// account is active and no Owner (a leaver the sweep may deactivate at once);
/// returns their directory id.
fn remove_a_leaver(dir: &Path, sandbox: &Sandbox) -> String {
    let path = dir.join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut users = full["users"].as_array().unwrap().clone();
    let workspace = sandbox.snapshot();
    let leaver = users
        .iter()
        .position(|user| {
            user["status"].as_str().unwrap_or("active") == "active"
                && workspace.accounts.iter().any(|a| {
                    a.active
                        && a.external_id.as_deref() == user["id"].as_str()
                        && !a.roles.iter().any(|r| r == "Owner")
                })
        })
        .unwrap();
    let id = users.remove(leaver)["id"].as_str().unwrap().to_owned();
    std::fs::write(&path, serde_json::json!({ "users": users }).to_string()).unwrap();
    id
}

/// Every write answered 429 with a `Retry-After` of a minute: a write then waits
/// for its retry, where a stop finds it.
fn writes_refused_for_a_minute() -> Faults {
    Faults {
        rate_429: 1.0,
        retry_after_secs: 60,
        writes_only: true,
        ..Faults::default()
    }
}

/// The demo reconciled once (everyone linked), then one leaver removed from its
/// directory: what a sweep acts on.
async fn demo_with_a_leaver(
    dir: &Path,
    faults: Faults,
) -> (Sandbox, Vec<(String, String)>, Config, String) {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let (env, config) = demo_env(dir, &sandbox);
    run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let leaver = remove_a_leaver(dir, &sandbox);
    sandbox.set_faults(faults);
    (sandbox, env, config, leaver)
}

/// A sweep pass stopped as it writes (its deactivation refused 429, waiting a
/// minute for its retry) sends nothing more; its run is recorded `stopped`, with
/// why, not as a success. (Stopped before its writes, a pass is given up at its
/// first read: see `qa_read_stop`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_the_stop_cut_short_is_recorded_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, _, config, _) =
        demo_with_a_leaver(dir.path(), writes_refused_for_a_minute()).await;
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let stop = StopSignal::new();
    let sweeping = seatwarden::sweep::sweep(
        &config,
        &directory,
        &client,
        &store,
        chrono::Utc::now(),
        chrono::Duration::hours(1),
    );
    let stopping = {
        let stop = stop.clone();
        let sandbox = &sandbox;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while sandbox.stats().faults_429 < 1 {
                assert!(Instant::now() < deadline, "no write was sent");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.stop();
        }
    };
    let ((outcome, unsent), ()) = tokio::join!(until_stopped(stop, sweeping), stopping);
    sandbox.set_faults(Faults::default());
    let outcome = outcome.unwrap();
    assert_eq!(unsent, 1, "{outcome:?}");
    let run = store
        .lock()
        .unwrap()
        .latest_run(&[RunKind::Sweep])
        .unwrap()
        .unwrap();
    assert_eq!(Some(run.id), outcome.run_id);
    assert_eq!(run.status, RunStatus::Stopped, "{run:?}");
    let error = run.error.unwrap_or_default();
    assert!(error.contains("seatwarden was stopping"), "{error}");
    // A sweep's leavers stay due in the ledger: no later run "plans them again".
    assert!(
        error.contains(
            "1 action was not sent, their leavers stay due, and the next sweep or retry pass \
             sends them"
        ),
        "{error}"
    );

    // A pass the stop did not touch is still a success. (A new client: the 429
    // paused this one's requests for a minute.)
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let (outcome, unsent) = until_stopped(
        StopSignal::new(),
        seatwarden::sweep::enforce(
            &config,
            &client,
            &store,
            chrono::Utc::now() + chrono::Duration::minutes(1),
        ),
    )
    .await;
    let outcome = outcome.unwrap();
    assert_eq!((unsent, outcome.enforced), (0, 1), "{outcome:?}");
    let run = store
        .lock()
        .unwrap()
        .latest_run(&[RunKind::Sweep])
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    sandbox.shutdown().await;
}

/// The daemon's SIGTERM while its sweep's deactivation waits a minute for its
/// retry: the sweep's run and its job are recorded `stopped` (not `succeeded`),
/// the log says the job stopped, and `seatwarden status` shows it so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_sweep_stopped_by_sigterm_is_recorded_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, env, config, _) =
        demo_with_a_leaver(dir.path(), writes_refused_for_a_minute()).await;
    // The reconcile and retry jobs ran just now: only the sweep runs at start.
    {
        let mut store = Store::open(&config.state.path).unwrap();
        let now = chrono::Utc::now();
        for job in ["reconcile", "retry"] {
            store.job_started(job, now).unwrap();
            store
                .job_finished(job, now, RunStatus::Succeeded, None)
                .unwrap();
        }
    }
    let (mut child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.stats().faults_429 < 1 {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the sweep never wrote: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    crate::fixtures::sigterm(&child);
    let status = crate::fixtures::exit_of(child, "the daemon").await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("job stopped"), "{log}");

    let store = Store::open(&config.state.path).unwrap();
    let run = store.latest_run(&[RunKind::Sweep]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped, "{run:?}\n{log}");
    let job = store
        .jobs()
        .unwrap()
        .into_iter()
        .find(|job| job.name == "sweep")
        .unwrap();
    assert_eq!(job.last_status, Some(RunStatus::Stopped), "{job:?}\n{log}");
    assert!(
        job.last_success_at.is_none(),
        "a stopped pass is no success: {job:?}"
    );
    drop(store);

    let shown = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .arg("status")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    let sweep_line = shown
        .lines()
        .find(|line| line.trim_start().starts_with("sweep "))
        .unwrap_or_else(|| panic!("no sweep line: {shown}"));
    assert!(
        sweep_line.contains("last run stopped") && sweep_line.contains("seatwarden was stopping"),
        "{sweep_line}"
    );
    sandbox.shutdown().await;
}

/// `seatwarden approve RUN` with `env`, in `dir`.
fn approve_cli(dir: &Path, env: &[(String, String)], run: i64) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(["approve", &run.to_string()])
        .env_remove("SEATWARDEN_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// The demo reconciled once, then six leavers at once: more than its threshold
/// (5), so a reconcile holds their deactivations. The sandbox, the environment,
/// the configuration and the run that holds them.
async fn six_leavers_held(dir: &Path) -> (Sandbox, Vec<(String, String)>, Config, i64) {
    let (sandbox, env, config, _) = demo_with_a_leaver(dir, Faults::default()).await;
    for _ in 0..5 {
        remove_a_leaver(dir, &sandbox);
    }
    let held = run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
    )
    .await
    .unwrap();
    let deactivations = held
        .plan
        .held()
        .filter(|a| matches!(a.kind, seatwarden::model::ActionKind::Deactivate { .. }))
        .count();
    assert_eq!(deactivations, 6, "{:?}", held.plan.actions);
    (sandbox, env, config, held.run_id)
}

/// With the workspace healthy again, `approve RUN` applies the `count` actions
/// still to send, and exits 0.
async fn approve_applies_once_healthy(
    sandbox: &Sandbox,
    dir: &Path,
    env: Vec<(String, String)>,
    run: i64,
    count: usize,
) {
    sandbox.set_faults(Faults::default());
    let output = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || approve_cli(&dir, &env, run))
            .await
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "run {run}: {count} approved ({count} applied, 0 failed)"
        )),
        "{stdout}"
    );
}

/// Six leavers at once pass the demo's threshold (5): their deactivations are
/// held. Approved while the workspace drops every write, the first write finds
/// it down and the other five are kept back: `approve` counts them "not sent",
/// with why, apart from the one that failed, and says the same `approve` sends
/// them, which it does once the workspace takes writes again. Before, all six
/// read "failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_counts_writes_kept_back_as_not_sent_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, mut env, _, run) = six_leavers_held(dir.path()).await;
    sandbox.set_faults(Faults {
        rate_reset: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    env.push(("SEATWARDEN__WORKSPACE__RETRIES".to_owned(), "0".to_owned()));
    let output = {
        let (dir, env) = (dir.path().to_owned(), env.clone());
        tokio::task::spawn_blocking(move || approve_cli(&dir, &env, run))
            .await
            .unwrap()
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(
        output.status.code(),
        Some(seatwarden::cli::exit::FAILED.into()),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "run {run}: 6 approved (0 applied, 1 failed, 5 not sent), 0 obsolete, 0 refused"
        )),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "  5 actions not sent because the workspace stopped answering: never sent, so no \
             failure of theirs; `seatwarden approve {run}` sends them once the workspace takes \
             writes again"
        )),
        "{stdout}\n{stderr}"
    );

    approve_applies_once_healthy(&sandbox, dir.path(), env, run, 5).await;
    sandbox.shutdown().await;
}

/// `approve` exits as a reconcile does: writes kept back unsent, none failed,
/// are work not done (4), never 0, nor 3 when the re-check also refused some.
#[test]
fn approve_exits_4_when_writes_were_kept_back_and_none_failed() {
    use seatwarden::approval::Approval;
    use seatwarden::cli::{approve_exit_code, exit};

    let kept_back = Approval {
        approved: vec![1, 2],
        not_sent: vec![
            (1, "the workspace refused the token"),
            (2, "seatwarden was stopping"),
        ],
        ..Approval::default()
    };
    assert_eq!(approve_exit_code(&kept_back), exit::FAILED);
    let and_refused = Approval {
        refused: vec![(3, "the account is gone".to_owned())],
        ..kept_back
    };
    assert_eq!(approve_exit_code(&and_refused), exit::FAILED);
    let all_applied = Approval {
        approved: vec![1],
        ..Approval::default()
    };
    assert_eq!(approve_exit_code(&all_applied), exit::OK);
}

/// "Ingénierie" with its `é` composed (U+00E9), as most configurations type it.
const COMPOSED: &str = "Ing\u{e9}nierie";
/// The same name as macOS exports and some HR systems write it: `e` + U+0301.
const DECOMPOSED: &str = "Inge\u{301}nierie";
/// A scope group with an accent, composed and decomposed.
const SCOPE_COMPOSED: &str = "\u{c9}quipe";
const SCOPE_DECOMPOSED: &str = "E\u{301}quipe";

/// A file directory of one active person in the groups `groups`, and a
/// configuration whose scope is `scope` and which maps `mapped` to Maintainer
/// in the workspace group "Engineering", against the workspace at `url`.
fn accented_config(dir: &Path, url: &str, groups: [&str; 2], scope: &str, mapped: &str) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        serde_json::json!({"users": [{
            "id": "00u1", "userName": "ines@example.com", "email": "ines@example.com",
            "givenName": "In\u{e8}s", "familyName": "Moreau", "status": "active",
            "groups": groups
        }]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n\n\
             [policy]\nscope_groups = [\"{scope}\"]\ndefault_role = \"Viewer\"\n\n\
             [[policy.mapping]]\ngroup = \"{mapped}\"\nworkspace_group = \"Engineering\"\n\
             role = \"Maintainer\"\n\n[safety]\nsettle = \"0s\"\n"
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

/// A directory that writes a group name decomposed and a configuration that
/// writes it composed (and the other way round) name the same group: the person
/// is in scope, gets the mapped role and the mapped workspace group. Before, the
/// file read failed on the scope group, and with an ASCII scope the person got
/// the default role and no group.
#[tokio::test]
async fn group_names_match_whether_the_accent_is_composed_or_not() {
    use seatwarden::model::{ActionKind, Role};

    let sandbox = crate::fixtures::sandbox(TOKEN, Default::default()).await;
    let url = sandbox.base_url().to_string();
    for (directory, configured) in [
        ([SCOPE_DECOMPOSED, DECOMPOSED], (SCOPE_COMPOSED, COMPOSED)),
        ([SCOPE_COMPOSED, COMPOSED], (SCOPE_DECOMPOSED, DECOMPOSED)),
        // An ASCII scope: only the mapping differs.
        (["Staff", DECOMPOSED], ("Staff", COMPOSED)),
        (["Staff", COMPOSED], ("Staff", DECOMPOSED)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = accented_config(dir.path(), &url, directory, configured.0, configured.1);
        let outcome = run::execute(
            &config,
            Store::open(&config.state.path).unwrap(),
            Mode::Plan,
        )
        .await
        .unwrap_or_else(|e| panic!("{directory:?} against {configured:?}: {e}"));
        let actions = &outcome.plan.actions;
        let role = actions.iter().find_map(|a| match &a.kind {
            ActionKind::CreateAccount { spec, .. } => Some(spec.role),
            _ => None,
        });
        assert_eq!(
            role,
            Some(Some(Role::Maintainer)),
            "{directory:?} against {configured:?}: {actions:#?}"
        );
        assert!(
            actions.iter().any(|a| matches!(&a.kind,
                ActionKind::CreateGroup { display_name } if display_name == "Engineering")),
            "{directory:?} against {configured:?}: {actions:#?}"
        );
    }
    sandbox.shutdown().await;
}

/// Every connector's groups are composed where its read ends
/// (`Directory::snapshot`, `changes_since`), and its checks compare composed
/// names: an Okta org whose scope and mapping groups are named decomposed, read
/// with the configuration's composed names, is not refused for a missing scope
/// group, and its people carry the composed names policy compares.
#[tokio::test]
async fn an_okta_groups_decomposed_names_are_read_composed() {
    use seatwarden::directory::{Directory, DirectoryChanges, OktaAuth, OktaSource, Secret};

    let server = wiremock::MockServer::start().await;
    let mut org = crate::okta::small_org(crate::okta::LinkStyle::Joined);
    org.groups = vec![
        (
            crate::okta::okta_group("00g1", SCOPE_DECOMPOSED),
            vec!["00u1".to_owned(), "00u2".to_owned()],
        ),
        (
            crate::okta::okta_group("00g2", DECOMPOSED),
            vec!["00u1".to_owned()],
        ),
    ];
    org.mount(&server).await;
    let mut settings = crate::okta::settings(
        &server,
        OktaAuth::Ssws(Secret::Inline(
            "00a-ssws-test-token-value".to_owned().into(),
        )),
    );
    settings.scope_groups = vec![SCOPE_COMPOSED.to_owned()];
    settings.other_groups = vec![COMPOSED.to_owned()];
    let directory = Directory::Okta(OktaSource::new(settings));
    let snapshot = directory.snapshot().await.unwrap();
    let ada = snapshot.identities.iter().find(|i| i.id == "00u1").unwrap();
    let mut groups = ada.groups.clone();
    groups.sort();
    assert_eq!(
        groups,
        [COMPOSED, SCOPE_COMPOSED],
        "{:?}",
        snapshot.identities
    );
    let DirectoryChanges::Full { snapshot, .. } = directory.changes_since(None).await.unwrap()
    else {
        panic!("a first read is whole");
    };
    let ada = snapshot.identities.iter().find(|i| i.id == "00u1").unwrap();
    assert!(ada.groups.iter().any(|g| g == COMPOSED), "{ada:?}");
}

/// SIGTERM while `approve` re-checks, its listing of the workspace refused 429
/// and waiting a minute for its retry: it gives up at once (143), says nothing
/// was approved or sent, and the held actions stay held, undecided, for the
/// next `approve`, which applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_approve_rechecks_gives_it_up_at_once_with_nothing_decided() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, env, config, run) = six_leavers_held(dir.path()).await;
    let writes = sandbox.stats().writes;
    sandbox.set_faults(Faults {
        rate_429: 1.0,
        retry_after_secs: 60,
        ..Faults::default()
    });
    let log = dir.path().join("approve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.path().join("seatwarden.toml"))
        .args(["approve", &run.to_string()])
        .env_remove("SEATWARDEN_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.stats().faults_429 < 1 {
        assert!(
            Instant::now() < deadline,
            "approve never read the workspace"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signalled = Instant::now();
    crate::fixtures::sigterm(&child);
    let status = crate::fixtures::exit_of(child, "seatwarden approve").await;
    let took = signalled.elapsed();
    let stderr = std::fs::read_to_string(&log).unwrap();
    // Far below the minute the retry waits, with room for a loaded machine to
    // end a process (5 s had little).
    assert!(
        took < Duration::from_secs(15),
        "exited {took:?} after SIGTERM: {stderr}"
    );
    assert_eq!(
        status.code(),
        Some(seatwarden::cli::exit::TERMINATED.into()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "interrupted (SIGTERM): stopped re-checking; nothing was approved and nothing was \
             sent to the workspace; run `seatwarden approve {run}` to approve"
        )),
        "{stderr}"
    );
    assert_eq!(sandbox.stats().writes, writes, "{stderr}");
    let store = Store::open(&config.state.path).unwrap();
    assert!(store.decisions(run).unwrap().is_empty(), "{stderr}");

    approve_applies_once_healthy(&sandbox, dir.path(), env, run, 6).await;
    sandbox.shutdown().await;
}
