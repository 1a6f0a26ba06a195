//! Time-bound exceptions (`[[safety.exceptions]]`): an account kept as it is until
//! a time, with a reason. The configuration names the entry it refuses; a
//! reconcile leaves the account alone and lists it under EXCEPTIONS until the
//! end, then deactivates a leaver's; the sweep puts a leaver's deprovision off to
//! the end (no overdue alert meanwhile) and makes it then, its SLA clock
//! starting at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use seatwarden::config::{Config, ExceptionConfig};
use seatwarden::store::Store;
use seatwarden::workspace::ScimClient;

use crate::daemon::{is_active_non_owner, reconciled_demo};

/// The minimal configuration on Berlin's clock, with `exceptions` after it.
fn load(exceptions: &str) -> Result<Config, String> {
    crate::config::load(
        &format!(
            "{}\n[report]\ntimezone = \"Europe/Berlin\"\n\n{exceptions}",
            crate::config::MINIMAL
        ),
        &[],
    )
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

#[test]
fn until_is_a_day_a_local_time_or_a_time_with_its_offset() {
    let config = load(
        r#"
[[safety.exceptions]]
user_name = " Dana@Example.com "
until = 2026-12-15
reason = "handover, HR-4711"

[[safety.exceptions]]
user_name = "erin@example.com"
until = "2026-07-01T17:30:00"
reason = "notice period"

[[safety.exceptions]]
user_name = "finn@example.com"
until = 2026-12-15T17:00:00Z
reason = "legal hold"
"#,
    )
    .unwrap();
    let exceptions = config.exceptions().unwrap();
    let ends: Vec<(&str, DateTime<Utc>)> = exceptions
        .iter()
        .map(|e| (e.user_name.as_str(), e.until))
        .collect();
    assert_eq!(
        ends,
        [
            // Through the 15th in Berlin (winter: +01:00).
            ("Dana@Example.com", utc("2026-12-15T23:00:00Z")),
            // Summer: +02:00.
            ("erin@example.com", utc("2026-07-01T15:30:00Z")),
            ("finn@example.com", utc("2026-12-15T17:00:00Z")),
        ]
    );
    assert_eq!(exceptions[0].reason, "handover, HR-4711");

    let settings = config.plan_settings(utc("2026-12-15T22:59:00Z"));
    assert!(settings.protected.matches("dana@example.com"));
    assert!(
        !settings.protected.matches("finn@example.com"),
        "ended at 17:00 UTC"
    );
    let settings = config.plan_settings(utc("2026-12-15T23:00:00Z"));
    assert!(
        !settings.protected.matches("dana@example.com"),
        "ended at midnight"
    );
}

#[test]
fn a_bad_exception_names_its_entry_and_the_file() {
    let entry = |user_name: &str, until: &str, reason: &str| {
        format!(
            "[[safety.exceptions]]\nuser_name = {user_name:?}\nuntil = {until:?}\nreason = {reason:?}\n"
        )
    };
    let ok = entry("dana@example.com", "2026-12-15", "handover");
    for (second, key, says) in [
        (
            entry("*@contractor.example.com", "2026-12-15", "x"),
            "safety.exceptions[1].user_name",
            "safety.protected",
        ),
        (
            entry("erin@example.com", "2026-12-15", "  "),
            "safety.exceptions[1].reason",
            "say why",
        ),
        (
            entry("erin@example.com", "next friday", "x"),
            "safety.exceptions[1].until",
            "2026-12-15T17:00:00+01:00",
        ),
        (
            // 02:30 does not exist in Berlin when the clocks go forward.
            entry("erin@example.com", "2027-03-28T02:30:00", "x"),
            "safety.exceptions[1].until",
            "give a time with its offset",
        ),
        (
            entry("DANA@example.com", "2027-01-15", "extended"),
            "safety.exceptions[1].user_name",
            "safety.exceptions[0]'s too",
        ),
    ] {
        let error = load(&format!("{ok}\n{second}")).unwrap_err();
        assert!(error.contains("seatwarden.toml"), "{error}");
        assert!(error.contains(&format!("key `{key}`")), "{error}");
        assert!(error.contains(says), "{says}: {error}");
    }
    let error =
        load("[[safety.exceptions]]\nuser_name = \"dana@example.com\"\nuntil = 2026-12-15\n")
            .unwrap_err();
    assert!(error.contains("reason"), "{error}");
}

#[test]
fn an_ended_or_year_long_exception_is_warned_about() {
    let now = Utc::now();
    let day = |at: DateTime<Utc>| at.format("%Y-%m-%d").to_string();
    let config = load(&format!(
        "[[safety.exceptions]]\nuser_name = \"gone@example.com\"\nuntil = {}\nreason = \"x\"\n\n\
         [[safety.exceptions]]\nuser_name = \"soon@example.com\"\nuntil = {}\nreason = \"x\"\n\n\
         [[safety.exceptions]]\nuser_name = \"forever@example.com\"\nuntil = {}\nreason = \"x\"\n",
        day(now - Duration::days(3)),
        day(now + Duration::days(30)),
        day(now + Duration::days(400)),
    ))
    .unwrap();
    let warnings: Vec<String> = config
        .warnings()
        .into_iter()
        .filter(|w| w.starts_with("safety.exceptions"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("safety.exceptions[0]: the exception for gone@example.com ended"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("take the entry out"), "{warnings:?}");
    assert!(
        warnings[1].starts_with("safety.exceptions[2]: the exception for forever@example.com")
            && warnings[1].contains("safety.protected"),
        "{warnings:?}"
    );
}

/// Suspends, in the demo directory file in `dir`, an active person whose account
/// is active and no Owner's, and gives them the directory userName `renamed` (if
/// any): their directory id and (new) directory userName.
pub(crate) fn suspend_someone(
    dir: &Path,
    sandbox: &seatwarden::sandbox::Sandbox,
    renamed: Option<&str>,
) -> (String, String) {
    let path = dir.join("directory.json");
    let mut full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let workspace = sandbox.snapshot();
    let users = full["users"].as_array().unwrap().clone();
    let i = users
        .iter()
        .position(|u| is_active_non_owner(u, &workspace))
        .unwrap();
    full["users"][i]["status"] = "suspended".into();
    if let Some(renamed) = renamed {
        full["users"][i]["userName"] = renamed.into();
    }
    std::fs::write(&path, full.to_string()).unwrap();
    (
        users[i]["id"].as_str().unwrap().to_owned(),
        full["users"][i]["userName"].as_str().unwrap().to_owned(),
    )
}

/// `config`'s exceptions: one, for `user_name`.
pub(crate) fn except(config: &mut Config, user_name: &str, until: DateTime<Utc>, reason: &str) {
    config.safety.exceptions = vec![ExceptionConfig {
        user_name: user_name.to_owned(),
        until: until.to_rfc3339(),
        reason: reason.to_owned(),
    }];
}

/// Whether `identity_id`'s account is active in the sandbox.
pub(crate) fn active(sandbox: &seatwarden::sandbox::Sandbox, identity_id: &str) -> bool {
    sandbox
        .snapshot()
        .accounts
        .iter()
        .any(|a| a.external_id.as_deref() == Some(identity_id) && a.active)
}

/// `identity_id`'s one current ledger episode.
pub(crate) fn episode(
    store: &Arc<Mutex<Store>>,
    identity_id: &str,
) -> seatwarden::sla::LedgerEntry {
    let mut mine: Vec<_> = store
        .lock()
        .unwrap()
        .current_deprovisions()
        .unwrap()
        .into_iter()
        .filter(|e| e.identity_id == identity_id)
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    mine.remove(0)
}

/// The sweep opens the leaver's episode and puts it off to the exception's end:
/// due an SLA after it, so it is not overdue meanwhile, and looked at again every
/// 15 minutes at most. At the end the retry job deactivates the account, and the
/// latency counts from the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_puts_a_leavers_deprovision_off_to_the_exceptions_end() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) = suspend_someone(dir.path(), &sandbox, None);
    let now = Utc.with_ymd_and_hms(2026, 12, 14, 9, 0, 0).unwrap();
    let until = now + Duration::hours(3);
    except(
        &mut config,
        &user_name.to_uppercase(),
        until,
        "handover, HR-4711",
    );
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let sla = Duration::hours(1);

    let swept = seatwarden::sweep::sweep(&config, &config.directory(), &client, &store, now, sla)
        .await
        .unwrap();
    // The demo has a leaver whose account is inactive already: found done.
    assert_eq!((swept.excepted, swept.enforced), (1, 0), "{swept:?}");
    let put_off = episode(&store, &person);
    assert_eq!(put_off.detected_at, now);
    assert_eq!(put_off.due_at, until + sla, "due an SLA after the end");
    assert_eq!(put_off.excepted_until, Some(until));
    assert_eq!(put_off.next_attempt_at, Some(now + Duration::minutes(15)));
    let held = put_off.held.clone().unwrap();
    assert!(
        held.starts_with(seatwarden::sweep::EXCEPTED_HOLD)
            && held.ends_with("until 2026-12-14 13:00 +01:00 (CET): handover, HR-4711"),
        "{held}"
    );
    assert!(active(&sandbox, &person));
    // The digest tells it apart from a hold someone must release.
    let digest = {
        let store = store.lock().unwrap();
        let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
        seatwarden::report::digest::build_from_store(
            &store,
            "acme",
            chrono_tz::UTC,
            now + Duration::minutes(1),
            std::time::Duration::from_secs(86_400),
            &deprovisions,
            "seatwarden",
        )
        .unwrap()
    };
    assert!(
        digest
            .headline
            .contains("1 deprovision put off by an exception")
            && !digest.headline.contains("held deprovision"),
        "{}",
        digest.headline
    );
    let line = digest
        .pending
        .iter()
        .find(|d| d.identity_id == person)
        .unwrap();
    assert!(line.excepted && line.due_at == until + sla, "{line:?}");

    // Past the SLA from detection, still inside the exception: no escalation.
    let later = until - Duration::minutes(10);
    let retried = seatwarden::sweep::enforce(&config, &client, &store, later)
        .await
        .unwrap();
    assert_eq!((retried.excepted, retried.enforced), (1, 0), "{retried:?}");
    assert!(retried.escalated.is_empty(), "{retried:?}");
    assert_eq!(
        episode(&store, &person).next_attempt_at,
        Some(until),
        "the end is nearer"
    );
    assert!(active(&sandbox, &person));

    let after = until + Duration::minutes(1);
    let ended = seatwarden::sweep::enforce(&config, &client, &store, after)
        .await
        .unwrap();
    assert_eq!((ended.excepted, ended.enforced), (0, 1), "{ended:?}");
    assert_eq!(
        ended.latencies,
        [Duration::minutes(1)],
        "from the end, not detection"
    );
    assert!(ended.escalated.is_empty(), "{ended:?}");
    assert!(!active(&sandbox, &person), "deactivated at the end");
    let done = episode(&store, &person);
    assert_eq!(done.latency(), Some(Duration::minutes(1)), "{done:?}");
    sandbox.shutdown().await;
}

/// A reconciled demo whose suspended person an exception keeps for ten days
/// from `now` ("notice period"), swept once at `now` with a one-hour SLA: the
/// deprovision is put off.
pub(crate) struct PutOff {
    pub(crate) sandbox: seatwarden::sandbox::Sandbox,
    /// Holds the state database and the directory file.
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: Config,
    pub(crate) person: String,
    pub(crate) user_name: String,
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) client: ScimClient,
}

pub(crate) async fn put_off_for_ten_days(now: DateTime<Utc>) -> PutOff {
    put_off_for_ten_days_as(now, None).await
}

/// [`put_off_for_ten_days`], the person's directory userName `renamed` when
/// given (their account's is then another).
pub(crate) async fn put_off_for_ten_days_as(now: DateTime<Utc>, renamed: Option<&str>) -> PutOff {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) = suspend_someone(dir.path(), &sandbox, renamed);
    except(
        &mut config,
        &user_name,
        now + Duration::days(10),
        "notice period",
    );
    let store = Arc::new(Mutex::new(Store::open(&config.state.path).unwrap()));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let swept = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        now,
        Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(swept.excepted, 1, "{swept:?}");
    assert!(active(&sandbox, &person));
    PutOff {
        sandbox,
        dir,
        config,
        person,
        user_name,
        store,
        client,
    }
}

