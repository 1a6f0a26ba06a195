//! What the daemon tells people: alerts raised and resolved from what its jobs saw,
//! the scheduled digest, and delivery of the outbox. Without `[report.email]`
//! nothing is queued; conditions are still logged and counted in metrics.
//!
//! A notification problem never fails the job that found the condition: it is
//! logged, and the message (once queued) waits in the outbox for the next delivery.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::alert::{self, AlertCondition, AlertContext};
use crate::config::Config;
use crate::mail::{self, MailSettings, Mailer};
use crate::report::Report;
use crate::report::digest::{self, DeprovisionHold, DigestDeprovision};
use crate::sla::LedgerEntry;
use crate::store::{Store, StoreError};

/// Failures in a row before a job's failures are alerted.
pub const REPEATED_FAILURES: u32 = 3;

/// The ledger's open episodes as the digest shows them.
pub fn digest_deprovisions(store: &Store) -> Result<Vec<DigestDeprovision>, StoreError> {
    Ok(store
        .open_deprovisions()?
        .iter()
        .map(|e: &LedgerEntry| DigestDeprovision {
            user_name: e.user_name.clone(),
            identity_id: e.identity_id.clone(),
            reason: e.reason.to_string(),
            detected_at: e.detected_at,
            due_at: e.due_at,
            held: e.held.as_deref().map(|held| {
                if held.starts_with(crate::sweep::DISPUTED_HOLD) {
                    DeprovisionHold::DisputedMatch
                } else {
                    DeprovisionHold::Guard
                }
            }),
        })
        .collect())
}

/// The email side of the daemon, when `[report.email]` is configured.
pub struct Notifier {
    name: String,
    timezone: Tz,
    mail: MailSettings,
    admin_command: String,
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

    /// The digest of the period up to `now`, queued in one transaction with
    /// `state` (a `daemon_state` key and value: the period it covers).
    pub fn queue_digest(
        &self,
        store: &mut Store,
        now: DateTime<Utc>,
        period: chrono::Duration,
        state: (&str, &str),
    ) -> Result<(), String> {
        let deprovisions = digest_deprovisions(store).map_err(|e| e.to_string())?;
        let digest = digest::build_from_store(
            store,
            &self.name,
            self.timezone,
            now,
            period.to_std().unwrap_or_default(),
            &deprovisions,
            &self.admin_command,
        )
        .map_err(|e| e.to_string())?;
        mail::queue_digest_setting_state(store, &self.mail, &digest, now, state)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Sends what is due in the outbox; failures stay queued with their backoff.
    pub async fn deliver(&self, store: &mut Store, now: DateTime<Utc>) {
        let mailer = match Mailer::new(&self.mail) {
            Ok(mailer) => mailer,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up SMTP delivery");
                return;
            }
        };
        match mail::deliver_due(store, &mailer, self.mail.retry, now).await {
            Ok(d) if d.sent + d.retrying + d.failed > 0 => tracing::info!(
                sent = d.sent,
                retrying = d.retrying,
                failed = d.failed,
                last_error = d.last_error.as_deref().unwrap_or(""),
                "outbox delivery"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outbox delivery failed"),
        }
    }

    /// Raises or resolves the conditions a finished reconcile shows.
    pub fn after_reconcile(&self, store: &mut Store, report: &Report, now: DateTime<Utc>) {
        let held = report.awaiting_approval();
        if held > 0 {
            let reason = report
                .actions
                .iter()
                .find(|a| a.outcome == crate::report::Outcome::Held && !a.waiting)
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

    /// `failures` failed runs in a row of `job` (0 after a success).
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
            Some(_) => {}
            None => self.resolve(store, &key, now),
        }
    }
}
