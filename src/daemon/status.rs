//! What `seatwarden status` prints and `GET /status` returns: the deprovisioning
//! ledger (pending and overdue, due times in the configured zone), the jobs (and
//! those of the running daemon waiting for the writer lock, since when), who
//! holds the writer lock now (a daemon job or a command run by hand), the mail
//! outbox (messages not sent yet, when the next attempt is, the last error), the
//! alerts open now (with when a held resolution goes out), and the latest full
//! run.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::circuit::CircuitState;
use crate::config::DaemonSettings;
use crate::model::LossReason;
use crate::report::digest::DeprovisionHold;
use crate::schedule::Schedule;
use crate::sla::{self, EntryState, LedgerEntry};
use crate::store::{JobRecord, RunId, RunKind, RunRecord, RunStatus, Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub now: DateTime<Utc>,
    pub timezone: String,
    pub deprovisions: Deprovisions,
    /// With `deprovision.action = "delete"` and a retention period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletions: Option<Deletions>,
    /// Whether a daemon holds the state database's instance lock (`None`: not
    /// looked at).
    pub daemon_running: Option<bool>,
    /// The scheduled jobs in the order of the schedule, then any others recorded.
    pub jobs: Vec<JobLine>,
    /// Who holds the state database's writer lock now, as the holder named itself
    /// in the lock file (a daemon job, or a command run by hand, which the jobs
    /// then wait for); absent when nobody holds it, or the holder is not named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_lock: Option<crate::store::LockHolder>,
    /// The workspace circuit breaker now: while open, no run writes.
    pub circuit: CircuitState,
    /// Why it last opened (kept while it is half-open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_reason: Option<String>,
    /// The mail outbox: what is not sent yet, and when its next attempt is.
    pub outbox: OutboxLine,
    /// The alerts open now (mailed and not resolved), by key: what on-call was
    /// told, and when a resolution held while the condition stays clear goes out.
    pub alerts: Vec<AlertLine>,
    pub last_reconcile: Option<RunRecord>,
    /// Why the last reconcile's directory snapshot was rejected (source
    /// sanity: empty, or shrunk past `safety.max_directory_shrink_percent`),
    /// from its report: the run `succeeded` and planned nothing, and exited 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reconcile_directory_rejected: Option<String>,
    /// The last reconcile's journal rows by state (`applied`, `failed`, `held`,
    /// …): a run that finished is `succeeded` however many of its writes failed.
    /// Writes kept back unsent are `not_sent`, not `failed`: those a stop, an
    /// opened circuit breaker, the workspace found down or its token refused
    /// stopped ([`crate::apply::KeptBack`]), and, once the run is over, those
    /// still `planned` (the writes had stopped before their phase). None reached
    /// the workspace; the next reconcile plans them again. As the run's report
    /// counts them ([`crate::report::Report::not_sent`]).
    pub last_reconcile_actions: BTreeMap<String, usize>,
    /// The last reconcile's held actions that wait for a human (`approve` or
    /// `reject`), as its stored report counts them: held, less those only waiting
    /// for the settle window, what its incomplete directory read held, and those
    /// decided since. Of the newest reconcile that planned when the last did not
    /// ([`Status::held_by_run`]). What `/metrics` counts for it.
    pub last_reconcile_awaiting_approval: usize,
    /// The last reconcile's held actions that its incomplete directory read held
    /// ([`crate::model::HoldReason::IncompleteDirectory`]): nothing for a human to
    /// approve (`approve` refuses them); the next reconcile from a whole read
    /// decides. Not in `last_reconcile_awaiting_approval`.
    pub last_reconcile_held_incomplete_directory: usize,
    /// The last reconcile's held actions an approval's re-check refused
    /// ([`crate::report::Report::refused_by_approval`]): still held, nothing to
    /// approve (approving again re-checks the same); the next reconcile decides.
    /// Not in `last_reconcile_awaiting_approval`.
    pub last_reconcile_refused_by_approval: usize,
    /// The reconcile the two counts above are of: the last one, or, when it
    /// planned nothing (it failed or was stopped before its plan: the directory
    /// unreachable, say), the newest one that did, whose held actions still wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by_run: Option<RunId>,
    /// The last reconcile is recorded as running, but no writer holds the lock:
    /// its process stopped before it finished, and the next writing run closes
    /// it and recovers its in-flight writes. Told as `report --run` tells it
    /// ([`Store::run_and_whether_cut_off`]).
    pub last_reconcile_cut_off: bool,
    /// Present when the configuration says `schedule.dry_run`: the daemon only
    /// observes (its reconciles are dry runs, no sweep runs); what the newest
    /// dry run found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunLine>,
    /// Certificate files of the configuration that run out within three weeks,
    /// or have ([`crate::certificate`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<crate::certificate::Notice>,
    /// The configuration's exceptions (`safety.exceptions`), soonest end first:
    /// who keeps access by a decision, until when and why; those ended are
    /// still in the file, and manage nothing any more.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ExceptionLine>,
    /// How people run seatwarden's commands here, for the text's hints.
    #[serde(skip)]
    pub admin_command: String,
}

/// A daemon in `schedule.dry_run` and the newest dry run (the daemon's, or one
/// run by hand with `reconcile --dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct DryRunLine {
    pub last_run: Option<RunRecord>,
    /// `last_run`'s finish on the configured zone's wall clock, for people.
    pub finished_local: Option<String>,
    /// From its stored report: the drift it found and the actions it planned
    /// (none applied). Absent without a report (a dry run that failed).
    pub drift_items: Option<usize>,
    pub actions_planned: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deprovisions {
    pub pending: usize,
    pub overdue: usize,
    /// Open episodes, overdue first, then by due time.
    pub open: Vec<Line>,
    /// Verified in the last 24 hours, newest first: accounts whose access was
    /// taken away, not those found already without it.
    pub verified_last_24h: Vec<Line>,
    /// Episodes of the last 24 hours whose account was already inactive or gone
    /// when the sweep first saw the person lose access (people who left before
    /// the daemon's first sweep, say): nothing to do, so neither a deprovision
    /// above nor a latency.
    pub found_without_access_last_24h: usize,
    /// Detection to verification over the last 24 hours, in whole seconds (kept
    /// for scripts) and to the millisecond (what the text shows).
    pub latency_p50_seconds: Option<i64>,
    pub latency_p99_seconds: Option<i64>,
    pub latency_p50_ms: Option<i64>,
    pub latency_p99_ms: Option<i64>,
}

/// A daemon job: its last run as recorded, and when it runs next.
#[derive(Debug, Clone, Serialize)]
pub struct JobLine {
    #[serde(flatten)]
    pub record: JobRecord,
    /// Recorded as running while no daemon runs: the daemon was killed (or the
    /// machine stopped) before the job finished. The next daemon start records it
    /// failed, and a cut-off reconcile's writes are recovered by the next writing run.
    pub cut_off: bool,
    /// By the schedule in the configuration; `None` when no daemon runs, or the
    /// job is not scheduled any more.
    pub next_run: Option<DateTime<Utc>>,
    /// `next_run` on the configured zone's wall clock, for people ([`crate::model::clock_time`]).
    pub next_run_local: Option<String>,
    /// Since when the job, started, waits for the writer lock (held by another
    /// job, a long reconcile say, or by a command run by hand: `writer_lock`), as
    /// the running daemon recorded it; `None` when it does not wait, or no daemon
    /// runs (a record a killed daemon left is no live wait).
    pub waiting_since: Option<DateTime<Utc>>,
    /// `waiting_since` on the configured zone's wall clock, for people.
    pub waiting_since_local: Option<String>,
}

/// The mail outbox ([`Store::outbox_waiting`]): after a relay outage or a
/// refused login, how many messages wait and when the next attempt is, so the
/// operator knows when an alert will go out (or to run `send-mail`).
#[derive(Debug, Clone, Serialize)]
pub struct OutboxLine {
    #[serde(flatten)]
    pub counts: crate::store::OutboxWaiting,
    /// `next_attempt_at` on the configured zone's wall clock, for people.
    pub next_attempt_local: Option<String>,
}

