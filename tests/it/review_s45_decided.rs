//! A guard's hold on a deprovision after someone decided on it: rejected
//! (`seatwarden reject RUN`), or approved and refused by the approval's re-check.
//! Neither waits for an approval any more, so `status`, `report --run` and the
//! digest's "needs attention" stop telling the operator to "approve RUN": they
//! say what became of the hold and what decides next.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use seatwarden::approval::{self, Only};
use seatwarden::config::Config;
use seatwarden::daemon::status;
use seatwarden::model::IdentityStatus;
use seatwarden::report::digest::{Digest, DigestInput, SweepActions};
use seatwarden::report::{self, Report};
use seatwarden::run::{self, Mode, RunOutcome};
use seatwarden::sandbox::Sandbox;
use seatwarden::store::{RunId, Store};
use seatwarden::synth::{self, Synth, SynthSpec};
use seatwarden::workspace::ScimClient;

const TOKEN: &str = "review-s45-decided-token";

/// A converged workspace, then two active people deprovisioned in the
/// directory and a reconcile whose threshold holds both deactivations.
async fn two_held(dir: &Path) -> (Sandbox, Config, RunId) {
    held(dir, 2).await
}

/// A converged workspace, then `n` active people deprovisioned in the
/// directory and a reconcile whose threshold holds their deactivations.
pub(crate) async fn held(dir: &Path, n: usize) -> (Sandbox, Config, RunId) {
    let mut data = synth::generate(&SynthSpec {
        people: 30,
        groups: 3,
        drift_percent: 0.0,
        seed: 451,
    });
    let sandbox = crate::fixtures::sandbox(TOKEN, data.workspace.clone()).await;
    let mut config =
        crate::fixtures::synth_config(dir, &data, sandbox.base_url().as_ref(), TOKEN, 4);
    execute(&config, Mode::Reconcile).await;
    config.safety.max_deprovisions = 0;
    leave(&mut data, n);
    std::fs::write(
        dir.join("directory.json"),
        synth::directory_json(&data.directory),
    )
    .unwrap();
    let held = execute(&config, Mode::Reconcile).await;
    assert_eq!(held.plan.held().count(), n, "{:?}", held.plan);
    (sandbox, config, held.run_id)
}

/// Two active people with an active account (no Owner: the last-Owner rule
/// would refuse them for its own reason) are deprovisioned.
fn leave(data: &mut Synth, n: usize) {
    let owners: Vec<String> = data
        .roles
        .iter()
        .filter(|(_, role)| *role == seatwarden::model::Role::Owner)
        .map(|(group, _)| group.clone())
        .collect();
    let active: Vec<String> = data
        .workspace
        .accounts
        .iter()
        .filter(|a| a.active)
        .filter_map(|a| a.external_id.clone())
        .collect();
    let mut left = 0;
    for identity in data.directory.identities.iter_mut() {
        if left == n {
            break;
        }
        if identity.status == IdentityStatus::Active
            && active.contains(&identity.id)
            && !identity.groups.iter().any(|g| owners.contains(g))
        {
            identity.status = IdentityStatus::Deprovisioned;
            left += 1;
        }
    }
    assert_eq!(left, n);
}

pub(crate) async fn execute(config: &Config, mode: Mode) -> RunOutcome {
    run::execute(config, Store::open(&config.state.path).unwrap(), mode)
        .await
        .unwrap()
}

pub(crate) fn status_of(config: &Config) -> status::Status {
    let store = Store::open(&config.state.path).unwrap();
    status::collect(
        &store,
        Utc::now(),
        status::Settings::of(config, chrono_tz::UTC, None),
    )
    .unwrap()
}

/// `text` with who decided and when (` by root at 2026-12-05 09:12 UTC`: the OS
/// user running the tests, and now) redacted.
pub(crate) fn redact_decided(text: &str) -> String {
    let marker = format!(" by {} at ", seatwarden::safety::os_user());
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(&marker) {
        out.push_str(&rest[..start]);
        out.push_str(" by <operator> at <time>");
        let after = &rest[start + marker.len()..];
        rest = after
            .find(" UTC")
            .map_or(after, |end| &after[end + " UTC".len()..]);
    }
    out.push_str(rest);
    out
}

/// The open deprovisions' lines of `status`'s text from their reason on (the
/// userName and due time before it vary), and its last-reconcile line from the
/// attention it names (the start time after it varies).
fn status_golden(config: &Config) -> String {
    let text = redact_decided(&status::render_text(&status_of(config)));
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once("(deprovisioned in the directory)"))
        .map(|(_, rest)| format!("<person> (deprovisioned in the directory){rest}"))
        .collect();
    let last = text
        .lines()
        .find(|l| l.starts_with("Last reconcile:"))
        .unwrap_or_else(|| panic!("{text}"));
    out.push(last.split(" started ").next().unwrap().to_owned());
    out.join("\n")
}

