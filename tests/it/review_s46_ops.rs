//! Operations, session 46: `seatwarden backup` to a path that is not UTF-8, to
//! a symbolic link, and beside the temporary copies killed backups left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// The demo's state in `dir` (`dir/seatwarden.toml`, `dir/seatwarden.db`).
pub(crate) fn demo_state(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["demo", "--dir"])
        .arg(dir)
        .env_remove("SEATWARDEN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `seatwarden --config DIR/seatwarden.toml backup ARGS`: exit code, stdout,
/// stderr.
fn backup(dir: &Path, args: &[&OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .arg("--config")
        .arg(dir.join("seatwarden.toml"))
        .arg("backup")
        .args(args)
        .env_remove("SEATWARDEN_CONFIG")
        .env_remove("SEATWARDEN_LOCK_TIMEOUT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn links_in(database: &Path) -> i64 {
    rusqlite::Connection::open(database)
        .unwrap()
        .query_row("SELECT count(*) FROM links", [], |row| row.get(0))
        .unwrap()
}

fn names_in(folder: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

/// A destination in a folder whose name is not UTF-8 (`bk\xff`). SQLite's
/// `VACUUM INTO` was given the path made lossy, `bk\u{FFFD}/…`: another
/// folder. Where that folder existed the whole copy was written into it, under
/// a hidden name, and left there, while the backup failed its check ("schema
/// version is 0"); elsewhere it failed with SQLite's "unable to open". It is
/// now refused at once, naming the path, and nothing is written anywhere.
#[test]
fn a_destination_that_is_not_utf8_is_refused_and_nothing_is_written_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    demo_state(dir.path());
    let raw = dir.path().join(OsStr::from_bytes(b"bk\xff"));
    let lossy = dir.path().join("bk\u{FFFD}");
    std::fs::create_dir(&raw).unwrap();
    std::fs::create_dir(&lossy).unwrap();
    let dest = raw.join("state.db");

    let (code, stdout, stderr) = backup(dir.path(), &[dest.as_os_str()]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("is not UTF-8") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert!(stderr.contains("state.db"), "names the path: {stderr}");
    assert_eq!(names_in(&raw), Vec::<OsString>::new());
    assert_eq!(
        names_in(&lossy),
        Vec::<OsString>::new(),
        "written elsewhere"
    );

    // A UTF-8 path beside it is backed up as ever.
    let good = dir.path().join("état.db");
    let (code, _, stderr) = backup(dir.path(), &[good.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(links_in(&good) > 0);
}

/// A destination that is a symbolic link (a `latest.db` pointing at where
/// backups are kept). Session 46 followed it (`--force` replaced the file it
/// led to, in that file's folder); session 62 refuses it, with or without
/// `--force`, naming where it leads: followed, a link the folder's owner put
/// there had `sudo seatwarden backup` replace any file (review_s62_ops). The
/// link and the file it leads to are left as they were; a link to no file is
/// refused the same way and creates nothing there.
#[test]
fn a_destination_that_is_a_symbolic_link_is_refused_with_where_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    demo_state(dir.path());
    let kept = dir.path().join("kept");
    let backups = dir.path().join("backups");
    std::fs::create_dir(&kept).unwrap();
    std::fs::create_dir(&backups).unwrap();
    let real = kept.join("state.db");
    std::fs::write(&real, "an older backup").unwrap();
    let link = backups.join("latest.db");
    std::os::unix::fs::symlink("../kept/state.db", &link).unwrap();
    let dangling = backups.join("gone.db");
    std::os::unix::fs::symlink("../elsewhere/gone.db", &dangling).unwrap();

    for (link, points_to) in [
        (&link, "../kept/state.db"),
        (&dangling, "../elsewhere/gone.db"),
    ] {
        for force in [false, true] {
            let mut args = vec![link.as_os_str()];
            if force {
                args.push(OsStr::new("--force"));
            }
            let (code, _, stderr) = backup(dir.path(), &args);
            assert_eq!(code, Some(1), "{stderr}");
            assert!(
                stderr.contains(&format!("is a symbolic link to {points_to}"))
                    && stderr.contains("nothing was written"),
                "{stderr}"
            );
            assert!(std::fs::symlink_metadata(link).unwrap().is_symlink());
        }
    }
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "an older backup");
    assert_eq!(
        names_in(&backups),
        [OsString::from("gone.db"), OsString::from("latest.db")]
    );
    assert_eq!(names_in(&kept), [OsString::from("state.db")]);
    assert!(!dir.path().join("elsewhere").exists());
}

/// An empty file named `name` in `folder`, last written `age` ago.
fn aged(folder: &Path, name: &str, age: Duration) -> PathBuf {
    let path = folder.join(name);
    let file = std::fs::File::create(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
    path
}

const DAY: Duration = Duration::from_secs(86_400);

/// A backup killed while it wrote leaves `.NAME.backup-PID` (or `-PID-N`), a
/// whole copy of the database; only the systemd unit removed them, a day on,
/// and only after a backup that succeeded: under cron or in a container they
/// piled up until the volume was full. The backup now removes those for its
/// own name (into a folder: for any `seatwarden-state-<time>.db`), SQLite's
/// files beside them too, once a day old: a fresher one, maybe another
/// backup's under way, and every other file are left alone.
#[test]
fn a_backup_removes_the_day_old_temporary_copies_of_killed_backups_of_its_name() {
    let dir = tempfile::tempdir().unwrap();
    demo_state(dir.path());
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let old = 2 * DAY;
    let stale = [
        aged(&backups, ".state.db.backup-4242", old),
        aged(&backups, ".state.db.backup-1-3", old),
        aged(&backups, ".state.db.backup-4242-journal", old),
    ];
    let kept = [
        aged(&backups, ".state.db.backup-4343", Duration::from_secs(3600)),
        aged(&backups, ".other.db.backup-4242", old),
        aged(&backups, ".state.db.backup-notes", old),
        aged(&backups, "state.db.backup-4242", old),
        aged(
            &backups,
            ".seatwarden-state-20261203T024500Z.db.backup-7",
            old,
        ),
    ];
    let dest = backups.join("state.db");
    let (code, _, stderr) = backup(dir.path(), &[dest.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    for path in &stale {
        assert!(!path.exists(), "{} left", path.display());
    }
    for path in &kept {
        assert!(path.exists(), "{} removed", path.display());
    }

    // Into a folder: any name the folder's backups get, once a day old.
    let nightly = dir.path().join("nightly");
    std::fs::create_dir(&nightly).unwrap();
    let killed = aged(
        &nightly,
        ".seatwarden-state-20261203T024500Z.db.backup-4242",
        old,
    );
    let killed_wal = aged(
        &nightly,
        ".seatwarden-state-20261203T024500Z.db.backup-4242-1-wal",
        old,
    );
    let writing = aged(
        &nightly,
        ".seatwarden-state-20261205T024500Z.db.backup-4343",
        Duration::from_secs(60),
    );
    let (code, stdout, stderr) = backup(
        dir.path(),
        &[OsStr::new(&format!("{}/", nightly.display()))],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !killed.exists() && !killed_wal.exists(),
        "{:?}",
        names_in(&nightly)
    );
    assert!(writing.exists());
    assert_eq!(
        names_in(&nightly).len(),
        2,
        "{:?} {stdout}",
        names_in(&nightly)
    );
}

/// A loopback port nothing listens on: bound, then let go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The demo's configuration in `dir` with the workspace at `workspace`, Okta
/// at `okta` (SSWS) and, with `smtp`, a `[report.email]` to that relay.
fn connect_config(dir: &Path, workspace: &str, okta: &str, smtp: Option<&str>) -> PathBuf {
    crate::fixtures::copy_demo_files(dir);
    let toml = dir.join("seatwarden.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let mut text = text
        .replace(
            "url = \"http://127.0.0.1:0/scim/v2\"",
            &format!("url = \"{workspace}\""),
        )
        .replace("kind = \"file\"", "kind = \"okta\"")
        .replace(
            "path = \"directory.json\"",
            &format!("url = \"{okta}\"\ntoken = \"okta-probe-token\""),
        )
        .replace("path = \"seatwarden.db\"", "path = \"state.db\"");
    assert!(
        text.contains(workspace) && text.contains(okta) && text.contains("state.db"),
        "the demo's configuration moved"
    );
    if let Some(smtp) = smtp {
        text.push_str(&format!(
            "\n[report.email]\nsmtp_url = \"{smtp}\"\nusername = \"seatwarden\"\n\
             password = \"relay-secret-1\"\nfrom = \"seatwarden@example.com\"\n\
             to = [\"it-security@example.com\"]\n"
        ));
    }
    std::fs::write(&toml, text).unwrap();
    toml
}

fn side_line<'a>(stderr: &'a str, side: &str) -> &'a str {
    stderr
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&format!("{side} ")))
        .unwrap_or_else(|| panic!("no {side} line: {stderr}"))
}

/// `check-config --connect` with the workspace, Okta and the SMTP relay on
/// ports nothing listens on. The workspace and directory probes went through
/// the daemon's retries (6, backing off to seconds each: about 20 s before a
/// line was printed). Each request is now sent once: every side fails at once,
/// naming its endpoint, says it was tried once and how the daemon would retry,
/// and the check exits 1; the test only bounds the time generously.
#[test]
fn connect_probes_try_once_and_a_closed_port_fails_promptly_naming_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (workspace, okta, smtp) = (closed_port(), closed_port(), closed_port());
    connect_config(
        dir.path(),
        &format!("http://127.0.0.1:{workspace}/scim/v2"),
        &format!("http://127.0.0.1:{okta}"),
        Some(&format!("smtp://127.0.0.1:{smtp}")),
    );
    let started = std::time::Instant::now();
    let (code, stderr) =
        crate::fixtures::seatwarden_in(dir.path(), &[], &["check-config", "--connect"]);
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("each request once, within 10 s, no retries: the daemon retries a workspace request 6 times, a directory request 6 times, a delivery 3 times, then from the outbox)"),
        "{stderr}"
    );
    for (side, port) in [
        ("workspace", workspace),
        ("directory", okta),
        ("mail", smtp),
    ] {
        let line = side_line(&stderr, side);
        assert!(line.contains("FAILED"), "{line}");
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        assert!(
            line.contains("tried once, no retries; the daemon retries"),
            "{line}"
        );
    }
    assert!(
        stderr.contains("some connections failed or were throttled"),
        "{stderr}"
    );
    assert!(!dir.path().join("state.db").exists());
}

/// A workspace and an Okta org answering every request 429 with
/// `Retry-After: 30`: each probe waited the 30 s (cut to 120 s at most) before
/// every one of its retries, minutes in all. Each is now told at once as
/// THROTTLED, "reachable but throttled", with the status and the wait, once
/// asked each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_endpoint_is_reported_reachable_but_throttled_at_once() {
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let throttled = || {
        Mock::given(any()).respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .insert_header("content-type", "application/json")
                .set_body_string("{\"errorCode\":\"E0000047\",\"errorSummary\":\"API call exceeded rate limit due to too many requests.\"}"),
        )
    };
    let workspace = MockServer::start().await;
    throttled().mount(&workspace).await;
    let okta = MockServer::start().await;
    throttled().mount(&okta).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = connect_config(
        dir.path(),
        &format!("{}/scim/v2", workspace.uri()),
        &okta.uri(),
        None,
    );
    let config =
        seatwarden::config::Config::load_with_env(&toml, Some(Default::default())).unwrap();
    let checks = tokio::time::timeout(Duration::from_secs(60), seatwarden::connect::check(&config))
        .await
        .expect("the probes waited for the throttling to end");
    for check in &checks {
        let line = check.line();
        assert!(!check.passed(), "{line}");
        assert!(
            matches!(check.outcome, seatwarden::connect::Outcome::Throttled(_)),
            "{line}"
        );
        assert!(
            line.contains("THROTTLED")
                && line.contains("reachable but throttled")
                && line.contains("429")
                && line.contains("run it again in 30 s"),
            "{line}"
        );
    }
    assert_eq!(checks.len(), 2);
    // One request each that was answered 429, none asked again.
    for server in [&workspace, &okta] {
        let asked = server.received_requests().await.unwrap();
        let mut paths: Vec<String> = asked.iter().map(|r| r.url.path().to_owned()).collect();
        let all = paths.len();
        paths.dedup();
        assert_eq!(paths.len(), all, "a request was retried: {paths:?}");
    }
}

