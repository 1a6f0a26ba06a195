//! The drift report every run stores: what differed, what was done about it, and
//! what still needs a human. The JSON form is a stable, versioned schema
//! ([`SCHEMA_VERSION`], documented in the README); the text form is for terminals,
//! Markdown for tickets and chat, HTML for email (the `templated` module). [`digest`]
//! summarises the reports of a period for the scheduled email.
//!
//! [`safety_findings`] is what every renderer shows of the safety net, among it
//! PROTECTED BY PERSON: the accounts a reconcile leaves alone only because the
//! person tied to each is protected (their own userName is not), which no drift
//! item names and so would otherwise never be seen again.

pub mod audit;
pub mod digest;
mod templated;
mod text;

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::apply;
use crate::circuit::{CircuitState, FailedWrite};
use crate::guard::SourceFault;
use crate::model::{DriftItem, DriftKind, ExceptedAccount, ProtectedByPerson, ProtectedLeaver};
use crate::store::ActionState;

pub use templated::{
    RenderError, render_alert_html, render_html, render_html_for_email, render_markdown,
};
pub use text::{render_text, render_text_for_email};

/// Bumped on any incompatible change of the JSON shape.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub run_id: i64,
    /// `plan`, `dry_run` or `reconcile`.
    pub mode: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Where the directory was read from, e.g. `file /etc/seatwarden/directory.json`.
    pub directory: String,
    /// The workspace's SCIM base URL.
    pub workspace: String,
    pub summary: Summary,
    /// Drift found before anything was applied, sorted by kind then person.
    pub drift: Vec<DriftItem>,
    /// Every planned action with its outcome, in plan order.
    pub actions: Vec<ActionOutcome>,
    /// The safety net's findings (issue 6); omitted from the JSON when there are
    /// none, so reports without them read as before.
    #[serde(default, skip_serializing_if = "SafetyReport::is_empty")]
    pub safety: SafetyReport,
}

/// What the safety net did beyond holding actions (those are in `actions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SafetyReport {
    /// The directory snapshot was rejected (empty, or shrank too much): nothing was
    /// planned from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_fault: Option<SourceFault>,
    /// The circuit breaker, when it is not closed (it opened during this run, or was
    /// open so nothing was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<CircuitReport>,
    /// `reconcile --allow-over-threshold` was given: thresholds did not hold anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_over_threshold: bool,
    /// The workspace listing ended short of its `totalResults` twice: accounts it
    /// left out may show as missing (their creates are linked on 409).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workspace_listing_short: bool,
    /// Held actions that only wait for the settle window (no human needed); they are
    /// also counted in `summary.actions_held`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub actions_waiting: usize,
    /// People who lost access while an account that may be theirs is active and
    /// the match is disputed (their userNames): nothing is deactivated until
    /// `seatwarden link` says which account is theirs. No action stands for them,
    /// so without this a run would read as having nothing to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disputed_leavers: Vec<String>,
    /// Accounts left alone only because the person each is tied to is protected,
    /// their own userName not being so ([`ProtectedByPerson`]): never deactivated,
    /// renamed or regrouped, not even when due, and in no drift item. Listed every
    /// run until the account is protected by its own name or tied to its owner
    /// (`link IDENTITY ACCOUNT --replace`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_by_person: Vec<ProtectedByPerson>,
    /// Active accounts that would lose access but for an exception in force
    /// (`safety.exceptions`), with its end and reason: listed every run until it
    /// ends, when the next run (or the sweep) takes the access away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excepted: Vec<ExceptedAccount>,
    /// Active accounts of people who lost access, kept because `safety.protected`
    /// names them for good ([`ProtectedLeaver`]): listed every run until someone
    /// deactivates the account, or unties it from the person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_leavers: Vec<ProtectedLeaver>,
    /// Exceptions in force that name no workspace account and no person in the
    /// directory ([`crate::policy::Protected::exceptions_naming_nobody`]): they
    /// keep nothing, and whoever they were meant for loses access as the policy
    /// says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions_naming_nobody: Vec<crate::model::Exception>,
    /// Whether an exception names nobody could not be told: the directory read
    /// was incomplete or rejected, or the workspace listing short, and some
    /// exception's name was not found in what was read. The list above is then
    /// empty, and the alert and gauge on it stay as the last run that could
    /// tell left them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exceptions_naming_nobody_unknown: bool,
    /// The directory read was incomplete (a SCIM directory's listing ended
    /// short of its `totalResults`), and not refused: who it leaves out is not
    /// known to be gone, so the findings only a plan tells may lack some (a
    /// deleted person's protected account is no PROTECTED LEAVER of such a
    /// read). The daemon's gauges on them are raised by such a run, never
    /// lowered (as by one whose workspace listing was short, which leaves
    /// accounts out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory_incomplete: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl SafetyReport {
    pub fn is_empty(&self) -> bool {
        *self == SafetyReport::default()
    }
}

/// The circuit breaker's state with why it opened and the failing writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitReport {
    #[serde(flatten)]
    pub state: CircuitState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailedWrite>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub identities: usize,
    pub accounts: usize,
    pub managed_accounts: usize,
    pub drift_total: usize,
    /// Every drift kind, zero counts included, so consumers need no defaults.
    pub drift_by_kind: BTreeMap<DriftKind, usize>,
    pub actions_planned: usize,
    pub actions_applied: usize,
    /// Writes that were sent and failed, or could not be verified; never one kept
    /// back unsent (see `actions_not_run`).
    pub actions_failed: usize,
    pub actions_held: usize,
    /// Planned but not attempted: every action of a plan or a dry run; in a
    /// reconcile, those a person rejected or an approval found obsolete, and those
    /// kept back unsent ([`Report::not_sent`]: never reached the workspace, and
    /// the next run plans them again). Never counted in `actions_failed`.
    pub actions_not_run: usize,
    /// Request-level retries after transient failures (429, 5xx, timeouts): the
    /// workspace's and the directory's.
    pub retries: u64,
    /// Actions from an earlier, interrupted run that this run resolved.
    pub recovered: usize,
    /// True when nothing is left to do: no drift needing an action, or every action applied.
    pub converged: bool,
}

/// The final state of an action, as the journal recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Failed,
    Held,
    NotRun,
}

impl Outcome {
    /// What became of an action the journal left in `state` with `last_error`.
    pub fn journaled(state: ActionState, last_error: Option<&str>) -> Outcome {
        match state {
            ActionState::Applied => Outcome::Applied,
            // Kept back (a stop, the breaker, the workspace found down or its
            // token refused by an earlier write): it never reached the workspace,
            // and the next run plans it again. Not run, not a failure.
            ActionState::Failed if apply::not_sent(last_error) => Outcome::NotRun,
            ActionState::Failed => Outcome::Failed,
            ActionState::Held => Outcome::Held,
            ActionState::Planned | ActionState::InFlight => Outcome::NotRun,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Failed => "failed",
            Outcome::Held => "held",
            Outcome::NotRun => "not_run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub seq: u32,
    /// `deactivate`, `create_account`, `add_members`, …
    pub op: String,
    pub reason: DriftKind,
    pub subject: String,
    pub detail: String,
    pub outcome: Outcome,
    pub attempts: u32,
    /// The provider's message for failures, the guard's rule for held actions;
    /// for a deactivation applied whose account was already gone from the
    /// workspace, that note ([`crate::apply::ALREADY_GONE`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Held only until the settle window has passed: nothing for a human to
    /// approve (`seatwarden approve` would skip the wait).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
    /// When a waiting action's drift was first seen and when it may be acted on:
    /// kept as times, not only in `error`'s UTC text, so the renderers show them
    /// on the report's clock. Absent from reports of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_window: Option<SettleWindow>,
    /// A retention delete's: since when the account has been deactivated, so the
    /// renderers show the time `detail` states in UTC on the report's clock.
    /// Absent from other actions and from reports of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_since: Option<DateTime<Utc>>,
}

/// Since when the account a retention delete removes has been deactivated
/// ([`ActionOutcome::deactivated_since`]); none for any other action.
pub fn deactivated_since_of(kind: &crate::model::ActionKind) -> Option<DateTime<Utc>> {
    match *kind {
        crate::model::ActionKind::Delete {
            deactivated_since, ..
        } => deactivated_since,
        _ => None,
    }
}

/// `detail` with the retention clock it states in UTC shown on `tz`'s clock.
pub(crate) fn on_clock(
    detail: &str,
    since: Option<DateTime<Utc>>,
    tz: chrono_tz::Tz,
) -> Cow<'_, str> {
    let Some(since) = since else {
        return Cow::Borrowed(detail);
    };
    let utc = crate::plan::retention_clock_utc(since);
    if detail.contains(&utc) {
        Cow::Owned(detail.replacen(&utc, &templated::timestamp(since, tz), 1))
    } else {
        Cow::Borrowed(detail)
    }
}

/// The settle window an action waits for (see [`crate::model::HoldReason::Settling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleWindow {
    pub first_seen: DateTime<Utc>,
    pub settles_at: DateTime<Utc>,
}

impl SettleWindow {
    /// The window of a hold that is one.
    pub fn of(hold: &crate::model::HoldReason) -> Option<SettleWindow> {
        match *hold {
            crate::model::HoldReason::Settling {
                first_seen,
                settles_at,
            } => Some(SettleWindow {
                first_seen,
                settles_at,
            }),
            _ => None,
        }
    }
}

/// Why an action of a reconcile that has no error of its own was not sent: the
/// run's writes stopped (a stop, the breaker, the workspace down, its token
/// refused) before the phase it belongs to, which stays planned in the journal.
pub const NOT_SENT_UNREACHED: &str =
    "not sent: the run's writes had stopped before its turn; the next run plans it again";

/// [`NOT_SENT_UNREACHED`] in a few words, as counts of actions not sent name it
/// (beside [`apply::KeptBack::reason`]).
pub(crate) const UNREACHED_REASON: &str = "the run's writes had stopped before their turn";