/// The digest's open deprovisions, as the daemon's digest job gathers them,
/// and the headline of the run's stored report.
fn digest_golden(config: &Config, run: RunId) -> String {
    let store = Store::open(&config.state.path).unwrap();
    let deprovisions = seatwarden::daemon::notify::digest_deprovisions(&store).unwrap();
    let stored = Report::from_json(&store.report(run).unwrap().unwrap()).unwrap();
    let digest = Digest::build(&DigestInput {
        name: "acme",
        admin_command: "seatwarden",
        timezone: chrono_tz::UTC,
        now: Utc::now(),
        period: Duration::from_secs(24 * 3600),
        reports: std::slice::from_ref(&stored),
        previous: &[],
        previous_span: None,
        previous_latest: None,
        latest: Some(&stored),
        failed_runs: 0,
        failed: &[],
        failed_runs_previous: 0,
        deprovisions: &deprovisions,
        verified: &[],
        sweeps: &SweepActions::default(),
        sweeps_previous: &SweepActions::default(),
        unreported: &SweepActions::default(),
        stopped_runs: 0,
        unreported_previous: &SweepActions::default(),
        stopped_runs_previous: 0,
        unreadable_previous: 0,
        unreadable_earlier: 0,
        decisions: &[],
        unreadable: &[],
    });
    let text = redact_decided(&digest.render_text());
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| {
            l.contains(": deprovisioned in the directory;")
                || l.contains("approve")
                || l.contains("refused")
                || l.starts_with("seatwarden digest for")
        })
        .map(
            |l| match l.split_once(": deprovisioned in the directory;") {
                // The userName and the times before the hold vary.
                Some((_, rest)) => format!(
                    "<person> …{}",
                    rest.split_once(" — ").map_or(rest, |(_, hold)| hold)
                ),
                None => l.to_owned(),
            },
        )
        .collect();
    out.push(format!(
        "headline: {}",
        report::headline(&stored, "seatwarden").1
    ));
    out.push(format!("subject: {}", report::subject("acme", &stored)));
    out.join("\n")
}

#[tokio::test]
async fn after_reject_nothing_asks_to_approve_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, config, run) = two_held(dir.path()).await;
    let before = status_golden(&config);
    assert!(
        before.contains(&format!("waiting for `seatwarden approve {run}`")),
        "{before}"
    );

    let rejected = approval::reject(
        &mut Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        "seatwarden",
        chrono_tz::UTC,
        Utc::now(),
    )
    .unwrap();
    assert_eq!(rejected.rejected, 2);

    let status_text = status_golden(&config);
    let digest = digest_golden(&config, run);
    assert!(!status_text.contains("approve"), "{status_text}");
    assert!(!digest.contains("approve"), "{digest}");
    insta::assert_snapshot!("reject_status", status_text);
    insta::assert_snapshot!("reject_digest", digest);

    let json = serde_json::to_value(status_of(&config)).unwrap();
    for line in json["deprovisions"]["open"].as_array().unwrap() {
        assert_eq!(line["hold"], "guard", "{json}");
        assert_eq!(line["hold_run"], serde_json::Value::Null, "{json}");
        assert_eq!(line["hold_decided"]["decision"], "rejected", "{json}");
        assert_eq!(line["hold_decided"]["run"], run, "{json}");
        assert_eq!(
            line["hold_decided"]["by"],
            seatwarden::safety::os_user().as_str(),
            "{json}"
        );
        assert!(line["hold_decided"]["at"].is_string(), "{json}");
    }
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
}

#[tokio::test]
async fn after_an_approval_refused_everything_the_reason_is_told_not_approve_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_sandbox, mut config, run) = two_held(dir.path()).await;
    // Protected since the run (a break-glass list grown): the re-check refuses both.
    config.safety.protected = vec!["*".to_owned()];
    let client = ScimClient::new(config.scim_settings().unwrap()).unwrap();
    let approval = approval::approve(
        &config,
        &client,
        Store::open(&config.state.path).unwrap(),
        run,
        &Only::All,
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(approval.refused.len(), 2, "{approval:?}");
    assert!(approval.approved.is_empty(), "{approval:?}");

    let status_text = status_golden(&config);
    let digest = digest_golden(&config, run);
    assert!(
        !status_text.contains(&format!("waiting for `seatwarden approve {run}`")),
        "{status_text}"
    );
    assert!(
        !digest.contains(&format!("approve with: seatwarden approve {run}")),
        "{digest}"
    );
    insta::assert_snapshot!("refused_status", status_text);
    insta::assert_snapshot!("refused_digest", digest);

    let json = serde_json::to_value(status_of(&config)).unwrap();
    for line in json["deprovisions"]["open"].as_array().unwrap() {
        assert_eq!(line["hold_run"], serde_json::Value::Null, "{json}");
        assert_eq!(line["hold_decided"]["decision"], "refused", "{json}");
        assert!(
            line["hold_decided"]["why"]
                .as_str()
                .is_some_and(|why| why.ends_with("is protected")),
            "{json}"
        );
    }
    assert_eq!(json["last_reconcile_awaiting_approval"], 0, "{json}");
    assert_eq!(json["last_reconcile_refused_by_approval"], 2, "{json}");
    // No overdue alert names the run for an approval either.
    let store = Store::open(&config.state.path).unwrap();
    assert!(store.held_for_approval().unwrap().is_empty());
}
