//! Alerts: conditions that need a human now, sent at once instead of waiting for
//! the digest. Each condition has a key; raising the same key again inside the quiet
//! period sends nothing (the store counts it) unless a hold grew
//! ([`AlertCondition::grew_from`]: more held, or someone new held by the sweep,
//! is news), after the quiet period a reminder goes out (unless a message of the
//! alert's thread still waits in the outbox: a relay that was down would get
//! the alert and a reminder per quiet period at once), and [`resolve`] sends the resolution once, its subject the alert's (as last
//! sent) behind "Resolved: ". Reminders and the resolution reply to the alert's
//! first mail (`In-Reply-To` and `References` with its Message-ID, kept as the
//! alert's `thread_root`), so mail clients show them as one thread; the subjects
//! keep "still: " and "Resolved: " for whoever scans a list of subjects.
//!
//! A condition that comes and goes (a directory read incomplete every other
//! reconcile, a breaker that opens and closes, a job failing on and off) does
//! not send an alert and a resolution per flip: mail that cries wolf teaches
//! people to skip it. Seen clear, a [`damped`] condition's resolution is held
//! ([`decide_resolve`]: the alert records `cleared_at`); raised again within
//! `report.email.resolve_after`, the same alert goes on (its thread, its quiet
//! period and reminders; a hold that grew is still sent at once) and counts a
//! flap, which its reminder and resolution tell ("Flapping: it cleared and came
//! back N times"). A job failing again after a success within the hold, short
//! of the three failures in a row that alert, continues its repeated-failure
//! alert too ([`reopen`]). Once it has stayed clear for the hold,
//! [`resolve_due`] (run by the daemon after every job) or the next [`resolve`]
//! sends the resolution; come back only after that (the daemon was stopped), it
//! is a new alert, after the old one's resolution.
//! This is Prometheus's `keep_firing_for` rather than Nagios's flap detection:
//! nothing new ever waits (a first alert goes out at once, as a held-back alert
//! would hide a real fault behind a flap threshold), only the `Resolved: ` does,
//! and a flapping condition is told once, in the mail that goes out anyway. A
//! hold waiting for a human and an overdue deprovision are not damped (see
//! [`damped`]).
//!
//! An overdue deprovision is alerted whatever holds it (the person keeps access
//! past their due time); a guard's hold names the run to approve, or, once it was
//! rejected or refused by an approval's re-check, says so, by whom and when.
//!
//! The decision ([`decide_raise`], [`decide_resolve`]) is pure: the time is passed
//! in. [`raise`] and [`resolve`] apply it and queue the message in the outbox, in
//! one transaction; the outbox delivers it ([`crate::mail::deliver_due`]). That
//! transaction writes only if the alert state the decision was read from is still
//! the stored one (checked under the writer's lock), else the decision is made
//! again: two jobs deciding the same alert on their own connections (the mail job
//! beside a sweep) queue its message once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::mail::{self, MailSettings};
use crate::report::{self, RenderError};
use crate::sla::{EntryState, LedgerEntry};
use crate::store::{
    AlertRecord, AlertRecordState, AlertsSeen, NewMessage, OutboxId, OutboxKind, RunId, Store,
    StoreError,
};

/// The start of every overdue deprovision's key: one per person, so each alert's
/// state (raised, last sent, resolved) is the person's own.
pub const OVERDUE_PREFIX: &str = "overdue_deprovision:";

/// How many people one overdue alert or resolution names; the rest are counted.
pub const LISTED: usize = 50;

/// Someone whose deprovision is held, as a sweep alert names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPerson {
    pub user_name: String,
    pub identity_id: String,
    /// A human rejected their deprovision in an earlier run: it is held again,
    /// not new, and whoever reads the alert must know a decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<crate::sweep::EarlierRejection>,
}

/// What went wrong. Field values are directory and run facts, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum AlertCondition {
    /// The guard held a plan (or part of it); it waits for `seatwarden approve RUN`.
    PlanHeld {
        run_id: i64,
        held: usize,
        reason: String,
    },
    /// The guard held deprovisions in a sweep or retry pass: they wait for
    /// `seatwarden approve RUN`, and each pass after holds them again (in a run of
    /// its own) until someone decides. A sweep run stores no report, so the
    /// people are named here.
    SweepHeld {
        run_id: i64,
        held: usize,
        reason: String,
        /// The first [`LISTED`] of them.
        #[serde(default)]
        people: Vec<HeldPerson>,
        /// How many of them (all, not only those listed) a human rejected in an
        /// earlier run.
        #[serde(default)]
        rejected_before: usize,
    },
    /// A deprovision passed its due time without being done.
    OverdueDeprovision {
        identity_id: String,
        user_name: String,
        due_at: DateTime<Utc>,
    },
    /// A directory snapshot was rejected as a source fault (empty, shrunk, partial).
    DirectorySnapshotRejected { reason: String },
    /// A reconcile's directory read was incomplete, and what would take access away
    /// was held: nothing for a human to approve (`approve` refuses it), and no
    /// leaver among them loses access until a reconcile reads the directory whole.
    DirectoryIncomplete { run_id: i64, held: usize },
    /// The workspace failed most writes; writing stopped.
    CircuitBreakerOpen { reason: String },
    /// Exceptions in force (`safety.exceptions`) that name no workspace account
    /// and no person in the directory, as the newest reconcile found
    /// ([`crate::report::SafetyReport::exceptions_naming_nobody`]): they keep
    /// nothing, and whoever they were meant for loses access as the policy says.
    ExceptionsNamingNobody {
        exceptions: Vec<crate::model::Exception>,
    },
    /// A job failed several times in a row.
    RepeatedFailures {
        job: String,
        failures: u32,
        last_error: String,
    },
}

impl AlertCondition {
    /// One key per condition that should alert once: per person for overdue
    /// deprovisions, per job for repeated failures, one for the rest.
    pub fn key(&self) -> String {
        match self {
            AlertCondition::PlanHeld { .. } => "plan_held".to_owned(),
            // Not `plan_held`: a reconcile that holds nothing says nothing about
            // what a sweep holds, and must not resolve it.
            AlertCondition::SweepHeld { .. } => "sweep_held".to_owned(),
            AlertCondition::OverdueDeprovision { identity_id, .. } => {
                format!("{OVERDUE_PREFIX}{identity_id}")
            }
            AlertCondition::DirectorySnapshotRejected { .. } => {
                "directory_snapshot_rejected".to_owned()
            }
            AlertCondition::DirectoryIncomplete { .. } => "directory_incomplete".to_owned(),
            AlertCondition::CircuitBreakerOpen { .. } => "circuit_breaker_open".to_owned(),
            AlertCondition::ExceptionsNamingNobody { .. } => "exceptions_naming_nobody".to_owned(),
            AlertCondition::RepeatedFailures { job, .. } => format!("repeated_failures:{job}"),
        }
    }

    /// A short statement for the subject line.
    pub fn summary(&self) -> String {
        match self {
            AlertCondition::PlanHeld { run_id, held, .. } => format!(
                "{} held by the guard in run {run_id}",
                report::plural(*held, "action", "actions")
            ),
            AlertCondition::SweepHeld {
                run_id,
                held,
                rejected_before,
                ..
            } => format!(
                "{} held by the guard in sweep run {run_id}{}",
                report::plural(*held, "deprovision", "deprovisions"),
                match (*held, *rejected_before) {
                    (_, 0) => String::new(),
                    (1, _) => ", rejected before".to_owned(),
                    (_, n) => format!(", {n} rejected before"),
                }
            ),
            AlertCondition::OverdueDeprovision { user_name, .. } => {
                format!("deprovision of {} is overdue", subject_name(user_name))
            }
            AlertCondition::DirectorySnapshotRejected { .. } => {
                "directory snapshot rejected".to_owned()
            }
            AlertCondition::DirectoryIncomplete { run_id, held } => format!(
                "{} held in run {run_id}: the directory read was incomplete",
                report::plural(*held, "action", "actions")
            ),
            AlertCondition::CircuitBreakerOpen { .. } => {
                "circuit breaker open: workspace writes stopped".to_owned()
            }
            AlertCondition::ExceptionsNamingNobody { exceptions } => match exceptions.as_slice() {
                [one] => format!(
                    "the exception for {} names nobody",
                    subject_name(&crate::report::printable_field(&one.user_name))
                ),
                all => format!("{} exceptions name nobody", all.len()),
            },
            AlertCondition::RepeatedFailures { job, failures, .. } => {
                format!("{job} failed {failures} times in a row")
            }
        }
    }

    /// Whether this condition holds more than `last_sent` (the same key's, as
    /// last sent) told: a bigger hold, or a sweep hold naming someone the last
    /// message did not. Whoever read "3 actions held" must not learn of 300 only
    /// at the next reminder; nor approve a run that does not hold the newcomer.
    pub fn grew_from(&self, last_sent: &AlertCondition) -> bool {
        match (self, last_sent) {
            (
                AlertCondition::PlanHeld { held, .. },
                AlertCondition::PlanHeld { held: before, .. },
            ) => held > before,
            (
                AlertCondition::DirectoryIncomplete { held, .. },
                AlertCondition::DirectoryIncomplete { held: before, .. },
            ) => held > before,
            (
                AlertCondition::ExceptionsNamingNobody { exceptions },
                AlertCondition::ExceptionsNamingNobody { exceptions: told },
            ) => exceptions
                .iter()
                .any(|e| !told.iter().any(|t| t.user_name == e.user_name)),
            (
                AlertCondition::SweepHeld { held, people, .. },
                AlertCondition::SweepHeld {
                    held: before,
                    people: named,
                    ..
                },
            ) => {
                // A list the last message cut short may have left the person out.
                let named_all = *before <= named.len();
                held > before
                    || (named_all
                        && people
                            .iter()
                            .any(|p| !named.iter().any(|n| n.identity_id == p.identity_id)))
            }
            _ => false,
        }
    }

