//! The same-day deprovisioning ledger, as pure functions of what was observed and
//! the time passed in.
//!
//! When an identity is first seen losing access (suspended, deprovisioned, out of
//! scope, deleted) an episode opens: `detected_at`, `due_at = detected_at + sla`.
//! It is closed by a verified deactivation (`enforced_at`, `verified_at`), or
//! cancelled when the person regains access first. An episode still open after
//! `due_at` is overdue and escalated once. Held deprovisions (guard) stay open and
//! become overdue like any other: a hold never hides a missed SLA.
//!
//! No I/O, no clock: the store persists [`LedgerEntry`] rows, the sweep feeds
//! observations in.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub use crate::model::LossReason;

impl From<crate::policy::InactiveReason> for LossReason {
    fn from(reason: crate::policy::InactiveReason) -> Self {
        match reason {
            crate::policy::InactiveReason::Suspended => LossReason::Suspended,
            crate::policy::InactiveReason::Deprovisioned => LossReason::Deprovisioned,
            crate::policy::InactiveReason::OutOfScope => LossReason::OutOfScope,
        }
    }
}

/// One episode of someone losing access, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: i64,
    pub identity_id: String,
    /// The linked workspace account, when one is known.
    pub account_id: Option<String>,
    pub user_name: String,
    pub reason: LossReason,
    pub detected_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub enforced_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    /// Cancelled: access came back before enforcement.
    pub closed_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Why the guard holds it, while it does.
    pub held: Option<String>,
    /// After verification: when the person was seen with access again.
    pub returned_at: Option<DateTime<Utc>>,
    /// The end of the exception (`safety.exceptions`) that last put the
    /// deprovision off: the SLA clock runs from then ([`LedgerEntry::sla_start`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excepted_until: Option<DateTime<Utc>>,
}

/// Where an episode stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Open, due in the future.
    Pending,
    /// Open past its due time.
    Overdue,
    /// Deactivation (or deletion) confirmed by a re-read.
    Verified,
    /// Access came back before enforcement.
    Cancelled,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Overdue => "overdue",
            EntryState::Verified => "verified",
            EntryState::Cancelled => "cancelled",
        }
    }
}

impl LedgerEntry {
    pub fn is_open(&self) -> bool {
        self.verified_at.is_none() && self.closed_at.is_none()
    }

    pub fn state(&self, now: DateTime<Utc>) -> EntryState {
        if self.verified_at.is_some() {
            EntryState::Verified
        } else if self.closed_at.is_some() {
            EntryState::Cancelled
        } else if now >= self.due_at {
            EntryState::Overdue
        } else {
            EntryState::Pending
        }
    }

    /// Detection (or the end of an exception that put it off, if later) to
    /// verified deactivation; `None` for an account found without access when
    /// the episode was opened, which never waited on anyone.
    pub fn latency(&self) -> Option<Duration> {
        if self.found_without_access() {
            return None;
        }
        // An exception taken out before its end (and the account deactivated
        // before a sweep moved the end back) ended no later than that.
        self.verified_at.map(|at| at - self.sla_start().min(at))
    }

    /// When the deprovision became seatwarden's to make: its detection, or the
    /// end of the exception that put it off. Time an exception kept access is no
    /// time seatwarden took.
    pub fn sla_start(&self) -> DateTime<Utc> {
        self.excepted_until
            .map_or(self.detected_at, |until| until.max(self.detected_at))
    }

    /// Verified without ever being enforced: the account was already inactive or
    /// gone when the episode was opened. Only a sweep records that
    /// ([`crate::store::Store::deprovision_found_done`]); every other verification
    /// sets `enforced_at`.
    pub fn found_without_access(&self) -> bool {
        self.verified_at.is_some() && self.enforced_at.is_none()
    }
}

/// Someone the directory now says must not have access, with a linked account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaver {
    pub identity_id: String,
    pub account_id: Option<String>,
    pub user_name: String,
    pub reason: LossReason,
}

/// A new episode to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub identity_id: String,
    pub account_id: Option<String>,
    pub user_name: String,
    pub reason: LossReason,
    pub detected_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

/// What one observation changes in the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerChanges {
    pub open: Vec<NewEntry>,
    /// Ids of open episodes to cancel: the person has access again.
    pub cancel: Vec<i64>,
    /// Ids of verified episodes whose person has access again: a later loss opens
    /// a new episode.
    pub returned: Vec<i64>,
    /// Ids among `cancel` that end because a look-alike hold keeps the person,
    /// not because access came back: closed with [`LOOK_ALIKE_ENDED`] as their
    /// held text in the same write, so a process killed between two writes
    /// leaves no such episode told as "access came back".
    pub look_alike_ended: Vec<i64>,
}

