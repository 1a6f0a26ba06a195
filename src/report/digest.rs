//! The scheduled digest: where the workspace stands and what needs a human, over a
//! period, from the reports stored in that period and the one before it, and the
//! decisions people made in it (the audit trail).
//!
//! The period before is what the previous digest covered ([`Span`]; the daemon
//! records each digest's span in `daemon_state`), so the trend compares with what
//! that digest said even when the periods differ in length (a DST change, a
//! daemon that was down, a new schedule); without a record (a digest by hand, the
//! first one) it is the period of the same length just before.
//!
//! [`Digest::build`] is pure (reports, the deprovisioning ledger and `now` are
//! passed in); [`collect`] reads the reports from the store. The digest renders as
//! text, Markdown, HTML and JSON; times are shown in the configured time zone. The
//! JSON gives each shown time also as an RFC 3339 UTC instant beside it
//! (`period_start` and `period_start_at`, `due` and `due_at`, …), for scripts.
//!
//! "Oldest unresolved drift" looks back over the two periods loaded: an item present
//! in every report since the first one loaded is reported as seen "since at least"
//! that report.
//!
//! Runs without a report (the sweep's; reconciles stopped, failed or cut off) are
//! counted from their journal as `status` counts them ([`crate::apply::journal_outcomes`]):
//! rows a recovery found the workspace never took are "cut off", not failed; a
//! reconcile or sweep recorded as running while nobody holds the writer lock was
//! killed, and is a failed run of the current period until the next writer closes it.
//! A stored report that cannot be read (another version's, or damaged) is named,
//! its run counted from its journal; it does not stop the digest.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::templated::{RenderError, accent, drift_groups, render};
use super::{Outcome, Report, State, plural, residual_drift};
use crate::model::{DriftItem, DriftKind};
use crate::policy::fold_user_name;
use crate::store::{ActionState, RunKind, RunStatus, Store, StoreError};

/// One entry of the deprovisioning ledger, as the digest shows it. The daemon fills
/// these from its ledger (issue 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestDeprovision {
    pub user_name: String,
    pub identity_id: String,
    /// Why access must go, e.g. "deprovisioned in the directory".
    pub reason: String,
    pub detected_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// What holds it, while something does.
    pub held: Option<DeprovisionHold>,
    /// The run whose held action it is, when the guard holds it: what
    /// `seatwarden approve` (or `reject`) needs, since it takes no `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_run: Option<crate::store::RunId>,
    /// When the guard holds it and no run waits for its approval any more: what
    /// became of the newest hold (rejected, or refused by `approve`'s re-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_decided: Option<HoldDecided>,
    /// Why it is still open while nothing holds it, from the ledger (the
    /// sweep's and the retry job's runs store no report): what the attempts to
    /// deactivate it last met, e.g. `2 attempts failed: HTTP 503 …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_open: Option<String>,
}

/// What holds an open deprovision: each waits for a different step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeprovisionHold {
    /// A safety rule; waits for `seatwarden approve`.
    Guard,
    /// Several accounts may be the person's; waits for `seatwarden link`.
    DisputedMatch,
    /// The linked account's externalId names someone else seatwarden knows;
    /// waits for `seatwarden link … --replace` or a corrected externalId.
    ContradictedLink,
    /// The account is protected (`safety.protected`): seatwarden never touches
    /// it, so a human deactivates it or takes it out of the list.
    Protected,
    /// An exception in force keeps the account (`safety.exceptions`): put off
    /// to the exception's end, when seatwarden deactivates it. Waits for no one.
    Excepted,
}

/// What became of a guard's hold on a deprovision that no run waits to have
/// approved any more ([`crate::store::Store::decided_holds`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum HoldDecided {
    /// `seatwarden reject RUN`: that run never applies it; the sweep or the next
    /// reconcile plans it again (held again while the guard still holds it).
    Rejected {
        run: crate::store::RunId,
        /// Who rejected it, as the audit names them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// When.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// `seatwarden approve RUN` re-checked it and refused it, `why`: it stays
    /// held, and approving again would re-check the same; the next reconcile
    /// plans from the directory and workspace as they are then.
    Refused {
        run: crate::store::RunId,
        why: String,
        /// Whose approval refused it (from the audit trail, when it has the row).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// When.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
}

impl From<crate::store::DecidedHold> for HoldDecided {
    fn from(hold: crate::store::DecidedHold) -> HoldDecided {
        let crate::store::DecidedHold { run, by, at, .. } = hold;
        match hold.refused {
            Some(why) => HoldDecided::Refused { run, why, by, at },
            None => HoldDecided::Rejected { run, by, at },
        }
    }
}

impl HoldDecided {
    /// ` by alice at 2026-12-05 09:30 +01:00 (CET)`, as much of it as was
    /// recorded, on `tz`'s clock: who decided and when, as the overdue alert says.
    fn by_at(&self, tz: chrono_tz::Tz) -> String {
        let (HoldDecided::Rejected { by, at, .. } | HoldDecided::Refused { by, at, .. }) = self;
        let mut out = String::new();
        if let Some(by) = by {
            out.push_str(" by ");
            out.push_str(&super::printable_field(by));
        }
        if let Some(at) = at {
            out.push_str(" at ");
            out.push_str(&super::local_minute(*at, tz));
        }
        out
    }
}

impl DeprovisionHold {
    /// What holds an open deprovision, from the reason its ledger entry keeps
    /// (`LedgerEntry::held`). A hold after an earlier rejection is judged by the
    /// reason it is held again for.
    pub fn of(held: &str) -> DeprovisionHold {
        let held = held
            .split_once(crate::sweep::HELD_AGAIN)
            .map_or(held, |(_, now)| now);
        if held.starts_with(crate::sweep::DISPUTED_HOLD) {
            DeprovisionHold::DisputedMatch
        } else if held.starts_with(crate::sweep::CONTRADICTED_LINK_HOLD) {
            DeprovisionHold::ContradictedLink
        } else if held.starts_with(crate::sweep::PROTECTED_HOLD) {
            DeprovisionHold::Protected
        } else if held.starts_with(crate::sweep::EXCEPTED_HOLD) {
            DeprovisionHold::Excepted
        } else {
            DeprovisionHold::Guard
        }
    }

    /// What a reader is told holds it and what to run, e.g. "held: disputed match,
    /// waiting for `seatwarden link u2 ACCOUNT`". `run` is the run holding a
    /// guard's hold ([`crate::store::Store::held_for_approval`]): `approve` and
    /// `reject` take a run id, and the newest run may be a `plan` they refuse.
    /// Without one, `decided` is what became of the newest hold: rejected, or
    /// refused by an approval, it waits for nobody's approval.
    pub fn waiting_for(
        self,
        admin_command: &str,
        identity_id: &str,
        run: Option<crate::store::RunId>,
        decided: Option<&HoldDecided>,
        tz: chrono_tz::Tz,
    ) -> String {
        match self {
            DeprovisionHold::Guard => match (run, decided) {
                (Some(run), _) => format!(
                    "held by the guard in run {run}, waiting for `{admin_command} approve {run}` \
                     or `{admin_command} reject {run}`"
                ),
                (None, Some(decided @ HoldDecided::Rejected { run, .. })) => format!(
                    "held by the guard; its hold in run {run} was rejected{}, so nothing waits \
                     for an approval: the sweep or the next reconcile plans it again (held \
                     again, in a new run, while the guard still holds it)",
                    decided.by_at(tz)
                ),
                (None, Some(decided @ HoldDecided::Refused { run, why, .. })) => format!(
                    "held by the guard in run {run}; `{admin_command} approve {run}` refused it{} \
                     ({why}), so nothing waits for an approval: the next reconcile decides",
                    decided.by_at(tz)
                ),
                // No held action names the person (its run was pruned, say): the
                // next writing run holds it again under a new id.
                (None, None) => format!(
                    "held by the guard, waiting for `{admin_command} approve RUN` of the run \
                     holding it"
                ),
            },
            DeprovisionHold::DisputedMatch => format!(
                "held: disputed match, waiting for `{}`",
                crate::model::admin_command_line(
                    admin_command,
                    "link",
                    &[identity_id, "ACCOUNT"],
                    &[]
                )
            ),
            DeprovisionHold::ContradictedLink => format!(
                "held: the linked account's externalId names someone else, waiting for \
                 `{admin_command} link PERSON ACCOUNT --replace` or a corrected externalId"
            ),
            DeprovisionHold::Protected => "held: protected account (safety.protected), never \
                 touched by seatwarden; deactivate it by hand, or take it out of \
                 `safety.protected`"
                .to_owned(),
            DeprovisionHold::Excepted => "put off: an exception in safety.exceptions keeps the \
                 account; seatwarden deactivates it when the exception ends"
                .to_owned(),
        }
    }
}

/// A deprovision verified in the period (by the sweep, a reconcile or an
/// approval), from the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestVerified {
    pub user_name: String,
    pub reason: String,
    pub detected_at: DateTime<Utc>,
    pub verified_at: DateTime<Utc>,
    /// The end of an exception that put it off ([`crate::sla::LedgerEntry::sla_start`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excepted_until: Option<DateTime<Utc>>,
}

