//! `seatwarden daemon` as a real process against the in-process sandbox: the sweep
//! deactivates a leaver, verifies it, counts it in /metrics and shows it in
//! `status`; one instance per database; SIGTERM mid-run is a clean stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::Store;

pub(crate) const TOKEN: &str = "daemon-test-token";

pub(crate) struct Daemon {
    pub(crate) child: Child,
    /// The port it listens on, once its start line said it ([`Daemon::port`]).
    port: std::sync::OnceLock<u16>,
    config: PathBuf,
    env: Vec<(String, String)>,
    /// Everything the daemon has logged so far, read from its stderr on a thread
    /// (so a test can wait for a line, and a full pipe never stalls the daemon).
    pub(crate) log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn demo_sandbox(faults: Faults) -> Sandbox {
    crate::fixtures::demo_sandbox(TOKEN, faults).await
}

/// The demo's configuration and directory in `dir`, pointed at `sandbox` through
/// environment overrides (the way containers configure it). The listener on
/// port 0, which no other test can take first: the daemon's start line says
/// the port bound ([`Daemon::port`]).
pub(crate) fn daemon_env(dir: &Path, sandbox: &Sandbox, sweep: &str) -> Vec<(String, String)> {
    crate::fixtures::copy_demo_files(dir);
    [
        ("SEATWARDEN__WORKSPACE__URL", sandbox.base_url().to_string()),
        ("SEATWARDEN__WORKSPACE__TOKEN", TOKEN.to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
        ("SEATWARDEN__SCHEDULE__TIMEZONE", "Europe/Berlin".to_owned()),
        // Never ran: runs once at start (links everyone), then not again.
        ("SEATWARDEN__SCHEDULE__RECONCILE", "0 0 1 1 *".to_owned()),
        ("SEATWARDEN__SCHEDULE__SWEEP", sweep.to_owned()),
        ("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A daemon in `dir` on `sandbox` that takes `token` for `POST /reconcile` and
/// `/status`, its first reconcile done (`/readyz` answers 200). No sweep
/// comes during a test (once a year).
pub(crate) async fn daemon_with_trigger_token(
    dir: &Path,
    sandbox: &Sandbox,
    token: &str,
) -> Daemon {
    let mut env = daemon_env(dir, sandbox, "0 0 1 1 *");
    std::fs::write(dir.join("trigger-token"), format!("{token}\n")).unwrap();
    env.push((
        "SEATWARDEN__HTTP__TRIGGER_TOKEN_FILE".into(),
        "trigger-token".into(),
    ));
    let daemon = start_daemon(dir, env);
    wait_for(
        "the first reconcile (readyz)",
        Duration::from_secs(60),
        || daemon.get("/readyz").0 == 200,
    )
    .await;
    daemon
}

pub(crate) fn start_daemon(dir: &Path, env: Vec<(String, String)>) -> Daemon {
    let config = dir.join("seatwarden.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["--config", config.to_str().unwrap(), "daemon"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn,seatwarden=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    Daemon {
        child,
        port: std::sync::OnceLock::new(),
        config,
        env,
        log,
        reader: Some(reader),
    }
}

impl Daemon {
    /// A command on the daemon's configuration, its listener at the port bound
    /// once known (`healthcheck` asks there).
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        let listen = self.port().map(|port| {
            (
                "SEATWARDEN__HTTP__LISTEN".to_owned(),
                format!("127.0.0.1:{port}"),
            )
        });
        Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .envs(self.env.iter().chain(listen.as_ref()).map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    /// The port it listens on, once it logged its start line.
    pub(crate) fn port(&self) -> Option<u16> {
        if let Some(port) = self.port.get() {
            return Some(*port);
        }
        let port = crate::fixtures::logged_port(&self.log.lock().unwrap())?;
        Some(*self.port.get_or_init(|| port))
    }

    /// The port it listens on, waiting for its start line.
    pub(crate) async fn listening(&mut self) -> u16 {
        if let Some(port) = self.port() {
            return port;
        }
        let log = Arc::clone(&self.log);
        let port =
            crate::fixtures::listening_port(&mut self.child, || log.lock().unwrap().clone()).await;
        *self.port.get_or_init(|| port)
    }

    /// `GET path`; nothing answered (0) before the daemon said where it listens.
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        match self.port() {
            Some(port) => http(port, "GET", path, None),
            None => (0, String::new()),
        }
    }

    /// The configuration file it was started with (a test breaks it to fail a reload).
    pub(crate) fn config_path(&self) -> &Path {
        &self.config
    }

    /// SIGHUP (the shell builtin), then waits until the daemon has logged one
    /// more `configuration reloaded` than before it.
    pub(crate) async fn reload(&self) {
        let reloaded = "configuration reloaded";
        let before = self.log.lock().unwrap().matches(reloaded).count();
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -HUP {}", self.child.id())])
            .status();
        wait_for("the reload", Duration::from_secs(30), || {
            self.log.lock().unwrap().matches(reloaded).count() > before
        })
        .await;
    }

    pub(crate) fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().contains(text)
    }

    /// SIGTERM (the shell builtin, so no procps is needed), then the exit code
    /// and everything the daemon logged.
    pub(crate) fn terminate(mut self) -> (Option<i32>, String) {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(45);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop within 45 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (status.code(), log)
    }
}

pub(crate) fn http(port: u16, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    http_auth(port, method, path, bearer.map(|t| format!("Bearer {t}")))
}

/// [`http`] with the whole `Authorization` value.
fn http_auth(port: u16, method: &str, path: &str, authorization: Option<String>) -> (u16, String) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let auth = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

pub(crate) async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deactivates_a_leaver_verifies_it_and_reports_it() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "* * * * * *");
    let daemon = start_daemon(dir.path(), env);

    // Not listening yet (0), or listening before the first reconcile is done (503).
    let early = daemon.get("/readyz").0;
    assert!(matches!(early, 0 | 503), "not ready yet: {early}");
    wait_for(
        "the first reconcile (readyz)",
        Duration::from_secs(60),
        || daemon.get("/readyz").0 == 200,
    )
    .await;
    assert_eq!(daemon.get("/healthz").0, 200);
    let deactivations_applied = |metrics: &str| {
        metric(
            metrics,
            "seatwarden_actions_total{kind=\"deactivate\",outcome=\"applied\"}",
        )
        .unwrap_or(0.0)
    };
    let metrics = daemon.get("/metrics").1;
    let before = deactivations_applied(&metrics);
    // The first reconcile found the demo's stale access and fixed it: the drift
    // gauges show what is left (what seatwarden never acts on), not what it fixed.
    let drift = |kind: &str| {
        metric(
            &metrics,
            &format!("seatwarden_drift_items{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(drift("stale_access"), Some(0.0), "{metrics}");
    assert_eq!(drift("missing_account"), Some(0.0), "{metrics}");
    assert!(drift("disputed_match").unwrap() > 0.0, "{metrics}");

    // A linked, active person leaves: removed from the directory file.
    let directory_path = dir.path().join("directory.json");
    let mut directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let users = directory["users"].as_array_mut().unwrap();
    let workspace = sandbox.snapshot();
    let position = users
        .iter()
        .position(|u| {
            let id = u["id"].as_str().unwrap();
            u["status"].as_str().unwrap_or("active") == "active"
                && workspace.accounts.iter().any(|a| {
                    // Not an Owner: the Owner paths have their own test below.
                    a.active
                        && a.external_id.as_deref() == Some(id)
                        && !a.roles.iter().any(|r| r == "Owner")
                })
        })
        .expect("an active, provisioned person who is not an Owner");
    let leaver = users.remove(position);
    let user_name = leaver["userName"].as_str().unwrap().to_owned();
    let external_id = leaver["id"].as_str().unwrap().to_owned();
    std::fs::write(&directory_path, directory.to_string()).unwrap();

    let verified = |body: &str| {
        let status: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        status["deprovisions"]["verified_last_24h"]
            .as_array()
            .is_some_and(|lines| {
                lines
                    .iter()
                    .any(|l| l["user_name"] == user_name.as_str() && l["reason"] == "deleted")
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = daemon.get("/status");
        if verified(&body) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{user_name} not verified: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let account = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.external_id.as_deref() == Some(external_id.as_str()))
        .unwrap();
    assert!(!account.active, "the workspace account is deactivated");

    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metric(&metrics, "seatwarden_deprovision_latency_seconds_count").unwrap() >= 1.0,
        "{metrics}"
    );
    // The sweep's deactivation counts like a reconcile's.
    assert_eq!(deactivations_applied(&metrics), before + 1.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "seatwarden_deprovisions_overdue"),
        Some(0.0)
    );
    for finding in [
        "source_fault",
        "workspace_listing_short",
        "allow_over_threshold",
        "protected_by_person",
    ] {
        assert_eq!(
            metric(
                &metrics,
                &format!("seatwarden_safety_finding{{finding=\"{finding}\"}}")
            ),
            Some(0.0),
            "{metrics}"
        );
    }
    assert!(metrics.contains("seatwarden_job_runs_total{job_name=\"sweep\",status=\"succeeded\"}"));

    let status = daemon.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "nothing overdue: {text}");
    assert!(text.contains("0 pending, 0 overdue"), "{text}");
    assert!(text.contains("(times in Europe/Berlin)"), "{text}");

    // POST /reconcile is off without a trigger token.
    let port = daemon.port().unwrap();
    assert_eq!(http(port, "POST", "/reconcile", Some("x")).0, 404);

    // One daemon per database.
    let second = daemon.cli(&["daemon"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // The healthcheck subcommand talks to the same listener.
    assert_eq!(daemon.cli(&["healthcheck"]).status.code(), Some(0));

    // SIGHUP with a broken configuration: logged, the running one kept. (The file
    // stays broken until the daemon is gone: restored earlier, a reload handled
    // late would read the good one.)
    let reload_failed = "configuration reload failed; keeping the running configuration";
    assert!(!daemon.logged(reload_failed));
    let reload_gauge =
        |daemon: &Daemon| metric(&daemon.get("/metrics").1, "seatwarden_config_reload_failed");
    assert_eq!(reload_gauge(&daemon), Some(0.0), "no reload has failed yet");
    let good_config = std::fs::read(&daemon.config).unwrap();
    std::fs::write(&daemon.config, "[workspace\nurl = ").unwrap();
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", daemon.child.id())])
        .status();
    wait_for(
        "the failed reload in the log",
        Duration::from_secs(30),
        || daemon.logged(reload_failed),
    )
    .await;
    assert_eq!(
        daemon.get("/healthz").0,
        200,
        "still running after a bad reload"
    );
    // The daemon's health, not the file's: it runs on the configuration it loaded.
    assert_eq!(
        daemon.cli(&["healthcheck"]).status.code(),
        Some(0),
        "healthy with a broken file on disk"
    );
    // The failure is on /metrics too (alertable), until a reload succeeds.
    assert_eq!(reload_gauge(&daemon), Some(1.0), "after the failed reload");
    std::fs::write(&daemon.config, &good_config).unwrap();
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", daemon.child.id())])
        .status();
    wait_for(
        "the good configuration reloaded",
        Duration::from_secs(30),
        || daemon.logged("configuration reloaded"),
    )
    .await;
    assert_eq!(reload_gauge(&daemon), Some(0.0), "after a good reload");

    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("daemon stopped"), "{log}");
    sandbox.shutdown().await;
}

/// Every metric has its `# HELP`; the counters exist at zero from the start (a
/// series born at its first event breaks `rate()` and `absent()` alerts); and
/// `seatwarden_actions_awaiting_approval` counts the held actions that wait for a
/// human, not those waiting for the settle window, and drops once they are rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_described_counters_start_at_zero_and_held_actions_are_counted() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    // The demo's first reconcile deactivates people: every deprovision is held for
    // a human. Its creates and updates wait for the settle window (no human).
    env.push(("SEATWARDEN__SAFETY__MAX_DEPROVISIONS".into(), "0".into()));
    env.push(("SEATWARDEN__SAFETY__SETTLE".into(), "10m".into()));
    let daemon = start_daemon(dir.path(), env);

    // Right after start, before any job could count anything.
    wait_for("/metrics", Duration::from_secs(30), || {
        daemon.get("/metrics").0 == 200
    })
    .await;
    let (_, metrics) = daemon.get("/metrics");
    let jobs = ["reconcile", "sweep", "retry", "prune", "digest", "mail"];
    for job in jobs {
        for status in ["succeeded", "failed", "stopped"] {
            let series =
                format!("seatwarden_job_runs_total{{job_name=\"{job}\",status=\"{status}\"}}");
            assert!(metric(&metrics, &series).is_some(), "{series}: {metrics}");
        }
        let series = format!("seatwarden_job_skipped_total{{job_name=\"{job}\"}}");
        assert!(metric(&metrics, &series).is_some(), "{series}: {metrics}");
        let series = format!("seatwarden_job_duration_seconds_count{{job_name=\"{job}\"}}");
        assert!(metric(&metrics, &series).is_some(), "{series}: {metrics}");
    }
    // The prune waits for its slot and the digest is not scheduled: still zero.
    for series in [
        "seatwarden_job_runs_total{job_name=\"prune\",status=\"succeeded\"}",
        "seatwarden_job_runs_total{job_name=\"prune\",status=\"failed\"}",
        "seatwarden_job_runs_total{job_name=\"prune\",status=\"stopped\"}",
        "seatwarden_job_skipped_total{job_name=\"digest\"}",
        "seatwarden_job_duration_seconds_count{job_name=\"digest\"}",
        "seatwarden_deprovisions_escalated_total",
        "seatwarden_config_reload_failed",
    ] {
        assert_eq!(metric(&metrics, series), Some(0.0), "{series}: {metrics}");
    }
    for series in [
        "seatwarden_retries_total",
        "seatwarden_run_duration_seconds_count",
        "seatwarden_deprovision_latency_seconds_count",
    ] {
        assert!(metric(&metrics, series).is_some(), "{series}: {metrics}");
    }

    wait_for(
        "the first reconcile (readyz)",
        Duration::from_secs(60),
        || daemon.get("/readyz").0 == 200,
    )
    .await;
    let (_, metrics) = daemon.get("/metrics");
    for name in [
        "seatwarden_job_runs_total",
        "seatwarden_job_skipped_total",
        "seatwarden_actions_total",
        "seatwarden_retries_total",
        "seatwarden_deprovisions_escalated_total",
        "seatwarden_drift_items",
        "seatwarden_safety_finding",
        "seatwarden_actions_awaiting_approval",
        "seatwarden_deprovisions_pending",
        "seatwarden_deprovisions_overdue",
        "seatwarden_circuit_state",
        "seatwarden_job_running",
        "seatwarden_last_success_timestamp_seconds",
        "seatwarden_config_reload_failed",
        "seatwarden_run_duration_seconds",
        "seatwarden_job_duration_seconds",
        "seatwarden_deprovision_latency_seconds",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no # HELP for {name}: {metrics}"
        );
    }

    // The reconcile's own report: which held actions wait for a human.
    let report = daemon.cli(&["report", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let actions = report["actions"].as_array().unwrap();
    let held = |waiting: bool| {
        actions
            .iter()
            .filter(|a| {
                a["outcome"] == "held" && a["waiting"].as_bool().unwrap_or(false) == waiting
            })
            .count()
    };
    let (for_a_human, settling) = (held(false), held(true));
    assert!(for_a_human > 0, "deprovisions held: {report}");
    assert!(
        settling > 0,
        "creates waiting for the settle window: {report}"
    );
    let awaiting = |daemon: &Daemon| {
        metric(
            &daemon.get("/metrics").1,
            "seatwarden_actions_awaiting_approval",
        )
    };
    assert_eq!(awaiting(&daemon), Some(for_a_human as f64), "{report}");

    // Rejected: decided, so nobody is waited for any more (the settle waits stay).
    let run = report["run_id"].as_i64().unwrap().to_string();
    let rejected = daemon.cli(&["reject", &run, "--only", "deprovision"]);
    assert_eq!(
        rejected.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rejected.stderr)
    );
    assert_eq!(awaiting(&daemon), Some(0.0));

    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    sandbox.shutdown().await;
}

/// With `http.listen` on port 0 the system picks the port: the start line logs
/// the one bound, and the daemon answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_line_logs_the_port_actually_bound() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let daemon = start_daemon(dir.path(), env);
    wait_for("the start line", Duration::from_secs(60), || {
        daemon.logged("daemon started")
    })
    .await;
    let port = crate::fixtures::logged_port(&daemon.log.lock().unwrap()).unwrap();
    assert_ne!(port, 0);
    assert_eq!(http(port, "GET", "/healthz", None).0, 200);
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reconcile_needs_the_trigger_token_and_starts_a_run() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with_trigger_token(dir.path(), &sandbox, "s3cret-trigger").await;
    let runs = |daemon: &Daemon| {
        let status: serde_json::Value =
            serde_json::from_slice(&daemon.cli(&["status", "--format", "json"]).stdout).unwrap();
        status["last_reconcile"]["id"].as_i64().unwrap()
    };
    let before = runs(&daemon);
    let port = daemon.port().unwrap();
    // With a token set, /status (which names leavers) takes it too.
    assert_eq!(daemon.get("/status").0, 401);
    let (code, body) = http(port, "GET", "/status", Some("s3cret-trigger"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"deprovisions\""), "{body}");
    assert_eq!(http(port, "POST", "/reconcile", None).0, 401);
    assert_eq!(
        http(port, "POST", "/reconcile", Some("s3cret-trigger!")).0,
        401
    );
    // The scheme is case-insensitive (RFC 9110 §11.1).
    assert_eq!(
        http_auth(
            port,
            "POST",
            "/reconcile",
            Some("bearer s3cret-trigger".into())
        )
        .0,
        202
    );
    wait_for("the triggered reconcile", Duration::from_secs(30), || {
        runs(&daemon) > before
    })
    .await;
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("s3cret-trigger"), "the token is never logged");
    sandbox.shutdown().await;
}

/// A writer lock that cannot be taken fails the job like any other error (status,
/// metrics, readiness), instead of skipping every writing job without a trace;
/// and a job the last daemon left running is marked failed at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_lock_that_cannot_be_taken_fails_the_job_visibly() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let database = dir.path().join("state.db");
    {
        // A sweep cut off when the last daemon was killed.
        let mut store = Store::open(&database).unwrap();
        store
            .job_started("sweep", chrono::Utc::now() - chrono::Duration::hours(1))
            .unwrap();
        // And a digest (not scheduled here, so only that one counts).
        store
            .job_started("digest", chrono::Utc::now() - chrono::Duration::hours(1))
            .unwrap();
    }
    // A directory where the lock file belongs: opening it fails.
    std::fs::create_dir(dir.path().join("state.db.writer")).unwrap();
    let daemon = start_daemon(dir.path(), env);
    let jobs = |daemon: &Daemon| {
        let status: serde_json::Value =
            serde_json::from_slice(&daemon.cli(&["status", "--format", "json"]).stdout)
                .unwrap_or_default();
        status["jobs"].as_array().cloned().unwrap_or_default()
    };
    let job = |jobs: &[serde_json::Value], name: &str| {
        jobs.iter()
            .find(|j| j["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    wait_for(
        "the first reconcile to fail",
        Duration::from_secs(60),
        || job(&jobs(&daemon), "reconcile")["last_status"] == "failed",
    )
    .await;
    let jobs = jobs(&daemon);
    let reconcile = job(&jobs, "reconcile");
    assert!(
        reconcile["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("state.db.writer")),
        "{reconcile}"
    );
    let sweep = job(&jobs, "sweep");
    assert_eq!(sweep["last_status"], "failed", "{sweep}");
    assert!(
        sweep["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("interrupted")),
        "{sweep}"
    );
    let (_, metrics) = daemon.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "seatwarden_job_runs_total{job_name=\"reconcile\",status=\"failed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // The cut-off digest counts as a failed run, as `status` shows it.
    assert_eq!(
        metric(
            &metrics,
            "seatwarden_job_runs_total{job_name=\"digest\",status=\"failed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(daemon.get("/readyz").0, 503);
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    // Nothing was written to the workspace.
    assert_eq!(sandbox.stats().writes, 0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_sends_no_further_write_and_leaves_no_action_in_flight() {
    // Slow enough that the first reconcile is still writing when SIGTERM arrives.
    let sandbox = demo_sandbox(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let daemon = start_daemon(dir.path(), env);
    let writes_before = sandbox.stats().writes;
    // Polled often: SIGTERM goes soon after the first write, with the rest of the
    // run (more writes, each read back) still to come.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.stats().writes == writes_before {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the reconcile's first writes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let config = daemon.config.clone();
    let env = daemon.env.clone();
    let signalled_at = chrono::Utc::now();
    let writes_at_signal = sandbox.stats().writes;
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert!(log.contains("daemon stopped"), "{log}");

    let store = Store::open(&dir.path().join("state.db")).unwrap();
    assert!(
        store.interrupted().unwrap().is_empty(),
        "no action left in flight"
    );
    let run = store
        .latest_run(&[seatwarden::store::RunKind::Reconcile])
        .unwrap()
        .unwrap();
    // Stopped after the writes it had sent, not run to its end: recorded as
    // stopped, which is no failure of the run or of the job.
    assert_eq!(run.status, seatwarden::store::RunStatus::Stopped, "{log}");
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("seatwarden was stopping"), "{error}");
    let job = store
        .jobs()
        .unwrap()
        .into_iter()
        .find(|job| job.name == "reconcile")
        .unwrap();
    assert_eq!(
        job.last_status,
        Some(seatwarden::store::RunStatus::Stopped),
        "{job:?}"
    );
    assert_eq!(job.last_success_at, None, "{job:?}");
    let digest =
        crate::fixtures::day_digest(&store, chrono::Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(digest.period.failed_runs, 0, "{:?}", digest.period);
    // What it applied before the stop was written all the same: the digest counts
    // it from the journal, as no report will.
    let applied = store
        .journal(run.id)
        .unwrap()
        .iter()
        .filter(|row| row.state == seatwarden::store::ActionState::Applied)
        .count();
    assert!(applied > 0);
    assert_eq!(
        (digest.period.runs, digest.period.actions_applied),
        (1, applied),
        "{:?}",
        digest.period
    );
    // The run was still going when the signal came, and recorded its end.
    let finished_at = run.finished_at.unwrap();
    let writes_after = sandbox.stats().writes;
    assert!(
        finished_at > signalled_at,
        "the run finished at {finished_at}, before SIGTERM at {signalled_at}: the signal \
         did not come mid-run (writes: {writes_at_signal} at the signal, {writes_after} after)"
    );

    // Nothing is left half-done, and what was not sent is planned again.
    let plan = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "plan",
            "--detailed-exitcode",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    sandbox.shutdown().await;
}

/// The alerts in `store`'s outbox, oldest first.
fn alerts_in(store: &Store) -> Vec<seatwarden::store::OutboxEntry> {
    store
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|e| e.message.kind == seatwarden::store::OutboxKind::Alert)
        .collect()
}

/// A notifier with email configured (a relay nobody answers at, a 6 h quiet
/// period) and the directory its state database goes in.
fn alerting_notifier() -> (tempfile::TempDir, seatwarden::daemon::notify::Notifier) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("seatwarden.toml");
    std::fs::write(
        &config_path,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://acme.example/scim/v2\"\ntoken = \"t\"\n\
         [report.email]\nsmtp_url = \"smtp://127.0.0.1:9\"\nfrom = \"sw@example.com\"\n\
         to = [\"sec@example.com\"]\nquiet_period = \"6h\"\n",
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &config_path,
        Some(std::collections::HashMap::new()),
    )
    .unwrap();
    let notifier =
        seatwarden::daemon::notify::Notifier::from_config(&config).expect("email configured");
    (dir, notifier)
}

/// Marks every message still waiting in the outbox sent at `at`, as a relay
/// that accepted them would have.
fn delivered(store: &mut seatwarden::store::Store, at: chrono::DateTime<chrono::Utc>) {
    for entry in store.outbox().unwrap() {
        if entry.state == seatwarden::store::OutboxState::Pending {
            store.mark_message_sent(entry.id, at).unwrap();
        }
    }
}

/// Alerts from the deprovisioning ledger as it stands: an overdue deprovision
/// queues one alert (whichever pass escalated it), nothing more inside the quiet
/// period, a reminder after it, and once the deprovision is verified its
/// resolution is queued once.
#[test]
fn overdue_deprovisions_raise_one_alert_and_one_resolution() {
    use chrono::{Duration as Minutes, TimeZone, Utc};
    use seatwarden::sla::{self, Leaver, LossReason};
    use seatwarden::store::{OutboxKind, Store};

    let (dir, notifier) = alerting_notifier();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
    let leaver = Leaver {
        identity_id: "00u1".into(),
        account_id: Some("acc-1".into()),
        user_name: "leaver@example.com".into(),
        reason: LossReason::Deleted,
    };
    let changes = sla::observe(&[], &[leaver], &[], t0, Minutes::hours(1));
    store.update_ledger(&changes, t0).unwrap();

    // Not yet due: nothing.
    notifier.after_deprovisioning(&mut store, t0 + Minutes::minutes(59));
    assert!(alerts_in(&store).is_empty());

    // The sweep may have escalated it in a pass whose job then failed, or while
    // email could not be used: the alert comes from the ledger, not from that pass.
    let at = t0 + Minutes::minutes(61);
    let open = store.open_deprovisions().unwrap();
    store.deprovision_escalated(open[0].id, at).unwrap();
    notifier.after_deprovisioning(&mut store, at);
    notifier.after_deprovisioning(&mut store, at + Minutes::minutes(5));
    let raised = alerts_in(&store);
    assert_eq!(raised.len(), 1, "one alert inside the quiet period");
    assert!(
        raised[0].message.subject.contains("overdue"),
        "{}",
        raised[0].message.subject
    );
    // Still overdue after the quiet period, the alert delivered (no reminder
    // queues behind it while it waits): a reminder.
    delivered(&mut store, at + Minutes::minutes(6));
    notifier.after_deprovisioning(&mut store, at + Minutes::hours(6) + Minutes::minutes(1));
    assert_eq!(
        alerts_in(&store).len(),
        2,
        "a reminder after the quiet period"
    );

    let later = at + Minutes::hours(7);
    store.deprovision_verified(open[0].id, later).unwrap();
    notifier.after_deprovisioning(&mut store, later);
    notifier.after_deprovisioning(&mut store, later + Minutes::minutes(1));
    let resolutions = store
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|m| m.message.kind == OutboxKind::Resolution)
        .count();
    assert_eq!(resolutions, 1);
}

/// A layoff held by a threshold: 300 deprovisions pass their due time together.
/// Operators get one alert naming them all (the list capped), one combined
/// reminder per quiet period, and one combined resolution; a pass inside the quiet
/// period writes nothing to the database; someone who becomes overdue later still
/// alerts at once, alone.
#[test]
fn a_mass_hold_sends_one_overdue_alert_not_one_per_person() {
    use chrono::{Duration as Minutes, TimeZone, Utc};
    use seatwarden::sla::{self, Leaver, LossReason};
    use seatwarden::store::{OutboxEntry, OutboxKind};

    let (dir, notifier) = alerting_notifier();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
    let leaver = |n: usize| Leaver {
        identity_id: format!("00u{n:03}"),
        account_id: Some(format!("acc-{n:03}")),
        user_name: format!("leaver{n:03}@example.com"),
        reason: LossReason::Deleted,
    };
    let layoff: Vec<Leaver> = (0..300).map(leaver).collect();
    let changes = sla::observe(&[], &layoff, &[], t0, Minutes::hours(1));
    store.update_ledger(&changes, t0).unwrap();
    let of_kind = |store: &Store, kind: OutboxKind| -> Vec<OutboxEntry> {
        store
            .outbox()
            .unwrap()
            .into_iter()
            .filter(|m| m.message.kind == kind)
            .collect()
    };

    let at = t0 + Minutes::minutes(61);
    notifier.after_deprovisioning(&mut store, at);
    let alerts = of_kind(&store, OutboxKind::Alert);
    assert_eq!(alerts.len(), 1, "one alert for the whole layoff");
    let alert = &alerts[0].message;
    assert!(
        alert.subject.contains("300 deprovisions are overdue"),
        "{}",
        alert.subject
    );
    assert!(
        alert.text.contains("leaver000@example.com"),
        "{}",
        alert.text
    );
    assert!(alert.text.contains("and 250 more"), "{}", alert.text);
    assert!(
        !alert.text.contains("leaver299@example.com"),
        "{}",
        alert.text
    );

    // Passes inside the quiet period (a job every minute) send nothing and write
    // nothing: another connection sees the database unchanged.
    let watch = rusqlite::Connection::open(&path).unwrap();
    let version = |c: &rusqlite::Connection| -> i64 {
        c.pragma_query_value(None, "data_version", |r| r.get(0))
            .unwrap()
    };
    let before = version(&watch);
    for minute in 62..70 {
        notifier.after_deprovisioning(&mut store, t0 + Minutes::minutes(minute));
    }
    assert_eq!(version(&watch), before, "quiet passes write nothing");
    assert_eq!(of_kind(&store, OutboxKind::Alert).len(), 1);

    // Someone else becomes overdue later: an alert at once, about them alone.
    let late = sla::observe(
        &store.open_deprovisions().unwrap(),
        &[leaver(300)],
        &[],
        t0 + Minutes::minutes(30),
        Minutes::hours(1),
    );
    store
        .update_ledger(&late, t0 + Minutes::minutes(30))
        .unwrap();
    notifier.after_deprovisioning(&mut store, t0 + Minutes::minutes(91));
    let alerts = of_kind(&store, OutboxKind::Alert);
    assert_eq!(alerts.len(), 2);
    assert!(
        alerts[1]
            .message
            .subject
            .contains("deprovision of leaver300@example.com is overdue"),
        "{}",
        alerts[1].message.subject
    );
    assert!(
        alerts[1].message.text.contains("300 more overdue"),
        "{}",
        alerts[1].message.text
    );

    // After the quiet period, the alerts delivered (no reminder queues behind
    // one still waiting): one reminder for all 301.
    delivered(&mut store, t0 + Minutes::minutes(92));
    notifier.after_deprovisioning(&mut store, at + Minutes::hours(6));
    notifier.after_deprovisioning(&mut store, at + Minutes::hours(6) + Minutes::minutes(40));
    let alerts = of_kind(&store, OutboxKind::Alert);
    assert_eq!(alerts.len(), 3, "one combined reminder");
    assert!(
        alerts[2]
            .message
            .subject
            .contains("still: 301 deprovisions are overdue"),
        "{}",
        alerts[2].message.subject
    );

    // Approved and verified: one resolution naming them, once.
    let later = at + Minutes::hours(7);
    for entry in store.open_deprovisions().unwrap() {
        store.deprovision_verified(entry.id, later).unwrap();
    }
    notifier.after_deprovisioning(&mut store, later);
    notifier.after_deprovisioning(&mut store, later + Minutes::minutes(1));
    let resolutions = of_kind(&store, OutboxKind::Resolution);
    assert_eq!(resolutions.len(), 1, "one combined resolution");
    assert!(
        resolutions[0]
            .message
            .subject
            .starts_with("Resolved: [seatwarden] "),
        "{}",
        resolutions[0].message.subject
    );
    assert!(
        resolutions[0]
            .message
            .subject
            .ends_with(": 301 deprovisions are overdue"),
        "{}",
        resolutions[0].message.subject
    );
    assert!(
        resolutions[0].message.text.contains("and 251 more"),
        "{}",
        resolutions[0].message.text
    );
    assert_eq!(of_kind(&store, OutboxKind::Alert).len(), 3);
    assert!(store.active_alerts().unwrap().is_empty());
}

/// Two leavers whose deprovisions the guard held in a sweep run (as a sweep pass
/// journals them: held for the last-Owner check, which `approve` re-checks; not
/// for an incomplete directory, which no sweep holds for and no approval
/// releases), their episodes open from `t0`; returns the run.
fn sweep_held_two(store: &mut Store, t0: chrono::DateTime<chrono::Utc>) -> i64 {
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::sla::{self, Leaver, LossReason};
    use seatwarden::store::RunKind;

    let leavers: Vec<Leaver> = (1..=2)
        .map(|n| Leaver {
            identity_id: format!("00u{n}"),
            account_id: Some(format!("acc-{n}")),
            user_name: format!("leaver{n}@example.com"),
            reason: LossReason::Deleted,
        })
        .collect();
    let open = store.current_deprovisions().unwrap();
    let changes = sla::observe(&open, &leavers, &[], t0, chrono::Duration::hours(1));
    store.update_ledger(&changes, t0).unwrap();
    let run = store.begin_run(RunKind::Sweep, t0).unwrap();
    let plan = Plan {
        actions: leavers
            .iter()
            .enumerate()
            .map(|(seq, l)| Action {
                seq: u32::try_from(seq).unwrap(),
                kind: ActionKind::Deactivate {
                    account_id: l.account_id.clone().unwrap(),
                },
                reason: DriftKind::StaleAccess,
                subject: l.user_name.clone(),
                identity_id: Some(l.identity_id.clone()),
                detail: "deleted from the directory".into(),
                held: Some(HoldReason::LastOwner),
            })
            .collect(),
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

/// Deprovisions the sweep's guard holds alert at once, naming the run and the
/// commands; a later pass with nothing due leaves the alert as it is; deciding
/// on the run (or the deprovisions being done some other way) resolves it, in a
/// message whose subject is the alert's behind "Resolved: ".
#[test]
fn a_sweep_that_holds_deprovisions_alerts_at_once_until_they_are_decided() {
    use chrono::{Duration as Minutes, TimeZone, Utc};
    use seatwarden::store::{Decision, OutboxKind};
    use seatwarden::sweep::SweepOutcome;

    let (dir, notifier) = alerting_notifier();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
    let run = sweep_held_two(&mut store, t0);
    let held = SweepOutcome {
        run_id: Some(run),
        held: 2,
        ..SweepOutcome::default()
    };
    notifier.after_sweep(&mut store, &held, t0);
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1, "an alert at once");
    let alert = &outbox[0].message;
    assert_eq!(alert.kind, OutboxKind::Alert);
    assert!(
        alert.subject.ends_with(&format!(
            "2 deprovisions held by the guard in sweep run {run}"
        )),
        "{}",
        alert.subject
    );
    for line in [
        format!(
            "Approve with `seatwarden approve {run}`, or reject with `seatwarden reject {run}`."
        ),
        "Held: leaver1@example.com (directory id 00u1)".to_owned(),
        "`seatwarden explain 00u1` tells one person's whole story".to_owned(),
    ] {
        assert!(alert.text.contains(&line), "{line}\n{}", alert.text);
    }

    // Passes with nothing due (every minute, the retry job) change nothing.
    notifier.after_sweep(
        &mut store,
        &SweepOutcome::default(),
        t0 + Minutes::minutes(1),
    );
    assert_eq!(
        store.outbox().unwrap().len(),
        1,
        "still held, nothing resolved"
    );

    // Rejected: resolved, once.
    store
        .record_decisions(
            run,
            &[(0, Decision::Rejected, None), (1, Decision::Rejected, None)],
            "operator",
            t0 + Minutes::minutes(2),
        )
        .unwrap();
    notifier.after_sweep(
        &mut store,
        &SweepOutcome::default(),
        t0 + Minutes::minutes(3),
    );
    notifier.after_sweep(
        &mut store,
        &SweepOutcome::default(),
        t0 + Minutes::minutes(4),
    );
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 2, "one resolution");
    assert_eq!(outbox[1].message.kind, OutboxKind::Resolution);
    assert_eq!(
        outbox[1].message.subject,
        format!("Resolved: {}", outbox[0].message.subject)
    );

    // Held again by a later pass, then done by a reconcile's approval: the
    // run's rows stay undecided, but nobody waits on them any more.
    let later = t0 + Minutes::minutes(15);
    let again = sweep_held_two(&mut store, later);
    let held_again = SweepOutcome {
        run_id: Some(again),
        ..held
    };
    notifier.after_sweep(&mut store, &held_again, later);
    assert_eq!(store.outbox().unwrap().len(), 3, "a new alert");
    for entry in store.open_deprovisions().unwrap() {
        store
            .deprovision_verified(entry.id, later + Minutes::minutes(1))
            .unwrap();
    }
    notifier.after_sweep(
        &mut store,
        &SweepOutcome::default(),
        later + Minutes::minutes(2),
    );
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 4);
    assert_eq!(outbox[3].message.kind, OutboxKind::Resolution);
    assert!(store.active_alerts().unwrap().is_empty());
}

/// An overdue deprovision a run holds names the run and the approve command.
#[test]
fn an_overdue_alert_names_the_run_holding_the_deprovision() {
    use chrono::{Duration as Minutes, TimeZone, Utc};

    let (dir, notifier) = alerting_notifier();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
    let run = sweep_held_two(&mut store, t0);
    notifier.after_deprovisioning(&mut store, t0 + Minutes::minutes(61));
    let alerts = alerts_in(&store);
    assert_eq!(alerts.len(), 1);
    let text = &alerts[0].message.text;
    assert!(
        text.contains(&format!(
            "Run {run} holds 2 of them for a human: approve with `seatwarden approve {run}`"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("(run {run})")), "{text}");
}

/// The mail job's outcome: nothing due is a success; messages due and none sent
/// (the relay is down) is a failure, with why.
#[tokio::test]
async fn a_delivery_that_sends_nothing_due_fails() {
    use chrono::Utc;
    use seatwarden::daemon::notify::Delivered;
    use seatwarden::store::{NewMessage, OutboxKind};

    let (dir, notifier) = alerting_notifier();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let now = Utc::now();
    assert_eq!(
        notifier.deliver(&mut store, now).await,
        Delivered::NothingDue
    );
    store
        .enqueue_message(
            &NewMessage {
                kind: OutboxKind::Alert,
                subject: "s".into(),
                from: "sw@example.com".into(),
                to: vec!["sec@example.com".into()],
                text: "t".into(),
                html: "<p>h</p>".into(),
                in_reply_to: None,
            },
            now,
        )
        .unwrap();
    match notifier.deliver(&mut store, now).await {
        Delivered::Failed(why) => assert!(why.contains("127.0.0.1"), "{why}"),
        other => panic!("nothing could be sent, yet {other:?}"),
    }
}

/// The demo sandbox after one full reconcile, with the daemon's configuration
/// (no schedule fires) in a fresh directory: what the in-process sweep tests start
/// from.
pub(crate) async fn reconciled_demo() -> (Sandbox, tempfile::TempDir, seatwarden::config::Config) {
    use seatwarden::run::{self, Mode};

    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(env.into_iter().collect()),
    )
    .unwrap();
    let store = Store::open(&config.state.path).unwrap();
    run::execute(&config, store, Mode::Reconcile).await.unwrap();
    (sandbox, dir, config)
}

/// The position in `users` (the directory file's) of an active person whose
/// account is active and holds no Owner role: a leaver the sweep may deactivate.
fn active_non_owner(
    users: &[serde_json::Value],
    workspace: &seatwarden::model::WorkspaceSnapshot,
) -> usize {
    users
        .iter()
        .position(|u| is_active_non_owner(u, workspace))
        .unwrap()
}

pub(crate) fn is_active_non_owner(
    user: &serde_json::Value,
    workspace: &seatwarden::model::WorkspaceSnapshot,
) -> bool {
    user["status"].as_str().unwrap_or("active") == "active"
        && workspace.accounts.iter().any(|a| {
            a.active
                && a.external_id.as_deref() == user["id"].as_str()
                && !a.roles.iter().any(|r| r == "Owner")
        })
}

/// Removes an active, non-Owner person with an active account from the demo's
/// directory file in `dir`; returns their directory id.
fn remove_a_leaver(dir: &Path, sandbox: &Sandbox) -> String {
    let directory_path = dir.join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let mut users = full["users"].as_array().unwrap().clone();
    let leaver = active_non_owner(&users, &sandbox.snapshot());
    let leaver_id = users.remove(leaver)["id"].as_str().unwrap().to_owned();
    std::fs::write(
        &directory_path,
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
    leaver_id
}

/// One in-process sweep, now, with a one-hour SLA.
async fn sweep_now(
    config: &seatwarden::config::Config,
    directory: &seatwarden::directory::Directory,
    client: &seatwarden::workspace::ScimClient,
    store: &std::sync::Arc<std::sync::Mutex<Store>>,
) -> seatwarden::sweep::SweepOutcome {
    sweep_at(config, directory, client, store, chrono::Utc::now()).await
}

/// One in-process sweep at `now`, with a one-hour SLA.
pub(crate) async fn sweep_at(
    config: &seatwarden::config::Config,
    directory: &seatwarden::directory::Directory,
    client: &seatwarden::workspace::ScimClient,
    store: &std::sync::Arc<std::sync::Mutex<Store>>,
    now: chrono::DateTime<chrono::Utc>,
) -> seatwarden::sweep::SweepOutcome {
    seatwarden::sweep::sweep(
        config,
        directory,
        client,
        store,
        now,
        chrono::Duration::hours(1),
    )
    .await
    .unwrap()
}

/// The sweep in-process: a directory cut to a tenth is a source fault (nothing
/// observed, nothing written, no ledger flood); one real leaver is deactivated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_rejects_a_truncated_directory_and_acts_on_a_real_leaver() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;

    let directory_path = dir.path().join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let users = full["users"].as_array().unwrap().clone();
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let active = || {
        sandbox
            .snapshot()
            .accounts
            .iter()
            .filter(|a| a.active)
            .count()
    };
    let active_before = active();

    let tenth: Vec<_> = users.iter().take(users.len() / 10).cloned().collect();
    std::fs::write(
        &directory_path,
        serde_json::json!({ "users": tenth }).to_string(),
    )
    .unwrap();
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert!(outcome.source_fault.is_some(), "{outcome:?}");
    assert_eq!(outcome.detected, 0);
    assert!(
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .is_empty()
    );
    assert_eq!(active(), active_before, "nothing written");

    // Back to the full directory minus one active, non-Owner person.
    let workspace = sandbox.snapshot();
    let leaver = active_non_owner(&users, &workspace);
    let mut remaining = users.clone();
    remaining.remove(leaver);
    std::fs::write(
        &directory_path,
        serde_json::json!({ "users": remaining }).to_string(),
    )
    .unwrap();
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!(outcome.source_fault, None);
    // The leaver, plus people whose accounts were already inactive before the
    // ledger first saw them (verified at once, no write, no latency counted).
    assert_eq!(outcome.enforced, 1, "{outcome:?}");
    assert_eq!(outcome.detected - outcome.already_done, 1, "{outcome:?}");
    assert_eq!(outcome.latencies.len(), 1, "{outcome:?}");
    assert_eq!(active(), active_before - 1);
    // Still gone on the next sweep: no new episode, nothing written.
    let again = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!((again.detected, again.enforced, again.run_id), (0, 0, None));
    // A sweep leaves no report; the digest lists what it deprovisioned from the
    // ledger.
    let digest = seatwarden::report::digest::build_from_store(
        &store.lock().unwrap(),
        "acme",
        chrono_tz::UTC,
        chrono::Utc::now() + chrono::Duration::seconds(1),
        std::time::Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap();
    let user_name = users[leaver]["userName"].as_str().unwrap();
    // The accounts found already inactive were no deprovision of ours, in the
    // digest or in `status`; the leaver and the reconcile's deactivations were.
    assert!(outcome.already_done > 0, "{outcome:?}");
    let (found, done): (Vec<_>, Vec<_>) = store
        .lock()
        .unwrap()
        .verified_deprovisions_since(chrono::DateTime::UNIX_EPOCH)
        .unwrap()
        .into_iter()
        .partition(|e| e.found_without_access());
    assert_eq!(found.len(), outcome.already_done);
    let mut done: Vec<&str> = done.iter().map(|e| e.user_name.as_str()).collect();
    done.sort_unstable();
    assert!(done.contains(&user_name), "{done:?}");
    let mut deprovisioned: Vec<&str> = digest
        .deprovisioned
        .iter()
        .map(|d| d.user_name.as_str())
        .collect();
    deprovisioned.sort_unstable();
    assert_eq!(deprovisioned, done);
    let status = seatwarden::daemon::status::collect(
        &store.lock().unwrap(),
        chrono::Utc::now() + chrono::Duration::seconds(1),
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
    let mut verified: Vec<&str> = status
        .deprovisions
        .verified_last_24h
        .iter()
        .map(|l| l.user_name.as_str())
        .collect();
    verified.sort_unstable();
    assert_eq!(verified, done);
    assert_eq!(
        status.deprovisions.found_without_access_last_24h,
        outcome.already_done
    );
    assert!(
        seatwarden::daemon::status::render_text(&status)
            .contains("Found already inactive or gone when first seen, nothing to do"),
    );
    sandbox.shutdown().await;
}

/// A pass whose deactivations the workspace refuses (5xx past the retries)
/// fails, so the job's repeated failures alert; the episode stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_whose_deactivations_fail_fails() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let leaver = remove_a_leaver(dir.path(), &sandbox);
    sandbox.set_faults(Faults {
        rate_5xx: 1.0,
        writes_only: true,
        ..Faults::default()
    });
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!((outcome.enforced, outcome.failed), (0, 1), "{outcome:?}");
    let error = outcome.checked().unwrap_err();
    assert!(
        matches!(error, seatwarden::run::RunError::DeprovisionsUnwritten(_)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("1 due deactivations failed"),
        "{error}"
    );
    assert!(
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .iter()
            .any(|e| e.identity_id == leaver)
    );
    sandbox.shutdown().await;
}

/// The sweep deactivates by the stored link, but not an account whose
/// externalId names someone else seatwarden knows (the plan's contradicted link):
/// that leaver is held for a human, the colleague's account stays active, also
/// once `seatwarden link … --replace` has given the account to the colleague; the
/// next reconcile finds nothing of the leaver's and ends the episode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_holds_a_leaver_whose_account_names_a_colleague() {
    use seatwarden::model::{Attribute, AttributeChange};
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    // For the `link` command below (it rewrites the copied files: before the edit).
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let directory_path = dir.path().join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let users = full["users"].as_array().unwrap().clone();
    let workspace = sandbox.snapshot();
    let candidates: Vec<usize> = (0..users.len())
        .filter(|&i| is_active_non_owner(&users[i], &workspace))
        .collect();
    let (leaver, colleague) = (candidates[0], candidates[1]);
    let leaver_id = users[leaver]["id"].as_str().unwrap().to_owned();
    let colleague_id = users[colleague]["id"].as_str().unwrap().to_owned();
    let account_of = |identity: &str| {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.external_id.as_deref() == Some(identity))
            .unwrap()
    };
    let account = account_of(&leaver_id);
    // An admin reassigned the leaver's account to the colleague by its externalId.
    client
        .update_attributes(
            &account.id,
            &[AttributeChange {
                attribute: Attribute::ExternalId,
                from: Some(leaver_id.clone()),
                to: Some(colleague_id.clone()),
            }],
        )
        .await
        .unwrap();
    // A second leaver's externalId names nobody seatwarden knows (another
    // provider's id, say): the link stands.
    let other_leaver = candidates[2];
    let other_leaver_id = users[other_leaver]["id"].as_str().unwrap().to_owned();
    let other_account = account_of(&other_leaver_id);
    client
        .update_attributes(
            &other_account.id,
            &[AttributeChange {
                attribute: Attribute::ExternalId,
                from: Some(other_leaver_id.clone()),
                to: Some("00u-from-another-provider".to_owned()),
            }],
        )
        .await
        .unwrap();
    let remaining: Vec<serde_json::Value> = users
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leaver && *i != other_leaver)
        .map(|(_, u)| u.clone())
        .collect();
    std::fs::write(
        &directory_path,
        serde_json::json!({ "users": remaining }).to_string(),
    )
    .unwrap();

    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!((outcome.enforced, outcome.held), (1, 1), "{outcome:?}");
    let active = |id: &str| {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.id == id)
            .unwrap()
            .active
    };
    assert!(
        active(&account.id),
        "the colleague's account was deactivated"
    );
    assert!(!active(&other_account.id));
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver_id).unwrap();
    let held = episode.held.clone().unwrap_or_default();
    assert!(
        held.starts_with(seatwarden::sweep::CONTRADICTED_LINK_HOLD),
        "{held}"
    );
    assert!(!held.contains("  "), "{held}");
    assert!(held.contains(&colleague_id), "{held}");

    // The account is the colleague's: the link moves, and the episode no longer
    // points at it.
    let moved = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args([
            "--config",
            dir.path().join("seatwarden.toml").to_str().unwrap(),
        ])
        .args(["link", &colleague_id, &account.id, "--replace"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    // Due again once the hold's re-check time has passed.
    let later = chrono::Utc::now() + chrono::Duration::minutes(20);
    let outcome = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!(outcome.enforced, 0, "{outcome:?}");
    assert!(active(&account.id));
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver_id).unwrap();
    assert_eq!(episode.account_id, None);
    let episode_id = episode.id;

    seatwarden::run::execute(
        &config,
        Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Reconcile,
    )
    .await
    .unwrap();
    assert!(active(&account.id));
    let (open, history) = {
        let store = store.lock().unwrap();
        (
            store.open_deprovisions().unwrap(),
            store.deprovision_history(&leaver_id, 5).unwrap(),
        )
    };
    assert!(
        open.iter().all(|e| e.identity_id != leaver_id),
        "the episode without an account is still open"
    );
    let ended = history.iter().find(|e| e.id == episode_id).unwrap();
    assert!(ended.found_without_access(), "{ended:?}");
    sandbox.shutdown().await;
}

/// With a retention period the sweep deactivates a leaver's account and leaves
/// the deletion to a reconcile once the period has passed; deleting at once
/// (`delete_after = "0s"`) deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deactivates_while_a_retention_period_comes_before_deletion() {
    use seatwarden::plan::DeprovisionAction;
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    config.deprovision.action = DeprovisionAction::Delete;
    config.deprovision.delete_after = Some("30d".into());
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let account_of = |identity: &str| {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.external_id.as_deref() == Some(identity))
    };

    let kept = remove_a_leaver(dir.path(), &sandbox);
    // A clock left from before the account was re-enabled (no reconcile saw it
    // active since): the sweep, finding it active, forgets it.
    let active_id = account_of(&kept).unwrap().id;
    store
        .lock()
        .unwrap()
        .update_deactivated(std::slice::from_ref(&active_id), &[], chrono::Utc::now())
        .unwrap();
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!(outcome.enforced, 1, "{outcome:?}");
    let account = account_of(&kept).expect("deactivated, not deleted");
    assert!(!account.active);
    assert!(
        !store
            .lock()
            .unwrap()
            .deactivated_since()
            .unwrap()
            .contains_key(&active_id)
    );

    config.deprovision.delete_after = Some("0s".into());
    let deleted = remove_a_leaver(dir.path(), &sandbox);
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!(outcome.enforced, 1, "{outcome:?}");
    assert!(account_of(&deleted).is_none(), "deleted at once");
    sandbox.shutdown().await;
}

/// A mapping whose group the export carries only in another case stops a
/// reconcile (every grant of the mapping would be planned away), but not the
/// sweep: who left does not depend on mappings, and a typo in one must not keep
/// a leaver's access until someone fixes the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_typo_stops_the_reconcile_but_not_the_sweep() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let engineering = config
        .policy
        .mapping
        .iter_mut()
        .find(|m| m.group == "Engineering")
        .unwrap();
    engineering.group = "ENGINEERING".into();
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.sweep_directory();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));

    let refused = config.directory().snapshot().await.unwrap_err().to_string();
    assert!(
        refused.contains("\"ENGINEERING\"") && refused.contains("rows carry \"Engineering\""),
        "{refused}"
    );
    let leaver = remove_a_leaver(dir.path(), &sandbox);
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!(outcome.enforced, 1, "{outcome:?}");
    let account = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.external_id.as_deref() == Some(leaver.as_str()))
        .unwrap();
    assert!(!account.active, "{account:?}");
    sandbox.shutdown().await;
}

