//! Session 43's review of operations details: `seatwarden status` shows a daemon
//! job waiting for the writer lock (a sweep, the same-day deprovisioning fast
//! path, held off behind a long reconcile or a command run by hand), since when
//! and behind whom, while the daemon that recorded the wait runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use seatwarden::model::WorkspaceSnapshot;
use seatwarden::store::{Acquired, Store, WriterLock};

use crate::fixtures;

/// Writes `d.json` with `people` active people, and a configuration in `dir` for
/// the workspace at `url`: one request at a time (so that a reconcile's creates
/// take their latency each), no settle window.
fn setup(url: &str, dir: &Path, people: usize) {
    let users: Vec<serde_json::Value> = (1..=people)
        .map(|n| {
            serde_json::json!({
                "id": format!("00n{n}"), "userName": format!("new{n}@example.com"),
                "email": format!("new{n}@example.com"), "givenName": format!("new{n}"),
                "familyName": "Example", "status": "active", "groups": []
            })
        })
        .collect();
    std::fs::write(
        dir.join("d.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t0ken\"\nmax_concurrency = 1\n\
             requests_per_second = 10000\n\n[safety]\nsettle = \"0s\"\n\n\
             [state]\npath = \"state.db\"\n\n[report]\ntimezone = \"Asia/Kolkata\"\n"
        ),
    )
    .unwrap();
}

/// A sweep every two seconds.
const EVERY_2S: &str = "*/2 * * * * *";

