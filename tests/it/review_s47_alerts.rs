//! Session 47's review of flapping alerts. A condition that comes and goes (a
//! directory read incomplete every other reconcile, a breaker that opens and
//! closes, a job failing on and off) sent an alert and a `Resolved: ` on every
//! flip: mail that cries wolf. Now a resolution waits until the condition has
//! stayed clear for `report.email.resolve_after`; coming back within it
//! continues the same alert (its thread, its reminders), nothing sent, and the
//! flips are counted in the reminder and the resolution. A new problem, and an
//! overdue deprovision above all, still alerts at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use seatwarden::alert::{self, AlertCondition, AlertContext, RaiseDecision};
use seatwarden::config::Config;
use seatwarden::daemon::notify::Notifier;
use seatwarden::mail::MailSettings;
use seatwarden::model::WorkspaceSnapshot;
use seatwarden::store::{AlertRecordState, OutboxKind, Store};

use crate::fixtures;

fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, hour, minute, 0).unwrap()
}

/// The defaults: a 6 h quiet period, resolutions held for 1 h.
fn mail() -> MailSettings {
    MailSettings {
        quiet_period: Duration::from_secs(6 * 3600),
        resolve_after: Duration::from_secs(3600),
        ..fixtures::plain_mail_settings(9)
    }
}

fn context(mail: &MailSettings) -> AlertContext<'_> {
    AlertContext {
        name: "acme",
        timezone: chrono_tz::UTC,
        mail,
        admin_command: "seatwarden",
    }
}

fn breaker() -> AlertCondition {
    AlertCondition::CircuitBreakerOpen {
        reason: "9 of 10 writes failed with HTTP 503".into(),
    }
}

fn subjects(store: &Store) -> Vec<String> {
    store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|e| e.message.subject)
        .collect()
}

/// Marks every queued message sent (a reminder does not queue behind its
/// alert still waiting in the outbox).
fn delivered(store: &mut Store, when: DateTime<Utc>) {
    for entry in store.outbox().unwrap() {
        if entry.state == seatwarden::store::OutboxState::Pending {
            store.mark_message_sent(entry.id, when).unwrap();
        }
    }
}

/// A breaker that opens and closes every half hour for six hours sent 13
/// messages, an alert and a resolution per flip. Now: the alert, one reminder
/// once the quiet period is over (saying it flapped, how often), and one
/// resolution once it stayed closed for the hold, all in one thread.
#[test]
fn a_flapping_condition_sends_one_alert_not_a_mail_per_flip() {
    let mut store = Store::open_in_memory().unwrap();
    let mail = mail();
    let context = context(&mail);
    let key = breaker().key();
    let first = alert::raise(&mut store, &context, &breaker(), at(8, 0)).unwrap();
    assert_eq!(first.decision, RaiseDecision::New);
    delivered(&mut store, at(8, 1));
    // Closed at half past, open again on the hour, five times.
    for h in 8..13 {
        assert_eq!(
            alert::resolve(&mut store, &context, &key, at(h, 30)).unwrap(),
            None,
            "closed at {h}:30: held"
        );
        assert_eq!(
            alert::resolve_due(&mut store, &context, at(h, 59))
                .unwrap()
                .len(),
            0
        );
        let back = alert::raise(&mut store, &context, &breaker(), at(h + 1, 0)).unwrap();
        assert_eq!(
            back.message,
            None,
            "open again at {}:00: the same alert",
            h + 1
        );
    }
    assert_eq!(subjects(&store).len(), 1, "{:#?}", subjects(&store));
    let record = store.alert(&key).unwrap().unwrap();
    assert_eq!(
        (record.state, record.flaps, record.cleared_at),
        (AlertRecordState::Active, 5, None)
    );

    // Closed, and open again once the quiet period is over: one reminder, on
    // the alert's schedule, naming the flapping.
    alert::resolve(&mut store, &context, &key, at(13, 30)).unwrap();
    let reminder = alert::raise(&mut store, &context, &breaker(), at(14, 0)).unwrap();
    assert_eq!(reminder.decision, RaiseDecision::Reminder);
    // Closed for good: the resolution an hour on, not before.
    alert::resolve(&mut store, &context, &key, at(14, 30)).unwrap();
    assert_eq!(
        alert::resolve_due(&mut store, &context, at(15, 29))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        alert::resolve_due(&mut store, &context, at(15, 30))
            .unwrap()
            .len(),
        1
    );
    let outbox = store.outbox().unwrap();
    let subject = "[seatwarden] acme: circuit breaker open: workspace writes stopped";
    assert_eq!(
        subjects(&store),
        [
            subject.to_owned(),
            "[seatwarden] acme: still: circuit breaker open: workspace writes stopped".to_owned(),
            format!("Resolved: {subject}"),
        ]
    );
    let root = outbox[0].message_id();
    for later in &outbox[1..] {
        assert_eq!(later.message.in_reply_to.as_deref(), Some(root.as_str()));
    }
    assert!(
        outbox[1].message.text.contains(
            "Flapping: it cleared and came back 6 times since first raised, each time within 1h"
        ),
        "{}",
        outbox[1].message.text
    );
    assert!(
        outbox[2]
            .message
            .text
            .contains("it cleared and came back 6 times")
            && outbox[2]
                .message
                .text
                .contains("Clear since 2026-12-05 14:30 UTC"),
        "{}",
        outbox[2].message.text
    );
    assert_eq!(
        store.alert(&key).unwrap().unwrap().state,
        AlertRecordState::Resolved
    );
}

