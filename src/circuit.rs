//! The job-level circuit breaker (pure core: no I/O, time passed in).
//!
//! While a plan is applied, [`Breaker`] watches the outcome of the last `window`
//! writes; when more than `failure_ratio` of them failed it opens, and the executor
//! sends nothing more: a workspace failing most writes is down, misconfigured or
//! rejecting us, and hammering it only adds failures (and, with a lying provider,
//! damage). The opening is persisted as a [`CircuitRecord`] (by the executor the
//! moment it trips, and by the caller after the apply) so it survives restarts;
//! [`state`] reads it back: open until `cool_down` has passed, then half-open: the
//! next run writes again, and its [`trial`] closes the circuit, opens it again, or
//! leaves it half-open when too few writes failed to tell. `seatwarden resume`
//! closes it at once.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `[safety.circuit]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CircuitSettings {
    /// Opens when more than this share of the last `window` writes failed.
    pub failure_ratio: f64,
    pub window: usize,
    pub cool_down: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failure_ratio: 0.5,
            window: 20,
            cool_down: Duration::from_secs(15 * 60),
        }
    }
}

/// One failed write, as the report and the persisted record show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedWrite {
    /// `deactivate`, `create_account`, …
    pub op: String,
    /// The person or group concerned.
    pub subject: String,
    /// The provider's message.
    pub message: String,
}

/// The persisted breaker: open since `opened_at`, or closed (`None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitRecord {
    pub opened_at: Option<DateTime<Utc>>,
    /// Why it opened, e.g. "16 of the last 20 writes failed".
    pub reason: Option<String>,
    /// The failing writes of the window that opened it (most recent last).
    pub failures: Vec<FailedWrite>,
}

/// What the daemon publishes as a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    /// No writes until `until` (or `seatwarden resume`).
    Open {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// The cool-down has passed: the next run writes again.
    HalfOpen {
        since: DateTime<Utc>,
    },
}

impl CircuitState {
    pub fn as_str(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen { .. } => "half_open",
        }
    }

    /// A gauge value for metrics: 0 closed, 1 open, 2 half-open.
    pub fn gauge(&self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open { .. } => 1,
            CircuitState::HalfOpen { .. } => 2,
        }
    }

    /// Writes may be sent (closed or half-open).
    pub fn allows_writes(&self) -> bool {
        !matches!(self, CircuitState::Open { .. })
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CircuitState::Closed => f.write_str("closed"),
            CircuitState::Open { since, until } => write!(
                f,
                "open since {} until {}",
                since.format("%Y-%m-%d %H:%M:%SZ"),
                until.format("%Y-%m-%d %H:%M:%SZ")
            ),
            CircuitState::HalfOpen { since } => {
                write!(f, "half-open since {}", since.format("%Y-%m-%d %H:%M:%SZ"))
            }
        }
    }
}

/// How far ahead of `now` an opening may lie before it is taken for one stamped by a
/// clock that has since been stepped back (NTP, a restored VM): NTP slews small
/// offsets, so an hour is far more than an honest clock ever jumps back.
pub(crate) const CLOCK_STEP_MARGIN: chrono::Duration = chrono::Duration::hours(1);

/// The state of a persisted breaker at `now`. An opening stamped more than an hour
/// ahead of `now` is half-open: otherwise the workspace would get no writes, leavers
/// included, until the clock caught up with the one that opened it.
pub fn state(record: &CircuitRecord, now: DateTime<Utc>, cool_down: Duration) -> CircuitState {
    let Some(since) = record.opened_at else {
        return CircuitState::Closed;
    };
    let cool_down = chrono::Duration::from_std(cool_down).unwrap_or(chrono::Duration::MAX);
    let until = since
        .checked_add_signed(cool_down)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if since - now > CLOCK_STEP_MARGIN {
        CircuitState::HalfOpen { since: now }
    } else if now < until {
        CircuitState::Open { since, until }
    } else {
        CircuitState::HalfOpen { since: until }
    }
}

/// Fewer failed writes than this do not open a half-open circuit again: one
/// account the provider always refuses (a 403 on a primary owner), retried by the
/// every-minute retry job, would otherwise reopen it after every cool-down and
/// keep every reconcile from writing until someone ran `resume`.
pub const MIN_FAILED_TRIAL_WRITES: usize = 3;