/// What runs without a report wrote in a period, from their journal: the
/// deprovisioning sweep's (its runs store none), or a reconcile's that did not
/// finish (stopped, failed, cut off). A reconcile's or an approval's actions are
/// in its report when it has one and are then never counted here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepActions {
    /// Applied (written and verified), by operation (`deactivate`, …).
    pub applied_by_kind: BTreeMap<String, usize>,
    /// Writes that were sent and failed; not the ones kept back unsent.
    pub failed: usize,
    /// Writes kept back unsent (journaled failed, "not sent": a stop, the circuit
    /// breaker, the workspace found down or its token refused; or still planned
    /// when the run was over): no failure of theirs; the next run plans them again.
    #[serde(default)]
    pub not_sent: usize,
    /// `not_sent` by why, in a few words ([`crate::apply::KeptBack::reason`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_sent_by_reason: BTreeMap<String, usize>,
    /// Writes in flight when their process was killed that a recovery found the
    /// workspace never took ([`crate::apply::NOT_REACHED_INTERRUPTED`]): no write
    /// the workspace refused; the next run plans them again. `status` and
    /// `report --run` count them so ([`crate::apply::journal_outcomes`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut_off: usize,
}

impl SweepActions {
    pub fn applied(&self) -> usize {
        self.applied_by_kind.values().sum()
    }

    /// Adds one run's journal; `over` once the run will send nothing more (its
    /// rows still planned were kept back then, as its report would tell them).
    pub fn add(&mut self, journal: &[crate::store::JournalEntry], over: bool) {
        for row in journal {
            let kept_back = match row.state {
                ActionState::Applied => {
                    *self
                        .applied_by_kind
                        .entry(row.action.kind.name().to_owned())
                        .or_default() += 1;
                    None
                }
                ActionState::Failed => {
                    match crate::apply::KeptBack::of(row.last_error.as_deref()) {
                        Some(why) => Some(why.reason()),
                        None if cut_off(row.last_error.as_deref()) => {
                            self.cut_off += 1;
                            None
                        }
                        None => {
                            self.failed += 1;
                            None
                        }
                    }
                }
                ActionState::Planned if over => Some(super::UNREACHED_REASON),
                ActionState::Planned | ActionState::InFlight | ActionState::Held => None,
            };
            if let Some(why) = kept_back {
                self.not_sent += 1;
                *self.not_sent_by_reason.entry(why.to_owned()).or_default() += 1;
            }
        }
    }
}

/// Whether a row journaled failed with `last_error` was cut off: in flight when
/// its process was killed, and found by a recovery not to have reached the
/// workspace ([`crate::apply::journal_outcomes`] counts these the same way).
fn cut_off(last_error: Option<&str>) -> bool {
    last_error.is_some_and(|e| e.starts_with(crate::apply::NOT_REACHED_INTERRUPTED))
}

/// A span of time a digest covers: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Span {
    /// What the previous digest covered, when `covered` records it (`start` before
    /// `end`); else the span of this period's length just before it, the best
    /// guess for a first digest (or one whose predecessor recorded only its end).
    pub fn previous(covered: Option<Span>, now: DateTime<Utc>, period: chrono::Duration) -> Span {
        let start = now - period;
        covered
            .filter(|span| span.start < span.end)
            .unwrap_or(Span {
                start: start - period,
                end: start,
            })
    }
}

/// What the digest is built from.
#[derive(Debug, Clone)]
pub struct DigestInput<'a> {
    /// The organisation or workspace name for the subject and title.
    pub name: &'a str,
    pub timezone: Tz,
    /// The period is `[now - period, now)`.
    pub now: DateTime<Utc>,
    pub period: Duration,
    /// What the previous digest covered, for the trend: the period compared with,
    /// as that digest reported it (after a DST change, a stop or a new schedule it
    /// is not this period's length). `None`: the period of this one's length just
    /// before it ([`Span::previous`]).
    pub previous_span: Option<Span>,
    /// Reports of runs finished in the period, oldest first.
    pub reports: &'a [Report],
    /// Reports of the previous period, oldest first.
    pub previous: &'a [Report],
    /// The newest report finished before the previous period ended, when that
    /// period stored none: the drift the previous digest showed at its end.
    pub previous_latest: Option<&'a Report>,
    /// The newest stored report, whatever its period: the current drift and the
    /// state come from it (a quiet period changes nothing in the workspace's
    /// drift). `None` when no run ever stored one, unless `reports` or `previous`
    /// hold a newer one, which is taken instead.
    pub latest: Option<&'a Report>,
    /// Runs in the period that failed before producing a report, those cut off
    /// (killed) included, recorded as running still or closed as failed since.
    pub failed_runs: usize,
    /// Those runs, to name with their error (may be fewer than `failed_runs`).
    pub failed: &'a [crate::store::RunRecord],
    pub failed_runs_previous: usize,
    pub deprovisions: &'a [DigestDeprovision],
    /// Deprovisions verified in the period: most leavers are deactivated by the
    /// sweep, whose runs leave no report.
    pub verified: &'a [DigestVerified],
    /// What the sweep's runs wrote in the period, and in the previous one.
    pub sweeps: &'a SweepActions,
    pub sweeps_previous: &'a SweepActions,
    /// What reconciles that stored no report (stopped, failed, cut off) wrote
    /// in the period: written all the same.
    pub unreported: &'a SweepActions,
    /// Reconciles in the period that SIGTERM stopped (no report, not failed).
    pub stopped_runs: usize,
    /// [`DigestInput::unreported`] and [`DigestInput::stopped_runs`] of the
    /// previous period, for the trend: it counts that period as its own digest did.
    pub unreported_previous: &'a SweepActions,
    pub stopped_runs_previous: usize,
    /// How many of the previous period's runs stored a report that cannot be
    /// read: runs of that period all the same, as its digest counted them.
    pub unreadable_previous: usize,
    /// Runs whose stored report could not be read (another version's, or
    /// damaged), with why: counted from their journal, and named.
    pub unreadable: &'a [(i64, String)],
    /// How many of [`DigestInput::unreadable`] ran before the period (the
    /// newest stored report's run, named because its drift is missing): named,
    /// not counted among the period's runs.
    pub unreadable_earlier: usize,
    /// The audit trail's rows of the period, oldest first: the decisions people
    /// made through seatwarden.
    pub decisions: &'a [crate::store::AuditRow],
    /// How people run seatwarden's commands here (`report.admin_command`).
    pub admin_command: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedLine {
    pub user_name: String,
    pub reason: String,
    pub detected: String,
    /// `detected` as an RFC 3339 UTC instant, for scripts (to the second: the
    /// display string shows the minute).
    pub detected_at: DateTime<Utc>,
    pub verified: String,
    pub verified_at: DateTime<Utc>,
    /// From detection to verification, e.g. `4 min`.
    pub took: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodSummary {
    pub runs: usize,
    /// Runs that could not complete (no report), those cut off (killed) included.
    pub failed_runs: usize,
    /// Applied actions by operation (`deactivate`, `create_account`, …), the
    /// sweep's included.
    pub actions_by_kind: BTreeMap<String, usize>,
    /// Every applied action: runs' and the deprovisioning sweep's.
    pub actions_applied: usize,
    /// Every failed action, the sweep's included.
    pub actions_failed: usize,
    /// Actions kept back unsent (a stop, the circuit breaker, the workspace found
    /// down or its token refused): neither applied nor failed, planned again by
    /// the next run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub actions_not_sent: usize,
    /// `actions_not_sent` by why, in a few words.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions_not_sent_by_reason: BTreeMap<String, usize>,
    /// Writes of runs killed mid-apply that never reached the workspace
    /// ([`SweepActions::cut_off`]): neither applied nor failed, planned again by
    /// the next run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub actions_cut_off: usize,
    /// The part of `actions_applied` the sweep applied (its runs have no report
    /// and are not in `runs`).
    pub sweep_actions_applied: usize,
    /// The part of `actions_by_kind` the sweep applied.
    pub sweep_actions_by_kind: BTreeMap<String, usize>,
    pub retries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftKindPeople {
    pub kind: DriftKind,
    pub title: String,
    pub count: usize,
    /// `user_name: detail`, in report order.
    pub people: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprovisionLine {
    pub user_name: String,
    pub identity_id: String,
    pub reason: String,
    /// In the configured zone, e.g. `2026-11-30 09:00 CET`.
    pub detected: String,
    /// `detected` as an RFC 3339 UTC instant, for scripts (to the second: the
    /// display string shows the minute).
    pub detected_at: DateTime<Utc>,
    pub due: String,
    pub due_at: DateTime<Utc>,
    pub overdue: bool,
    pub held: bool,
    /// Held because an exception in force keeps the account
    /// ([`DeprovisionHold::Excepted`]): put off, waiting for no one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub excepted: bool,
    /// What holds it and the command that releases it, when `held`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// The run `seatwarden approve` takes, when the guard holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_run: Option<crate::store::RunId>,
    /// [`DigestDeprovision::hold_decided`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_decided: Option<HoldDecided>,
    /// For an overdue one nothing holds: why it is still open, as far as the
    /// ledger says, and where to look next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
}

/// An exception in force, as the digest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionLine {
    pub user_name: String,
    /// In the configured zone, to the minute.
    pub until: String,
    pub until_at: DateTime<Utc>,
    pub reason: String,
    /// The newest report found it naming no account and no person: it keeps
    /// nothing ([`Digest::exceptions_naming_nobody`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub names_nobody: bool,
}

/// A run of the period that failed before its report, named with its error: the
/// headline's "failed run" says no more, and `status` shows only each job's last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRun {
    pub run_id: i64,
    /// `reconcile`, `sweep`.
    pub kind: String,
    /// When it ended (started, for one cut off that nobody has closed yet), in
    /// the configured zone.
    pub at: String,
    /// `at` as an RFC 3339 UTC instant, for scripts.
    pub ended_at: DateTime<Utc>,
    pub error: String,
}

/// A decision a person made through seatwarden in the period (a row of the audit
/// trail, `seatwarden audit`): whoever reads the digest sees who approved, rejected,
/// linked, resumed or overrode the safety net, without asking for the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionLine {
    /// The audit row's id (`seatwarden audit --after`).
    pub id: i64,
    /// When, in the configured zone.
    pub at: String,
    /// `at` as an RFC 3339 UTC instant, for scripts.
    pub decided_at: DateTime<Utc>,
    /// Who (`alice (as seatwarden)`).
    pub user: String,
    /// `approve`, `reject`, `link`, `resume`, `accept_directory`,
    /// `allow_over_threshold`, `workspace_moved`.
    pub command: String,
    pub run: Option<i64>,
    /// What was done.
    pub detail: String,
}