/// A workspace that answers nothing (killed): the sweep stops reading the due
/// accounts once a read finds it down, instead of spending a whole retry cycle on
/// each leaver. Every episode stays open with the reason, and the pass fails as
/// unread, as when each read failed on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workspace_is_not_read_leaver_by_leaver() {
    use seatwarden::workspace::ScimClient;

    const LEAVERS: usize = 8;
    const ATTEMPTS: u64 = 3;
    let (sandbox, dir, mut config) = reconciled_demo().await;
    config.workspace.max_concurrency = 2;
    let directory_path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let workspace = sandbox.snapshot();
    let mut leavers = Vec::new();
    for user in full["users"].as_array_mut().unwrap() {
        if leavers.len() < LEAVERS && is_active_non_owner(user, &workspace) {
            user["status"] = "suspended".into();
            leavers.push(user["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(leavers.len(), LEAVERS);
    std::fs::write(&directory_path, full.to_string()).unwrap();
    sandbox.shutdown().await;

    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(2);
    let client = ScimClient::new(settings).unwrap();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let outcome = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        chrono::Utc::now(),
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    let unread = outcome.unread.as_ref().expect("the pass fails as unread");
    // The demo's own leaver, held at the reconcile, is due as well.
    assert!(unread.due >= LEAVERS, "{outcome:?}");
    assert_eq!(unread.failed, unread.due, "{outcome:?}");
    assert!(unread.transient, "{unread:?}");
    // The reads that found it down: one round of the concurrency limit.
    let requests = client.stats().requests;
    assert!(requests <= 2 * ATTEMPTS, "{requests} requests");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    for leaver in &leavers {
        let episode = open.iter().find(|e| &e.identity_id == leaver).unwrap();
        assert!(episode.verified_at.is_none() && episode.enforced_at.is_none());
        assert!(
            episode
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("reading the account")),
            "{episode:?}"
        );
    }
}

/// A leaver whose deactivation could not be made yet is put in a protected group
/// (break-glass during an incident): the sweep ends their episode, and neither it
/// nor the retry job deactivates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_group_ends_an_open_episode() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let directory_path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let position = active_non_owner(full["users"].as_array().unwrap(), &sandbox.snapshot());
    full["users"][position]["status"] = "suspended".into();
    let person = full["users"][position]["id"].as_str().unwrap().to_owned();
    std::fs::write(&directory_path, full.to_string()).unwrap();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    // The workspace cannot be reached: the episode opens, nothing is enforced, the
    // sweep fails.
    let mut wrong = config.scim_settings().unwrap();
    wrong.base_url = format!("{}/elsewhere", sandbox.base_url()).parse().unwrap();
    let unreachable = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &ScimClient::new(wrong).unwrap(),
        &store,
        chrono::Utc::now(),
        chrono::Duration::hours(1),
    )
    .await;
    assert!(
        unreachable.as_ref().is_ok_and(|o| o.unread.is_some()),
        "{unreachable:?}"
    );
    let open = |store: &std::sync::Arc<std::sync::Mutex<Store>>| {
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .into_iter()
            .any(|e| e.identity_id == person)
    };
    assert!(open(&store));

    let groups = full["users"][position]["groups"].as_array_mut().unwrap();
    groups.push("Break Glass".into());
    std::fs::write(&directory_path, full.to_string()).unwrap();
    config.safety.protected_groups = vec!["Break Glass".into()];
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let outcome = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        later,
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(outcome.enforced, 0, "{outcome:?}");
    assert!(!open(&store), "the episode ended");
    let retried = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!(retried.enforced, 0, "{retried:?}");
    assert!(
        sandbox
            .snapshot()
            .accounts
            .iter()
            .any(|a| a.external_id.as_deref() == Some(person.as_str()) && a.active),
        "still active"
    );
    sandbox.shutdown().await;
}