impl ActionOutcome {
    /// Failed, or held for a human (not merely waiting for the settle window).
    pub fn needs_attention(&self) -> bool {
        self.outcome == Outcome::Failed || (self.outcome == Outcome::Held && !self.waiting)
    }

    /// `detail` as a person reads it: a retention delete's time on `tz`'s clock,
    /// as every other time of the report (the stored detail, and JSON, say UTC).
    pub fn detail_on(&self, tz: chrono_tz::Tz) -> Cow<'_, str> {
        on_clock(&self.detail, self.deactivated_since, tz)
    }

    /// Why it was held, failed or not run, as a person reads it: the settle
    /// window's times on `tz`'s clock, as every other time of the report. One
    /// that waits no more (an approval's re-check refused it) says why in `error`.
    pub fn why(&self, tz: chrono_tz::Tz) -> Option<String> {
        match (&self.settle_window, self.outcome) {
            (Some(window), Outcome::Held) if self.waiting => Some(format!(
                "waiting for the settle window: first seen {}, acted on from {}",
                templated::timestamp(window.first_seen, tz),
                templated::timestamp(window.settles_at, tz)
            )),
            _ => self.error.clone(),
        }
    }
}

impl Report {
    /// Indented, for people and `seatwarden report --format json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Without indentation, as the state database keeps it: a first run over 10k
    /// people writes tens of thousands of drift items, and the indentation would be
    /// a third of the text. Read back with [`Report::from_json`].
    pub fn to_stored_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The drift items as a person reads them on `tz`'s clock: a retention-expired
    /// item states its delete's time as the action does ([`ActionOutcome::detail_on`]).
    pub fn drift_on(&self, tz: chrono_tz::Tz) -> Vec<DriftItem> {
        self.drift
            .iter()
            .map(|item| self.item_on(item, tz))
            .collect()
    }

    /// One drift item of this report on `tz`'s clock (see [`Report::drift_on`]).
    pub fn item_on(&self, item: &DriftItem, tz: chrono_tz::Tz) -> DriftItem {
        let since = (item.kind == DriftKind::RetentionExpired)
            .then(|| {
                self.actions
                    .iter()
                    .find(|a| a.reason == item.kind && a.detail == item.detail)
                    .and_then(|a| a.deactivated_since)
            })
            .flatten();
        DriftItem {
            detail: on_clock(&item.detail, since, tz).into_owned(),
            ..item.clone()
        }
    }

    /// The actions this run kept back unsent: in a reconcile (or the approval
    /// that updated its report), not run, and not for a decision (rejected, found
    /// obsolete): journaled "not sent" ([`apply::KeptBack`]), or left planned
    /// because the writes had stopped before their phase. None reached the
    /// workspace, none is a failure, and the next run plans them again. A plan or
    /// a dry run sends nothing by design: none of its actions counts.
    pub fn not_sent(&self) -> impl Iterator<Item = &ActionOutcome> {
        self.actions.iter().filter(|a| self.kept_back(a))
    }

    /// Whether `action` of this report is one [`Report::not_sent`] counts.
    pub fn kept_back(&self, action: &ActionOutcome) -> bool {
        self.mode == "reconcile"
            && action.outcome == Outcome::NotRun
            && action
                .error
                .as_deref()
                .is_none_or(|error| apply::not_sent(Some(error)))
    }

    /// How many actions [`Report::not_sent`] kept back, by why (in a few words),
    /// most first.
    pub fn not_sent_by_reason(&self) -> Vec<(&'static str, usize)> {
        count_by_reason(self.not_sent().map(not_sent_reason))
    }

    /// Why `action` was held, failed or not run, as [`ActionOutcome::why`] says,
    /// and for one this reconcile kept back without an error of its own (its phase
    /// was never reached), [`NOT_SENT_UNREACHED`].
    pub fn why_of(&self, action: &ActionOutcome, tz: chrono_tz::Tz) -> Option<String> {
        action.why(tz).or_else(|| {
            self.kept_back(action)
                .then(|| NOT_SENT_UNREACHED.to_owned())
        })
    }

    /// What the renderers show as `action`'s status: `planned` for a plan's or a
    /// dry run's, `not_sent` for one this reconcile kept back
    /// ([`Report::not_sent`]; the JSON keeps `not_run`), else its outcome.
    pub fn status_of(&self, action: &ActionOutcome) -> &'static str {
        match action.outcome {
            Outcome::NotRun if self.mode != "reconcile" => "planned",
            Outcome::NotRun if self.kept_back(action) => "not_sent",
            other => other.as_str(),
        }
    }

    /// Held actions that wait for a human: held, less those only waiting for the
    /// settle window and those held because the directory read was incomplete
    /// ([`Report::held_incomplete_directory`]), which `approve` refuses.
    /// Nor those an approval's re-check refused ([`Report::refused_by_approval`]).
    pub fn awaiting_approval(&self) -> usize {
        self.summary
            .actions_held
            .saturating_sub(self.safety.actions_waiting)
            .saturating_sub(self.held_incomplete_directory())
            .saturating_sub(self.refused_by_approval())
    }

    /// Held actions `seatwarden approve`'s re-check refused (each `error` says
    /// why, after [`crate::model::REFUSED_BY_APPROVAL`]): still held, but nothing
    /// waits for an approval, which would re-check the same; the next reconcile
    /// plans from the directory and workspace as they are then. Not those of an
    /// incomplete directory read, counted there.
    pub fn refused_by_approval(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.refused_by_approval())
            .count()
    }

    /// Held actions someone rejected (`seatwarden reject RUN`; `approve` and
    /// `reject` bring the stored report up to date): not run, and this run never
    /// runs them, so the headline and the subject count them as rejected, not as
    /// planned ones still to come. A later run plans again what is still due.
    pub fn rejected(&self) -> usize {
        self.actions.iter().filter(|a| a.rejected()).count()
    }

    /// Held actions an approval found done already (obsolete): nothing was
    /// sent, and nothing is left to do about them.
    pub fn obsolete_when_approved(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.obsolete_when_approved())
            .count()
    }

    /// Held actions planned from an incomplete directory read
    /// ([`crate::model::HoldReason::IncompleteDirectory`]): nothing for a human to
    /// approve (`approve` refuses them, as someone only missing from the read looks
    /// gone); the next reconcile from a whole read decides. Told by their hold's
    /// text, which reports of every version carry.
    pub fn held_incomplete_directory(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.held_incomplete_directory())
            .count()
    }
}

impl ActionOutcome {
    /// Rejected while held: see [`Report::rejected`]. Told by its `error`, as
    /// `approve` and `reject` write it (`rejected (ADMIN reject): …`).
    pub fn rejected(&self) -> bool {
        self.outcome == Outcome::NotRun
            && self.error.as_deref().is_some_and(|e| {
                e.starts_with("rejected (") && e.ends_with(crate::model::REJECTED_NEVER_APPLIED)
            })
    }

    /// Found done already by an approval: see [`Report::obsolete_when_approved`].
    pub fn obsolete_when_approved(&self) -> bool {
        self.outcome == Outcome::NotRun
            && self
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(crate::model::OBSOLETE_WHEN_APPROVED))
    }

    /// Held, refused by an approval's re-check: see [`Report::refused_by_approval`].
    pub fn refused_by_approval(&self) -> bool {
        self.outcome == Outcome::Held
            && !self.held_incomplete_directory()
            && self
                .error
                .as_deref()
                .is_some_and(|e| e.contains(crate::model::REFUSED_BY_APPROVAL))
    }

    /// Held because its run's directory read was incomplete: see
    /// [`Report::held_incomplete_directory`].
    pub fn held_incomplete_directory(&self) -> bool {
        self.outcome == Outcome::Held
            && self
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(crate::model::INCOMPLETE_DIRECTORY_HOLD))
    }
}

/// `the next run plans it again`, or `them` for several.
fn planned_again(n: usize) -> &'static str {
    if n == 1 {
        "the next run plans it again"
    } else {
        "the next run plans them again"
    }
}

/// Why an action [`Report::not_sent`] counts was kept back, in a few words.
fn not_sent_reason(action: &ActionOutcome) -> &'static str {
    apply::KeptBack::of(action.error.as_deref()).map_or(UNREACHED_REASON, apply::KeptBack::reason)
}

/// How many of `whys` (the reasons of actions kept back unsent) say each, most
/// first.
pub fn count_by_reason(whys: impl Iterator<Item = &'static str>) -> Vec<(&'static str, usize)> {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for why in whys {
        *counts.entry(why).or_default() += 1;
    }
    let mut counts: Vec<(&'static str, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
}

/// `7 actions not sent because the workspace stopped answering`, or with
/// several reasons `7 actions not sent (5 because …, 2 because …)`: the count of
/// a report's (or a period's) actions kept back unsent, with why.
pub fn not_sent_text<S: AsRef<str>>(by_reason: &[(S, usize)]) -> String {
    let total: usize = by_reason.iter().map(|(_, n)| n).sum();
    let actions = plural(total, "action", "actions");
    match by_reason {
        [(why, _)] => format!("{actions} not sent because {}", why.as_ref()),
        _ => {
            let whys: Vec<String> = by_reason
                .iter()
                .map(|(why, n)| format!("{n} because {}", why.as_ref()))
                .collect();
            format!("{actions} not sent ({})", whys.join(", "))
        }
    }
}

/// [`Report::awaiting_approval`] of a stored report, read without building it:
/// `/metrics` asks at every scrape, and the report of a run that provisioned a
/// whole workspace lists every action (megabytes).
pub fn awaiting_approval_in(json: &str) -> Result<usize, serde_json::Error> {
    Ok(held_in(json)?.awaiting_approval)
}

/// A stored report's held actions by what releases them, read without building
/// the report ([`awaiting_approval_in`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldCounts {
    /// [`Report::awaiting_approval`].
    pub awaiting_approval: usize,
    /// [`Report::held_incomplete_directory`].
    pub incomplete_directory: usize,
    /// [`Report::refused_by_approval`].
    pub refused_by_approval: usize,
}

