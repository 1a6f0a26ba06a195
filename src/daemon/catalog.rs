//! Every metric the daemon exports, described once (`# HELP` in `/metrics`), and
//! the counters registered at zero when it starts: a counter that appears only at
//! its first event breaks `rate()` and `absent()` alerts (no series, then a jump
//! from nothing).
//!
//! Gauges whose value only a reconcile knows (`seatwarden_drift_items`,
//! `seatwarden_safety_finding`) appear after the first one; a zero before it would
//! claim an answer nobody has. At a later start they come back from the last
//! reconcile's stored report, so a restart resolves no alert on them. `seatwarden_actions_total{kind,outcome}` has too many
//! label sets to list, and appears at its first action.
//!
//! The per-job metrics carry the job in [`JOB_LABEL`]; `prometheus/seatwarden.rules.yml`
//! alerts on these names, and a test checks its selectors against a daemon's series.

use metrics::Unit;

/// Counters, gauges and histograms by name, with their help text.
const COUNTERS: &[(&str, &str)] = &[
    (
        "seatwarden_job_runs_total",
        "Job runs finished, by job and status (succeeded: ran to the end; failed, a \
         reconcile stopped at schedule.reconcile_max_duration included; stopped: the \
         daemon was stopping (SIGTERM) while it ran, neither a success nor a failure).",
    ),
    (
        "seatwarden_job_skipped_total",
        "Scheduled fires skipped because the job was still running, or still waiting \
         for the writer lock (a sweep behind a long reconcile).",
    ),
    (
        "seatwarden_actions_total",
        "Actions of reconciles and deprovisioning passes, by kind and outcome \
         (applied, failed, held, not_run); held counts settle-window waits too.",
    ),
    (
        "seatwarden_retries_total",
        "Workspace and directory requests retried after a transient failure \
         (reconciles, those that then failed included, and deprovisioning passes).",
    ),
    (
        "seatwarden_deprovisions_escalated_total",
        "Deprovisions escalated because access was not removed within the SLA.",
    ),
];

const GAUGES: &[(&str, Option<Unit>, &str)] = &[
    (
        "seatwarden_drift_items",
        None,
        "Drift the last trusted reconcile left (found, less what it fixed and verified), \
         by kind.",
    ),
    (
        "seatwarden_safety_finding",
        None,
        "1 when the last reconcile had this safety finding (source_fault, \
         workspace_listing_short, allow_over_threshold; protected_by_person and \
         protected_leavers as the last trusted reconcile's plan listed them, \
         raised but never lowered by one whose directory read was incomplete \
         or whose workspace listing was short; \
         exceptions_naming_nobody), else 0.",
    ),
    (
        "seatwarden_actions_awaiting_approval",
        None,
        "Held actions that wait for a human (approve or reject): the last reconcile's \
         and those the sweeps held since, each once; settle-window waits and decided \
         actions are not counted.",
    ),
    (
        "seatwarden_deprovisions_pending",
        None,
        "Open deprovisions in the ledger that are not overdue yet.",
    ),
    (
        "seatwarden_deprovisions_overdue",
        None,
        "Open deprovisions in the ledger past their SLA (held ones included).",
    ),
    (
        "seatwarden_circuit_state",
        None,
        "Circuit breaker: 0 closed, 1 open, 2 half-open.",
    ),
    (
        "seatwarden_job_running",
        None,
        "1 while the job runs, else 0.",
    ),
    (
        "seatwarden_job_lock_waiting_seconds",
        Some(Unit::Seconds),
        "How long the workspace writer (reconcile, sweep, retry, prune) has been waiting \
         for the writer lock so far, by job; 0 when it is not waiting. A sweep held off \
         behind a long reconcile shows here while it waits (the histogram \
         seatwarden_job_lock_wait_seconds counts a wait once the job has started).",
    ),
    (
        "seatwarden_last_success_timestamp_seconds",
        Some(Unit::Seconds),
        "Unix time the job last ran to the end (absent until it has).",
    ),
    (
        "seatwarden_outbox_messages",
        None,
        "Mail in the outbox, by state (queued: not tried yet; retrying: after a \
         failed attempt; failed: refused for good, kept until the prune).",
    ),
    (
        "seatwarden_outbox_oldest_pending_age_seconds",
        Some(Unit::Seconds),
        "How long the oldest message in the outbox has been waiting to be sent (0 when \
         none waits).",
    ),
    (
        "seatwarden_certificate_expiry_timestamp_seconds",
        Some(Unit::Seconds),
        "Unix time each certificate file the configuration names stops being of use, by \
         configuration key (directory.certificate_file: the credential's notAfter, which \
         Entra refuses after; a ca_file: its latest CA's), read at each scrape; absent \
         without such a file, NaN once its file cannot be read or a reload removed the \
         key.",
    ),
    (
        "seatwarden_build_info",
        None,
        "Always 1; the running build's version in the version label.",
    ),
    (
        "seatwarden_start_time_seconds",
        Some(Unit::Seconds),
        "Unix time the daemon process started.",
    ),
    (
        "seatwarden_config_reload_failed",
        None,
        "1 after a SIGHUP reload failed (the running configuration is kept), until a \
         reload succeeds; else 0.",
    ),
    (
        "seatwarden_dry_run",
        None,
        "1 while the daemon runs in dry run (schedule.dry_run): its reconciles plan and \
         report and write nothing, and no sweep deactivates anyone who leaves; else 0.",
    ),
];