/// Two leavers whose deactivations could not be made yet are protected by name
/// (`safety.protected`, a break-glass identity during an incident): a sweep that
/// sees the first in the directory ends their episode before it is due again, and
/// the retry job, reading the second's account, ends theirs the same way. Neither
/// is held and reported overdue for ever, nor deactivated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_name_ends_an_open_episode() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let directory_path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let workspace = sandbox.snapshot();
    let users = full["users"].as_array().unwrap().clone();
    let people: Vec<(String, String)> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| is_active_non_owner(u, &workspace))
        .take(2)
        .map(|(i, u)| {
            full["users"][i]["status"] = "suspended".into();
            (
                u["id"].as_str().unwrap().to_owned(),
                u["userName"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(people.len(), 2);
    std::fs::write(&directory_path, full.to_string()).unwrap();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    // The workspace cannot be reached: both episodes open, nothing is enforced.
    let now = chrono::Utc::now();
    let mut wrong = config.scim_settings().unwrap();
    wrong.base_url = format!("{}/elsewhere", sandbox.base_url()).parse().unwrap();
    let unreachable = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &ScimClient::new(wrong).unwrap(),
        &store,
        now,
        chrono::Duration::hours(1),
    )
    .await;
    assert!(
        unreachable.as_ref().is_ok_and(|o| o.unread.is_some()),
        "{unreachable:?}"
    );
    let open = |store: &std::sync::Arc<std::sync::Mutex<Store>>, person: &str| {
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .into_iter()
            .any(|e| e.identity_id == person)
    };
    assert!(open(&store, &people[0].0) && open(&store, &people[1].0));

    // The first is protected by name; their next attempt is not due yet, so only
    // the sweep's observation can end the episode.
    config.safety.protected.push(people[0].1.clone());
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let outcome = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        now,
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(outcome.cancelled, 1, "{outcome:?}");
    assert!(!open(&store, &people[0].0), "the first episode ended");
    assert!(open(&store, &people[1].0));

    // The second too; the retry job (no directory) reads their account and ends it.
    config.safety.protected.push(people[1].1.clone());
    let later = now + chrono::Duration::hours(1);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!((retried.enforced, retried.held), (0, 0), "{retried:?}");
    assert!(!open(&store, &people[1].0), "the second episode ended");
    assert!(retried.escalated.is_empty(), "{retried:?}");
    for (person, _) in &people {
        assert!(
            sandbox
                .snapshot()
                .accounts
                .iter()
                .any(|a| a.external_id.as_deref() == Some(person.as_str()) && a.active),
            "still active"
        );
    }
    sandbox.shutdown().await;
}

/// An account protected under a name its person's directory record does not have
/// (the sweep looks only at the record) is held, not ended: ended, the episode
/// would open again on every full sweep.
#[tokio::test]
async fn an_account_protected_by_its_own_name_is_held_once() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let directory_path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let workspace = sandbox.snapshot();
    let users = full["users"].as_array().unwrap().clone();
    let (i, person) = users
        .iter()
        .enumerate()
        .find(|(_, u)| is_active_non_owner(u, &workspace))
        .map(|(i, u)| (i, u["id"].as_str().unwrap().to_owned()))
        .unwrap();
    let account_name = users[i]["userName"].as_str().unwrap().to_owned();
    full["users"][i]["status"] = "suspended".into();
    full["users"][i]["userName"] = format!("renamed-{account_name}").into();
    std::fs::write(&directory_path, full.to_string()).unwrap();
    config.safety.protected.push(account_name.clone());
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let episode = |store: &std::sync::Arc<std::sync::Mutex<Store>>| {
        let open = store.lock().unwrap().open_deprovisions().unwrap();
        let mine: Vec<_> = open
            .into_iter()
            .filter(|e| e.identity_id == person)
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        mine.into_iter().next().unwrap()
    };
    let now = chrono::Utc::now();
    for pass in 0..3 {
        let at = now + chrono::Duration::minutes(20 * pass);
        let outcome = seatwarden::sweep::sweep(
            &config,
            &config.directory(),
            &client,
            &store,
            at,
            chrono::Duration::hours(1),
        )
        .await
        .unwrap();
        assert_eq!(outcome.cancelled, 0, "pass {pass}: {outcome:?}");
    }
    let held = episode(&store);
    assert!(held.held.is_some(), "{held:?}");
    assert_eq!(held.detected_at, now, "the same episode throughout");
    assert!(
        sandbox
            .snapshot()
            .accounts
            .iter()
            .any(|a| a.user_name == account_name && a.active),
        "never touched"
    );
    sandbox.shutdown().await;
}

/// A workspace URL that answers 404 to everything (a wrong path, a token for
/// another organisation's endpoint) does not make a leaver's account "gone": the
/// sweep fails, the episode stays open and unverified, and the right URL then
/// enforces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_from_a_workspace_whose_users_endpoint_does_not_answer_is_not_gone() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let leaver_id = remove_a_leaver(dir.path(), &sandbox);
    let directory = config.directory();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));

    let mut wrong = config.scim_settings().unwrap();
    wrong.base_url = format!("{}/elsewhere", sandbox.base_url()).parse().unwrap();
    // The account reads as absent, and the search on /Users that would confirm it
    // fails too: the episode fails (and is tried again), and with nothing read at
    // all the sweep fails, so its repeated failures alert.
    let err = seatwarden::sweep::sweep(
        &config,
        &directory,
        &ScimClient::new(wrong).unwrap(),
        &store,
        chrono::Utc::now(),
        chrono::Duration::hours(1),
    )
    .await
    .unwrap()
    .checked()
    .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver_id).unwrap();
    assert!(episode.verified_at.is_none(), "{episode:?}");
    assert!(
        episode
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("search on /Users") && e.contains("404")),
        "{episode:?}"
    );

    // Once its retry is due, the right URL enforces it.
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let outcome = seatwarden::sweep::sweep(
        &config,
        &directory,
        &client,
        &store,
        chrono::Utc::now() + chrono::Duration::hours(1),
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(outcome.enforced, 1, "{outcome:?}");
    let episode = store
        .lock()
        .unwrap()
        .current_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == leaver_id)
        .unwrap();
    assert!(episode.verified_at.is_some(), "{episode:?}");
    let account_id = episode.account_id.as_deref().unwrap();
    let account = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.id == account_id)
        .unwrap_or_else(|| panic!("{account_id} not in the workspace"));
    assert!(
        !account.active,
        "the leaver's account is deactivated: {account:?}"
    );
    sandbox.shutdown().await;
}