/// Deactivated by hand while the exception still keeps it: the episode is
/// verified, with a latency of zero (access was gone before the SLA clock
/// started), never a negative one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excepted_account_deactivated_by_hand_is_verified_with_no_time_taken() {
    let now = Utc::now();
    let PutOff {
        sandbox,
        dir: _dir,
        config,
        person,
        store,
        client,
        ..
    } = put_off_for_ten_days(now).await;
    let account = sandbox
        .snapshot()
        .accounts
        .into_iter()
        .find(|a| a.external_id.as_deref() == Some(person.as_str()))
        .unwrap();
    let deactivated = reqwest::Client::new()
        .patch(format!("{}/Users/{}", sandbox.base_url(), account.id))
        .bearer_auth(crate::daemon::TOKEN)
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "replace", "path": "active", "value": false }]
        }))
        .send()
        .await
        .unwrap();
    assert!(deactivated.status().is_success(), "{deactivated:?}");

    let retried = seatwarden::sweep::enforce(&config, &client, &store, now + Duration::minutes(15))
        .await
        .unwrap();
    assert_eq!(retried.already_done, 1, "{retried:?}");
    assert_eq!(retried.latencies, [Duration::zero()], "{retried:?}");
    let done = episode(&store, &person);
    assert!(
        done.verified_at.is_some() && done.latency() == Some(Duration::zero()),
        "{done:?}"
    );
    sandbox.shutdown().await;
}