    /// The body: what happened, and what to do.
    pub fn details(&self, timezone: Tz, admin: &str) -> Vec<String> {
        match self {
            AlertCondition::PlanHeld {
                run_id, reason, ..
            } => vec![
                format!("Why: {reason}"),
                format!("Review with `{admin} report --run {run_id}`; approve with `{admin} approve {run_id}`, or reject with `{admin} reject {run_id}`."),
            ],
            AlertCondition::SweepHeld {
                run_id,
                held,
                reason,
                people,
                rejected_before,
            } => {
                let mut lines = vec![format!("Why: {reason}")];
                lines.extend(people.iter().map(|p| {
                    let rejected = p.rejected.as_ref().map_or_else(String::new, |r| {
                        format!(
                            "; rejected before, in run {} by {} at {}",
                            r.run_id,
                            r.user,
                            report::local_minute(r.at, timezone)
                        )
                    });
                    format!(
                        "Held: {} (directory id {}){rejected}",
                        p.user_name, p.identity_id
                    )
                }));
                if *held > people.len() {
                    lines.push(format!("... and {} more.", held - people.len()));
                }
                if *rejected_before > 0 {
                    lines.push(
                        "Rejected before, held again: a rejection binds only its run. While the \
                         directory says the person lost access, each sweep plans the deprovision \
                         again, and the guard holds it again; rejecting once more does not end \
                         that. To end it for good: correct the directory (if the person keeps \
                         access), or protect the account (safety.protected)."
                            .to_owned(),
                    );
                }
                lines.push(format!(
                    "Approve with `{admin} approve {run_id}`, or reject with `{admin} reject {run_id}`."
                ));
                if let Some(first) = people.first() {
                    lines.push(format!(
                        "`{}` tells one person's whole story; `{admin} status` lists every held \
                         deprovision.",
                        crate::model::admin_command_line(admin, "explain", &[&first.identity_id], &[])
                    ));
                }
                lines.push(
                    "Until someone decides, each sweep holds them again, in a run of its own; \
                     approving this run is enough."
                        .to_owned(),
                );
                lines
            }
            AlertCondition::OverdueDeprovision {
                identity_id,
                user_name,
                due_at,
            } => vec![
                format!(
                    "{user_name} (directory id {identity_id}) should have lost access by {}.",
                    report::local_minute(*due_at, timezone)
                ),
                format!(
                    "`{admin} status` shows why it is still open (held, or the last error of its \
                     attempts); `{}` tells the whole story.",
                    crate::model::admin_command_line(admin, "explain", &[identity_id], &[])
                ),
            ],
            AlertCondition::DirectorySnapshotRejected { reason } => vec![
                format!("Why: {reason}"),
                "No deprovisioning is planned from a rejected snapshot; check the directory export or connector.".to_owned(),
            ],
            AlertCondition::DirectoryIncomplete { run_id, .. } => vec![
                format!(
                    "Run {run_id} read the directory incomplete (its listing ended short of the \
                     total it announced, twice), so what would take access away was held: \
                     someone only missing from the read looks gone."
                ),
                format!(
                    "Nothing to approve: `{admin} approve {run_id}` refuses these. Check the \
                     directory, then `{admin} reconcile`: a reconcile from a whole read plans \
                     what is really due. Until then the leavers among them keep their access."
                ),
                format!("`{admin} report --run {run_id}` lists them."),
            ],
            AlertCondition::CircuitBreakerOpen { reason } => vec![
                format!("Why: {reason}"),
                format!("Writes resume after the cool-down, or with `{admin} resume`."),
            ],
            AlertCondition::ExceptionsNamingNobody { exceptions } => {
                let clean = crate::report::printable_field;
                let mut lines: Vec<String> = exceptions
                    .iter()
                    .map(|e| {
                        format!(
                            "{}, until {}: {}",
                            clean(&e.user_name),
                            report::local_minute(e.until, timezone),
                            clean(&e.reason)
                        )
                    })
                    .collect();
                lines.push(
                    "No workspace account and no person in the directory has this userName, so \
                     the exception keeps nothing: a typo, or someone known by another name. \
                     Until it is fixed, whoever it was meant for loses access as the policy says."
                        .to_owned(),
                );
                lines.push(format!(
                    "Give the account's userName or the person's directory userName in \
                     safety.exceptions, then reload; `{admin} plan` shows EXCEPTION NAMES NOBODY \
                     until it names someone."
                ));
                lines
            }
            AlertCondition::RepeatedFailures { last_error, .. } => {
                vec![format!("Last error: {last_error}")]
            }
        }
    }
}

/// How many characters of a userName a subject line shows. A directory value has
/// no length limit of its own, and a subject is one header line: a long name
/// without a space to fold at made it longer than the 998 characters a mail
/// line may have, which relays refuse (the alert failed for good) or cut. The
/// body names the person in full.
const SUBJECT_NAME_CHARS: usize = 100;

/// `name` cut to [`SUBJECT_NAME_CHARS`], with `…` when cut.
fn subject_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(SUBJECT_NAME_CHARS) {
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &name[..at])),
        None => std::borrow::Cow::Borrowed(name),
    }
}

/// Where alerts go and how they read.
#[derive(Debug, Clone)]
pub struct AlertContext<'a> {
    /// The organisation name for subjects.
    pub name: &'a str,
    pub timezone: Tz,
    pub mail: &'a MailSettings,
    /// How people run seatwarden's commands here (`report.admin_command`).
    pub admin_command: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaiseDecision {
    /// Not active before: send the alert.
    New,
    /// Active, and the quiet period since the last message is over: send again.
    Reminder,
    /// Active and sent within the quiet period: send nothing.
    Quiet,
    /// Active and sent within the quiet period, but a hold grew since: more is
    /// held than the last message said (a layoff on top of a held handful), or
    /// the sweep holds someone it did not name. Sent at once, as news.
    Grew,
}

/// Whether the resolution of `key`'s alert is held until its condition has
/// stayed clear for `report.email.resolve_after`: for the conditions a flaky
/// system makes come and go on their own (a directory read incomplete every
/// other reconcile, a breaker that opens and closes, a job failing on and off;
/// exceptions naming nobody, which such a read does not tell).
/// Not for a hold waiting for a human (`plan_held`, `sweep_held`): it ends with a
/// decision or with nothing left to hold, and the next hold is another run to
/// approve, a new decision, alerted at once. Nor for an overdue deprovision: its
/// episode ends verified or cancelled, and one overdue again is a new episode,
/// whose alert must never wait or pass for the old one's continuation.
pub fn damped(key: &str) -> bool {
    matches!(
        key,
        "directory_snapshot_rejected"
            | "directory_incomplete"
            | "circuit_breaker_open"
            | "exceptions_naming_nobody"
    ) || key.starts_with("repeated_failures:")
}

/// How long `key`'s resolution is held: `resolve_after` if [`damped`], else zero.
pub fn resolution_hold(key: &str, resolve_after: Duration) -> Duration {
    if damped(key) {
        resolve_after
    } else {
        Duration::ZERO
    }
}

/// Whether a condition seen clear at `since` has stayed clear for `hold` at `now`.
/// Seen clear further ahead of `now` than a clock honestly steps back
/// ([`stamped_by_a_clock_set_back`]), it is taken as clear for the hold.
fn clear_for(since: DateTime<Utc>, now: DateTime<Utc>, hold: Duration) -> bool {
    let hold = chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::MAX);
    now.signed_duration_since(since) >= hold || stamped_by_a_clock_set_back(since, now)
}

/// Whether `at`, recorded as "now" when it was (a send, a condition seen clear),
/// lies more than [`crate::circuit::CLOCK_STEP_MARGIN`] ahead of `now`: the clock
/// that stamped it has been stepped back since (NTP correcting a clock that ran
/// ahead, a machine booted with a wrong one). Measured from it, a quiet period
/// or a resolution hold would last until the clock caught up (a year, for a
/// clock that ran a year ahead): the alert would send no reminder, no
/// resolution, and no new alert for a condition back again. As the circuit
/// breaker does with an opening stamped that far ahead, it is taken as over.
fn stamped_by_a_clock_set_back(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    at.signed_duration_since(now) > crate::circuit::CLOCK_STEP_MARGIN
}

/// Whether raising a condition now sends a message. `hold` is the key's
/// [`resolution_hold`]: an alert whose condition was seen clear is continued by
/// a raise within it (nothing new: its quiet period and reminders go on), but
/// one clear for the whole hold was over (its resolution due, not yet sent):
/// raised again, it is [`RaiseDecision::New`].
pub fn decide_raise(
    existing: Option<&AlertRecord>,
    now: DateTime<Utc>,
    quiet_period: Duration,
    hold: Duration,
) -> RaiseDecision {
    match existing {
        Some(record)
            if record.state == AlertRecordState::Active
                && !record
                    .cleared_at
                    .is_some_and(|since| clear_for(since, now, hold)) =>
        {
            let quiet = chrono::Duration::from_std(quiet_period).unwrap_or(chrono::Duration::MAX);
            if now.signed_duration_since(record.last_sent_at) >= quiet
                || stamped_by_a_clock_set_back(record.last_sent_at, now)
            {
                RaiseDecision::Reminder
            } else {
                RaiseDecision::Quiet
            }
        }
        _ => RaiseDecision::New,
    }
}

/// What seeing a condition clear does to its alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveDecision {
    /// No active alert: nothing to resolve.
    NotActive,
    /// Send the resolution now: its resolution is not held ([`damped`], or a
    /// zero `resolve_after`), or the condition stayed clear for the hold.
    Send,
    /// First seen clear: the resolution is held from now (the alert records
    /// `cleared_at`); nothing is sent.
    Hold,
    /// Already held since it was first seen clear, not due yet: nothing changes.
    Holding,
}