/// A leaving Owner is deactivated by the sweep when another Owner is confirmed
/// active by a live read, and held when they are the last one: the stored
/// snapshot still shows the break-glass Owner active after it was deactivated,
/// and the live read is what counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deactivates_a_leaving_owner_unless_they_are_the_last() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;

    let owners = || -> Vec<String> {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .filter(|a| a.active && a.roles.iter().any(|r| r == "Owner"))
            .map(|a| a.user_name)
            .collect()
    };
    let mut before = owners();
    before.sort();
    assert_eq!(
        before,
        [
            "ava.smith@example.com",
            "ben.wong@example.com",
            "breakglass@example.com"
        ],
        "the demo's Owners: two people and the protected break-glass account"
    );

    let directory_path = dir.path().join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let without = |gone: &[&str]| {
        let users: Vec<serde_json::Value> = full["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| !gone.contains(&u["id"].as_str().unwrap()))
            .cloned()
            .collect();
        std::fs::write(
            &directory_path,
            serde_json::json!({ "users": users }).to_string(),
        )
        .unwrap();
    };
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));

    without(&["00u1000"]);
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!((outcome.enforced, outcome.held), (1, 0), "{outcome:?}");
    assert_eq!(owners(), ["ben.wong@example.com", "breakglass@example.com"]);

    // The break-glass Owner is deactivated in the workspace by hand; ben is now
    // the last active Owner.
    let breakglass = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.user_name == "breakglass@example.com")
        .unwrap();
    client.set_active(&breakglass.id, false).await.unwrap();
    without(&["00u1000", "00u1001"]);
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!((outcome.enforced, outcome.held), (0, 1), "{outcome:?}");
    assert_eq!(owners(), ["ben.wong@example.com"], "the last Owner stays");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    assert!(
        open.iter()
            .any(|e| e.identity_id == "00u1001" && e.held.is_some()),
        "{open:?}"
    );
    sandbox.shutdown().await;
}

/// Opens the ledger episode of `gone@example.com` (identity `id-gone`, account
/// `gone`), deprovisioned in the directory at `detected`, due an hour later.
fn open_gone_episode(
    store: &std::sync::Arc<std::sync::Mutex<Store>>,
    detected: chrono::DateTime<chrono::Utc>,
) {
    use seatwarden::sla::{self, Leaver, LossReason};
    let changes = sla::observe(
        &[],
        &[Leaver {
            identity_id: "id-gone".into(),
            account_id: Some("gone".into()),
            user_name: "gone@example.com".into(),
            reason: LossReason::Deprovisioned,
        }],
        &[],
        detected,
        chrono::Duration::hours(1),
    );
    store
        .lock()
        .unwrap()
        .update_ledger(&changes, detected)
        .unwrap();
}

/// One due deprovision whose account cannot be read (the workspace answers 500 to
/// it, retries and all) fails its own episode: the other leaver is still
/// deactivated and verified, the one left open is escalated, and the pass fails
/// (naming the endpoint), so that the job's repeated failures alert.
/// A configuration writing to the mock `workspace`, and its state database.
fn against_mock_workspace(
    workspace: &wiremock::MockServer,
) -> (
    tempfile::TempDir,
    seatwarden::config::Config,
    std::sync::Arc<std::sync::Mutex<Store>>,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
             [workspace]\nurl = \"{}\"\ntoken = \"t\"\n",
            workspace.uri()
        ),
    )
    .unwrap();
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(std::collections::HashMap::new()),
    )
    .unwrap();
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    (dir, config, store)
}

#[tokio::test]
async fn an_account_that_cannot_be_read_does_not_stop_the_other_deprovisions() {
    use chrono::{Duration as Minutes, Utc};
    use seatwarden::sla::{self, Leaver, LossReason};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let user = |id: &str, active: bool| {
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": id, "userName": format!("{id}@example.com"), "active": active,
        })
    };
    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ServiceProviderConfig"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/bad"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&workspace)
        .await;
    // Active when the sweep reads it, inactive once deactivated.
    Mock::given(method("GET"))
        .and(path("/Users/good"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user("good", true)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/good"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user("good", false)))
        .mount(&workspace)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/Users/good"))
        .respond_with(ResponseTemplate::new(200).set_body_json(user("good", false)))
        .expect(1)
        .mount(&workspace)
        .await;

    let (_dir, config, store) = against_mock_workspace(&workspace);
    let now = Utc::now();
    let leaver = |id: &str| Leaver {
        identity_id: format!("id-{id}"),
        account_id: Some(id.to_owned()),
        user_name: format!("{id}@example.com"),
        reason: LossReason::Deleted,
    };
    let detected = now - Minutes::hours(2);
    let changes = sla::observe(
        &[],
        &[leaver("good"), leaver("bad")],
        &[],
        detected,
        Minutes::hours(1),
    );
    store
        .lock()
        .unwrap()
        .update_ledger(&changes, detected)
        .unwrap();

    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(2);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();
    let err = seatwarden::sweep::enforce(&config, &client, &store, now)
        .await
        .unwrap()
        .checked()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("1 of 2") && message.contains("/Users/bad") && message.contains("500"),
        "{message}"
    );
    let current = store.lock().unwrap().current_deprovisions().unwrap();
    let good = current.iter().find(|e| e.identity_id == "id-good").unwrap();
    assert!(good.verified_at.is_some(), "{good:?}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    assert_eq!(open.len(), 1);
    let bad = &open[0];
    assert_eq!(bad.identity_id, "id-bad");
    assert_eq!(bad.attempts, 1);
    assert!(bad.escalated_at.is_some(), "the one still open: {bad:?}");
    assert!(
        bad.last_error.as_deref().unwrap_or("").contains("500"),
        "{bad:?}"
    );
}

/// A revoked token: every due account answers 401. Nothing can be done, and the
/// retry pass fails with the endpoint and the status rather than counting as a
/// success; the episode stays open, tried again later, and is escalated.
#[tokio::test]
async fn a_workspace_that_refuses_every_read_fails_the_pass() {
    use chrono::{Duration as Minutes, Utc};
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&workspace)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(401))
        .expect(0)
        .mount(&workspace)
        .await;
    let (_dir, config, store) = against_mock_workspace(&workspace);
    let now = Utc::now();
    let detected = now - Minutes::hours(2);
    open_gone_episode(&store, detected);
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(2);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();

    let err = seatwarden::sweep::enforce(&config, &client, &store, now)
        .await
        .unwrap()
        .checked()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("1 of 1") && message.contains("/Users/gone") && message.contains("401"),
        "{message}"
    );
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].attempts, 1);
    assert!(open[0].verified_at.is_none(), "{:?}", open[0]);
    assert!(open[0].escalated_at.is_some(), "{:?}", open[0]);

    // A sweep whose directory is rejected as well reports both: the pass's
    // outcome (the source fault its alert needs) is not lost to the failure.
    std::fs::write(
        config.state.path.with_file_name("d.json"),
        r#"{"users": []}"#,
    )
    .unwrap();
    let later = now + Minutes::hours(1);
    let outcome = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        later,
        Minutes::hours(1),
    )
    .await
    .unwrap();
    assert!(outcome.source_fault.is_some(), "{outcome:?}");
    assert_eq!(
        outcome.unread.as_ref().map(|u| u.failed),
        Some(1),
        "{outcome:?}"
    );
    assert!(outcome.checked().is_err());
}

/// While the circuit breaker is open the sweep sends nothing either: the leaver's
/// episode stays open with the reason and waits for the cool-down; once the
/// breaker is closed the next pass deactivates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_sends_nothing_while_the_circuit_breaker_is_open() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let leaver_id = remove_a_leaver(dir.path(), &sandbox);
    let account_active = || {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.external_id.as_deref() == Some(leaver_id.as_str()))
            .unwrap()
            .active
    };
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    store
        .lock()
        .unwrap()
        .set_circuit(&seatwarden::circuit::CircuitRecord {
            opened_at: Some(chrono::Utc::now()),
            reason: Some("16 of the last 20 writes failed".into()),
            failures: Vec::new(),
        })
        .unwrap();
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let writes = sandbox.stats().writes;

    let outcome = sweep_now(&config, &directory, &client, &store).await;
    // Kept back by the open breaker: not sent, no failure of its own.
    assert_eq!(
        (outcome.enforced, outcome.failed, outcome.not_sent),
        (0, 0, 1),
        "{outcome:?}"
    );
    assert!(account_active());
    assert_eq!(sandbox.stats().writes, writes, "nothing sent");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver_id).unwrap();
    assert!(
        episode
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("circuit breaker is open"),
        "{episode:?}"
    );

    store
        .lock()
        .unwrap()
        .set_circuit(&seatwarden::circuit::CircuitRecord::default())
        .unwrap();
    let retried =
        seatwarden::sweep::enforce(&config, &client, &store, episode.next_attempt_at.unwrap())
            .await
            .unwrap();
    assert_eq!(retried.enforced, 1, "{retried:?}");
    assert!(!account_active());
    sandbox.shutdown().await;
}

/// A sweep killed with a deactivation in flight (journaled, never answered) left a
/// row that the 24 h limit counts as sent. The next sweep resolves it first (the
/// workspace does not show it: failed), so the same leaver, planned again, counts
/// once and is deactivated rather than held until a reconcile recovers the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_resolves_a_cut_off_sweeps_deactivation_before_counting_the_day() {
    use seatwarden::model::{Action, ActionKind, DriftKind, Plan};
    use seatwarden::store::{ActionState, RunKind};
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let leaver_id = remove_a_leaver(dir.path(), &sandbox);
    let account_of_leaver = || {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.external_id.as_deref() == Some(leaver_id.as_str()))
            .unwrap()
    };
    let account = account_of_leaver();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let now = chrono::Utc::now();
    let crashed = {
        let mut store = store.lock().unwrap();
        // Room for exactly this leaver today.
        let today = store
            .deprovisions_since(now - chrono::Duration::hours(24))
            .unwrap();
        config.safety.max_deprovisions_per_day = usize::try_from(today).unwrap() + 1;
        let run = store.begin_run(RunKind::Sweep, now).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: account.id.clone(),
                },
                reason: DriftKind::StaleAccess,
                subject: account.user_name.clone(),
                identity_id: Some(leaver_id.clone()),
                detail: "deleted from the directory".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, now).unwrap();
        store.mark_in_flight(run, 0, now).unwrap();
        run
    };
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();

    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!((outcome.enforced, outcome.held), (1, 0), "{outcome:?}");
    assert!(!account_of_leaver().active);
    let journal = store.lock().unwrap().journal(crashed).unwrap();
    assert_eq!(journal[0].state, ActionState::Failed, "{journal:?}");
    sandbox.shutdown().await;
}

