//! Session 38's review of the daemon and its operations surface, as the SRE who
//! runs it: a command that finds the writer lock held says at once who holds it
//! (the daemon's job or another command, its pid and since when) and gives up
//! after `--lock-timeout` with exit 75, having done nothing; the daemon's jobs
//! name themselves in the lock file and say whom they wait for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use seatwarden::sandbox::{Faults, Sandbox};
use seatwarden::store::{Acquired, Store, WriterLock, lock_holder};

use crate::fixtures::http_get as get;

const TOKEN: &str = "review-s38-token";

/// `seatwarden ARGS` on the configuration in `dir` with `env`, its stderr piped.
fn seatwarden(dir: &Path, env: &[(String, String)], args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `child`'s exit code and stderr, each stderr line with when it came (from
/// `started`); the test fails if it has not exited within `limit`.
async fn finished(
    mut child: Child,
    started: Instant,
    limit: Duration,
) -> (Option<i32>, Vec<(Duration, String)>) {
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|line| (started.elapsed(), line))
            .collect::<Vec<_>>()
    });
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("still running after {limit:?}: it waits for the writer lock unbounded");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    (status.code(), reader.join().unwrap())
}

/// A daemon killed when the test ends, however it ends: one a failed assertion
/// left running would hold its port and database until the machine reboots.
struct Running(Option<Child>);