/// An alert open now: raised (and mailed) and not resolved yet.
#[derive(Debug, Clone, Serialize)]
pub struct AlertLine {
    /// `circuit_breaker_open`, `repeated_failures:reconcile`,
    /// `overdue_deprovision:ID`, …
    pub key: String,
    /// The alert's subject, as last raised.
    pub summary: String,
    pub first_raised_at: DateTime<Utc>,
    pub first_raised_local: String,
    /// The last mail about it (the alert or a reminder).
    pub last_sent_at: DateTime<Utc>,
    /// Seen clear since then: its resolution waits until it has stayed clear for
    /// `report.email.resolve_after`, and is not sent if it comes back first.
    pub cleared_at: Option<DateTime<Utc>>,
    /// When that held resolution is due (the daemon sends it after its first
    /// job from then on); `None` without `[report.email]`, which sends none.
    pub resolves_at: Option<DateTime<Utc>>,
    pub resolves_local: Option<String>,
    /// How often it cleared and came back while its resolution was held.
    pub flaps: u32,
}

/// Deactivated accounts whose deletion waits for `deprovision.delete_after`.
#[derive(Debug, Clone, Serialize)]
pub struct Deletions {
    pub awaiting: usize,
    /// When the first of them is due (by the clocks the last reconcile kept).
    pub next_due: Option<DateTime<Utc>>,
    pub next_due_local: Option<String>,
}

/// An exception of the configuration (`safety.exceptions`).
#[derive(Debug, Clone, Serialize)]
pub struct ExceptionLine {
    pub user_name: String,
    pub until: DateTime<Utc>,
    /// `until` on the configured zone's wall clock, to the minute.
    pub until_local: String,
    pub reason: String,
    /// Its end has passed: the account is planned like any other again, and
    /// the entry is only left in the file.
    pub ended: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub user_name: String,
    pub identity_id: String,
    pub account_id: Option<String>,
    pub reason: LossReason,
    pub state: &'static str,
    pub detected_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// `due_at` on the configured zone's wall clock, for people ([`crate::model::clock_time`]).
    pub due_local: String,
    pub verified_at: Option<DateTime<Utc>>,
    /// Why it is held, in the words the hold was recorded with.
    pub held: Option<String>,
    /// What holds it, and so what releases it: `guard` (`seatwarden approve`)
    /// or `disputed_match` (`seatwarden link`).
    pub hold: Option<DeprovisionHold>,
    /// The run `seatwarden approve` (or `reject`) takes, when the guard holds it.
    pub hold_run: Option<RunId>,
    /// When the guard holds it and no run waits for its approval any more: the
    /// newest hold was rejected, or refused by `approve`'s re-check (and why),
    /// by whom and when where recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_decided: Option<crate::report::digest::HoldDecided>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// An open episode whose deprovision a person approved (`seatwarden
    /// approve`) and whose write failed or was kept back: the retry job sends
    /// it again, asking nobody to approve it a second time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved: Option<ApprovedAwaitingRetry>,
}

/// Who approved an open episode's deprovision, in which run and when.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovedAwaitingRetry {
    pub run: RunId,
    pub by: String,
    pub at: DateTime<Utc>,
}

fn local(at: DateTime<Utc>, tz: Tz) -> String {
    crate::report::local_minute(at, tz)
}

/// The guard's holds by person: [`Store::held_for_approval`] (the run holding
/// each) and [`Store::decided_holds`] (what became of the newest, when none waits).
#[derive(Default)]
struct GuardHolds {
    waiting: HashMap<String, RunId>,
    decided: HashMap<String, crate::store::DecidedHold>,
    /// The newest approval of each open episode's person's deprovision.
    approved: HashMap<String, crate::store::ApprovedDeprovision>,
}

fn line(entry: &LedgerEntry, now: DateTime<Utc>, tz: Tz, holds: &GuardHolds) -> Line {
    // Names and provider messages go to a terminal line by line.
    let clean = crate::report::printable_field;
    let hold = entry.held.as_deref().map(super::notify::deprovision_hold);
    let hold_run = super::notify::hold_run(hold, &entry.identity_id, &holds.waiting);
    Line {
        user_name: clean(&entry.user_name),
        identity_id: clean(&entry.identity_id),
        account_id: entry.account_id.as_deref().map(clean),
        reason: entry.reason,
        state: entry.state(now).as_str(),
        detected_at: entry.detected_at,
        due_at: entry.due_at,
        due_local: local(entry.due_at, tz),
        verified_at: entry.verified_at,
        held: entry.held.as_deref().map(clean),
        hold,
        hold_run,
        hold_decided: super::notify::hold_decided(
            hold,
            hold_run,
            &entry.identity_id,
            &holds.decided,
        )
        .map(|decided| match decided {
            crate::report::digest::HoldDecided::Refused { run, why, by, at } => {
                crate::report::digest::HoldDecided::Refused {
                    run,
                    why: clean(&why),
                    by: by.as_deref().map(clean),
                    at,
                }
            }
            crate::report::digest::HoldDecided::Rejected { run, by, at } => {
                crate::report::digest::HoldDecided::Rejected {
                    run,
                    by: by.as_deref().map(clean),
                    at,
                }
            }
        }),
        attempts: entry.attempts,
        last_error: entry.last_error.as_deref().map(clean),
        // An approval older than the episode decided an earlier one.
        approved: holds
            .approved
            .get(&entry.identity_id)
            .filter(|approval| {
                entry.is_open() && entry.held.is_none() && approval.at >= entry.detected_at
            })
            .map(|approval| ApprovedAwaitingRetry {
                run: approval.run,
                by: clean(&approval.user),
                at: approval.at,
            }),
    }
}

/// What [`collect`] needs besides the store.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// Where times are shown.
    pub tz: Tz,
    /// [`crate::config::Config::delete_after`].
    pub delete_after: Option<std::time::Duration>,
    /// The circuit breaker's cool-down, for its state now.
    pub cool_down: std::time::Duration,
    /// Where the writer and instance locks are looked at, to tell a cut-off
    /// reconcile or job from a running one (`None`: not looked at).
    pub database: Option<&'a std::path::Path>,
    /// The daemon's, for each job's next run (`None`: not shown).
    pub schedule: Option<&'a DaemonSettings>,
    /// [`crate::config::Config::admin_command`].
    pub admin_command: String,
    /// `report.email.resolve_after`, when mail is configured: when a held
    /// resolution is due.
    pub resolve_after: Option<std::time::Duration>,
    /// The configuration's certificate files, read now
    /// ([`crate::certificate::of_config`]): those that run out soon are listed.
    pub certificates: Vec<crate::certificate::Expiry>,
    /// [`crate::config::Config::exceptions`].
    pub exceptions: Vec<crate::model::Exception>,
}

impl<'a> Settings<'a> {
    /// From the configuration; `schedule` as the caller knows it.
    pub fn of(
        config: &'a crate::config::Config,
        tz: Tz,
        schedule: Option<&'a DaemonSettings>,
    ) -> Settings<'a> {
        Settings {
            tz,
            delete_after: config.delete_after(),
            cool_down: config.circuit_settings().cool_down,
            database: Some(&config.state.path),
            schedule,
            admin_command: config.admin_command(),
            resolve_after: config
                .report
                .email
                .as_ref()
                .and_then(|email| crate::config::parse_duration(&email.resolve_after).ok()),
            certificates: crate::certificate::of_config(config)
                .into_iter()
                .flatten()
                .collect(),
            // Checked when the configuration was loaded.
            exceptions: config.exceptions().unwrap_or_default(),
        }
    }
}

/// The holder of `database`'s writer lock, if it is held and names itself: a
/// line left by a holder that died (`kill -9`) names nobody who holds it.
fn writer_lock_holder(
    database: &std::path::Path,
) -> Result<Option<crate::store::LockHolder>, StoreError> {
    let path = crate::store::WriterLock::path(database);
    if !crate::store::lock_is_held(&path)? {
        return Ok(None);
    }
    Ok(crate::store::lock_holder(&path))
}