impl DecisionLine {
    /// `2026-12-01 09:12 +01:00 (CET), alice: reject (run 41): rejected 3 held
    /// actions`, as the text form lists it.
    pub fn line(&self) -> String {
        let run = self
            .run
            .map(|run| format!(" (run {run})"))
            .unwrap_or_default();
        format!(
            "{}, {}: {}{run}: {}",
            self.at, self.user, self.command, self.detail
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAction {
    pub op: String,
    pub subject: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRun {
    pub run_id: i64,
    pub actions: Vec<HeldAction>,
    /// The exact command that releases them.
    pub approve_command: String,
}

/// What the latest applying run held that an approval's re-check refused
/// ([`crate::report::Report::refused_by_approval`]): not in [`Digest::held`], as
/// approving again re-checks the same; the next reconcile decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedHeld {
    pub run_id: i64,
    pub count: usize,
    /// What it means and what decides, as the digest says it.
    pub note: String,
}

/// What the latest applying run held because its directory read was incomplete:
/// not in [`Digest::held`], as no approval releases it (`approve` refuses it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteHeld {
    pub run_id: i64,
    pub count: usize,
    /// What it means and what releases it, as the digest says it.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldestDrift {
    pub kind: DriftKind,
    pub user_name: String,
    pub detail: String,
    /// When the first report showing it (within the periods loaded) started.
    pub since: String,
    /// `since` as an RFC 3339 UTC instant, for scripts.
    pub since_at: DateTime<Utc>,
    /// True when it was already in the earliest report loaded: it may be older.
    pub at_least: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trend {
    pub drift_now: usize,
    /// Drift at the end of the previous period (from the newest report by then,
    /// as the previous digest showed it); `None` without a report then.
    pub drift_before: Option<usize>,
    /// The previous period compared with, as its digest covered it, in the
    /// configured zone.
    #[serde(default)]
    pub previous_start: String,
    #[serde(default)]
    pub previous_end: String,
    /// `previous_start` and `previous_end` as RFC 3339 UTC instants, for scripts.
    #[serde(default)]
    pub previous_start_at: DateTime<Utc>,
    #[serde(default)]
    pub previous_end_at: DateTime<Utc>,
    /// `+3`, `-2`, `±0`, or `n/a`.
    pub drift_change: String,
    pub runs_before: usize,
    pub actions_applied_before: usize,
    /// Runs of the previous period that could not complete (no report), as
    /// [`PeriodSummary::failed_runs`] counts them.
    #[serde(default)]
    pub failed_runs_before: usize,
    /// Failed actions of the previous period, the sweep's included, as
    /// [`PeriodSummary::actions_failed`] counts them.
    #[serde(default)]
    pub actions_failed_before: usize,
    /// `failed_runs_before` plus `actions_failed_before`: two different things
    /// in one number, kept for scripts written against earlier versions.
    pub failures_before: usize,
}

/// The digest, ready to render. Its JSON form is what `--format json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub name: String,
    pub timezone: String,
    /// The period on the configured zone's wall clock, for people
    /// ([`crate::model::clock_time`]).
    pub period_start: String,
    pub period_end: String,
    /// The same as RFC 3339 UTC instants (`…_at`, as in `status --format json`),
    /// for scripts; so is every display time of the digest beside it.
    pub period_start_at: DateTime<Utc>,
    pub period_end_at: DateTime<Utc>,
    pub state: State,
    pub state_label: String,
    pub headline: String,
    pub subject: String,
    /// The run the current drift comes from.
    pub latest_run: Option<i64>,
    pub period: PeriodSummary,
    pub drift_total: usize,
    pub drift: Vec<DriftKindPeople>,
    /// Said instead of "No drift." when the newest run refused the directory
    /// snapshot (a source fault) and so computed no drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_not_computed: Option<String>,
    /// `run 12's stored report cannot be read (…): …`, one per such run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_reports: Vec<String>,
    /// The period's runs that failed before their report, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_runs: Vec<FailedRun>,
    /// The decisions people made through seatwarden in the period, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<DecisionLine>,
    pub overdue: Vec<DeprovisionLine>,
    pub pending: Vec<DeprovisionLine>,
    /// Deprovisions verified in the period, oldest first.
    pub deprovisioned: Vec<VerifiedLine>,
    pub held: Vec<HeldRun>,
    /// Held because the directory read was incomplete: nothing to approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_incomplete: Option<IncompleteHeld>,
    /// Held, refused by an approval's re-check: nothing to approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_refused: Option<RefusedHeld>,
    pub oldest_drift: Option<OldestDrift>,
    pub trend: Trend,
    /// Sent by a daemon in `schedule.dry_run` ([`Digest::in_dry_run`]): nothing
    /// it reports is being acted on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Certificate files that run out within [`crate::certificate::WARN_BEFORE`],
    /// or have ([`Digest::with_certificates`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<crate::certificate::Notice>,
    /// The exceptions in force (`safety.exceptions`), soonest end first
    /// ([`Digest::with_exceptions`]): who keeps access by a decision, until when
    /// and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ExceptionLine>,
    /// The userNames of the exceptions the newest report found naming no
    /// account and no person (its EXCEPTION NAMES NOBODY; the newest that could
    /// tell, when its reads were not whole): they keep nothing, and the people
    /// they were meant for lose access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions_naming_nobody: Vec<String>,
    /// How people run seatwarden's commands here, for the lines that say where
    /// the rest of a long list is. Not part of the JSON.
    #[serde(skip)]
    pub admin_command: String,
}

/// After an exception the newest report found naming nobody, in every form.
pub const NAMES_NOBODY: &str = " (NAMES NOBODY: no workspace account and no person in the \
     directory has this userName, so it keeps nothing)";

/// What a digest under `schedule.dry_run` says first, in every form.
pub const DRY_RUN_NOTICE: &str = "DRY RUN (schedule.dry_run = true): seatwarden reports and \
     writes nothing to the workspace; nobody who leaves is deactivated";

/// How many entries of each list (drift of one kind, overdue, pending and
/// verified deprovisions, one run's held actions) the text, Markdown and HTML
/// forms show; the rest are counted, with the command that lists them. A first
/// run over thousands of people, or a mass deprovision held by the guard, would
/// otherwise make an email of megabytes that relays refuse (552) and nobody
/// reads. The JSON form lists everything.
pub const LISTED: usize = 50;

/// The first [`LISTED`] of `items`.
fn first<T>(items: &[T]) -> &[T] {
    items.get(..LISTED).unwrap_or(items)
}

/// `… and 950 more: `seatwarden status` lists every one.`, when `total` is over
/// [`LISTED`].
pub(super) fn more_line(total: usize, hint: Option<String>) -> Option<String> {
    (total > LISTED).then(|| {
        let more = total - LISTED;
        match hint {
            Some(hint) => format!("… and {more} more: {hint}."),
            None => format!("… and {more} more."),
        }
    })
}

/// A name or message from the directory, the workspace or a provider, as one
/// field of the digest: its text form is line-structured (and a plain-text email).
fn clean(text: &str) -> String {
    super::printable_field(text)
}

fn drift_key(item: &DriftItem) -> (DriftKind, Option<&str>, Option<&str>, &str) {
    (
        item.kind,
        item.identity_id.as_deref(),
        item.account_id.as_deref(),
        &item.user_name,
    )
}

/// Failed actions in `reports`.
fn actions_failed(reports: &[Report]) -> usize {
    reports.iter().map(|r| r.summary.actions_failed).sum()
}

impl Digest {
    /// The digest of a daemon in `schedule.dry_run`: it says so first, and its
    /// subject too, so that drift nobody acts on is not read as drift about to be
    /// fixed, and a trial left on by mistake shows in every mail.
    pub fn in_dry_run(mut self) -> Digest {
        if !self.dry_run {
            self.dry_run = true;
            self.subject = match self.subject.split_once(": ") {
                Some((head, rest)) => format!("{head} (dry run): {rest}"),
                None => format!("{} (dry run)", self.subject),
            };
        }
        self
    }

    /// The digest with the certificate files that run out within
    /// [`crate::certificate::WARN_BEFORE`] of `now`, or have, listed near its top.
    pub fn with_certificates(
        mut self,
        expiries: &[crate::certificate::Expiry],
        now: DateTime<Utc>,
    ) -> Digest {
        let tz: Tz = self.timezone.parse().unwrap_or(chrono_tz::UTC);
        self.certificates = crate::certificate::notices(expiries, now, tz);
        self
    }

    /// The digest with the exceptions (`safety.exceptions`) in force at `now`.
    pub fn with_exceptions(
        mut self,
        exceptions: &[crate::model::Exception],
        now: DateTime<Utc>,
    ) -> Digest {
        let tz: Tz = self.timezone.parse().unwrap_or(chrono_tz::UTC);
        let mut in_force: Vec<&crate::model::Exception> =
            exceptions.iter().filter(|e| e.until > now).collect();
        in_force.sort_by(|a, b| (a.until, &a.user_name).cmp(&(b.until, &b.user_name)));
        self.exceptions = in_force
            .into_iter()
            .map(|e| ExceptionLine {
                user_name: clean(&e.user_name),
                until: super::local_minute(e.until, tz),
                until_at: e.until,
                reason: clean(&e.reason),
                names_nobody: self
                    .exceptions_naming_nobody
                    .iter()
                    .any(|name| fold_user_name(name) == fold_user_name(&clean(&e.user_name))),
            })
            .collect();
        self
    }

    pub fn build(input: &DigestInput<'_>) -> Digest {
        let tz = input.timezone;
        let period =
            chrono::Duration::from_std(input.period).unwrap_or_else(|_| chrono::Duration::days(1));
        let start = input.now - period;
        let latest = newest(input);

        let mut summary = PeriodSummary {
            runs: input.reports.len()
                + input.failed_runs
                + input.stopped_runs
                + input
                    .unreadable
                    .len()
                    .saturating_sub(input.unreadable_earlier),
            failed_runs: input.failed_runs,
            actions_by_kind: BTreeMap::new(),
            actions_applied: input.sweeps.applied() + input.unreported.applied(),
            actions_failed: input.sweeps.failed + input.unreported.failed,
            actions_not_sent: input.sweeps.not_sent + input.unreported.not_sent,
            actions_not_sent_by_reason: BTreeMap::new(),
            actions_cut_off: input.sweeps.cut_off + input.unreported.cut_off,
            sweep_actions_applied: input.sweeps.applied(),
            sweep_actions_by_kind: input.sweeps.applied_by_kind.clone(),
            retries: 0,
        };
        for (op, n) in input
            .sweeps
            .applied_by_kind
            .iter()
            .chain(&input.unreported.applied_by_kind)
        {
            *summary.actions_by_kind.entry(op.clone()).or_default() += n;
        }
        for (why, n) in input
            .sweeps
            .not_sent_by_reason
            .iter()
            .chain(&input.unreported.not_sent_by_reason)
        {
            *summary
                .actions_not_sent_by_reason
                .entry(why.clone())
                .or_default() += n;
        }
        for report in input.reports {
            for action in &report.actions {
                if action.outcome == Outcome::Applied {
                    *summary
                        .actions_by_kind
                        .entry(action.op.clone())
                        .or_default() += 1;
                }
            }
            summary.actions_applied += report.summary.actions_applied;
            summary.actions_failed += report.summary.actions_failed;
            // What a run kept back is not run in its report, and not sent here,
            // as a sweep's is.
            for (why, n) in report.not_sent_by_reason() {
                summary.actions_not_sent += n;
                *summary
                    .actions_not_sent_by_reason
                    .entry(why.to_owned())
                    .or_default() += n;
            }
            summary.retries += report.summary.retries;
        }

        // Current drift: what the latest run found and did not repair, however
        // long ago: the period only chooses the runs, actions and trend shown.
        let current: Vec<&DriftItem> = latest.map(residual_drift).unwrap_or_default();
        // On the digest's clock: a retention delete states its time as the run's
        // report does.
        let current_owned: Vec<DriftItem> = match latest {
            Some(latest) => current.iter().map(|d| latest.item_on(d, tz)).collect(),
            None => Vec::new(),
        };
        let drift: Vec<DriftKindPeople> = drift_groups(&current_owned)
            .into_iter()
            .map(|group| DriftKindPeople {
                kind: group.kind,
                title: group.title.to_owned(),
                count: group.items.len(),
                people: group
                    .items
                    .iter()
                    .map(|d| format!("{}: {}", clean(&d.user_name), clean(&d.detail)))
                    .collect(),
            })
            .collect();

        let mut deprovisions: Vec<&DigestDeprovision> = input.deprovisions.iter().collect();
        deprovisions.sort_by(|a, b| (a.due_at, &a.user_name).cmp(&(b.due_at, &b.user_name)));
        let line = |d: &DigestDeprovision| DeprovisionLine {
            user_name: clean(&d.user_name),
            identity_id: clean(&d.identity_id),
            reason: clean(&d.reason),
            detected: super::local_minute(d.detected_at, tz),
            detected_at: d.detected_at,
            due: super::local_minute(d.due_at, tz),
            due_at: d.due_at,
            overdue: d.due_at <= input.now,
            held: d.held.is_some(),
            excepted: d.held == Some(DeprovisionHold::Excepted),
            hold: d.held.map(|h| {
                clean(&h.waiting_for(
                    input.admin_command,
                    &d.identity_id,
                    d.hold_run,
                    d.hold_decided.as_ref(),
                    tz,
                ))
            }),
            hold_run: d.hold_run,
            hold_decided: d.hold_decided.clone(),
            next_step: (d.due_at <= input.now && d.held.is_none())
                .then(|| clean(&overdue_next_step(d, input.admin_command))),
        };
        let (overdue, pending): (Vec<DeprovisionLine>, Vec<DeprovisionLine>) =
            deprovisions.into_iter().map(line).partition(|l| l.overdue);

        let deprovisioned: Vec<VerifiedLine> = input
            .verified
            .iter()
            .filter(|v| v.verified_at >= start && v.verified_at < input.now)
            .map(|v| VerifiedLine {
                user_name: clean(&v.user_name),
                reason: clean(&v.reason),
                detected: super::local_minute(v.detected_at, tz),
                detected_at: v.detected_at,
                verified: super::local_minute(v.verified_at, tz),
                verified_at: v.verified_at,
                took: crate::sla::latency_text(
                    v.verified_at
                        - v.excepted_until
                            .map_or(v.detected_at, |e| e.max(v.detected_at))
                            .min(v.verified_at),
                ),
            })
            .collect();

        // What waits for `approve`: the latest run that applies. A `plan` or a dry
        // run after it holds nothing anyone can approve.
        let latest_applying = latest
            .into_iter()
            .chain(input.reports.iter().rev())
            .chain(input.previous.iter().rev())
            .find(|r| r.mode == "reconcile");
        let held: Vec<HeldRun> = latest_applying
            .map(|report| {
                let actions: Vec<HeldAction> = report
                    .actions
                    .iter()
                    .filter(|a| {
                        a.outcome == Outcome::Held
                            && !a.waiting
                            && !a.held_incomplete_directory()
                            && !a.refused_by_approval()
                    })
                    .map(|a| HeldAction {
                        op: a.op.clone(),
                        subject: clean(&a.subject),
                        why: clean(a.error.as_deref().unwrap_or_default()),
                    })
                    .collect();
                (report.run_id, actions)
            })
            .filter(|(_, actions)| !actions.is_empty())
            .map(|(run_id, actions)| HeldRun {
                run_id,
                actions,
                approve_command: format!("{} approve {run_id}", input.admin_command),
            })
            .into_iter()
            .collect();

        // Refused by an approval's re-check: held, but approving again re-checks
        // the same, so they are not in `held` under "approve with".
        let held_refused = latest_applying
            .map(|report| (report.run_id, report.refused_by_approval()))
            .filter(|(_, count)| *count > 0)
            .map(|(run_id, count)| RefusedHeld {
                run_id,
                count,
                note: format!(
                    "{} held in run {run_id} that `{admin} approve {run_id}` refused: each stays \
                     held with the re-check's reason (`{admin} report --run {run_id}` lists \
                     them). Nothing to approve: the next reconcile decides.",
                    plural(count, "action", "actions"),
                    admin = input.admin_command
                ),
            });
        let held_incomplete = latest_applying
            .map(|report| (report.run_id, report.held_incomplete_directory()))
            .filter(|(_, count)| *count > 0)
            .map(|(run_id, count)| IncompleteHeld {
                run_id,
                count,
                note: format!(
                    "{} held in run {run_id} because its directory read was incomplete \
                     (someone only missing from it looks gone): nothing to approve, `{admin} \
                     approve` refuses them. Check the directory, then `{admin} reconcile`: a \
                     whole read plans what is really due; `{admin} report --run {run_id}` \
                     lists them.",
                    plural(count, "action", "actions"),
                    admin = input.admin_command
                ),
            });
        let oldest_drift = oldest_unresolved(input, &current, tz);

        let previous_span = Span::previous(input.previous_span, input.now, period);
        let drift_before = input
            .previous
            .last()
            .or(input.previous_latest)
            .map(|r| residual_drift(r).len());
        let drift_now = current.len();
        let actions_failed_previous = actions_failed(input.previous)
            + input.sweeps_previous.failed
            + input.unreported_previous.failed;
        let trend = Trend {
            drift_now,
            drift_before,
            previous_start: super::local_minute(previous_span.start, tz),
            previous_end: super::local_minute(previous_span.end, tz),
            previous_start_at: previous_span.start,
            previous_end_at: previous_span.end,
            drift_change: match drift_before {
                None => "n/a".to_owned(),
                Some(before) if before == drift_now => "±0".to_owned(),
                Some(before) if drift_now > before => format!("+{}", drift_now - before),
                Some(before) => format!("-{}", before - drift_now),
            },
            runs_before: input.previous.len()
                + input.failed_runs_previous
                + input.stopped_runs_previous
                + input.unreadable_previous,
            actions_applied_before: input
                .previous
                .iter()
                .map(|r| r.summary.actions_applied)
                .sum::<usize>()
                + input.sweeps_previous.applied()
                + input.unreported_previous.applied(),
            failed_runs_before: input.failed_runs_previous,
            actions_failed_before: actions_failed_previous,
            failures_before: input.failed_runs_previous + actions_failed_previous,
        };

        let held_count: usize = held.iter().map(|h| h.actions.len()).sum();
        // A leaver whose deprovision is held keeps access until a human acts
        // (`approve`, `link`), due or not; one an exception puts off waits for
        // its end, and no one.
        let excepted_pending = pending.iter().filter(|d| d.excepted).count();
        let held_pending = pending.iter().filter(|d| d.held).count() - excepted_pending;
        let failed_now = latest.map_or(0, |r| r.summary.actions_failed);
        // The newest run's writes stopped: the work is not done, though nothing
        // of it failed.
        let not_sent_now = latest.map_or(0, |r| r.not_sent().count());
        // A rejected directory plans nothing, so it shows no drift: it must not
        // read as "in sync". Nor must a period whose runs failed.
        let source_fault = latest.is_some_and(|r| r.safety.source_fault.is_some());
        let circuit = latest.and_then(|r| r.safety.circuit.as_ref());
        let circuit_open = circuit.is_some();
        // Accounts nothing deprovisions or changes only because their person is
        // protected (the report's PROTECTED BY PERSON): not in sync until each is
        // settled, as the report's own headline says.
        let shielded = latest.map_or(0, |r| r.safety.protected_by_person.len());
        // Someone who left keeps access through a protected account (the
        // report's PROTECTED LEAVERS): not in sync, as the report says.
        let protected_leavers = latest.map_or(0, |r| r.safety.protected_leavers.len());
        // Each keeps nothing: the person it was meant for loses access, which
        // someone decided they keep.
        let exceptions_naming_nobody: Vec<String> = latest
            .map(|r| {
                r.safety
                    .exceptions_naming_nobody
                    .iter()
                    .map(|e| clean(&e.user_name))
                    .collect()
            })
            .unwrap_or_default();
        // Drift is known only as of the newest report: a period without a run says
        // the schedule stopped, not that nothing changed.
        let stale = latest.filter(|_| summary.runs == 0);
        // No report at hand but one stored that cannot be read (the newest run's):
        // a run did store a report, so "no run has stored a report yet" is false,
        // and a period without a run must still say so (the schedule stopped).
        let newest_unreadable = input
            .unreadable
            .iter()
            .map(|(run, _)| *run)
            .max()
            .filter(|_| latest.is_none());
        let state = if source_fault
            || circuit_open
            || stale.is_some()
            || input.failed_runs > 0
            || !overdue.is_empty()
            || held_count > 0
            || held_incomplete.is_some()
            || held_refused.is_some()
            || held_pending > 0
            || failed_now > 0
            || not_sent_now > 0
            || !input.unreadable.is_empty()
            || !exceptions_naming_nobody.is_empty()
        {
            State::NeedsAttention
        } else if latest.is_none() {
            // No run ever stored a report: nothing is known to be in sync.
            State::Unknown
        } else if drift_now > 0 || !pending.is_empty() || shielded > 0 || protected_leavers > 0 {
            State::Drift
        } else {
            State::InSync
        };
        let mut parts = Vec::new();
        if source_fault {
            parts.push("directory rejected (source fault)".to_owned());
        }
        if let Some(circuit) = circuit {
            parts.push(match circuit.state {
                crate::circuit::CircuitState::HalfOpen { .. } => {
                    "circuit breaker half-open".to_owned()
                }
                _ => "circuit breaker open".to_owned(),
            });
        }
        if let Some(report) = stale {
            parts.push(format!(
                "no run in this period: drift as of run {} ({})",
                report.run_id,
                super::local_minute(report.finished_at, tz)
            ));
        } else if summary.runs == 0 && newest_unreadable.is_some() {
            parts.push("no run in this period".to_owned());
        }
        if input.failed_runs > 0 {
            parts.push(plural(input.failed_runs, "failed run", "failed runs"));
        }
        if !input.unreadable.is_empty() {
            parts.push(plural(
                input.unreadable.len(),
                "stored report unreadable",
                "stored reports unreadable",
            ));
        }
        if !overdue.is_empty() {
            parts.push(plural(
                overdue.len(),
                "overdue deprovision",
                "overdue deprovisions",
            ));
        }
        if held_count > 0 {
            parts.push(plural(held_count, "held action", "held actions"));
        }
        if let Some(incomplete) = &held_incomplete {
            parts.push(format!(
                "{} (directory read incomplete)",
                plural(incomplete.count, "held action", "held actions")
            ));
        }
        if let Some(refused) = &held_refused {
            parts.push(format!(
                "{} (refused by approve)",
                plural(refused.count, "held action", "held actions")
            ));
        }
        if failed_now > 0 {
            parts.push(plural(failed_now, "failed action", "failed actions"));
        }
        if not_sent_now > 0 {
            parts.push(plural(not_sent_now, "action not sent", "actions not sent"));
        }
        if held_pending > 0 {
            parts.push(plural(
                held_pending,
                "held deprovision",
                "held deprovisions",
            ));
        }
        if !exceptions_naming_nobody.is_empty() {
            parts.push(plural(
                exceptions_naming_nobody.len(),
                "exception naming nobody",
                "exceptions naming nobody",
            ));
        }
        if excepted_pending > 0 {
            parts.push(format!(
                "{} put off by an exception",
                plural(excepted_pending, "deprovision", "deprovisions")
            ));
        }
        if pending.len() > held_pending + excepted_pending {
            parts.push(plural(
                pending.len() - held_pending - excepted_pending,
                "pending deprovision",
                "pending deprovisions",
            ));
        }
        if drift_now > 0 {
            parts.push(plural(drift_now, "drift item", "drift items"));
        }
        if shielded > 0 {
            parts.push(format!(
                "{} left alone only for a protected person (PROTECTED BY PERSON)",
                plural(shielded, "account", "accounts")
            ));
        }
        if protected_leavers > 0 {
            parts.push(format!(
                "{} kept active by safety.protected (PROTECTED LEAVERS)",
                plural(protected_leavers, "leaver's account", "leavers' accounts")
            ));
        }
        match newest_unreadable {
            Some(run) => parts.push(format!(
                "drift unknown: run {run}'s stored report cannot be read"
            )),
            None if latest.is_none() => {
                parts.push("no run has stored a report yet: drift unknown".to_owned());
            }
            None => {}
        }
        let headline = if parts.is_empty() {
            "in sync with the directory".to_owned()
        } else {
            parts.join(", ")
        };
        let subject = format!(
            "[seatwarden] {}: {}",
            input.name,
            if parts.is_empty() {
                "in sync".to_owned()
            } else {
                headline.clone()
            }
        );

        Digest {
            name: input.name.to_owned(),
            timezone: tz.name().to_owned(),
            period_start: super::local_minute(start, tz),
            period_end: super::local_minute(input.now, tz),
            period_start_at: start,
            period_end_at: input.now,
            state,
            state_label: state.label().to_owned(),
            headline,
            subject,
            latest_run: latest.map(|r| r.run_id),
            period: summary,
            drift_total: drift_now,
            drift,
            drift_not_computed: latest
                .filter(|_| source_fault)
                .map(|r| {
                    format!(
                        "Drift not computed: run {} refused the directory snapshot (source fault) \
                         and wrote nothing.",
                        r.run_id
                    )
                })
                .or_else(|| {
                    newest_unreadable.map(|run| {
                        format!(
                            "Drift unknown: the newest stored report, run {run}'s, cannot be read \
                             (see above); the next reconcile stores one this version reads."
                        )
                    })
                }),
            unreadable_reports: input
                .unreadable
                .iter()
                .enumerate()
                .map(|(at, (run, why))| {
                    // The last [`DigestInput::unreadable_earlier`] ran before the
                    // period: nothing of it is counted here.
                    let counted = match at
                        >= input
                            .unreadable
                            .len()
                            .saturating_sub(input.unreadable_earlier)
                    {
                        true => "it ran before this period (the newest stored report)",
                        false => "its writes are counted from its journal",
                    };
                    clean(&format!(
                        "run {run}'s stored report cannot be read ({why}); written by \
                         another seatwarden version, or damaged: {counted}"
                    ))
                })
                .collect(),
            failed_runs: input
                .failed
                .iter()
                .map(|run| {
                    let ended_at = run.finished_at.unwrap_or(run.started_at);
                    FailedRun {
                        run_id: run.id,
                        kind: run.kind.to_string(),
                        at: super::local_minute(ended_at, tz),
                        ended_at,
                        error: clean(run.error.as_deref().unwrap_or(
                            "cut off (killed): still recorded as running while no process holds \
                         the writer lock",
                        )),
                    }
                })
                .collect(),
            decisions: input
                .decisions
                .iter()
                .map(|row| DecisionLine {
                    id: row.id,
                    at: super::local_minute(row.entry.at, tz),
                    decided_at: row.entry.at,
                    user: clean(&row.entry.user),
                    command: clean(&row.entry.command),
                    run: row.entry.run,
                    detail: clean(&row.entry.detail),
                })
                .collect(),
            overdue,
            pending,
            deprovisioned,
            held,
            held_incomplete,
            held_refused,
            oldest_drift,
            trend,
            dry_run: false,
            certificates: Vec::new(),
            exceptions: Vec::new(),
            exceptions_naming_nobody,
            admin_command: input.admin_command.to_owned(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn render_markdown(&self) -> Result<String, RenderError> {
        render("digest.md", &self.view())
    }

    pub fn render_html(&self) -> Result<String, RenderError> {
        render("digest.html", &self.view())
    }

    /// Where the rest of the current drift is listed.
    fn drift_hint(&self) -> Option<String> {
        self.latest_run.map(|run| {
            format!(
                "`{} report --run {run}` lists every one",
                self.admin_command
            )
        })
    }

    /// Where every open deprovision is listed.
    fn open_hint(&self) -> Option<String> {
        Some(format!(
            "`{} status` lists every open deprovision",
            self.admin_command
        ))
    }

    fn view(&self) -> DigestView<'_> {
        DigestView {
            overdue: first(&self.overdue),
            overdue_more: more_line(self.overdue.len(), self.open_hint()),
            pending: first(&self.pending),
            pending_more: more_line(self.pending.len(), self.open_hint()),
            deprovisioned: first(&self.deprovisioned),
            deprovisioned_more: more_line(self.deprovisioned.len(), None),
            failed_runs: first(&self.failed_runs),
            failed_runs_more: more_line(self.failed_runs.len(), None),
            decisions: first(&self.decisions),
            // The rest are the newest: name the command that starts after the
            // last one listed, not the whole trail.
            decisions_more: more_line(
                self.decisions.len(),
                first(&self.decisions).last().map(|last| {
                    format!(
                        "`{} audit --after {}` lists the rest",
                        self.admin_command, last.id
                    )
                }),
            ),
            drift: self
                .drift
                .iter()
                .map(|kind| KindView {
                    title: &kind.title,
                    count: kind.count,
                    people: first(&kind.people),
                    more: more_line(kind.people.len(), self.drift_hint()),
                })
                .collect(),
            held: self
                .held
                .iter()
                .map(|run| HeldView {
                    run_id: run.run_id,
                    count: run.actions.len(),
                    approve_command: &run.approve_command,
                    actions: first(&run.actions),
                    more: more_line(
                        run.actions.len(),
                        Some(format!(
                            "`{} report --run {}` lists every one",
                            self.admin_command, run.run_id
                        )),
                    ),
                })
                .collect(),
            admin_command: &self.admin_command,
            digest: self,
            accent: accent(self.state),
            actions_by_kind: self
                .period
                .actions_by_kind
                .iter()
                .map(|(op, n)| format!("{n} {op}"))
                .collect::<Vec<_>>()
                .join(", "),
            sweep_actions_by_kind: by_kind(&self.period.sweep_actions_by_kind),
            not_sent_why: not_sent_why(&self.period),
            cut_off: (self.period.actions_cut_off > 0)
                .then(|| cut_off_words(self.period.actions_cut_off)),
            dry_run_notice: self.dry_run.then_some(DRY_RUN_NOTICE),
            names_nobody: NAMES_NOBODY,
        }
    }

    /// The terminal and `text/plain` form.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "seatwarden digest for {}: {} — {}",
            self.name, self.state_label, self.headline
        );
        if self.dry_run {
            let _ = writeln!(out, "  {DRY_RUN_NOTICE}");
        }
        let _ = writeln!(
            out,
            "  period: {} to {} ({})",
            self.period_start, self.period_end, self.timezone
        );
        let p = &self.period;
        let _ = writeln!(
            out,
            "  {} ({} failed), {} applied{}, {} failed{}{}, {}",
            plural(p.runs, "run", "runs"),
            p.failed_runs,
            plural(p.actions_applied, "action", "actions"),
            by_the_sweep(p.sweep_actions_applied),
            p.actions_failed,
            cut_off_text(p),
            not_sent(p),
            plural(p.retries as usize, "retry", "retries")
        );
        if !p.actions_by_kind.is_empty() {
            let sweep = if p.sweep_actions_by_kind.is_empty() {
                String::new()
            } else {
                format!(" (by the sweep: {})", by_kind(&p.sweep_actions_by_kind))
            };
            let _ = writeln!(out, "  applied: {}{sweep}", by_kind(&p.actions_by_kind));
        }
        let t = &self.trend;
        let _ = writeln!(
            out,
            "  trend: {} now, {} at the end of the previous period ({}); previous period ({} to {}): {} ({} failed), {} applied, {} failed",
            plural(t.drift_now, "drift item", "drift items"),
            t.drift_before
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            t.drift_change,
            t.previous_start,
            t.previous_end,
            plural(t.runs_before, "run", "runs"),
            t.failed_runs_before,
            plural(t.actions_applied_before, "action", "actions"),
            t.actions_failed_before
        );
        let view = self.view();
        let more = |out: &mut String, line: &Option<String>| {
            if let Some(line) = line {
                let _ = writeln!(out, "  {line}");
            }
        };
        for line in &self.unreadable_reports {
            let _ = writeln!(out, "  {line}");
        }
        if !self.certificates.is_empty() {
            let _ = write!(
                out,
                "\n{}",
                crate::certificate::notices_text(&self.certificates)
            );
        }
        if !self.overdue.is_empty() {
            let _ = writeln!(out, "\nOverdue deprovisions ({}):", self.overdue.len());
            for d in view.overdue {
                let _ = writeln!(out, "  - {}", deprovision_text(d));
            }
            more(&mut out, &view.overdue_more);
        }
        if !self.pending.is_empty() {
            let _ = writeln!(out, "\nPending deprovisions ({}):", self.pending.len());
            for d in view.pending {
                let _ = writeln!(out, "  - {}", deprovision_text(d));
            }
            more(&mut out, &view.pending_more);
        }
        if !self.exceptions.is_empty() {
            let _ = writeln!(
                out,
                "\nExceptions in force ({}), access kept until their end:",
                self.exceptions.len()
            );
            for e in &self.exceptions {
                let _ = writeln!(
                    out,
                    "  - {} until {}: {}{}",
                    e.user_name,
                    e.until,
                    e.reason,
                    if e.names_nobody { NAMES_NOBODY } else { "" }
                );
            }
        }
        if !self.deprovisioned.is_empty() {
            let _ = writeln!(
                out,
                "\nDeprovisioned in this period ({}):",
                self.deprovisioned.len()
            );
            for d in view.deprovisioned {
                let _ = writeln!(
                    out,
                    "  - {} ({}): verified {}, {} after detection",
                    d.user_name, d.reason, d.verified, d.took
                );
            }
            more(&mut out, &view.deprovisioned_more);
        }
        if !self.failed_runs.is_empty() {
            let _ = writeln!(
                out,
                "\nFailed runs in this period ({}):",
                self.failed_runs.len()
            );
            for run in view.failed_runs {
                let _ = writeln!(
                    out,
                    "  - run {} ({}), {}: {}",
                    run.run_id, run.kind, run.at, run.error
                );
            }
            more(&mut out, &view.failed_runs_more);
        }
        if !self.decisions.is_empty() {
            let _ = writeln!(
                out,
                "\nDecisions by people in this period ({}):",
                self.decisions.len()
            );
            for d in view.decisions {
                let _ = writeln!(out, "  - {}", d.line());
            }
            more(&mut out, &view.decisions_more);
        }
        for run in &view.held {
            let _ = writeln!(
                out,
                "\nHeld by the guard in run {} ({}); approve with: {}",
                run.run_id, run.count, run.approve_command
            );
            for a in run.actions {
                let _ = writeln!(out, "  - {} {} — {}", a.op, a.subject, a.why);
            }
            more(&mut out, &run.more);
        }
        if let Some(incomplete) = &self.held_incomplete {
            let _ = writeln!(out, "\n{}", incomplete.note);
        }
        if let Some(refused) = &self.held_refused {
            let _ = writeln!(out, "\n{}", refused.note);
        }
        if let Some(why) = &self.drift_not_computed {
            let _ = writeln!(out, "\n{why}");
        } else if self.drift.is_empty() && self.latest_run.is_none() {
            let _ = writeln!(out, "\nDrift unknown: no run has stored a report yet.");
        } else if self.drift.is_empty() {
            let _ = writeln!(out, "\nNo drift.");
        } else {
            let _ = writeln!(out, "\nCurrent drift ({}):", self.drift_total);
            for kind in &view.drift {
                let _ = writeln!(out, "\n{} ({})", kind.title, kind.count);
                for person in kind.people {
                    let _ = writeln!(out, "  - {person}");
                }
                more(&mut out, &kind.more);
            }
        }
        if let Some(oldest) = &self.oldest_drift {
            let _ = writeln!(
                out,
                "\nOldest unresolved drift: {} ({}) since {}{}: {}",
                oldest.user_name,
                oldest.kind,
                if oldest.at_least { "at least " } else { "" },
                oldest.since,
                oldest.detail
            );
        }
        out
    }
}

/// The newest report given: [`DigestInput::latest`], or a newer one of the periods.
fn newest<'a>(input: &DigestInput<'a>) -> Option<&'a Report> {
    [input.latest, input.reports.last(), input.previous.last()]
        .into_iter()
        .flatten()
        .max_by_key(|r| r.run_id)
}