/// Every request to Okta, the OAuth token request included, names seatwarden
/// and its version in `User-Agent` (Okta's System Log records it as the
/// client; an org admin tells seatwarden's traffic from another tool's by it).
/// Set once on the shared HTTP client (`http::client`); pinned here for Okta.
#[tokio::test]
async fn every_okta_request_names_seatwarden_and_its_version_as_user_agent() {
    use seatwarden::directory::{OktaAuth, OktaSource, Secret};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let expected = format!("seatwarden/{}", env!("CARGO_PKG_VERSION"));

    let server = MockServer::start().await;
    crate::okta::small_org(crate::okta::LinkStyle::SeparateLines)
        .mount(&server)
        .await;
    OktaSource::new(crate::okta::settings(&server, crate::okta::ssws()))
        .snapshot()
        .await
        .unwrap();

    let oauth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": 3600,
            "access_token": "access-token-1",
            "scope": "okta.users.read okta.groups.read"
        })))
        .mount(&oauth)
        .await;
    crate::okta::small_org(crate::okta::LinkStyle::SeparateLines)
        .mount(&oauth)
        .await;
    let auth = OktaAuth::PrivateKeyJwt {
        client_id: "0oa-service-app".into(),
        key_id: Some("key-1".into()),
        private_key: Secret::File {
            key: "directory.private_key_file",
            path: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/keys/test-rsa-pkcs8.pem"),
        },
    };
    OktaSource::new(crate::okta::settings(&oauth, auth))
        .probe()
        .await
        .unwrap();

    for server in [&server, &oauth] {
        let requests = server.received_requests().await.unwrap();
        assert!(requests.len() > 2);
        for request in &requests {
            let agent = request
                .headers
                .get("user-agent")
                .map(|v| v.to_str().unwrap());
            assert_eq!(
                agent,
                Some(expected.as_str()),
                "{} {}",
                request.method,
                request.url
            );
        }
    }
    assert!(
        oauth
            .received_requests()
            .await
            .unwrap()
            .iter()
            .any(|r| r.url.path() == "/oauth2/v1/token")
    );
}
