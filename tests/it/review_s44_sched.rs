//! Session 44: the daemon's schedule across reloads. A SIGHUP is no start: the
//! loop it builds catches up no job (the jobs table still says "never run" of a
//! sweep waiting behind the first reconcile), and a reload that fails changes
//! nothing at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use seatwarden::config::Config;
use seatwarden::model::WorkspaceSnapshot;
use seatwarden::sandbox::Faults;

use crate::fixtures;

/// Writes `d.json`: `people` active people.
fn write_directory(dir: &Path, people: usize) {
    let users: Vec<serde_json::Value> = (1..=people)
        .map(|n| {
            let name = format!("p{n}");
            serde_json::json!({
                "id": format!("00p{n}"), "userName": format!("{name}@example.com"),
                "email": format!("{name}@example.com"), "givenName": name,
                "familyName": "Example", "status": "active", "groups": []
            })
        })
        .collect();
    std::fs::write(
        dir.join("d.json"),
        serde_json::json!({ "users": users }).to_string(),
    )
    .unwrap();
}

/// The configuration in `dir` for the workspace at `url` (one request at a
/// time, no settle window), with `more` appended, loaded.
fn write_config(url: &str, dir: &Path, more: &str) -> Config {
    std::fs::write(
        dir.join("seatwarden.toml"),
        format!(
            "[directory]\nkind = \"file\"\npath = \"d.json\"\n\n\
             [workspace]\nurl = \"{url}\"\ntoken = \"t0ken\"\nmax_concurrency = 1\n\
             requests_per_second = 10000\n\n[safety]\nsettle = \"0s\"\n\n\
             [state]\npath = \"state.db\"\n{more}"
        ),
    )
    .unwrap();
    Config::load_with_env(
        &dir.join("seatwarden.toml"),
        Some(std::collections::HashMap::new()),
    )
    .unwrap()
}

