//! Shared test setup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use seatwarden::config::Config;
use seatwarden::sandbox::{Faults, Sandbox, SandboxOptions};
use seatwarden::synth::{self, Synth};

/// A configuration in `dir` for the workspace at `url` (token `t0ken`, no settle
/// window) and a directory file of one person, Ada (id `00u1`), with `status`.
pub fn ada_config(url: &str, dir: &Path, status: &str) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        serde_json::json!({"users": [{
            "id": "00u1", "userName": "ada@example.com", "email": "ada@example.com",
            "givenName": "Ada", "familyName": "Lovelace", "displayName": "Ada Lovelace",
            "status": status, "groups": []
        }]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t0ken\"\n\n[safety]\nsettle = \"0s\"\n"
        ),
    )
    .unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(Default::default())).unwrap()
}

/// `seed` served by the in-process sandbox on a free loopback port, with bearer
/// `token`.
pub async fn sandbox(token: &str, seed: seatwarden::model::WorkspaceSnapshot) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: token.to_owned(),
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap()
}

/// The demo's workspace (`config/demo/workspace.json`) served by the in-process
/// sandbox on a free loopback port, with bearer `token` and `faults`.
pub async fn demo_sandbox(token: &str, faults: Faults) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    demo_sandbox_on(listener, token, faults).await
}

/// [`demo_sandbox`] on `listener` (bound, say, to the address of one stopped).
pub async fn demo_sandbox_on(
    listener: tokio::net::TcpListener,
    token: &str,
    faults: Faults,
) -> Sandbox {
    let seed = seatwarden::sandbox::load_seed(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo/workspace.json"),
    )
    .unwrap();
    Sandbox::start(
        listener,
        SandboxOptions {
            token: token.to_owned(),
            faults,
            ..SandboxOptions::default()
        },
        seed,
    )
    .await
    .unwrap()
}

/// Copies the demo's configuration and directory (`config/demo`) into `dir`.
pub fn copy_demo_files(dir: &Path) {
    for file in ["seatwarden.toml", "directory.json"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/demo")
                .join(file),
            dir.join(file),
        )
        .unwrap();
    }
}

/// The demo's configuration and directory (`config/demo`) in `dir`, pointed at
/// `sandbox` with `token`, the state database `state.db` beside them, and `more`
/// overrides: the environment (for the binary too) and the configuration loaded
/// with it.
pub fn demo_env(
    dir: &Path,
    sandbox: &Sandbox,
    token: &str,
    more: &[(&str, &str)],
) -> (Vec<(String, String)>, Config) {
    copy_demo_files(dir);
    let env: Vec<(String, String)> = [
        ("SEATWARDEN__WORKSPACE__URL", sandbox.base_url().to_string()),
        ("SEATWARDEN__WORKSPACE__TOKEN", token.to_owned()),
        ("SEATWARDEN__STATE__PATH", "state.db".to_owned()),
    ]
    .into_iter()
    .chain(
        more.iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    )
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let config = Config::load_with_env(
        &dir.join("seatwarden.toml"),
        Some(env.iter().cloned().collect()),
    )
    .unwrap();
    (env, config)
}

/// Writes the synthetic directory and a configuration mapping its groups (scope
/// "Taskade Users", default Viewer, thresholds out of the way) for the workspace
/// at `url`, and loads it.
pub fn synth_config(
    dir: &Path,
    data: &Synth,
    url: &str,
    token: &str,
    max_concurrency: usize,
) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
    synth_config_with_directory(
        dir,
        data,
        url,
        token,
        max_concurrency,
        "kind = \"file\"\npath = \"directory.json\"\n",
    )
}

