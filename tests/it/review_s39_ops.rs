//! Session 39's review of what the IT engineer who installs seatwarden under
//! systemd or in a container relies on: the health endpoint through a stop, the
//! exit codes scripts read, the configuration's errors and the prune's clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use seatwarden::sandbox::Faults;
use seatwarden::store::{RunKind, RunStatus, Store};

use crate::fixtures::{http_get as get, seatwarden_in as seatwarden};

const TOKEN: &str = "review-s39-token";

/// A daemon killed when the test ends, however it ends.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// Its exit status, once it has exited of itself (within a minute).
    async fn exit(mut self) -> std::process::ExitStatus {
        crate::fixtures::exit_of(self.0.take().unwrap(), "the daemon").await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The daemon's stop takes as long as its running jobs need to finish the
/// writes already sent (at most 30 s). Through it the process is alive and
/// finishing cleanly: `/healthz` must go on answering 200, or a liveness probe
/// (Kubernetes, a container HEALTHCHECK) kills it mid-journal. Here the
/// workspace turns slow as the reconcile writes (each answer takes 12 s), so the
/// stop lasts past three scheduler ticks (a watchdog of 1 s makes a tick 0.5 s:
/// liveness was judged lost 6.5 s after the loop's last tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_200_through_a_long_stop() {
    let sandbox = crate::fixtures::demo_sandbox(
        TOKEN,
        Faults {
            // Slow enough that the run is still writing when the test sees it write.
            latency: Duration::from_millis(300),
            ..Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        TOKEN,
        &[("SEATWARDEN__WORKSPACE__MAX_CONCURRENCY", "1")],
    );
    let log = dir.path().join("daemon.log");
    let mut daemon = Running(Some(
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(dir.path().join("seatwarden.toml"))
            .arg("daemon")
            .env_remove("SEATWARDEN_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("SEATWARDEN__SCHEDULE__RECONCILE", "0 0 1 1 *")
            .env("SEATWARDEN__SCHEDULE__SWEEP", "0 0 1 1 *")
            // Port 0, which no other test can take first.
            .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
            // As systemd sets it (WatchdogSec=1s), without a NOTIFY_SOCKET.
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("WATCHDOG_PID")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "warn,seatwarden=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    while sandbox.stats().writes == 0 {
        assert!(
            Instant::now() < deadline,
            "the reconcile never wrote: {}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // From now on every answer (the write in flight's verification) takes 12 s.
    sandbox.set_faults(Faults {
        latency: Duration::from_secs(12),
        ..Faults::default()
    });
    let port = crate::fixtures::listening_port(daemon.child(), logged).await;
    assert_eq!(get(port, "/healthz").0, 200, "{}", logged());
    crate::fixtures::sigterm(daemon.child());
    let signalled = Instant::now();
    // Past three ticks and the 5 s allowance, well before the answers come.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        daemon.child().try_wait().unwrap().is_none(),
        "the stop was over within 8 s, so this tested nothing: {}",
        logged()
    );
    let (code, body) = get(port, "/healthz");
    assert_eq!(
        (code, body.as_str()),
        (200, "ok: stopping, finishing the writes already sent\n"),
        "{:?} after SIGTERM: {}",
        signalled.elapsed(),
        logged()
    );
    let status = daemon.exit().await;
    assert_eq!(status.code(), Some(0), "{}", logged());
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped, "{}", logged());
}

/// The configuration `text` (written as `seatwarden.toml`) under the
/// environment `env`: its error, as `check-config` prints it after `error: `.
fn config_error(text: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seatwarden.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.path().join("directory.json"), r#"{"users":[]}"#).unwrap();
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    match seatwarden::config::Config::load_with_env(&path, Some(env)) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string().replace(&path.display().to_string(), "FILE"),
    }
}

/// A file without `[report.email]` or `[workspace.role_groups]`, as a container
/// ships it, its email and role groups set by `SEATWARDEN__…` variables.
const CONTAINER_FILE: &str = r#"
[directory]
kind = "file"
path = "directory.json"

[workspace]
url = "https://scim.example.com/scim/v2"
token = "s3cr3t-token-value"
"#;

/// In a container the configuration comes from the file and from
/// `SEATWARDEN__…` variables. A table only variables made (`[report.email]`
/// without its `from`, a role group where roles do not travel by group), or a
/// directory whose `kind` a variable changed, was blamed on the file: people
/// looked there for a table or a `kind` it does not have. The error names the
/// variable.
#[test]
fn an_error_about_a_table_only_variables_made_names_a_variable() {
    let missing_from = config_error(
        CONTAINER_FILE,
        &[
            ("SEATWARDEN__REPORT__EMAIL__SMTP_URL", "smtp://127.0.0.1:25"),
            ("SEATWARDEN__REPORT__EMAIL__TO", "it@example.com"),
        ],
    );
    assert!(
        missing_from.starts_with(
            "environment variable SEATWARDEN__REPORT__EMAIL__SMTP_URL: key `report.email.from`: \
             missing"
        ),
        "{missing_from}"
    );
    let role_group = config_error(
        CONTAINER_FILE,
        &[(
            "SEATWARDEN__WORKSPACE__ROLE_GROUPS__OWNER",
            "Taskade Owners",
        )],
    );
    assert!(
        role_group.starts_with(
            "environment variable SEATWARDEN__WORKSPACE__ROLE_GROUPS__OWNER: key \
             `workspace.role_groups`: only used with workspace.role_attribute = \"groups\""
        ),
        "{role_group}"
    );
    let kind = config_error(CONTAINER_FILE, &[("SEATWARDEN__DIRECTORY__KIND", "okta")]);
    assert!(
        kind.starts_with("FILE: key `directory.path`: unknown field `path`")
            && kind.ends_with(
                "(the keys of a `kind = \"okta\"` directory, as environment variable \
                 SEATWARDEN__DIRECTORY__KIND sets it)"
            ),
        "{kind}"
    );
    // The file's own tables stay the file's.
    let in_the_file = config_error(
        &format!("{CONTAINER_FILE}\n[report.email]\nsmtp_url = \"smtp://127.0.0.1:25\"\n"),
        &[("SEATWARDEN__REPORT__EMAIL__TO", "it@example.com")],
    );
    assert!(
        in_the_file.starts_with("FILE: key `report.email.from`: missing"),
        "{in_the_file}"
    );
}

/// `seatwarden-admin` without a command is a usage error: exit 64 (`EX_USAGE`),
/// as seatwarden's own. It exited 2, which `seatwarden-admin plan
/// --detailed-exitcode` uses for "the plan has changes": a script running
/// `seatwarden-admin $COMMAND` with the variable empty read a plan with changes.
#[cfg(unix)]
#[test]
fn the_admin_helper_without_a_command_exits_64() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // `id -u` says root, as under sudo.
    let id = dir.path().join("id");
    std::fs::write(&id, "#!/bin/sh\necho 0\n").unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/seatwarden-admin"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(seatwarden::cli::exit::USAGE)),
        "{stderr}"
    );
    assert!(
        stderr.starts_with("usage: seatwarden-admin COMMAND"),
        "{stderr}"
    );
}

