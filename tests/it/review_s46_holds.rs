//! Session 46's review of decided holds. Once a guard's hold of a deprovision
//! was rejected (`seatwarden reject RUN`) or refused by `approve`'s re-check,
//! `status` and the digest said so (session 45); the overdue alert, still sent
//! (the person keeps access past their due time), only left out the approve
//! line, and the run's headline read "N actions planned" as if they were to
//! come. Both now say what was decided, by whom and when.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use seatwarden::alert::{self, AlertContext};
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::mail::{MailSettings, SmtpEndpoint, TlsMode};
use seatwarden::report::{self, Report};
use seatwarden::retry::RetryPolicy;
use seatwarden::store::{OutboxKind, RunId, Store};
use seatwarden::workspace::ScimClient;

use crate::review_s45_decided::held;

/// When the decisions below are recorded: fixed, so the alert's words are.
fn decided_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 9, 30, 0).unwrap()
}

fn mail() -> MailSettings {
    MailSettings {
        endpoint: SmtpEndpoint {
            host: "127.0.0.1".into(),
            port: 9,
            tls: TlsMode::None,
        },
        username: None,
        password: None,
        from: "seatwarden@example.com".into(),
        to: vec!["it-security@example.com".into()],
        ca_pem: None,
        timeout: Duration::from_secs(5),
        quiet_period: Duration::from_secs(6 * 3600),
        retry: RetryPolicy::immediate(0),
    }
}

/// The overdue alert the ledger raises two hours on (past the 1 h SLA): its
/// lines about holds, with the operator (the OS user running the tests), the
/// due times and the userNames (seeded, but not what is checked) left out.
fn overdue_alert(config: &Config) -> String {
    let mut store = Store::open(&config.state.path).unwrap();
    let mail = mail();
    let context = AlertContext {
        name: "acme",
        timezone: chrono_tz::UTC,
        mail: &mail,
        admin_command: "seatwarden",
    };
    let outcome = alert::overdue_deprovisions(
        &mut store,
        &context,
        Utc::now() + chrono::Duration::hours(2),
    )
    .unwrap();
    let id = outcome.alert.expect("an overdue alert");
    let entry = store
        .outbox()
        .unwrap()
        .into_iter()
        .find(|e| e.id == id && e.message.kind == OutboxKind::Alert)
        .unwrap();
    let operator = seatwarden::safety::os_user();
    entry
        .message
        .text
        .lines()
        .filter(|l| {
            ["held", "run ", "approve", "reject"]
                .iter()
                .any(|w| l.contains(w))
        })
        .map(|l| {
            let l = l.replace(&operator, "<operator>");
            // "name (directory id X), due T: why" — the hold after the due time.
            match l.split_once(" (directory id ") {
                Some((_, rest)) => format!(
                    "<person>: {}",
                    rest.split_once(" UTC: ").map_or(rest, |(_, hold)| hold)
                ),
                None => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn reject(config: &Config, run: RunId) {
    let rejected = approval::reject(
        &mut Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        decided_at(),
    )
    .unwrap();
    assert!(rejected.rejected > 0);
}

/// Protected since the run (a break-glass list grown): the re-check refuses all.
async fn approve_refused(config: &mut Config, run: RunId) {
    config.safety.protected = vec!["*".to_owned()];
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve(
        config,
        &client,
        Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        decided_at(),
    )
    .await
    .unwrap();
    assert!(approval.approved.is_empty() && !approval.refused.is_empty());
}

/// The overdue alert of a leaver whose hold was rejected is still sent (they
/// keep access past their due time), and says that the hold was rejected, by
/// whom and when, and what plans it next, as `status` does; it asked nobody to
/// approve, but said nothing of the decision either.
#[tokio::test]
async fn an_overdue_alert_says_the_hold_was_rejected_by_whom_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 1).await;
    reject(&config, run);
    let one = overdue_alert(&config);
    assert!(!one.contains("approve with"), "{one}");
    assert!(
        one.contains(&format!(
            "Run {run} held it for a human, and that hold was rejected"
        )),
        "{one}"
    );
    insta::assert_snapshot!("rejected_alert_one", one);

    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 2).await;
    reject(&config, run);
    let two = overdue_alert(&config);
    assert!(!two.contains("approve with"), "{two}");
    insta::assert_snapshot!("rejected_alert_two", two);
}

/// The overdue alert of a leaver whose hold `approve` refused says it was
/// refused, by whose approval and when, and why; the next reconcile decides.
#[tokio::test]
async fn an_overdue_alert_says_the_approval_refused_the_hold_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, mut config, run) = held(dir.path(), 1).await;
    approve_refused(&mut config, run).await;
    let one = overdue_alert(&config);
    assert!(one.contains("is protected. Nothing waits"), "{one}");
    insta::assert_snapshot!("refused_alert_one", one);

    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, mut config, run) = held(dir.path(), 2).await;
    approve_refused(&mut config, run).await;
    let two = overdue_alert(&config);
    assert!(
        two.contains(&format!("`seatwarden approve {run}` by <operator>")),
        "{two}"
    );
    insta::assert_snapshot!("refused_alert_two", two);
}

/// The run's headline (`report --run`'s first line, the mailed report's) and
/// subject after a reject: "2 drift items, 2 actions planned" read as if they
/// were still to come; they say the actions were rejected and what is next.
#[tokio::test]
async fn after_reject_the_runs_headline_says_rejected_not_planned() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = held(dir.path(), 2).await;
    reject(&config, run);
    let store = Store::open(&config.state.path).unwrap();
    let stored = Report::from_json(&store.report(run).unwrap().unwrap()).unwrap();
    assert_eq!(stored.rejected(), 2);
    let text = report::render_text(&stored, chrono_tz::UTC, "seatwarden", false);
    let first = text.lines().next().unwrap().to_owned();
    assert!(!first.contains("planned"), "{first}");
    let golden = format!(
        "{first}\nsubject: {}\nmarkdown: {}",
        report::subject("acme", &stored),
        report::render_markdown(&stored, chrono_tz::UTC, "seatwarden")
            .unwrap()
            .lines()
            .find(|l| l.contains("rejected"))
            .unwrap_or("<no line says rejected>")
    );
    insta::assert_snapshot!("rejected_headline", golden);
}