/// What a half-open trial (the first apply after the cool-down) that did not fill
/// a window says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trial {
    /// At most `failure_ratio` of its writes failed: close the circuit.
    Passed,
    /// More failed, and at least [`MIN_FAILED_TRIAL_WRITES`]: open it again, so a
    /// short run of failures cannot close it.
    Failed(String),
    /// Too few writes to tell (none, or fewer failures than the minimum): it stays
    /// half-open and the next apply is the trial.
    Undecided,
}

pub fn trial(settings: &CircuitSettings, succeeded: usize, failed: usize) -> Trial {
    let total = succeeded + failed;
    if total == 0 {
        Trial::Undecided
    } else if failed as f64 <= settings.failure_ratio * total as f64 {
        Trial::Passed
    } else if failed < MIN_FAILED_TRIAL_WRITES {
        Trial::Undecided
    } else {
        Trial::Failed(format!(
            "the half-open trial failed: {failed} of {total} writes failed (the limit is {}%)",
            settings.failure_ratio * 100.0
        ))
    }
}

/// The sliding window over one apply's writes.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: CircuitSettings,
    /// `true` for a failed write, most recent last.
    window: VecDeque<bool>,
    failures: VecDeque<FailedWrite>,
    tripped: Option<String>,
}

impl Breaker {
    pub fn new(settings: CircuitSettings) -> Breaker {
        Breaker {
            settings,
            window: VecDeque::new(),
            failures: VecDeque::new(),
            tripped: None,
        }
    }

    /// A breaker that never opens (callers without a circuit configuration).
    pub fn disabled() -> Breaker {
        Breaker::new(CircuitSettings {
            failure_ratio: f64::INFINITY,
            window: usize::MAX,
            cool_down: Duration::ZERO,
        })
    }

    /// Records one write's outcome (`Some` for a failure); returns true when this
    /// write opened the breaker. Only a full window can open it, so a run with a few
    /// writes and one unlucky failure keeps going.
    pub fn record(&mut self, failure: Option<FailedWrite>) -> bool {
        if self.tripped.is_some() {
            return false;
        }
        let window = self.settings.window.max(1);
        self.window.push_back(failure.is_some());
        if self.window.len() > window {
            self.window.pop_front();
        }
        if let Some(failure) = failure {
            self.failures.push_back(failure);
            if self.failures.len() > window.min(1000) {
                self.failures.pop_front();
            }
        }
        if self.window.len() < window {
            return false;
        }
        let failed = self.window.iter().filter(|f| **f).count();
        if failed as f64 > self.settings.failure_ratio * window as f64 {
            self.tripped = Some(format!(
                "{failed} of the last {window} writes failed (the limit is {}%)",
                self.settings.failure_ratio * 100.0
            ));
            return true;
        }
        false
    }

    pub fn is_open(&self) -> bool {
        self.tripped.is_some()
    }

    /// Opens the breaker for `reason` whatever share of its window failed (a
    /// workspace that stopped answering: every later write would fail too), once
    /// the window holds at least [`MIN_FAILED_TRIAL_WRITES`] failed writes: one or
    /// two (a sweep's deactivation caught by a short outage) are too little to keep
    /// the next runs, and their deprovisions, from writing for a cool-down. Returns
    /// true when this opened it. A [`Breaker::disabled`] one never opens.
    pub fn trip(&mut self, reason: String) -> bool {
        let failed = self.window.iter().filter(|f| **f).count();
        if self.tripped.is_some()
            || !self.settings.failure_ratio.is_finite()
            || failed < MIN_FAILED_TRIAL_WRITES
        {
            return false;
        }
        self.tripped = Some(reason);
        true
    }