pub fn collect(
    store: &Store,
    now: DateTime<Utc>,
    settings: Settings<'_>,
) -> Result<Status, StoreError> {
    let Settings {
        tz,
        delete_after,
        cool_down,
        database,
        schedule,
        admin_command,
        resolve_after,
        certificates,
        exceptions,
    } = settings;
    // By the rule `report --run` tells a run by, so the two agree.
    let (last_reconcile, last_reconcile_cut_off) = match store.latest_run(&[RunKind::Reconcile])? {
        Some(run) if database.is_some() => store
            .run_and_whether_cut_off(run.id)?
            .map_or((None, false), |(run, cut_off)| (Some(run), cut_off)),
        other => (other, false),
    };
    let open = store.open_deprovisions()?;
    let holds = GuardHolds {
        waiting: store.held_for_approval()?,
        decided: store.decided_holds()?,
        approved: store.approved_deprovisions(
            &open
                .iter()
                .map(|e| e.identity_id.clone())
                .collect::<Vec<_>>(),
        )?,
    };
    let (pending, overdue) = sla::open_counts(&open, now);
    let mut open_lines: Vec<(bool, Line)> = open
        .iter()
        .map(|e| {
            (
                e.state(now) != EntryState::Overdue,
                line(e, now, tz, &holds),
            )
        })
        .collect();
    open_lines.sort_by_key(|(not_overdue, line)| (*not_overdue, line.due_at));
    let (found_without_access, verified): (Vec<LedgerEntry>, Vec<LedgerEntry>) = store
        .verified_deprovisions_since(now - Duration::hours(24))?
        .into_iter()
        .partition(LedgerEntry::found_without_access);
    let mut latencies: Vec<Duration> = verified.iter().filter_map(LedgerEntry::latency).collect();
    let p50 = sla::quantile(&mut latencies, 0.5);
    let p99 = sla::quantile(&mut latencies, 0.99);
    let mut verified_lines: Vec<Line> = verified.iter().map(|e| line(e, now, tz, &holds)).collect();
    verified_lines.reverse();
    let deletions = match delete_after.and_then(|d| Duration::from_std(d).ok()) {
        Some(period) if period > Duration::zero() => {
            let clocks = store.deactivated_since()?;
            let next_due = clocks
                .values()
                .min()
                .and_then(|since| since.checked_add_signed(period));
            Some(Deletions {
                awaiting: clocks.len(),
                next_due,
                next_due_local: next_due.map(|at| local(at, tz)),
            })
        }
        _ => None,
    };
    let daemon_running = database.map(super::is_running).transpose()?;
    let writer_lock = match database {
        Some(database) => writer_lock_holder(database)?,
        None => None,
    };
    let breaker = store.circuit()?;
    let outbox = store.outbox_waiting(now)?;
    let outbox = OutboxLine {
        next_attempt_local: outbox.next_attempt_at.map(|at| local(at, tz)),
        counts: outbox,
    };
    let alerts = store
        .active_alerts()?
        .into_iter()
        .map(|record| {
            // Without `[report.email]` no daemon sends a held resolution: it has
            // no time to be sent at (not "when it was seen clear").
            let resolves_at = resolve_after
                .zip(record.cleared_at)
                .map(|(after, cleared)| {
                    chrono::Duration::from_std(crate::alert::resolution_hold(&record.key, after))
                        .ok()
                        .and_then(|hold| cleared.checked_add_signed(hold))
                        .unwrap_or(cleared)
                });
            AlertLine {
                summary: serde_json::from_str::<crate::alert::AlertCondition>(&record.condition)
                    .map(|condition| condition.summary())
                    .unwrap_or_else(|_| record.key.clone()),
                key: record.key,
                first_raised_local: local(record.first_raised_at, tz),
                first_raised_at: record.first_raised_at,
                last_sent_at: record.last_sent_at,
                cleared_at: record.cleared_at,
                resolves_local: resolves_at.map(|at| local(at, tz)),
                resolves_at,
                flaps: record.flaps,
            }
        })
        .collect();
    let last_reconcile_directory_rejected = match &last_reconcile {
        Some(run) => directory_rejected(store, run.id)?,
        None => None,
    };
    let last_reconcile_actions = match &last_reconcile {
        Some(run) => {
            let counts = rejected_apart(
                crate::apply::journal_outcomes(store, run.id)?,
                &store.rejected_unsent(run.id)?,
            );
            over_run_counts(
                counts,
                run.status != RunStatus::Running || last_reconcile_cut_off,
            )
        }
        None => BTreeMap::new(),
    };
    // A reconcile that planned nothing (failed or stopped before its plan)
    // replaced no hold: the newest one that planned holds what waits.
    let held_by: Option<RunRecord> = match &last_reconcile {
        Some(run) => Some(
            store
                .latest_planned_reconcile()?
                .unwrap_or_else(|| run.clone()),
        ),
        None => None,
    };
    let held = match &held_by {
        Some(run) => match store.report(run.id)? {
            // An unreadable report: what the journal holds, rather than nothing.
            Some(json) => match crate::report::held_in(&json) {
                Ok(held) => held,
                Err(_)
                    if last_reconcile
                        .as_ref()
                        .is_some_and(|last| last.id == run.id) =>
                {
                    crate::report::HeldCounts {
                        awaiting_approval: last_reconcile_actions.get("held").copied().unwrap_or(0),
                        ..crate::report::HeldCounts::default()
                    }
                }
                Err(_) => crate::report::HeldCounts {
                    awaiting_approval: crate::approval::awaiting_decision(store, run.id)?,
                    ..crate::report::HeldCounts::default()
                },
            },
            // Cut off before its report (killed mid-apply): what it held waits all
            // the same, and `approve RUN` takes it.
            None => crate::report::HeldCounts {
                awaiting_approval: crate::approval::awaiting_decision(store, run.id)?,
                incomplete_directory: crate::approval::held_on_incomplete_read(store, run.id)?,
                refused_by_approval: 0,
            },
        },
        None => crate::report::HeldCounts::default(),
    };
    let kept = match schedule {
        Some(settings) => super::scheduled_jobs(settings)
            .into_iter()
            .map(|(name, _)| Ok((name, super::fired_slot(store, name)?)))
            .collect::<Result<_, StoreError>>()?,
        None => BTreeMap::new(),
    };
    // Recorded by the daemon, live only while it runs: one killed while a job
    // waited left its record behind (its next start clears it).
    let waits = match daemon_running {
        Some(true) => store.lock_waits()?,
        _ => BTreeMap::new(),
    };
    let dry_run = match schedule {
        Some(settings) if settings.dry_run => Some(dry_run_line(store, tz)?),
        _ => None,
    };
    let mut jobs = job_lines(store.jobs()?, daemon_running, schedule, &kept, now, tz);
    for job in &mut jobs {
        job.waiting_since = waits.get(&job.record.name).copied();
        job.waiting_since_local = job.waiting_since.map(|at| waiting_time(at, tz));
    }
    Ok(Status {
        now,
        timezone: tz.name().to_owned(),
        deprovisions: Deprovisions {
            pending,
            overdue,
            open: open_lines.into_iter().map(|(_, l)| l).collect(),
            verified_last_24h: verified_lines,
            found_without_access_last_24h: found_without_access.len(),
            latency_p50_seconds: p50.map(|d| d.num_seconds()),
            latency_p99_seconds: p99.map(|d| d.num_seconds()),
            latency_p50_ms: p50.map(|d| d.num_milliseconds()),
            latency_p99_ms: p99.map(|d| d.num_milliseconds()),
        },
        deletions,
        daemon_running,
        jobs,
        writer_lock,
        circuit: crate::circuit::state(&breaker, now, cool_down),
        circuit_reason: breaker.reason,
        outbox,
        alerts,
        last_reconcile_actions,
        last_reconcile_awaiting_approval: held.awaiting_approval,
        last_reconcile_held_incomplete_directory: held.incomplete_directory,
        last_reconcile_refused_by_approval: held.refused_by_approval,
        held_by_run: held_by.map(|run| run.id),
        last_reconcile_cut_off,
        last_reconcile,
        last_reconcile_directory_rejected,
        dry_run,
        certificates: crate::certificate::notices(&certificates, now, tz),
        exceptions: exception_lines(exceptions, now, tz),
        admin_command,
    })
}

/// Why run `run`'s directory snapshot was rejected, from its stored report
/// (none: a run without a report, or one another version wrote).
fn directory_rejected(store: &Store, run: RunId) -> Result<Option<String>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Head {
        // Left out of a report whose safety net found nothing.
        #[serde(default)]
        safety: Option<Safety>,
    }
    #[derive(serde::Deserialize)]
    struct Safety {
        #[serde(default)]
        source_fault: Option<crate::guard::SourceFault>,
    }
    Ok(store
        .report(run)?
        .and_then(|json| serde_json::from_str::<Head>(&json).ok())
        .and_then(|head| head.safety?.source_fault)
        .map(|fault| fault.to_string()))
}

