//! What the daemon tells people: alerts raised and resolved from what its jobs saw,
//! the scheduled digest, and delivery of the outbox. The resolution of a
//! condition that comes and goes waits until it stayed clear for
//! `report.email.resolve_after` ([`crate::alert::damped`]); the daemon sends
//! those due after every job ([`Notifier::resolve_due`]). Without `[report.email]`
//! nothing is queued; conditions are still logged and counted in metrics.
//!
//! A notification problem never fails the job that found the condition: it is
//! logged, and the message (once queued) waits in the outbox for the next delivery.
//! Only the mail job, whose work delivery is, fails when messages were due and none
//! could be sent ([`Delivered::Failed`]).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::alert::{self, AlertCondition, AlertContext, HeldPerson};
use crate::config::Config;
use crate::mail::{self, MailSettings, Mailer};
use crate::report::Report;
use crate::report::digest::{self, DeprovisionHold, DigestDeprovision};
use crate::sla::LedgerEntry;
use crate::store::{ActionState, RunId, Store, StoreError};
use crate::sweep::SweepOutcome;

/// Failures in a row before a job's failures are alerted.
pub const REPEATED_FAILURES: u32 = 3;

/// The ledger's open episodes as the digest shows them, each held by the guard
/// with the run holding it.
pub fn digest_deprovisions(store: &Store) -> Result<Vec<DigestDeprovision>, StoreError> {
    let waiting = store.held_for_approval()?;
    let decided = store.decided_holds()?;
    Ok(store
        .open_deprovisions()?
        .iter()
        .map(|e: &LedgerEntry| {
            let held = e.held.as_deref().map(deprovision_hold);
            let hold_run = hold_run(held, &e.identity_id, &waiting);
            DigestDeprovision {
                user_name: e.user_name.clone(),
                identity_id: e.identity_id.clone(),
                reason: e.reason.to_string(),
                detected_at: e.detected_at,
                due_at: e.due_at,
                held,
                hold_run,
                hold_decided: hold_decided(held, hold_run, &e.identity_id, &decided),
                // A hold says what it waits for; otherwise the attempts' last error.
                why_open: e
                    .held
                    .is_none()
                    .then(|| crate::alert::why_open(e))
                    .flatten(),
            }
        })
        .collect())
}

/// The run whose approval releases a guard's hold on `identity_id`, from
/// [`Store::held_for_approval`]. Other holds wait for no approval: naming a run
/// there would send someone to approve what the hold keeps back anyway.
pub fn hold_run(
    held: Option<DeprovisionHold>,
    identity_id: &str,
    waiting: &std::collections::HashMap<String, RunId>,
) -> Option<RunId> {
    match held {
        Some(DeprovisionHold::Guard) => waiting.get(identity_id).copied(),
        _ => None,
    }
}

/// What became of the newest guard hold on `identity_id` when no run waits for
/// its approval (`hold_run` is `None`), from [`Store::decided_holds`]: rejected,
/// or refused by an approval. `status` and the digest tell it instead of
/// "approve RUN", which would ask for what nobody is to approve.
pub fn hold_decided(
    held: Option<DeprovisionHold>,
    hold_run: Option<RunId>,
    identity_id: &str,
    decided: &std::collections::HashMap<String, crate::store::DecidedHold>,
) -> Option<digest::HoldDecided> {
    match (held, hold_run) {
        (Some(DeprovisionHold::Guard), None) => decided
            .get(identity_id)
            .cloned()
            .map(digest::HoldDecided::from),
        _ => None,
    }
}

/// What holds an open deprovision, from the reason its ledger entry keeps: the
/// digest and `status` word it, and name the command that releases it, alike.
/// A hold after an earlier rejection is judged by the reason it is held again for.
/// ([`DeprovisionHold::of`], which the overdue alert judges by too.)
pub fn deprovision_hold(held: &str) -> DeprovisionHold {
    DeprovisionHold::of(held)
}