/// A daemon killed when the test ends, however it ends.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The daemon on `dir`'s configuration: reconcile on 1 January only (and once at
/// a first start), the sweep on `sweep`, listening on a port of its choosing.
fn spawn_daemon(dir: &Path, sweep: &str) -> (Running, std::path::PathBuf) {
    let env: Vec<(String, String)> = [
        ("SEATWARDEN__SCHEDULE__RECONCILE", "0 0 1 1 *"),
        ("SEATWARDEN__SCHEDULE__SWEEP", sweep),
        ("SEATWARDEN__HTTP__LISTEN", "127.0.0.1:0"),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .to_vec();
    let (child, log) = fixtures::spawn_daemon_with(dir, &env);
    (Running(Some(child)), log)
}

/// `seatwarden status --format FORMAT`, another process: its stdout.
fn status(dir: &Path, format: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .args(["status", "--format", format])
        .env_remove("SEATWARDEN_CONFIG")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The job line `name` of a JSON status.
fn job<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap()
}

/// Polls `done` for up to a minute; the test fails with `log` if it never holds.
async fn wait_for(what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the daemon logged:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `seatwarden_job_lock_waiting_seconds{job_name="JOB"}` in `metrics`.
fn waiting_seconds(metrics: &str, job: &str) -> f64 {
    let series = format!("seatwarden_job_lock_waiting_seconds{{job_name=\"{job}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series}in:\n{metrics}"))
}

/// The daemon's first reconcile creates 20 accounts; the workspace holds its
/// first write unanswered until the test has looked (`Sandbox::hold_writes_from`),
/// so the reconcile holds the writer lock for as long as the test needs, however
/// slowly it is scheduled (300 ms a request, as before, left a machine under load
/// to finish the reconcile between two looks); the sweeps fired meanwhile wait
/// behind it. Before,
/// `status` (another process) showed the sweep's last run and nothing of the
/// wait: only the daemon's log line at the sweep's start, and the lock-wait
/// histogram, told of it, after it. Now the sweep's line says it waits, since
/// when (on `report.timezone`'s clock) and that the reconcile holds the lock,
/// and `/metrics` how long it has waited so far; once the reconcile is done it
/// waits no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_sweep_waiting_behind_a_long_reconcile() {
    let sandbox = fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    setup(sandbox.base_url().as_str(), dir.path(), 20);
    // The reconcile's first write waits until `release_writes` below: until
    // then the reconcile holds the writer lock, and the sweep waits behind it.
    sandbox.hold_writes_from(1);
    let (mut daemon, log) = spawn_daemon(dir.path(), EVERY_2S);
    let port = fixtures::listening_port(daemon.0.as_mut().unwrap(), || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    let mut seen = None;
    wait_for("status to show the sweep waiting", &log, || {
        let json: serde_json::Value =
            serde_json::from_str(&status(dir.path(), "json")).unwrap_or_default();
        if json["daemon_running"] == true
            && job(&json, "sweep")["waiting_since"].is_string()
            && json["writer_lock"]["what"] == "the daemon's reconcile job"
        {
            seen = Some(json);
        }
        seen.is_some()
    })
    .await;
    let json = seen.unwrap();
    let sweep = job(&json, "sweep");
    let since: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(sweep["waiting_since"].clone()).unwrap();
    let now: chrono::DateTime<chrono::Utc> = serde_json::from_value(json["now"].clone()).unwrap();
    assert!(
        since <= now && now - since < chrono::Duration::seconds(60),
        "{json}"
    );
    let local = sweep["waiting_since_local"].as_str().unwrap();
    assert!(local.ends_with("+05:30 (IST)"), "{local}");
    assert_eq!(
        job(&json, "reconcile")["waiting_since"],
        serde_json::Value::Null
    );
    // The text, while the reconcile still runs.
    let text = status(dir.path(), "text");
    let line = text
        .lines()
        .find(|l| l.contains("WAITING for the writer lock since"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("+05:30 (IST)") && line.contains("held by the daemon's reconcile job (pid "),
        "{text}"
    );
    let before = text.split(line).next().unwrap();
    assert!(
        before
            .lines()
            .last()
            .unwrap()
            .trim_start()
            .starts_with("sweep"),
        "the wait goes under the sweep's line:\n{text}"
    );
    // And the metrics: how long it has waited so far, while it waits.
    let (code, metrics) = fixtures::http_get(port, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(waiting_seconds(&metrics, "sweep") > 0.0, "{metrics}");
    assert_eq!(waiting_seconds(&metrics, "reconcile"), 0.0, "{metrics}");
    // Only now may the reconcile write, and end.
    sandbox.release_writes();
    // Once the reconcile is done, the sweep runs and waits no more.
    wait_for(
        "the reconcile to finish and the sweep to stop waiting",
        &log,
        || {
            let json: serde_json::Value =
                serde_json::from_str(&status(dir.path(), "json")).unwrap_or_default();
            job(&json, "reconcile")["last_status"] == "succeeded"
                && job(&json, "sweep")["waiting_since"].is_null()
                && waiting_seconds(&fixtures::http_get(port, "/metrics").1, "sweep") == 0.0
        },
    )
    .await;
}

/// A sweep waiting for a command run by hand shows as waiting behind that
/// command. A daemon killed (`kill -9`) while the sweep waits leaves its record
/// in the database: with no daemon running it is no live wait and `status` does
/// not show it, and the next daemon's start clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_left_by_a_killed_daemon_is_not_shown_as_live() {
    let sandbox = fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    setup(sandbox.base_url().as_str(), dir.path(), 1);
    let database = dir.path().join("state.db");
    drop(Store::open(&database).unwrap());
    let held = match WriterLock::acquire_within(
        &database,
        "the command `seatwarden approve`",
        None,
        |_, _| panic!("nobody else holds it"),
    )
    .unwrap()
    {
        Acquired::Taken(lock) => lock,
        Acquired::Busy { .. } => panic!("busy"),
    };
    let (mut daemon, log) = spawn_daemon(dir.path(), EVERY_2S);
    wait_for(
        "status to show the sweep waiting for the command",
        &log,
        || {
            let text = status(dir.path(), "text");
            text.contains("WAITING for the writer lock since")
                && text.contains(&format!(
                    "held by the command `seatwarden approve` (pid {})",
                    std::process::id()
                ))
        },
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&status(dir.path(), "json")).unwrap();
    assert!(job(&json, "sweep")["waiting_since"].is_string(), "{json}");
    let child = daemon.0.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The record is still there, of a daemon that is gone.
    let left = Store::open(&database).unwrap().lock_waits().unwrap();
    let stale = *left.get("sweep").unwrap_or_else(|| panic!("{left:?}"));
    // And its prune waited too (a job that does not run at the next start, whose
    // own wait would replace the record).
    Store::open(&database)
        .unwrap()
        .set_lock_wait("prune", Some(stale))
        .unwrap();
    let text = status(dir.path(), "text");
    assert!(!text.contains("WAITING"), "{text}");
    assert!(text.contains("no daemon is running"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&status(dir.path(), "json")).unwrap();
    for line in json["jobs"].as_array().unwrap() {
        assert!(line["waiting_since"].is_null(), "{json}");
    }
    // The next daemon starts with the killed one's waits cleared.
    drop(held);
    drop(daemon);
    let (_daemon, log) = spawn_daemon(dir.path(), EVERY_2S);
    wait_for("the new daemon to start", &log, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("daemon started")
    })
    .await;
    let waits = Store::open(&database).unwrap().lock_waits().unwrap();
    assert!(
        !waits.contains_key("prune"),
        "{waits:?} still holds the killed daemon's wait since {stale}"
    );
}

// ------------------------------------------------- read-modify-write and lost answers

const RMW_TOKEN: &str = "review-s43-token";

/// Three accounts `u0000`..`u0002` ("User N"), served with PATCH switched off:
/// every change is a read, a change and a PUT carrying `If-Match`.
async fn put_only_sandbox() -> seatwarden::sandbox::Sandbox {
    use seatwarden::model::Account;
    let accounts = (0..3)
        .map(|i| Account {
            id: format!("u{i:04}"),
            user_name: format!("user{i}@example.com"),
            external_id: Some(format!("e{i}")),
            given_name: Some(format!("Given{i}")),
            family_name: Some("Family".into()),
            display_name: Some(format!("User {i}")),
            email: Some(format!("user{i}@example.com")),
            active: true,
            roles: vec!["Viewer".into()],
        })
        .collect();
    let sandbox = fixtures::sandbox(
        RMW_TOKEN,
        WorkspaceSnapshot {
            accounts,
            groups: Vec::new(),
        },
    )
    .await;
    sandbox.set_patch_supported(false);
    sandbox
}

async fn discovered_client(
    sandbox: &seatwarden::sandbox::Sandbox,
) -> seatwarden::workspace::ScimClient {
    use seatwarden::workspace::{GroupMembers, Pagination, RoleAttribute, ScimSettings};
    let client = seatwarden::workspace::ScimClient::new(ScimSettings {
        base_url: sandbox.base_url().as_str().parse().unwrap(),
        token: RMW_TOKEN.to_owned().into(),
        role_attribute: RoleAttribute::Roles,
        page_size: 100,
        pagination: Pagination::Auto,
        max_concurrency: 4,
        requests_per_second: 0,
        timeout: Duration::from_secs(10),
        retry: seatwarden::retry::RetryPolicy::immediate(3),
        managed_groups: Vec::new(),
        group_members: GroupMembers::Listed,
        ca_pem: None,
    })
    .unwrap();
    client.discover().await.unwrap();
    client
}

/// The PUT's answer is lost after the sandbox applied it (a connection reset
/// after the commit); the retry, carrying the version read before, gets 412: the
/// version changed, by the PUT itself. That 412 was taken as someone else's
/// change and spent the one re-read that guards against one, so a real change
/// made by someone else after the re-read failed the write as "changed by
/// someone else between read and write twice in a row". The 412 after a retried
/// write is read again apart: the real change is still read again once, kept,
/// and the write made.
#[tokio::test]
async fn a_412_after_a_lost_answer_does_not_spend_the_re_read_for_a_concurrent_change() {
    let sandbox = put_only_sandbox().await;
    let client = discovered_client(&sandbox).await;
    sandbox.record_requests();
    sandbox.lose_answers("PUT", "Users", 1);
    sandbox.change_after_reads(
        "Users",
        "u0001",
        vec![
            // After the first read: nothing changes (the same value keeps the version).
            serde_json::json!([{"op": "replace", "path": "displayName", "value": "User 1"}]),
            // After the read that follows the lost answer's 412: someone else's change.
            serde_json::json!([{"op": "replace", "path": "displayName", "value": "Changed elsewhere"}]),
        ],
    );
    client.set_active("u0001", false).await.unwrap();
    let after = sandbox.snapshot();
    let user = after.accounts.iter().find(|a| a.id == "u0001").unwrap();
    assert!(!user.active);
    assert_eq!(user.display_name.as_deref(), Some("Changed elsewhere"));
    let puts: Vec<u16> = sandbox
        .requests_seen()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.status)
        .collect();
    assert_eq!(
        puts,
        [200, 412, 412, 200],
        "applied (answer lost), its retry refused, refused for the concurrent change, written"
    );
    sandbox.shutdown().await;
}

/// A 412 after a retried write whose answer was lost reads again once for that
/// too, not without end: a write refused after every re-read still fails.
#[tokio::test]
async fn a_write_refused_after_each_re_read_still_fails() {
    let sandbox = put_only_sandbox().await;
    let client = discovered_client(&sandbox).await;
    sandbox.lose_answers("PUT", "Users", 1);
    sandbox.change_after_reads(
        "Users",
        "u0001",
        vec![
            serde_json::json!([{"op": "replace", "path": "displayName", "value": "User 1"}]),
            serde_json::json!([{"op": "replace", "path": "displayName", "value": "First"}]),
            serde_json::json!([{"op": "replace", "path": "displayName", "value": "Second"}]),
        ],
    );
    let err = client.set_active("u0001", false).await.unwrap_err();
    assert_eq!(err.status(), Some(412), "{err}");
    assert!(err.to_string().contains("twice"), "{err}");
    let after = sandbox.snapshot();
    let user = after.accounts.iter().find(|a| a.id == "u0001").unwrap();
    assert_eq!(user.display_name.as_deref(), Some("Second"));
    sandbox.shutdown().await;
}