/// [`HeldCounts`] of a stored report. The actions are looked at only when
/// something is held beyond the settle window's waits.
pub fn held_in(json: &str) -> Result<HeldCounts, serde_json::Error> {
    #[derive(Deserialize)]
    struct Headline {
        summary: Held,
        #[serde(default)]
        safety: Waiting,
    }
    #[derive(Deserialize)]
    struct Held {
        actions_held: usize,
    }
    #[derive(Deserialize, Default)]
    struct Waiting {
        #[serde(default)]
        actions_waiting: usize,
    }
    #[derive(Deserialize)]
    struct Actions<'a> {
        #[serde(borrow)]
        actions: Vec<Row<'a>>,
    }
    #[derive(Deserialize)]
    struct Row<'a> {
        outcome: Outcome,
        #[serde(default, borrow)]
        error: Option<Cow<'a, str>>,
    }
    let headline: Headline = serde_json::from_str(json)?;
    let beyond_waiting = headline
        .summary
        .actions_held
        .saturating_sub(headline.safety.actions_waiting);
    if beyond_waiting == 0 {
        return Ok(HeldCounts::default());
    }
    let actions = serde_json::from_str::<Actions<'_>>(json)?.actions;
    let held_for = |why: &dyn Fn(&str) -> bool| {
        actions
            .iter()
            .filter(|row| row.outcome == Outcome::Held && row.error.as_deref().is_some_and(why))
            .count()
    };
    // As `ActionOutcome::held_incomplete_directory` and `refused_by_approval` tell them.
    let incomplete = held_for(&|e| e.starts_with(crate::model::INCOMPLETE_DIRECTORY_HOLD));
    let refused = held_for(&|e| {
        !e.starts_with(crate::model::INCOMPLETE_DIRECTORY_HOLD)
            && e.contains(crate::model::REFUSED_BY_APPROVAL)
    });
    Ok(HeldCounts {
        awaiting_approval: beyond_waiting
            .saturating_sub(incomplete)
            .saturating_sub(refused),
        incomplete_directory: incomplete,
        refused_by_approval: refused,
    })
}

/// `text` safe for a terminal or a plain-text email: control characters become
/// U+FFFD, so an escape sequence in a name someone gave an account by hand cannot
/// drive the reader's terminal. Line breaks are kept only with `lines` (a whole
/// rendered text); inside one field they would forge lines of their own.
///
/// Bidi embeddings, overrides and isolates (and the marks) become U+FFFD too:
/// they reorder what is shown, so a name can read as another; and so do line
/// and paragraph separators, which break lines where the reader expects none
/// ([`crate::model::acts_on_terminal`]). A command printed for a person to
/// paste has its ids escaped already ([`crate::model::shell_word`]), and
/// passes through whole.
pub fn printable(text: &str, lines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| crate::model::acts_on_terminal(c) && !(lines && (c == '\n' || c == '\t'));
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if unsafe_char(c) { '\u{fffd}' } else { c })
            .collect(),
    )
}

/// `json` (serde_json's text) with each character that
/// [`crate::model::acts_on_terminal`] and that JSON leaves raw (DEL, the C1
/// controls, bidi controls, line and paragraph separators) written as its
/// `\uXXXX` escape: the same value to every JSON reader, and nothing that drives
/// or reorders the terminal it is printed on. serde_json escapes the C0
/// controls inside strings itself, so a raw line break or tab left is layout.
pub fn json_for_terminal(json: String) -> String {
    let escaped = |c: char| crate::model::acts_on_terminal(c) && u32::from(c) >= 0x7f;
    if !json.chars().any(escaped) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escaped(c) {
            // Every such character is in the BMP: one escape each.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `report` with every field that comes from the directory, the workspace or a
/// provider's answer made [`printable`], for the text renderer.
fn printable_report(report: &Report) -> Report {
    let field = |s: &mut String| {
        if let std::borrow::Cow::Owned(clean) = printable(s, false) {
            *s = clean;
        }
    };
    let mut report = report.clone();
    for item in &mut report.drift {
        field(&mut item.user_name);
        field(&mut item.detail);
    }
    for action in &mut report.actions {
        field(&mut action.subject);
        field(&mut action.detail);
        if let Some(error) = &mut action.error {
            field(error);
        }
    }
    // Directory userNames, listed under the DISPUTED LEAVERS finding.
    for leaver in &mut report.safety.disputed_leavers {
        field(leaver);
    }
    // PROTECTED BY PERSON's ids and userNames are left as they are: its line
    // makes them printable where it shows them, and names the ids whole in the
    // commands it prints ([`protected_by_person_line`]).
    // The account's from the workspace, the person's from the directory, under
    // EXCEPTIONS.
    for kept in &mut report.safety.excepted {
        field(&mut kept.account_id);
        field(&mut kept.user_name);
        if let Some(identity) = &mut kept.identity_id {
            field(identity);
        }
        // A duplicate's quotes the person's directory userName.
        field(&mut kept.why);
        // The configuration's, but a multi-line TOML string would still forge lines.
        field(&mut kept.exception.reason);
    }
    // The account's from the workspace, the person's id from the directory,
    // under PROTECTED LEAVERS.
    for kept in &mut report.safety.protected_leavers {
        field(&mut kept.account_id);
        field(&mut kept.user_name);
        field(&mut kept.identity_id);
        // A duplicate's quotes the person's directory userName.
        field(&mut kept.why);
    }
    for nobody in &mut report.safety.exceptions_naming_nobody {
        field(&mut nobody.user_name);
        field(&mut nobody.reason);
    }
    if let Some(circuit) = &mut report.safety.circuit {
        if let Some(reason) = &mut circuit.reason {
            field(reason);
        }
        for failure in &mut circuit.failures {
            field(&mut failure.subject);
            field(&mut failure.message);
        }
    }
    report
}

/// One field of a line-structured text ([`printable`] without line breaks).
pub fn printable_field(text: &str) -> String {
    printable(text, false).into_owned()
}

/// [`count_by_kind`] of borrowed items (e.g. [`residual_drift`]).
pub fn count_by_kind_of(drift: &[&DriftItem]) -> BTreeMap<DriftKind, usize> {
    tally(drift.iter().copied())
}

/// Counts drift per kind with every kind present.
pub fn count_by_kind(drift: &[DriftItem]) -> BTreeMap<DriftKind, usize> {
    tally(drift.iter())
}

fn tally<'a>(drift: impl Iterator<Item = &'a DriftItem>) -> BTreeMap<DriftKind, usize> {
    let mut counts: BTreeMap<DriftKind, usize> =
        DriftKind::ALL.into_iter().map(|k| (k, 0)).collect();
    for item in drift {
        *counts.entry(item.kind).or_default() += 1;
    }
    counts
}

/// How a headline should read: good news, something to look at, or a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    Good,
    Warn,
    Bad,
}

/// One finding of the safety net, as every renderer shows it: a label (none for
/// plain notes), its text, and lines under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SafetyFinding {
    pub label: Option<&'static str>,
    pub tone: Tone,
    pub text: String,
    pub details: Vec<String>,
}

/// `at` on `tz`'s wall clock with its UTC offset and the zone's abbreviation
/// (`2026-11-29 10:00:00 +01:00 (CET)`, [`crate::model::clock_time`]), as the
/// reports show every time.
pub(crate) fn local_time(at: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    templated::timestamp(at, tz)
}

/// [`local_time`] to the minute (`2026-11-29 10:00 +01:00 (CET)`), as digests and alerts
/// show times in their prose.
pub(crate) fn local_minute(at: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    crate::model::clock_time(at, tz, "%Y-%m-%d %H:%M")
}

/// How long until an end `left` away, for people: whole days from two days
/// on, below that as [`crate::sla::latency_text`] gives it (`2 h 5 min`).
pub(crate) fn time_left(left: chrono::TimeDelta) -> String {
    if left >= chrono::TimeDelta::days(2) {
        format!("{} days", left.num_days())
    } else {
        crate::sla::latency_text(left)
    }
}

/// The breaker's state with its times on `tz`'s clock (its `Display` is UTC, for logs).
pub(crate) fn circuit_state_text(state: &CircuitState, tz: chrono_tz::Tz) -> String {
    let at = |t| templated::timestamp(t, tz);
    match *state {
        CircuitState::Closed => "closed".to_owned(),
        CircuitState::Open { since, until } => {
            format!("open since {} until {}", at(since), at(until))
        }
        CircuitState::HalfOpen { since } => format!("half-open since {}", at(since)),
    }
}