/// What one [`Notifier::deliver`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// No message was due (or another sender had taken those that were).
    NothingDue,
    /// At least one due message was accepted by the server; any others wait.
    Sent(mail::Delivery),
    /// Messages were due and none could be sent, or delivery could not start: why.
    Failed(String),
}

/// The key of the sweep's hold alert ([`AlertCondition::SweepHeld`]).
const SWEEP_HELD: &str = "sweep_held";

/// The hold alert for what the guard held in the pass's run, if it held anything.
/// (Protected and disputed accounts are held before any run, for reasons no
/// approval changes; their episodes become overdue and alert so.) The hold's
/// commands are spelled with `admin_command` (`report.admin_command`).
fn sweep_holds(
    store: &Store,
    outcome: &SweepOutcome,
    admin_command: &str,
) -> Result<Option<AlertCondition>, StoreError> {
    let Some(run) = outcome.run_id else {
        return Ok(None);
    };
    let held: Vec<_> = store
        .journal(run)?
        .into_iter()
        .filter(|e| e.state == ActionState::Held)
        .collect();
    let Some(first) = held.first() else {
        return Ok(None);
    };
    let reason = first.action.held.as_ref().map_or_else(
        || "held by the guard".to_owned(),
        |hold| hold.describe(admin_command).to_string(),
    );
    let rejected = |e: &crate::store::JournalEntry| {
        e.action
            .identity_id
            .as_ref()
            .and_then(|id| outcome.rejected_before.get(id))
    };
    let people = held
        .iter()
        .take(alert::LISTED)
        .map(|e| HeldPerson {
            user_name: e.action.subject.clone(),
            identity_id: e.action.identity_id.clone().unwrap_or_default(),
            rejected: rejected(e).cloned(),
        })
        .collect();
    Ok(Some(AlertCondition::SweepHeld {
        run_id: run,
        held: held.len(),
        reason,
        people,
        rejected_before: held.iter().filter(|e| rejected(e).is_some()).count(),
    }))
}

/// Whether the active sweep hold alert, if any, is over: nobody of the run it
/// names is still waiting, that is, each held action was approved or rejected, or
/// its person's deprovision is no longer open (done since by an approval of
/// another run or by a reconcile, or the person is back). A pass with nothing due
/// holds nothing, so that alone says nothing.
fn sweep_hold_over(store: &Store) -> Result<bool, StoreError> {
    let Some(record) = store
        .alert(SWEEP_HELD)?
        .filter(|r| r.state == crate::store::AlertRecordState::Active)
    else {
        return Ok(false);
    };
    let run = match serde_json::from_str::<AlertCondition>(&record.condition) {
        Ok(AlertCondition::SweepHeld { run_id, .. }) => run_id,
        // Unreadable: nothing to name, nothing to keep waiting for.
        _ => return Ok(true),
    };
    Ok(still_held(store, run)? == 0)
}

/// How many of `run`'s held actions nobody decided on, that an approval's
/// re-check did not refuse ([`crate::approval::refused_by_approval`]: nothing
/// waits for an approval of those), and whose person's deprovision is still open.
fn still_held(store: &Store, run: RunId) -> Result<usize, StoreError> {
    let decided = store.decisions(run)?;
    let open: std::collections::HashSet<String> = store
        .open_deprovisions()?
        .into_iter()
        .map(|e| e.identity_id)
        .collect();
    Ok(store
        .journal(run)?
        .iter()
        .filter(|e| e.state == ActionState::Held && !decided.contains_key(&e.action.seq))
        .filter(|e| !crate::approval::refused_by_approval(e))
        .filter(|e| {
            e.action
                .identity_id
                .as_ref()
                .is_some_and(|id| open.contains(id))
        })
        .count())
}

