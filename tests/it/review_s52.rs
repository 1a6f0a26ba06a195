//! Session 52: an exception that names nobody is told in every report, and
//! alerted on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use seatwarden::config::ExceptionConfig;

use crate::daemon::reconciled_demo;

/// HR asks to keep a leaver's access; the operator mistypes the name. The
/// exception matched nothing and said nothing, and the person lost access at
/// the next run all the same. Every reconcile (and plan) now names it under
/// EXCEPTION NAMES NOBODY, with its end and reason, beside the one that names
/// a real person (by the directory's userName), which it leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_naming_nobody_is_told_by_every_report() {
    let (sandbox, dir, mut config) = reconciled_demo().await;
    let directory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("directory.json")).unwrap())
            .unwrap();
    let someone = directory["users"][0]["userName"]
        .as_str()
        .unwrap()
        .to_uppercase();
    let now = Utc::now();
    let until = (now + Duration::days(5)).to_rfc3339();
    config.safety.exceptions = vec![
        ExceptionConfig {
            user_name: someone.clone(),
            until: until.clone(),
            reason: "notice period".to_owned(),
        },
        ExceptionConfig {
            user_name: "dana.lee@exmaple.com".to_owned(),
            until,
            reason: "handover, HR-4711".to_owned(),
        },
    ];

    let outcome = crate::fixtures::reconcile_at(&config, now).await;
    let nobody: Vec<&str> = outcome
        .report
        .safety
        .exceptions_naming_nobody
        .iter()
        .map(|e| e.user_name.as_str())
        .collect();
    assert_eq!(
        nobody,
        ["dana.lee@exmaple.com"],
        "{someone} is in the directory"
    );
    let tz = config.report_timezone().unwrap();
    let text = seatwarden::report::render_text(&outcome.report, tz, "seatwarden", false);
    assert!(
        text.contains("EXCEPTION NAMES NOBODY")
            && text.contains("1 exception in safety.exceptions names no workspace account"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("dana.lee@exmaple.com, until ")
                && l.ends_with(": handover, HR-4711")),
        "{text}"
    );
    let markdown = seatwarden::report::render_markdown(&outcome.report, tz, "seatwarden").unwrap();
    assert!(markdown.contains("EXCEPTION NAMES NOBODY"), "{markdown}");
    let json = serde_json::to_value(&outcome.report).unwrap();
    assert_eq!(
        json["safety"]["exceptions_naming_nobody"][0]["reason"],
        "handover, HR-4711"
    );

    // The digest names it among the exceptions in force, and needs attention.
    {
        let store = seatwarden::store::Store::open(&config.state.path).unwrap();
        let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
        let day_digest = |exceptions: &[seatwarden::model::Exception]| {
            seatwarden::report::digest::build_from_store(
                &store,
                "acme",
                tz,
                now + Duration::minutes(1),
                std::time::Duration::from_secs(86_400),
                &deprovisions,
                "seatwarden",
            )
            .unwrap()
            .with_exceptions(exceptions, now + Duration::minutes(1))
        };
        let digest = day_digest(&config.exceptions().unwrap());
        // Retyped in another case since the run, the name still names nobody
        // (names are compared folded, as the run compared them).
        let mut retyped = config.exceptions().unwrap();
        for exception in &mut retyped {
            if exception.user_name == "dana.lee@exmaple.com" {
                exception.user_name = "Dana.Lee@EXMAPLE.com".to_owned();
            }
        }
        let marked = day_digest(&retyped)
            .exceptions
            .iter()
            .filter(|e| e.names_nobody)
            .map(|e| e.user_name.clone())
            .collect::<Vec<_>>();
        assert_eq!(marked, ["Dana.Lee@EXMAPLE.com"]);
        assert_eq!(
            digest.state,
            seatwarden::report::State::NeedsAttention,
            "{}",
            digest.headline
        );
        assert!(
            digest.headline.contains("1 exception naming nobody"),
            "{}",
            digest.headline
        );
        let text = digest.render_text();
        let marked: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("NAMES NOBODY"))
            .collect();
        assert_eq!(marked.len(), 1, "{text}");
        assert!(marked[0].contains("dana.lee@exmaple.com until "), "{text}");
        for rendered in [
            digest.render_markdown().unwrap(),
            digest.render_html().unwrap(),
        ] {
            assert_eq!(rendered.matches("NAMES NOBODY").count(), 1, "{rendered}");
        }
        let json = serde_json::to_value(&digest).unwrap();
        assert_eq!(json["exceptions_naming_nobody"][0], "dana.lee@exmaple.com");
        let flagged: Vec<bool> = json["exceptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["names_nobody"].as_bool().unwrap_or(false))
            .collect();
        assert_eq!(flagged.iter().filter(|f| **f).count(), 1, "{json}");
    }

    // The daemon mails it as an alert, with what to do.
    let (_config_dir, notifier) = crate::review_s39_holds::alerting_notifier();
    let mut store = seatwarden::store::Store::open(&dir.path().join("alerts.db")).unwrap();
    notifier.after_reconcile(&mut store, &outcome.report, now);
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let alert = &outbox[0].message;
    assert!(
        alert
            .subject
            .ends_with("the exception for dana.lee@exmaple.com names nobody"),
        "{}",
        alert.subject
    );
    assert!(
        alert.text.contains("dana.lee@exmaple.com, until ")
            && alert.text.contains("loses access as the policy says")
            && alert
                .text
                .contains("`seatwarden plan` shows EXCEPTION NAMES NOBODY"),
        "{}",
        alert.text
    );

    // Fixed, the finding is gone, and the alert's resolution is held for
    // resolve_after (a read it is not told from lists none either).
    config.safety.exceptions.pop();
    let fixed = crate::fixtures::reconcile_at(&config, now).await;
    assert!(
        fixed.report.safety.exceptions_naming_nobody.is_empty(),
        "{:?}",
        fixed.report.safety
    );
    notifier.after_reconcile(&mut store, &fixed.report, now);
    let record = store.alert("exceptions_naming_nobody").unwrap().unwrap();
    assert_eq!(record.cleared_at, Some(now), "{record:?}");
    sandbox.shutdown().await;
}