/// End to end: a real sweep pass whose guard holds a leaver (the day's limit is
/// reached) alerts at once with the pass's run, and the approval the alert
/// names resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaver_the_sweeps_guard_holds_alerts_with_the_run_to_approve() {
    use seatwarden::store::OutboxKind;

    let SweepHeldLeaver {
        sandbox,
        _dir,
        mut config,
        leaver_id,
        store,
        client,
        directory,
        outcome,
        run,
        now,
    } = sweep_held_leaver().await;

    let (_mail_dir, notifier) = alerting_notifier();
    notifier.after_sweep(&mut store.lock().unwrap(), &outcome, now);
    let alerts = alerts_in(&store.lock().unwrap());
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0].message;
    assert!(
        alert.subject.ends_with(&format!(
            "1 deprovision held by the guard in sweep run {run}"
        )),
        "{}",
        alert.subject
    );
    assert!(
        alert.text.contains(&format!("`seatwarden approve {run}`")),
        "{}",
        alert.text
    );
    assert!(
        alert
            .text
            .contains(&format!("`seatwarden explain {leaver_id}`")),
        "{}",
        alert.text
    );

    // Approved as the alert says: done, and resolved by the next pass.
    config.safety.max_deprovisions_per_day = 100_000;
    let store_for_approval = Store::open(&config.state.path).unwrap();
    seatwarden::approval::approve(
        &config,
        &client,
        store_for_approval,
        run,
        &seatwarden::approval::Only::parse(None).unwrap(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let pass = sweep_now(&config, &directory, &client, &store).await;
    notifier.after_sweep(&mut store.lock().unwrap(), &pass, chrono::Utc::now());
    let kinds: Vec<OutboxKind> = store
        .lock()
        .unwrap()
        .outbox()
        .unwrap()
        .into_iter()
        .map(|e| e.message.kind)
        .collect();
    assert_eq!(kinds, [OutboxKind::Alert, OutboxKind::Resolution]);
    sandbox.shutdown().await;
}

/// A person whose deprovision was verified, whose account then came back (a
/// rehire seen only by a reconcile, or an admin re-enabling it by hand), and who
/// is deprovisioned again: the reconcile's new deactivation, held here, is a new
/// episode, open and overdue in time, not hidden behind the old verified one.
#[test]
fn a_second_deprovision_after_the_account_came_back_is_a_new_episode() {
    use chrono::{Duration as Minutes, TimeZone, Utc};
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::sla::{self, Leaver, LossReason};
    use seatwarden::store::RunKind;

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let leaver = Leaver {
        identity_id: "00u1".into(),
        account_id: Some("acc-1".into()),
        user_name: "ada@example.com".into(),
        reason: LossReason::Deleted,
    };
    let changes = sla::observe(&[], &[leaver], &[], t0, Minutes::hours(1));
    store.update_ledger(&changes, t0).unwrap();
    let first = store.open_deprovisions().unwrap()[0].id;
    store
        .deprovision_verified(first, t0 + Minutes::minutes(5))
        .unwrap();
    assert!(store.open_deprovisions().unwrap().is_empty());

    // Weeks later a reconcile finds the account active again and must deactivate
    // it; the guard holds that (she is the last Owner, say).
    let t1 = t0 + Minutes::days(20);
    let run = store.begin_run(RunKind::Reconcile, t1).unwrap();
    let plan = Plan {
        actions: vec![Action {
            seq: 0,
            kind: ActionKind::Deactivate {
                account_id: "acc-1".into(),
            },
            reason: DriftKind::StaleAccess,
            subject: "ada@example.com".into(),
            identity_id: Some("00u1".into()),
            detail: "identity was deleted from the directory; account is still active".into(),
            held: Some(HoldReason::LastOwner),
        }],
        ..Plan::default()
    };
    store.save_plan(run, &plan, t1).unwrap();
    seatwarden::sweep::record_deprovisions(
        &mut store,
        run,
        None,
        t1,
        t1,
        Minutes::hours(1),
        "seatwarden",
    )
    .unwrap();
    let open = store.open_deprovisions().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_ne!(open[0].id, first);
    assert_eq!(open[0].detected_at, t1);
    assert!(open[0].held.is_some(), "{:?}", open[0]);
    let history = store.deprovision_history("00u1", 10).unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.id == first && e.returned_at.is_some()),
        "{history:?}"
    );
}

/// `approve` records in the ledger only what it applied. Recording the whole run
/// again took the deactivation the run itself had verified for a person who came
/// back and left again: a false return, and an episode of days for the SLA.
#[test]
fn approve_records_only_what_it_applied() {
    use chrono::TimeZone;
    use chrono::{Duration as Minutes, Utc};
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::store::RunKind;

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let deactivate = |seq: u32, who: &str, held: Option<HoldReason>| Action {
        seq,
        kind: ActionKind::Deactivate {
            account_id: format!("acc-{who}"),
        },
        reason: DriftKind::StaleAccess,
        subject: format!("{who}@example.com"),
        identity_id: Some(who.into()),
        detail: "identity was deleted from the directory; account is still active".into(),
        held,
    };
    let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
    let plan = Plan {
        actions: vec![
            deactivate(0, "ada", None),
            deactivate(1, "bob", Some(HoldReason::LastOwner)),
        ],
        ..Plan::default()
    };
    store.save_plan(run, &plan, t0).unwrap();
    store.mark_in_flight(run, 0, t0).unwrap();
    store.mark_applied(run, 0, t0, None).unwrap();
    let hour = Minutes::hours(1);
    seatwarden::sweep::record_deprovisions(&mut store, run, None, t0, t0, hour, "seatwarden")
        .unwrap();
    let ada = |store: &Store| store.deprovision_history("ada", 10).unwrap();
    assert_eq!(ada(&store).len(), 1);
    assert!(ada(&store)[0].verified_at.is_some());

    // A day later bob's deactivation is approved and applied.
    let t1 = t0 + Minutes::days(1);
    store.release_held(run, &[1], t1).unwrap();
    store.mark_in_flight(run, 1, t1).unwrap();
    store.mark_applied(run, 1, t1, None).unwrap();
    seatwarden::sweep::record_deprovisions(&mut store, run, Some(&[1]), t0, t1, hour, "seatwarden")
        .unwrap();
    let history = ada(&store);
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(history[0].returned_at.is_none(), "{history:?}");
    let bob = store.deprovision_history("bob", 10).unwrap();
    assert_eq!(bob.len(), 1);
    assert!(bob[0].verified_at.is_some(), "{bob:?}");
}

/// `seatwarden link --replace` moves a person's link: an open deprovision of theirs
/// now deactivates the account linked, not the one a wrong match had given them
/// (the sweep would deactivate that one and close the episode, theirs still active).
#[test]
fn link_moves_an_open_deprovision_to_the_account_now_linked() {
    use chrono::{Duration as Minutes, Utc};
    use seatwarden::model::{
        Account, DirectorySnapshot, Identity, IdentityStatus, LinkMethod, NewLink,
        WorkspaceSnapshot,
    };
    use seatwarden::sla::{self, Leaver, LossReason};
    use seatwarden::store::RunKind;

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let now = Utc::now();
    let account = |id: &str, user_name: &str| Account {
        id: id.into(),
        user_name: user_name.into(),
        external_id: None,
        given_name: None,
        family_name: None,
        display_name: None,
        email: None,
        active: true,
        roles: Vec::new(),
    };
    let run = store.begin_run(RunKind::Reconcile, now).unwrap();
    store
        .save_directory_snapshot(
            run,
            &DirectorySnapshot {
                identities: vec![Identity {
                    id: "00u1".into(),
                    user_name: "ada@example.com".into(),
                    email: None,
                    given_name: None,
                    family_name: None,
                    display_name: None,
                    status: IdentityStatus::Suspended,
                    department: None,
                    groups: Vec::new(),
                }],
                complete: true,
            },
        )
        .unwrap();
    store
        .save_workspace_snapshot(
            run,
            &WorkspaceSnapshot {
                accounts: vec![
                    account("wrong", "ada.l@example.com"),
                    account("hers", "ada@example.com"),
                ],
                groups: Vec::new(),
            },
        )
        .unwrap();
    store
        .upsert_links(
            &[NewLink {
                identity_id: "00u1".into(),
                account_id: "wrong".into(),
                method: LinkMethod::Email,
            }],
            now,
        )
        .unwrap();
    let leaver = Leaver {
        identity_id: "00u1".into(),
        account_id: Some("wrong".into()),
        user_name: "ada.l@example.com".into(),
        reason: LossReason::Suspended,
    };
    // Bob left too, and was wrongly matched to Ada's account.
    let bob = Leaver {
        identity_id: "00u2".into(),
        account_id: Some("hers".into()),
        user_name: "bob@example.com".into(),
        reason: LossReason::Deleted,
    };
    let changes = sla::observe(&[], &[leaver, bob], &[], now, Minutes::hours(1));
    store.update_ledger(&changes, now).unwrap();

    seatwarden::approval::link(&mut store, "00u1", "hers", true, "seatwarden", now).unwrap();
    let open = store.open_deprovisions().unwrap();
    let episode = |id: &str| open.iter().find(|e| e.identity_id == id).unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(episode("00u1").account_id.as_deref(), Some("hers"));
    assert_eq!(episode("00u1").user_name, "ada@example.com");
    // Not Ada's account any more: Bob's episode waits for a reconcile's match.
    assert_eq!(episode("00u2").account_id, None);
}

/// A cut-off reconcile's hold dates only the episode of the same loss: one opened
/// after the person came back and left again since that run (something else in
/// their ledger since it began) keeps its own detection time, and a run that
/// finished recorded its own deprovisions.
/// A reconcile cut off after it verified a deactivation and before it wrote the
/// ledger: the next writer closes it and records the deprovision as that run
/// would have (its row is applied, not in flight, so no recovery sees it, and the
/// account is inactive, so no run plans it again). Once only.
#[test]
fn a_cut_off_reconciles_verified_deprovisions_reach_the_ledger() {
    use chrono::{Duration as Minutes, TimeZone, Utc};
    use seatwarden::model::{Action, ActionKind, DriftKind, Plan};
    use seatwarden::store::RunKind;

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
    let deactivate = Action {
        seq: 0,
        kind: ActionKind::Deactivate {
            account_id: "acc-00u1".into(),
        },
        reason: DriftKind::StaleAccess,
        subject: "ada@example.com".into(),
        identity_id: Some("00u1".into()),
        detail: "identity is deprovisioned in the directory".into(),
        held: None,
    };
    store
        .save_plan(
            run,
            &Plan {
                actions: vec![deactivate],
                ..Plan::default()
            },
            t0,
        )
        .unwrap();
    let applied_at = t0 + Minutes::minutes(2);
    store.mark_in_flight(run, 0, t0).unwrap();
    store.mark_applied(run, 0, applied_at, None).unwrap();
    assert!(store.deprovision_history("00u1", 1).unwrap().is_empty());

    let later = t0 + Minutes::hours(5);
    let closed = store.close_interrupted_runs(later).unwrap();
    assert_eq!(closed, vec![(run, RunKind::Reconcile)]);
    let sla = Minutes::hours(4);
    let latencies =
        seatwarden::sweep::record_cut_off_applied(&mut store, &[run], sla, "seatwarden").unwrap();
    assert_eq!(latencies, vec![Minutes::minutes(2)]);
    let episode = store.deprovision_history("00u1", 1).unwrap()[0].clone();
    assert_eq!(episode.detected_at, t0);
    assert_eq!(episode.verified_at, Some(applied_at));
    assert!(
        seatwarden::sweep::record_cut_off_applied(&mut store, &[run], sla, "seatwarden")
            .unwrap()
            .is_empty(),
        "recorded once"
    );
    assert_eq!(store.deprovision_history("00u1", 5).unwrap().len(), 1);
}

#[test]
fn a_cut_off_hold_dates_only_an_episode_of_the_same_loss() {
    use chrono::{Duration as Minutes, TimeZone, Utc};
    use seatwarden::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use seatwarden::sla::{self, Leaver, LossReason};
    use seatwarden::store::{RunKind, RunStatus};

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let hour = Minutes::hours(1);
    let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let held = |who: &str| Action {
        seq: match who {
            "00u1" => 0,
            "00u2" => 1,
            _ => 2,
        },
        kind: ActionKind::Deactivate {
            account_id: format!("acc-{who}"),
        },
        reason: DriftKind::StaleAccess,
        subject: format!("{who}@example.com"),
        identity_id: Some(who.into()),
        detail: "identity is suspended in the directory".into(),
        held: Some(HoldReason::LastOwner),
    };
    let leaver = |who: &str| Leaver {
        identity_id: who.into(),
        account_id: Some(format!("acc-{who}")),
        user_name: format!("{who}@example.com"),
        reason: LossReason::Suspended,
    };
    let observe = |store: &mut Store, leavers: &[Leaver], back: &[String], at| {
        let current = store.current_deprovisions().unwrap();
        let changes = sla::observe(&current, leavers, back, at, hour);
        store.update_ledger(&changes, at).unwrap();
    };
    let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
    store
        .save_plan(
            run,
            &Plan {
                actions: vec![held("00u1"), held("00u2"), held("00u4")],
                ..Plan::default()
            },
            t0,
        )
        .unwrap();
    // Cut off. Before the next observation, 00u2 is seen back and leaves again.
    observe(
        &mut store,
        &[leaver("00u2")],
        &[],
        t0 + Minutes::minutes(10),
    );
    observe(
        &mut store,
        &[],
        &["00u2".to_owned()],
        t0 + Minutes::minutes(20),
    );
    let t1 = t0 + Minutes::hours(3);
    observe(
        &mut store,
        &[leaver("00u1"), leaver("00u2"), leaver("00u4")],
        &[],
        t1,
    );
    // 00u4's episode was verified before the recovery ran (a sweep got there
    // first): its latency is reported already, and stands.
    let verified = store.deprovision_history("00u4", 1).unwrap()[0].id;
    store.deprovision_verified(verified, t1).unwrap();

    let cut_off = std::collections::BTreeSet::from([run]);
    assert_eq!(
        seatwarden::sweep::backdate_cut_off(&mut store, &cut_off).unwrap(),
        1
    );
    let newest = |store: &Store, who: &str| store.deprovision_history(who, 1).unwrap()[0].clone();
    let ada = newest(&store, "00u1");
    assert_eq!((ada.detected_at, ada.due_at), (t0, t0 + hour));
    let other = newest(&store, "00u2");
    assert_eq!((other.detected_at, other.due_at), (t1, t1 + hour));
    assert_eq!(newest(&store, "00u4").detected_at, t1);
    // Once more changes nothing.
    assert_eq!(
        seatwarden::sweep::backdate_cut_off(&mut store, &cut_off).unwrap(),
        0
    );

    // A reconcile that finished recorded its own deprovisions: its rows in flight
    // are a cut-off approval's, and date nothing.
    let finished = store.begin_run(RunKind::Reconcile, t1).unwrap();
    store
        .save_plan(
            finished,
            &Plan {
                actions: vec![held("00u3")],
                ..Plan::default()
            },
            t1,
        )
        .unwrap();
    store
        .finish_run(finished, t1, RunStatus::Succeeded, None)
        .unwrap();
    observe(&mut store, &[leaver("00u3")], &[], t1 + hour);
    let finished = std::collections::BTreeSet::from([finished]);
    assert_eq!(
        seatwarden::sweep::backdate_cut_off(&mut store, &finished).unwrap(),
        0
    );
}

/// A connection that sends part of a request and then nothing does not hold up
/// SIGTERM (hyper's graceful shutdown waits for it; the listener bounds that wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http_connection_does_not_hold_up_sigterm() {
    let sandbox = demo_sandbox(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let mut daemon = start_daemon(dir.path(), env);
    let port = daemon.listening().await;
    wait_for("the first reconcile", Duration::from_secs(60), || {
        daemon.logged("job finished")
    })
    .await;
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    let (code, log) = daemon.terminate();
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{log}");
    // The listener's shutdown grace is 5 s (its header timeout 10 s).
    assert!(
        took < Duration::from_secs(9),
        "stopped after {took:?}\n{log}"
    );
    drop(stalled);
    sandbox.shutdown().await;
}