/// The email side of the daemon, when `[report.email]` is configured.
pub struct Notifier {
    name: String,
    timezone: Tz,
    mail: MailSettings,
    admin_command: String,
    /// `safety.circuit.cool_down`: how long an opened breaker stays open.
    cool_down: std::time::Duration,
    /// `schedule.dry_run`: the digest says nothing is acted on.
    dry_run: bool,
    /// The certificate files, read when a digest is built (off the async
    /// workers, where the notifier is made at each job's start) for
    /// [`Digest::with_certificates`](crate::report::digest::Digest::with_certificates).
    certificate_files: Vec<(&'static str, std::path::PathBuf)>,
    /// `safety.exceptions`, for [`Digest::with_exceptions`](crate::report::digest::Digest::with_exceptions).
    exceptions: Vec<crate::model::Exception>,
}

impl Notifier {
    pub fn from_config(config: &Config) -> Option<Notifier> {
        let mail = match config.mail_settings() {
            Ok(Some(mail)) => mail,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "email disabled: [report.email] cannot be used");
                return None;
            }
        };
        let timezone = config.report_timezone().unwrap_or(Tz::UTC);
        Some(Notifier {
            name: config.report_name(),
            timezone,
            mail,
            admin_command: config.admin_command(),
            cool_down: config.circuit_settings().cool_down,
            dry_run: config.schedule.dry_run,
            certificate_files: crate::certificate::files(config),
            exceptions: config.exceptions().unwrap_or_default(),
        })
    }

    fn context(&self) -> AlertContext<'_> {
        AlertContext {
            name: &self.name,
            timezone: self.timezone,
            mail: &self.mail,
            admin_command: &self.admin_command,
        }
    }

    pub fn raise(&self, store: &mut Store, condition: &AlertCondition, now: DateTime<Utc>) {
        if let Err(e) = alert::raise(store, &self.context(), condition, now) {
            tracing::error!(alert = %condition.key(), error = %e, "cannot record the alert");
        }
    }

    pub fn resolve(&self, store: &mut Store, key: &str, now: DateTime<Utc>) {
        if let Err(e) = alert::resolve(store, &self.context(), key, now) {
            tracing::error!(alert = key, error = %e, "cannot record the alert's resolution");
        }
    }

    /// Sends the resolutions whose hold is over ([`alert::resolve_due`]): the
    /// daemon calls it after every job, so a condition no job sees again (a
    /// job that stopped failing and runs only daily) still has its resolution
    /// sent when it is due, also after a restart.
    pub fn resolve_due(&self, store: &mut Store, now: DateTime<Utc>) {
        if let Err(e) = alert::resolve_due(store, &self.context(), now) {
            tracing::error!(error = %e, "cannot send the alerts' due resolutions");
        }
    }

    /// The digest of the period up to `now`, its trend against `previous` (what
    /// the last digest covered, when recorded), queued in one transaction with
    /// `state` (`daemon_state` keys and values: the period it covers).
    pub fn queue_digest(
        &self,
        store: &mut Store,
        now: DateTime<Utc>,
        period: chrono::Duration,
        previous: Option<digest::Span>,
        state: &[(&str, &str)],
    ) -> Result<(), String> {
        let deprovisions = digest_deprovisions(store).map_err(|e| e.to_string())?;
        let digest = digest::build_from_store_after(
            store,
            &self.name,
            self.timezone,
            now,
            period.to_std().unwrap_or_default(),
            previous,
            &deprovisions,
            &self.admin_command,
        )
        .map_err(|e| e.to_string())?
        .with_certificates(
            &crate::certificate::of_files(&self.certificate_files)
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
            now,
        )
        .with_exceptions(&self.exceptions, now);
        let digest = if self.dry_run {
            digest.in_dry_run()
        } else {
            digest
        };
        mail::queue_digest_setting_state(store, &self.mail, &digest, now, state)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Sends what is due in the outbox; failures stay queued with their backoff.
    pub async fn deliver(&self, store: &mut Store, now: DateTime<Utc>) -> Delivered {
        let mailer = match Mailer::new(&self.mail) {
            Ok(mailer) => mailer,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up SMTP delivery");
                return Delivered::Failed(format!("cannot set up SMTP delivery: {e}"));
            }
        };
        match mail::deliver_due(store, &mailer, self.mail.retry, now).await {
            Ok(d) if d.sent + d.retrying + d.failed == 0 => Delivered::NothingDue,
            Ok(d) => {
                tracing::info!(
                    sent = d.sent,
                    retrying = d.retrying,
                    failed = d.failed,
                    last_error = d.last_error.as_deref().unwrap_or(""),
                    "outbox delivery"
                );
                if d.sent == 0 {
                    let why = d.last_error.as_deref().unwrap_or("no reason given");
                    Delivered::Failed(format!(
                        "no due message could be sent ({} kept for a later attempt, {} refused \
                         for good): {why}",
                        d.retrying, d.failed
                    ))
                } else {
                    Delivered::Sent(d)
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox delivery failed");
                Delivered::Failed(format!("outbox delivery failed: {e}"))
            }
        }
    }

    /// Raises or resolves the conditions a finished reconcile shows. A dry run
    /// (`schedule.dry_run`) judges only its directory read: it holds nothing
    /// anyone can approve (`approve` refuses it), applies nothing an incomplete
    /// read kept back, and never passes the circuit breaker, so it leaves the
    /// plan-held, directory-incomplete and breaker alerts as the last enforcing
    /// run left them: the holds that run made still wait for `approve`, and the
    /// breaker is as open as before (`status` says so), not resolved by a run
    /// that wrote nothing.
    pub fn after_reconcile(&self, store: &mut Store, report: &Report, now: DateTime<Utc>) {
        if report.mode == "reconcile" {
            self.after_enforcing_reconcile(store, report, now);
        }
        match &report.safety.source_fault {
            Some(fault) => self.raise(
                store,
                &AlertCondition::DirectorySnapshotRejected {
                    reason: fault.to_string(),
                },
                now,
            ),
            None => self.resolve(store, "directory_snapshot_rejected", now),
        }
        // A run whose reads could not tell (incomplete, rejected, short) leaves
        // the alert as it is: resolved by such runs, a directory read failing
        // for longer than resolve_after would tell the typo fixed, and the next
        // whole read raise it again.
        if report.safety.exceptions_naming_nobody_unknown {
            return;
        }
        if report.safety.exceptions_naming_nobody.is_empty() {
            self.resolve(store, "exceptions_naming_nobody", now);
        } else {
            self.raise(
                store,
                &AlertCondition::ExceptionsNamingNobody {
                    exceptions: report.safety.exceptions_naming_nobody.clone(),
                },
                now,
            );
        }
    }

    /// [`Notifier::after_reconcile`]'s conditions of a run that applies.
    fn after_enforcing_reconcile(&self, store: &mut Store, report: &Report, now: DateTime<Utc>) {
        let held = report.awaiting_approval();
        if held > 0 {
            let reason = report
                .actions
                .iter()
                .find(|a| {
                    a.outcome == crate::report::Outcome::Held
                        && !a.waiting
                        && !a.held_incomplete_directory()
                })
                .and_then(|a| a.error.clone())
                .unwrap_or_else(|| "held by the guard".to_owned());
            self.raise(
                store,
                &AlertCondition::PlanHeld {
                    run_id: report.run_id,
                    held,
                    reason,
                },
                now,
            );
        } else {
            self.resolve(store, "plan_held", now);
        }
        // Not `plan_held`: nobody can approve these, and a leaver among them keeps
        // access until a reconcile reads the directory whole.
        let incomplete = report.held_incomplete_directory();
        if incomplete > 0 {
            self.raise(
                store,
                &AlertCondition::DirectoryIncomplete {
                    run_id: report.run_id,
                    held: incomplete,
                },
                now,
            );
        } else {
            self.resolve(store, "directory_incomplete", now);
        }
        match &report.safety.circuit {
            Some(circuit) => self.raise(
                store,
                &AlertCondition::CircuitBreakerOpen {
                    reason: circuit
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("circuit breaker {}", circuit.state.as_str())),
                },
                now,
            ),
            None => self.resolve(store, "circuit_breaker_open", now),
        }
    }

    /// The source sanity alert from a sweep's directory read: raised when the
    /// sweep rejected the snapshot, resolved when it read the directory whole,
    /// complete and accepted, as a reconcile's read resolves it. A delta (or no
    /// read, a retry pass) says nothing about the whole directory: it leaves the
    /// alert as it is.
    fn after_sweep_source(&self, store: &mut Store, outcome: &SweepOutcome, now: DateTime<Utc>) {
        if let Some(fault) = &outcome.source_fault {
            self.raise(
                store,
                &AlertCondition::DirectorySnapshotRejected {
                    reason: fault.clone(),
                },
                now,
            );
        } else if outcome.directory_read == crate::sweep::DirectoryRead::Whole {
            self.resolve(store, "directory_snapshot_rejected", now);
        }
    }

    /// The source sanity alert first ([`Notifier::after_sweep_source`]). Raises
    /// the sweep's hold alert when this sweep or retry pass's guard held
    /// deprovisions, at once rather than at the next reconcile; otherwise resolves
    /// it once the run it names holds nobody any more (see [`still_held`]). Then
    /// the circuit breaker's alert, from its stored state ([`Notifier::after_sweep_circuit`]).
    pub fn after_sweep(&self, store: &mut Store, outcome: &SweepOutcome, now: DateTime<Utc>) {
        self.after_sweep_source(store, outcome, now);
        self.after_sweep_holds(store, outcome, now);
        match store.circuit() {
            Ok(record) => {
                let state = crate::circuit::state(&record, now, self.cool_down);
                self.after_sweep_circuit(store, &state, record, now);
            }
            Err(e) => tracing::error!(error = %e, "cannot read the circuit breaker's state"),
        }
    }

    fn after_sweep_holds(&self, store: &mut Store, outcome: &SweepOutcome, now: DateTime<Utc>) {
        match sweep_holds(store, outcome, &self.admin_command) {
            Ok(Some(condition)) => self.raise(store, &condition, now),
            Ok(None) => match sweep_hold_over(store) {
                Ok(true) => self.resolve(store, SWEEP_HELD, now),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot read what the sweep holds"),
            },
            Err(e) => tracing::error!(error = %e, "cannot read what the sweep held"),
        }
    }

    /// The breaker's alert after a sweep or retry pass, from its stored state
    /// (`state`, `record`): raised while it is open (the pass tripped it, or
    /// found it open and sent nothing), at once rather than at the next
    /// reconcile, hours away perhaps, while every pass in between sends nothing;
    /// resolved once it is closed. Half-open, it is left as the last reconcile's
    /// report has it.
    fn after_sweep_circuit(
        &self,
        store: &mut Store,
        state: &crate::circuit::CircuitState,
        record: crate::circuit::CircuitRecord,
        now: DateTime<Utc>,
    ) {
        match state {
            crate::circuit::CircuitState::Open { .. } => self.raise(
                store,
                &AlertCondition::CircuitBreakerOpen {
                    reason: record
                        .reason
                        .unwrap_or_else(|| format!("circuit breaker {}", state.as_str())),
                },
                now,
            ),
            crate::circuit::CircuitState::Closed => {
                self.resolve(store, "circuit_breaker_open", now)
            }
            crate::circuit::CircuitState::HalfOpen { .. } => {}
        }
    }

    /// Alerts the deprovisions overdue at `now`, from the ledger as it stands, in
    /// one message however many there are (a held layoff), then one combined
    /// reminder per quiet period while they stay overdue, and resolves those no
    /// longer open (verified or cancelled) in one message
    /// ([`alert::overdue_deprovisions`]). Derived from the ledger, not from what one
    /// job escalated, so an alert a failed job or a mail configuration that was
    /// unusable at the time could not queue is queued by the next call. A call
    /// that sends nothing writes nothing.
    pub fn after_deprovisioning(&self, store: &mut Store, now: DateTime<Utc>) {
        if let Err(e) = alert::overdue_deprovisions(store, &self.context(), now) {
            tracing::error!(error = %e, "cannot record the overdue deprovisions' alerts");
        }
    }

    /// `failures` failed runs in a row of `job` (0 after a success). A failure
    /// short of the streak that alerts, while the repeated-failure alert's
    /// resolution is held (a success was seen within `resolve_after`), continues
    /// that alert ([`alert::reopen`]): the job is failing on and off, and the
    /// third failure in a row, hours away for a reconcile, must not be what tells
    /// a flaky job apart from one that was fixed.
    pub fn after_job(
        &self,
        store: &mut Store,
        job: &str,
        failures: u32,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) {
        let key = format!("repeated_failures:{job}");
        match error {
            Some(error) if failures >= REPEATED_FAILURES => self.raise(
                store,
                &AlertCondition::RepeatedFailures {
                    job: job.to_owned(),
                    failures,
                    last_error: error.to_owned(),
                },
                now,
            ),
            Some(_) => {
                if let Err(e) = alert::reopen(store, &self.context(), &key, now) {
                    tracing::error!(alert = %key, error = %e, "cannot record the alert");
                }
            }
            None => self.resolve(store, &key, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each hold the sweep records is told apart, also when it is held again after
    /// a rejection: the protected account and the contradicted link wait for no
    /// `approve`, and the digest and `status` must not send a reader there.
    #[test]
    fn every_kind_of_hold_is_told_apart() {
        let rejected = |now: &str| {
            format!(
                "rejected in run 4 by ada at 2026-12-01T09:00:00Z{}{now}",
                crate::sweep::HELD_AGAIN
            )
        };
        for (held, expected) in [
            (
                "deprovisions: 12 in this run, over the limit of 10".to_owned(),
                DeprovisionHold::Guard,
            ),
            (
                format!(
                    "{} which account is theirs is unclear",
                    crate::sweep::DISPUTED_HOLD
                ),
                DeprovisionHold::DisputedMatch,
            ),
            (
                format!(
                    "{} the linked account names 00u2",
                    crate::sweep::CONTRADICTED_LINK_HOLD
                ),
                DeprovisionHold::ContradictedLink,
            ),
            (
                format!(
                    "{} seatwarden never touches it",
                    crate::sweep::PROTECTED_HOLD
                ),
                DeprovisionHold::Protected,
            ),
            (
                format!(
                    "{} until 2026-12-15 00:00 +01:00 (CET): handover",
                    crate::sweep::EXCEPTED_HOLD
                ),
                DeprovisionHold::Excepted,
            ),
            (
                rejected("deprovisions: 12 in this run, over the limit of 10"),
                DeprovisionHold::Guard,
            ),
            (
                rejected(&format!("{} never touched", crate::sweep::PROTECTED_HOLD)),
                DeprovisionHold::Protected,
            ),
        ] {
            assert_eq!(deprovision_hold(&held), expected, "{held}");
        }
        let approve =
            DeprovisionHold::Guard.waiting_for("seatwarden", "00u1", Some(8), None, chrono_tz::UTC);
        assert!(approve.contains("`seatwarden approve 8`"), "{approve}");
        assert!(approve.contains("`seatwarden reject 8`"), "{approve}");
        for hold in [
            DeprovisionHold::ContradictedLink,
            DeprovisionHold::Protected,
            DeprovisionHold::Excepted,
        ] {
            let says = hold.waiting_for("seatwarden", "00u1", None, None, chrono_tz::UTC);
            assert!(!says.contains("approve"), "{says}");
            assert_ne!(says, approve);
        }
    }
}