/// What resolving an alert at `now` does, `hold` being its key's
/// [`resolution_hold`]. Only an active alert is resolved, so once.
pub fn decide_resolve(
    existing: Option<&AlertRecord>,
    now: DateTime<Utc>,
    hold: Duration,
) -> ResolveDecision {
    match existing {
        Some(record) if record.state == AlertRecordState::Active => match record.cleared_at {
            _ if hold.is_zero() => ResolveDecision::Send,
            None => ResolveDecision::Hold,
            Some(since) if clear_for(since, now, hold) => ResolveDecision::Send,
            Some(_) => ResolveDecision::Holding,
        },
        _ => ResolveDecision::NotActive,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("recording an alert: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("encoding an alert condition: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the alert state kept changing while this job decided it; the next job decides again")]
    Contended,
}

impl crate::retry::Transient for AlertError {
    fn is_transient(&self) -> bool {
        false
    }
}

/// What [`raise`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaiseOutcome {
    pub decision: RaiseDecision,
    /// The queued message, unless quiet.
    pub message: Option<OutboxId>,
}

/// `in_reply_to`: the Message-ID of the alert's first mail, for a reminder or a
/// resolution.
fn message(
    context: &AlertContext<'_>,
    kind: OutboxKind,
    subject: String,
    title: &str,
    lines: &[String],
    in_reply_to: Option<&str>,
) -> Result<NewMessage, AlertError> {
    // A line break in a userName or a reason would let a directory value forge
    // lines of the text part ("Resolved — no action needed"): each line stays one.
    let mut text = format!("{}\n\n", report::printable(title, false));
    for line in lines {
        text.push_str(&report::printable(line, false));
        text.push('\n');
    }
    let html = report::render_alert_html(&subject, title, kind == OutboxKind::Resolution, lines)?;
    Ok(NewMessage {
        in_reply_to: in_reply_to.map(str::to_owned),
        ..mail::compose(context.mail, kind, &subject, &text, &html)
    })
}

/// The subject of an alert saying `summary`. A summary names a person by their
/// userName, a directory value: a line break, a control character or a bidi
/// override in it would break or reorder the subject line people scan
/// ("… is overdue" shown reversed), so those show as U+FFFD, as in the body.
fn alert_subject(context: &AlertContext<'_>, summary: &str) -> String {
    report::printable_field(&format!("[seatwarden] {}: {summary}", context.name))
}

/// The subject of the resolution of the alert that said `summary`: that alert's
/// subject behind "Resolved: ", so mail clients thread the two and a filter on the
/// alert's subject catches its resolution.
fn resolution_subject(context: &AlertContext<'_>, summary: &str) -> String {
    format!("Resolved: {}", alert_subject(context, summary))
}

/// How often a decision is made again, from a fresh read, when the alert state
/// changed between the read and the write (another job decided the same alert
/// meanwhile), before the call gives up and leaves it to the next job.
const ATTEMPTS: usize = 4;

/// The alert state a decision was made from (owned [`AlertsSeen`]).
#[derive(Debug, Clone)]
enum Seen {
    Key(String, Option<AlertRecord>),
    ActiveUnder(&'static str, Vec<AlertRecord>),
}

impl Seen {
    fn as_seen(&self) -> AlertsSeen<'_> {
        match self {
            Seen::Key(key, record) => AlertsSeen::Key {
                key,
                record: record.as_ref(),
            },
            Seen::ActiveUnder(prefix, records) => AlertsSeen::ActiveUnder { prefix, records },
        }
    }
}

/// A decision and what it writes, made from the alert state read as `seen`.
#[derive(Debug, Clone)]
struct Decided<T> {
    seen: Seen,
    records: Vec<AlertRecord>,
    messages: Vec<NewMessage>,
    outcome: T,
}

/// Writes what `decide` decided, in one transaction, if the alert state it read is
/// still the stored one; otherwise decides again. A decision that writes nothing
/// costs no transaction. Returns the outcome and the queued messages' ids.
fn record<T>(
    store: &mut Store,
    now: DateTime<Utc>,
    mut decide: impl FnMut(&Store) -> Result<Decided<T>, AlertError>,
) -> Result<(T, Vec<OutboxId>), AlertError> {
    for _ in 0..ATTEMPTS {
        let decided = decide(store)?;
        if decided.records.is_empty() && decided.messages.is_empty() {
            return Ok((decided.outcome, Vec::new()));
        }
        if let Some(ids) = store.record_alerts(
            decided.seen.as_seen(),
            &decided.records,
            &decided.messages,
            now,
        )? {
            return Ok((decided.outcome, ids));
        }
    }
    Err(AlertError::Contended)
}

/// Raises `condition` at `now`: queues an alert unless the same key was sent within
/// the quiet period.
pub fn raise(
    store: &mut Store,
    context: &AlertContext<'_>,
    condition: &AlertCondition,
    now: DateTime<Utc>,
) -> Result<RaiseOutcome, AlertError> {
    let (decision, ids) = record(store, now, |store| {
        decide_raise_write(store, context, condition, now)
    })?;
    Ok(RaiseOutcome {
        decision,
        message: ids.first().copied(),
    })
}

fn decide_raise_write(
    store: &Store,
    context: &AlertContext<'_>,
    condition: &AlertCondition,
    now: DateTime<Utc>,
) -> Result<Decided<RaiseDecision>, AlertError> {
    let key = condition.key();
    let existing = store.alert(&key)?;
    let last_sent = existing
        .as_ref()
        .and_then(|old| serde_json::from_str::<AlertCondition>(&old.condition).ok());
    let hold = resolution_hold(&key, context.mail.resolve_after);
    let decision = match decide_raise(existing.as_ref(), now, context.mail.quiet_period, hold) {
        RaiseDecision::Quiet if last_sent.as_ref().is_some_and(|l| condition.grew_from(l)) => {
            RaiseDecision::Grew
        }
        RaiseDecision::Reminder
            if waiting_threads(store)?.contains(
                existing
                    .as_ref()
                    .and_then(|r| r.thread_root.as_deref())
                    .unwrap_or(""),
            ) =>
        {
            RaiseDecision::Quiet
        }
        decision => decision,
    };
    let condition_json = serde_json::to_string(condition)?;
    let record = match (&existing, decision) {
        // The condition as last sent stays: its resolution's subject is that
        // message's, so mail clients show them together.
        (Some(old), RaiseDecision::Quiet) => AlertRecord {
            suppressed: old.suppressed.saturating_add(1),
            ..old.clone()
        },
        (Some(old), RaiseDecision::Reminder | RaiseDecision::Grew) => AlertRecord {
            condition: condition_json,
            last_sent_at: now,
            suppressed: 0,
            ..old.clone()
        },
        _ => AlertRecord {
            key: key.clone(),
            condition: condition_json,
            state: AlertRecordState::Active,
            first_raised_at: now,
            last_sent_at: now,
            resolved_at: None,
            suppressed: 0,
            thread_root: None,
            cleared_at: None,
            flaps: 0,
        },
    };
    // Back within its resolution's hold: the same alert goes on (its thread,
    // its reminders), one flap more, and its resolution is no longer due.
    let record = match (&existing, decision) {
        (Some(old), RaiseDecision::Quiet | RaiseDecision::Reminder | RaiseDecision::Grew)
            if old.cleared_at.is_some() =>
        {
            AlertRecord {
                cleared_at: None,
                flaps: old.flaps.saturating_add(1),
                ..record
            }
        }
        _ => record,
    };
    // Clear for its whole hold, its resolution not sent yet (no job ran since:
    // the daemon was stopped): that one is over; its resolution goes first, in
    // its thread, then the new alert, in a thread of its own.
    let mut messages = Vec::new();
    if let Some(old) = existing
        .as_ref()
        .filter(|old| decision == RaiseDecision::New && old.state == AlertRecordState::Active)
    {
        messages.push(resolution(context, old, &key, hold, now)?);
    }
    let outgoing = match decision {
        RaiseDecision::Quiet => None,
        RaiseDecision::New | RaiseDecision::Reminder | RaiseDecision::Grew => {
            let summary = condition.summary();
            let subject = alert_subject(
                context,
                &format!(
                    "{}{summary}",
                    if decision == RaiseDecision::Reminder {
                        "still: "
                    } else {
                        ""
                    }
                ),
            );
            let mut lines = condition.details(context.timezone, context.admin_command);
            if let (RaiseDecision::Grew, Some(old), Some(last)) = (decision, &existing, &last_sent)
            {
                lines.push(format!(
                    "More than the last alert said ({}, sent {}).",
                    last.summary(),
                    report::local_minute(old.last_sent_at, context.timezone)
                ));
            }
            if let Some(old) = existing
                .as_ref()
                .filter(|_| decision == RaiseDecision::Reminder)
            {
                lines.push(format!(
                    "First raised {}.",
                    report::local_minute(old.first_raised_at, context.timezone)
                ));
            }
            if decision != RaiseDecision::New {
                lines.extend(flapped(record.flaps, hold));
            }
            Some(message(
                context,
                OutboxKind::Alert,
                subject,
                &summary,
                &lines,
                record.thread_root.as_deref(),
            )?)
        }
    };
    messages.extend(outgoing);
    Ok(Decided {
        seen: Seen::Key(key, existing),
        records: vec![record],
        messages,
        outcome: decision,
    })
}

/// What a reminder or a resolution says of a condition that came back `flaps`
/// times within its resolution's `hold`: flapping, told once in the message
/// that goes out anyway, instead of a `Resolved: ` and an alert per flip.
fn flapped(flaps: u32, hold: Duration) -> Option<String> {
    (flaps > 0).then(|| {
        format!(
            "Flapping: it cleared and came back {} since first raised, each time within {} \
             (report.email.resolve_after), so no resolution was sent in between.",
            report::plural(flaps as usize, "time", "times"),
            crate::config::span(chrono::Duration::from_std(hold).unwrap_or_default())
        )
    })
}

/// The resolution of the active alert `old` (key `key`) at `now`, in its thread.
fn resolution(
    context: &AlertContext<'_>,
    old: &AlertRecord,
    key: &str,
    hold: Duration,
    now: DateTime<Utc>,
) -> Result<NewMessage, AlertError> {
    let summary = serde_json::from_str::<AlertCondition>(&old.condition)
        .map(|c| c.summary())
        .unwrap_or_else(|_| key.to_owned());
    let subject = resolution_subject(context, &summary);
    let since = report::local_minute(old.first_raised_at, context.timezone);
    let mut lines = vec![format!(
        "Raised {since}, resolved {}.",
        report::local_minute(now, context.timezone)
    )];
    if let Some(cleared) = old.cleared_at.filter(|_| !hold.is_zero()) {
        lines.push(format!(
            "Clear since {}: resolved once it stayed clear for {} (report.email.resolve_after).",
            report::local_minute(cleared, context.timezone),
            crate::config::span(chrono::Duration::from_std(hold).unwrap_or_default())
        ));
    }
    lines.extend(flapped(old.flaps, hold));
    message(
        context,
        OutboxKind::Resolution,
        subject,
        &format!("Resolved: {summary}"),
        &lines,
        old.thread_root.as_deref(),
    )
}

/// The mail threads with a message still waiting in the outbox (a relay that is
/// down, a backoff). A reminder is not queued while its alert's thread has one:
/// it would wait behind it (threads go out in order, [`mail::deliver_due`]), and
/// a relay down for a day had the alert and a "still: " per quiet period go out
/// together once it was back, saying the same thing.
fn waiting_threads(store: &Store) -> Result<HashSet<String>, AlertError> {
    Ok(store
        .pending_threads()?
        .into_iter()
        .map(|(_, thread)| thread)
        .collect())
}

/// Resolves the condition with `key` at `now`: queues one resolution message if it
/// was active and its resolution is not held ([`decide_resolve`]): a [`damped`]
/// condition first seen clear only starts the hold, and [`resolve_due`] (or a
/// later call) sends it once the condition stayed clear. Returns the message's
/// id, or `None` when nothing was sent.
pub fn resolve(
    store: &mut Store,
    context: &AlertContext<'_>,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<OutboxId>, AlertError> {
    let (_, ids) = record(store, now, |store| {
        decide_resolve_write(store, context, key, now)
    })?;
    Ok(ids.first().copied())
}

fn decide_resolve_write(
    store: &Store,
    context: &AlertContext<'_>,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Decided<ResolveDecision>, AlertError> {
    let existing = store.alert(key)?;
    let hold = resolution_hold(key, context.mail.resolve_after);
    let decision = decide_resolve(existing.as_ref(), now, hold);
    let (records, messages) = match (decision, &existing) {
        (ResolveDecision::Hold, Some(old)) => (
            vec![AlertRecord {
                cleared_at: Some(now),
                ..old.clone()
            }],
            Vec::new(),
        ),
        (ResolveDecision::Send, Some(old)) => (
            vec![AlertRecord {
                state: AlertRecordState::Resolved,
                resolved_at: Some(now),
                cleared_at: None,
                ..old.clone()
            }],
            vec![resolution(context, old, key, hold, now)?],
        ),
        _ => (Vec::new(), Vec::new()),
    };
    Ok(Decided {
        seen: Seen::Key(key.to_owned(), existing),
        records,
        messages,
        outcome: decision,
    })
}

/// Sends the resolutions whose hold is over at `now`: each active alert whose
/// condition has stayed clear for its [`resolution_hold`], whether or not a job
/// sees its condition again (the reconcile that would is half an hour away, the
/// job that failed may not run again soon). The daemon calls it after every
/// job, the mail job's every minute included; the state is the store's, so a
/// restart loses no held resolution. Returns the queued messages' ids.
pub fn resolve_due(
    store: &mut Store,
    context: &AlertContext<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<OutboxId>, AlertError> {
    let mut sent = Vec::new();
    for record in store.active_alerts()? {
        let hold = resolution_hold(&record.key, context.mail.resolve_after);
        if record.cleared_at.is_some()
            && decide_resolve(Some(&record), now, hold) == ResolveDecision::Send
        {
            sent.extend(resolve(store, context, &record.key, now)?);
        }
    }
    Ok(sent)
}

/// A sign that the condition under `key` is back, short of raising it (a job's
/// first failures after its repeated-failure alert was seen clear): an alert
/// whose resolution is held goes on as if raised, quietly, one flap more, and
/// its resolution is no longer due. Anything else is left as it is. Returns
/// whether the alert went on.
pub fn reopen(
    store: &mut Store,
    context: &AlertContext<'_>,
    key: &str,
    now: DateTime<Utc>,
) -> Result<bool, AlertError> {
    let hold = resolution_hold(key, context.mail.resolve_after);
    let (reopened, _) = record(store, now, |store| {
        let existing = store.alert(key)?;
        let records: Vec<AlertRecord> = existing
            .iter()
            .filter(|old| {
                old.state == AlertRecordState::Active
                    && old
                        .cleared_at
                        .is_some_and(|since| !clear_for(since, now, hold))
            })
            .map(|old| AlertRecord {
                cleared_at: None,
                flaps: old.flaps.saturating_add(1),
                ..old.clone()
            })
            .collect();
        Ok(Decided {
            seen: Seen::Key(key.to_owned(), existing),
            outcome: !records.is_empty(),
            records,
            messages: Vec::new(),
        })
    })?;
    Ok(reopened)
}

/// What [`overdue_deprovisions`] queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverdueOutcome {
    /// One alert naming everyone newly overdue (and, when a reminder is due,
    /// everyone still overdue).
    pub alert: Option<OutboxId>,
    /// One resolution naming everyone no longer overdue.
    pub resolution: Option<OutboxId>,
}

/// Alerts the deprovisions overdue at `now` from the ledger as it stands, and
/// resolves those no longer open (verified or cancelled): one alert and one
/// resolution per call at most, however many people they name. Each person keeps
/// an alert state of their own (a key under [`OVERDUE_PREFIX`]): someone newly
/// overdue alerts at once, while the others are only counted; once anyone's quiet
/// period is over, one reminder names everyone still overdue, and their quiet
/// periods start again together. A call that sends nothing writes nothing (quiet
/// raises are not counted for these alerts), so a job every minute costs no write.
pub fn overdue_deprovisions(
    store: &mut Store,
    context: &AlertContext<'_>,
    now: DateTime<Utc>,
) -> Result<OverdueOutcome, AlertError> {
    let ((alert, resolution), ids) = record(store, now, |store| {
        decide_overdue_write(store, context, now)
    })?;
    let mut ids = ids.into_iter();
    Ok(OverdueOutcome {
        alert: if alert { ids.next() } else { None },
        resolution: if resolution { ids.next() } else { None },
    })
}

fn overdue_condition(entry: &LedgerEntry) -> AlertCondition {
    AlertCondition::OverdueDeprovision {
        identity_id: entry.identity_id.clone(),
        user_name: entry.user_name.clone(),
        due_at: entry.due_at,
    }
}

/// One line per person, the first [`LISTED`], then how many more.
fn listed<T>(people: &[T], line: impl Fn(&T) -> String) -> Vec<String> {
    let mut lines: Vec<String> = people.iter().take(LISTED).map(line).collect();
    if people.len() > LISTED {
        lines.push(format!("... and {} more.", people.len() - LISTED));
    }
    lines
}

/// "deprovision of X is overdue" for one person, "N deprovisions are overdue".
fn overdue_summary(people: &[&LedgerEntry]) -> String {
    match people {
        [one] => overdue_condition(one).summary(),
        _ => format!("{} deprovisions are overdue", people.len()),
    }
}

/// The guard's holds of the people an overdue alert names: the run that holds
/// each one's deprovision for an approval ([`Store::held_for_approval`]), named
/// with the command that releases it, and, where no run waits for one any more,
/// what became of the newest hold ([`Store::decided_holds`]: rejected, or
/// refused by an approval's re-check), told as `status` and the digest tell it
/// ([`crate::report::digest::DeprovisionHold::waiting_for`]). The alert is sent
/// all the same: the person still has access past their due time.
#[derive(Debug, Default)]
struct GuardHolds {
    waiting: HashMap<String, RunId>,
    decided: HashMap<String, crate::store::DecidedHold>,
}

impl GuardHolds {
    fn read(store: &Store) -> Result<GuardHolds, StoreError> {
        Ok(GuardHolds {
            waiting: store.held_for_approval()?,
            decided: store.decided_holds()?,
        })
    }

    /// What was decided on `entry`'s hold, while the guard holds it (not a
    /// protected account or a disputed match, held since for its own reason)
    /// and no run waits for its approval.
    fn decided(&self, entry: &LedgerEntry) -> Option<&crate::store::DecidedHold> {
        if self.waiting.contains_key(&entry.identity_id) {
            return None;
        }
        match entry
            .held
            .as_deref()
            .map(crate::report::digest::DeprovisionHold::of)
        {
            Some(crate::report::digest::DeprovisionHold::Guard) => {
                self.decided.get(&entry.identity_id)
            }
            _ => None,
        }
    }
}

/// ` by alice at 2026-12-04 09:00 +01:00 (CET)`, as much of it as was recorded:
/// who decided on held actions (several: named together) and when (the last).
fn decided_by_at<'a>(
    decided: impl Iterator<Item = &'a crate::store::DecidedHold>,
    tz: chrono_tz::Tz,
) -> String {
    let mut by: Vec<String> = Vec::new();
    let mut at: Option<DateTime<Utc>> = None;
    for d in decided {
        if let Some(user) = d.by.as_deref().map(report::printable_field)
            && !by.contains(&user)
        {
            by.push(user);
        }
        at = at.max(d.at);
    }
    let mut out = String::new();
    if !by.is_empty() {
        out.push_str(" by ");
        out.push_str(&by.join(" and "));
    }
    if let Some(at) = at {
        out.push_str(" at ");
        out.push_str(&report::local_time(at, tz));
    }
    out
}