/// Folds one directory observation into the ledger. `current` holds the episodes
/// that stand for someone's state (open ones, and verified ones of people not seen
/// with access since). A leaver without a current episode gets one (detected at
/// `now`, due after `sla`); a leaver whose deprovision was verified and who never
/// came back gets nothing, however often the directory still lists them. For
/// people seen with access (`returned` identity ids): an open episode is
/// cancelled unless already enforced (a deactivation that happened stays on record
/// and the next reconcile re-enables the account if the person is really back),
/// and a verified one is marked returned.
pub fn observe(
    current: &[LedgerEntry],
    leavers: &[Leaver],
    returned: &[String],
    now: DateTime<Utc>,
    sla: Duration,
) -> LedgerChanges {
    let mut changes = LedgerChanges::default();
    let by_identity: std::collections::HashMap<&str, &LedgerEntry> = current
        .iter()
        .filter(|e| e.closed_at.is_none() && e.returned_at.is_none())
        .map(|e| (e.identity_id.as_str(), e))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for leaver in leavers {
        if by_identity.contains_key(leaver.identity_id.as_str())
            || !seen.insert(leaver.identity_id.as_str())
        {
            continue;
        }
        changes.open.push(NewEntry {
            identity_id: leaver.identity_id.clone(),
            account_id: leaver.account_id.clone(),
            user_name: leaver.user_name.clone(),
            reason: leaver.reason,
            detected_at: now,
            due_at: now + sla,
        });
    }
    for identity in returned {
        let Some(entry) = by_identity.get(identity.as_str()) else {
            continue;
        };
        if entry.verified_at.is_some() {
            if !changes.returned.contains(&entry.id) {
                changes.returned.push(entry.id);
            }
        } else if entry.enforced_at.is_none() && !changes.cancel.contains(&entry.id) {
            changes.cancel.push(entry.id);
        }
    }
    changes
}

/// What a closed episode keeps as its `held` when it ended without the person's
/// access coming back: they are in a directory group that only looks like a
/// scope or protected group, and the reconcile holds the deprovision for a
/// person to decide. `explain` says so rather than "access came back".
pub const LOOK_ALIKE_ENDED: &str = "look_alike_group: ended without enforcing: the person is in \
     a directory group that only looks like a configured one, and the reconcile holds the \
     deprovision for a person to approve or reject";

/// The open episodes of `identities` not yet enforced, as (id, userName): what a
/// person's return would cancel ([`observe`]), for people who are not back but
/// whose deprovision waits for a human all the same (a directory group that
/// only looks like a configured one, [`crate::names`]).
pub fn unenforced_episodes(current: &[LedgerEntry], identities: &[String]) -> Vec<(i64, String)> {
    let identities: std::collections::HashSet<&str> =
        identities.iter().map(String::as_str).collect();
    current
        .iter()
        .filter(|e| e.is_open() && e.enforced_at.is_none())
        .filter(|e| identities.contains(e.identity_id.as_str()))
        .map(|e| (e.id, e.user_name.clone()))
        .collect()
}

/// The longest an attempt is ever put off: the backoff stops at 15 minutes and a
/// held deprovision is looked at again after 15, but while the circuit breaker is
/// open an attempt waits for its cool-down (`cool_down`), which may be longer.
/// An hour of margin on top.
pub fn longest_wait(cool_down: Duration) -> Duration {
    let wait = cool_down.max(Duration::minutes(15));
    wait.checked_add(&Duration::hours(1)).unwrap_or(wait)
}

/// Open episodes whose next attempt is due, overdue ones first, then by due time.
/// A next attempt further ahead than `longest_wait` was set by a clock that has
/// since been stepped back (NTP, a restored VM): it is due now rather than after
/// the clock catches up.
pub fn due_for_attempt(
    entries: &[LedgerEntry],
    now: DateTime<Utc>,
    longest_wait: Duration,
) -> Vec<&LedgerEntry> {
    let mut due: Vec<&LedgerEntry> = entries
        .iter()
        .filter(|e| {
            e.is_open()
                && e.next_attempt_at
                    .is_none_or(|at| at <= now || at - now > longest_wait)
        })
        .collect();
    due.sort_by_key(|e| (e.due_at, e.id));
    due
}