/// `exceptions` soonest end first (those ended first of all), for people.
fn exception_lines(
    mut exceptions: Vec<crate::model::Exception>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<ExceptionLine> {
    exceptions.sort_by(|a, b| (a.until, &a.user_name).cmp(&(b.until, &b.user_name)));
    let clean = crate::report::printable_field;
    exceptions
        .into_iter()
        .map(|e| ExceptionLine {
            user_name: clean(&e.user_name),
            until: e.until,
            until_local: local(e.until, tz),
            reason: clean(&e.reason),
            ended: e.until <= now,
        })
        .collect()
}

/// The newest dry run and, from its report, what it found.
fn dry_run_line(store: &Store, tz: Tz) -> Result<DryRunLine, StoreError> {
    #[derive(serde::Deserialize)]
    struct Head {
        summary: Counts,
    }
    #[derive(serde::Deserialize)]
    struct Counts {
        drift_total: usize,
        actions_planned: usize,
    }
    let last_run = store.latest_run(&[RunKind::DryRun])?;
    let counts = match &last_run {
        // A report another version wrote, or damaged: the run is still named.
        Some(run) => store
            .report(run.id)?
            .and_then(|json| serde_json::from_str::<Head>(&json).ok())
            .map(|head| head.summary),
        None => None,
    };
    Ok(DryRunLine {
        finished_local: last_run
            .as_ref()
            .and_then(|run| run.finished_at)
            .map(|at| local(at, tz)),
        last_run,
        drift_items: counts.as_ref().map(|c| c.drift_total),
        actions_planned: counts.map(|c| c.actions_planned),
    })
}

/// The scheduled jobs first, in the schedule's order (those never run too, whether
/// a daemon runs or not), then any other recorded job. A job's next run passes
/// over the slot it fired last (`kept`, by name) while that holds (a clock set
/// back since: [`crate::schedule::FiredSlot`]), as the daemon's loop does.
fn job_lines(
    mut recorded: Vec<JobRecord>,
    daemon_running: Option<bool>,
    schedule: Option<&DaemonSettings>,
    kept: &BTreeMap<&str, Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Vec<JobLine> {
    let scheduled = schedule.map(super::scheduled_jobs).unwrap_or_default();
    let mut lines = Vec::with_capacity(recorded.len().max(scheduled.len()));
    let line = |record: JobRecord, next_run: Option<(DateTime<Utc>, &Schedule)>| JobLine {
        cut_off: daemon_running == Some(false) && record.last_status == Some(RunStatus::Running),
        next_run_local: next_run.map(|(at, schedule)| schedule.wall_clock(at, tz)),
        next_run: next_run.map(|(at, _)| at),
        record,
        waiting_since: None,
        waiting_since_local: None,
    };
    for (name, job_schedule) in &scheduled {
        // Every scheduled job, run or not: one missing from the list (a daily
        // prune's first slot not reached yet) would look unscheduled.
        let record = match recorded.iter().position(|r| r.name == *name) {
            Some(at) => recorded.remove(at),
            None => JobRecord {
                name: (*name).to_owned(),
                last_started_at: None,
                last_finished_at: None,
                last_status: None,
                last_error: None,
                last_success_at: None,
            },
        };
        let next_run = match (schedule, daemon_running) {
            (Some(settings), Some(true) | None) => crate::schedule::next_fire_after_kept(
                job_schedule,
                settings.timezone,
                now,
                kept.get(name).copied().flatten(),
                record.last_started_at,
            ),
            _ => None,
        };
        lines.push(line(record, next_run.map(|at| (at, job_schedule))));
    }
    lines.extend(recorded.into_iter().map(|record| line(record, None)));
    lines
}

/// When a job began to wait for the writer lock, to the second (the holder's
/// time is shown so too), on `tz`'s clock.
fn waiting_time(at: DateTime<Utc>, tz: Tz) -> String {
    crate::model::clock_time(at, tz, "%Y-%m-%d %H:%M:%S")
}

/// One job's line: its last run (how it ended, when it started and finished), its
/// last success (when it finished) and its next run, each time labelled.
fn job_text(job: &JobLine, tz: Tz) -> String {
    let record = &job.record;
    let next = job
        .next_run_local
        .as_deref()
        .map(|at| format!("; next {at}"))
        .unwrap_or_default();
    let Some(started) = record.last_started_at else {
        return format!("{:<10} never run{next}", record.name);
    };
    let state = if job.cut_off {
        "cut off: the daemon stopped before it finished"
    } else {
        record.last_status.map_or("unknown", |s| s.as_str())
    };
    let finished = match record.last_finished_at {
        Some(at) if record.last_status != Some(RunStatus::Running) => {
            format!(", finished {}", local(at, tz))
        }
        _ if job.cut_off => String::new(),
        _ => ", not finished yet".to_owned(),
    };
    let success = record.last_success_at.map_or_else(
        || "no success yet".to_owned(),
        |at| format!("last success finished {}", local(at, tz)),
    );
    let error = record
        .last_error
        .as_deref()
        .filter(|_| {
            matches!(
                record.last_status,
                Some(RunStatus::Failed | RunStatus::Stopped)
            )
        })
        .map(|e| format!("; error: {}", crate::report::printable_field(e)))
        .unwrap_or_default();
    format!(
        "{:<10} last run {state} (started {}{finished}); {success}{next}{error}",
        record.name,
        local(started, tz),
    )
}

pub fn render_text(status: &Status) -> String {
    let tz: Tz = status.timezone.parse().unwrap_or(Tz::UTC);
    let mut out = String::new();
    if let Some(dry_run) = &status.dry_run {
        dry_run_text(&mut out, dry_run, &status.admin_command);
    }
    out.push_str(&crate::certificate::notices_text(&status.certificates));
    let d = &status.deprovisions;
    let _ = writeln!(
        out,
        "Deprovisioning: {} pending, {} overdue (times in {})",
        d.pending, d.overdue, status.timezone
    );
    for l in &d.open {
        let mut extra = String::new();
        if let Some(hold) = l.hold {
            let _ = write!(
                extra,
                "; {}",
                hold.waiting_for(
                    &status.admin_command,
                    &l.identity_id,
                    l.hold_run,
                    l.hold_decided.as_ref(),
                    tz
                )
            );
            // The wording above already says what kind of hold it is.
            let why = l.held.as_deref().map(|held| {
                [
                    crate::sweep::DISPUTED_HOLD,
                    crate::sweep::PROTECTED_HOLD,
                    crate::sweep::EXCEPTED_HOLD,
                ]
                .into_iter()
                .find_map(|prefix| held.strip_prefix(prefix))
                .unwrap_or(held)
                .trim()
            });
            if let Some(why) = why.filter(|why| !why.is_empty()) {
                let _ = write!(extra, " ({why})");
            }
        }
        if let Some(approved) = &l.approved {
            let _ = write!(
                extra,
                "; approved in run {} by {} at {}, not written yet: the retry job sends it",
                approved.run,
                approved.by,
                local(approved.at, tz)
            );
        }
        if let Some(error) = &l.last_error {
            let _ = write!(extra, "; last error after {} attempts: {error}", l.attempts);
        }
        let _ = writeln!(
            out,
            "  {:<8} {}  due {}  ({}){}",
            l.state.to_uppercase(),
            l.user_name,
            l.due_local,
            l.reason,
            extra
        );
    }
    let _ = writeln!(
        out,
        "Verified in the last 24 h: {}{}",
        d.verified_last_24h.len(),
        match (d.latency_p50_ms, d.latency_p99_ms) {
            (Some(p50), Some(p99)) => format!(
                " (detection to verified: p50 {}, p99 {})",
                sla::latency_text(Duration::milliseconds(p50)),
                sla::latency_text(Duration::milliseconds(p99))
            ),
            _ => String::new(),
        }
    );
    if d.found_without_access_last_24h > 0 {
        let _ = writeln!(
            out,
            "Found already inactive or gone when first seen, nothing to do: {}",
            d.found_without_access_last_24h
        );
    }
    if let Some(deletions) = &status.deletions {
        let _ = writeln!(
            out,
            "Deactivated accounts awaiting deletion: {}{}",
            deletions.awaiting,
            deletions
                .next_due_local
                .as_deref()
                .map(|at| format!(" (the first is due {at})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "Daemon jobs{}:",
        match status.daemon_running {
            Some(true) => " (the daemon is running)",
            Some(false) => " (no daemon is running on this state database)",
            None => "",
        }
    );
    if status.jobs.is_empty() {
        let _ = writeln!(out, "  none has run yet");
    }
    for job in &status.jobs {
        let _ = writeln!(out, "  {}", job_text(job, tz));
        if let Some(since) = job.waiting_since {
            let holder = status.writer_lock.as_ref().map_or_else(
                || "a holder the lock file does not name".to_owned(),
                |holder| crate::report::printable_field(&holder.describe(status.now, tz)),
            );
            let _ = writeln!(
                out,
                "  {:<10} WAITING for the writer lock since {} ({} so far), held by {holder}",
                "",
                waiting_time(since, tz),
                sla::latency_text((status.now - since).max(Duration::zero())),
            );
        }
    }
    if let Some(holder) = &status.writer_lock {
        let _ = writeln!(
            out,
            "Writer lock: held by {}; the jobs and commands that write wait for it",
            crate::report::printable_field(&holder.describe(status.now, tz))
        );
    }
    let why = status
        .circuit_reason
        .as_deref()
        .map(|reason| format!(" ({})", crate::report::printable_field(reason)))
        .unwrap_or_default();
    match status.circuit {
        CircuitState::Closed => {}
        CircuitState::Open { since, until } => {
            let _ = writeln!(
                out,
                "Circuit breaker: OPEN since {}{why}: no run writes to the workspace until {}, \
                 or until `{} resume`",
                local(since, tz),
                local(until, tz),
                status.admin_command
            );
        }
        CircuitState::HalfOpen { since } => {
            let _ = writeln!(
                out,
                "Circuit breaker: half-open since {} (it had opened{why}): the next run's \
                 writes decide whether it closes",
                local(since, tz)
            );
        }
    }
    if let Some(line) = outbox_text(&status.outbox, &status.admin_command) {
        let _ = writeln!(out, "{line}");
    }
    alerts_text(&mut out, &status.alerts, status.now, tz);
    exceptions_text(&mut out, &status.exceptions, status.now);
    if let Some(run) = &status.last_reconcile {
        let count = |state: &str| {
            status
                .last_reconcile_actions
                .get(state)
                .copied()
                .unwrap_or(0)
        };
        let (failed, not_sent, cut_off) = (count("failed"), count("not_sent"), count("cut_off"));
        let state = if status.last_reconcile_cut_off && count("in_flight") > 0 {
            "cut off (its process stopped before it finished; the next reconcile recovers its writes)"
        } else if status.last_reconcile_cut_off {
            // A sweep's recovery resolved its writes already.
            "cut off (its process stopped before it finished)"
        } else if run.closed_as_interrupted() && count("in_flight") > 0 {
            // Closed by a writer whose recovery could not read them all.
            "interrupted (its process stopped before it finished; the next reconcile recovers \
             its writes)"
        } else if run.closed_as_interrupted() {
            // Closed by the next writer (an `approve`, a sweep), which resolved its
            // writes: nothing of it waits for a recovery any more.
            "interrupted (its process stopped before it finished; its writes resolved since)"
        } else if run.status == RunStatus::Succeeded && failed + not_sent + cut_off > 0 {
            // The run came to its end, but "succeeded: 70 failed" contradicts itself.
            "finished"
        } else {
            run.status.as_str()
        };
        // What waits for the operator, first: "succeeded" alone reads as done.
        let mut attention = Vec::new();
        let held_by = status.held_by_run.unwrap_or(run.id);
        // Held by an earlier reconcile: this one planned nothing to replace them.
        let earlier = if held_by == run.id {
            String::new()
        } else {
            format!(" by run {held_by}")
        };
        if status.last_reconcile_awaiting_approval > 0 {
            attention.push(format!(
                "{} held for approval{earlier} (`{} approve {held_by}`)",
                crate::report::plural(status.last_reconcile_awaiting_approval, "action", "actions"),
                status.admin_command,
            ));
        }
        if status.last_reconcile_refused_by_approval > 0 {
            attention.push(format!(
                "{} held{earlier} that `{} approve {held_by}` refused (nothing to approve: the \
                 next reconcile decides; `report --run {held_by}` says why)",
                crate::report::plural(
                    status.last_reconcile_refused_by_approval,
                    "action",
                    "actions"
                ),
                status.admin_command,
            ));
        }
        if status.last_reconcile_held_incomplete_directory > 0 {
            attention.push(format!(
                "{} held{earlier} because its directory read was incomplete (nothing to \
                 approve: `{} reconcile` again once the directory reads whole)",
                crate::report::plural(
                    status.last_reconcile_held_incomplete_directory,
                    "action",
                    "actions"
                ),
                status.admin_command,
            ));
        }
        if let Some(fault) = &status.last_reconcile_directory_rejected {
            attention.push(format!("its directory snapshot was REJECTED ({fault})"));
        }
        if failed > 0 {
            attention.push(format!("{failed} failed"));
        }
        if cut_off > 0 {
            attention.push(format!(
                "{cut_off} cut off before the workspace took them (the next reconcile plans \
                 them again)"
            ));
        }
        if not_sent > 0 {
            attention.push(format!(
                "{not_sent} not sent (kept back, never reached the workspace; the next \
                 reconcile plans them again)"
            ));
        }
        let attention = if attention.is_empty() {
            ",".to_owned()
        } else {
            format!(": {};", attention.join(", "))
        };
        let actions: Vec<String> = status
            .last_reconcile_actions
            .iter()
            .map(|(state, n)| format!("{n} {}", state.replace('_', " ")))
            .collect();
        // Why it failed or stopped, as its run recorded it (the endpoint and its
        // answer, the file, the stop's cause): "failed" alone sent the operator
        // to logs a run by hand may not have kept. One closed as interrupted
        // says so in its state already.
        let error = run
            .error
            .as_deref()
            .filter(|_| {
                matches!(run.status, RunStatus::Failed | RunStatus::Stopped)
                    && !run.closed_as_interrupted()
            })
            .map(|e| format!("; error: {}", crate::report::printable_field(e)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "Last reconcile: run {} {}{} started {}{}{error}",
            run.id,
            state,
            attention,
            local(run.started_at, tz),
            if actions.is_empty() {
                "; no actions".to_owned()
            } else {
                format!("; actions: {}", actions.join(", "))
            }
        );
        // Its "the next reconcile recovers / plans again" is not the next dry run.
        if status.dry_run.is_some() {
            let _ = writeln!(
                out,
                "  the last run that wrote: dry runs since write nothing, so what it left for \
                 the next reconcile (writes to recover, actions to plan again) waits until \
                 schedule.dry_run is off"
            );
        }
    }
    out
}

/// First, as it changes what everything after it means: the daemon writes
/// nothing, and what its newest dry run found.
fn dry_run_text(out: &mut String, dry_run: &DryRunLine, admin_command: &str) {
    let _ = writeln!(
        out,
        "DRY RUN (schedule.dry_run = true): the daemon plans and reports, and writes nothing \
         to the workspace; no sweep runs, so nobody who leaves is deactivated"
    );
    match &dry_run.last_run {
        None => {
            let _ = writeln!(out, "  no dry run yet");
        }
        Some(run) => {
            let when = match (&dry_run.finished_local, run.status) {
                (Some(at), RunStatus::Succeeded) => format!("finished {at}"),
                (Some(at), _) if run.closed_as_interrupted() => format!(
                    "cut off (the daemon stopped before it finished; closed at its next \
                     start {at})"
                ),
                (Some(at), status) => format!("{} {at}", status.as_str()),
                (None, status) => status.as_str().to_owned(),
            };
            let found = match (dry_run.drift_items, dry_run.actions_planned) {
                (Some(drift), Some(actions)) => format!(
                    ": {} found, {} planned (`{admin_command} report --run {}`)",
                    crate::report::plural(drift, "drift item", "drift items"),
                    crate::report::plural(actions, "action", "actions"),
                    run.id
                ),
                _ => String::new(),
            };
            let _ = writeln!(out, "  last dry run: run {}, {when}{found}", run.id);
        }
    }
}

/// The exceptions of the configuration, when there are any: those in force
/// with the time left, then those ended, which manage nothing any more.
fn exceptions_text(out: &mut String, exceptions: &[ExceptionLine], now: DateTime<Utc>) {
    let (ended, in_force): (Vec<&ExceptionLine>, Vec<&ExceptionLine>) =
        exceptions.iter().partition(|e| e.ended);
    if !in_force.is_empty() {
        let _ = writeln!(
            out,
            "Exceptions in force (safety.exceptions): {}, access kept until their end",
            in_force.len()
        );
        for e in in_force {
            let _ = writeln!(
                out,
                "  {} until {}, {} left: {}",
                e.user_name,
                e.until_local,
                crate::report::time_left(e.until - now),
                e.reason
            );
        }
    }
    if !ended.is_empty() {
        let _ = writeln!(
            out,
            "Exceptions ended, still in the configuration: {} (each account is planned like \
             any other again; take the entries out of safety.exceptions)",
            ended.len()
        );
        for e in ended {
            let _ = writeln!(
                out,
                "  {} ended {}: {}",
                e.user_name, e.until_local, e.reason
            );
        }
    }
}

/// The open alerts, when there are any: one line each, but the overdue
/// deprovisions' (one alert per person, the people listed above) in one count.
fn alerts_text(out: &mut String, alerts: &[AlertLine], now: DateTime<Utc>, tz: Tz) {
    if alerts.is_empty() {
        return;
    }
    let (overdue, others): (Vec<&AlertLine>, Vec<&AlertLine>) = alerts
        .iter()
        .partition(|a| a.key.starts_with(crate::alert::OVERDUE_PREFIX));
    let _ = writeln!(out, "Alerts open: {}", alerts.len());
    for alert in others {
        let mut line = format!(
            "  {} (raised {})",
            crate::report::printable_field(&alert.summary),
            alert.first_raised_local
        );
        // A due time already past is no promise: the daemon sends a due
        // resolution after its next job (none while it is stopped), and
        // "resolved 10:50" read at 14:00 said it was sent.
        match (alert.cleared_at, alert.resolves_at, &alert.resolves_local) {
            (Some(_), Some(at), Some(resolves)) if at > now => {
                let _ = write!(
                    line,
                    "; clear again, resolved {resolves} unless it comes back \
                     (report.email.resolve_after)"
                );
            }
            (Some(cleared), Some(_), _) => {
                let _ = write!(
                    line,
                    "; clear since {}, its resolution due: the daemon sends it after its \
                     next job",
                    local(cleared, tz)
                );
            }
            (Some(cleared), None, _) => {
                let _ = write!(
                    line,
                    "; clear since {}, its resolution not sent: no [report.email]",
                    local(cleared, tz)
                );
            }
            (None, ..) => {}
        }
        if alert.flaps > 0 {
            let _ = write!(
                line,
                "; came back {} while clear",
                crate::report::plural(alert.flaps as usize, "time", "times")
            );
        }
        let _ = writeln!(out, "{line}");
    }
    if !overdue.is_empty() {
        let _ = writeln!(
            out,
            "  {} (the overdue people above)",
            crate::report::plural(
                overdue.len(),
                "overdue-deprovision alert",
                "overdue-deprovision alerts"
            )
        );
    }
}

/// The outbox's line, when a message is not sent yet or was refused for good:
/// `Outbox: 2 messages not sent yet (2 waiting for their next attempt, the first
/// at …); last error: …; `seatwarden send-mail` sends them now`.
fn outbox_text(outbox: &OutboxLine, admin_command: &str) -> Option<String> {
    let o = &outbox.counts;
    let pending = o.due + o.waiting + o.sending;
    if pending + o.failed == 0 {
        return None;
    }
    let mut line = "Outbox: ".to_owned();
    if pending > 0 {
        let mut parts = Vec::new();
        if o.due > 0 {
            parts.push(format!("{} due now", o.due));
        }
        if o.sending > 0 {
            parts.push(format!("{} being sent", o.sending));
        }
        if o.waiting > 0 {
            parts.push(format!(
                "{} waiting for {}, the first at {}",
                o.waiting,
                if o.waiting == 1 {
                    "its next attempt"
                } else {
                    "their next attempt"
                },
                outbox.next_attempt_local.as_deref().unwrap_or("?")
            ));
        }
        let _ = write!(
            line,
            "{} not sent yet ({})",
            crate::report::plural(pending, "message", "messages"),
            parts.join(", ")
        );
        if let Some(error) = &o.last_error {
            let _ = write!(
                line,
                "; last error: {}",
                crate::report::printable_field(error)
            );
        }
        if o.waiting > 0 {
            let _ = write!(line, "; `{admin_command} send-mail` sends them now");
        }
    }
    if o.failed > 0 {
        let _ = write!(
            line,
            "{}{} refused for good by the mail server",
            if pending > 0 { "; " } else { "" },
            o.failed
        );
    }
    Some(line)
}

/// A run's journal counts, its rows still `planned` counted `not_sent` once the
/// run is `over`: it will send nothing more, so they were kept back (the writes
/// stopped before their phase), as its report tells them. While it runs they are
/// only not sent yet.
fn over_run_counts(mut counts: BTreeMap<String, usize>, over: bool) -> BTreeMap<String, usize> {
    let planned = crate::store::ActionState::Planned.as_str();
    if over && let Some(planned) = counts.remove(planned) {
        *counts.entry("not_sent".to_owned()).or_default() += planned;
    }
    counts
}

/// The run's `rejected` actions (their journal state and error, as
/// [`Store::rejected_unsent`] gives them) counted as `rejected`, each taken from
/// the count its row would otherwise be in, so every row is counted once. A
/// rejected action keeps its journal row `held`, or, when an approval had
/// released it and it was taken back before it was sent, `planned` or `failed`
/// kept back: nothing waits for it, nothing of it is pending or broken (the run
/// never sends it), and "6 held" after `seatwarden reject` read as actions still
/// waiting for a decision, "1 not sent" as a write the next run makes.
pub(crate) fn rejected_apart(
    mut counts: BTreeMap<String, usize>,
    rejected: &[(crate::store::ActionState, Option<String>)],
) -> BTreeMap<String, usize> {
    for (state, error) in rejected {
        let key = crate::apply::journal_outcome(*state, error.as_deref());
        let Some(count) = counts.get_mut(key).filter(|count| **count > 0) else {
            continue;
        };
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
        *counts.entry("rejected".to_owned()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::schedule::Schedule;

    fn settings() -> DaemonSettings {
        let every = |pattern: &str| Schedule::parse(pattern).unwrap();
        DaemonSettings {
            timezone: chrono_tz::UTC,
            reconcile: every("*/30 * * * *"),
            sweep: every("*/5 * * * *"),
            digest: None,
            retention: std::time::Duration::from_secs(86_400),
            reconcile_max_duration: None,
            dry_run: false,
            sla: std::time::Duration::from_secs(3_600),
            listen: "127.0.0.1:0".parse().unwrap(),
        }
    }

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, 0).unwrap()
    }

    fn record(name: &str, status: Option<RunStatus>) -> JobRecord {
        JobRecord {
            name: name.to_owned(),
            last_started_at: status.map(|_| at(9, 0)),
            last_finished_at: status
                .filter(|s| *s != RunStatus::Running)
                .map(|_| at(9, 2)),
            last_status: status,
            last_error: (status == Some(RunStatus::Failed)).then(|| "HTTP 503".to_owned()),
            last_success_at: Some(at(8, 32)),
        }
    }

    /// Without a daemon too, every scheduled job is listed: the prune, which waits
    /// for its daily slot, had not run yet and was left out.
    #[test]
    fn every_scheduled_job_is_listed_with_or_without_a_daemon() {
        let settings = settings();
        for daemon_running in [Some(false), Some(true), None] {
            let lines = job_lines(
                vec![record(RECONCILE_NAME, Some(RunStatus::Succeeded))],
                daemon_running,
                Some(&settings),
                &BTreeMap::new(),
                at(9, 10),
                chrono_tz::UTC,
            );
            let names: Vec<&str> = lines.iter().map(|l| l.record.name.as_str()).collect();
            assert_eq!(
                names,
                ["reconcile", "sweep", "retry", "prune", "mail"],
                "{daemon_running:?}"
            );
            let next_shown = lines.iter().any(|l| l.next_run.is_some());
            assert_eq!(
                next_shown,
                daemon_running != Some(false),
                "{daemon_running:?}"
            );
        }
    }

    /// A daemon restarted on a clock set back: the reconcile's 09:00, kept as
    /// fired (and started for) and ahead of the clock at 08:59, is not its next
    /// run, as the daemon will not fire it; 09:30 is. The sweep's kept 09:00,
    /// which it never started for (last started 08:55), does not hold.
    #[test]
    fn the_next_run_passes_over_a_kept_slot_ahead_of_the_clock() {
        let settings = settings();
        let mut reconcile = record(RECONCILE_NAME, Some(RunStatus::Succeeded));
        reconcile.last_started_at = Some(at(9, 0) + chrono::Duration::seconds(1));
        let mut sweep = record("sweep", Some(RunStatus::Succeeded));
        sweep.last_started_at = Some(at(8, 55));
        let kept: BTreeMap<&str, Option<DateTime<Utc>>> =
            [(RECONCILE_NAME, Some(at(9, 0))), ("sweep", Some(at(9, 0)))].into();
        let now = at(8, 59);
        let lines = job_lines(
            vec![reconcile, sweep],
            Some(true),
            Some(&settings),
            &kept,
            now,
            chrono_tz::UTC,
        );
        let next = |name: &str| {
            lines
                .iter()
                .find(|l| l.record.name == name)
                .unwrap()
                .next_run
        };
        assert_eq!(next(RECONCILE_NAME), Some(at(9, 30)));
        assert_eq!(next("sweep"), Some(at(9, 0)));
        assert_eq!(next("retry"), Some(at(9, 0)));
    }

    const RECONCILE_NAME: &str = "reconcile";

    /// Each time on a job's line says what it is: started, finished, last success
    /// (finished), next.
    #[test]
    fn a_job_line_labels_its_times() {
        let line = |status, cut_off, next: Option<DateTime<Utc>>| {
            job_text(
                &JobLine {
                    record: record("sweep", status),
                    cut_off,
                    next_run: next,
                    next_run_local: next.map(|at| local(at, chrono_tz::UTC)),
                    waiting_since: None,
                    waiting_since_local: None,
                },
                chrono_tz::UTC,
            )
        };
        assert_eq!(
            line(Some(RunStatus::Succeeded), false, Some(at(9, 5))),
            "sweep      last run succeeded (started 2026-12-01 09:00 UTC, finished \
             2026-12-01 09:02 UTC); last success finished 2026-12-01 08:32 UTC; next \
             2026-12-01 09:05 UTC"
        );
        assert_eq!(
            line(Some(RunStatus::Failed), false, None),
            "sweep      last run failed (started 2026-12-01 09:00 UTC, finished \
             2026-12-01 09:02 UTC); last success finished 2026-12-01 08:32 UTC; error: HTTP 503"
        );
        assert_eq!(
            line(Some(RunStatus::Running), false, None),
            "sweep      last run running (started 2026-12-01 09:00 UTC, not finished yet); \
             last success finished 2026-12-01 08:32 UTC"
        );
        assert_eq!(
            line(Some(RunStatus::Running), true, None),
            "sweep      last run cut off: the daemon stopped before it finished (started \
             2026-12-01 09:00 UTC); last success finished 2026-12-01 08:32 UTC"
        );
        assert_eq!(
            line(None, false, Some(at(9, 5))),
            "sweep      never run; next 2026-12-01 09:05 UTC"
        );
    }

    /// Open alerts are listed with when a held resolution goes out and how often
    /// the condition came back; the overdue people's alerts are counted in one
    /// line; a resolution sent takes its alert off the list.
    #[test]
    fn open_alerts_are_listed_with_their_held_resolution() {
        use crate::alert::{AlertCondition, AlertContext};
        let mail = crate::alert::tests::settings();
        let context = AlertContext {
            name: "acme",
            timezone: chrono_tz::UTC,
            mail: &mail,
            admin_command: "seatwarden",
        };
        let mut store = Store::open_in_memory().unwrap();
        let breaker = AlertCondition::CircuitBreakerOpen {
            reason: "16 of the last 20 writes failed".into(),
        };
        let failing = AlertCondition::RepeatedFailures {
            job: "reconcile".into(),
            failures: 3,
            last_error: "HTTP 503".into(),
        };
        crate::alert::raise(&mut store, &context, &breaker, at(9, 0)).unwrap();
        crate::alert::raise(&mut store, &context, &failing, at(9, 0)).unwrap();
        // Clear, back, clear again: one flap, the resolution held from 09:50.
        crate::alert::resolve(&mut store, &context, "circuit_breaker_open", at(9, 30)).unwrap();
        crate::alert::raise(&mut store, &context, &breaker, at(9, 40)).unwrap();
        crate::alert::resolve(&mut store, &context, "circuit_breaker_open", at(9, 50)).unwrap();
        for i in 0..2 {
            let key = format!("{}00u{i}", crate::alert::OVERDUE_PREFIX);
            store
                .record_alerts(
                    crate::store::AlertsSeen::Key {
                        key: &key,
                        record: None,
                    },
                    &[crate::store::AlertRecord {
                        key: key.clone(),
                        condition: "{}".into(),
                        state: crate::store::AlertRecordState::Active,
                        first_raised_at: at(9, 0),
                        last_sent_at: at(9, 0),
                        resolved_at: None,
                        suppressed: 0,
                        thread_root: None,
                        cleared_at: None,
                        flaps: 0,
                    }],
                    &[],
                    at(9, 0),
                )
                .unwrap();
        }
        let settings = || Settings {
            tz: chrono_tz::UTC,
            delete_after: None,
            cool_down: std::time::Duration::from_secs(900),
            database: None,
            schedule: None,
            admin_command: "seatwarden".to_owned(),
            resolve_after: Some(std::time::Duration::from_secs(3600)),
            certificates: Vec::new(),
            exceptions: Vec::new(),
        };
        let status = collect(&store, at(10, 0), settings()).unwrap();
        let breaker_line = status
            .alerts
            .iter()
            .find(|a| a.key == "circuit_breaker_open")
            .unwrap();
        assert_eq!(breaker_line.cleared_at, Some(at(9, 50)));
        assert_eq!(breaker_line.resolves_at, Some(at(10, 50)));
        assert_eq!(breaker_line.flaps, 1);
        let text = render_text(&status);
        let listed: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.starts_with("Alerts open:"))
            .take(4)
            .collect();
        assert_eq!(
            listed,
            [
                "Alerts open: 4",
                "  circuit breaker open: workspace writes stopped (raised 2026-12-01 09:00 UTC); \
                 clear again, resolved 2026-12-01 10:50 UTC unless it comes back \
                 (report.email.resolve_after); came back 1 time while clear",
                "  reconcile failed 3 times in a row (raised 2026-12-01 09:00 UTC)",
                "  2 overdue-deprovision alerts (the overdue people above)",
            ],
            "{text}"
        );

        // Past its due time, not sent yet (the daemon stopped, or between two
        // jobs): no "resolved 10:50" that reads as done.
        let breaker_text = |now, settings| {
            let text = render_text(&collect(&store, now, settings).unwrap());
            text.lines()
                .find(|line| line.starts_with("  circuit breaker open"))
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            breaker_text(at(14, 0), settings()),
            "  circuit breaker open: workspace writes stopped (raised 2026-12-01 09:00 UTC); \
             clear since 2026-12-01 09:50 UTC, its resolution due: the daemon sends it after \
             its next job; came back 1 time while clear"
        );
        // Without [report.email] nothing sends it: no time is promised.
        let unmailed = Settings {
            resolve_after: None,
            ..settings()
        };
        assert_eq!(
            breaker_text(at(10, 0), unmailed),
            "  circuit breaker open: workspace writes stopped (raised 2026-12-01 09:00 UTC); \
             clear since 2026-12-01 09:50 UTC, its resolution not sent: no [report.email]; \
             came back 1 time while clear"
        );

        crate::alert::resolve_due(&mut store, &context, at(10, 51)).unwrap();
        let status = collect(&store, at(10, 51), settings()).unwrap();
        assert!(
            status
                .alerts
                .iter()
                .all(|a| a.key != "circuit_breaker_open"),
            "{:?}",
            status.alerts
        );
        assert!(
            render_text(&status).contains("Alerts open: 3\n"),
            "{}",
            render_text(&status)
        );
    }

    /// A run with held actions still undecided and one approved, released
    /// unsent and rejected since (`reject` after an approval cut off before
    /// its phase): the rejected row is counted `rejected`, taken from the
    /// `not_sent` its `planned` row counted, not from `held`. Counting its
    /// rejection against `held` told one of two waiting actions as rejected;
    /// counting it `not_sent`, a write the next run makes that a person refused.
    #[test]
    fn a_rejection_of_a_released_action_leaves_the_held_count_alone() {
        use crate::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
        use crate::store::{Decision, RunKind};
        let mut store = Store::open_in_memory().unwrap();
        let action = |seq: u32, kind: ActionKind| Action {
            seq,
            kind,
            reason: DriftKind::StaleAccess,
            subject: format!("person{seq}"),
            identity_id: Some(format!("00u{seq}")),
            detail: "identity is deprovisioned in the directory".into(),
            held: Some(HoldReason::IncompleteDirectory),
        };
        let run = store.begin_run(RunKind::Reconcile, at(9, 0)).unwrap();
        let plan = Plan {
            actions: vec![
                action(
                    0,
                    ActionKind::Deactivate {
                        account_id: "a0".into(),
                    },
                ),
                action(
                    1,
                    ActionKind::Deactivate {
                        account_id: "a1".into(),
                    },
                ),
                action(
                    2,
                    ActionKind::Deactivate {
                        account_id: "a2".into(),
                    },
                ),
            ],
            ..Plan::default()
        };
        store.save_plan(run, &plan, at(9, 0)).unwrap();
        store
            .finish_run(run, at(9, 1), RunStatus::Succeeded, None)
            .unwrap();
        store
            .record_decisions(run, &[(0, Decision::Approved, None)], "admin", at(9, 5))
            .unwrap();
        store.release_held(run, &[0], at(9, 5)).unwrap();
        store
            .record_decisions(run, &[(0, Decision::Rejected, None)], "admin", at(9, 10))
            .unwrap();

        let status = collect(&store, at(9, 15), settings_in_utc("seatwarden")).unwrap();
        assert_eq!(
            status.last_reconcile_actions.get("held").copied(),
            Some(2),
            "{:?}",
            status.last_reconcile_actions
        );
        assert_eq!(
            status.last_reconcile_actions,
            BTreeMap::from([("held".to_owned(), 2), ("rejected".to_owned(), 1)]),
        );
    }

    /// Each state an approval can leave a row in before it sent it, rejected
    /// since, is counted `rejected`, once: still held, released (`planned`),
    /// kept back (`failed`, "not sent") and cut off unsent. Before, only the
    /// held one was: the others read as writes pending or broken.
    #[test]
    fn a_rejected_row_is_counted_rejected_whatever_the_approval_left_it_in() {
        let journal = BTreeMap::from([
            ("applied".to_owned(), 1),
            ("held".to_owned(), 2),
            ("planned".to_owned(), 1),
            ("not_sent".to_owned(), 2),
            ("cut_off".to_owned(), 1),
        ]);
        let rejected = [
            (crate::store::ActionState::Held, None),
            (crate::store::ActionState::Planned, None),
            (
                crate::store::ActionState::Failed,
                Some(format!("{}: 503", crate::apply::NOT_SENT_DOWN)),
            ),
            (
                crate::store::ActionState::Failed,
                Some(crate::apply::NOT_REACHED_INTERRUPTED.to_owned()),
            ),
        ];
        let counts = over_run_counts(rejected_apart(journal, &rejected), true);
        assert_eq!(
            counts,
            BTreeMap::from([
                ("applied".to_owned(), 1),
                ("held".to_owned(), 1),
                ("not_sent".to_owned(), 1),
                ("rejected".to_owned(), 4),
            ])
        );
    }

    /// Settings in UTC, with no database, schedule, mail or exceptions, naming
    /// `admin_command`.
    fn settings_in_utc(admin_command: &str) -> Settings<'static> {
        Settings {
            tz: chrono_tz::UTC,
            delete_after: None,
            cool_down: std::time::Duration::from_secs(900),
            database: None,
            schedule: None,
            admin_command: admin_command.to_owned(),
            resolve_after: None,
            certificates: Vec::new(),
            exceptions: Vec::new(),
        }
    }

    /// The open circuit breaker's line tells the configured command to resume.
    #[test]
    fn an_open_breaker_names_the_configured_command_to_resume() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .set_circuit(&crate::circuit::CircuitRecord {
                opened_at: Some(at(9, 0)),
                reason: Some("16 of the last 20 writes failed".into()),
                failures: Vec::new(),
            })
            .unwrap();
        let status = collect(&store, at(9, 5), settings_in_utc("sudo seatwarden-admin")).unwrap();
        let text = render_text(&status);
        assert!(
            text.contains(
                "no run writes to the workspace until 2026-12-01 09:15 UTC, or until \
                 `sudo seatwarden-admin resume`"
            ),
            "{text}"
        );
    }

    /// A leaver seen at 23:50 on the configured clock is due an SLA later in
    /// absolute time — the next local day — and `status` shows that due time on
    /// the zone's own clock with its UTC offset: far from UTC (Kiritimati +14,
    /// Pago Pago -11), across a half-hour change (Lord Howe), and in the hour a
    /// fall-back repeats (Berlin), where only the offset tells 02:30 from
    /// 02:30. Overdue from that instant, not from a local midnight.
    #[test]
    fn a_due_time_reads_on_the_zones_own_clock_across_midnight_and_clock_changes() {
        use crate::sla::{EntryState, LedgerEntry, LossReason};
        let cases: [(Tz, DateTime<Utc>, &str); 4] = [
            (
                chrono_tz::Pacific::Kiritimati,
                Utc.with_ymd_and_hms(2026, 12, 1, 9, 50, 0).unwrap(),
                "2026-12-02 00:50 +14:00",
            ),
            (
                chrono_tz::Pacific::Pago_Pago,
                Utc.with_ymd_and_hms(2026, 12, 2, 10, 50, 0).unwrap(),
                "2026-12-02 00:50 -11:00 (SST)",
            ),
            // 2026-10-04 02:00 LHST (+10:30) became 02:30 LHDT (+11): 23:50 on
            // the 3rd is 13:20 UTC, and an hour later is 00:50 on the 4th.
            (
                chrono_tz::Australia::Lord_Howe,
                Utc.with_ymd_and_hms(2026, 10, 3, 13, 20, 0).unwrap(),
                "2026-10-04 00:50 +10:30",
            ),
            // 2026-10-25: 02:30 CEST (00:30 UTC) and, an hour later, 02:30 CET.
            (
                chrono_tz::Europe::Berlin,
                Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap(),
                "2026-10-25 02:30 +01:00 (CET)",
            ),
        ];
        for (tz, detected, due_local) in cases {
            let entry = LedgerEntry {
                id: 1,
                identity_id: "00u1".into(),
                account_id: Some("acc-1".into()),
                user_name: "ada@example.com".into(),
                reason: LossReason::Suspended,
                detected_at: detected,
                due_at: detected + chrono::Duration::hours(1),
                enforced_at: None,
                verified_at: None,
                closed_at: None,
                escalated_at: None,
                attempts: 0,
                next_attempt_at: None,
                last_error: None,
                held: None,
                returned_at: None,
                excepted_until: None,
            };
            let due = entry.due_at;
            let shown = line(
                &entry,
                due - chrono::Duration::seconds(1),
                tz,
                &GuardHolds::default(),
            );
            assert_eq!(shown.due_local, due_local, "{tz}");
            assert_eq!(shown.state, EntryState::Pending.as_str(), "{tz}");
            assert_eq!(
                line(&entry, due, tz, &GuardHolds::default()).state,
                EntryState::Overdue.as_str(),
                "{tz}"
            );
        }
    }
}