/// `seatwarden_safety_finding{finding="exceptions_naming_nobody"}` is 1 after a
/// daemon's reconcile found an exception naming nobody, so Prometheus alerts on
/// it (`SeatwardenExceptionNamesNobody`) where nobody reads mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_gauges_an_exception_naming_nobody() {
    use crate::review_s41_ops::{Running, port_of, sample};
    let (_sandbox, dir, env, _) = demo_daemon_with_a_typo_exception("review-s52-token").await;
    let (child, log) = crate::fixtures::spawn_daemon_once(dir.path(), &env);
    let _daemon = Running(child);
    let port = port_of(&log).await;
    let metrics = crate::fixtures::metrics_once_reconciled(port, &log).await;
    assert_eq!(
        sample(
            &metrics,
            r#"seatwarden_safety_finding{finding="exceptions_naming_nobody"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// The demo sandbox and a daemon's directory on it (`env` to start it with)
/// whose configuration file excepts `dana.lee@exmaple.com`, a name nobody has,
/// until 2099; the config returned, loaded before, has the exception too.
pub(crate) async fn demo_daemon_with_a_typo_exception(
    token: &str,
) -> (
    seatwarden::sandbox::Sandbox,
    tempfile::TempDir,
    Vec<(String, String)>,
    seatwarden::config::Config,
) {
    let sandbox =
        crate::fixtures::demo_sandbox(token, seatwarden::sandbox::Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, mut config) = crate::fixtures::demo_env(dir.path(), &sandbox, token, &[]);
    let config_path = dir.path().join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text.push_str(
        "\n[[safety.exceptions]]\nuser_name = \"dana.lee@exmaple.com\"\n\
         until = 2099-01-01\nreason = \"handover\"\n",
    );
    std::fs::write(&config_path, text).unwrap();
    config.safety.exceptions = vec![ExceptionConfig {
        user_name: "dana.lee@exmaple.com".to_owned(),
        until: "2099-01-01".to_owned(),
        reason: "handover".to_owned(),
    }];
    (sandbox, dir, env, config)
}