/// The first daemon on a database runs the reconcile and the sweep at once; the
/// sweep waits behind the reconcile's lock. A SIGHUP meanwhile, first with an
/// invalid configuration, then a valid one, logged the sweep "never run on this
/// database: running it now" again at each, then "this fire is skipped": a
/// reload looked like a start, and a failed one rebuilt the schedule all the
/// same. The sweep is caught up once, runs once, and the failed reload names
/// the key and the file and says the running configuration stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_the_first_reconcile_catches_up_nothing_again() {
    let sandbox = fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    write_directory(dir.path(), 1);
    let url = sandbox.base_url().to_string();
    let config = write_config(&url, dir.path(), "");
    fixtures::reconcile(&config).await;
    // The daemon's reconcile creates 30 accounts at 300 ms a request.
    write_directory(dir.path(), 31);
    sandbox.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let yearly = "[schedule]\nreconcile = \"0 0 1 1 *\"\nsweep = \"0 0 1 1 *\"\n";
    write_config(&url, dir.path(), yearly);
    let env = vec![(
        "SEATWARDEN__HTTP__LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    )];
    let (mut daemon, log) = fixtures::spawn_daemon_with(dir.path(), &env);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    fixtures::listening_port(&mut daemon, logged).await;
    let applying = fixtures::poll_until(Duration::from_secs(30), || {
        sandbox.snapshot().accounts.len() > 2
    })
    .await;
    assert!(
        applying,
        "the reconcile never created an account:\n{}",
        logged()
    );
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &daemon.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::write(
        dir.path().join("seatwarden.toml"),
        std::fs::read_to_string(dir.path().join("seatwarden.toml"))
            .unwrap()
            .replace("sweep = \"0 0 1 1 *\"", "sweep = \"61 * * * *\""),
    )
    .unwrap();
    hangup();
    let failed = fixtures::poll_until(Duration::from_secs(30), || {
        logged().contains("configuration reload failed")
    })
    .await;
    assert!(failed, "no failed reload:\n{}", logged());
    write_config(&url, dir.path(), yearly);
    hangup();
    let reloaded = fixtures::poll_until(Duration::from_secs(30), || {
        logged().contains("configuration reloaded")
    })
    .await;
    assert!(reloaded, "no reload:\n{}", logged());
    // Both jobs start at once: whichever takes the writer lock first, the test
    // waits for both (a sweep that went first has finished long before the
    // reconcile, and stopping then cut the reconcile off).
    let finished = |log: &str, job: &str| {
        log.lines()
            .any(|l| l.contains("job finished") && l.contains(&format!("job=\"{job}\"")))
    };
    let swept = fixtures::poll_until(Duration::from_secs(60), || {
        let log = logged();
        finished(&log, "sweep") && finished(&log, "reconcile")
    })
    .await;
    fixtures::sigterm(&daemon);
    fixtures::exit_of(daemon, "the daemon").await;
    let log = logged();
    assert!(swept, "the sweep never finished:\n{log}");
    // The reconcile was still at work through both reloads.
    let line_of = |says: &str, job: &str| {
        log.lines()
            .position(|l| l.contains(says) && l.contains(job))
            .unwrap_or_else(|| panic!("no {says:?} {job}:\n{log}"))
    };
    assert!(
        line_of("configuration reloaded", "") < line_of("job finished", "job=\"reconcile\""),
        "the reconcile ended before the reloads:\n{log}"
    );
    let sweep_lines = |says: &str| {
        log.lines()
            .filter(|l| l.contains(says) && l.contains("job=\"sweep\""))
            .count()
    };
    assert_eq!(sweep_lines("never run on this database"), 1, "{log}");
    assert_eq!(sweep_lines("job started"), 1, "{log}");
    // The sweep's own: the every-minute retry job, waiting behind the same
    // reconcile, rightly skips a fire should a minute turn while it works.
    assert_eq!(sweep_lines("this fire is skipped"), 0, "{log}");
    let failure = log
        .lines()
        .find(|l| l.contains("configuration reload failed"))
        .unwrap();
    assert!(
        failure.contains("keeping the running configuration")
            && failure.contains("schedule.sweep")
            && failure.contains("seatwarden.toml"),
        "{failure}"
    );
}

/// A job missed while the daemon was stopped (the nightly prune, two days
/// back) is caught up once at start; a second restart seconds later, on the same
/// clock, does not catch it up again: the catch-up's start is in the jobs table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_seconds_after_a_catch_up_does_not_run_it_again() {
    use chrono::Timelike;

    let token = "review-s44-token";
    let sandbox = fixtures::demo_sandbox(token, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // The prune's slot is 03:17: a zone where that is not within the hour (a
    // missed daily job whose slot is close waits for it instead).
    let zone = if (1..=3).contains(&chrono::Utc::now().hour()) {
        "Asia/Tokyo"
    } else {
        "UTC"
    };
    let (env, config) = fixtures::demo_env(
        dir.path(),
        &sandbox,
        token,
        &[("SEATWARDEN__SCHEDULE__TIMEZONE", zone)],
    );
    {
        let mut store = seatwarden::store::Store::open(&config.state.path).unwrap();
        let long_ago = chrono::Utc::now() - chrono::Duration::days(2);
        store.job_started("prune", long_ago).unwrap();
        store
            .job_finished(
                "prune",
                long_ago + chrono::Duration::seconds(1),
                seatwarden::store::RunStatus::Succeeded,
                None,
            )
            .unwrap();
    }
    let prune_lines = |log: &str, says: &str| {
        log.lines()
            .filter(|l| l.contains(says) && l.contains("job=\"prune\""))
            .count()
    };
    let (first, log) = fixtures::spawn_daemon_once(dir.path(), &env);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let pruned = fixtures::poll_until(Duration::from_secs(60), || {
        prune_lines(&logged(), "job finished") == 1
    })
    .await;
    fixtures::sigterm(&first);
    fixtures::exit_of(first, "the first daemon").await;
    let first_log = logged();
    assert!(pruned, "the missed prune was not caught up:\n{first_log}");
    assert_eq!(
        prune_lines(&first_log, "missed while stopped"),
        1,
        "{first_log}"
    );

    let (mut second, log) = fixtures::spawn_daemon_once(dir.path(), &env);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    fixtures::listening_port(&mut second, logged).await;
    // A few passes of the loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fixtures::sigterm(&second);
    fixtures::exit_of(second, "the second daemon").await;
    let second_log = logged();
    assert!(second_log.contains("daemon started"), "{second_log}");
    assert_eq!(
        prune_lines(&second_log, "running it now"),
        0,
        "{second_log}"
    );
    assert_eq!(prune_lines(&second_log, "job started"), 0, "{second_log}");
}