/// Open episodes detected further than `margin` ahead of `now`, each with the
/// detection and due time it takes instead: detected now, due as long after as
/// it was after its detection. A detection is stamped with the clock's "now",
/// so one that far ahead was stamped by a clock since stepped back (NTP setting
/// right one that ran ahead, a machine booted with a wrong clock): left, the
/// episode would not be overdue, nor escalated, until the clock caught up (a
/// year, for one that ran a year ahead), though the person keeps access all
/// along. When they really left is not known: the SLA clock starts now. One an
/// exception put off is due after the exception's end, which may lie ahead: it
/// is left alone.
pub fn detected_ahead(
    entries: &[LedgerEntry],
    now: DateTime<Utc>,
    margin: Duration,
) -> Vec<(i64, DateTime<Utc>, DateTime<Utc>)> {
    entries
        .iter()
        .filter(|e| e.is_open() && e.excepted_until.is_none() && e.detected_at - now > margin)
        .map(|e| {
            let sla = e.due_at - e.detected_at;
            (e.id, now, now.checked_add_signed(sla).unwrap_or(now))
        })
        .collect()
}

/// Open episodes past their due time that were not escalated yet.
pub fn to_escalate(entries: &[LedgerEntry], now: DateTime<Utc>) -> Vec<&LedgerEntry> {
    entries
        .iter()
        .filter(|e| e.state(now) == EntryState::Overdue && e.escalated_at.is_none())
        .collect()
}

/// When to try again after `attempts` failed attempts: 30 s doubling, at most
/// 15 min, so a workspace outage is retried often enough to stay inside a 1 h SLA
/// without hammering it.
pub fn next_attempt(attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = 30_i64.saturating_mul(1_i64 << attempts.saturating_sub(1).min(5));
    now + Duration::seconds(seconds.min(15 * 60))
}

/// Counts of open episodes at `now`: (pending, overdue).
pub fn open_counts(entries: &[LedgerEntry], now: DateTime<Utc>) -> (usize, usize) {
    entries.iter().fold((0, 0), |(p, o), e| match e.state(now) {
        EntryState::Pending => (p + 1, o),
        EntryState::Overdue => (p, o + 1),
        EntryState::Verified | EntryState::Cancelled => (p, o),
    })
}

/// The `q` quantile (0..=1, nearest rank) of a set of durations.
pub fn quantile(latencies: &mut [Duration], q: f64) -> Option<Duration> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * latencies.len() as f64).ceil() as usize;
    latencies.get(rank.saturating_sub(1)).copied()
}