/// What `report.safety` holds, in the order the renderers show it, times on `tz`'s
/// clock and commands run as `admin_command` (`report.admin_command`); empty when
/// the safety net found nothing.
pub fn safety_findings(
    report: &Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
) -> Vec<SafetyFinding> {
    let safety = &report.safety;
    let mut findings = Vec::new();
    let finding = |label, tone, text: String| SafetyFinding {
        label: Some(label),
        tone,
        text,
        details: Vec::new(),
    };
    if let Some(fault) = &safety.source_fault {
        let mut line = finding("SOURCE FAULT", Tone::Bad, fault.to_string());
        if matches!(fault, SourceFault::Shrank { .. }) {
            line.details.push(format!(
                "if the directory really shrank (a layoff, a narrower scope), \
                 `{admin_command} reconcile --accept-directory` accepts it once (audited)"
            ));
        }
        findings.push(line);
    }
    if let Some(circuit) = &safety.circuit {
        let mut line = finding(
            "CIRCUIT BREAKER",
            Tone::Bad,
            format!(
                "{}{}",
                circuit_state_text(&circuit.state, tz),
                circuit
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        );
        line.details = circuit
            .failures
            .iter()
            .map(|f| format!("{} {}: {}", f.op, f.subject, f.message))
            .collect();
        findings.push(line);
    }
    if safety.allow_over_threshold {
        findings.push(finding(
            "OVERRIDE",
            Tone::Warn,
            "thresholds overridden for this run (--allow-over-threshold)".to_owned(),
        ));
    }
    if safety.workspace_listing_short {
        findings.push(finding(
            "SHORT LISTING",
            Tone::Warn,
            "the workspace listing ended short of its totalResults, twice: accounts it left \
             out may show as missing"
                .to_owned(),
        ));
    }
    if !safety.disputed_leavers.is_empty() {
        let mut line = finding(
            "DISPUTED LEAVERS",
            Tone::Warn,
            format!(
                "{} lost access but still can get in: which active account is theirs is disputed, and \
                 none is deactivated until `{admin_command} link IDENTITY ACCOUNT` says which",
                plural(safety.disputed_leavers.len(), "person", "people")
            ),
        );
        line.details = safety.disputed_leavers.clone();
        findings.push(line);
    }
    if !safety.protected_by_person.is_empty() {
        let n = safety.protected_by_person.len();
        let mut line = finding(
            "PROTECTED BY PERSON",
            Tone::Warn,
            format!(
                "{} left alone only because the person tied to {} is protected (safety.protected \
                 / protected_groups name the person, not the account): seatwarden never \
                 deactivates, renames or regroups {}, not even when due. If an account is \
                 that person's, add its userName to safety.protected; if it is someone \
                 else's, `{admin_command} link IDENTITY ACCOUNT --replace` ties it to them; \
                 if it is nobody's (a contractor's the directory does not have), \
                 `{admin_command} unlink ACCOUNT` undoes a stored link; `{admin_command} \
                 explain ACCOUNT` shows both",
                plural(n, "account", "accounts"),
                if n == 1 { "it" } else { "each" },
                if n == 1 { "it" } else { "them" },
            ),
        );
        line.details = safety
            .protected_by_person
            .iter()
            .map(|p| protected_by_person_line(p, admin_command))
            .collect();
        findings.push(line);
    }
    if !safety.protected_leavers.is_empty() {
        let n = safety.protected_leavers.len();
        let mut line = finding(
            "PROTECTED LEAVERS",
            Tone::Warn,
            format!(
                "{} of people who lost access {} active because safety.protected names {} \
                 for good: seatwarden never deactivates a protected account. Deactivate {} \
                 in the workspace by hand, or take {} out of safety.protected and the next \
                 reconcile deactivates {}; `{admin_command} explain ACCOUNT` shows both sides",
                plural(n, "account", "accounts"),
                if n == 1 { "is" } else { "are" },
                if n == 1 { "it" } else { "them" },
                if n == 1 { "it" } else { "them" },
                if n == 1 { "its name" } else { "their names" },
                if n == 1 { "it" } else { "them" },
            ),
        );
        line.details = safety
            .protected_leavers
            .iter()
            .map(|p| {
                format!(
                    "account {} ({}), identity {}: {}",
                    p.account_id, p.user_name, p.identity_id, p.why
                )
            })
            .collect();
        findings.push(line);
    }
    if !safety.excepted.is_empty() {
        let n = safety.excepted.len();
        let mut line = finding(
            "EXCEPTIONS",
            Tone::Warn,
            format!(
                "{} active only because an exception in safety.exceptions keeps {}: \
                 seatwarden takes the access away when the exception ends",
                plural(n, "account is", "accounts are"),
                if n == 1 { "it" } else { "them" },
            ),
        );
        line.details = safety
            .excepted
            .iter()
            .map(|kept| excepted_line(kept, tz))
            .collect();
        findings.push(line);
    }
    if !safety.exceptions_naming_nobody.is_empty() {
        let n = safety.exceptions_naming_nobody.len();
        let mut line = finding(
            "EXCEPTION NAMES NOBODY",
            Tone::Warn,
            format!(
                "{} in safety.exceptions {} no workspace account and no person in the \
                 directory, so {} nothing: a typo, or someone known by another name? Give \
                 the account's userName or the person's directory userName; until then, \
                 whoever it was meant for loses access as the policy says",
                plural(n, "exception", "exceptions"),
                if n == 1 { "names" } else { "name" },
                if n == 1 { "it keeps" } else { "they keep" },
            ),
        );
        line.details = safety
            .exceptions_naming_nobody
            .iter()
            .map(|e| {
                format!(
                    "{}, until {}: {}",
                    e.user_name,
                    local_minute(e.until, tz),
                    e.reason
                )
            })
            .collect();
        findings.push(line);
    }
    let not_sent = report.not_sent_by_reason();
    if !not_sent.is_empty() {
        findings.push(finding(
            "NOT SENT",
            Tone::Warn,
            format!(
                "{}: kept back, never sent to the workspace (no failure), and {}",
                not_sent_text(&not_sent),
                planned_again(not_sent.iter().map(|(_, n)| n).sum())
            ),
        ));
    }
    if safety.actions_waiting > 0 {
        findings.push(SafetyFinding {
            label: None,
            tone: Tone::Warn,
            text: format!(
                "{} of the held actions only {} for the settle window",
                safety.actions_waiting,
                if safety.actions_waiting == 1 {
                    "waits"
                } else {
                    "wait"
                }
            ),
            details: Vec::new(),
        });
    }
    let incomplete = report.held_incomplete_directory();
    if incomplete > 0 {
        findings.push(finding(
            "INCOMPLETE DIRECTORY",
            Tone::Warn,
            format!(
                "{} held because the directory read was incomplete: someone only missing from \
                 it looks gone, so no approval sends {}; `{admin_command} reconcile` again once \
                 the directory reads whole, and it plans what is really due",
                plural(incomplete, "action", "actions"),
                if incomplete == 1 { "it" } else { "them" }
            ),
        ));
    }
    findings
}

/// One account under EXCEPTIONS: the account, why it would lose access, and the
/// exception's end (on `tz`'s clock) and reason.
pub fn excepted_line(kept: &ExceptedAccount, tz: chrono_tz::Tz) -> String {
    let person = kept
        .identity_id
        .as_ref()
        .map(|id| format!(", identity {id}"))
        .unwrap_or_default();
    format!(
        "account {} ({}{person}): {}; kept until {}: {}",
        kept.account_id,
        kept.user_name,
        kept.why,
        local_minute(kept.exception.until, tz),
        kept.exception.reason,
    )
}

/// One account under PROTECTED BY PERSON: the account, the protected person,
/// how they are tied, whether the person still has access in the directory, and
/// the commands that settle it ([`protected_by_person_remedies`]).
pub fn protected_by_person_line(p: &ProtectedByPerson, admin_command: &str) -> String {
    let lost = p
        .lost
        .map(|reason| format!("; they lost access ({reason})"))
        .unwrap_or_default();
    format!(
        "account {} ({}, {}) of protected {} (identity {}), {}{lost}: {}",
        printable(&p.account_id, false),
        printable(&p.account_user_name, false),
        if p.active { "active" } else { "deactivated" },
        printable(&p.user_name, false),
        printable(&p.identity_id, false),
        p.tie(),
        protected_by_person_remedies(p, admin_command),
    )
}

/// What settles an account protected only through its person, as the report and
/// `explain` name it: theirs → protect its userName; someone else's → `link
/// OWNER ACCOUNT --replace`; and, for a stored link (the only tie `unlink`
/// removes: a rule's match, a duplicate's too, is found again each run), nobody's → `unlink
/// ACCOUNT`, after which the account is an orphan like any other.
pub fn protected_by_person_remedies(p: &ProtectedByPerson, admin_command: &str) -> String {
    let nobodys = if p.matched_by.is_none() {
        format!(
            "; nobody's → `{}`",
            crate::model::admin_command_line(admin_command, "unlink", &[&p.account_id], &[])
        )
    } else {
        String::new()
    };
    format!(
        "theirs → add {} to safety.protected; someone else's → `{}`{nobodys}",
        printable(&p.account_user_name, false),
        crate::model::admin_command_line(
            admin_command,
            "link",
            &["OWNER", &p.account_id],
            &["--replace"]
        ),
    )
}

/// The one-line verdict every renderer leads with. When something is failed,
/// held or waiting, what the run did apply comes first: a leaver deactivated while
/// a new hire's create waits is news, not "nothing happened". A command it names
/// is run as `admin_command` (`report.admin_command`). An exception naming
/// nobody is told whatever else the run did: it makes the run need attention
/// ([`State::of`]), so the headline never reads as good news beside it.
pub fn headline(report: &Report, admin_command: &str) -> (Tone, String) {
    let (tone, text) = headline_of_the_run(report, admin_command);
    let s = &report.summary;
    let n = report.safety.exceptions_naming_nobody.len();
    if n == 0 {
        return (tone, text);
    }
    let nobody = format!(
        "{} nobody, and so {} nobody — see EXCEPTION NAMES NOBODY",
        plural(n, "exception names", "exceptions name"),
        if n == 1 { "keeps" } else { "keep" }
    );
    let text = if s.actions_planned == 0 && s.drift_total == 0 && tone != Tone::Bad {
        // "In sync" is what the exception makes untrue.
        format!("nothing to do, but {nobody}")
    } else {
        format!("{text}; {nobody}")
    };
    let tone = if tone == Tone::Good { Tone::Warn } else { tone };
    (tone, text)
}

/// [`headline`] but for exceptions naming nobody.
fn headline_of_the_run(report: &Report, admin_command: &str) -> (Tone, String) {
    let s = &report.summary;
    let actions = |n| plural(n, "action", "actions");
    let waiting = report.safety.actions_waiting;
    let incomplete = report.held_incomplete_directory();
    let refused = report.refused_by_approval();
    let rejected = report.rejected();
    let obsolete = report.obsolete_when_approved();
    let awaiting = s
        .actions_held
        .saturating_sub(waiting)
        .saturating_sub(incomplete)
        .saturating_sub(refused);
    // What someone decided on while it was held, after what still waits: these
    // are not "planned" any more (this run never sends them).
    let decided_too = decided_text(rejected, obsolete)
        .map(|decided| format!("; {decided}"))
        .unwrap_or_default();
    // A plan or a dry run holds nothing: it shows what the guard would hold, and
    // nothing of it waits for a human (`approve` refuses such a run).
    let preview = report.mode != "reconcile";
    let applied_then = |rest: String| {
        if s.actions_applied > 0 {
            format!(
                "{} applied and verified; {rest}",
                actions(s.actions_applied)
            )
        } else {
            rest
        }
    };
    let not_sent = report.not_sent_by_reason();
    let not_sent_count: usize = not_sent.iter().map(|(_, n)| n).sum();
    if let Some(fault) = &report.safety.source_fault {
        (Tone::Bad, format!("source fault: {fault}"))
    } else if s.actions_failed > 0 {
        let kept_back = if not_sent_count > 0 {
            format!(
                "; {not_sent_count} not sent ({})",
                planned_again(not_sent_count)
            )
        } else {
            String::new()
        };
        (
            Tone::Bad,
            applied_then(format!("{} failed{kept_back}", actions(s.actions_failed))),
        )
    } else if not_sent_count > 0 {
        // A stop is the operator's; the breaker, an outage or a refused token
        // stopped the writes against the run's will.
        let stopped_only = report
            .not_sent()
            .all(|a| apply::KeptBack::of(a.error.as_deref()) == Some(apply::KeptBack::Stopping));
        (
            if stopped_only { Tone::Warn } else { Tone::Bad },
            applied_then(format!(
                "{}; {}",
                not_sent_text(&not_sent),
                planned_again(not_sent_count)
            )),
        )
    } else if awaiting > 0 && preview {
        (
            Tone::Warn,
            format!(
                "{} would be held by the guard: a reconcile would wait for `{admin_command} approve`{}",
                actions(awaiting),
                incomplete_too(incomplete)
            ),
        )
    } else if awaiting > 0 {
        (
            Tone::Warn,
            applied_then(format!(
                "{} held by the guard — needs a human{}{decided_too}",
                actions(awaiting),
                incomplete_too(incomplete)
            )),
        )
    } else if refused > 0 {
        // Approving again re-checks the same workspace and directory: nothing
        // waits for a human's approval, and each action says why it was refused.
        (
            Tone::Warn,
            applied_then(format!(
                "{} held: `{admin_command} approve {}` refused {} (each says why) — nothing \
                 to approve; the next reconcile decides{}{decided_too}",
                actions(refused),
                report.run_id,
                if refused == 1 { "it" } else { "them" },
                incomplete_too(incomplete)
            )),
        )
    } else if incomplete > 0 {
        // Nothing to approve (`approve` refuses them): what releases them is a
        // reconcile from a whole read, and what needs looking at is the directory.
        (
            Tone::Warn,
            applied_then(format!(
                "{} {} because the directory read was incomplete — nothing to approve; \
                 `{admin_command} reconcile` again once the directory reads whole{decided_too}",
                actions(incomplete),
                if preview { "would be held" } else { "held" }
            )),
        )
    } else if !report.safety.disputed_leavers.is_empty() {
        let leavers = report.safety.disputed_leavers.len();
        (
            Tone::Warn,
            applied_then(format!(
                "{} still {} access (disputed match) — needs `{admin_command} link`{decided_too}",
                plural(leavers, "leaver", "leavers"),
                if leavers == 1 { "has" } else { "have" }
            )),
        )
    } else if !report.safety.protected_leavers.is_empty() {
        let kept = report.safety.protected_leavers.len();
        (
            Tone::Warn,
            applied_then(format!(
                "{} kept active by safety.protected — see PROTECTED LEAVERS{decided_too}",
                plural(kept, "leaver's account", "leavers' accounts"),
            )),
        )
    } else if s.actions_held > 0 {
        let wait = match (preview, s.actions_held) {
            (true, _) => "would wait",
            (false, 1) => "waits",
            (false, _) => "wait",
        };
        (
            Tone::Warn,
            applied_then(format!(
                "{} {wait} for the settle window{decided_too}",
                actions(s.actions_held)
            )),
        )
    } else if let Some(decided) = (!preview)
        .then(|| decided_text(rejected, obsolete))
        .flatten()
    {
        // Rejected or found done when approved: this run never sends them, so
        // "N actions planned" would read as if they were still to come.
        (
            if rejected > 0 { Tone::Warn } else { Tone::Good },
            applied_then(decided),
        )
    } else if s.actions_planned == 0
        && s.drift_total == 0
        && !report.safety.protected_by_person.is_empty()
    {
        // Nothing differs, but only because a protected person shields these.
        let n = report.safety.protected_by_person.len();
        (
            Tone::Warn,
            format!(
                "nothing to do, but {} left alone only because {} protected — see PROTECTED \
                 BY PERSON",
                plural(n, "account is", "accounts are"),
                if n == 1 {
                    "its person is"
                } else {
                    "their people are"
                }
            ),
        )
    } else if s.actions_planned == 0 && s.drift_total == 0 && !report.safety.excepted.is_empty() {
        // In line with the policy, exceptions included: said, as someone the
        // directory says has left still has access.
        (
            Tone::Good,
            format!(
                "in sync; {} kept active by an exception — see EXCEPTIONS",
                plural(report.safety.excepted.len(), "account", "accounts")
            ),
        )
    } else if s.actions_planned == 0 && s.drift_total == 0 {
        (Tone::Good, "in sync".to_owned())
    } else if s.actions_planned == 0 {
        (
            Tone::Warn,
            format!(
                "nothing to do; {} to review",
                plural(s.drift_total, "drift item", "drift items")
            ),
        )
    } else if report.mode == "reconcile" && s.converged {
        let left = residual_drift(report).len();
        let review = if left > 0 {
            format!(
                "; {} left to review",
                plural(left, "drift item", "drift items")
            )
        } else {
            String::new()
        };
        (
            Tone::Good,
            format!(
                "converged: {} applied and verified{review}",
                actions(s.actions_applied)
            ),
        )
    } else {
        (
            Tone::Warn,
            format!(
                "{}, {} planned",
                plural(s.drift_total, "drift item", "drift items"),
                actions(s.actions_planned)
            ),
        )
    }
}

/// "2 actions rejected: this run never applies them; the sweep or the next
/// reconcile plans again what is still due", and/or how many an approval found
/// done already; `None` when neither. The reject is not named: it may be a newer
/// run's, which decided this run's holds of the same actions too (each action's
/// line names it), and it has been run already.
fn decided_text(rejected: usize, obsolete: usize) -> Option<String> {
    let mut parts = Vec::new();
    if rejected > 0 {
        parts.push(format!(
            "{} rejected: this run never applies {}; the sweep or the next reconcile plans \
             again what is still due",
            plural(rejected, "action", "actions"),
            if rejected == 1 { "it" } else { "them" }
        ));
    }
    if obsolete > 0 {
        parts.push(format!(
            "{} found done already when approved (nothing sent)",
            plural(obsolete, "action", "actions")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `; 2 more held because the directory read was incomplete (nothing to approve)`
/// after the count of held actions that wait for a human, or nothing.
fn incomplete_too(incomplete: usize) -> String {
    if incomplete == 0 {
        String::new()
    } else {
        format!(
            "; {incomplete} more held because the directory read was incomplete (nothing to \
             approve: the next reconcile from a whole read decides)"
        )
    }
}

/// What the renderers say instead of "No drift." when the run computed none: the
/// directory snapshot was refused as a source fault, so an empty drift list says
/// nothing about the workspace.
pub fn drift_not_computed(report: &Report) -> Option<&'static str> {
    report.safety.source_fault.as_ref().map(|_| {
        "Drift not computed: the directory snapshot was refused (source fault), so nothing \
         was planned from it and nothing was written."
    })
}

/// The state a person wants at a glance (the issue's "in sync / drift / needs
/// attention"): anything failed, held or kept back unsent needs a human; drift
/// that a converged reconcile repaired counts as in sync. `Unknown` is only the digest's, when no
/// run has stored a report yet: nothing is known to be in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Unknown,
    InSync,
    Drift,
    NeedsAttention,
}

impl State {
    pub fn of(report: &Report) -> State {
        let s = &report.summary;
        // An exception naming nobody keeps nobody: the person it was meant for
        // loses access, which someone decided they keep, until its name is fixed.
        let needs_a_human = s.actions_held > report.safety.actions_waiting
            || !report.safety.disputed_leavers.is_empty()
            || !report.safety.exceptions_naming_nobody.is_empty();
        if report.safety.source_fault.is_some()
            || report.safety.circuit.is_some()
            || s.actions_failed > 0
            || report.not_sent().next().is_some()
            || needs_a_human
        {
            State::NeedsAttention
        } else if residual_drift(report).is_empty()
            && report.safety.protected_by_person.is_empty()
            && report.safety.protected_leavers.is_empty()
        {
            // An account only a protected person shields is not known to be in
            // line: nothing compared it. Nor is a leaver's protected one: the
            // policy takes their access away, the protection keeps it.
            State::InSync
        } else {
            State::Drift
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            State::Unknown => "Unknown",
            State::InSync => "In sync",
            State::Drift => "Drift",
            State::NeedsAttention => "Needs attention",
        }
    }
}

/// The drift still there after the run: everything it found, unless it was a
/// reconcile that converged — then only what seatwarden never acts on (disputed
/// matches, creates and renames not made because of a userName two people share,
/// and orphaned accounts when the policy only reports them).
pub fn residual_drift(report: &Report) -> Vec<&DriftItem> {
    let s = &report.summary;
    if !(report.mode == "reconcile" && s.converged && s.actions_planned > 0) {
        return report.drift.iter().collect();
    }
    let orphans_acted_on = report
        .actions
        .iter()
        .any(|a| a.reason == DriftKind::OrphanedAccount);
    let left_alone: Vec<&str> = report
        .drift
        .iter()
        .filter(|d| d.kind == DriftKind::OrphanedAccount && !orphans_acted_on)
        .filter_map(|d| d.account_id.as_deref())
        .collect();
    // An orphan left alone keeps its memberships of managed groups too.
    report
        .drift
        .iter()
        .filter(|d| {
            d.kind == DriftKind::DisputedMatch
                || crate::plan::is_user_name_conflict(d)
                || (d.kind == DriftKind::OrphanedAccount && !orphans_acted_on)
                || d.account_id
                    .as_deref()
                    .is_some_and(|id| left_alone.contains(&id))
        })
        .collect()
}

/// The drift a run left, item by item: [`residual_drift`], less, when the run did
/// not converge, the items whose every action was applied and verified (a leaver
/// deactivated while a new hire's create waits for the settle window). An item is
/// tied to its actions by drift kind and subject; a userName conflict has none
/// (another change of the same account's attributes is not its fix). For the
/// drift gauges.
pub fn unfixed_drift(report: &Report) -> Vec<&DriftItem> {
    let residual = residual_drift(report);
    if report.summary.converged {
        return residual;
    }
    residual
        .into_iter()
        .filter(|item| {
            if crate::plan::is_user_name_conflict(item) {
                return true;
            }
            let mut actions = report
                .actions
                .iter()
                .filter(|a| a.reason == item.kind && a.subject == item.user_name)
                .peekable();
            let any = actions.peek().is_some();
            !(any && actions.all(|a| a.outcome == Outcome::Applied))
        })
        .collect()
}

/// A human title per drift kind, shared by every renderer.
pub fn kind_title(kind: DriftKind) -> &'static str {
    text::kind_title(kind)
}

/// `[seatwarden] acme run 7: 1 failed action, 1 held action, 12 drift items` — the
/// state in the subject line, so an inbox shows it without opening the message. The
/// run id tells a report from the digest (`[seatwarden] acme: …`).
pub fn subject(name: &str, report: &Report) -> String {
    let s = &report.summary;
    let mut parts = Vec::new();
    if report.safety.source_fault.is_some() {
        parts.push("directory rejected (source fault), nothing planned".to_owned());
    }
    if report.safety.circuit.is_some() {
        parts.push("circuit breaker open".to_owned());
    }
    if s.actions_failed > 0 {
        parts.push(plural(s.actions_failed, "failed action", "failed actions"));
    }
    let not_sent = report.not_sent().count();
    if not_sent > 0 {
        parts.push(plural(not_sent, "action not sent", "actions not sent"));
    }
    // A plan or a dry run holds nothing (`approve` refuses its run): it tells
    // what a reconcile would hold, as its headline does.
    let held_text = |n| {
        if report.mode == "reconcile" {
            plural(n, "held action", "held actions")
        } else {
            format!("{} would be held", plural(n, "action", "actions"))
        }
    };
    let held = report.awaiting_approval();
    if held > 0 {
        parts.push(held_text(held));
    }
    let incomplete = report.held_incomplete_directory();
    if incomplete > 0 {
        parts.push(format!(
            "{} (directory read incomplete)",
            held_text(incomplete)
        ));
    }
    let refused = report.refused_by_approval();
    if refused > 0 {
        parts.push(format!("{} (refused by approve)", held_text(refused)));
    }
    let rejected = report.rejected();
    if rejected > 0 {
        parts.push(plural(rejected, "rejected action", "rejected actions"));
    }
    let naming_nobody = report.safety.exceptions_naming_nobody.len();
    if naming_nobody > 0 {
        parts.push(plural(
            naming_nobody,
            "exception naming nobody",
            "exceptions naming nobody",
        ));
    }
    if report.safety.source_fault.is_some() {
        return format!(
            "[seatwarden] {name} run {}: {}",
            report.run_id,
            parts.join(", ")
        );
    }
    match State::of(report) {
        State::InSync if parts.is_empty() => parts.push("in sync".to_owned()),
        _ => {
            let left = residual_drift(report).len();
            parts.push(plural(left, "drift item", "drift items"));
        }
    }
    format!(
        "[seatwarden] {name} run {}: {}",
        report.run_id,
        parts.join(", ")
    )
}

/// `1 drift item`, `5 drift items`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const ADMIN: &str = "sudo -u seatwarden seatwarden --config /etc/sw.toml";

    fn reconcile_report(safety: SafetyReport) -> Report {
        let at = DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
            .unwrap()
            .to_utc();
        Report {
            schema_version: SCHEMA_VERSION,
            run_id: 7,
            mode: "reconcile".into(),
            started_at: at,
            finished_at: at,
            directory: "file directory.json".into(),
            workspace: "https://ws.example/scim/v2".into(),
            summary: Summary::default(),
            drift: Vec::new(),
            actions: Vec::new(),
            safety,
        }
    }

    /// A plan or a dry run holds nothing for a human (`approve` refuses its run):
    /// its headline says what a reconcile would hold, not that it needs one.
    #[test]
    fn a_previews_headline_says_what_a_reconcile_would_hold() {
        let mut report = reconcile_report(SafetyReport::default());
        report.summary.actions_planned = 3;
        report.summary.actions_held = 2;
        let held = "2 actions held by the guard — needs a human";
        assert_eq!(super::headline(&report, ADMIN).1, held);
        for mode in ["plan", "dry_run"] {
            report.mode = mode.into();
            assert_eq!(
                super::headline(&report, ADMIN).1,
                format!(
                    "2 actions would be held by the guard: a reconcile would wait for `{ADMIN} approve`"
                ),
                "{mode}"
            );
        }
        report.safety.actions_waiting = 2;
        assert_eq!(
            super::headline(&report, ADMIN).1,
            "2 actions would wait for the settle window"
        );
        report.mode = "reconcile".into();
        assert_eq!(
            super::headline(&report, ADMIN).1,
            "2 actions wait for the settle window"
        );
    }

    /// A plan's or a dry run's report (`report --email` sends the latest, which
    /// may be one) holds nothing: its subject said "2 held actions", and whoever
    /// scanned the inbox went to approve a run `approve` refuses. It says what a
    /// reconcile would hold, as the headline does.
    #[test]
    fn a_previews_subject_says_what_a_reconcile_would_hold() {
        let mut report = reconcile_report(SafetyReport::default());
        report.summary.actions_planned = 3;
        report.summary.actions_held = 2;
        assert_eq!(
            subject("acme", &report),
            "[seatwarden] acme run 7: 2 held actions, 0 drift items"
        );
        for mode in ["plan", "dry_run"] {
            report.mode = mode.into();
            assert_eq!(
                subject("acme", &report),
                "[seatwarden] acme run 7: 2 actions would be held, 0 drift items",
                "{mode}"
            );
        }
    }

    /// Held actions decided on since (rejected, or found done when approved) are
    /// not "planned" any more: the headline says what became of them, after what
    /// still waits for a human, and the subject counts the rejected ones.
    #[test]
    fn a_headline_tells_rejected_and_obsolete_actions_from_planned_ones() {
        let mut report = reconcile_report(SafetyReport::default());
        let action = |seq, outcome, error: Option<String>| ActionOutcome {
            seq,
            op: "deactivate".into(),
            reason: DriftKind::StaleAccess,
            subject: format!("leaver{seq}@example.com"),
            detail: String::new(),
            outcome,
            attempts: 0,
            error,
            waiting: false,
            settle_window: None,
            deactivated_since: None,
        };
        let rejected = Some(format!(
            "rejected ({ADMIN} reject): {}",
            crate::model::REJECTED_NEVER_APPLIED
        ));
        let obsolete = Some(format!(
            "{}the workspace already showed it; nothing was sent",
            crate::model::OBSOLETE_WHEN_APPROVED
        ));
        report.actions = vec![
            action(
                0,
                Outcome::Held,
                Some("deprovisions: over the limit".into()),
            ),
            action(1, Outcome::NotRun, rejected.clone()),
            action(2, Outcome::NotRun, obsolete),
        ];
        report.summary.actions_planned = 3;
        report.summary.actions_held = 1;
        report.summary.actions_not_run = 2;
        let (tone, headline) = super::headline(&report, ADMIN);
        assert_eq!(tone, Tone::Warn);
        assert_eq!(
            headline,
            "1 action held by the guard — needs a human; 1 action rejected: this run never \
             applies it; the sweep or the next reconcile plans again what is still due; 1 \
             action found done already when approved (nothing sent)"
        );
        assert_eq!(
            subject("acme", &report),
            "[seatwarden] acme run 7: 1 held action, 1 rejected action, 0 drift items"
        );
        // Only one found done, the rest applied: nothing is left to do.
        report.actions[0].outcome = Outcome::Applied;
        report.actions[1].error = None;
        report.actions[1].outcome = Outcome::Applied;
        report.summary.actions_held = 0;
        report.summary.actions_applied = 2;
        report.summary.actions_not_run = 1;
        assert_eq!(
            super::headline(&report, ADMIN),
            (
                Tone::Good,
                "2 actions applied and verified; 1 action found done already when approved \
                 (nothing sent)"
                    .to_owned()
            )
        );
    }

    /// A rename not made because another account holds the userName has no
    /// action: the run's other writes, even the same account's other attributes
    /// applied, leave it to review.
    #[test]
    fn a_user_name_conflict_is_left_to_review_after_the_other_writes() {
        let mut report = reconcile_report(SafetyReport::default());
        let item = |detail: &str| DriftItem {
            kind: DriftKind::AttributeDrift,
            identity_id: Some("ann".into()),
            account_id: Some("1".into()),
            user_name: "bob@ex.com".into(),
            detail: detail.into(),
            conflict: None,
        };
        let conflict = DriftItem {
            conflict: Some(crate::model::UserNameConflict {
                held_by: vec!["2".into()],
                ..Default::default()
            }),
            ..item(
                "not renamed: account 1 keeps \"ann@ex.com\": userName \"bob@ex.com\" is \
                 already held by account 2 (person bob); two people cannot share a userName: fix \
                 it in the directory",
            )
        };
        report.drift = vec![
            item("differs from the directory: givenName …"),
            conflict.clone(),
        ];
        let update = |outcome| ActionOutcome {
            seq: 0,
            op: "update_attributes".into(),
            reason: DriftKind::AttributeDrift,
            subject: "bob@ex.com".into(),
            detail: String::new(),
            outcome,
            attempts: 1,
            error: None,
            waiting: false,
            settle_window: None,
            deactivated_since: None,
        };
        report.actions = vec![update(Outcome::Applied)];
        report.summary.actions_planned = 1;
        report.summary.actions_applied = 1;
        report.summary.converged = true;
        assert_eq!(residual_drift(&report), [&conflict]);
        assert_eq!(unfixed_drift(&report), [&conflict]);
        assert_eq!(State::of(&report), State::Drift);

        // Not converged (another write failed): the applied update is no fix for it.
        report.summary.converged = false;
        report.actions.push(update(Outcome::Failed));
        report.actions[1].subject = "cy@ex.com".into();
        report.summary.actions_planned = 2;
        assert!(unfixed_drift(&report).contains(&&conflict));
    }

    /// A run with nothing else to say but an exception naming nobody is not "in
    /// sync": the person the exception was meant for loses access, which someone
    /// decided they keep, until the name is fixed. The headline, the subject and
    /// the state say so, as the digest and the alert do.
    #[test]
    fn an_exception_naming_nobody_is_no_run_in_sync() {
        let mut report = reconcile_report(SafetyReport::default());
        assert_eq!(State::of(&report), State::InSync);
        assert_eq!(subject("acme", &report), "[seatwarden] acme run 7: in sync");
        let nobody = |name: &str| crate::model::Exception {
            user_name: name.to_owned(),
            until: chrono::DateTime::UNIX_EPOCH,
            reason: "handover".to_owned(),
        };
        report.safety.exceptions_naming_nobody = vec![nobody("dana.lee@exmaple.com")];
        assert_eq!(State::of(&report), State::NeedsAttention);
        assert_eq!(
            super::headline(&report, ADMIN),
            (
                Tone::Warn,
                "nothing to do, but 1 exception names nobody, and so keeps nobody — see \
                 EXCEPTION NAMES NOBODY"
                    .to_owned()
            )
        );
        assert_eq!(
            subject("acme", &report),
            "[seatwarden] acme run 7: 1 exception naming nobody, 0 drift items"
        );
        report
            .safety
            .exceptions_naming_nobody
            .push(nobody("x@exmaple.com"));
        assert!(
            super::headline(&report, ADMIN)
                .1
                .starts_with("nothing to do, but 2 exceptions name nobody, and so keep nobody")
        );
    }

    /// A run that did something (or found drift to review) while an exception
    /// names nobody needs attention as much as one that did nothing: its
    /// headline must not read as good news ("converged", in green) above a
    /// "Needs attention" state, and must say what needs it.
    #[test]
    fn an_exception_naming_nobody_is_told_by_the_headline_of_a_run_that_did_something() {
        let mut report = reconcile_report(SafetyReport::default());
        report.safety.exceptions_naming_nobody = vec![crate::model::Exception {
            user_name: "dana.lee@exmaple.com".to_owned(),
            until: chrono::DateTime::UNIX_EPOCH,
            reason: "handover".to_owned(),
        }];
        report.summary.drift_total = 2;
        report.summary.actions_planned = 2;
        report.summary.actions_applied = 2;
        report.summary.converged = true;
        assert_eq!(State::of(&report), State::NeedsAttention);
        let (tone, text) = super::headline(&report, ADMIN);
        assert_eq!(tone, Tone::Warn, "{text}");
        assert!(
            text.starts_with("converged: 2 actions applied and verified")
                && text.contains("1 exception names nobody")
                && text.contains("EXCEPTION NAMES NOBODY"),
            "{text}"
        );
        // Drift only to review: said too.
        report.summary.actions_planned = 0;
        report.summary.actions_applied = 0;
        let (tone, text) = super::headline(&report, ADMIN);
        assert_eq!(tone, Tone::Warn, "{text}");
        assert!(
            text.starts_with("nothing to do; 2 drift items to review")
                && text.contains("1 exception names nobody"),
            "{text}"
        );
        // A failure stays the headline's tone.
        report.summary.actions_planned = 2;
        report.summary.actions_failed = 1;
        let (tone, text) = super::headline(&report, ADMIN);
        assert_eq!(tone, Tone::Bad, "{text}");
        assert!(text.contains("1 exception names nobody"), "{text}");
    }

    /// What an incomplete directory read held is no approval's: `approve` refuses
    /// it. It is counted apart from what waits for a human, in the report, the
    /// headline, the subject and the count `status` and `/metrics` read from a
    /// stored report, also one whose hold an approval refused since (its text
    /// goes on with why) or one an older version stored (the text is the same).
    #[test]
    fn what_an_incomplete_directory_read_held_is_not_awaiting_approval() {
        let mut report = reconcile_report(SafetyReport::default());
        let held = |seq, error: String| ActionOutcome {
            seq,
            op: "deactivate".into(),
            reason: DriftKind::StaleAccess,
            subject: format!("leaver{seq}@example.com"),
            detail: String::new(),
            outcome: Outcome::Held,
            attempts: 0,
            error: Some(error),
            waiting: false,
            settle_window: None,
            deactivated_since: None,
        };
        let incomplete = crate::model::HoldReason::IncompleteDirectory.to_string();
        report.actions = vec![
            held(0, incomplete.clone()),
            held(
                1,
                format!("{incomplete}; planned from run 7's incomplete directory read"),
            ),
        ];
        report.summary.actions_planned = 2;
        report.summary.actions_held = 2;
        assert_eq!(report.held_incomplete_directory(), 2);
        assert_eq!(report.awaiting_approval(), 0);
        let stored = report.to_stored_json();
        assert_eq!(awaiting_approval_in(&stored).unwrap(), 0);
        assert_eq!(held_in(&stored).unwrap().incomplete_directory, 2);
        let (tone, headline) = super::headline(&report, ADMIN);
        assert_eq!(tone, Tone::Warn);
        assert_eq!(
            headline,
            format!(
                "2 actions held because the directory read was incomplete — nothing to approve; \
                 `{ADMIN} reconcile` again once the directory reads whole"
            )
        );
        assert_eq!(
            subject("acme", &report),
            "[seatwarden] acme run 7: 2 held actions (directory read incomplete), 0 drift items"
        );
        assert_eq!(State::of(&report), State::NeedsAttention);

        // Beside a threshold's hold, only that one waits for a human.
        report
            .actions
            .push(held(2, "the per-run limit is 5".into()));
        report.summary.actions_held = 3;
        assert_eq!(report.awaiting_approval(), 1);
        assert_eq!(awaiting_approval_in(&report.to_stored_json()).unwrap(), 1);
        assert!(
            super::headline(&report, ADMIN)
                .1
                .starts_with("1 action held by the guard — needs a human; 2 more held because"),
            "{:?}",
            super::headline(&report, ADMIN)
        );
        assert!(
            subject("acme", &report)
                .contains("1 held action, 2 held actions (directory read incomplete)"),
            "{}",
            subject("acme", &report)
        );
    }

    /// Writes kept back read as not sent, never as failed: a stop's (the
    /// operator's) as a warning, an outage's or a refused token's as bad news.
    #[test]
    fn a_headline_of_writes_not_sent_says_why_and_how_bad() {
        let mut report = reconcile_report(SafetyReport::default());
        let kept_back = |seq, error: &str| ActionOutcome {
            seq,
            op: "deactivate".into(),
            reason: DriftKind::StaleAccess,
            subject: format!("leaver{seq}@example.com"),
            detail: String::new(),
            outcome: Outcome::journaled(ActionState::Failed, Some(error)),
            attempts: 0,
            error: Some(error.to_owned()),
            waiting: false,
            settle_window: None,
            deactivated_since: None,
        };
        report.actions = vec![kept_back(0, apply::NOT_SENT_STOPPING)];
        report.summary.actions_planned = 1;
        assert_eq!(
            super::headline(&report, ADMIN),
            (
                Tone::Warn,
                "1 action not sent because seatwarden was stopping; the next run plans it again"
                    .to_owned()
            )
        );
        let token = format!(
            "{} (HTTP 401); check workspace.token",
            apply::NOT_SENT_TOKEN
        );
        report.actions.push(kept_back(1, &token));
        report.summary.actions_planned = 2;
        assert_eq!(
            super::headline(&report, ADMIN),
            (
                Tone::Bad,
                "2 actions not sent (1 because seatwarden was stopping, 1 because the workspace \
                 refused the token); the next run plans them again"
                    .to_owned()
            )
        );
        assert_eq!(report.summary.actions_failed, 0);
        assert_eq!(State::of(&report), State::NeedsAttention);
        assert_eq!(
            subject("acme", &report),
            "[seatwarden] acme run 7: 2 actions not sent, 0 drift items"
        );
    }

    /// A leaver's account kept active by `safety.protected` is news every run: the
    /// headline says so, PROTECTED LEAVERS names the account and why the person
    /// lost access, and the state is drift, not "in sync".
    #[test]
    fn a_protected_leaver_is_drift_every_run() {
        let report = reconcile_report(SafetyReport {
            protected_leavers: vec![crate::model::ProtectedLeaver {
                account_id: "a-7".into(),
                user_name: "ops-admin@example.com".into(),
                identity_id: "00u7".into(),
                why: "identity is deprovisioned in the directory".into(),
            }],
            ..SafetyReport::default()
        });
        assert_eq!(
            super::headline(&report, ADMIN),
            (
                Tone::Warn,
                "1 leaver's account kept active by safety.protected — see PROTECTED LEAVERS"
                    .to_owned()
            )
        );
        assert_eq!(State::of(&report), State::Drift);
        let finding = safety_findings(&report, chrono_tz::UTC, ADMIN)
            .into_iter()
            .find(|f| f.label == Some("PROTECTED LEAVERS"))
            .unwrap();
        assert!(
            finding.text.starts_with(
                "1 account of people who lost access is active because safety.protected names it"
            ),
            "{}",
            finding.text
        );
        assert_eq!(
            finding.details,
            [
                "account a-7 (ops-admin@example.com), identity 00u7: identity is deprovisioned in \
              the directory"
            ]
        );
        let text = render_text(&report, chrono_tz::UTC, ADMIN, false);
        assert!(text.contains("PROTECTED LEAVERS"), "{text}");
    }

    /// The `why` of a duplicate account quotes the person's directory userName:
    /// under PROTECTED LEAVERS and EXCEPTIONS it is made printable like the
    /// account's own fields, so an escape sequence or a line break in it can
    /// neither drive the operator's terminal nor forge a line of the report.
    #[test]
    fn a_kept_accounts_why_is_made_printable() {
        let why = "duplicate of mallory\u{1b}]8;;https://evil/\u{7}\nPROTECTED: none (identity 9)"
            .to_owned();
        let report = reconcile_report(SafetyReport {
            protected_leavers: vec![crate::model::ProtectedLeaver {
                account_id: "a-7".into(),
                user_name: "ops-admin@example.com".into(),
                identity_id: "00u7".into(),
                why: why.clone(),
            }],
            excepted: vec![ExceptedAccount {
                account_id: "a-8".into(),
                user_name: "kept@example.com".into(),
                identity_id: Some("00u8".into()),
                why,
                exception: crate::model::Exception {
                    user_name: "kept@example.com".into(),
                    until: chrono::Utc::now() + chrono::TimeDelta::days(2),
                    reason: "handover".into(),
                },
            }],
            ..SafetyReport::default()
        });
        let text = render_text(&report, chrono_tz::UTC, ADMIN, false);
        assert!(text.contains("PROTECTED LEAVERS"), "{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("PROTECTED: none")),
            "{text}"
        );
    }

    /// A disputed leaver's headline and finding tell the command that settles it
    /// as people run seatwarden here (`report.admin_command`), in every renderer.
    #[test]
    fn disputed_leavers_are_told_the_configured_link_command() {
        let report = reconcile_report(SafetyReport {
            disputed_leavers: vec!["ada@example.com".into()],
            ..SafetyReport::default()
        });
        let headline = format!("1 leaver still has access (disputed match) — needs `{ADMIN} link`");
        assert_eq!(super::headline(&report, ADMIN).1, headline);
        let finding = safety_findings(&report, chrono_tz::UTC, ADMIN)
            .into_iter()
            .find(|f| f.label == Some("DISPUTED LEAVERS"))
            .unwrap();
        let settles =
            format!("none is deactivated until `{ADMIN} link IDENTITY ACCOUNT` says which");
        assert!(finding.text.ends_with(&settles), "{}", finding.text);
        let text = render_text(&report, chrono_tz::UTC, ADMIN, false);
        let markdown = render_markdown(&report, chrono_tz::UTC, ADMIN).unwrap();
        let html = render_html(&report, chrono_tz::UTC, ADMIN).unwrap();
        assert!(
            text.contains(&headline) && text.contains(&settles),
            "{text}"
        );
        assert!(
            markdown.contains(&format!("{ADMIN} link IDENTITY ACCOUNT")),
            "{markdown}"
        );
        // HTML escapes the command's slashes.
        assert!(html.contains("sw.toml link IDENTITY ACCOUNT"), "{html}");
    }

    /// A disputed leaver's userName is the directory's, typed by whoever edits
    /// it: in the text report (a terminal, the plain-text part of an email) an
    /// escape sequence in it drove the reader's terminal, a bidi override
    /// reordered the line and a line break forged one. They show as U+FFFD, as
    /// every other directory value of the text does.
    #[test]
    fn a_disputed_leavers_user_name_cannot_drive_the_terminal_or_forge_lines() {
        let report = reconcile_report(SafetyReport {
            disputed_leavers: vec!["ada\u{1b}[2J\u{202e}moc.elpmaxe@\nOK: in sync".into()],
            ..SafetyReport::default()
        });
        for text in [
            render_text(&report, chrono_tz::UTC, ADMIN, false),
            render_text_for_email(&report, chrono_tz::UTC, ADMIN),
        ] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{202e}'),
                "{text:?}"
            );
            assert!(
                text.contains("ada\u{fffd}[2J\u{fffd}moc.elpmaxe@\u{fffd}OK: in sync"),
                "{text:?}"
            );
        }
    }

    /// The names under PROTECTED BY PERSON come from the directory and the
    /// workspace: made printable as the rest, in the text and the emailed text.
    #[test]
    fn a_protected_by_person_name_cannot_drive_the_terminal_or_forge_lines() {
        let report = reconcile_report(SafetyReport {
            protected_by_person: vec![crate::model::ProtectedByPerson {
                account_id: "w7".into(),
                account_user_name: "x\u{1b}[2J\u{202e}@ex.com\nOK: in sync".into(),
                active: true,
                identity_id: "00u5".into(),
                user_name: "admin\u{1b}]0;pwned\u{7}@ex.com".into(),
                matched_by: None,
                duplicate: false,
                lost: None,
            }],
            ..SafetyReport::default()
        });
        for text in [
            render_text(&report, chrono_tz::UTC, ADMIN, false),
            render_text_for_email(&report, chrono_tz::UTC, ADMIN),
        ] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'),
                "{text:?}"
            );
            assert!(
                text.contains(
                    "account w7 (x\u{fffd}[2J\u{fffd}@ex.com\u{fffd}OK: in sync, active)"
                ),
                "{text:?}"
            );
        }
    }

    /// An account id under PROTECTED BY PERSON holding an escape sequence and
    /// a line break shows made printable, and its `link` and `unlink` commands
    /// name it whole (`$'…'`), in the text, the emailed text, and the other
    /// renderers' findings. Before, the text renderer made the ids printable
    /// first: its commands named `w�[2J�7`, an id that does not exist.
    #[test]
    fn protected_by_person_commands_name_an_id_with_control_characters_whole() {
        let report = reconcile_report(SafetyReport {
            protected_by_person: vec![crate::model::ProtectedByPerson {
                account_id: "w\u{1b}[2J\n7".into(),
                account_user_name: "x@ex.com".into(),
                active: true,
                identity_id: "00u\u{7}5".into(),
                user_name: "admin@ex.com".into(),
                matched_by: None,
                duplicate: false,
                lost: None,
            }],
            ..SafetyReport::default()
        });
        let findings = safety_findings(&report, chrono_tz::UTC, ADMIN)
            .into_iter()
            .find(|f| f.label == Some("PROTECTED BY PERSON"))
            .unwrap()
            .details
            .join("\n");
        for text in [
            render_text(&report, chrono_tz::UTC, ADMIN, false),
            render_text_for_email(&report, chrono_tz::UTC, ADMIN),
            findings,
        ] {
            assert!(
                text.contains("account w\u{fffd}[2J\u{fffd}7 (x@ex.com, active)"),
                "{text:?}"
            );
            assert!(text.contains("identity 00u\u{fffd}5"), "{text:?}");
            assert!(
                text.contains(&format!("`{ADMIN} unlink $'w\\x1b[2J\\n7'`")),
                "{text:?}"
            );
            assert!(
                text.contains(&format!("`{ADMIN} link OWNER $'w\\x1b[2J\\n7' --replace`")),
                "{text:?}"
            );
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7}'),
                "{text:?}"
            );
        }
    }

    /// JSON printed for a person keeps every value, and escapes what would act
    /// on their terminal that serde_json leaves raw: DEL, C1 (CSI U+009B, NEL),
    /// bidi overrides and isolates, line and paragraph separators.
    #[test]
    fn json_for_terminal_escapes_what_acts_on_a_terminal_and_keeps_the_value() {
        let value = serde_json::json!({
            "user_name": "eve\u{1b}[2J\u{7f}\u{9b}31m\u{85}\u{202e}txt\u{2066}\u{2028}é\n",
            "list": ["a\u{200f}", "plain ✓"],
        });
        let json = json_for_terminal(serde_json::to_string_pretty(&value).unwrap());
        assert!(
            !json
                .chars()
                .any(|c| crate::model::acts_on_terminal(c) && c != '\n'),
            "{json:?}"
        );
        assert!(
            json.contains(r"eve\u001b[2J\u007f\u009b31m\u0085\u202etxt\u2066\u2028é\n"),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            value
        );
        // Nothing to escape: the same text.
        let plain = serde_json::to_string_pretty(&serde_json::json!({"a": "é ✓\t"})).unwrap();
        assert_eq!(json_for_terminal(plain.clone()), plain);
    }

    /// EXCEPTIONS reads as one sentence: no run of spaces from a string broken
    /// across source lines.
    #[test]
    fn the_exceptions_finding_reads_as_one_sentence() {
        let until = DateTime::parse_from_rfc3339("2026-12-15T23:00:00Z")
            .unwrap()
            .to_utc();
        let report = reconcile_report(SafetyReport {
            excepted: vec![crate::model::ExceptedAccount {
                account_id: "w3".into(),
                user_name: "dana@ex.com".into(),
                identity_id: Some("00u3".into()),
                why: "suspended in the directory".into(),
                exception: crate::model::Exception {
                    user_name: "dana@ex.com".into(),
                    until,
                    reason: "handover".into(),
                },
            }],
            ..SafetyReport::default()
        });
        let finding = safety_findings(&report, chrono_tz::UTC, ADMIN)
            .into_iter()
            .find(|f| f.label == Some("EXCEPTIONS"))
            .unwrap();
        assert_eq!(
            finding.text,
            "1 account is active only because an exception in safety.exceptions keeps it: \
             seatwarden takes the access away when the exception ends"
        );
        let text = render_text(&report, chrono_tz::UTC, ADMIN, false);
        assert!(!text.contains("  seatwarden takes"), "{text}");
    }

    /// A directory that shrank past the limit is told the command that accepts it.
    #[test]
    fn a_shrunk_directory_is_told_the_configured_accept_command() {
        let report = reconcile_report(SafetyReport {
            source_fault: Some(SourceFault::Shrank {
                previous: 100,
                current: 40,
                shrink_percent: 60.0,
                limit_percent: 30.0,
            }),
            ..SafetyReport::default()
        });
        let finding = safety_findings(&report, chrono_tz::UTC, ADMIN)
            .into_iter()
            .find(|f| f.label == Some("SOURCE FAULT"))
            .unwrap();
        assert_eq!(
            finding.details,
            [format!(
                "if the directory really shrank (a layoff, a narrower scope), \
                 `{ADMIN} reconcile --accept-directory` accepts it once (audited)"
            )]
        );
    }
}
