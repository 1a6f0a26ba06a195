//! The drift report every run stores: what differed, what was done about it, and
//! what still needs a human. The JSON form is a stable, versioned schema
//! ([`SCHEMA_VERSION`], documented in the README); the text form is for terminals.

mod text;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::circuit::{CircuitState, FailedWrite};
use crate::guard::SourceFault;
use crate::model::{DriftItem, DriftKind};

pub use text::render_text;

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
    /// Held actions that only wait for the settle window (no human needed); they are
    /// also counted in `summary.actions_held`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub actions_waiting: usize,
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
    pub actions_failed: usize,
    pub actions_held: usize,
    /// Planned but not attempted (plan and dry-run modes).
    pub actions_not_run: usize,
    /// Request-level retries after transient failures (429, 5xx, timeouts).
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
    /// The provider's message for failures, the guard's rule for held actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Counts drift per kind with every kind present.
pub fn count_by_kind(drift: &[DriftItem]) -> BTreeMap<DriftKind, usize> {
    let mut counts: BTreeMap<DriftKind, usize> =
        DriftKind::ALL.into_iter().map(|k| (k, 0)).collect();
    for item in drift {
        *counts.entry(item.kind).or_default() += 1;
    }
    counts
}