/// A stop mid-apply: no write starts after it, the writes sent are verified and
/// journaled (nothing left in flight), the run is recorded `stopped` (not failed), and
/// the next run sends what was not sent, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_apply_sends_nothing_more_and_the_next_run_sends_the_rest_once() {
    use seatwarden::apply::StopSignal;
    use seatwarden::run::{self, Mode, RunError, RunOptions};
    use seatwarden::store::{ActionState, RunKind, RunStatus};

    // One write at a time, each slow: the stop comes with at most one in flight.
    let sandbox = demo_sandbox(Faults {
        latency: Duration::from_millis(100),
        writes_only: true,
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    // Twenty joiners: a phase of creates long enough for the stop to fall inside.
    let directory_path = dir.path().join("directory.json");
    let mut people: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    for n in 0..20 {
        people["users"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": format!("00u9{n:03}"),
                "userName": format!("joiner{n}@example.com"),
                "email": format!("joiner{n}@example.com"),
                "givenName": "Joiner",
                "familyName": format!("Number{n}"),
                "displayName": format!("Joiner Number{n}"),
                "status": "active",
                "groups": ["Taskade Users"]
            }));
    }
    std::fs::write(&directory_path, people.to_string()).unwrap();
    env.push((
        "SEATWARDEN__WORKSPACE__MAX_CONCURRENCY".to_owned(),
        "1".to_owned(),
    ));
    let config = seatwarden::config::Config::load_with_env(
        &dir.path().join("seatwarden.toml"),
        Some(env.into_iter().collect()),
    )
    .unwrap();
    assert_eq!(config.workspace.max_concurrency, 1);
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = run::directory_from_config(&config);
    let open = || Store::open(&config.state.path).unwrap();

    let stop = StopSignal::new();
    let stopping = async {
        while sandbox.stats().writes < 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.stop();
        sandbox.stats().writes
    };
    let options = RunOptions {
        stop: stop.clone(),
        ..RunOptions::default()
    };
    let (stopped, writes_at_stop) = tokio::join!(
        run::execute_with_options(
            &config,
            &directory,
            &client,
            open(),
            Mode::Reconcile,
            options
        ),
        stopping
    );
    let first_writes = sandbox.stats().writes;
    // At most the one write in flight at the stop was answered after it.
    assert!(
        first_writes <= writes_at_stop + 1,
        "{first_writes} writes, {writes_at_stop} when the stop came"
    );
    let unsent = match stopped {
        Err(RunError::Stopped { unsent, .. }) => unsent,
        other => panic!("not stopped: {other:?}"),
    };

    let store = open();
    let run = store.latest_run(&[RunKind::Reconcile]).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Stopped);
    let error = run.error.unwrap_or_default();
    assert!(error.contains("seatwarden was stopping"), "{error}");
    assert!(
        store.interrupted().unwrap().is_empty(),
        "a row left in flight"
    );
    let journal = store.journal(run.id).unwrap();
    let count = |state: ActionState| journal.iter().filter(|row| row.state == state).count();
    let runnable = journal.len() - count(ActionState::Held);
    assert!(runnable >= 20, "only {runnable} writes planned");
    // The stop fell inside a phase: part of it was not sent.
    assert!(count(ActionState::Failed) > 0, "{journal:?}");
    // Every action sent is verified; every other one was not sent.
    assert_eq!(
        count(ActionState::Applied) as u64,
        first_writes,
        "{journal:?}"
    );
    assert_eq!(
        count(ActionState::Applied) + unsent,
        runnable,
        "{journal:?}"
    );
    for row in journal
        .iter()
        .filter(|row| row.state == ActionState::Failed)
    {
        let message = row.last_error.clone().unwrap_or_default();
        assert!(message.starts_with("not sent"), "{message}");
    }
    drop(store);

    // The next run plans and sends exactly what was not sent.
    let next = run::execute_with(&config, &directory, &client, open(), Mode::Reconcile)
        .await
        .unwrap();
    assert_eq!(next.plan.runnable().count(), unsent);
    assert_eq!(sandbox.stats().writes - first_writes, unsent as u64);
    let converged = run::execute_with(&config, &directory, &client, open(), Mode::Plan)
        .await
        .unwrap();
    assert_eq!(converged.plan.runnable().count(), 0);
    sandbox.shutdown().await;
}

/// A stop between a sweep's writes: the deactivation sent is verified; the one
/// the stop kept back is journaled failed ("not sent") by the apply, yet it was
/// never tried: its episode stays due at once with no attempt counted, and
/// `seatwarden_actions_total` counts it as not run, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_between_sweep_writes_counts_the_unsent_leaver_as_no_attempt() {
    use seatwarden::apply::{
        ApplyProgress, ProgressHook, StopSignal, until_stopped, with_progress,
    };
    use seatwarden::store::ActionState;
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    // One write at a time: the stop falls between the two.
    config.workspace.max_concurrency = 1;
    let leavers = [
        remove_a_leaver(dir.path(), &sandbox),
        remove_a_leaver(dir.path(), &sandbox),
    ];
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let stop = StopSignal::new();
    // Heard when the first write is answered, before the next one may start.
    let hook: ProgressHook = {
        let stop = stop.clone();
        Arc::new(move |progress| {
            if let ApplyProgress::Writing { done: 1, .. } = progress {
                stop.stop();
            }
        })
    };
    let sweeping = with_progress(hook, sweep_now(&config, &directory, &client, &store));
    let (outcome, unsent) = until_stopped(stop, sweeping).await;
    assert_eq!(unsent, 1, "{outcome:?}");
    assert_eq!(
        (outcome.enforced, outcome.failed, outcome.not_sent),
        (1, 0, 1),
        "{outcome:?}"
    );
    let journal = store
        .lock()
        .unwrap()
        .journal(outcome.run_id.unwrap())
        .unwrap();
    assert!(
        journal.iter().any(|row| row.state == ActionState::Failed),
        "the apply journals the unsent one failed: {journal:?}"
    );
    let mut outcomes: Vec<&str> = journal
        .iter()
        .map(seatwarden::sweep::metric_outcome)
        .collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["applied", "not_run"], "seatwarden_actions_total");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let unsent: Vec<_> = open
        .iter()
        .filter(|e| leavers.contains(&e.identity_id))
        .collect();
    assert_eq!(unsent.len(), 1, "{open:?}");
    let episode = unsent[0];
    assert_eq!(episode.attempts, 0, "{episode:?}");
    assert!(
        episode
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("seatwarden was stopping")),
        "{episode:?}"
    );
    assert!(
        episode
            .next_attempt_at
            .is_some_and(|at| at <= chrono::Utc::now()),
        "due at once: {episode:?}"
    );
    sandbox.shutdown().await;
}

/// A sweep stopped by SIGTERM (the daemon's stop signal) as it writes, its
/// deactivation refused 429 and waiting a minute for its retry, sends no
/// deactivation: the leaver's episode stays open with "not sent" as its error,
/// and the next pass deactivates the account. (Set before the pass, the stop
/// gives it up at its first read: see `qa_read_stop`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_after_the_stop_sends_nothing_and_the_episode_stays_open() {
    use seatwarden::apply::{StopSignal, until_stopped};
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let leaver = remove_a_leaver(dir.path(), &sandbox);
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let writes = sandbox.stats().writes;
    sandbox.set_faults(Faults {
        rate_429: 1.0,
        retry_after_secs: 60,
        writes_only: true,
        ..Faults::default()
    });
    let stop = StopSignal::new();
    let stopping = {
        let stop = stop.clone();
        let refused = || sandbox.stats().faults_429 >= 1;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !refused() {
                assert!(std::time::Instant::now() < deadline, "no write was sent");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            stop.stop();
        }
    };
    let ((stopped, unsent), ()) = tokio::join!(
        until_stopped(stop, sweep_now(&config, &directory, &client, &store)),
        stopping
    );
    sandbox.set_faults(Faults::default());
    assert_eq!(stopped.enforced, 0, "{stopped:?}");
    assert_eq!(unsent, 1);
    assert_eq!(sandbox.stats().writes, writes, "no write after the stop");
    // Not sending is not an attempt: no failure, no attempt, no back-off.
    assert_eq!((stopped.failed, stopped.not_sent), (0, 1), "{stopped:?}");
    let journal = store
        .lock()
        .unwrap()
        .journal(stopped.run_id.unwrap())
        .unwrap();
    let outcomes: Vec<&str> = journal
        .iter()
        .map(seatwarden::sweep::metric_outcome)
        .collect();
    assert_eq!(outcomes, ["not_run"], "seatwarden_actions_total's outcome");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver).unwrap();
    assert!(
        episode
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("seatwarden was stopping")),
        "{episode:?}"
    );
    assert_eq!(episode.attempts, 0, "{episode:?}");
    assert!(
        episode
            .next_attempt_at
            .is_some_and(|at| at <= chrono::Utc::now()),
        "due at once: {episode:?}"
    );
    let active = |sandbox: &Sandbox| {
        sandbox
            .snapshot()
            .accounts
            .iter()
            .any(|a| a.external_id.as_deref() == Some(leaver.as_str()) && a.active)
    };
    assert!(active(&sandbox));

    // A new client: the 429 paused this one's requests for a minute.
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let later = seatwarden::sweep::enforce(
        &config,
        &client,
        &store,
        chrono::Utc::now() + chrono::Duration::minutes(30),
    )
    .await
    .unwrap();
    assert_eq!(later.enforced, 1, "{later:?}");
    assert!(!active(&sandbox));
    sandbox.shutdown().await;
}

/// Adds a person to the demo's directory file in `dir` with `status` who matches
/// two new active accounts (one by userName, one by email, neither's externalId
/// naming anyone): a disputed match. Returns their id and the accounts' ids,
/// sorted.
async fn add_disputed_person(
    dir: &Path,
    client: &seatwarden::workspace::ScimClient,
    status: &str,
) -> (String, Vec<String>) {
    use seatwarden::model::AccountSpec;

    let id = "00u9990".to_owned();
    let user_name = "nia.disputed@example.com";
    let directory_path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    full["users"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": id,
            "userName": user_name,
            "email": user_name,
            "givenName": "Nia",
            "familyName": "Disputed",
            "status": status,
            "groups": ["Taskade Users"],
        }));
    std::fs::write(&directory_path, full.to_string()).unwrap();
    let spec = |user_name: &str, external_id: &str| AccountSpec {
        user_name: user_name.into(),
        external_id: external_id.into(),
        given_name: Some("Nia".into()),
        family_name: Some("Disputed".into()),
        display_name: None,
        email: Some("nia.disputed@example.com".into()),
        role: None,
    };
    let by_name = client
        .create_account(&spec(user_name, "legacy-1"))
        .await
        .unwrap();
    let by_email = client
        .create_account(&spec("nia.alias@example.com", "legacy-2"))
        .await
        .unwrap();
    let mut accounts = vec![by_name.id, by_email.id];
    accounts.sort_unstable();
    (id, accounts)
}

/// One reconcile in-process, as a person runs it.
async fn reconcile_now(config: &seatwarden::config::Config) -> seatwarden::run::RunOutcome {
    seatwarden::run::execute(
        config,
        Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Reconcile,
    )
    .await
    .unwrap()
}

/// Someone who left while two active accounts match them: the reconcile
/// deactivates neither, but opens an episode, held, that names both accounts and
/// the command, shows in `status`, goes overdue after the SLA (escalated, not
/// enforced); once `seatwarden link` chooses the account, the next reconcile
/// deactivates it and verifies the episode as a deprovision done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_leaver_is_held_overdue_and_deprovisioned_once_linked() {
    use seatwarden::sla::EntryState;
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (person, accounts) = add_disputed_person(dir.path(), &client, "suspended").await;
    let active = |id: &str| {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.id == id)
            .unwrap()
            .active
    };

    let outcome = reconcile_now(&config).await;
    assert!(
        accounts.iter().all(|a| active(a)),
        "nothing chose an account"
    );
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open
        .iter()
        .find(|e| e.identity_id == person)
        .unwrap_or_else(|| panic!("no episode: {open:#?}"))
        .clone();
    assert_eq!(episode.account_id, None);
    assert_eq!(episode.reason, seatwarden::sla::LossReason::Suspended);
    assert_eq!(episode.detected_at, outcome.report.started_at);
    assert_eq!(
        episode.due_at - episode.detected_at,
        seatwarden::sweep::configured_sla(&config)
    );
    let held = episode.held.clone().unwrap_or_default();
    assert!(held.starts_with("disputed match"), "{held}");
    for account in &accounts {
        assert!(held.contains(account.as_str()), "{held}");
    }
    assert!(
        held.contains(&format!("seatwarden link {person} ACCOUNT")),
        "{held}"
    );

    let status_at = |at| {
        seatwarden::daemon::status::collect(
            &store.lock().unwrap(),
            at,
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
        .unwrap()
    };
    let status = status_at(episode.detected_at + chrono::Duration::minutes(1));
    assert_eq!(
        (status.deprovisions.pending, status.deprovisions.overdue),
        (1, 0)
    );
    let text = seatwarden::daemon::status::render_text(&status);
    assert!(
        text.contains("nia.disputed@example.com") && text.contains("held: disputed match"),
        "{text}"
    );

    // Past the SLA: overdue and escalated by the next pass, which still writes
    // nothing to either account.
    let later = episode.due_at + chrono::Duration::minutes(1);
    let passed = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!(passed.enforced, 0, "{passed:?}");
    assert!(
        passed.escalated.iter().any(|e| e.identity_id == person),
        "{passed:?}"
    );
    assert!(accounts.iter().all(|a| active(a)));
    let status = status_at(later);
    assert_eq!(status.deprovisions.overdue, 1, "{status:?}");
    assert_eq!(
        store
            .lock()
            .unwrap()
            .open_deprovisions()
            .unwrap()
            .iter()
            .find(|e| e.identity_id == person)
            .map(|e| e.state(later)),
        Some(EntryState::Overdue)
    );

    // A human says which account is theirs; the next reconcile deactivates it.
    let chosen = &accounts[0];
    let linked = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args([
            "--config",
            dir.path().join("seatwarden.toml").to_str().unwrap(),
        ])
        .args(["link", &person, chosen])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    reconcile_now(&config).await;
    assert!(!active(chosen));
    let history = store
        .lock()
        .unwrap()
        .deprovision_history(&person, 5)
        .unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    let done = &history[0];
    assert_eq!(done.id, episode.id);
    assert!(
        done.verified_at.is_some() && !done.found_without_access(),
        "{done:?}"
    );
    assert_eq!(done.account_id.as_deref(), Some(chosen.as_str()));
    assert_eq!(done.held, None);
    let status = status_at(chrono::Utc::now() + chrono::Duration::seconds(1));
    assert!(
        status
            .deprovisions
            .verified_last_24h
            .iter()
            .any(|l| l.user_name == "nia.disputed@example.com"),
        "{status:?}"
    );
    sandbox.shutdown().await;
}

/// A disputed leaver's episode ends when nothing of theirs has access any more:
/// an admin deactivated every account that may be theirs (found without access,
/// as seatwarden did nothing); and it is cancelled when the directory shows them
/// back, though no link of theirs tells the reconcile to look at them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_leavers_episode_ends_with_their_access() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (person, accounts) = add_disputed_person(dir.path(), &client, "suspended").await;
    let store = Store::open(&config.state.path).unwrap();
    let open_episode = |store: &Store| {
        store
            .open_deprovisions()
            .unwrap()
            .into_iter()
            .find(|e| e.identity_id == person)
    };

    reconcile_now(&config).await;
    let first = open_episode(&store).expect("an episode opens");
    // One account deactivated by hand: the other still has access.
    client.set_active(&accounts[0], false).await.unwrap();
    reconcile_now(&config).await;
    let still = open_episode(&store).expect("still open");
    assert_eq!(still.id, first.id);
    assert!(
        still.held.as_deref().is_some_and(|h| h.contains(&format!(
            "(active: {}; inactive already: {})",
            accounts[1], accounts[0]
        ))),
        "{still:?}"
    );
    // Both: the episode ends, nothing having been done.
    client.set_active(&accounts[1], false).await.unwrap();
    reconcile_now(&config).await;
    assert_eq!(open_episode(&store), None);
    let ended = &store.deprovision_history(&person, 5).unwrap()[0];
    assert_eq!(ended.id, first.id);
    assert!(ended.found_without_access(), "{ended:?}");

    // Gone again (accounts re-enabled by hand), then back in the directory: the
    // episode is cancelled, not counted as a deprovision.
    client.set_active(&accounts[0], true).await.unwrap();
    client.set_active(&accounts[1], true).await.unwrap();
    let directory_path = dir.path().join("directory.json");
    reconcile_now(&config).await;
    let again = open_episode(&store).expect("a new episode opens");
    assert_ne!(again.id, first.id);
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    for user in full["users"].as_array_mut().unwrap() {
        if user["id"] == person.as_str() {
            user["status"] = "active".into();
        }
    }
    std::fs::write(&directory_path, full.to_string()).unwrap();
    reconcile_now(&config).await;
    assert_eq!(open_episode(&store), None);
    let ended = &store.deprovision_history(&person, 5).unwrap()[0];
    assert_eq!(ended.id, again.id);
    assert!(
        ended.closed_at.is_some() && ended.verified_at.is_none(),
        "{ended:?}"
    );
    sandbox.shutdown().await;
}

/// The sweep watches a disputed leaver's return though no link of theirs points
/// it at them: back in the directory, the episode is cancelled, or it would wait
/// overdue for the next reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_cancels_a_disputed_leavers_episode_when_they_are_back() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (person, _) = add_disputed_person(dir.path(), &client, "suspended").await;
    reconcile_now(&config).await;
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let opened = store
        .lock()
        .unwrap()
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == person)
        .expect("an episode opens");
    let directory_path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    for user in full["users"].as_array_mut().unwrap() {
        if user["id"] == person.as_str() {
            user["status"] = "active".into();
        }
    }
    std::fs::write(&directory_path, full.to_string()).unwrap();
    let outcome = sweep_now(&config, &config.directory(), &client, &store).await;
    assert_eq!(outcome.cancelled, 1, "{outcome:?}");
    let ended = &store
        .lock()
        .unwrap()
        .deprovision_history(&person, 5)
        .unwrap()[0];
    assert_eq!(ended.id, opened.id);
    assert!(ended.closed_at.is_some(), "{ended:?}");
    sandbox.shutdown().await;
}

/// Once `seatwarden link` has chosen the account, the hold is released: the
/// retry job need not wait for a reconcile or the hold's re-check time, and
/// deactivates that account, and that one only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_job_deactivates_the_account_a_human_linked() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (person, accounts) = add_disputed_person(dir.path(), &client, "deprovisioned").await;
    reconcile_now(&config).await;
    let chosen = &accounts[1];
    let linked = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args([
            "--config",
            dir.path().join("seatwarden.toml").to_str().unwrap(),
        ])
        .args(["link", &person, chosen])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let episode = store
        .lock()
        .unwrap()
        .open_deprovisions()
        .unwrap()
        .into_iter()
        .find(|e| e.identity_id == person)
        .unwrap();
    assert_eq!(
        (episode.account_id.as_deref(), episode.held.as_deref()),
        (Some(chosen.as_str()), None)
    );
    let outcome = seatwarden::sweep::enforce(&config, &client, &store, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(outcome.enforced, 1, "{outcome:?}");
    let active: Vec<(String, bool)> = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .filter(|a| accounts.contains(&a.id))
        .map(|a| (a.id, a.active))
        .collect();
    assert!(
        active.contains(&(chosen.clone(), false)) && active.contains(&(accounts[0].clone(), true)),
        "{active:?}"
    );
    let done = &store
        .lock()
        .unwrap()
        .deprovision_history(&person, 5)
        .unwrap()[0];
    assert!(
        done.verified_at.is_some() && !done.found_without_access(),
        "{done:?}"
    );
    sandbox.shutdown().await;
}