/// A hold that grows while its resolution is held is news, as within the
/// quiet period: sent at once, in the alert's thread.
#[test]
fn a_condition_back_bigger_within_the_hold_is_sent_at_once() {
    let mut store = Store::open_in_memory().unwrap();
    let mail = mail();
    let context = context(&mail);
    let incomplete = |run_id, held| AlertCondition::DirectoryIncomplete { run_id, held };
    alert::raise(&mut store, &context, &incomplete(1, 3), at(8, 0)).unwrap();
    alert::resolve(&mut store, &context, "directory_incomplete", at(8, 30)).unwrap();
    let quiet = alert::raise(&mut store, &context, &incomplete(3, 3), at(9, 0)).unwrap();
    assert_eq!(quiet.decision, RaiseDecision::Quiet);
    alert::resolve(&mut store, &context, "directory_incomplete", at(9, 30)).unwrap();
    let grew = alert::raise(&mut store, &context, &incomplete(5, 300), at(10, 0)).unwrap();
    assert_eq!(grew.decision, RaiseDecision::Grew);
    assert!(grew.message.is_some());
    assert_eq!(
        store.alert("directory_incomplete").unwrap().unwrap().flaps,
        2
    );
}

/// The daemon was stopped while a resolution was held, and the condition came
/// back after its hold was over: that alert is over (its resolution goes out,
/// in its thread), and this one is new (an alert of its own, at once).
#[test]
fn a_condition_back_after_its_hold_is_a_new_alert_after_the_old_ones_resolution() {
    let mut store = Store::open_in_memory().unwrap();
    let mail = mail();
    let context = context(&mail);
    alert::raise(&mut store, &context, &breaker(), at(8, 0)).unwrap();
    alert::resolve(&mut store, &context, &breaker().key(), at(8, 30)).unwrap();
    let again = alert::raise(&mut store, &context, &breaker(), at(11, 0)).unwrap();
    assert_eq!(again.decision, RaiseDecision::New);
    let outbox = store.outbox().unwrap();
    let kinds: Vec<OutboxKind> = outbox.iter().map(|e| e.message.kind).collect();
    assert_eq!(
        kinds,
        [OutboxKind::Alert, OutboxKind::Resolution, OutboxKind::Alert]
    );
    assert_eq!(outbox[1].message.in_reply_to, Some(outbox[0].message_id()));
    assert_eq!(outbox[2].message.in_reply_to, None, "a thread of its own");
    let record = store.alert(&breaker().key()).unwrap().unwrap();
    assert_eq!(record.first_raised_at, at(11, 0));
    assert_eq!(record.thread_root, Some(outbox[2].message_id()));
    assert_eq!(
        alert::resolve_due(&mut store, &context, at(12, 0))
            .unwrap()
            .len(),
        0
    );
}

/// An overdue deprovision (someone keeps access past their due time) and a
/// hold waiting for a human hold no resolution: done, they resolve at once,
/// and back, they alert at once as new.
#[test]
fn an_overdue_deprovision_and_a_held_plan_are_never_damped() {
    let mut store = Store::open_in_memory().unwrap();
    let mail = mail();
    let context = context(&mail);
    let overdue = AlertCondition::OverdueDeprovision {
        identity_id: "00u1".into(),
        user_name: "ada@example.com".into(),
        due_at: at(7, 0),
    };
    let plan = AlertCondition::PlanHeld {
        run_id: 4,
        held: 12,
        reason: "deprovisions: 12 in this run, over the limit of 10".into(),
    };
    for condition in [&overdue, &plan] {
        alert::raise(&mut store, &context, condition, at(8, 0)).unwrap();
        assert!(
            alert::resolve(&mut store, &context, &condition.key(), at(8, 5))
                .unwrap()
                .is_some(),
            "{condition:?}"
        );
        let back = alert::raise(&mut store, &context, condition, at(8, 10)).unwrap();
        assert_eq!(back.decision, RaiseDecision::New, "{condition:?}");
        assert!(back.message.is_some());
    }
    assert_eq!(subjects(&store).len(), 6, "{:#?}", subjects(&store));
}