    /// The record to persist once the breaker opened at `now`; `None` while closed.
    pub fn opened(&self, now: DateTime<Utc>) -> Option<CircuitRecord> {
        self.tripped.as_ref().map(|reason| CircuitRecord {
            opened_at: Some(now),
            reason: Some(reason.clone()),
            failures: self.failures.iter().cloned().collect(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn fail(i: usize) -> Option<FailedWrite> {
        Some(FailedWrite {
            op: "deactivate".into(),
            subject: format!("p{i}"),
            message: "HTTP 503".into(),
        })
    }

    fn settings() -> CircuitSettings {
        CircuitSettings {
            failure_ratio: 0.5,
            window: 4,
            cool_down: Duration::from_secs(900),
        }
    }

    #[test]
    fn trip_opens_at_once_with_its_reason_after_three_failures_unless_disabled() {
        let mut breaker = Breaker::new(settings());
        assert!(!breaker.record(fail(0)), "one failure of four");
        assert!(!breaker.record(fail(1)), "the window is not full");
        assert!(
            !breaker.trip("down".into()),
            "two failed writes do not hold the next runs back"
        );
        assert!(!breaker.record(fail(2)), "the window is not full");
        assert!(breaker.trip("the workspace stopped answering".into()));
        assert!(breaker.is_open());
        assert!(!breaker.trip("again".into()), "opens once");
        let record = breaker.opened(Utc::now()).unwrap();
        assert_eq!(
            record.reason.as_deref(),
            Some("the workspace stopped answering")
        );
        assert_eq!(record.failures.len(), 3, "the failing writes are named");
        let mut disabled = Breaker::disabled();
        for i in 0..3 {
            disabled.record(fail(i));
        }
        assert!(!disabled.trip("down".into()));
        assert!(!disabled.is_open());
    }

    #[test]
    fn opens_only_on_a_full_window_over_the_ratio() {
        let mut half = Breaker::new(settings());
        for failure in [None, None, fail(9), fail(9)] {
            assert!(!half.record(failure), "2 of 4 is not more than half");
        }
        let mut breaker = Breaker::new(settings());
        assert!(!breaker.record(fail(0)));
        assert!(!breaker.record(fail(1)));
        assert!(
            !breaker.record(None),
            "three writes: the window is not full"
        );
        assert!(breaker.record(fail(2)), "3 of the last 4 failed");
        assert!(breaker.is_open());
        assert!(!breaker.record(fail(3)), "opens once");
        let now = Utc::now();
        let record = breaker.opened(now).unwrap();
        assert_eq!(record.opened_at, Some(now));
        assert_eq!(
            record.reason.as_deref(),
            Some("3 of the last 4 writes failed (the limit is 50%)")
        );
        assert_eq!(
            record
                .failures
                .iter()
                .map(|f| f.subject.as_str())
                .collect::<Vec<_>>(),
            ["p0", "p1", "p2"]
        );
    }

    #[test]
    fn successes_keep_it_closed() {
        let mut breaker = Breaker::new(settings());
        for i in 0..100 {
            breaker.record(if i % 2 == 0 { fail(i) } else { None });
        }
        assert!(!breaker.is_open());
        assert_eq!(breaker.opened(Utc::now()), None);
        let mut disabled = Breaker::disabled();
        for i in 0..100 {
            disabled.record(fail(i));
        }
        assert!(!disabled.is_open());
    }

    #[test]
    fn a_failing_half_open_trial_opens_again() {
        let s = settings();
        assert_eq!(trial(&s, 0, 0), Trial::Undecided);
        assert_eq!(trial(&s, 2, 2), Trial::Passed);
        assert_eq!(trial(&s, 1, 0), Trial::Passed);
        // One account always refused is no verdict on the workspace.
        assert_eq!(trial(&s, 0, 1), Trial::Undecided);
        assert_eq!(trial(&s, 1, 2), Trial::Undecided);
        assert_eq!(
            trial(&s, 1, 3),
            Trial::Failed(
                "the half-open trial failed: 3 of 4 writes failed (the limit is 50%)".into()
            )
        );
    }

    #[test]
    fn open_until_the_cool_down_then_half_open() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cool = Duration::from_secs(900);
        assert_eq!(
            state(&CircuitRecord::default(), t0, cool),
            CircuitState::Closed
        );
        let record = CircuitRecord {
            opened_at: Some(t0),
            ..CircuitRecord::default()
        };
        let until = t0 + chrono::Duration::minutes(15);
        let open = state(&record, t0 + chrono::Duration::minutes(14), cool);
        assert_eq!(open, CircuitState::Open { since: t0, until });
        assert!(!open.allows_writes());
        let half = state(&record, until, cool);
        assert_eq!(half, CircuitState::HalfOpen { since: until });
        assert!(half.allows_writes());
        assert_eq!(half.as_str(), "half_open");
    }

    #[test]
    fn an_opening_stamped_by_a_clock_since_stepped_back_is_half_open() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cool = Duration::from_secs(900);
        let record = CircuitRecord {
            opened_at: Some(t0),
            ..CircuitRecord::default()
        };
        let until = t0 + chrono::Duration::minutes(15);
        // NTP nudging the clock back a little keeps the circuit open.
        let nudged = t0 - chrono::Duration::minutes(59);
        assert_eq!(
            state(&record, nudged, cool),
            CircuitState::Open { since: t0, until }
        );
        // A clock a day behind the opening would keep it open for a day.
        let stepped = t0 - chrono::Duration::days(1);
        assert_eq!(
            state(&record, stepped, cool),
            CircuitState::HalfOpen { since: stepped }
        );
    }
}