/// A reconcile leaves the excepted leaver's account alone and lists it, with the
/// end and the reason, in every format; once the exception has ended, the next
/// reconcile deactivates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_lists_the_excepted_account_until_the_end_then_deactivates_it() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let (person, user_name) = suspend_someone(dir.path(), &sandbox, None);
    let now = Utc::now();
    let until = now + Duration::days(2);
    except(&mut config, &user_name, until, "legal hold\nforged line");
    let reconcile = |at| crate::fixtures::reconcile_at(&config, at);

    let kept = reconcile(now).await;
    assert!(
        !kept
            .plan
            .actions
            .iter()
            .any(|a| a.identity_id.as_deref() == Some(person.as_str())),
        "{:?}",
        kept.plan.actions
    );
    assert!(active(&sandbox, &person));
    let listed = &kept.report.safety.excepted;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].identity_id.as_deref(), Some(person.as_str()));
    assert_eq!(listed[0].why, "suspended in the directory");
    assert_eq!(listed[0].exception.until, until);
    let tz = config.report_timezone().unwrap();
    let text = seatwarden::report::render_text(&kept.report, tz, "seatwarden", false);
    assert!(text.contains("EXCEPTIONS"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("account ") && l.contains("legal hold"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&user_name) && line.contains("kept until"),
        "{line}"
    );
    assert!(!text.lines().any(|l| l.trim() == "forged line"), "{text}");
    let markdown = seatwarden::report::render_markdown(&kept.report, tz, "seatwarden").unwrap();
    assert!(
        markdown.contains("EXCEPTIONS") && markdown.contains("legal hold"),
        "{markdown}"
    );
    let json = serde_json::to_value(&kept.report).unwrap();
    // JSON carries it as configured: only the renderers for people clean it.
    assert_eq!(
        json["safety"]["excepted"][0]["exception"]["reason"], "legal hold\nforged line",
        "{json}"
    );

    // `explain` and the access review say the same, with the end.
    let store = Store::open(&config.state.path).unwrap();
    let explained = seatwarden::explain::explain(&config, &store, &user_name, now).unwrap();
    assert!(
        explained.contains("exception: kept as it is until")
            && explained.contains("legal hold")
            && !explained.contains("protected: yes"),
        "{explained}"
    );
    let review = seatwarden::export::access_at(&store, &config, now).unwrap();
    let row = review
        .accounts
        .iter()
        .find(|r| r.identity_id.as_deref() == Some(person.as_str()))
        .unwrap();
    assert!(
        row.justification.contains(&format!(
            "access kept by an exception (safety.exceptions) until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )) && !row.justification.contains("by hand"),
        "{}",
        row.justification
    );
    drop(store);

    let ended = reconcile(until + Duration::minutes(1)).await;
    assert!(ended.report.safety.excepted.is_empty());
    assert!(
        !active(&sandbox, &person),
        "deactivated once the exception ended"
    );
    sandbox.shutdown().await;
}

/// `check-config` lists each exception with its end, the time left and the
/// reason, and marks the one that ended (which is also warned about).
#[test]
fn check_config_lists_the_exceptions_and_marks_an_ended_one() {
    let dir = tempfile::tempdir().unwrap();
    crate::fixtures::copy_demo_files(dir.path());
    let config = dir.path().join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    let now = Utc::now();
    text.push_str(&format!(
        "\n[[safety.exceptions]]\nuser_name = \"dana@example.com\"\nuntil = \"{}\"\n\
         reason = \"handover, HR-4711\"\n\n[[safety.exceptions]]\nuser_name = \
         \"gone@example.com\"\nuntil = \"{}\"\nreason = \"notice period\"\n",
        (now + Duration::days(10) + Duration::hours(1)).to_rfc3339(),
        (now - Duration::days(1)).to_rfc3339(),
    ));
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "the exceptions it makes (safety.exceptions):\n  dana@example.com kept until "
        ) && stderr.contains(" (in 10 days): handover, HR-4711\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("  ENDED gone@example.com kept until ")
            && stderr.contains("the exception for gone@example.com ended"),
        "{stderr}"
    );
}

/// The digest lists the exceptions in force, soonest end first, in every format;
/// an ended one is not listed.
#[test]
fn the_digest_lists_the_exceptions_in_force() {
    use seatwarden::model::Exception;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let now = utc("2026-12-14T09:00:00Z");
    let exception = |user_name: &str, until: &str, reason: &str| Exception {
        user_name: user_name.to_owned(),
        until: utc(until),
        reason: reason.to_owned(),
    };
    let digest = crate::fixtures::day_digest(&store, now).with_exceptions(
        &[
            exception("late@example.com", "2026-12-31T23:00:00Z", "legal hold <b>"),
            exception("soon@example.com", "2026-12-15T23:00:00Z", "handover"),
            exception("gone@example.com", "2026-12-14T08:00:00Z", "notice period"),
        ],
        now,
    );
    let text = digest.render_text();
    assert!(
        text.contains(
            "Exceptions in force (2), access kept until their end:\n  - soon@example.com until \
             2026-12-15 23:00 UTC: handover\n  - late@example.com until 2026-12-31 23:00 UTC: \
             legal hold <b>\n"
        ),
        "{text}"
    );
    assert!(!text.contains("gone@example.com"), "{text}");
    let markdown = digest.render_markdown().unwrap();
    assert!(
        markdown.contains("## Exceptions in force (2)")
            && markdown.contains("| soon@example.com | 2026-12-15 23:00 UTC | handover |"),
        "{markdown}"
    );
    let html = digest.render_html().unwrap();
    assert!(
        html.contains("Exceptions in force (2)")
            && html.contains("legal hold &lt;b&gt;")
            && !html.contains("legal hold <b>"),
        "{html}"
    );
    let json: serde_json::Value = serde_json::from_str(&digest.to_json()).unwrap();
    assert_eq!(json["exceptions"][0]["user_name"], "soon@example.com");
    assert_eq!(json["exceptions"][0]["until_at"], "2026-12-15T23:00:00Z");
    assert_eq!(json["exceptions"].as_array().unwrap().len(), 2);
}

/// The access review says an orphan's access stays by an exception, and until
/// when, where `unmatched_accounts = "deactivate"` would otherwise take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_review_says_an_orphan_is_kept_by_an_exception() {
    let (sandbox, _dir, mut config) = reconciled_demo().await;
    let orphan = "freelancer.max@gmail.com";
    let now = Utc::now();
    let until = now + Duration::days(3);
    except(&mut config, orphan, until, "finishing the Q4 campaign");
    let store = Store::open(&config.state.path).unwrap();
    let justification = |config: &Config| {
        seatwarden::export::access_at(&store, config, now)
            .unwrap()
            .accounts
            .into_iter()
            .find(|r| r.user_name == orphan)
            .unwrap()
            .justification
    };
    // Reported only: nothing takes its access, and the exception changes nothing.
    assert_eq!(justification(&config), "orphaned");
    config.policy.unmatched_accounts = seatwarden::policy::UnmatchedAccounts::Deactivate;
    assert_eq!(
        justification(&config),
        format!(
            "orphaned; access kept by an exception (safety.exceptions) until {}: finishing \
             the Q4 campaign; seatwarden deactivates it then",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    );
    sandbox.shutdown().await;
}