/// [`synth_config`] with the `[directory]` section's body given (a connector).
pub fn synth_config_with_directory(
    dir: &Path,
    data: &Synth,
    url: &str,
    token: &str,
    max_concurrency: usize,
    directory: &str,
) -> Config {
    let mut toml = format!(
        "[directory]\n{directory}\n\
         [workspace]\nurl = \"{url}\"\ntoken = \"{token}\"\nmax_concurrency = {max_concurrency}\n\
         requests_per_second = 10000\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [safety]\nmax_deprovisions = 1000\nmax_deprovision_percent = 100\nmax_deprovisions_per_day = 100000\n\
         max_membership_removals_per_day = 100000\nmax_role_downgrades = 100000\nmax_role_downgrades_per_day = 100000\n\
         max_membership_removals = 100000\nsettle = \"0s\"\n"
    );
    for (group, role) in &data.roles {
        toml.push_str(&format!(
            "\n[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"{group}\"\nrole = \"{role}\"\n"
        ));
    }
    std::fs::write(dir.join("seatwarden.toml"), toml).unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

/// Writes the synthetic directory and a configuration mapping its groups (scope
/// "Taskade Users", default Viewer) for the workspace at `url` with bearer
/// `token`, four requests at a time, no deprovision threshold in the way, and
/// `circuit` as the body of the `[safety.circuit]` table (empty: the defaults);
/// loads it.
pub fn synth_config_unlimited(
    dir: &Path,
    data: &Synth,
    url: &str,
    token: &str,
    circuit: &str,
) -> Config {
    std::fs::write(
        dir.join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
    let mut toml = format!(
        "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\n\
         [workspace]\nurl = \"{url}\"\ntoken = \"{token}\"\nmax_concurrency = 4\n\
         requests_per_second = 10000\n\n\
         [policy]\nscope_groups = [\"Taskade Users\"]\ndefault_role = \"Viewer\"\n\n\
         [safety]\nmax_deprovisions = 100000\nmax_deprovision_percent = 100\n\
         min_population_for_percent = 100000\nsettle = \"0s\"\n\n\
         [safety.circuit]\n{circuit}\n"
    );
    for (group, role) in &data.roles {
        toml.push_str(&format!(
            "\n[[policy.mapping]]\ngroup = \"{group}\"\nworkspace_group = \"{group}\"\nrole = \"{role}\"\n"
        ));
    }
    std::fs::write(dir.join("seatwarden.toml"), toml).unwrap();
    Config::load_with_env(&dir.join("seatwarden.toml"), Some(HashMap::new())).unwrap()
}

/// A reconcile that did something and left nothing failed, held or unverified.
pub fn assert_clean_reconcile(report: &seatwarden::report::Report) {
    let summary = &report.summary;
    assert_eq!(
        summary.actions_failed,
        0,
        "{:#?}",
        report
            .actions
            .iter()
            .filter(|a| a.error.is_some())
            .collect::<Vec<_>>()
    );
    assert_eq!(summary.actions_held, 0);
    assert!(summary.actions_applied > 0);
    assert!(summary.converged);
}

/// One reconcile of `config` on its own state database, which must not fail.
pub async fn reconcile(config: &seatwarden::config::Config) -> seatwarden::run::RunOutcome {
    seatwarden::run::execute(
        config,
        seatwarden::store::Store::open(&config.state.path).unwrap(),
        seatwarden::run::Mode::Reconcile,
    )
    .await
    .unwrap()
}

/// [`reconcile`] judged at `at` (the safety rules' and the exceptions' time).
pub async fn reconcile_at(
    config: &seatwarden::config::Config,
    at: chrono::DateTime<chrono::Utc>,
) -> seatwarden::run::RunOutcome {
    use seatwarden::run::{self, Mode, RunOptions};
    let client = seatwarden::workspace::ScimClient::new(config.scim_settings().unwrap()).unwrap();
    run::execute_with_options(
        config,
        &run::directory_from_config(config),
        &client,
        seatwarden::store::Store::open(&config.state.path).unwrap(),
        Mode::Reconcile,
        RunOptions {
            now: Some(at),
            ..RunOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A reconcile that must end clean, then a plan that must be empty: the run
/// converged. Returns the reconcile's outcome.
pub async fn assert_converges(config: &seatwarden::config::Config) -> seatwarden::run::RunOutcome {
    let open = || seatwarden::store::Store::open(&config.state.path).unwrap();
    let first = seatwarden::run::execute(config, open(), seatwarden::run::Mode::Reconcile)
        .await
        .unwrap();
    assert_clean_reconcile(&first.report);
    let second = seatwarden::run::execute(config, open(), seatwarden::run::Mode::Plan)
        .await
        .unwrap();
    assert!(second.plan.is_empty(), "{:#?}", second.plan.actions);
    first
}

/// Every leaver (suspended or deprovisioned) of `data` whose account was in the
/// workspace `data` describes still has that account in `workspace` (found by its
/// userName, exactly once), inactive. There must be at least one such leaver: a
/// scenario without any checks nothing.
pub fn assert_leavers_inactive(data: &Synth, workspace: &seatwarden::model::WorkspaceSnapshot) {
    let leavers: std::collections::HashSet<&str> = data
        .directory
        .identities
        .iter()
        .filter(|i| i.status != seatwarden::model::IdentityStatus::Active)
        .map(|i| i.id.as_str())
        .collect();
    let expected: Vec<&seatwarden::model::Account> = data
        .workspace
        .accounts
        .iter()
        .filter(|a| {
            a.external_id
                .as_deref()
                .is_some_and(|id| leavers.contains(id))
        })
        .collect();
    assert!(
        !expected.is_empty(),
        "the scenario has no leaver with an account"
    );
    for seeded in expected {
        let found: Vec<&seatwarden::model::Account> = workspace
            .accounts
            .iter()
            .filter(|a| a.user_name.eq_ignore_ascii_case(&seeded.user_name))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "the leaver {} should still have one account: {found:?}",
            seeded.user_name
        );
        assert!(!found[0].active, "{} should be inactive", seeded.user_name);
    }
}

/// An HTTPS server on loopback whose certificate (self-signed for "seatwarden
/// test", `tests/fixtures/keys`) no client trusts; returns its base URL and how
/// many connections it has accepted. Each handshake runs until the client gives up.
pub fn untrusted_tls_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let keys = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys"));
    let cert = CertificateDer::from_pem_file(keys.join("test-cert.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(keys.join("test-rsa-pkcs8.pem")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            accepted.fetch_add(1, Ordering::SeqCst);
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let _ = tls.read(&mut [0; 1]);
        }
    });
    (url, connections)
}

/// Mail settings for a plain (no TLS, no login) SMTP server on 127.0.0.1:`port`,
/// from seatwarden@example.com to it-security@example.com, one attempt per call.
pub fn plain_mail_settings(port: u16) -> seatwarden::mail::MailSettings {
    use seatwarden::mail;
    mail::MailSettings {
        endpoint: mail::SmtpEndpoint {
            host: "127.0.0.1".into(),
            port,
            tls: mail::TlsMode::None,
        },
        username: None,
        password: None,
        from: "seatwarden@example.com".into(),
        to: vec!["it-security@example.com".into()],
        ca_pem: None,
        timeout: std::time::Duration::from_secs(5),
        quiet_period: std::time::Duration::from_secs(3600),
        resolve_after: std::time::Duration::from_secs(3600),
        retry: seatwarden::retry::RetryPolicy::immediate(1),
    }
}

/// `seatwarden daemon` on the configuration in `dir` with `env`, every job run
/// once at start and not again (the schedules fire on 1 January), its HTTP
/// listener on a free port, logging at info to `daemon.log` in `dir`: the child
/// and the log's path.
pub fn spawn_daemon_once(
    dir: &Path,
    env: &[(String, String)],
) -> (std::process::Child, std::path::PathBuf) {
    let mut env = env.to_vec();
    env.extend(
        [
            ("SEATWARDEN__SCHEDULE__RECONCILE", "0 0 1 1 *".to_owned()),
            ("SEATWARDEN__SCHEDULE__SWEEP", "0 0 1 1 *".to_owned()),
            // A port of its own ([`listening_port`] tells which).
            ("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    spawn_daemon_with(dir, &env)
}

/// `seatwarden daemon` on the configuration in `dir` with `env` alone (its
/// schedules and listener as they say), logging at info to `daemon.log` in
/// `dir`: the child and the log's path.
pub fn spawn_daemon_with(
    dir: &Path,
    env: &[(String, String)],
) -> (std::process::Child, std::path::PathBuf) {
    let log = dir.join("daemon.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .arg("daemon")
        .env_remove("SEATWARDEN_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn,seatwarden=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `child`'s exit status, polled off the runtime's threads; killed, and the test
/// failed, if it has not exited within a minute (`what` names it).
pub async fn exit_of(
    mut child: std::process::Child,
    what: &'static str,
) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{what} did not exit within a minute of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    })
    .await
    .unwrap()
}

/// The port a daemon started with `http.listen` on port 0 says it listens on, in
/// its "daemon started" line, if `log` (what it logged so far) has that line.
pub fn logged_port(log: &str) -> Option<u16> {
    log.lines()
        .filter(|line| line.contains("daemon started"))
        .find_map(|line| line.split("listen=127.0.0.1:").nth(1))
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
}

/// The port `daemon`, started on port 0, says it listens on ([`logged_port`];
/// `log` reads what it logged so far), waiting up to a minute. A port picked free
/// and released before the daemon binds it can be taken by another test first:
/// the daemon then exited, and its waits timed out a minute later under a
/// loaded machine.
pub async fn listening_port(daemon: &mut std::process::Child, log: impl Fn() -> String) -> u16 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let logged = log();
        if let Some(port) = logged_port(&logged) {
            return port;
        }
        if let Some(exited) = daemon.try_wait().unwrap() {
            panic!("the daemon exited ({exited}) before it listened:\n{logged}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never said where it listens:\n{logged}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The daemon's `/metrics` on `port` once its first reconcile has succeeded
/// (at most a minute; the daemon's `log` shown if not).
pub async fn metrics_once_reconciled(port: u16, log: &Path) -> String {
    let succeeded = r#"seatwarden_job_runs_total{job_name="reconcile",status="succeeded"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, metrics) = http_get(port, "/metrics");
        if code == 200 && crate::review_s41_ops::sample(&metrics, succeeded) == Some(1.0) {
            return metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reconcile did not succeed: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `GET path` on a daemon's listener at `port`: the status (0 when nothing
/// answered) and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
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

/// `seatwarden ARGS` on the configuration `seatwarden.toml` in `dir` with `env`
/// (no `SEATWARDEN_CONFIG` or `SEATWARDEN_LOCK_TIMEOUT` from the test's own): its
/// exit code and stderr.
pub fn seatwarden_in(dir: &Path, env: &[(String, String)], args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `done` every 100 ms until it holds or `limit` has passed (then once
/// more); whether it held. Sleeps on the runtime, so a daemon or server the test
/// runs in-process goes on meanwhile.
pub async fn poll_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    done()
}

/// The digest of the day up to `now` of the workspace "acme", on UTC.
pub fn day_digest(
    store: &seatwarden::store::Store,
    now: chrono::DateTime<chrono::Utc>,
) -> seatwarden::report::digest::Digest {
    seatwarden::report::digest::build_from_store(
        store,
        "acme",
        chrono_tz::UTC,
        now,
        std::time::Duration::from_secs(86_400),
        &[],
        "seatwarden",
    )
    .unwrap()
}