const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "seatwarden_run_duration_seconds",
        "Duration of reconcile runs.",
    ),
    (
        "seatwarden_job_duration_seconds",
        "Duration of job runs, by job.",
    ),
    (
        "seatwarden_job_lock_wait_seconds",
        "How long each run of a workspace writer (reconcile, sweep, retry, prune) waited \
         for the writer lock before it started, by job: a sweep held off behind a long \
         reconcile deactivates its leavers that much later.",
    ),
    (
        "seatwarden_deprovision_latency_seconds",
        "Time from detecting a leaver to verifying their deactivation (sweeps and \
         reconciles).",
    ),
];

/// The label naming the job of the per-job metrics. Not `job`: Prometheus sets
/// `job` (and `instance`) on every series it scrapes, and renames a scraped `job`
/// label to `exported_job` (unless the scrape sets `honor_labels`), so a rule
/// written as `{job="sweep"}` would match nothing.
pub const JOB_LABEL: &str = "job_name";

/// Outcomes of a job run (`seatwarden_job_runs_total{status}`).
pub const JOB_STATUSES: [&str; 3] = ["succeeded", "failed", "stopped"];

/// Describes every metric. Call once the recorder is installed (before, it is lost).
pub fn describe() {
    for &(name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
    }
    for &(name, unit, help) in GAUGES {
        match unit {
            Some(unit) => metrics::describe_gauge!(name, unit, help),
            None => metrics::describe_gauge!(name, help),
        }
    }
    for &(name, help) in HISTOGRAMS {
        metrics::describe_histogram!(name, Unit::Seconds, help);
    }
}

/// The states of `seatwarden_outbox_messages{state}`.
pub const OUTBOX_STATES: [&str; 3] = ["queued", "retrying", "failed"];

/// Registers at zero what a fresh daemon knows to be zero: the counters for every
/// job and status, the unlabelled counters, the empty histograms, and the reload
/// and outbox gauges (a scrape sets the outbox's from the database). Adding zero
/// leaves a value already counted alone.
pub fn register(jobs: &[&'static str]) {
    for &job in jobs {
        for status in JOB_STATUSES {
            metrics::counter!("seatwarden_job_runs_total", JOB_LABEL => job, "status" => status)
                .increment(0);
        }
        metrics::counter!("seatwarden_job_skipped_total", JOB_LABEL => job).increment(0);
        // Registered, a histogram renders with a count of 0.
        let _ = metrics::histogram!("seatwarden_job_duration_seconds", JOB_LABEL => job);
        // The writers only: mail and the digest take no lock.
        if super::takes_writer_lock(job) {
            let _ = metrics::histogram!("seatwarden_job_lock_wait_seconds", JOB_LABEL => job);
            metrics::gauge!("seatwarden_job_lock_waiting_seconds", JOB_LABEL => job).set(0.0);
        }
    }
    metrics::counter!("seatwarden_retries_total").increment(0);
    metrics::counter!("seatwarden_deprovisions_escalated_total").increment(0);
    let _ = metrics::histogram!("seatwarden_run_duration_seconds");
    let _ = metrics::histogram!("seatwarden_deprovision_latency_seconds");
    metrics::gauge!("seatwarden_config_reload_failed").set(0.0);
    for state in OUTBOX_STATES {
        metrics::gauge!("seatwarden_outbox_messages", "state" => state).set(0.0);
    }
    metrics::gauge!("seatwarden_outbox_oldest_pending_age_seconds").set(0.0);
}

/// Every metric name described here.
pub fn names() -> impl Iterator<Item = &'static str> {
    COUNTERS
        .iter()
        .map(|(name, _)| *name)
        .chain(GAUGES.iter().map(|(name, _, _)| *name))
        .chain(HISTOGRAMS.iter().map(|(name, _)| *name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The help of `seatwarden_job_runs_total` names every status it counts: one
    /// it leaves out (`stopped`) reads, on a dashboard, as a status that cannot be.
    #[test]
    fn the_job_runs_help_names_every_status() {
        let help = super::COUNTERS
            .iter()
            .find(|(name, _)| *name == "seatwarden_job_runs_total")
            .map(|(_, help)| *help)
            .unwrap();
        for status in super::JOB_STATUSES {
            assert!(help.contains(status), "{status} is not in {help:?}");
        }
    }

    /// Every `metrics::counter!` / `gauge!` / `histogram!` in the crate's source
    /// names a metric described here: a new metric without help text fails.
    #[test]
    fn every_metric_in_the_source_is_described() {
        fn visit(dir: &Path, found: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    visit(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs")
                    // This file names them all (registering at zero): it proves nothing.
                    && !path.ends_with("daemon/catalog.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                        for (at, _) in text.match_indices(macro_name) {
                            let rest = text[at + macro_name.len()..].trim_start();
                            if let Some(name) = rest
                                .strip_prefix('"')
                                .and_then(|r| r.split_once('"'))
                                .map(|(name, _)| name)
                                .filter(|name| name.starts_with("seatwarden_"))
                            {
                                found.insert(name.to_owned());
                            }
                        }
                    }
                }
            }
        }
        let mut found = BTreeSet::new();
        visit(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(
            found.len() >= 10,
            "the scan found too few metrics: {found:?}"
        );
        let described: BTreeSet<String> = super::names().map(str::to_owned).collect();
        let undescribed: Vec<&String> = found.difference(&described).collect();
        assert!(undescribed.is_empty(), "not described: {undescribed:?}");
        let unused: Vec<&String> = described.difference(&found).collect();
        assert!(unused.is_empty(), "described but never emitted: {unused:?}");
    }
}