/// A workspace that answers nothing from the start: the directory is still read
/// and the leaver's episode opened (its SLA clock runs, its alerts come), and the
/// sweep learns the workspace is down from its first request, the discovery of
/// `/ServiceProviderConfig`: no account read spends the retries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workspace_is_found_down_by_the_sweeps_first_request() {
    use seatwarden::workspace::{NOT_READ, ScimClient};

    const ATTEMPTS: u64 = 3;
    let (sandbox, dir, config) = reconciled_demo().await;
    let leaver = remove_a_leaver(dir.path(), &sandbox);
    sandbox.shutdown().await;

    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(2);
    let client = ScimClient::new(settings).unwrap();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let outcome = sweep_now(&config, &config.directory(), &client, &store).await;
    assert!(outcome.detected >= 1, "{outcome:?}");
    assert!(outcome.unread.is_some(), "{outcome:?}");
    assert_eq!(
        client.stats().requests,
        ATTEMPTS,
        "only the discovery was sent"
    );
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver).unwrap();
    let error = episode.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains(NOT_READ) && error.contains("GET /ServiceProviderConfig"),
        "{error}"
    );
}

/// Runs `seatwarden link IDENTITY ACCOUNT` against the demo state in `dir`;
/// returns what it printed.
fn link_by_hand(dir: &Path, env: &[(String, String)], identity: &str, account: &str) -> String {
    let linked = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["--config", dir.join("seatwarden.toml").to_str().unwrap()])
        .args(["link", identity, account])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    String::from_utf8(linked.stdout).unwrap()
}

/// A disputed leaver (two accounts: one by userName, one by email) linked by
/// hand to the one named like her: `link` says the other goes too; the retry job
/// deactivates the linked one, the next reconcile the other, reported under its
/// own userName as her duplicate; the episode held for the dispute is the one
/// that ends, verified when her last account went (never "access again"), and
/// the digest names her once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_a_disputed_leaver_tells_what_happens_to_the_other_account() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (person, accounts) = add_disputed_person(dir.path(), &client, "suspended").await;
    let id_of = |user_name: &str| {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.user_name == user_name)
            .unwrap()
            .id
    };
    let (by_name, by_email) = (
        id_of("nia.disputed@example.com"),
        id_of("nia.alias@example.com"),
    );
    assert!(accounts.contains(&by_name) && accounts.contains(&by_email));
    reconcile_now(&config).await;
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let held = store
        .lock()
        .unwrap()
        .deprovision_history(&person, 5)
        .unwrap();
    assert_eq!(held.len(), 1, "{held:#?}");

    let said = link_by_hand(dir.path(), &env, &person, &by_name);
    assert!(
        said.contains(&format!(
            "{by_email} (userName nia.alias@example.com) matched this person by email: the next \
             run deactivates it with {by_name} because the person no longer has access \
             (identity is suspended in the directory)"
        )),
        "{said}"
    );
    // The retry job need not wait for the reconcile: the linked account goes.
    let passed = seatwarden::sweep::enforce(&config, &client, &store, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(passed.enforced, 1, "{passed:?}");
    let outcome = reconcile_now(&config).await;
    let active: Vec<bool> = [&by_name, &by_email]
        .iter()
        .map(|id| {
            sandbox
                .snapshot()
                .accounts
                .into_iter()
                .any(|a| &a.id == *id && a.active)
        })
        .collect();
    assert_eq!(active, [false, false]);
    let deactivated: Vec<(&str, &str)> = outcome
        .report
        .actions
        .iter()
        .filter(|a| a.op == "deactivate")
        .map(|a| (a.subject.as_str(), a.detail.as_str()))
        .collect();
    assert_eq!(
        deactivated,
        [(
            "nia.alias@example.com",
            format!(
                "duplicate account of nia.disputed@example.com (identity {person}, linked to \
                 account {by_name}; matched by email): identity is suspended in the directory; \
                 account is still active"
            )
            .as_str()
        )],
        "{:#?}",
        outcome.report.actions
    );

    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history(&person, 5).unwrap();
    assert_eq!(history.len(), 1, "one episode, the one held: {history:#?}");
    let episode = &history[0];
    assert_eq!(episode.id, held[0].id);
    assert_eq!(episode.returned_at, None, "{episode:?}");
    assert_eq!(episode.user_name, "nia.disputed@example.com");
    assert!(
        episode.verified_at >= Some(outcome.report.started_at),
        "verified when her last account went: {episode:?}"
    );
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let explained = seatwarden::explain::explain(&config, &store, &person, now).unwrap();
    assert!(!explained.contains("access again"), "{explained}");
    let digest = crate::fixtures::day_digest(&store, now);
    let text = digest.render_text();
    assert_eq!(
        text.matches("nia.disputed@example.com").count(),
        1,
        "{text}"
    );
    sandbox.shutdown().await;
}

/// An active person linked by hand while a second account matches them by
/// email: `link` says that account stays and is reported; once they leave, one
/// reconcile deactivates both, and the episode it opens is named after the
/// person, not after the duplicate (whose userName sorts first in the plan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_persons_duplicate_stays_until_they_leave_then_goes_with_them() {
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let (person, _) = add_disputed_person(dir.path(), &client, "active").await;
    let id_of = |user_name: &str| {
        sandbox
            .snapshot()
            .accounts
            .into_iter()
            .find(|a| a.user_name == user_name)
            .unwrap()
            .id
    };
    let (by_name, by_email) = (
        id_of("nia.disputed@example.com"),
        id_of("nia.alias@example.com"),
    );
    reconcile_now(&config).await;
    let said = link_by_hand(dir.path(), &env, &person, &by_name);
    assert!(
        said.contains(&format!(
            "{by_email} (userName nia.alias@example.com) matched this person by email: the \
             person has access, so it is left active and reported as a duplicate"
        )),
        "{said}"
    );
    reconcile_now(&config).await;
    assert!(
        sandbox
            .snapshot()
            .accounts
            .iter()
            .all(|a| !(a.id == by_email || a.id == by_name) || a.active)
    );

    let directory_path = dir.path().join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    for user in full["users"].as_array_mut().unwrap() {
        if user["id"] == person.as_str() {
            user["status"] = "suspended".into();
        }
    }
    std::fs::write(&directory_path, full.to_string()).unwrap();
    let outcome = reconcile_now(&config).await;
    let mut deactivated: Vec<&str> = outcome
        .report
        .actions
        .iter()
        .filter(|a| a.op == "deactivate")
        .map(|a| a.subject.as_str())
        .collect();
    deactivated.sort_unstable();
    assert_eq!(
        deactivated,
        ["nia.alias@example.com", "nia.disputed@example.com"]
    );
    let store = Store::open(&config.state.path).unwrap();
    let history = store.deprovision_history(&person, 5).unwrap();
    let names: Vec<(&str, Option<&str>)> = history
        .iter()
        .map(|e| (e.user_name.as_str(), e.account_id.as_deref()))
        .collect();
    assert_eq!(
        names,
        [("nia.disputed@example.com", Some(by_name.as_str()))],
        "{history:#?}"
    );
    assert!(history[0].verified_at.is_some(), "{history:#?}");
    sandbox.shutdown().await;
}

/// A run that finds a disputed leaver plans nothing for them (no account is
/// chosen), yet she still has access: the report must not lead with "nothing to
/// do", the run does not exit 0, and the digest counts her deprovision as held,
/// needing attention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disputed_leaver_is_never_nothing_to_do() {
    use seatwarden::report::State;
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, config) = reconciled_demo().await;
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    add_disputed_person(dir.path(), &client, "suspended").await;
    let outcome = reconcile_now(&config).await;
    let (_, headline) = seatwarden::report::headline(&outcome.report, "seatwarden");
    assert_eq!(
        headline,
        "1 leaver still has access (disputed match) — needs `seatwarden link`"
    );
    assert_eq!(State::of(&outcome.report), State::NeedsAttention);
    assert_eq!(
        outcome.report.safety.disputed_leavers,
        ["nia.disputed@example.com"]
    );
    // Nor exit 0: a wrapper that reads only the exit code must see she waits.
    assert_eq!(
        seatwarden::cli::exit_code_for(&outcome.report),
        seatwarden::cli::exit::HELD
    );
    let text =
        seatwarden::report::render_text(&outcome.report, chrono_tz::UTC, "seatwarden", false);
    assert!(!text.contains("nothing to do"), "{text}");
    assert!(
        text.contains("DISPUTED LEAVERS")
            && text.contains("1 person lost access but still can get in"),
        "{text}"
    );

    let store = Store::open(&config.state.path).unwrap();
    let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
    let digest = seatwarden::report::digest::build_from_store(
        &store,
        "acme",
        chrono_tz::UTC,
        chrono::Utc::now() + chrono::Duration::seconds(1),
        std::time::Duration::from_secs(86_400),
        &deprovisions,
        "seatwarden",
    )
    .unwrap();
    assert_eq!(digest.state, State::NeedsAttention, "{}", digest.headline);
    assert!(
        digest.headline.contains("1 held deprovision"),
        "{}",
        digest.headline
    );
    sandbox.shutdown().await;
}

/// A sweep stopped between its writes (SIGTERM): the digest counts the write the
/// stop kept back as not sent, apart from the failures, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_counts_writes_a_stop_kept_back_as_not_sent() {
    use seatwarden::apply::{
        ApplyProgress, ProgressHook, StopSignal, until_stopped, with_progress,
    };
    use seatwarden::workspace::ScimClient;

    let (sandbox, dir, mut config) = reconciled_demo().await;
    config.workspace.max_concurrency = 1;
    remove_a_leaver(dir.path(), &sandbox);
    remove_a_leaver(dir.path(), &sandbox);
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let stop = StopSignal::new();
    let hook: ProgressHook = {
        let stop = stop.clone();
        Arc::new(move |progress| {
            if let ApplyProgress::Writing { done: 1, .. } = progress {
                stop.stop();
            }
        })
    };
    let sweeping = with_progress(hook, sweep_now(&config, &directory, &client, &store));
    let (_, unsent) = until_stopped(stop, sweeping).await;
    assert_eq!(unsent, 1);
    let store = Store::open(&config.state.path).unwrap();
    let digest =
        crate::fixtures::day_digest(&store, chrono::Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(
        (digest.period.actions_failed, digest.period.actions_not_sent),
        (0, 1),
        "{:?}",
        digest.period
    );
    let text = digest.render_text();
    assert!(
        text.contains(", 0 failed, 1 not sent (seatwarden was stopping), "),
        "{text}"
    );
    for rendered in [
        digest.render_markdown().unwrap(),
        digest.render_html().unwrap(),
    ] {
        assert!(
            rendered.contains("0 failed, 1 not sent (seatwarden was stopping)"),
            "{rendered}"
        );
    }
    sandbox.shutdown().await;
}

/// Right after a run, `explain` works from that run's snapshots, read before it
/// applied anything: it says so, lists what was applied since, and does not
/// offer the applied deactivation as the next run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_right_after_a_run_shows_what_it_applied_since_the_snapshot() {
    let (sandbox, dir, config) = reconciled_demo().await;
    let leaver = remove_a_leaver(dir.path(), &sandbox);
    let account = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.external_id.as_deref() == Some(leaver.as_str()))
        .unwrap();
    let outcome = reconcile_now(&config).await;
    let store = Store::open(&config.state.path).unwrap();
    let text = seatwarden::explain::explain(
        &config,
        &store,
        &account.user_name,
        chrono::Utc::now() + chrono::Duration::seconds(1),
    )
    .unwrap();
    let run = outcome.report.run_id;
    assert!(
        text.contains(&format!(
            "Workspace account (run {run} snapshot, read before that run applied anything)\n  \
             applied since this snapshot, not shown in it:\n    deactivate {} — run {run} #",
            account.user_name
        )),
        "{text}"
    );
    let next = text.split("\nNext run").nth(1).unwrap();
    assert!(
        next.contains("deactivate — already applied since the snapshot (run"),
        "{text}"
    );
    assert!(!next.contains("account is still active"), "{text}");
    sandbox.shutdown().await;
}

/// `seatwarden_actions_awaiting_approval` counts a deprovision the sweep's guard
/// held (it waits for `approve` like a reconcile's), once however often the sweep
/// re-checks it; and the process gauges exist from the start: the build, the start
/// time and the outbox backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deprovision_the_sweep_held_awaits_approval_in_the_metrics() {
    let (sandbox, dir, _config) = reconciled_demo().await;
    // The reconcile ran by hand: recorded as the daemon's, so it does not run again
    // at start (it would hold the leaver itself, and count it from its report).
    record_the_reconcile_as_the_daemons(dir.path());
    let mut env = daemon_env(dir.path(), &sandbox, "*/2 * * * * *");
    env.push(("SEATWARDEN__SAFETY__MAX_DEPROVISIONS".into(), "0".into()));
    let before_start = chrono::Utc::now().timestamp() as f64;
    let daemon = start_daemon(dir.path(), env);
    wait_for("/metrics", Duration::from_secs(30), || {
        daemon.get("/metrics").0 == 200
    })
    .await;
    let (_, metrics) = daemon.get("/metrics");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric(
            &metrics,
            &format!("seatwarden_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    let started = metric(&metrics, "seatwarden_start_time_seconds").unwrap();
    assert!(
        (before_start - 1.0..=chrono::Utc::now().timestamp() as f64 + 1.0).contains(&started),
        "started {started}, before {before_start}"
    );
    for series in [
        "seatwarden_outbox_messages{state=\"queued\"}",
        "seatwarden_outbox_messages{state=\"retrying\"}",
        "seatwarden_outbox_messages{state=\"failed\"}",
        "seatwarden_outbox_oldest_pending_age_seconds",
    ] {
        assert_eq!(metric(&metrics, series), Some(0.0), "{series}: {metrics}");
    }
    for name in [
        "seatwarden_build_info",
        "seatwarden_start_time_seconds",
        "seatwarden_outbox_messages",
        "seatwarden_outbox_oldest_pending_age_seconds",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no # HELP for {name}: {metrics}"
        );
    }

    // A leaver after the first sweep (which starts the directory's change cursor):
    // the sweep holds them (no deprovision allowed), in runs of its own.
    wait_for("the first sweep", Duration::from_secs(60), || {
        daemon.logged("job finished job=\"sweep\"")
    })
    .await;
    let leaver_id = remove_a_leaver(dir.path(), &sandbox);
    let held = |daemon: &Daemon| {
        let status: serde_json::Value =
            serde_json::from_str(&daemon.get("/status").1).unwrap_or_default();
        status["deprovisions"]["open"]
            .as_array()
            .is_some_and(|open| {
                open.iter()
                    .any(|l| l["identity_id"] == leaver_id.as_str() && !l["held"].is_null())
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !held(&daemon) {
        assert!(
            Instant::now() < deadline,
            "{leaver_id} not held: {}\n{}",
            daemon.get("/status").1,
            daemon.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let awaiting = metric(
        &daemon.get("/metrics").1,
        "seatwarden_actions_awaiting_approval",
    );
    assert_eq!(awaiting, Some(1.0));
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    sandbox.shutdown().await;
}

/// `POST /reconcile` answers what it did, and POSTs while a reconcile is queued or
/// running join that one: one run, however often the button is pressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_post_reconcile_joins_the_queued_or_running_one() {
    // Slow enough that the reconcile is seen running between two POSTs.
    let sandbox = demo_sandbox(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    std::fs::write(dir.path().join("trigger-token"), "s3cret-trigger\n").unwrap();
    env.push((
        "SEATWARDEN__HTTP__TRIGGER_TOKEN_FILE".into(),
        "trigger-token".into(),
    ));
    let daemon = start_daemon(dir.path(), env);
    wait_for(
        "the first reconcile (readyz)",
        Duration::from_secs(120),
        || daemon.get("/readyz").0 == 200,
    )
    .await;
    let database = dir.path().join("state.db");
    let reconciles = || -> Vec<i64> {
        let db = rusqlite::Connection::open(&database).unwrap();
        let mut stmt = db
            .prepare("SELECT id FROM runs WHERE kind = 'reconcile' ORDER BY id")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = reconciles();
    let port = daemon.port().unwrap();
    let post = || {
        let (code, body) = http(port, "POST", "/reconcile", Some("s3cret-trigger"));
        let answer: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{code} {body}: {e}"));
        (code, answer)
    };

    // Another writer (a command run by hand) holds the lock: the reconcile queues.
    let lock = seatwarden::store::WriterLock::acquire_blocking(&database, |_| {}).unwrap();
    let (code, first) = post();
    assert_eq!(
        (code, first["reconcile"].as_str()),
        (202, Some("queued")),
        "{first}"
    );
    assert!(first["run_id"].is_null(), "{first}");
    let (code, second) = post();
    assert_eq!(
        (code, second["reconcile"].as_str()),
        (200, Some("already_queued")),
        "{second}"
    );
    drop(lock);

    // Once it runs, a further POST joins it and names its run.
    let mut run_id = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while run_id.is_none() {
        let (code, answer) = post();
        assert_eq!(code, 200, "joins the reconcile under way: {answer}");
        run_id = answer["run_id"].as_i64();
        assert!(Instant::now() < deadline, "no run id: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("the reconcile to finish", Duration::from_secs(120), || {
        !daemon
            .get("/metrics")
            .1
            .contains("seatwarden_job_running{job_name=\"reconcile\"} 1")
    })
    .await;
    let after = reconciles();
    assert_eq!(
        after.len(),
        before.len() + 1,
        "one run for every POST: {after:?}"
    );
    assert_eq!(after.last().copied(), run_id);
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    sandbox.shutdown().await;
}

/// A workspace that stays down is warned about once, not at every pass of the
/// sweep and the retry job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_that_stays_down_is_warned_about_once() {
    let (sandbox, dir, _config) = reconciled_demo().await;
    record_the_reconcile_as_the_daemons(dir.path());
    let env = with_quick_retries(daemon_env(dir.path(), &sandbox, "* * * * * *"));
    sandbox.shutdown().await;
    let daemon = start_daemon(dir.path(), env);
    // Each pass (the sweep's and the retry job's, both at start) asks again.
    wait_for_sweep_passes(&daemon, 2).await;
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    let warnings = log
        .lines()
        .filter(|l| l.contains("cannot read the workspace's /ServiceProviderConfig"))
        .count();
    assert_eq!(warnings, 1, "{log}");
}

/// A token the workspace refuses (revoked, say) makes every request a 401: an
/// answer, but no sign the workspace can be used. A sweep with nothing due that
/// was refused everything fails, naming the request and the status, so its
/// failures in a row grow and alert, where it used to pass for a success. The
/// retry job with nothing due asks the workspace nothing: it neither fails on
/// the token it did not use nor passes for having reached the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_whose_token_is_refused_fails_naming_the_refusal() {
    let (sandbox, dir, _config) = reconciled_demo().await;
    record_the_reconcile_as_the_daemons(dir.path());
    let mut env = daemon_env(dir.path(), &sandbox, "* * * * * *");
    for (key, value) in &mut env {
        if key == "SEATWARDEN__WORKSPACE__TOKEN" {
            *value = "revoked-token".to_owned();
        }
    }
    let daemon = start_daemon(dir.path(), env);
    let sweep_ends = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains("job=\"sweep\"")
                    && (l.contains("job finished") || l.contains("job failed"))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sweep_ends(&daemon.log.lock().unwrap()) < 2 {
        assert!(
            Instant::now() < deadline,
            "not 2 sweeps: {}",
            daemon.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    sandbox.shutdown().await;
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("job=\"retry\"") && (l.contains("job finished") || l.contains("job failed"))
        })
        .collect();
    assert!(!retries.is_empty(), "{log}");
    for end in retries {
        assert!(end.contains("job finished"), "{end}\n{log}");
    }
    let ends: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("job=\"sweep\"") && (l.contains("job finished") || l.contains("job failed"))
        })
        .collect();
    assert!(ends.len() >= 2, "{log}");
    for end in ends {
        assert!(
            end.contains("job failed")
                && end.contains("GET /ServiceProviderConfig")
                && end.contains("HTTP 401")
                && end.contains("workspace.token"),
            "{end}\n{log}"
        );
    }
}

/// What the client counts of a 401: an answer (the workspace is up, for the
/// outage rule) but nothing served, and the refusal kept with its endpoint;
/// a 404 is served (the token was accepted), a 503 neither.
#[tokio::test]
async fn a_refused_token_is_an_answer_but_nothing_served() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/Users/refused"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .and(path("/Users/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&workspace)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&workspace)
        .await;
    let (_dir, config, _store) = against_mock_workspace(&workspace);
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(0);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();

    assert!(client.get_account("refused").await.is_err());
    assert_eq!((client.answers(), client.served_answers()), (1, 0));
    let refusal = client.auth_refusal().unwrap_or_default();
    assert!(
        refusal.contains("GET /Users/refused") && refusal.contains("HTTP 401"),
        "{refusal}"
    );
    assert!(client.get_account("down").await.is_err());
    assert_eq!((client.answers(), client.served_answers()), (1, 0));
    assert!(matches!(client.get_account("absent").await, Ok(None)));
    assert_eq!((client.answers(), client.served_answers()), (2, 1));
}