impl Running {
    /// SIGTERM, and its exit code.
    async fn stop(mut self) -> Option<i32> {
        let child = self.0.take().unwrap();
        crate::fixtures::sigterm(&child);
        crate::fixtures::exit_of(child, "the daemon").await.code()
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

/// The writer lock of `database`, taken at once as `what` (a command run by
/// hand); nobody else may hold it.
fn hold_writer_lock(database: &Path, what: &str) -> WriterLock {
    match WriterLock::acquire_within(database, what, None, |_, _| panic!("nobody else holds it"))
        .unwrap()
    {
        Acquired::Taken(held) => held,
        Acquired::Busy { .. } => panic!("nobody else holds it"),
    }
}

fn all(lines: &[(Duration, String)]) -> String {
    lines
        .iter()
        .map(|(_, line)| line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn demo(latency: Duration) -> (Sandbox, tempfile::TempDir, Vec<(String, String)>) {
    let sandbox = crate::fixtures::demo_sandbox(
        TOKEN,
        Faults {
            latency,
            ..Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = crate::fixtures::demo_env(dir.path(), &sandbox, TOKEN, &[]);
    (sandbox, dir, env)
}

/// A `reconcile` (from cron, or by hand) while the daemon's reconcile holds the
/// writer lock: it used to wait without limit, saying only that "another
/// seatwarden process" held it, which an operator took for a hang. It says at
/// once who holds the lock (what, pid, since when), gives up after its
/// `--lock-timeout` with exit 75 and says why, having sent nothing and begun no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_finding_the_writer_lock_held_names_the_holder_and_gives_up_with_75() {
    let (sandbox, dir, env) = demo(Duration::ZERO).await;
    let database = dir.path().join("state.db");
    let Acquired::Taken(held) =
        WriterLock::acquire_within(&database, "the daemon's reconcile job", None, |_, _| {
            panic!("nobody else holds it")
        })
        .unwrap()
    else {
        panic!("nobody else holds it")
    };
    // A 10 s timeout: "at once" is then anything under 9 s from the spawn, room
    // for a loaded machine to start the process (with 2 s, under 1.9 s left
    // little), and still far from the line that gives up.
    let started = Instant::now();
    let child = seatwarden(dir.path(), &env, &["reconcile", "--lock-timeout", "10s"]);
    let (code, lines) = finished(child, started, Duration::from_secs(60)).await;
    let stderr = all(&lines);
    assert_eq!(code, Some(75), "{stderr}");
    let holder = format!(
        "the daemon's reconcile job (pid {}), since ",
        std::process::id()
    );
    let (said_at, waiting) = lines
        .iter()
        .find(|(_, line)| line.starts_with("waiting: "))
        .unwrap_or_else(|| panic!("no waiting line: {stderr}"));
    assert!(
        waiting.contains("another seatwarden process holds the state database's writer lock")
            && waiting.contains(&holder)
            && waiting.contains("giving up after 10s (--lock-timeout)"),
        "{waiting}"
    );
    assert!(
        *said_at < Duration::from_secs(9),
        "said only at {said_at:?}, not at once"
    );
    let gave_up = lines.last().map(|(at, line)| (*at, line.as_str())).unwrap();
    assert!(gave_up.0 >= Duration::from_secs(10), "{gave_up:?}");
    assert!(
        gave_up
            .1
            .contains("writer lock is still held after 10s (--lock-timeout), by ")
            && gave_up.1.contains(&holder)
            && gave_up.1.contains("nothing was done"),
        "{stderr}"
    );
    assert_eq!(sandbox.stats().requests, 0, "nothing sent");
    assert!(
        !database.exists(),
        "no run begun: the database is not even made"
    );
    drop(held);
}

/// `approve` gives up at once with `SEATWARDEN_LOCK_TIMEOUT=0` (a script that
/// would rather retry than queue behind the daemon), also exit 75, naming the
/// command that holds the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_with_no_patience_gives_up_at_once() {
    let (_sandbox, dir, mut env) = demo(Duration::ZERO).await;
    let database = dir.path().join("state.db");
    drop(Store::open(&database).unwrap());
    let held = hold_writer_lock(&database, "the command `seatwarden reconcile`");
    env.push(("SEATWARDEN_LOCK_TIMEOUT".into(), "0".into()));
    let started = Instant::now();
    let child = seatwarden(dir.path(), &env, &["approve", "1"]);
    let (code, lines) = finished(child, started, Duration::from_secs(30)).await;
    let stderr = all(&lines);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the command `seatwarden reconcile` (pid {})",
            std::process::id()
        )) && stderr.contains("not waiting (--lock-timeout 0)"),
        "{stderr}"
    );
    drop(held);
}

/// The daemon's jobs name themselves in the lock file: a command run while the
/// daemon reconciles says it is the daemon's reconcile job, with the daemon's pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_run_while_the_daemon_reconciles_names_the_daemons_job() {
    // Slow enough that the start-up reconcile holds the lock for seconds.
    let (_sandbox, dir, env) = demo(Duration::from_millis(300)).await;
    let (daemon, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let daemon = Running(Some(daemon));
    let lock = WriterLock::path(&dir.path().join("state.db"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if lock_holder(&lock).is_some_and(|h| h.what == "the daemon's reconcile job") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon's reconcile never named itself: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let child = seatwarden(dir.path(), &env, &["reconcile", "--lock-timeout", "0"]);
    let (code, lines) = finished(child, Instant::now(), Duration::from_secs(30)).await;
    let stderr = all(&lines);
    assert_eq!(daemon.stop().await, Some(0));
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains("the daemon's reconcile job (pid "),
        "{stderr}"
    );
}

/// A daemon job that has to wait for a command run by hand logs whom it waits
/// for, and runs once the command is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_job_waiting_for_a_command_names_it() {
    let (_sandbox, dir, env) = demo(Duration::ZERO).await;
    let database = dir.path().join("state.db");
    let held = hold_writer_lock(&database, "the command `seatwarden approve`");
    let (daemon, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let daemon = Running(Some(daemon));
    let logged = |text: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(text)
    };
    let holder = format!(
        "the command `seatwarden approve` (pid {})",
        std::process::id()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(logged("waiting for a seatwarden command run by hand to finish") && logged(&holder)) {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logged("job finished") {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(daemon.stop().await, Some(0));
}

/// `seatwarden daemon` on the configuration in `dir` with `env` and `more`
/// overrides, listening on a port of its own (`fixtures::listening_port` tells
/// which), logging at info to `daemon.log` in `dir`.
fn spawn_daemon(
    dir: &Path,
    env: &[(String, String)],
    more: &[(&str, &str)],
) -> (Running, std::path::PathBuf) {
    let log = dir.join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .arg("daemon")
        .env_remove("SEATWARDEN_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("SEATWARDEN__SCHEDULE__RECONCILE", "0 0 1 1 *")
        .env("SEATWARDEN__SCHEDULE__SWEEP", "0 0 1 1 *")
        .env("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0")
        .envs(more.iter().copied())
        .env("RUST_LOG", "warn,seatwarden=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Running(Some(child)), log)
}

async fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the daemon logged:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A state database deleted under a running daemon (a cleanup script, a volume
/// swapped): the daemon's own connection kept the deleted file alive, so
/// `/readyz` stayed 200, and the next job opened the path and made a new, empty
/// database, forgetting the open deprovisions, held actions, links, 24 h counts
/// and an open breaker without a word. `/readyz` now says it is gone, and jobs
/// fail rather than make it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_database_deleted_under_the_daemon_is_not_made_again_empty() {
    let (_sandbox, dir, env) = demo(Duration::ZERO).await;
    // A sweep every 2 s: jobs keep coming after the database is gone.
    let (mut daemon, log) = spawn_daemon(
        dir.path(),
        &env,
        &[("SEATWARDEN__SCHEDULE__SWEEP", "*/2 * * * * *")],
    );
    let port = crate::fixtures::listening_port(daemon.0.as_mut().unwrap(), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    wait_for("/readyz to answer 200", &log, || {
        get(port, "/readyz").0 == 200
    })
    .await;
    let database = dir.path().join("state.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut path = database.clone().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    wait_for("/readyz to say the database is gone", &log, || {
        let (code, body) = get(port, "/readyz");
        code == 503 && body.contains("is gone since the daemon started")
    })
    .await;
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("a sweep to fail on it", &log, || {
        let log = logged();
        log.contains("job failed") && log.contains("is gone since the daemon started")
    })
    .await;
    assert!(!database.exists(), "made again:\n{}", logged());
    // Liveness is not readiness: a restart would begin a new database.
    assert_eq!(get(port, "/healthz").0, 200);
    assert_eq!(daemon.stop().await, Some(0));
}

/// SIGTERM while a daemon job waits for a command run by hand to let the writer
/// lock go (`seatwarden approve` at a terminal during a restart): the waiting
/// job used to keep the daemon for the whole 30 s grace, then have it warn that
/// "a write already sent may be cut off", which sends an operator looking for
/// damage that is not there. A job that has not begun stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_job_waits_for_the_writer_lock_stops_at_once() {
    let (sandbox, dir, env) = demo(Duration::ZERO).await;
    let database = dir.path().join("state.db");
    let held = hold_writer_lock(&database, "the command `seatwarden approve`");
    // Port 0, which no other test can take first.
    let (daemon, log) = spawn_daemon(dir.path(), &env, &[]);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the reconcile to wait for the lock", &log, || {
        logged().contains("waiting for a seatwarden command run by hand to finish")
    })
    .await;
    let stopping = Instant::now();
    assert_eq!(daemon.stop().await, Some(0));
    let took = stopping.elapsed();
    let log = logged();
    assert!(took < Duration::from_secs(10), "took {took:?}:\n{log}");
    assert!(
        !log.contains("still running after the grace period"),
        "{log}"
    );
    assert_eq!(sandbox.stats().requests, 0, "nothing sent");
    drop(held);
    // Nothing begun, nothing recorded as cut off.
    let store = Store::open(&database).unwrap();
    assert_eq!(store.latest_run(&[]).unwrap(), None);
}

/// `kill -INT` (or `-TERM`) to the daemon `child`.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Ctrl-C twice on a daemon run in a terminal: the first stops it cleanly (the
/// writes sent finish and are verified), the second quits at once, as a second
/// Ctrl-C quits `seatwarden reconcile`. It used to be swallowed: the daemon sat
/// out its writes' verification, up to the 30 s grace, whatever the operator did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_the_daemon_at_once() {
    // Every request takes 3 s (20 s once it writes): the first stop waits at
    // least one verification read.
    let (sandbox, dir, env) = demo(Duration::from_secs(3)).await;
    // Port 0, which no other test can take first.
    let (mut daemon, log) = spawn_daemon(dir.path(), &env, &[]);
    let database = dir.path().join("state.db");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(exited) = daemon.0.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!(
                "the daemon exited ({exited}) before it wrote: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let writing = Store::open(&database)
            .ok()
            .and_then(|store| store.interrupted().ok())
            .is_some_and(|rows| !rows.is_empty());
        if writing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reconcile never wrote: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From now on every answer takes 20 s: a stop that waited for the writes'
    // verification would last far longer than the bound below, which can then
    // leave a loaded machine time to exit (2 s, against 3 s answers, did not).
    sandbox.set_faults(Faults {
        latency: Duration::from_secs(20),
        ..Faults::default()
    });
    let child = daemon.0.take().unwrap();
    signal(&child, "INT");
    // The second signal only once the first was handled (two pending at once are
    // one): a fixed pause could end before a loaded machine got to it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("SIGINT: stopping")
    {
        assert!(
            Instant::now() < deadline,
            "the first Ctrl-C was not handled: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "INT");
    let second = Instant::now();
    let status = crate::fixtures::exit_of(child, "the daemon").await;
    let took = second.elapsed();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} after the second Ctrl-C:\n{log}"
    );
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopping anyway"), "{log}");
}

/// `seatwarden status` (and `/status`) says who holds the writer lock now: an
/// operator whose command or daemon job waits can see for whom without reading
/// the lock file, and a line a `kill -9`ed holder left names nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_writer_locks_holder() {
    let (_sandbox, dir, env) = demo(Duration::ZERO).await;
    let database = dir.path().join("state.db");
    drop(Store::open(&database).unwrap());
    let status = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(dir.path().join("seatwarden.toml"))
            .args(["status", "--format", format])
            .env_remove("SEATWARDEN_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let held = hold_writer_lock(&database, "the command `seatwarden approve`");
    let text = status("text");
    assert!(
        text.contains(&format!(
            "Writer lock: held by the command `seatwarden approve` (pid {}), since ",
            std::process::id()
        )),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&status("json")).unwrap();
    assert_eq!(json["writer_lock"]["pid"], std::process::id());
    assert_eq!(
        json["writer_lock"]["what"],
        "the command `seatwarden approve`"
    );
    // A holder that died without letting go of its line holds nothing.
    let line = std::fs::read(WriterLock::path(&database)).unwrap();
    drop(held);
    std::fs::write(WriterLock::path(&database), line).unwrap();
    assert!(!status("text").contains("Writer lock"));
    let json: serde_json::Value = serde_json::from_str(&status("json")).unwrap();
    assert!(json.get("writer_lock").is_none(), "{json}");
}