/// The exit codes a monitoring script reads, from the binary: a reconcile whose
/// deprovision the guard held exits 3; `status` exits 7 once that deprovision is
/// overdue, as text and as JSON; once `approve` applied it (exit 0), `status`
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_then_overdue_then_approved_exit_3_7_0_from_the_binary() {
    let sandbox = crate::fixtures::demo_sandbox(TOKEN, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(
        dir.path(),
        &sandbox,
        TOKEN,
        &[
            ("SEATWARDEN__SAFETY__MAX_DEPROVISIONS", "0"),
            ("SEATWARDEN__DEPROVISION__SLA", "1s"),
        ],
    );
    let run = |args: &'static [&'static str]| {
        let dir = dir.path().to_owned();
        let env = env.clone();
        tokio::task::spawn_blocking(move || seatwarden(&dir, &env, args))
    };
    let (code, stderr) = run(&["reconcile"]).await.unwrap();
    assert_eq!(code, Some(3), "{stderr}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for args in [&["status"][..], &["status", "--format", "json"][..]] {
        let args: &'static [&'static str] = args;
        let (code, stderr) = run(args).await.unwrap();
        assert_eq!(code, Some(7), "{args:?}: {stderr}");
    }
    let (code, stderr) = run(&["approve", "1"]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run(&["status"]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
}

/// A script that sets `SEATWARDEN_LOCK_TIMEOUT` wrong is told so by name: clap's
/// error named only `--lock-timeout`, a flag the script does not pass. Exit 64.
#[test]
fn a_bad_lock_timeout_from_the_environment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "SEATWARDEN_LOCK_TIMEOUT".to_owned(),
        "10 minutes".to_owned(),
    )];
    let (code, stderr) = seatwarden(dir.path(), &env, &["reconcile"]);
    assert_eq!(
        code,
        Some(i32::from(seatwarden::cli::exit::USAGE)),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "invalid duration \"10 minutes\"; use e.g. 30s, 10m, 1h30m, 7d, or 0 to give up at \
             once (given with --lock-timeout or SEATWARDEN_LOCK_TIMEOUT)"
        ),
        "{stderr}"
    );
}