/// A job whose repeated-failure alert was seen clear fails again before three
/// failures in a row: the job is failing on and off, the alert goes on (no
/// resolution an hour after the first success), and it resolves an hour after
/// the job last recovered.
#[test]
fn a_job_failing_on_and_off_keeps_its_alert_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = email_config(dir.path(), "http://127.0.0.1:9", "");
    let notifier = Notifier::from_config(&config).expect("email configured");
    let mut store = Store::open(&config.state.path).unwrap();
    let key = "repeated_failures:sweep";
    notifier.after_job(&mut store, "sweep", 3, Some("HTTP 503"), at(8, 0));
    notifier.after_job(&mut store, "sweep", 0, None, at(8, 5));
    notifier.after_job(&mut store, "sweep", 1, Some("HTTP 503"), at(8, 10));
    let record = store.alert(key).unwrap().unwrap();
    assert_eq!((record.cleared_at, record.flaps), (None, 1));
    notifier.after_job(&mut store, "sweep", 0, None, at(8, 15));
    notifier.resolve_due(&mut store, at(9, 10));
    assert_eq!(
        store.alert(key).unwrap().unwrap().state,
        AlertRecordState::Active,
        "failed again at 8:10: not clear since 8:05"
    );
    notifier.resolve_due(&mut store, at(9, 15));
    assert_eq!(
        subjects(&store),
        [
            "[seatwarden] 127.0.0.1: sweep failed 3 times in a row",
            "Resolved: [seatwarden] 127.0.0.1: sweep failed 3 times in a row",
        ]
    );
}

/// `report.email.resolve_after = "0s"` resolves at once, as before.
#[test]
fn resolve_after_zero_resolves_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = email_config(dir.path(), "http://127.0.0.1:9", "resolve_after = \"0s\"\n");
    let notifier = Notifier::from_config(&config).expect("email configured");
    let mut store = Store::open(&config.state.path).unwrap();
    notifier.after_job(&mut store, "sweep", 3, Some("HTTP 503"), at(8, 0));
    notifier.after_job(&mut store, "sweep", 0, None, at(8, 5));
    assert_eq!(subjects(&store).len(), 2, "{:#?}", subjects(&store));
}

/// Ada's configuration (the workspace at `url`) with `[report.email]` to a
/// relay on port 9 and `extra` email keys.
fn email_config(dir: &Path, url: &str, extra: &str) -> Config {
    fixtures::ada_config(url, dir, "active");
    let path = dir.join("seatwarden.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[state]\npath = \"state.db\"\n\n\
         [schedule]\ndigest = \"\"\n\n\
         [report.email]\nsmtp_url = \"smtp://127.0.0.1:9\"\n\
         from = \"seatwarden@example.com\"\nto = [\"it-security@example.com\"]\n{extra}"
    ));
    std::fs::write(&path, text).unwrap();
    Config::load_with_env(&path, Some(Default::default())).unwrap()
}

/// A resolution held when the daemon stopped is in the store: after a restart
/// the first job sends it once due, though no job sees its condition again (the
/// digest job that failed is not scheduled any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_resolution_goes_out_after_a_restart_from_the_next_job() {
    let sandbox = fixtures::sandbox("t0ken", WorkspaceSnapshot::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = email_config(dir.path(), sandbox.base_url().as_ref(), "");
    let key = "repeated_failures:digest";
    {
        let notifier = Notifier::from_config(&config).expect("email configured");
        let mut store = Store::open(&config.state.path).unwrap();
        let now = Utc::now();
        notifier.after_job(
            &mut store,
            "digest",
            3,
            Some("no report"),
            now - chrono::Duration::hours(3),
        );
        notifier.after_job(
            &mut store,
            "digest",
            0,
            None,
            now - chrono::Duration::hours(2),
        );
        let record = store.alert(key).unwrap().unwrap();
        assert_eq!(record.state, AlertRecordState::Active);
        assert!(record.cleared_at.is_some());
    }
    let resolved = || {
        let store = Store::open(&config.state.path).unwrap();
        store
            .outbox()
            .unwrap()
            .iter()
            .filter(|e| e.message.kind == OutboxKind::Resolution)
            .count()
    };
    assert_eq!(resolved(), 0);
    let (mut daemon, daemon_log) = fixtures::spawn_daemon_once(dir.path(), &[]);
    let logged = || std::fs::read_to_string(&daemon_log).unwrap_or_default();
    fixtures::listening_port(&mut daemon, logged).await;
    let sent = fixtures::poll_until(Duration::from_secs(60), || resolved() == 1).await;
    fixtures::sigterm(&daemon);
    fixtures::exit_of(daemon, "the daemon").await;
    assert!(sent, "the held resolution was not sent\n{}", logged());
    let store = Store::open(&config.state.path).unwrap();
    assert_eq!(
        store.alert(key).unwrap().unwrap().state,
        AlertRecordState::Resolved
    );
    assert_eq!(resolved(), 1);
    sandbox.shutdown().await;
}
