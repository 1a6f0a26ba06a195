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
use seatwarden::config::{Config, EmailConfig};
use seatwarden::daemon::notify::Notifier;
use seatwarden::mail::{MailSettings, SmtpEndpoint, TlsMode};
use seatwarden::report::{self, Report};
use seatwarden::retry::RetryPolicy;
use seatwarden::store::{AlertRecordState, OutboxKind, RunId, Store};
use seatwarden::sweep::SweepOutcome;
use seatwarden::workspace::ScimClient;

use crate::review_s45_decided::held;

/// When the decisions below are recorded: fixed, so the alert's words are.
pub(crate) fn decided_at() -> DateTime<Utc> {
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
        resolve_after: Duration::from_secs(3600),
        retry: RetryPolicy::immediate(0),
    }
}

/// The overdue alert the ledger raises two hours on (past the 1 h SLA): its
/// lines about holds, with the operator (the OS user running the tests), the
/// due times and the userNames (seeded, but not what is checked) left out.
pub(crate) fn overdue_alert(config: &Config) -> String {
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

/// The binary with `args` against `config`'s file, to its end.
async fn binary(config: &Config, args: &[&str]) -> std::process::Output {
    let file = config.source.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_seatwarden"))
            .arg("--config")
            .arg(file)
            .args(args)
            .env_remove("SEATWARDEN_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A sweep's hold that `approve`'s re-check refused waits for nobody's
/// approval (session 45 stopped counting the reconcile's so), yet the counts
/// read from journals still had it "held for a human": `report --run` of the
/// sweep run told to approve it again, and the sweeps' count of what awaits
/// approval (the `/metrics` gauge's) and `approval::awaiting_decision` (what
/// `status` counts of a run without a report) counted it, and the sweep's hold
/// alert, which names the run for an approval, stayed active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_hold_an_approval_refused_is_not_counted_as_awaiting() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, mut config, reconcile) = held(dir.path(), 1).await;
    reject(&config, reconcile);
    let store = std::sync::Arc::new(std::sync::Mutex::new(
        Store::open(&config.state.path).unwrap(),
    ));
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let swept = seatwarden::sweep::sweep(
        &config,
        &config.directory(),
        &client,
        &store,
        // Past the leaver's due time: the sweep enforces it, and the guard holds it.
        Utc::now() + chrono::Duration::hours(2),
        chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(swept.held, 1, "{swept:?}");
    let sweep = swept.run_id.unwrap();
    drop(store);
    // The daemon's alert of what the sweep held: it waits for `approve`.
    config.report.email = Some(EmailConfig {
        smtp_url: "smtp://127.0.0.1:9".into(),
        username: None,
        password: None,
        password_file: None,
        from: "seatwarden@example.com".into(),
        to: vec!["it-security@example.com".into()],
        quiet_period: "6h".into(),
        resolve_after: "1h".into(),
        ca_file: None,
        timeout: "5s".into(),
        allow_cleartext: false,
    });
    let notifier = Notifier::from_config(&config).expect("email configured");
    let sweep_held = |store: &Store| store.alert("sweep_held").unwrap().map(|a| a.state);
    {
        let mut store = Store::open(&config.state.path).unwrap();
        assert_eq!(store.sweep_actions_awaiting_approval(reconcile).unwrap(), 1);
        notifier.after_sweep(&mut store, &swept, Utc::now());
        assert_eq!(sweep_held(&store), Some(AlertRecordState::Active));
    }
    approve_refused(&mut config, sweep).await;

    let mut store = Store::open(&config.state.path).unwrap();
    // A pass that held nothing: the alert is over, nobody is to approve run 3.
    notifier.after_sweep(&mut store, &SweepOutcome::default(), Utc::now());
    assert_eq!(sweep_held(&store), Some(AlertRecordState::Resolved));
    assert_eq!(
        store.sweep_actions_awaiting_approval(reconcile).unwrap(),
        0,
        "refused: nothing waits for an approval"
    );
    assert_eq!(approval::awaiting_decision(&store, sweep).unwrap(), 0);
    let held = approval::held_rows(&store, sweep).unwrap();
    assert_eq!((held.awaiting_decision, held.refused), (0, 1), "{held:?}");
    let out = binary(&config, &["report", "--run", &sweep.to_string()]).await;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let writes = text
        .split_once("Its writes: ")
        .unwrap_or_else(|| panic!("{text}"))
        .1;
    assert!(!writes.contains("held for a human"), "{text}");
    assert!(
        !writes.contains(&format!("then `seatwarden approve {sweep}`")),
        "{text}"
    );
    insta::assert_snapshot!("refused_sweep_report", writes.trim());
}