/// ` (4 by the deprovisioning sweep)`: its runs are not among the runs counted.
fn by_the_sweep(applied: usize) -> String {
    if applied == 0 {
        String::new()
    } else {
        format!(" ({applied} by the deprovisioning sweep)")
    }
}

/// `, 3 cut off before the workspace took them (the next run plans them again)`,
/// or nothing: writes of a run killed mid-apply, as `status` says them.
fn cut_off_text(period: &PeriodSummary) -> String {
    if period.actions_cut_off == 0 {
        String::new()
    } else {
        format!(", {}", cut_off_words(period.actions_cut_off))
    }
}

/// `3 cut off before the workspace took them (the next run plans them again)`.
fn cut_off_words(n: usize) -> String {
    format!("{n} cut off before the workspace took them (the next run plans them again)")
}

/// `, 2 not sent (seatwarden was stopping)`, `, 7 not sent (5 because …, 2
/// because …)`, or nothing.
fn not_sent(period: &PeriodSummary) -> String {
    if period.actions_not_sent == 0 {
        String::new()
    } else {
        format!(
            ", {} not sent ({})",
            period.actions_not_sent,
            not_sent_why(period)
        )
    }
}

/// Why a period's actions were not sent: the one reason, or each with its count,
/// most first (as a report says it).
fn not_sent_why(period: &PeriodSummary) -> String {
    let by_reason = &period.actions_not_sent_by_reason;
    match by_reason.iter().next() {
        Some((why, _)) if by_reason.len() == 1 => why.clone(),
        // Counts given without their reasons (a digest's JSON from before them).
        None => "kept back".to_owned(),
        Some(_) => {
            let mut by_count: Vec<(&String, &usize)> = by_reason.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            by_count
                .into_iter()
                .map(|(why, n)| format!("{n} because {why}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn deprovision_text(d: &DeprovisionLine) -> String {
    format!(
        "{} ({}): {}; detected {}, due {}{}",
        d.user_name,
        d.identity_id,
        d.reason,
        d.detected,
        d.due,
        d.hold
            .as_deref()
            .or(d.next_step.as_deref())
            .map(|note| format!(" — {note}"))
            .unwrap_or_default()
    )
}

/// Why an overdue deprovision nothing holds is still open, and where to look:
/// nothing waits for a human's decision, so something failed or did not run.
fn overdue_next_step(d: &DigestDeprovision, admin: &str) -> String {
    let why = d.why_open.as_deref().map_or_else(
        || "still open: no attempt to deactivate it is recorded".to_owned(),
        |why| format!("still open: {why}"),
    );
    format!(
        "{why}; `{admin} status` shows whether the sweep and retry jobs run, \
         `{}` tells the whole story",
        crate::model::admin_command_line(admin, "explain", &[&d.identity_id], &[])
    )
}

#[derive(Serialize)]
struct DigestView<'a> {
    digest: &'a Digest,
    /// [`DRY_RUN_NOTICE`] when [`Digest::dry_run`].
    dry_run_notice: Option<&'static str>,
    /// [`NAMES_NOBODY`], for the templates.
    names_nobody: &'static str,
    /// The lists as the email shows them: the first [`LISTED`] of each, and a
    /// line counting the rest.
    overdue: &'a [DeprovisionLine],
    overdue_more: Option<String>,
    pending: &'a [DeprovisionLine],
    pending_more: Option<String>,
    deprovisioned: &'a [VerifiedLine],
    deprovisioned_more: Option<String>,
    failed_runs: &'a [FailedRun],
    failed_runs_more: Option<String>,
    decisions: &'a [DecisionLine],
    decisions_more: Option<String>,
    drift: Vec<KindView<'a>>,
    held: Vec<HeldView<'a>>,
    accent: &'static str,
    actions_by_kind: String,
    sweep_actions_by_kind: String,
    /// Why the period's actions were not sent ([`not_sent_why`]).
    not_sent_why: String,
    /// The period's writes cut off by a killed run, in words ([`cut_off_words`]).
    cut_off: Option<String>,
    /// For the footer's command ([`Digest::admin_command`] is not serialised).
    admin_command: &'a str,
}

/// One drift kind as the email lists it.
#[derive(Serialize)]
struct KindView<'a> {
    title: &'a str,
    count: usize,
    people: &'a [String],
    more: Option<String>,
}

/// One run's held actions as the email lists them.
#[derive(Serialize)]
struct HeldView<'a> {
    run_id: i64,
    count: usize,
    approve_command: &'a str,
    actions: &'a [HeldAction],
    more: Option<String>,
}

/// `4 deactivate, 1 create_account`.
fn by_kind(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(op, n)| format!("{n} {op}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The current drift item seen longest without a break, walking back from the
/// latest report.
fn oldest_unresolved(
    input: &DigestInput<'_>,
    current: &[&DriftItem],
    tz: Tz,
) -> Option<OldestDrift> {
    let mut history: Vec<&Report> = input.previous.iter().chain(input.reports).collect();
    // The current drift's report, when it is older than both periods.
    if let Some(latest) = newest(input)
        && history
            .last()
            .is_none_or(|last| last.run_id < latest.run_id)
    {
        history.push(latest);
    }
    let first_loaded = history.first().map(|r| r.run_id);
    let mut oldest: Option<(DateTime<Utc>, i64, &DriftItem)> = None;
    for item in current {
        let key = drift_key(item);
        let mut since = None;
        for report in history.iter().rev() {
            if report.drift.iter().any(|d| drift_key(d) == key) {
                since = Some((report.started_at, report.run_id));
            } else {
                break;
            }
        }
        if let Some((at, run)) = since
            && oldest.is_none_or(|(best, _, _)| at < best)
        {
            oldest = Some((at, run, item));
        }
    }
    let latest = newest(input);
    oldest.map(|(at, run, item)| OldestDrift {
        kind: item.kind,
        user_name: clean(&item.user_name),
        detail: clean(&latest.map_or_else(|| item.detail.clone(), |r| r.item_on(item, tz).detail)),
        since: super::local_minute(at, tz),
        since_at: at,
        at_least: Some(run) == first_loaded,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("reading reports for the digest: {0}")]
    Store(#[from] StoreError),
}

impl crate::retry::Transient for DigestError {
    fn is_transient(&self) -> bool {
        false
    }
}

/// Everything but the ledger, read from the store for the period ending at `now`.
pub struct StoredPeriods {
    pub reports: Vec<Report>,
    pub previous: Vec<Report>,
    /// The newest readable report finished before the previous period ended, when
    /// that period stored none ([`DigestInput::previous_latest`]).
    pub previous_latest: Option<Report>,
    /// From the journal of the sweep's runs, which store no report.
    pub sweeps: SweepActions,
    pub sweeps_previous: SweepActions,
    /// From the journal of the period's reconciles that stored no report.
    pub unreported: SweepActions,
    pub stopped_runs: usize,
    pub unreported_previous: SweepActions,
    pub stopped_runs_previous: usize,
    /// The previous period's runs whose stored report cannot be read.
    pub unreadable_previous: usize,
    /// The newest stored report, whatever its period.
    pub latest: Option<Report>,
    pub failed_runs: usize,
    /// The period's failed runs (no report), to name.
    pub failed: Vec<crate::store::RunRecord>,
    pub failed_runs_previous: usize,
    /// Runs of the period (or the newest report) whose stored report could not
    /// be read, with why.
    pub unreadable: Vec<(i64, String)>,
    /// 1 when the last of [`StoredPeriods::unreadable`] is the newest report's
    /// run of an earlier period: named, not one of this period's runs.
    pub unreadable_earlier: usize,
}

/// Loads the reports of `[now - period, now)` and of the period of that length
/// before it, and the newest stored report.
pub fn collect(
    store: &Store,
    now: DateTime<Utc>,
    period: Duration,
) -> Result<StoredPeriods, DigestError> {
    collect_after(store, now, period, None)
}

/// [`collect`], with the previous period the one the previous digest covered
/// (`previous`, when recorded: [`Span::previous`]).
pub fn collect_after(
    store: &Store,
    now: DateTime<Utc>,
    period: Duration,
    previous: Option<Span>,
) -> Result<StoredPeriods, DigestError> {
    let length = chrono::Duration::from_std(period).unwrap_or_else(|_| chrono::Duration::days(1));
    let previous = Span::previous(previous, now, length);
    let load = |from, to| -> Result<Loaded, DigestError> {
        let mut loaded = Loaded::default();
        for (run, json) in store.reports_between(from, to)? {
            match json {
                Some(json) => match Report::from_json(&json) {
                    Ok(report) => loaded.reports.push(report),
                    // Written by another version (a downgrade), or damaged: one
                    // such row must not stop every digest until it is pruned. The
                    // run is counted from its journal, as one without a report,
                    // and named.
                    Err(e) => {
                        if run.kind == RunKind::Reconcile {
                            loaded.unreported.add(&store.journal(run.id)?, true);
                        }
                        loaded.unreadable.push((run.id, e.to_string()));
                    }
                },
                None => {
                    // A run recorded as running may still send its planned rows.
                    let over = run.status != RunStatus::Running;
                    match run.kind {
                        RunKind::Sweep => loaded.sweeps.add(&store.journal(run.id)?, over),
                        // Stopped, failed or cut off after some writes: they
                        // happened, and no report will ever count them.
                        RunKind::Reconcile => loaded.unreported.add(&store.journal(run.id)?, over),
                        RunKind::Plan | RunKind::DryRun => {}
                    }
                    match run.status {
                        RunStatus::Failed => {
                            loaded.failed += 1;
                            loaded.failed_runs.push(run);
                        }
                        RunStatus::Stopped => loaded.stopped += 1,
                        RunStatus::Running | RunStatus::Succeeded => {}
                    }
                }
            }
        }
        Ok(loaded)
    };
    let mut current = load(now - length, now)?;
    // A reconcile or sweep recorded as running while nobody holds the writer lock
    // was cut off (killed): `status` says so, and the next writer closes it as
    // failed. Until then it has no finish to fall in a period by, yet it is a
    // failed run now, with what its journal says it wrote.
    for run in store.running_runs()? {
        if run.started_at >= now
            || !matches!(run.kind, RunKind::Reconcile | RunKind::Sweep)
            || !store
                .run_and_whether_cut_off(run.id)?
                .is_some_and(|(_, cut_off)| cut_off)
        {
            continue;
        }
        match run.kind {
            RunKind::Sweep => current.sweeps.add(&store.journal(run.id)?, true),
            _ => current.unreported.add(&store.journal(run.id)?, true),
        }
        current.failed += 1;
        current.failed_runs.push(run);
    }
    let before = load(previous.start, previous.end)?;
    // A previous period without a report showed the drift of the newest one
    // before it; unreadable, it showed none.
    let previous_latest = if before.reports.is_empty() {
        store
            .latest_report_finished_before(previous.end)?
            .and_then(|(_, json)| Report::from_json(&json).ok())
    } else {
        None
    };
    // Unreadable, the newest readable report of the periods stands in for it
    // (`newest`), and the digest says which run it could not read.
    let mut unreadable_earlier = 0;
    let latest = match store.latest_report()? {
        Some((run, json)) => match Report::from_json(&json) {
            Ok(report) => Some(report),
            Err(e) => {
                if !current.unreadable.iter().any(|(id, _)| *id == run) {
                    current.unreadable.push((run, e.to_string()));
                    unreadable_earlier = 1;
                }
                None
            }
        },
        None => None,
    };
    Ok(StoredPeriods {
        reports: current.reports,
        previous: before.reports,
        previous_latest,
        sweeps: current.sweeps,
        sweeps_previous: before.sweeps,
        unreported: current.unreported,
        stopped_runs: current.stopped,
        unreported_previous: before.unreported,
        stopped_runs_previous: before.stopped,
        unreadable_previous: before.unreadable.len(),
        latest,
        failed_runs: current.failed,
        failed: current.failed_runs,
        failed_runs_previous: before.failed,
        unreadable: current.unreadable,
        unreadable_earlier,
    })
}

/// When the newest report could not tell whether an exception names nobody
/// (its reads were not whole: `exceptions_naming_nobody_unknown`), its finding
/// is the one the newest run of its kind that could tell left: the alert and
/// the gauge stay as that run left them, and a digest saying none would read
/// as the typo fixed while the alert on it is still active.
fn exceptions_as_last_told(store: &Store, stored: &mut StoredPeriods) -> Result<(), StoreError> {
    let newest = [
        stored.latest.as_ref(),
        stored.reports.last(),
        stored.previous.last(),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|r| r.run_id);
    let Some(run_id) = newest
        .filter(|r| r.safety.exceptions_naming_nobody_unknown)
        .map(|r| r.run_id)
    else {
        return Ok(());
    };
    let Some(run) = store.run(run_id)? else {
        return Ok(());
    };
    let Some(told) = store
        .latest_report_telling_exceptions(run.kind)?
        .and_then(|json| Report::from_json(&json).ok())
    else {
        return Ok(());
    };
    // Every copy of the newest report: [`newest`] may take any of them.
    for report in stored
        .latest
        .iter_mut()
        .chain(stored.reports.iter_mut())
        .chain(stored.previous.iter_mut())
        .filter(|r| r.run_id == run_id)
    {
        report
            .safety
            .exceptions_naming_nobody
            .clone_from(&told.safety.exceptions_naming_nobody);
    }
    Ok(())
}

/// One period's runs as [`collect`] reads them.
#[derive(Default)]
struct Loaded {
    reports: Vec<Report>,
    failed: usize,
    /// The failed runs themselves, to name.
    failed_runs: Vec<crate::store::RunRecord>,
    stopped: usize,
    sweeps: SweepActions,
    unreported: SweepActions,
    /// Runs whose stored report could not be read, with why.
    unreadable: Vec<(i64, String)>,
}

/// Reads the stored periods and builds the digest, its trend against the period
/// of the same length just before.
pub fn build_from_store(
    store: &Store,
    name: &str,
    timezone: Tz,
    now: DateTime<Utc>,
    period: Duration,
    deprovisions: &[DigestDeprovision],
    admin_command: &str,
) -> Result<Digest, DigestError> {
    build_from_store_after(
        store,
        name,
        timezone,
        now,
        period,
        None,
        deprovisions,
        admin_command,
    )
}

/// [`build_from_store`], its trend against what the previous digest covered
/// (`previous`, as the daemon records it), when known.
#[allow(clippy::too_many_arguments)]
pub fn build_from_store_after(
    store: &Store,
    name: &str,
    timezone: Tz,
    now: DateTime<Utc>,
    period: Duration,
    previous: Option<Span>,
    deprovisions: &[DigestDeprovision],
    admin_command: &str,
) -> Result<Digest, DigestError> {
    let mut stored = collect_after(store, now, period, previous)?;
    exceptions_as_last_told(store, &mut stored)?;
    let length = chrono::Duration::from_std(period).unwrap_or_else(|_| chrono::Duration::days(1));
    let decisions: Vec<crate::store::AuditRow> = store
        .audit_trail(crate::store::AuditFilter {
            since: Some(now - length),
            ..crate::store::AuditFilter::default()
        })?
        .into_iter()
        .filter(|row| row.entry.at < now)
        .collect();
    let verified: Vec<DigestVerified> = store
        .verified_deprovisions_since(now - length)?
        .into_iter()
        // Accounts found already without access were no deprovision of ours.
        .filter(|e| !e.found_without_access())
        .filter_map(|e| {
            Some(DigestVerified {
                verified_at: e.verified_at?,
                user_name: e.user_name,
                reason: e.reason.to_string(),
                detected_at: e.detected_at,
                excepted_until: e.excepted_until,
            })
        })
        .collect();
    Ok(Digest::build(&DigestInput {
        name,
        timezone,
        now,
        period,
        previous_span: previous,
        reports: &stored.reports,
        previous: &stored.previous,
        previous_latest: stored.previous_latest.as_ref(),
        latest: stored.latest.as_ref(),
        failed_runs: stored.failed_runs,
        failed: &stored.failed,
        failed_runs_previous: stored.failed_runs_previous,
        deprovisions,
        verified: &verified,
        sweeps: &stored.sweeps,
        sweeps_previous: &stored.sweeps_previous,
        unreported: &stored.unreported,
        stopped_runs: stored.stopped_runs,
        unreported_previous: &stored.unreported_previous,
        stopped_runs_previous: stored.stopped_runs_previous,
        unreadable_previous: stored.unreadable_previous,
        unreadable: &stored.unreadable,
        unreadable_earlier: stored.unreadable_earlier,
        decisions: &decisions,
        admin_command,
    }))
}