/// A detection-to-verification time as people read it. Milliseconds below a
/// second: a fast workspace verifies within one, and "0 s" reads as no time or no
/// measurement at all.
pub fn latency_text(latency: Duration) -> String {
    let minutes = latency.num_minutes().max(0);
    if latency < Duration::seconds(1) {
        format!("{} ms", latency.num_milliseconds().max(0))
    } else if minutes < 1 {
        format!("{} s", latency.num_seconds())
    } else if minutes < 120 {
        format!("{minutes} min")
    } else {
        format!("{} h {} min", minutes / 60, minutes % 60)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn latencies_below_a_second_are_shown_in_milliseconds() {
        assert_eq!(latency_text(Duration::milliseconds(340)), "340 ms");
        assert_eq!(latency_text(Duration::zero()), "0 ms");
        assert_eq!(latency_text(Duration::milliseconds(-5)), "0 ms");
        assert_eq!(latency_text(Duration::milliseconds(1_500)), "1 s");
        assert_eq!(latency_text(Duration::seconds(59)), "59 s");
        assert_eq!(latency_text(Duration::minutes(90)), "90 min");
        assert_eq!(latency_text(Duration::minutes(150)), "2 h 30 min");
    }
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    fn leaver(id: &str) -> Leaver {
        Leaver {
            identity_id: id.into(),
            account_id: Some(format!("acc-{id}")),
            user_name: format!("{id}@example.com"),
            reason: LossReason::Suspended,
        }
    }

    fn entry(id: i64, identity: &str, detected: i64) -> LedgerEntry {
        LedgerEntry {
            id,
            identity_id: identity.into(),
            account_id: Some(format!("acc-{identity}")),
            user_name: format!("{identity}@example.com"),
            reason: LossReason::Suspended,
            detected_at: t(detected),
            due_at: t(detected + 60),
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
        }
    }

    #[test]
    fn a_new_leaver_opens_an_episode_due_after_the_sla() {
        let changes = observe(&[], &[leaver("a")], &[], t(0), Duration::hours(1));
        assert_eq!(changes.open.len(), 1);
        assert_eq!(changes.open[0].detected_at, t(0));
        assert_eq!(changes.open[0].due_at, t(60));
        assert!(changes.cancel.is_empty());
    }

    #[test]
    /// `observe` returns changes, not entries: a leaver seen again changes nothing
    /// about their open episode (no second one, no cancellation), so the episode
    /// detected first, with its detection time, is the one that stands. A new
    /// leaver in the same observation is opened as of now.
    fn a_leaver_seen_again_leaves_the_open_episode_alone() {
        let open = [entry(1, "a", -30)];
        let changes = observe(
            &open,
            &[leaver("a"), leaver("b")],
            &[],
            t(0),
            Duration::hours(1),
        );
        let opened: Vec<_> = changes
            .open
            .iter()
            .map(|e| (e.identity_id.as_str(), e.detected_at))
            .collect();
        assert_eq!(opened, [("b", t(0))], "{changes:?}");
        assert!(changes.cancel.is_empty(), "{changes:?}");
        assert!(changes.returned.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_leaver_listed_twice_in_one_observation_opens_one_episode() {
        let changes = observe(
            &[],
            &[leaver("a"), leaver("a")],
            &[],
            t(0),
            Duration::hours(1),
        );
        assert_eq!(changes.open.len(), 1);
    }

    #[test]
    fn someone_long_gone_does_not_open_an_episode_on_every_sweep() {
        let mut done = entry(1, "a", -300);
        done.verified_at = Some(t(-250));
        let changes = observe(
            &[done.clone()],
            &[leaver("a")],
            &[],
            t(0),
            Duration::hours(1),
        );
        assert_eq!(changes, LedgerChanges::default());
        // Back with access, then gone again: a new episode.
        let back = observe(
            &[done.clone()],
            &[],
            &["a".into()],
            t(1),
            Duration::hours(1),
        );
        assert_eq!(back.returned, vec![1]);
        done.returned_at = Some(t(1));
        let again = observe(&[done], &[leaver("a")], &[], t(2), Duration::hours(1));
        assert_eq!(again.open.len(), 1);
    }

    #[test]
    fn returning_before_enforcement_cancels_but_not_after() {
        let waiting = entry(1, "a", -10);
        let mut enforced = entry(2, "b", -10);
        enforced.enforced_at = Some(t(-5));
        let changes = observe(
            &[waiting, enforced],
            &[],
            &["a".into(), "b".into(), "c".into()],
            t(0),
            Duration::hours(1),
        );
        assert_eq!(changes.cancel, vec![1]);
    }

    #[test]
    fn a_latency_is_never_negative_when_an_exception_was_taken_out_early() {
        // Put off to t(1000); the exception was taken out and a reconcile
        // deactivated the account at t(100), before any sweep moved the end.
        let mut e = entry(1, "a", 0);
        e.excepted_until = Some(t(1000));
        e.enforced_at = Some(t(95));
        e.verified_at = Some(t(100));
        assert_eq!(e.latency(), Some(Duration::zero()));
    }

    #[test]
    fn states_follow_the_due_time_and_the_outcome() {
        let e = entry(1, "a", 0);
        assert_eq!(e.state(t(59)), EntryState::Pending);
        assert_eq!(e.state(t(60)), EntryState::Overdue);
        let mut found_done = e.clone();
        found_done.verified_at = Some(t(0));
        // Verified, but never enforced: the account had no access to take away.
        assert_eq!(found_done.state(t(100)), EntryState::Verified);
        assert!(found_done.found_without_access());
        assert_eq!(found_done.latency(), None);
        let mut verified = found_done;
        verified.enforced_at = Some(t(65));
        verified.verified_at = Some(t(70));
        assert_eq!(verified.state(t(100)), EntryState::Verified);
        assert!(!verified.found_without_access());
        assert_eq!(verified.latency(), Some(Duration::minutes(70)));
        let mut cancelled = e;
        cancelled.closed_at = Some(t(5));
        assert_eq!(cancelled.state(t(100)), EntryState::Cancelled);
    }

    #[test]
    fn held_episodes_become_overdue_and_are_escalated_once() {
        let mut held = entry(1, "a", 0);
        held.held = Some("threshold".into());
        let mut escalated = entry(2, "b", 0);
        escalated.escalated_at = Some(t(61));
        let entries = [held, escalated, entry(3, "c", 30)];
        let ids: Vec<i64> = to_escalate(&entries, t(62)).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![1]);
        assert_eq!(open_counts(&entries, t(62)), (1, 2));
    }

    #[test]
    fn attempts_wait_for_their_backoff_and_overdue_go_first() {
        let mut later = entry(1, "a", 0);
        later.next_attempt_at = Some(t(20));
        let early = entry(2, "b", -50);
        let fresh = entry(3, "c", 0);
        let entries = [later, early, fresh];
        let wait = longest_wait(Duration::minutes(5));
        let ids: Vec<i64> = due_for_attempt(&entries, t(15), wait)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![2, 3]);
        let ids: Vec<i64> = due_for_attempt(&entries, t(20), wait)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![2, 1, 3]);
        // The clock stepped back two hours after the attempt was put off: it does
        // not wait for the clock to catch up.
        let ids: Vec<i64> = due_for_attempt(&entries, t(20 - 120), wait)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![2, 1, 3]);
        let ids: Vec<i64> = due_for_attempt(&entries, t(20 - 60), wait)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![2, 3], "an hour ahead is still a wait");
        // With a two-hour cool-down of the circuit breaker, an attempt two hours
        // ahead is one waiting for it, not a clock stepped back.
        let ids: Vec<i64> =
            due_for_attempt(&entries, t(20 - 120), longest_wait(Duration::hours(2)))
                .iter()
                .map(|e| e.id)
                .collect();
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn a_detection_far_in_the_clocks_future_starts_the_sla_clock_now() {
        let hour = Duration::hours(1);
        let ahead = entry(1, "a", 365 * 24 * 60);
        let just_ahead = entry(2, "b", 30);
        let mut excepted = entry(3, "c", 365 * 24 * 60);
        excepted.excepted_until = Some(t(365 * 24 * 60));
        let mut verified = entry(4, "d", 365 * 24 * 60);
        verified.verified_at = Some(t(365 * 24 * 60 + 5));
        let entries = [ahead, just_ahead, excepted, verified];
        assert_eq!(detected_ahead(&entries, t(0), hour), [(1, t(0), t(60))]);
        // An hour ahead is a clock's honest skew, not a step: left alone.
        assert!(detected_ahead(&[entry(5, "e", 60)], t(0), hour).is_empty());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(next_attempt(1, t(0)), t(0) + Duration::seconds(30));
        assert_eq!(next_attempt(2, t(0)), t(0) + Duration::seconds(60));
        assert_eq!(next_attempt(3, t(0)), t(0) + Duration::seconds(120));
        assert_eq!(next_attempt(40, t(0)), t(15));
    }

    /// One step of a simulated ledger: minutes on, who the directory shows gone
    /// and who back (bit sets over four people), and of the open episodes, whose
    /// accounts a pass then deactivates and verifies, and whose deactivation it
    /// sends without verifying it yet.
    #[derive(Debug, Clone)]
    struct Step {
        minutes: i64,
        gone: u8,
        back: u8,
        deactivated: u8,
        sent: u8,
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (0_i64..120, 0_u8..16, 0_u8..16, 0_u8..16, 0_u8..16).prop_map(
                |(minutes, gone, back, deactivated, sent)| Step {
                    minutes,
                    // Nobody is both gone and back in one observation.
                    back: back & !gone,
                    gone,
                    deactivated,
                    sent,
                },
            ),
            1..40,
        )
    }

    /// What `Store::update_ledger` does with `changes`, on a vector.
    fn apply(ledger: &mut Vec<LedgerEntry>, changes: &LedgerChanges, at: DateTime<Utc>) {
        for new in &changes.open {
            if ledger
                .iter()
                .any(|e| e.identity_id == new.identity_id && e.is_open())
            {
                continue;
            }
            let mut e = entry(ledger.len() as i64 + 1, &new.identity_id, 0);
            e.detected_at = new.detected_at;
            e.due_at = new.due_at;
            ledger.push(e);
        }
        for e in ledger.iter_mut() {
            if changes.cancel.contains(&e.id) && e.is_open() {
                e.closed_at = Some(at);
            }
            if changes.returned.contains(&e.id) && e.closed_at.is_none() && e.returned_at.is_none()
            {
                e.returned_at = Some(at);
            }
        }
    }

    proptest::proptest! {
        /// Whatever the directory does over time: every leaver has an episode
        /// that stands for them (open, or verified and not back since) — an open
        /// one if they were back after their last verified one (their account is
        /// enabled again) — at most one open per person, due exactly one SLA
        /// after it was detected; an enforced deactivation is never cancelled;
        /// and every open episode past its due time is escalated exactly once.
        #[test]
        fn no_leaver_goes_without_an_episode_and_every_miss_is_escalated_once(
            steps in steps(),
            sla_minutes in 1_i64..180,
        ) {
            let sla = Duration::minutes(sla_minutes);
            let people = ["a", "b", "c", "d"];
            let mut ledger: Vec<LedgerEntry> = Vec::new();
            let mut now = t(0);
            let mut escalations: std::collections::HashMap<i64, usize> = Default::default();
            let mut reenabled: std::collections::HashSet<String> = Default::default();
            for step in steps {
                now += Duration::minutes(step.minutes);
                let pick = |bits: u8| -> Vec<&str> {
                    people.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, p)| *p).collect()
                };
                let leavers: Vec<Leaver> = pick(step.gone).into_iter().map(leaver).collect();
                let returned: Vec<String> = pick(step.back).into_iter().map(String::from).collect();
                let current: Vec<LedgerEntry> = ledger
                    .iter()
                    .filter(|e| e.closed_at.is_none() && e.returned_at.is_none())
                    .cloned()
                    .collect();
                let changes = observe(&current, &leavers, &returned, now, sla);
                for new in &changes.open {
                    proptest::prop_assert_eq!(new.detected_at, now);
                    proptest::prop_assert_eq!(new.due_at - new.detected_at, sla);
                }
                for id in &changes.cancel {
                    let e = ledger.iter().find(|e| e.id == *id).unwrap();
                    proptest::prop_assert!(e.enforced_at.is_none(), "cancelled after enforcement: {:?}", e);
                }
                for person in &returned {
                    if ledger.iter().any(|e| &e.identity_id == person
                        && e.verified_at.is_some()
                        && e.returned_at.is_none())
                    {
                        reenabled.insert(person.clone());
                    }
                }
                apply(&mut ledger, &changes, now);
                for leaver in &leavers {
                    if reenabled.remove(&leaver.identity_id) {
                        proptest::prop_assert!(
                            ledger.iter().any(|e| e.identity_id == leaver.identity_id && e.is_open()),
                            "{} left again after coming back, and no episode is open: {:?}",
                            leaver.identity_id, ledger
                        );
                    }
                    proptest::prop_assert!(
                        ledger.iter().any(|e| e.identity_id == leaver.identity_id
                            && e.closed_at.is_none()
                            && e.returned_at.is_none()),
                        "{} left with no episode standing for it: {:?}", leaver.identity_id, ledger
                    );
                }
                for person in people {
                    let open = ledger.iter().filter(|e| e.identity_id == person && e.is_open()).count();
                    proptest::prop_assert!(open <= 1, "{} has {} open episodes", person, open);
                }
                // A pass: some open episodes' accounts are deactivated now.
                for e in ledger.iter_mut().filter(|e| e.is_open()) {
                    let i = people.iter().position(|p| *p == e.identity_id).unwrap();
                    if step.deactivated & (1 << i) != 0 {
                        e.enforced_at = Some(now);
                        e.verified_at = Some(now);
                    } else if step.sent & (1 << i) != 0 {
                        e.enforced_at = Some(now);
                    }
                }
                let due: Vec<i64> = to_escalate(&ledger, now).iter().map(|e| e.id).collect();
                for e in ledger.iter_mut().filter(|e| due.contains(&e.id)) {
                    e.escalated_at = Some(now);
                    *escalations.entry(e.id).or_default() += 1;
                }
                for e in &ledger {
                    if e.is_open() && now >= e.due_at {
                        proptest::prop_assert!(e.escalated_at.is_some(), "overdue, not escalated: {:?}", e);
                    }
                }
            }
            proptest::prop_assert!(escalations.values().all(|n| *n == 1), "{:?}", escalations);
        }
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut l: Vec<Duration> = (1..=100).map(Duration::seconds).collect();
        assert_eq!(quantile(&mut l, 0.5), Some(Duration::seconds(50)));
        assert_eq!(quantile(&mut l, 0.99), Some(Duration::seconds(99)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