/// What the alert says about `people`: for one person the condition's own
/// details, for several a capped list; the hold of each, from `holds`.
fn overdue_lines(
    people: &[&LedgerEntry],
    context: &AlertContext<'_>,
    holds: &GuardHolds,
) -> Vec<String> {
    let admin = context.admin_command;
    let tz = context.timezone;
    if let [one] = people {
        let mut lines = overdue_condition(one).details(tz, admin);
        let mut at = 1;
        if let Some(why) = why_open(one) {
            lines.insert(at, format!("Still open because {why}."));
            at += 1;
        }
        if let Some(run) = holds.waiting.get(&one.identity_id) {
            lines.insert(
                at,
                format!(
                    "Run {run} holds it for a human: approve with `{admin} approve {run}`, or \
                     reject with `{admin} reject {run}`."
                ),
            );
        } else if let Some(decided) = holds.decided(one) {
            let by_at = decided_by_at(std::iter::once(decided), tz);
            let run = decided.run;
            lines.insert(
                at,
                match &decided.refused {
                    None => format!(
                        "Run {run} held it for a human, and that hold was rejected{by_at} \
                         (`{admin} reject {run}`): nothing waits for an approval. The sweep or \
                         the next reconcile plans it again (held again, in a new run, while the \
                         guard still holds it)."
                    ),
                    Some(why) => format!(
                        "Run {run} held it for a human; `{admin} approve {run}`{by_at} \
                         re-checked it and refused it: {}. Nothing waits for an approval: the \
                         next reconcile decides.",
                        report::printable_field(why)
                    ),
                },
            );
        }
        return lines;
    }
    let mut lines = vec![format!(
        "{} people should have lost access by their due time:",
        people.len()
    )];
    lines.extend(listed(people, |e| {
        let why = why_open(e)
            .map(|why| format!(": {why}"))
            .unwrap_or_default();
        let run = match (holds.waiting.get(&e.identity_id), holds.decided(e)) {
            (Some(run), _) => format!(" (run {run})"),
            (None, Some(decided)) => match &decided.refused {
                None => format!(" (run {}: rejected)", decided.run),
                Some(refused) => format!(
                    " (run {}: `{admin} approve {}` refused it: {})",
                    decided.run,
                    decided.run,
                    report::printable_field(refused)
                ),
            },
            (None, None) => String::new(),
        };
        format!(
            "{} (directory id {}), due {}{why}{run}",
            e.user_name,
            e.identity_id,
            report::local_minute(e.due_at, tz)
        )
    }));
    let mut runs: BTreeMap<RunId, usize> = BTreeMap::new();
    // By run and whether it was refused (else rejected).
    let mut decided: BTreeMap<(RunId, bool), Vec<&crate::store::DecidedHold>> = BTreeMap::new();
    for e in people {
        if let Some(run) = holds.waiting.get(&e.identity_id) {
            *runs.entry(*run).or_default() += 1;
        } else if let Some(d) = holds.decided(e) {
            decided
                .entry((d.run, d.refused.is_some()))
                .or_default()
                .push(d);
        }
    }
    for (run, held) in runs {
        lines.push(format!(
            "Run {run} holds {held} of them for a human: approve with `{admin} approve {run}`, or \
             reject with `{admin} reject {run}`."
        ));
    }
    for ((run, refused), holds) in decided {
        let by_at = decided_by_at(holds.iter().copied(), tz);
        let (n, them) = match holds.len() {
            1 => ("1 of them".to_owned(), "it"),
            n => (format!("{n} of them"), "them"),
        };
        lines.push(if refused {
            format!(
                "`{admin} approve {run}`{by_at} refused {n}, each for the reason given: nothing \
                 waits for an approval; the next reconcile decides."
            )
        } else {
            format!(
                "Run {run} held {n} for a human, and that hold was rejected{by_at} (`{admin} \
                 reject {run}`): nothing waits for an approval. The sweep or the next reconcile \
                 plans {them} again (held again, in a new run, while the guard still holds \
                 {them})."
            )
        });
    }
    lines.push(format!(
        "`{admin} status` shows each one's state (held, or the last error of its attempts); \
         `{}` tells one person's whole story.",
        crate::model::admin_command_line(
            admin,
            "explain",
            &[people.first().map_or("PERSON", |e| e.identity_id.as_str())],
            &[]
        )
    ));
    lines
}

/// Why an overdue episode is still open, from the ledger: the sweep and the
/// retry job store no report, so `seatwarden report` cannot say. `None` when
/// nothing was tried yet.
pub(crate) fn why_open(entry: &LedgerEntry) -> Option<String> {
    let clean = crate::report::printable_field;
    match (&entry.held, &entry.last_error) {
        (Some(held), _) => Some(format!("it is held: {}", clean(held))),
        (None, Some(error)) if entry.attempts == 0 => {
            Some(format!("its last pass ended: {}", clean(error)))
        }
        (None, Some(error)) => Some(format!(
            "{} failed: {}",
            report::plural(entry.attempts as usize, "attempt", "attempts"),
            clean(error)
        )),
        (None, None) if entry.account_id.is_none() => {
            Some("no account is known to be theirs".to_owned())
        }
        (None, None) => None,
    }
}

/// The thread of the first raised of `records` that has one: one message naming
/// several people, each alerted in a mail of their own, replies to one of them.
fn oldest_thread<'a>(records: impl Iterator<Item = &'a AlertRecord>) -> Option<&'a str> {
    records
        .filter(|r| r.thread_root.is_some())
        .min_by(|a, b| (a.first_raised_at, &a.key).cmp(&(b.first_raised_at, &b.key)))
        .and_then(|r| r.thread_root.as_deref())
}