/// A workspace that stays down while a leaver is due: the sweep's "stopped
/// answering" warning comes once, when the outage starts, not at every pass of
/// the sweep and the retry job; its end is logged when the workspace is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_that_leaves_leavers_unread_is_warned_about_once() {
    let (sandbox, dir, _config) = reconciled_demo().await;
    record_the_reconcile_as_the_daemons(dir.path());
    let env = with_quick_retries(daemon_env(dir.path(), &sandbox, "* * * * * *"));
    remove_a_leaver(dir.path(), &sandbox);
    let address = format!(
        "{}:{}",
        sandbox.base_url().host_str().unwrap(),
        sandbox.base_url().port().unwrap()
    );
    sandbox.shutdown().await;
    let daemon = start_daemon(dir.path(), env);
    wait_for_sweep_passes(&daemon, 4).await;
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    let back = crate::fixtures::demo_sandbox_on(listener, TOKEN, Faults::default()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !daemon.logged("the workspace answers again") {
        assert!(
            Instant::now() < deadline,
            "the end of the outage not logged: {}",
            daemon.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    back.shutdown().await;
    // A pass before the leaver's episode is due may find the outage with nothing
    // to read ("0 of 0"): the first pass that leaves the leaver unread is then
    // news of its own (twice as many unread, see `outage_news`). Which pass comes
    // first is the scheduler's; a warning at every pass must not happen.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("the workspace stopped answering"))
        .skip_while(|l| l.contains("answering: 0 of 0 due accounts"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("due accounts were not read"), "{log}");
}

/// `reject` on a run the sweep's guard held binds only that run: the leaver's
/// episode stays open and the next pass holds the deprovision again (the guard
/// still holds it), never forgetting the leaver. `reject` says so, and the new
/// hold names the rejection (run, operator, time) instead of looking new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_sweep_hold_is_held_again_naming_the_rejection() {
    let SweepHeldLeaver {
        sandbox,
        _dir,
        config,
        leaver_id,
        store,
        client,
        directory,
        run,
        ..
    } = sweep_held_leaver().await;

    let rejection = seatwarden::approval::reject(
        &mut store.lock().unwrap(),
        run,
        &seatwarden::approval::Only::All,
        "seatwarden",
        chrono_tz::UTC,
        chrono::Utc::now(),
    )
    .unwrap();
    let said = rejection.to_string();
    assert!(
        said.contains(&format!("sweep run {run}"))
            && said.contains("the sweep's next pass")
            && said.contains("held again")
            && said.contains("safety.protected"),
        "{said}"
    );
    let operator = store
        .lock()
        .unwrap()
        .audit()
        .unwrap()
        .last()
        .unwrap()
        .user
        .clone();

    // The next pass, once the hold is due to be looked at again.
    let later = chrono::Utc::now() + chrono::Duration::minutes(16);
    let again = seatwarden::sweep::sweep(
        &config,
        &directory,
        &client,
        &store,
        later,
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(again.held, 1, "{again:?}");
    assert_ne!(again.run_id, Some(run));
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver_id).unwrap();
    let held = episode.held.as_deref().unwrap_or_default();
    assert!(
        held.starts_with(&format!("rejected in run {run} by {operator} at "))
            && held.contains("; held again: "),
        "{held}"
    );
    sandbox.shutdown().await;
}

/// While the daemon stops (SIGTERM came, a reconcile is finishing its write in
/// flight, the HTTP server still answers), `POST /reconcile` starts nothing and
/// says so: 503 `{"reconcile":"stopping"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reconcile_while_the_daemon_stops_answers_503_stopping() {
    // Slow enough that the reconcile's write in flight keeps the stop (and so the
    // HTTP server) going for a good while after the signal: at 500 ms a full
    // `cargo test` on two busy cores once missed the window.
    let sandbox = demo_sandbox(Faults {
        latency: Duration::from_millis(1000),
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = daemon_env(dir.path(), &sandbox, "0 0 1 1 *");
    std::fs::write(dir.path().join("trigger-token"), "s3cret-trigger\n").unwrap();
    env.push((
        "SEATWARDEN__HTTP__TRIGGER_TOKEN_FILE".into(),
        "trigger-token".into(),
    ));
    let writes_before = sandbox.stats().writes;
    let mut daemon = start_daemon(dir.path(), env);
    let port = daemon.listening().await;
    let post = || http(port, "POST", "/reconcile", Some("s3cret-trigger"));
    // The first reconcile (it runs at start) is writing, with a write in flight:
    // one answered says it is past its reads, and a write sent keeps the stop
    // (so the HTTP server) going for up to a second. Between two writes the
    // stop could end the run, and close the server, within a millisecond.
    wait_for(
        "the reconcile's first write and a write in flight",
        Duration::from_secs(120),
        || sandbox.stats().writes > writes_before && sandbox.requests_in_progress() > 0,
    )
    .await;
    let (code, body) = post();
    assert_eq!(code, 200, "joins the reconcile under way: {body}");

    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", daemon.child.id())])
        .status();
    // Until the daemon has seen the signal, a POST joins the running reconcile;
    // from then on it is refused, until the server closes after the jobs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (code, body) = loop {
        let (code, body) = post();
        if code != 200 {
            break (code, body);
        }
        assert!(Instant::now() < deadline, "still joining: {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_ne!(
        code,
        0,
        "the HTTP server closed before a POST saw the daemon stopping: {}",
        daemon.log.lock().unwrap()
    );
    assert_eq!(code, 503, "{body}");
    let answer: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(answer["reconcile"], "stopping", "{answer}");
    assert!(answer["run_id"].is_null(), "{answer}");
    // Read from the whole log once the daemon exited: the 503 can come back
    // before the thread copying its stderr has caught up with the line.
    let (code, log) = daemon.terminate();
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert_eq!(code, Some(0), "{log}");
    // The refused POST started nothing: the one reconcile, stopped.
    let reconciles: i64 = rusqlite::Connection::open(dir.path().join("state.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM runs WHERE kind = 'reconcile'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(reconciles, 1, "{log}");
    sandbox.shutdown().await;
}

/// Records the reconcile run by hand as the daemon's, so that the daemon does not
/// run one again at start (it would plan, and hold, what the test means the sweep
/// to find).
fn record_the_reconcile_as_the_daemons(dir: &Path) {
    let mut store = Store::open(&dir.join("state.db")).unwrap();
    let now = chrono::Utc::now();
    store.job_started("reconcile", now).unwrap();
    store
        .job_finished(
            "reconcile",
            now,
            seatwarden::store::RunStatus::Succeeded,
            None,
        )
        .unwrap();
}

/// Waits (up to two minutes) until the sweep and the retry job have ended `count`
/// passes between them, finished or failed.
async fn wait_for_sweep_passes(daemon: &Daemon, count: usize) {
    let passes = || {
        daemon
            .log
            .lock()
            .unwrap()
            .lines()
            .filter(|l| {
                (l.contains("job=\"sweep\"") || l.contains("job=\"retry\""))
                    && (l.contains("job finished") || l.contains("job failed"))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while passes() < count {
        assert!(
            Instant::now() < deadline,
            "not {count} passes: {}",
            daemon.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A reconciled demo whose sweep pass holds one leaver: the day's deprovision
/// limit is already reached.
struct SweepHeldLeaver {
    sandbox: Sandbox,
    _dir: tempfile::TempDir,
    config: seatwarden::config::Config,
    leaver_id: String,
    store: Arc<Mutex<Store>>,
    client: seatwarden::workspace::ScimClient,
    directory: seatwarden::directory::Directory,
    outcome: seatwarden::sweep::SweepOutcome,
    run: i64,
    now: chrono::DateTime<chrono::Utc>,
}

async fn sweep_held_leaver() -> SweepHeldLeaver {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let leaver_id = remove_a_leaver(dir.path(), &sandbox);
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let now = chrono::Utc::now();
    let today = store
        .lock()
        .unwrap()
        .deprovisions_since(now - chrono::Duration::hours(24))
        .unwrap();
    config.safety.max_deprovisions_per_day = usize::try_from(today).unwrap();
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!(outcome.held, 1, "{outcome:?}");
    let run = outcome.run_id.unwrap();
    SweepHeldLeaver {
        sandbox,
        _dir: dir,
        config,
        leaver_id,
        store,
        client,
        directory,
        outcome,
        run,
        now,
    }
}

/// The contradicted-link hold tells the command that moves the link as people
/// run seatwarden here (`report.admin_command`), as the alerts, `status` and the
/// digest do: `seatwarden link …` may not be how, or against which config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contradicted_link_hold_names_the_configured_admin_command() {
    use seatwarden::model::{Attribute, AttributeChange};

    let (sandbox, dir, mut config) = reconciled_demo().await;
    let admin = "sudo -u seatwarden seatwarden --config /etc/seatwarden/acme.toml";
    config.report.admin_command = Some(admin.to_owned());
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let directory = config.directory();
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let directory_path = dir.path().join("directory.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory_path).unwrap()).unwrap();
    let mut users = full["users"].as_array().unwrap().clone();
    let workspace = sandbox.snapshot();
    let candidates: Vec<usize> = (0..users.len())
        .filter(|&i| is_active_non_owner(&users[i], &workspace))
        .collect();
    let (leaver, colleague) = (candidates[0], candidates[1]);
    let leaver_id = users[leaver]["id"].as_str().unwrap().to_owned();
    let colleague_id = users[colleague]["id"].as_str().unwrap().to_owned();
    let account = workspace
        .accounts
        .iter()
        .find(|a| a.external_id.as_deref() == Some(leaver_id.as_str()))
        .unwrap()
        .clone();
    // An admin reassigned the leaver's account to the colleague by its externalId.
    client
        .update_attributes(
            &account.id,
            &[AttributeChange {
                attribute: Attribute::ExternalId,
                from: Some(leaver_id.clone()),
                to: Some(colleague_id.clone()),
            }],
        )
        .await
        .unwrap();
    users.remove(leaver);
    std::fs::write(
        &directory_path,
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();

    let outcome = sweep_now(&config, &directory, &client, &store).await;
    assert_eq!(outcome.held, 1, "{outcome:?}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let episode = open.iter().find(|e| e.identity_id == leaver_id).unwrap();
    let held = episode.held.clone().unwrap_or_default();
    assert!(
        held.starts_with(seatwarden::sweep::CONTRADICTED_LINK_HOLD)
            && held.contains(&format!(
                "`{admin} link {colleague_id} {} --replace` moves the link",
                account.id
            )),
        "{held}"
    );
    sandbox.shutdown().await;
}

/// A sweep that holds again a deprovision someone rejected alerts at once, and
/// that alert says the deprovision was rejected before (run, operator, time on
/// the report's clock) and why it is back, so that the on-call person does not
/// decide afresh without knowing a decision was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_for_a_rejected_sweep_hold_held_again_names_the_rejection() {
    let SweepHeldLeaver {
        sandbox,
        _dir,
        config,
        leaver_id,
        store,
        client,
        directory,
        run,
        ..
    } = sweep_held_leaver().await;
    seatwarden::approval::reject(
        &mut store.lock().unwrap(),
        run,
        &seatwarden::approval::Only::All,
        "seatwarden",
        chrono_tz::UTC,
        chrono::Utc::now(),
    )
    .unwrap();
    let rejection = store.lock().unwrap().audit().unwrap().pop().unwrap();

    let later = chrono::Utc::now() + chrono::Duration::minutes(16);
    let again = seatwarden::sweep::sweep(
        &config,
        &directory,
        &client,
        &store,
        later,
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(again.held, 1, "{again:?}");
    let again_run = again.run_id.unwrap();

    // Alerts on the clock of Europe/Berlin, as configured for the reports.
    let mail_dir = tempfile::tempdir().unwrap();
    let mail_config = mail_dir.path().join("seatwarden.toml");
    std::fs::write(
        &mail_config,
        "[directory]\nkind = \"file\"\npath = \"d.json\"\n\
         [workspace]\nurl = \"https://acme.example/scim/v2\"\ntoken = \"t\"\n\
         [report]\ntimezone = \"Europe/Berlin\"\n\
         [report.email]\nsmtp_url = \"smtp://127.0.0.1:9\"\nfrom = \"sw@example.com\"\n\
         to = [\"sec@example.com\"]\n",
    )
    .unwrap();
    let notifier = seatwarden::daemon::notify::Notifier::from_config(
        &seatwarden::config::Config::load_with_env(&mail_config, Some(Default::default())).unwrap(),
    )
    .unwrap();
    notifier.after_sweep(&mut store.lock().unwrap(), &again, later);
    let alerts = alerts_in(&store.lock().unwrap());
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0].message;
    assert!(
        alert.subject.ends_with(&format!(
            "1 deprovision held by the guard in sweep run {again_run}, rejected before"
        )),
        "{}",
        alert.subject
    );
    let rejected_at = rejection
        .at
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d %H:%M %:z (%Z)");
    for line in [
        format!(
            "(directory id {leaver_id}); rejected before, in run {run} by {} at {rejected_at}",
            rejection.user
        ),
        "a rejection binds only its run".to_owned(),
        "protect the account (safety.protected)".to_owned(),
    ] {
        assert!(alert.text.contains(&line), "{line}\n{}", alert.text);
    }
    sandbox.shutdown().await;
}

/// `env` with the workspace's requests retried twice, 10 ms apart at first: a
/// daemon against a workspace that is down learns so in milliseconds, where the
/// default retries take some 20 s of every pass.
fn with_quick_retries(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.push(("SEATWARDEN__WORKSPACE__RETRIES".to_owned(), "2".to_owned()));
    env.push((
        "SEATWARDEN__WORKSPACE__RETRY_DELAY".to_owned(),
        "10ms".to_owned(),
    ));
    env
}

/// An episode that falls due while a slow pass is reading is escalated by that
/// pass, judged at its end, not by the next one (a minute or more later).
#[tokio::test]
async fn a_pass_that_outlasts_the_due_time_escalates_at_its_end() {
    use chrono::{Duration as Minutes, Utc};
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let workspace = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_millis(400)))
        .mount(&workspace)
        .await;
    let (_dir, config, store) = against_mock_workspace(&workspace);
    let now = Utc::now();
    // Due 300 ms into the pass; its reads take 400 ms each.
    let detected = now - Minutes::hours(1) + Minutes::milliseconds(300);
    open_gone_episode(&store, detected);
    let mut settings = config.scim_settings().unwrap();
    settings.retry = seatwarden::retry::RetryPolicy::immediate(1);
    let client = seatwarden::workspace::ScimClient::new(settings).unwrap();

    let outcome = seatwarden::sweep::enforce(&config, &client, &store, now)
        .await
        .unwrap();
    assert_eq!(outcome.escalated.len(), 1, "{outcome:?}");
    let open = store.lock().unwrap().open_deprovisions().unwrap();
    let escalated_at = open[0].escalated_at.expect("escalated");
    assert!(escalated_at >= open[0].due_at, "{:?}", open[0]);
}