fn decide_overdue_write(
    store: &Store,
    context: &AlertContext<'_>,
    now: DateTime<Utc>,
) -> Result<Decided<(bool, bool)>, AlertError> {
    let open = store.open_deprovisions()?;
    let active = store.active_alerts_under(OVERDUE_PREFIX)?;
    let by_key: HashMap<&str, &AlertRecord> = active.iter().map(|r| (r.key.as_str(), r)).collect();
    let mut overdue: Vec<&LedgerEntry> = open
        .iter()
        .filter(|e| e.state(now) == EntryState::Overdue)
        .collect();
    overdue.sort_by(|a, b| {
        (a.due_at, &a.user_name, &a.identity_id).cmp(&(b.due_at, &b.user_name, &b.identity_id))
    });
    let mut new = Vec::new();
    let mut still = Vec::new();
    let mut reminder_due = false;
    let mut waiting = None;
    for entry in overdue {
        match by_key.get(overdue_condition(entry).key().as_str()) {
            Some(record) => {
                if !reminder_due
                    && decide_raise(Some(record), now, context.mail.quiet_period, Duration::ZERO)
                        == RaiseDecision::Reminder
                {
                    // Not while the alert that named them still waits to go out.
                    let waiting = match &mut waiting {
                        Some(waiting) => waiting,
                        None => waiting.insert(waiting_threads(store)?),
                    };
                    reminder_due = !record
                        .thread_root
                        .as_deref()
                        .is_some_and(|root| waiting.contains(root));
                }
                still.push((entry, *record));
            }
            None => new.push(entry),
        }
    }
    // An episode an exception put off after its alert is no longer overdue:
    // someone decided to keep the access, and the alert is over (a new one is
    // raised if it is overdue after the exception's end).
    let open_ids: HashSet<&str> = open
        .iter()
        .filter(|e| e.excepted_until.is_none() || e.state(now) == EntryState::Overdue)
        .map(|e| e.identity_id.as_str())
        .collect();
    let resolved: Vec<&AlertRecord> = active
        .iter()
        .filter(|r| {
            r.key
                .strip_prefix(OVERDUE_PREFIX)
                .is_some_and(|id| !open_ids.contains(id))
        })
        .collect();
    // The resolved whose episode is still open, put off by an exception: their
    // resolution says the access is kept, not taken away.
    let put_off = |r: &AlertRecord| -> Option<String> {
        let id = r.key.strip_prefix(OVERDUE_PREFIX)?;
        let until = open
            .iter()
            .find(|e| e.identity_id == id)
            .and_then(|e| e.excepted_until)?;
        Some(format!(
            "not deactivated: the access is kept by an exception until {} \
             (safety.exceptions), and alerted again if overdue after it",
            report::local_minute(until, context.timezone)
        ))
    };

    let mut records = Vec::new();
    let mut messages = Vec::new();
    for entry in &new {
        let condition = overdue_condition(entry);
        records.push(AlertRecord {
            key: condition.key(),
            condition: serde_json::to_string(&condition)?,
            state: AlertRecordState::Active,
            first_raised_at: now,
            last_sent_at: now,
            resolved_at: None,
            suppressed: 0,
            thread_root: None,
            cleared_at: None,
            flaps: 0,
        });
    }
    if reminder_due {
        for (entry, old) in &still {
            records.push(AlertRecord {
                condition: serde_json::to_string(&overdue_condition(entry))?,
                last_sent_at: now,
                suppressed: 0,
                ..(*old).clone()
            });
        }
    }
    let still_people: Vec<&LedgerEntry> = still.iter().map(|(e, _)| *e).collect();
    let alert = !new.is_empty() || reminder_due;
    if alert {
        let holds = GuardHolds::read(store)?;
        let (prefix, summary, mut lines) = if new.is_empty() {
            let mut lines = overdue_lines(&still_people, context, &holds);
            if let Some(first) = still.iter().map(|(_, r)| r.first_raised_at).min() {
                lines.push(format!(
                    "First raised {}.",
                    report::local_minute(first, context.timezone)
                ));
            }
            ("still: ", overdue_summary(&still_people), lines)
        } else {
            (
                "",
                overdue_summary(&new),
                overdue_lines(&new, context, &holds),
            )
        };
        if !new.is_empty() && reminder_due {
            lines.push(format!(
                "Still overdue since an earlier alert ({}):",
                still_people.len()
            ));
            lines.extend(listed(&still_people, |e| {
                format!(
                    "{} (directory id {}), due {}",
                    e.user_name,
                    e.identity_id,
                    report::local_minute(e.due_at, context.timezone)
                )
            }));
        } else if !new.is_empty() && !still.is_empty() {
            lines.push(format!(
                "{} still open.",
                report::plural(
                    still.len(),
                    "more overdue deprovision was alerted before and is",
                    "more overdue deprovisions were alerted before and are"
                )
            ));
        }
        let subject = alert_subject(context, &format!("{prefix}{summary}"));
        // A reminder follows the oldest thread among those it names again.
        let follows = if reminder_due {
            oldest_thread(still.iter().map(|(_, r)| *r))
        } else {
            None
        };
        messages.push(message(
            context,
            OutboxKind::Alert,
            subject,
            &summary,
            &lines,
            follows,
        )?);
    }

    let resolution = !resolved.is_empty();
    if resolution {
        let name = |r: &AlertRecord| match serde_json::from_str::<AlertCondition>(&r.condition) {
            Ok(AlertCondition::OverdueDeprovision {
                identity_id,
                user_name,
                ..
            }) => format!("{user_name} (directory id {identity_id})"),
            _ => r.key.clone(),
        };
        let (summary, lines) = match resolved.as_slice() {
            [one] => (
                serde_json::from_str::<AlertCondition>(&one.condition)
                    .map(|c| c.summary())
                    .unwrap_or_else(|_| one.key.clone()),
                vec![format!(
                    "Raised {}, resolved {}{}.",
                    report::local_minute(one.first_raised_at, context.timezone),
                    report::local_minute(now, context.timezone),
                    put_off(one)
                        .map(|kept| format!(": {kept}"))
                        .unwrap_or_default()
                )],
            ),
            _ => {
                let mut lines = vec![format!(
                    "No longer overdue (deactivation verified, cancelled, or put off by an \
                     exception), resolved {}:",
                    report::local_minute(now, context.timezone)
                )];
                lines.extend(listed(&resolved, |r| {
                    let kept = put_off(r)
                        .map(|kept| format!("; {kept}"))
                        .unwrap_or_default();
                    format!(
                        "{}, raised {}{kept}",
                        name(r),
                        report::local_minute(r.first_raised_at, context.timezone)
                    )
                }));
                // As the alert that named them together was worded.
                (
                    format!("{} deprovisions are overdue", resolved.len()),
                    lines,
                )
            }
        };
        let subject = resolution_subject(context, &summary);
        messages.push(message(
            context,
            OutboxKind::Resolution,
            subject,
            &format!("Resolved: {summary}"),
            &lines,
            oldest_thread(resolved.iter().copied()),
        )?);
        for old in &resolved {
            records.push(AlertRecord {
                state: AlertRecordState::Resolved,
                resolved_at: Some(now),
                ..(*old).clone()
            });
        }
    }
    Ok(Decided {
        seen: Seen::ActiveUnder(OVERDUE_PREFIX, active.clone()),
        records,
        messages,
        outcome: (alert, resolution),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use chrono::TimeZone;

    use super::*;
    use crate::mail::{SmtpEndpoint, TlsMode};
    use crate::retry::RetryPolicy;
    use crate::store::OutboxState;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, hour, minute, 0).unwrap()
    }

    /// Another exception naming nobody is news, sent at once; the same ones, or
    /// fewer, are not. Several are counted in the subject, each named in the body
    /// on a line of its own, a line break in a reason forging none.
    #[test]
    fn exceptions_naming_nobody_grow_by_a_new_name_only() {
        let exception = |name: &str| crate::model::Exception {
            user_name: name.to_owned(),
            until: at(17, 0),
            reason: "handover\nFrom: forged".to_owned(),
        };
        let alert = |names: &[&str]| AlertCondition::ExceptionsNamingNobody {
            exceptions: names.iter().map(|n| exception(n)).collect(),
        };
        let one = alert(&["dnaa@example.com"]);
        let two = alert(&["dnaa@example.com", "erni@example.com"]);
        assert!(two.grew_from(&one));
        assert!(!one.grew_from(&two));
        assert!(!one.grew_from(&one));
        assert!(!alert(&["erni@example.com"]).grew_from(&two));
        assert_eq!(one.key(), two.key());
        assert_eq!(
            one.summary(),
            "the exception for dnaa@example.com names nobody"
        );
        assert_eq!(two.summary(), "2 exceptions name nobody");
        let details = two.details(chrono_tz::UTC, "seatwarden");
        assert_eq!(
            details[..2],
            [
                "dnaa@example.com, until 2026-11-30 17:00 UTC: handover\u{fffd}From: forged",
                "erni@example.com, until 2026-11-30 17:00 UTC: handover\u{fffd}From: forged",
            ]
        );
        assert!(damped(&one.key()));
    }

    /// The sweep and the retry job store no report: the alert itself says why a
    /// deprovision is still open, from the ledger.
    #[test]
    fn an_overdue_alert_says_why_the_deprovision_is_still_open() {
        let entry = |held: Option<&str>, error: Option<&str>, attempts| LedgerEntry {
            id: 1,
            identity_id: "00u1".into(),
            account_id: Some("a1".into()),
            user_name: "ada@example.com".into(),
            reason: crate::sla::LossReason::Suspended,
            detected_at: at(8, 0),
            due_at: at(9, 0),
            enforced_at: None,
            verified_at: None,
            closed_at: None,
            escalated_at: None,
            attempts,
            next_attempt_at: None,
            last_error: error.map(str::to_owned),
            held: held.map(str::to_owned),
            returned_at: None,
            excepted_until: None,
        };
        let mail = settings();
        let context = AlertContext {
            name: "acme",
            timezone: chrono_tz::UTC,
            mail: &mail,
            admin_command: "seatwarden",
        };
        let failing = entry(None, Some("PATCH /Users/a1: HTTP 503"), 3);
        let lines = overdue_lines(&[&failing], &context, &GuardHolds::default());
        assert_eq!(
            lines[1],
            "Still open because 3 attempts failed: PATCH /Users/a1: HTTP 503."
        );
        assert!(
            lines[2].starts_with("`seatwarden status` shows why"),
            "{lines:?}"
        );
        let held = entry(Some("deprovision threshold"), None, 0);
        let lines = overdue_lines(&[&failing, &held], &context, &GuardHolds::default());
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(": 3 attempts failed: PATCH /Users/a1: HTTP 503")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(": it is held: deprovision threshold")),
            "{lines:?}"
        );
        let untried = entry(None, None, 0);
        assert_eq!(
            overdue_lines(&[&untried], &context, &GuardHolds::default()).len(),
            2
        );
    }

    /// Six hours' quiet period and an hour's resolution hold, to a relay on the
    /// loopback; also what the daemon's status tests raise alerts with.
    pub(crate) fn settings() -> MailSettings {
        MailSettings {
            endpoint: SmtpEndpoint {
                host: "127.0.0.1".into(),
                port: 25,
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

    fn context(mail: &MailSettings) -> AlertContext<'_> {
        AlertContext {
            name: "acme",
            timezone: chrono_tz::Europe::Berlin,
            mail,
            admin_command: "seatwarden",
        }
    }

    /// A sweep hold of someone whose deprovision a human rejected before says
    /// so, on the alert's clock, and what a rejection does not do; one nobody
    /// rejected reads as before.
    #[test]
    fn a_sweep_hold_names_an_earlier_rejection() {
        let person = |n: u32, rejected| HeldPerson {
            user_name: format!("leaver{n}@example.com"),
            identity_id: format!("00u{n}"),
            rejected,
        };
        let held = |people: Vec<HeldPerson>| {
            let rejected_before = people.iter().filter(|p| p.rejected.is_some()).count();
            AlertCondition::SweepHeld {
                run_id: 43,
                held: people.len(),
                reason: "deprovisions: 11 in 24 h, over the limit of 10".into(),
                people,
                rejected_before,
            }
        };
        let rejection = crate::sweep::EarlierRejection {
            run_id: 41,
            user: "alice".into(),
            at: at(8, 5),
        };
        let condition = held(vec![person(1, Some(rejection)), person(2, None)]);
        assert_eq!(
            condition.summary(),
            "2 deprovisions held by the guard in sweep run 43, 1 rejected before"
        );
        let lines = condition.details(chrono_tz::Europe::Berlin, "sudo seatwarden-admin");
        assert_eq!(
            lines[1..4],
            [
                "Held: leaver1@example.com (directory id 00u1); rejected before, in run 41 by \
                 alice at 2026-11-30 09:05 +01:00 (CET)"
                    .to_owned(),
                "Held: leaver2@example.com (directory id 00u2)".to_owned(),
                "Rejected before, held again: a rejection binds only its run. While the \
                 directory says the person lost access, each sweep plans the deprovision again, \
                 and the guard holds it again; rejecting once more does not end that. To end it \
                 for good: correct the directory (if the person keeps access), or protect the \
                 account (safety.protected)."
                    .to_owned(),
            ],
            "{lines:#?}"
        );

        let fresh = held(vec![person(2, None)]);
        assert_eq!(
            fresh.summary(),
            "1 deprovision held by the guard in sweep run 43"
        );
        let lines = fresh.details(chrono_tz::Europe::Berlin, "sudo seatwarden-admin");
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("rejected") || l.contains("Rejected")),
            "{lines:#?}"
        );
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

    #[test]
    fn the_same_condition_is_not_resent_within_the_quiet_period() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let first = raise(&mut store, &context, &breaker(), at(8, 0)).unwrap();
        assert_eq!(first.decision, RaiseDecision::New);
        assert!(first.message.is_some());
        let again = raise(&mut store, &context, &breaker(), at(13, 59)).unwrap();
        assert_eq!(again.decision, RaiseDecision::Quiet);
        assert_eq!(again.message, None);
        assert_eq!(
            store
                .alert("circuit_breaker_open")
                .unwrap()
                .unwrap()
                .suppressed,
            1
        );
        // The alert went out (a reminder does not queue behind one still waiting).
        store
            .mark_message_sent(first.message.unwrap(), at(8, 1))
            .unwrap();
        let reminder = raise(&mut store, &context, &breaker(), at(14, 0)).unwrap();
        assert_eq!(reminder.decision, RaiseDecision::Reminder);
        assert_eq!(
            subjects(&store),
            [
                "[seatwarden] acme: circuit breaker open: workspace writes stopped",
                "[seatwarden] acme: still: circuit breaker open: workspace writes stopped",
            ]
        );
        let entries = store.outbox().unwrap();
        assert_eq!(entries[1].state, OutboxState::Pending);
        assert!(
            entries[1]
                .message
                .text
                .contains("First raised 2026-11-30 09:00 +01:00 (CET)")
        );
    }

    /// A hold that grows within the quiet period is news: "3 actions held" was
    /// the last word for up to six hours while the guard held 300, and a sweep
    /// holding someone new named a run to approve that did not hold them. The
    /// same hold again, or a smaller one, stays quiet.
    #[test]
    fn a_hold_that_grows_alerts_again_within_the_quiet_period() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let plan = |run_id, held| AlertCondition::PlanHeld {
            run_id,
            held,
            reason: "deprovisions: over the limit of 10".into(),
        };
        let decision = |store: &mut Store, condition: &AlertCondition, minute| {
            raise(store, &context, condition, at(8, minute))
                .unwrap()
                .decision
        };
        assert_eq!(decision(&mut store, &plan(7, 11), 0), RaiseDecision::New);
        assert_eq!(decision(&mut store, &plan(8, 11), 30), RaiseDecision::Quiet);
        assert_eq!(decision(&mut store, &plan(9, 300), 59), RaiseDecision::Grew);
        assert_eq!(
            decision(&mut store, &plan(10, 12), 59),
            RaiseDecision::Quiet
        );
        let subjects = subjects(&store);
        assert_eq!(
            subjects,
            [
                "[seatwarden] acme: 11 actions held by the guard in run 7",
                "[seatwarden] acme: 300 actions held by the guard in run 9",
            ]
        );
        let grew = &store.outbox().unwrap()[1];
        assert!(
            grew.message.text.contains(
                "More than the last alert said (11 actions held by the guard in run 7, sent \
                 2026-11-30 09:00 +01:00 (CET))."
            ),
            "{}",
            grew.message.text
        );
        // In the alert's thread.
        assert_eq!(
            grew.message.in_reply_to,
            Some(store.outbox().unwrap()[0].message_id())
        );

        let person = |id: &str| HeldPerson {
            user_name: format!("{id}@example.com"),
            identity_id: id.to_owned(),
            rejected: None,
        };
        let sweep = |run_id, ids: &[&str]| AlertCondition::SweepHeld {
            run_id,
            held: ids.len(),
            reason: "deprovisions: over the limit of 10".into(),
            people: ids.iter().map(|id| person(id)).collect(),
            rejected_before: 0,
        };
        assert_eq!(
            decision(&mut store, &sweep(20, &["u1", "u2"]), 0),
            RaiseDecision::New
        );
        assert_eq!(
            decision(&mut store, &sweep(21, &["u1", "u2"]), 5),
            RaiseDecision::Quiet
        );
        // u1 approved, u3 newly held: as many as before, but u3 is news.
        assert_eq!(
            decision(&mut store, &sweep(22, &["u2", "u3"]), 10),
            RaiseDecision::Grew
        );
        assert_eq!(
            decision(&mut store, &sweep(23, &["u3"]), 15),
            RaiseDecision::Quiet
        );
    }

    /// A userName is a directory value: a line break in it cannot forge lines in
    /// the text part of the mail.
    #[test]
    fn directory_values_cannot_forge_lines_of_an_alert() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let forged = AlertCondition::OverdueDeprovision {
            identity_id: "00u1".into(),
            user_name: "mallory@example.com\n\nResolved - no action needed".into(),
            due_at: at(8, 0),
        };
        raise(&mut store, &context, &forged, at(9, 0)).unwrap();
        let text = store.outbox().unwrap().remove(0).message.text;
        assert!(!text.lines().any(|l| l.starts_with("Resolved")), "{text}");
        assert!(
            text.contains("mallory@example.com\u{fffd}\u{fffd}Resolved"),
            "{text}"
        );
    }

    /// The subject line names the person too: a bidi override in a userName
    /// showed the rest of the subject reversed ("… si eudrevo"), a line break
    /// split it. Both show as U+FFFD, in the alert's and its resolution's subject.
    #[test]
    fn directory_values_cannot_reorder_or_break_an_alert_subject() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let forged = AlertCondition::OverdueDeprovision {
            identity_id: "00u1".into(),
            user_name: "mallory\u{202e}@example.com\r\nall clear".into(),
            due_at: at(8, 0),
        };
        raise(&mut store, &context, &forged, at(9, 0)).unwrap();
        resolve(&mut store, &context, &forged.key(), at(10, 0)).unwrap();
        assert_eq!(
            subjects(&store),
            [
                "[seatwarden] acme: deprovision of mallory\u{fffd}@example.com\u{fffd}\u{fffd}all \
                 clear is overdue",
                "Resolved: [seatwarden] acme: deprovision of mallory\u{fffd}@example.com\
                 \u{fffd}\u{fffd}all clear is overdue",
            ]
        );
    }

    /// A userName as long as the directory lets someone type it made an alert's
    /// subject one header line of thousands of characters (nothing to fold at),
    /// past the 998 a mail line may have: relays refuse such a message, and the
    /// alert failed for good. The subject shows the name's start; the body, the
    /// whole name. The resolution's subject is still the alert's behind
    /// "Resolved: ".
    #[test]
    fn a_very_long_user_name_keeps_the_alert_subject_within_a_mail_line() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let name = format!("{}@example.com", "a".repeat(3000));
        let overdue = AlertCondition::OverdueDeprovision {
            identity_id: "00u1".into(),
            user_name: name.clone(),
            due_at: at(8, 0),
        };
        raise(&mut store, &context, &overdue, at(9, 0)).unwrap();
        resolve(&mut store, &context, &overdue.key(), at(10, 0)).unwrap();
        let outbox = store.outbox().unwrap();
        let cut = format!("{}…", "a".repeat(SUBJECT_NAME_CHARS));
        assert_eq!(
            outbox[0].message.subject,
            format!("[seatwarden] acme: deprovision of {cut} is overdue")
        );
        assert_eq!(
            outbox[1].message.subject,
            format!("Resolved: {}", outbox[0].message.subject)
        );
        assert!(outbox[0].message.text.contains(&name));
        for entry in &outbox {
            let formatted = crate::mail::build_message(entry).unwrap().formatted();
            let text = String::from_utf8(formatted).unwrap();
            let longest = text.split("\r\n").map(str::len).max().unwrap();
            assert!(longest <= 998, "a line of {longest} characters");
        }
    }

    #[test]
    fn a_resolution_is_sent_once_and_a_new_raise_alerts_again() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = AlertContext {
            name: "acme",
            timezone: chrono_tz::UTC,
            mail: &mail,
            admin_command: "seatwarden",
        };
        assert_eq!(
            resolve(&mut store, &context, "circuit_breaker_open", at(7, 0)).unwrap(),
            None,
            "nothing raised, nothing to resolve"
        );
        raise(&mut store, &context, &breaker(), at(8, 0)).unwrap();
        assert_eq!(
            resolve(&mut store, &context, "circuit_breaker_open", at(9, 0)).unwrap(),
            None,
            "held: it may come back"
        );
        assert_eq!(
            resolve(&mut store, &context, "circuit_breaker_open", at(9, 5)).unwrap(),
            None,
            "still held, from 9:00"
        );
        assert_eq!(
            resolve_due(&mut store, &context, at(9, 59)).unwrap().len(),
            0
        );
        assert_eq!(
            resolve_due(&mut store, &context, at(10, 0)).unwrap().len(),
            1
        );
        assert_eq!(
            resolve(&mut store, &context, "circuit_breaker_open", at(10, 5)).unwrap(),
            None,
            "resolved once"
        );
        assert_eq!(
            resolve_due(&mut store, &context, at(10, 6)).unwrap().len(),
            0
        );
        // Raised again right after: a new incident, not quieted by the old one.
        let again = raise(&mut store, &context, &breaker(), at(10, 10)).unwrap();
        assert_eq!(again.decision, RaiseDecision::New);
        assert_eq!(
            subjects(&store),
            [
                "[seatwarden] acme: circuit breaker open: workspace writes stopped",
                "Resolved: [seatwarden] acme: circuit breaker open: workspace writes stopped",
                "[seatwarden] acme: circuit breaker open: workspace writes stopped",
            ]
        );
        let resolution = &store.outbox().unwrap()[1].message.text;
        assert!(
            resolution.contains("Raised 2026-11-30 08:00 UTC, resolved 2026-11-30 10:00 UTC.")
                && resolution.contains(
                    "Clear since 2026-11-30 09:00 UTC: resolved once it stayed clear for 1h"
                ),
            "{resolution}"
        );
    }

    #[test]
    fn keys_separate_people_and_jobs() {
        let overdue = |id: &str| AlertCondition::OverdueDeprovision {
            identity_id: id.into(),
            user_name: format!("{id}@example.com"),
            due_at: at(8, 0),
        };
        assert_ne!(overdue("u1").key(), overdue("u2").key());
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = AlertContext {
            name: "acme",
            timezone: chrono_tz::UTC,
            mail: &mail,
            admin_command: "seatwarden",
        };
        raise(&mut store, &context, &overdue("u1"), at(9, 0)).unwrap();
        let other = raise(&mut store, &context, &overdue("u2"), at(9, 1)).unwrap();
        assert_eq!(other.decision, RaiseDecision::New, "another person alerts");
        let body = &store.outbox().unwrap()[0].message.text;
        assert!(
            body.contains("should have lost access by 2026-11-30 08:00 UTC"),
            "{body}"
        );
    }

    /// Two connections on one database (the mail job and a sweep) decide the same
    /// alert from the same state: the one that writes second finds the state
    /// changed, writes nothing, and decides again.
    #[test]
    fn a_decision_made_from_a_stale_read_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut sweep = Store::open(&path).unwrap();
        let mut mail_job = Store::open(&path).unwrap();
        let mail = settings();
        let context = context(&mail);

        // Both read "not active"; the sweep writes first.
        let stale = decide_raise_write(&mail_job, &context, &breaker(), at(8, 0)).unwrap();
        assert_eq!(stale.outcome, RaiseDecision::New);
        let first = raise(&mut sweep, &context, &breaker(), at(8, 0)).unwrap();
        assert_eq!(first.decision, RaiseDecision::New);
        let written = mail_job
            .record_alerts(
                stale.seen.as_seen(),
                &stale.records,
                &stale.messages,
                at(8, 0),
            )
            .unwrap();
        assert_eq!(written, None, "the stale decision is refused");
        // Deciding again from what is stored now: quiet.
        let again = raise(&mut mail_job, &context, &breaker(), at(8, 0)).unwrap();
        assert_eq!(again.decision, RaiseDecision::Quiet);
        assert_eq!(subjects(&sweep).len(), 1, "one alert");

        // Seen clear: its resolution is held for an hour.
        assert_eq!(
            resolve(&mut sweep, &context, "circuit_breaker_open", at(8, 30)).unwrap(),
            None
        );
        // Both read "active, due"; the sweep resolves first.
        let stale =
            decide_resolve_write(&mail_job, &context, "circuit_breaker_open", at(9, 30)).unwrap();
        assert_eq!(stale.messages.len(), 1);
        assert!(
            resolve(&mut sweep, &context, "circuit_breaker_open", at(9, 30))
                .unwrap()
                .is_some()
        );
        let written = mail_job
            .record_alerts(
                stale.seen.as_seen(),
                &stale.records,
                &stale.messages,
                at(9, 30),
            )
            .unwrap();
        assert_eq!(written, None, "the stale resolution is refused");
        assert_eq!(
            resolve_due(&mut mail_job, &context, at(9, 31))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            subjects(&sweep),
            [
                "[seatwarden] acme: circuit breaker open: workspace writes stopped",
                "Resolved: [seatwarden] acme: circuit breaker open: workspace writes stopped",
            ]
        );
    }

    /// The overdue alerts of a held layoff, decided by two connections from the
    /// same ledger and alert state: one alert, and the second decision, stale, is
    /// refused and made again (nothing new to say).
    #[test]
    fn overdue_alerts_decided_twice_from_one_state_are_queued_once() {
        use crate::sla::{self, Leaver, LossReason};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut sweep = Store::open(&path).unwrap();
        let mut mail_job = Store::open(&path).unwrap();
        let mail = settings();
        let context = context(&mail);
        let leavers: Vec<Leaver> = (0..3)
            .map(|n| Leaver {
                identity_id: format!("00u{n}"),
                account_id: Some(format!("acc-{n}")),
                user_name: format!("leaver{n}@example.com"),
                reason: LossReason::Deleted,
            })
            .collect();
        let changes = sla::observe(&[], &leavers, &[], at(8, 0), chrono::Duration::hours(1));
        sweep.update_ledger(&changes, at(8, 0)).unwrap();

        let stale = decide_overdue_write(&mail_job, &context, at(9, 1)).unwrap();
        assert_eq!(stale.outcome, (true, false));
        let first = overdue_deprovisions(&mut sweep, &context, at(9, 1)).unwrap();
        assert!(first.alert.is_some());
        let written = mail_job
            .record_alerts(
                stale.seen.as_seen(),
                &stale.records,
                &stale.messages,
                at(9, 1),
            )
            .unwrap();
        assert_eq!(written, None, "the stale decision is refused");
        assert_eq!(
            overdue_deprovisions(&mut mail_job, &context, at(9, 1)).unwrap(),
            OverdueOutcome::default()
        );
        assert_eq!(
            subjects(&sweep),
            ["[seatwarden] acme: 3 deprovisions are overdue"]
        );

        // Verified; both decide to resolve; once.
        for entry in sweep.open_deprovisions().unwrap() {
            sweep.deprovision_verified(entry.id, at(9, 30)).unwrap();
        }
        let stale = decide_overdue_write(&mail_job, &context, at(9, 31)).unwrap();
        assert_eq!(stale.outcome, (false, true));
        assert!(
            overdue_deprovisions(&mut sweep, &context, at(9, 31))
                .unwrap()
                .resolution
                .is_some()
        );
        let written = mail_job
            .record_alerts(
                stale.seen.as_seen(),
                &stale.records,
                &stale.messages,
                at(9, 31),
            )
            .unwrap();
        assert_eq!(written, None, "the stale resolution is refused");
        assert_eq!(
            subjects(&sweep),
            [
                "[seatwarden] acme: 3 deprovisions are overdue",
                "Resolved: [seatwarden] acme: 3 deprovisions are overdue",
            ]
        );
    }

    #[test]
    fn decisions_at_the_quiet_period_boundary() {
        let record = AlertRecord {
            key: "k".into(),
            condition: "{}".into(),
            state: AlertRecordState::Active,
            first_raised_at: at(8, 0),
            last_sent_at: at(8, 0),
            resolved_at: None,
            suppressed: 0,
            thread_root: None,
            cleared_at: None,
            flaps: 0,
        };
        let quiet = Duration::from_secs(3600);
        let none = Duration::ZERO;
        assert_eq!(
            decide_raise(None, at(8, 0), quiet, none),
            RaiseDecision::New
        );
        assert_eq!(
            decide_raise(Some(&record), at(8, 59), quiet, none),
            RaiseDecision::Quiet
        );
        assert_eq!(
            decide_raise(Some(&record), at(9, 0), quiet, none),
            RaiseDecision::Reminder
        );
        let resolved = AlertRecord {
            state: AlertRecordState::Resolved,
            ..record.clone()
        };
        assert_eq!(
            decide_raise(Some(&resolved), at(8, 1), quiet, none),
            RaiseDecision::New
        );
        assert_eq!(
            decide_resolve(Some(&record), at(8, 1), none),
            ResolveDecision::Send
        );
        assert_eq!(
            decide_resolve(Some(&resolved), at(8, 1), none),
            ResolveDecision::NotActive
        );
        assert_eq!(
            decide_resolve(None, at(8, 1), none),
            ResolveDecision::NotActive
        );
    }

    /// The resolution hold, time passed in: first seen clear, the resolution
    /// waits; raised again within the hold, the alert goes on (quiet, or a
    /// reminder on its own schedule); clear for the whole hold (to the
    /// minute), the resolution is due, and a raise after that is a new alert.
    #[test]
    fn a_resolution_is_held_until_the_condition_stays_clear() {
        let record = AlertRecord {
            key: "circuit_breaker_open".into(),
            condition: "{}".into(),
            state: AlertRecordState::Active,
            first_raised_at: at(8, 0),
            last_sent_at: at(8, 0),
            resolved_at: None,
            suppressed: 0,
            thread_root: None,
            cleared_at: None,
            flaps: 0,
        };
        let quiet = Duration::from_secs(6 * 3600);
        let hold = Duration::from_secs(3600);
        assert_eq!(
            decide_resolve(Some(&record), at(9, 0), hold),
            ResolveDecision::Hold
        );
        let clearing = AlertRecord {
            cleared_at: Some(at(9, 0)),
            ..record.clone()
        };
        assert_eq!(
            decide_resolve(Some(&clearing), at(9, 59), hold),
            ResolveDecision::Holding
        );
        assert_eq!(
            decide_resolve(Some(&clearing), at(10, 0), hold),
            ResolveDecision::Send
        );
        assert_eq!(
            decide_raise(Some(&clearing), at(9, 59), quiet, hold),
            RaiseDecision::Quiet,
            "back within the hold: the same alert"
        );
        assert_eq!(
            decide_raise(
                Some(&clearing),
                at(14, 0),
                Duration::from_secs(3600),
                Duration::from_secs(6 * 3600)
            ),
            RaiseDecision::Reminder,
            "its reminders keep their schedule"
        );
        assert_eq!(
            decide_raise(Some(&clearing), at(10, 0), quiet, hold),
            RaiseDecision::New,
            "clear for the whole hold: over"
        );
        // No hold: resolved at once, whatever was recorded.
        assert_eq!(
            decide_resolve(Some(&clearing), at(9, 1), Duration::ZERO),
            ResolveDecision::Send
        );
    }

    /// An alert sent, or seen clear, by a clock that has since been stepped back
    /// more than an hour (NTP correcting a clock that ran ahead, a VM booted with
    /// a wrong clock) is not silent until the clock catches up: its reminder is
    /// due and its resolution hold over, as the circuit breaker takes an opening
    /// stamped that far ahead. A step of less than that is waited out.
    #[test]
    fn a_clock_stepped_back_does_not_silence_an_alert_until_it_catches_up() {
        let sent_ahead = |hours: i64| AlertRecord {
            key: "circuit_breaker_open".into(),
            condition: "{}".into(),
            state: AlertRecordState::Active,
            first_raised_at: at(8, 0) + chrono::Duration::hours(hours),
            last_sent_at: at(8, 0) + chrono::Duration::hours(hours),
            resolved_at: None,
            suppressed: 0,
            thread_root: None,
            cleared_at: None,
            flaps: 0,
        };
        let quiet = Duration::from_secs(6 * 3600);
        let hold = Duration::from_secs(3600);
        // Sent "in 2027": a year ahead of the clock now.
        let year_ahead = sent_ahead(365 * 24);
        assert_eq!(
            decide_raise(Some(&year_ahead), at(8, 0), quiet, hold),
            RaiseDecision::Reminder
        );
        // Half an hour ahead: the quiet period still holds.
        assert_eq!(
            decide_raise(Some(&sent_ahead(0)), at(7, 30), quiet, hold),
            RaiseDecision::Quiet
        );
        let cleared_ahead = AlertRecord {
            cleared_at: Some(at(8, 0) + chrono::Duration::days(365)),
            ..sent_ahead(-1)
        };
        assert_eq!(
            decide_resolve(Some(&cleared_ahead), at(8, 0), hold),
            ResolveDecision::Send
        );
        assert_eq!(
            decide_raise(Some(&cleared_ahead), at(8, 0), quiet, hold),
            RaiseDecision::New
        );
        let cleared_just_ahead = AlertRecord {
            cleared_at: Some(at(8, 30)),
            ..sent_ahead(-1)
        };
        assert_eq!(
            decide_resolve(Some(&cleared_just_ahead), at(8, 0), hold),
            ResolveDecision::Holding
        );
    }

    /// Only the conditions a flaky system makes come and go are damped: a
    /// hold that waits for a human and an overdue deprovision resolve at once
    /// (and what comes back after is new, alerted at once).
    #[test]
    fn only_conditions_that_come_and_go_hold_their_resolution() {
        let hour = Duration::from_secs(3600);
        for key in [
            "directory_snapshot_rejected",
            "directory_incomplete",
            "circuit_breaker_open",
            "repeated_failures:sweep",
        ] {
            assert_eq!(resolution_hold(key, hour), hour, "{key}");
        }
        for key in ["plan_held", "sweep_held", "overdue_deprovision:00u1"] {
            assert_eq!(resolution_hold(key, hour), Duration::ZERO, "{key}");
        }
    }

    /// A resolution's subject is its alert's behind "Resolved: ", for every
    /// condition, and the alert as it was sent: a raise inside the quiet period
    /// (a count that grew, a newer run) changes nothing the resolution says.
    #[test]
    fn a_resolution_threads_with_the_alert_it_resolves() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let failing = |failures| AlertCondition::RepeatedFailures {
            job: "sweep".into(),
            failures,
            last_error: "HTTP 503".into(),
        };
        let conditions = [
            failing(3),
            AlertCondition::PlanHeld {
                run_id: 7,
                held: 2,
                reason: "threshold".into(),
            },
            AlertCondition::SweepHeld {
                run_id: 8,
                held: 1,
                reason: "threshold".into(),
                people: Vec::new(),
                rejected_before: 0,
            },
            AlertCondition::DirectorySnapshotRejected {
                reason: "empty".into(),
            },
            breaker(),
        ];
        for condition in &conditions {
            raise(&mut store, &context, condition, at(8, 0)).unwrap();
        }
        raise(&mut store, &context, &failing(4), at(8, 5)).unwrap();
        for condition in &conditions {
            resolve(&mut store, &context, &condition.key(), at(9, 0)).unwrap();
        }
        // Those whose resolution is held go out an hour on.
        resolve_due(&mut store, &context, at(10, 0)).unwrap();
        let entries = store.outbox().unwrap();
        let (alerts, resolutions): (Vec<_>, Vec<_>) = entries
            .iter()
            .partition(|e| e.message.kind == OutboxKind::Alert);
        assert_eq!(alerts.len(), conditions.len(), "the later raise was quiet");
        assert_eq!(resolutions.len(), conditions.len());
        for alert in &alerts {
            let resolution = resolutions
                .iter()
                .find(|r| r.message.in_reply_to == Some(alert.message_id()))
                .unwrap();
            assert_eq!(
                resolution.message.subject,
                format!("Resolved: {}", alert.message.subject)
            );
        }
    }

    /// An overdue deprovision a run holds for a human names that run and the
    /// commands that decide on it.
    #[test]
    fn an_overdue_alert_names_the_run_that_holds_it_and_the_command() {
        let entry = |n: u32| LedgerEntry {
            id: i64::from(n),
            identity_id: format!("00u{n}"),
            account_id: Some(format!("a{n}")),
            user_name: format!("leaver{n}@example.com"),
            reason: crate::sla::LossReason::Deleted,
            detected_at: at(8, 0),
            due_at: at(9, 0),
            enforced_at: None,
            verified_at: None,
            closed_at: None,
            escalated_at: None,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            held: Some("deprovision threshold".into()),
            returned_at: None,
            excepted_until: None,
        };
        let mail = settings();
        let context = AlertContext {
            admin_command: "sudo seatwarden-admin",
            ..context(&mail)
        };
        let waiting = GuardHolds {
            waiting: [("00u1".to_owned(), 7), ("00u2".to_owned(), 7)]
                .into_iter()
                .collect(),
            ..GuardHolds::default()
        };
        let one = overdue_lines(&[&entry(1)], &context, &waiting);
        assert!(
            one.contains(
                &"Run 7 holds it for a human: approve with `sudo seatwarden-admin approve 7`, or \
                  reject with `sudo seatwarden-admin reject 7`."
                    .to_owned()
            ),
            "{one:?}"
        );
        assert!(
            one.iter()
                .any(|l| l.contains("`sudo seatwarden-admin explain 00u1`"))
        );
        let several = overdue_lines(&[&entry(1), &entry(2), &entry(3)], &context, &waiting);
        assert!(several[1].ends_with("(run 7)"), "{several:?}");
        assert!(!several[3].contains("(run"), "{several:?}");
        assert!(
            several.contains(
                &"Run 7 holds 2 of them for a human: approve with `sudo seatwarden-admin approve \
                  7`, or reject with `sudo seatwarden-admin reject 7`."
                    .to_owned()
            ),
            "{several:?}"
        );
        assert!(
            several
                .last()
                .unwrap()
                .contains("`sudo seatwarden-admin explain 00u1` tells one person's whole story"),
            "{several:?}"
        );
    }

    /// One overdue mail names several people, each with an alert of their own: the
    /// reminder and the resolution reply to the mail that first named them, and
    /// someone newly overdue beside them is threaded from the reminder that first
    /// named them.
    #[test]
    fn overdue_reminders_and_resolutions_reply_to_the_first_mail_naming_them() {
        use crate::sla::{self, Leaver, LossReason};

        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let leaver = |n: u32| Leaver {
            identity_id: format!("00u{n}"),
            account_id: Some(format!("acc-{n}")),
            user_name: format!("leaver{n}@example.com"),
            reason: LossReason::Deleted,
        };
        let due_in = chrono::Duration::hours(1);
        let changes = sla::observe(&[], &[leaver(0), leaver(1)], &[], at(8, 0), due_in);
        store.update_ledger(&changes, at(8, 0)).unwrap();
        let first = overdue_deprovisions(&mut store, &context, at(9, 1)).unwrap();
        assert!(first.alert.is_some());
        store
            .mark_message_sent(first.alert.unwrap(), at(9, 2))
            .unwrap();

        let changes = sla::observe(&[], &[leaver(2)], &[], at(10, 0), due_in);
        store.update_ledger(&changes, at(10, 0)).unwrap();
        let reminder = overdue_deprovisions(&mut store, &context, at(15, 2)).unwrap();
        assert!(reminder.alert.is_some());
        for entry in store.open_deprovisions().unwrap() {
            store.deprovision_verified(entry.id, at(15, 30)).unwrap();
        }
        let resolved = overdue_deprovisions(&mut store, &context, at(15, 31)).unwrap();
        assert!(resolved.resolution.is_some());

        let outbox = store.outbox().unwrap();
        let subjects: Vec<&str> = outbox.iter().map(|e| e.message.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "[seatwarden] acme: 2 deprovisions are overdue",
                "[seatwarden] acme: deprovision of leaver2@example.com is overdue",
                "Resolved: [seatwarden] acme: 3 deprovisions are overdue",
            ]
        );
        let root = outbox[0].message_id();
        assert_eq!(outbox[0].message.in_reply_to, None);
        assert_eq!(
            outbox[1].message.in_reply_to.as_deref(),
            Some(root.as_str())
        );
        assert_eq!(
            outbox[2].message.in_reply_to.as_deref(),
            Some(root.as_str())
        );
        let threads: Vec<Option<String>> = ["00u0", "00u1", "00u2"]
            .iter()
            .map(|id| {
                store
                    .alert(&format!("{OVERDUE_PREFIX}{id}"))
                    .unwrap()
                    .unwrap()
                    .thread_root
            })
            .collect();
        assert_eq!(
            threads,
            [Some(root.clone()), Some(root), Some(outbox[1].message_id())]
        );
    }

    /// An overdue deprovision that an exception then puts off is no longer
    /// overdue: its alert is resolved, and one is raised afresh if it is
    /// overdue after the exception's end.
    #[test]
    fn an_overdue_alert_is_resolved_when_an_exception_puts_the_deprovision_off() {
        use crate::sla::{self, Leaver, LossReason};

        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let leaver = Leaver {
            identity_id: "00u0".to_owned(),
            account_id: Some("acc-0".to_owned()),
            user_name: "dana@example.com".to_owned(),
            reason: LossReason::Suspended,
        };
        let changes = sla::observe(&[], &[leaver], &[], at(8, 0), chrono::Duration::hours(1));
        store.update_ledger(&changes, at(8, 0)).unwrap();
        let raised = overdue_deprovisions(&mut store, &context, at(9, 1)).unwrap();
        assert!(raised.alert.is_some());

        let entry = store.open_deprovisions().unwrap().remove(0);
        store
            .deprovision_excepted(
                entry.id,
                "kept by an exception (safety.exceptions) until …: handover",
                at(9, 20),
                at(12, 0),
                at(13, 0),
            )
            .unwrap();
        let put_off = overdue_deprovisions(&mut store, &context, at(9, 10)).unwrap();
        assert!(put_off.alert.is_none() && put_off.resolution.is_some());
        let quiet = overdue_deprovisions(&mut store, &context, at(12, 30)).unwrap();
        assert!(quiet.alert.is_none() && quiet.resolution.is_none());
        let again = overdue_deprovisions(&mut store, &context, at(13, 1)).unwrap();
        assert!(again.alert.is_some(), "overdue after the exception's end");
    }

    /// The resolution of an overdue alert an exception ended does not read as a
    /// deactivation: it says the access is kept, by an exception, until when, and
    /// that an alert comes back if it is overdue after that. Named with another
    /// that was deactivated, each says which it was.
    #[test]
    fn a_resolution_by_an_exception_says_the_access_is_kept_until_its_end() {
        use crate::sla::{self, Leaver, LossReason};

        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let leaver = |n: u32| Leaver {
            identity_id: format!("00u{n}"),
            account_id: Some(format!("acc-{n}")),
            user_name: format!("user{n}@example.com"),
            reason: LossReason::Suspended,
        };
        let changes = sla::observe(&[], &[leaver(0)], &[], at(8, 0), chrono::Duration::hours(1));
        store.update_ledger(&changes, at(8, 0)).unwrap();
        assert!(
            overdue_deprovisions(&mut store, &context, at(9, 1))
                .unwrap()
                .alert
                .is_some()
        );
        let entry = store.open_deprovisions().unwrap().remove(0);
        store
            .deprovision_excepted(
                entry.id,
                "kept by an exception (safety.exceptions)",
                at(9, 20),
                at(12, 0),
                at(13, 0),
            )
            .unwrap();
        let one = overdue_deprovisions(&mut store, &context, at(9, 10)).unwrap();
        assert!(one.resolution.is_some());
        let text = store.outbox().unwrap().last().unwrap().message.text.clone();
        assert!(
            text.contains("kept by an exception until 2026-11-30 13:00"),
            "{text}"
        );
        assert!(text.contains("not deactivated"), "{text}");

        // Two at once: one deactivated, one put off.
        let changes = sla::observe(
            &[],
            &[leaver(1), leaver(2)],
            &[],
            at(10, 0),
            chrono::Duration::hours(1),
        );
        store.update_ledger(&changes, at(10, 0)).unwrap();
        assert!(
            overdue_deprovisions(&mut store, &context, at(11, 1))
                .unwrap()
                .alert
                .is_some()
        );
        for entry in store.open_deprovisions().unwrap() {
            match entry.identity_id.as_str() {
                "00u1" => store
                    .deprovision_excepted(entry.id, "kept", at(11, 30), at(15, 0), at(16, 0))
                    .unwrap(),
                "00u2" => store.deprovision_verified(entry.id, at(11, 20)).unwrap(),
                _ => {}
            }
        }
        let two = overdue_deprovisions(&mut store, &context, at(11, 10)).unwrap();
        assert!(two.resolution.is_some());
        let text = store.outbox().unwrap().last().unwrap().message.text.clone();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.contains(name))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_owned()
        };
        assert!(
            line("user1@example.com").contains("kept by an exception until 2026-11-30 16:00"),
            "{text}"
        );
        assert!(!line("user2@example.com").contains("exception"), "{text}");
    }

    /// A relay down for a day: the alert waits in the outbox, and a reminder
    /// per quiet period queued behind it (its thread goes out in order) went
    /// out together with it once the relay was back, the same news several
    /// times. None is queued while the alert's thread has a message waiting;
    /// once it went, the next raise reminds.
    #[test]
    fn no_reminder_queues_behind_an_alert_still_waiting_to_go_out() {
        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let first = raise(&mut store, &context, &breaker(), at(8, 0)).unwrap();
        for hour in [14, 20] {
            let again = raise(&mut store, &context, &breaker(), at(hour, 1)).unwrap();
            assert_eq!(again.decision, RaiseDecision::Quiet, "at {hour}:01");
        }
        assert_eq!(store.outbox().unwrap().len(), 1);
        store
            .mark_message_sent(first.message.unwrap(), at(21, 0))
            .unwrap();
        let reminder = raise(&mut store, &context, &breaker(), at(21, 1)).unwrap();
        assert_eq!(reminder.decision, RaiseDecision::Reminder);
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 2);
        assert_eq!(
            outbox[1].message.in_reply_to.as_deref(),
            Some(outbox[0].message_id().as_str())
        );
    }

    /// The same for overdue deprovisions: no "still: " while the alert naming
    /// them waits; someone newly overdue still alerts at once.
    #[test]
    fn no_overdue_reminder_queues_behind_the_alert_still_waiting_to_go_out() {
        use crate::sla::{self, Leaver, LossReason};

        let mut store = Store::open_in_memory().unwrap();
        let mail = settings();
        let context = context(&mail);
        let leaver = |n: u32| Leaver {
            identity_id: format!("00u{n}"),
            account_id: Some(format!("acc-{n}")),
            user_name: format!("leaver{n}@example.com"),
            reason: LossReason::Deleted,
        };
        let due_in = chrono::Duration::hours(1);
        let changes = sla::observe(&[], &[leaver(0)], &[], at(8, 0), due_in);
        store.update_ledger(&changes, at(8, 0)).unwrap();
        let first = overdue_deprovisions(&mut store, &context, at(9, 1)).unwrap();
        assert!(first.alert.is_some());
        let quiet = overdue_deprovisions(&mut store, &context, at(15, 2)).unwrap();
        assert_eq!(quiet, OverdueOutcome::default());

        let changes = sla::observe(&[], &[leaver(1)], &[], at(15, 0), due_in);
        store.update_ledger(&changes, at(15, 0)).unwrap();
        let newcomer = overdue_deprovisions(&mut store, &context, at(16, 1)).unwrap();
        assert!(newcomer.alert.is_some());
        assert_eq!(
            store.outbox().unwrap()[1].message.subject,
            "[seatwarden] acme: deprovision of leaver1@example.com is overdue"
        );

        store
            .mark_message_sent(first.alert.unwrap(), at(16, 2))
            .unwrap();
        let reminder = overdue_deprovisions(&mut store, &context, at(16, 3)).unwrap();
        assert!(reminder.alert.is_some());
        assert_eq!(
            store.outbox().unwrap()[2].message.subject,
            "[seatwarden] acme: still: 2 deprovisions are overdue"
        );
    }
}
