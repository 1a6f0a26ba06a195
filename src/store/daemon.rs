//! The daemon's tables: the deprovisioning ledger, the scheduler's record of each
//! job, and small key/value state (the directory's change cursor).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::sla::{LedgerChanges, LedgerEntry, LossReason};

use super::codec::{Ts, ts};
use super::error::Context;
use super::{ASKED_AGAIN, RunId, RunStatus, Store, StoreError};

/// How soon after the daemon's reconcile job starts (its locks taken) it begins
/// its run ([`Store::close_interrupted_dry_run`]): a few local steps, well within.
const JOB_RUN_BEGINS_WITHIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// What the scheduler remembers of one job across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub name: String,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_status: Option<RunStatus>,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// The prefix of the `daemon_state` keys of the daemon's jobs waiting for the
/// writer lock (`lock_wait.<job>`, since when: RFC 3339, UTC).
const LOCK_WAIT: &str = "lock_wait.";

const LEDGER_COLUMNS: &str = "id, identity_id, account_id, user_name, reason, detected_at, \
     due_at, enforced_at, verified_at, closed_at, escalated_at, attempts, next_attempt_at, \
     last_error, held, returned_at, excepted_until";

fn opt_ts(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row.get::<_, Option<Ts>>(idx)?.map(|Ts(at)| at))
}

fn ledger_entry(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    let reason: String = row.get(4)?;
    let reason = LossReason::ALL
        .into_iter()
        .find(|r| r.as_str() == reason)
        .ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                Box::new(super::codec::BadValue(format!(
                    "invalid loss reason {reason:?}"
                ))),
            )
        })?;
    Ok(LedgerEntry {
        id: row.get(0)?,
        identity_id: row.get(1)?,
        account_id: row.get(2)?,
        user_name: row.get(3)?,
        reason,
        detected_at: row.get::<_, Ts>(5)?.0,
        due_at: row.get::<_, Ts>(6)?.0,
        enforced_at: opt_ts(row, 7)?,
        verified_at: opt_ts(row, 8)?,
        closed_at: opt_ts(row, 9)?,
        escalated_at: opt_ts(row, 10)?,
        attempts: row.get(11)?,
        next_attempt_at: opt_ts(row, 12)?,
        last_error: row.get(13)?,
        held: row.get(14)?,
        returned_at: opt_ts(row, 15)?,
        excepted_until: opt_ts(row, 16)?,
    })
}

fn job_record(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        name: row.get(0)?,
        last_started_at: opt_ts(row, 1)?,
        last_finished_at: opt_ts(row, 2)?,
        last_status: row.get(3)?,
        last_error: row.get(4)?,
        last_success_at: opt_ts(row, 5)?,
    })
}

/// What [`Store::prune_before`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub runs: usize,
    /// Ledger episodes.
    pub episodes: usize,
    /// Sent or refused outbox messages, with their bodies.
    pub messages: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.runs + self.episodes + self.messages
    }
}

/// Mail waiting in the outbox ([`Store::outbox_backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Pending, never tried yet.
    pub queued: usize,
    /// Pending after at least one failed attempt (waiting for its back-off).
    pub retrying: usize,
    /// When the oldest pending message was queued.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Refused for good (`failed`), until the prune removes them.
    pub failed: usize,
}

impl Store {
    // ---- key/value state ----------------------------------------------------------

    pub fn state_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM daemon_state WHERE key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
            .context(|| format!("reading {key:?} from daemon_state"))
    }

    /// Whether the database holds anything of a workspace: a workspace snapshot, a
    /// link, a journal row or a deprovisioning episode. One whose runs all failed
    /// before reading the workspace (a mistyped `workspace.url`) holds none.
    pub fn holds_workspace_state(&self) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM workspace_snapshots)
                     OR EXISTS (SELECT 1 FROM links)
                     OR EXISTS (SELECT 1 FROM actions)
                     OR EXISTS (SELECT 1 FROM deprovisions)",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .context(|| "looking for a workspace's snapshots, links, journal and ledger".to_owned())
    }

    pub fn set_state_value(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let result = match value {
            Some(value) => self
                .conn
                .prepare_cached(
                    "INSERT INTO daemon_state (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .and_then(|mut stmt| stmt.execute(params![key, value])),
            None => self
                .conn
                .prepare_cached("DELETE FROM daemon_state WHERE key = ?1")
                .and_then(|mut stmt| stmt.execute([key])),
        };
        result
            .map(|_| ())
            .context(|| format!("writing {key:?} to daemon_state"))
    }

    // ---- daemon jobs waiting for the writer lock -------------------------------------

    /// Records that the daemon's job `job` waits for the writer lock since `since`
    /// (`None`: it waits no more), for `seatwarden status`, another process.
    pub fn set_lock_wait(
        &mut self,
        job: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let value = since.map(ts);
        self.set_state_value(&format!("{LOCK_WAIT}{job}"), value.as_deref())
    }

    /// The daemon's jobs waiting for the writer lock, each with since when, as the
    /// daemon recorded them ([`Store::set_lock_wait`]). A record that does not read
    /// as a time (edited by hand) is left out. Only a running daemon's records are
    /// live: one a killed daemon left stays until the next start clears it
    /// ([`Store::clear_lock_waits`]).
    pub fn lock_waits(&self) -> Result<BTreeMap<String, DateTime<Utc>>, StoreError> {
        let rows: Vec<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT substr(key, length(?1) + 1), value FROM daemon_state
                 WHERE substr(key, 1, length(?1)) = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_map([LOCK_WAIT], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .context(|| {
                "reading the jobs waiting for the writer lock from daemon_state".to_owned()
            })?;
        Ok(rows
            .into_iter()
            .filter_map(|(job, since)| {
                let since = DateTime::parse_from_rfc3339(&since).ok()?.to_utc();
                Some((job, since))
            })
            .collect())
    }

    /// At daemon start: the waits a stopped daemon recorded are over.
    pub fn clear_lock_waits(&mut self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM daemon_state WHERE substr(key, 1, length(?1)) = ?1")
            .and_then(|mut stmt| stmt.execute([LOCK_WAIT]))
            .map(|_| ())
            .context(|| "clearing the jobs waiting for the writer lock in daemon_state".to_owned())
    }

    // ---- jobs ---------------------------------------------------------------------

    pub fn job_started(&mut self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO jobs (name, last_started_at, last_status) VALUES (?1, ?2, 'running')
                 ON CONFLICT (name) DO UPDATE
                 SET last_started_at = excluded.last_started_at, last_status = 'running'",
            )
            .and_then(|mut stmt| stmt.execute(params![name, ts(at)]))
            .map(|_| ())
            .context(|| format!("recording the start of job {name} in jobs"))
    }

    /// At daemon start: jobs a stopped daemon left `running` failed. Returns
    /// their names.
    pub fn close_interrupted_jobs(&mut self, at: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE jobs SET last_status = 'failed', last_finished_at = ?1,
                     last_error = 'interrupted: the daemon stopped before the job finished'
                 WHERE last_status = 'running'
                 RETURNING name",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ts(at)], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .context(|| "closing interrupted jobs in jobs".to_owned())
    }

    /// At daemon start, after a reconcile job the last daemon was cut off in
    /// (started at `job_started`): marks failed (interrupted) the run that job
    /// began, when it is a dry run still `running` (`schedule.dry_run`). A dry run
    /// takes no writer lock, so no later writer closes it
    /// ([`Store::close_interrupted_runs`]), and left so it read as under way in
    /// `status` and was never pruned. The job's run is the first reconcile or dry
    /// run begun at or after its start, within [`JOB_RUN_BEGINS_WITHIN`] (it begins
    /// as soon as the job has the writer locks: a dry run run by hand meanwhile
    /// comes after it, and is left alone; a job cut off before its run began
    /// closes none). Returns the run closed.
    pub fn close_interrupted_dry_run(
        &mut self,
        job_started: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Option<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE runs SET status = 'failed', finished_at = ?2, error = ?3
                 WHERE status = 'running' AND kind = 'dry_run'
                   AND id = (SELECT min(id) FROM runs
                             WHERE kind IN ('reconcile', 'dry_run') AND started_at >= ?1)
                   AND started_at <= ?4
                 RETURNING id",
            )
            .and_then(|mut stmt| {
                let latest = job_started + JOB_RUN_BEGINS_WITHIN;
                stmt.query_row(
                    params![
                        ts(job_started),
                        ts(at),
                        super::INTERRUPTED_RUN_ERROR,
                        ts(latest)
                    ],
                    |row| row.get(0),
                )
                .optional()
            })
            .context(|| "closing the daemon's interrupted dry run in runs".to_owned())
    }

    /// `status` is final (not `Running`); `message`: the error of a failed job,
    /// or why a stopped one stopped.
    pub fn job_finished(
        &mut self,
        name: &str,
        at: DateTime<Utc>,
        status: RunStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE jobs SET last_finished_at = ?2, last_status = ?3, last_error = ?4,
                     last_success_at = CASE WHEN ?3 = 'succeeded' THEN ?2 ELSE last_success_at END
                 WHERE name = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![name, ts(at), status, message]))
            .map(|_| ())
            .context(|| format!("recording the end of job {name} in jobs"))
    }

    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT name, last_started_at, last_finished_at, last_status, last_error,
                        last_success_at
                 FROM jobs ORDER BY name",
            )
            .and_then(|mut stmt| stmt.query_map([], job_record)?.collect())
            .context(|| "reading jobs".to_owned())
    }

    /// `run`'s journal rows by state (`applied`, `failed`, `held`, …), with the
    /// failed rows whose error begins with one of `not_sent` (kept back unsent: a
    /// stop, an open circuit breaker, a workspace found down, a refused token,
    /// whose errors go on to say why) counted as `not_sent` instead: they never
    /// reached the workspace, so they are no failed write.
    pub fn journal_state_counts(
        &self,
        run: RunId,
        not_sent: &[&str],
    ) -> Result<std::collections::BTreeMap<String, usize>, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = self
            .conn
            .prepare_cached(
                "SELECT state, CASE WHEN state = 'failed' THEN last_error END, COUNT(*)
                 FROM actions WHERE run_id = ?1 GROUP BY 1, 2",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .context(|| format!("counting the journal of run {run} by state"))?;
        let mut counts = std::collections::BTreeMap::new();
        for (state, error, n) in rows {
            let state = match error {
                Some(error) if not_sent.iter().any(|p| error.starts_with(p)) => {
                    "not_sent".to_owned()
                }
                _ => state,
            };
            *counts.entry(state).or_default() += usize::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }

    /// Held actions of the sweep passes after run `after` (the latest reconcile,
    /// whose own report counts its held actions) that still wait for `approve`: held
    /// and undecided (or approved and not yet sent), not refused by an approval's
    /// re-check ([`crate::approval::refused_by_approval`]), one per action kind and subject,
    /// judged by the newest sweep row for it (a held deprovision is held again at
    /// every re-check, each time in a new run), and not one of those `after` itself
    /// holds awaiting a decision (counted there; what its incomplete directory read
    /// held is not, as no approval releases it).
    pub fn sweep_actions_awaiting_approval(&self, after: RunId) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(
                "WITH awaiting AS (
                     SELECT a.run_id, a.kind, a.subject FROM actions AS a
                     LEFT JOIN held_decisions AS d ON d.run_id = a.run_id AND d.seq = a.seq
                     WHERE ((a.state = 'held' AND (d.decision IS NULL OR d.decision = 'approved'))
                            OR (a.state = 'planned' AND d.decision = 'approved'))
                       -- No approval releases it: `approve` refuses it, and the
                       -- reconcile's report does not count it.
                       AND (a.payload ->> '$.held.rule') IS NOT 'incomplete_directory'
                       -- Refused by an approval's re-check: approving again
                       -- re-checks the same (`approval::refused_by_approval`).
                       AND NOT (a.state = 'held' AND d.decision IS NULL
                                AND coalesce(instr(a.last_error, ?2), 0) = 1)
                 ),
                 newest AS (
                     SELECT a.kind, a.subject, max(a.run_id) AS run_id FROM actions AS a
                     JOIN runs AS r ON r.id = a.run_id
                     WHERE r.kind = 'sweep' AND a.run_id > ?1
                     GROUP BY a.kind, a.subject
                 )
                 SELECT count(*) FROM newest AS n
                 WHERE EXISTS (SELECT 1 FROM awaiting AS w
                         WHERE w.run_id = n.run_id AND w.kind = n.kind AND w.subject = n.subject)
                   AND NOT EXISTS (SELECT 1 FROM awaiting AS w
                         WHERE w.run_id = ?1 AND w.kind = n.kind AND w.subject = n.subject)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![after, crate::model::REFUSED_BY_APPROVAL], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
            .context(|| "counting the sweeps' actions awaiting approval".to_owned())
    }

    /// The outbox's pending messages: how many, and since when the oldest waits
    /// (a relay that refuses or never answers shows as a growing age); and the
    /// messages refused for good the prune has not removed yet.
    pub fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT coalesce(sum(state = 'pending' AND attempts = 0), 0),
                        coalesce(sum(state = 'pending' AND attempts > 0), 0),
                        min(CASE WHEN state = 'pending' THEN created_at END),
                        coalesce(sum(state = 'failed'), 0)
                 FROM outbox WHERE state IN ('pending', 'failed')",
            )
            .and_then(|mut stmt| {
                stmt.query_row([], |row| {
                    Ok(OutboxBacklog {
                        queued: usize::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        retrying: usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        oldest_queued_at: opt_ts(row, 2)?,
                        failed: usize::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                    })
                })
            })
            .context(|| "counting the pending messages in outbox".to_owned())
    }

    // ---- deprovisioning ledger ----------------------------------------------------

    /// Open episodes (neither verified nor cancelled), oldest detection first.
    pub fn open_deprovisions(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {LEDGER_COLUMNS} FROM deprovisions
                 WHERE verified_at IS NULL AND closed_at IS NULL
                 ORDER BY detected_at, id"
            ))
            .and_then(|mut stmt| stmt.query_map([], ledger_entry)?.collect())
            .context(|| "reading open deprovisions".to_owned())
    }

    /// Episodes that stand for someone's current state: open ones, and verified
    /// ones of people not seen with access since.
    pub fn current_deprovisions(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {LEDGER_COLUMNS} FROM deprovisions
                 WHERE closed_at IS NULL AND returned_at IS NULL
                 ORDER BY detected_at, id"
            ))
            .and_then(|mut stmt| stmt.query_map([], ledger_entry)?.collect())
            .context(|| "reading current deprovisions".to_owned())
    }

    /// A person's episodes, newest first.
    pub fn deprovision_history(
        &self,
        identity_id: &str,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {LEDGER_COLUMNS} FROM deprovisions WHERE identity_id = ?1
                 ORDER BY id DESC LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![identity_id, limit as i64], ledger_entry)?
                    .collect()
            })
            .context(|| format!("reading the deprovision history of {identity_id}"))
    }

    /// Episodes verified at or after `since`, oldest first.
    pub fn verified_deprovisions_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {LEDGER_COLUMNS} FROM deprovisions
                 WHERE verified_at >= ?1 ORDER BY verified_at, id"
            ))
            .and_then(|mut stmt| stmt.query_map([ts(since)], ledger_entry)?.collect())
            .context(|| "reading verified deprovisions".to_owned())
    }

    /// The people whose episode ended because they had access again (cancelled
    /// before enforcement, or back after a verified one) at or after `since`.
    pub fn people_back_since(&self, since: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT DISTINCT identity_id FROM deprovisions
                 WHERE closed_at >= ?1 OR returned_at >= ?1",
            )
            .and_then(|mut stmt| stmt.query_map([ts(since)], |row| row.get(0))?.collect())
            .context(|| "reading the people back since a run began".to_owned())
    }

    /// Applies one observation in one transaction: opens episodes, cancels open
    /// ones, and marks verified ones whose person has access again.
    pub fn update_ledger(
        &mut self,
        changes: &LedgerChanges,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let LedgerChanges {
            open,
            cancel,
            returned,
            look_alike_ended,
        } = changes;
        let context = || "updating the deprovision ledger".to_owned();
        let tx = self.conn.transaction().context(context)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO deprovisions
                         (identity_id, account_id, user_name, reason, detected_at, due_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (identity_id)
                         WHERE verified_at IS NULL AND closed_at IS NULL DO NOTHING",
                )
                .context(context)?;
            for e in open {
                insert
                    .execute(params![
                        e.identity_id,
                        e.account_id,
                        e.user_name,
                        e.reason.as_str(),
                        ts(e.detected_at),
                        ts(e.due_at)
                    ])
                    .context(context)?;
            }
            let mut close = tx
                .prepare_cached(
                    "UPDATE deprovisions SET closed_at = ?2
                     WHERE id = ?1 AND verified_at IS NULL AND closed_at IS NULL",
                )
                .context(context)?;
            for id in cancel {
                close.execute(params![id, ts(at)]).context(context)?;
            }
            let mut ended_because = tx
                .prepare_cached(
                    "UPDATE deprovisions SET held = ?2 WHERE id = ?1 AND closed_at IS NOT NULL",
                )
                .context(context)?;
            for id in look_alike_ended {
                ended_because
                    .execute(params![id, crate::sla::LOOK_ALIKE_ENDED])
                    .context(context)?;
            }
            let mut back = tx
                .prepare_cached(
                    "UPDATE deprovisions SET returned_at = ?2
                     WHERE id = ?1 AND closed_at IS NULL AND returned_at IS NULL",
                )
                .context(context)?;
            for id in returned {
                back.execute(params![id, ts(at)]).context(context)?;
            }
        }
        tx.commit().context(context)
    }

    /// The account was written (deactivated or deleted) at `at`.
    pub fn deprovision_enforced(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET enforced_at = COALESCE(enforced_at, ?2), held = NULL,
                 last_error = NULL
             WHERE id = ?1",
            params![id, ts(at)],
            id,
        )
    }

    /// A verified episode open again: `account_id`, another of the person's
    /// accounts, still gives them access. Due as before (the loss is the same),
    /// and escalated afresh once overdue; not enforced, so a return cancels it.
    pub fn deprovision_reopened(&mut self, id: i64, account_id: &str) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET verified_at = NULL, enforced_at = NULL, account_id = ?2,
                 escalated_at = NULL, next_attempt_at = NULL
             WHERE id = ?1 AND closed_at IS NULL AND returned_at IS NULL",
            params![id, account_id],
            id,
        )
    }

    /// A re-read showed the account inactive or gone at `at`. An account found
    /// already inactive counts as enforced at the same moment.
    pub fn deprovision_verified(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET enforced_at = COALESCE(enforced_at, ?2), verified_at = ?2,
                 held = NULL, last_error = NULL, next_attempt_at = NULL
             WHERE id = ?1 AND closed_at IS NULL",
            params![id, ts(at)],
            id,
        )
    }

    /// Closes an episode whose account was found inactive or gone when the
    /// episode was opened: verified, but never enforced (`enforced_at` stays
    /// empty), so it is kept out of the deprovisions done and their latencies
    /// ([`LedgerEntry::found_without_access`]).
    pub fn deprovision_found_done(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET verified_at = ?2,
                 held = NULL, last_error = NULL, next_attempt_at = NULL
             WHERE id = ?1 AND closed_at IS NULL AND enforced_at IS NULL",
            params![id, ts(at)],
            id,
        )
    }

    pub fn deprovision_failed(
        &mut self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET attempts = attempts + 1, last_error = ?2,
                 next_attempt_at = ?3
             WHERE id = ?1",
            params![id, error, ts(next_attempt_at)],
            id,
        )
    }

    /// A deactivation left unsent (the process was stopping): not an attempt, so
    /// `attempts`, which sets the back-off and tells of a failing workspace, stays.
    pub fn deprovision_not_sent(
        &mut self,
        id: i64,
        why: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![id, why, ts(next_attempt_at)],
            id,
        )
    }

    /// The account's userName once it is read (a deleted identity's episode starts
    /// with only its id).
    pub fn deprovision_user_name(&mut self, id: i64, user_name: &str) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET user_name = ?2 WHERE id = ?1",
            params![id, user_name],
            id,
        )
    }

    /// The account an open episode deprovisions, after `seatwarden link` moved a
    /// link: the one now linked, or none (the episode waits for a reconcile).
    pub fn deprovision_account(
        &mut self,
        id: i64,
        account_id: Option<&str>,
        user_name: &str,
    ) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET account_id = ?2, user_name = ?3 WHERE id = ?1",
            params![id, account_id, user_name],
            id,
        )
    }

    /// Held by the guard; looked at again from `recheck_at` (a hold waits for a
    /// human or a full reconcile, so re-checking it on every sweep would only add
    /// a journaled run each time).
    pub fn deprovision_held(
        &mut self,
        id: i64,
        reason: &str,
        recheck_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET held = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![id, reason, ts(recheck_at)],
            id,
        )
    }

    /// Put off by an exception (`safety.exceptions`) that ends at `until`: held
    /// with `reason`, looked at again at `recheck_at`, and due at `due_at` (the
    /// SLA after the end: sooner than it was when the exception was shortened);
    /// escalated afresh once overdue after it, as a reopened episode is.
    pub fn deprovision_excepted(
        &mut self,
        id: i64,
        reason: &str,
        recheck_at: DateTime<Utc>,
        until: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET held = ?2, next_attempt_at = ?3, excepted_until = ?4, \
             due_at = ?5, escalated_at = NULL WHERE id = ?1",
            params![id, reason, ts(recheck_at), ts(until), ts(due_at)],
            id,
        )
    }

    /// The exception that put the deprovision off ended at `at`, before the end
    /// the episode has (it was taken out of the configuration, or moved to an
    /// end already past): its SLA clock runs from `at`, and it is due at `due_at`
    /// (and escalated afresh once overdue).
    pub fn deprovision_exception_ended(
        &mut self,
        id: i64,
        at: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET excepted_until = ?2, due_at = ?3, escalated_at = NULL \
             WHERE id = ?1",
            params![id, ts(at), ts(due_at)],
            id,
        )
    }

    /// No longer held, its next attempt left as it is: a pass found the hold
    /// over and tried (or kept back) the deprovision.
    pub fn deprovision_hold_over(&mut self, id: i64) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET held = NULL WHERE id = ?1",
            params![id],
            id,
        )
    }

    /// No longer held, and due at once: what the hold waited for was done.
    pub fn deprovision_released(&mut self, id: i64) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET held = NULL, next_attempt_at = NULL WHERE id = ?1",
            params![id],
            id,
        )
    }

    /// An episode's loss was seen earlier than it was opened (by a run cut off
    /// before it recorded it), or was stamped by a clock since stepped back
    /// ([`crate::sla::detected_ahead`]): it counts from `detected_at`, due at
    /// `due_at`.
    pub fn deprovision_detected(
        &mut self,
        id: i64,
        detected_at: DateTime<Utc>,
        due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET detected_at = ?2, due_at = ?3 WHERE id = ?1",
            params![id, ts(detected_at), ts(due_at)],
            id,
        )
    }

    pub fn deprovision_escalated(&mut self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.ledger_update(
            "UPDATE deprovisions SET escalated_at = ?2 WHERE id = ?1",
            params![id, ts(at)],
            id,
        )
    }

    fn ledger_update(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
        id: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params))
            .map(|_| ())
            .context(|| format!("updating deprovision {id}"))
    }

    /// Retention: deletes runs started before `before` (with their snapshots,
    /// journal and reports, by cascade), ledger episodes that ended before it —
    /// cancelled ones, and verified ones of people who came back — and outbox
    /// messages sent or refused for good before it. A verified episode of someone
    /// still gone is kept: it is what stops the sweep from opening a new one. So
    /// is one that ended since a reconcile that is still asked again for its
    /// deprovisions began ([`Store::unsucceeded_reconciles_with_deprovisions`]).
    ///
    /// However old, a run is kept while it has actions in flight (a restart resumes
    /// them), while its snapshots are stored ([`Store::prune_snapshots`] keeps the
    /// newest: the workspace sanity check, `explain`, `export` and `link` read
    /// them), when it has the newest report (the digest's state), and when it is the
    /// newest reconcile or sweep whose held actions still await `approve`: after a
    /// long outage these are all old, and what the safety checks compare against.
    pub fn prune_before(&mut self, before: DateTime<Utc>) -> Result<Pruned, StoreError> {
        let context = || "pruning old runs".to_owned();
        let tx = self.write_tx(context)?;
        let runs = tx
            .prepare_cached(
                "DELETE FROM runs WHERE started_at < ?1 AND status != 'running'
                 AND NOT EXISTS (SELECT 1 FROM actions
                     WHERE actions.run_id = runs.id AND actions.state = 'in_flight')
                 AND workspace_saved = 0 AND directory_complete IS NULL
                 AND id != coalesce((SELECT max(run_id) FROM reports), 0)
                 AND id != coalesce((SELECT max(a.run_id) FROM actions AS a
                     JOIN runs AS r ON r.id = a.run_id
                     LEFT JOIN held_decisions AS d ON d.run_id = a.run_id AND d.seq = a.seq
                     WHERE r.kind = 'reconcile' AND (
                         (a.state = 'held' AND (d.decision IS NULL OR d.decision = 'approved'))
                         OR (a.state = 'planned' AND d.decision = 'approved'))), 0)
                 AND id != coalesce((SELECT max(a.run_id) FROM actions AS a
                     JOIN runs AS r ON r.id = a.run_id
                     LEFT JOIN held_decisions AS d ON d.run_id = a.run_id AND d.seq = a.seq
                     WHERE r.kind = 'sweep' AND (
                         (a.state = 'held' AND (d.decision IS NULL OR d.decision = 'approved'))
                         OR (a.state = 'planned' AND d.decision = 'approved'))), 0)",
            )
            .and_then(|mut stmt| stmt.execute([ts(before)]))
            .context(context)?;
        // Not those that ended since a reconcile still asked again for its
        // deprovisions began (one failed, none succeeded since): without them
        // it would record the people back since as gone again, verified, and
        // the sweep opens no episode for someone verified gone.
        let episodes = tx
            .prepare_cached(&format!(
                "DELETE FROM deprovisions
                 WHERE (closed_at < ?1 OR returned_at < ?1)
                   AND coalesce(closed_at, returned_at) < coalesce(
                       (SELECT min(r.started_at) FROM runs AS r WHERE {ASKED_AGAIN}), ?1)"
            ))
            .and_then(|mut stmt| stmt.execute([ts(before)]))
            .context(|| "pruning old deprovisions".to_owned())?;
        // Delivered and refused messages, with their bodies (a message waiting for
        // a send, `pending`, claimed or not, always stays). A refused one has no
        // time of its refusal: its next attempt is its last claim's deadline.
        let messages = tx
            .prepare_cached(
                "DELETE FROM outbox
                 WHERE (state = 'sent' AND sent_at < ?1)
                    OR (state = 'failed' AND created_at < ?1 AND next_attempt_at < ?1)",
            )
            .and_then(|mut stmt| stmt.execute([ts(before)]))
            .context(|| "pruning old messages from outbox".to_owned())?;
        tx.commit().context(context)?;
        Ok(Pruned {
            runs,
            episodes,
            messages,
        })
    }

    /// Snapshots are the bulk of the database and only the latest ones are ever read
    /// again; keeps those of the newest `keep` runs that saved any, of the newest
    /// run that saved a workspace snapshot, of the newest that saved both and of
    /// the newest that saved both from a directory the source check did not
    /// refuse, and deletes the rest (runs, journals and reports stay for the retention period). Returns how
    /// many snapshots (directory and workspace, each one) it deleted.
    pub fn prune_snapshots(&mut self, keep: usize) -> Result<usize, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let context = || "pruning old snapshots".to_owned();
        // Reads, then writes: a deferred transaction would fail at once with
        // SQLITE_BUSY when another writer got in between, not wait for it.
        let tx = self.write_tx(context)?;
        let cutoff: Option<i64> = tx
            .query_row(
                "SELECT id FROM runs WHERE workspace_saved = 1 OR directory_complete IS NOT NULL
                 ORDER BY id DESC LIMIT 1 OFFSET ?1",
                [keep.saturating_sub(1)],
                |row| row.get(0),
            )
            .optional()
            .context(context)?;
        // Runs whose workspace read failed save only a directory snapshot: however
        // many follow, the newest workspace snapshot (the workspace sanity check's
        // baseline) and the newest run with both (`explain`, `export`, `link`) stay.
        let newest = |sql: &str| -> Result<i64, StoreError> {
            tx.query_row(sql, [], |row| row.get::<_, Option<i64>>(0))
                .context(context)
                .map(|id| id.unwrap_or(0))
        };
        let workspace = newest("SELECT max(id) FROM runs WHERE workspace_saved = 1")?;
        let both = newest(
            "SELECT max(id) FROM runs WHERE workspace_saved = 1 AND directory_complete IS NOT NULL",
        )?;
        // A directory outage refuses run after run: the last run whose
        // directory was sound is what `explain`, `export`, `link` and the
        // sweep read ([`Store::latest_snapshot_run`]) until it ends.
        let sound = newest(
            "SELECT max(id) FROM runs WHERE workspace_saved = 1 AND directory_complete IS NOT NULL
               AND directory_refused = 0",
        )?;
        let mut deleted = 0;
        if let Some(cutoff) = cutoff {
            for table in ["directory_snapshots", "workspace_snapshots"] {
                deleted += tx
                    .execute(
                        &format!(
                            "DELETE FROM {table}
                             WHERE run_id < ?1 AND run_id NOT IN (?2, ?3, ?4)"
                        ),
                        [cutoff, workspace, both, sound],
                    )
                    .context(context)?;
            }
            // A pruned snapshot must read as "not saved", never as an empty one.
            tx.execute(
                "UPDATE runs SET directory_complete = NULL, workspace_saved = 0
                 WHERE id < ?1 AND id NOT IN (?2, ?3, ?4)",
                [cutoff, workspace, both, sound],
            )
            .context(context)?;
        }
        tx.commit().context(context)?;
        Ok(deleted)
    }

    /// Returns unused pages to the file system after a large prune. In WAL mode
    /// VACUUM writes the whole database into the `-wal` file, which keeps its size
    /// until a checkpoint truncates it: so one follows.
    pub fn vacuum(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .context(|| "vacuuming the state database".to_owned())
    }

    /// Writes a copy of the whole database, as one read sees it, to `path`, a new
    /// file readable by its owner only (what a preview that must leave this
    /// database as it was plans in: `plan --workspace-moved`). A file already at
    /// `path` is refused, never overwritten. Handed back is the new file, locked
    /// (`flock`, exclusive) before the copy is written into it, for as long as it
    /// is held open: a copy whose lock can be taken is no live process's
    /// (`run::remove_stale_preview_copies`). SQLite's own locks are `fcntl` ones,
    /// which an `flock` neither blocks nor releases.
    pub fn copy_to(&self, path: &Path) -> Result<std::fs::File, StoreError> {
        // SQLite takes the name as text: one that is not UTF-8 is refused, never
        // converted into another name (a lossy one is another file, elsewhere).
        let Some(target) = path.to_str() else {
            return Err(StoreError::NotUtf8 {
                path: path.to_owned(),
            });
        };
        let create_error = |source| StoreError::Create {
            path: path.to_owned(),
            source,
        };
        // VACUUM INTO takes an empty file as a new one, and keeps its mode.
        let file = super::private_file()
            .create_new(true)
            .open(path)
            .map_err(create_error)?;
        if let Err(e) = file.try_lock() {
            let _ = std::fs::remove_file(path);
            return Err(create_error(std::io::Error::from(e)));
        }
        #[cfg(unix)]
        if let Some((uid, gid)) = others_folder_for_root(&file, path, self.path()) {
            let _ = std::fs::remove_file(path);
            return Err(StoreError::RootCopyInOthersFolder {
                path: path.to_owned(),
                uid,
                gid,
            });
        }
        let copied = self
            .conn
            .execute("VACUUM INTO ?1", [target])
            .map(|_| ())
            .context(|| format!("copying the state database to {}", path.display()));
        if copied.is_err() {
            // Not left half written beside the database.
            let _ = std::fs::remove_file(path);
        }
        copied.map(|()| file)
    }
}

/// The owner (uid, gid) of the folder `copy` is made in, or of the database
/// at `database`, when `made` (the copy's file, just made) is root's and that
/// folder or database is another user's: the service's state folder, in a
/// command run with `sudo`. Root then must not write the copy there: SQLite
/// writes it by name, and the folder's owner could swap a symbolic link in
/// for the empty file first (root would write a copy of a database that user
/// writes to where the link leads, `/root/.ssh/authorized_keys` say); and a
/// copy a killed command left would stay root's, which the service cannot
/// open to tell it is stale. Who runs as root is told by the file it made, as
/// the lock files tell it (`writer::open_lock_file`), without a libc call.
#[cfg(unix)]
fn others_folder_for_root(
    made: &std::fs::File,
    copy: &Path,
    database: Option<&Path>,
) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if made.metadata().ok()?.uid() != 0 {
        return None;
    }
    let folder = match copy.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    [Some(folder), database]
        .into_iter()
        .flatten()
        .filter_map(|path| std::fs::metadata(path).ok())
        .find(|owned| owned.uid() != 0)
        .map(|owned| (owned.uid(), owned.gid()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::model::{Action, ActionKind, DriftKind, HoldReason, Plan};
    use crate::store::{Decision, RunKind};

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + minute * 60, 0).unwrap()
    }

    /// Of the dry runs left `running`, the daemon's next start closes only the one
    /// its cut-off reconcile job began: the first reconcile or dry run from the
    /// job's start, within a minute. A dry run run by hand after it, one begun
    /// before the job, and an enforcing reconcile's run are left alone.
    #[test]
    fn only_the_cut_off_jobs_own_dry_run_is_closed() {
        let mut store = Store::open_in_memory().unwrap();
        let before = store.begin_run(RunKind::DryRun, at(0)).unwrap();
        let daemons = store.begin_run(RunKind::DryRun, at(10)).unwrap();
        let by_hand = store.begin_run(RunKind::DryRun, at(10)).unwrap();
        let status = |store: &Store, run| store.run(run).unwrap().unwrap();
        // A job that began nothing within a minute of its start closes nothing.
        assert_eq!(
            store.close_interrupted_dry_run(at(8), at(20)).unwrap(),
            None
        );
        assert_eq!(
            store.close_interrupted_dry_run(at(10), at(20)).unwrap(),
            Some(daemons)
        );
        assert!(status(&store, daemons).closed_as_interrupted());
        for run in [before, by_hand] {
            assert_eq!(status(&store, run).status, RunStatus::Running, "{run}");
        }
        // Once closed, not again; nor is the hand's taken for the job's.
        assert_eq!(
            store.close_interrupted_dry_run(at(10), at(21)).unwrap(),
            None
        );
        // A job whose run was an enforcing reconcile leaves a dry run by hand be.
        let reconcile = store.begin_run(RunKind::Reconcile, at(30)).unwrap();
        let by_hand = store.begin_run(RunKind::DryRun, at(30)).unwrap();
        assert_eq!(
            store.close_interrupted_dry_run(at(30), at(40)).unwrap(),
            None
        );
        for run in [reconcile, by_hand] {
            assert_eq!(status(&store, run).status, RunStatus::Running, "{run}");
        }
    }

    /// A run of `kind` deactivating each of `people`'s accounts, every one held.
    fn held_run(store: &mut Store, kind: RunKind, minute: i64, people: &[&str]) -> RunId {
        held_run_by(store, kind, minute, people, &HoldReason::LastOwner)
    }

    /// [`held_run`], each held for `hold`.
    fn held_run_by(
        store: &mut Store,
        kind: RunKind,
        minute: i64,
        people: &[&str],
        hold: &HoldReason,
    ) -> RunId {
        let run = store.begin_run(kind, at(minute)).unwrap();
        let plan = Plan {
            actions: people
                .iter()
                .zip(0u32..)
                .map(|(person, seq)| Action {
                    seq,
                    kind: ActionKind::Deactivate {
                        account_id: format!("acc-{person}"),
                    },
                    reason: DriftKind::StaleAccess,
                    subject: (*person).to_owned(),
                    identity_id: Some(format!("00u-{person}")),
                    detail: "identity is deprovisioned in the directory".into(),
                    held: Some(hold.clone()),
                })
                .collect(),
            ..Plan::default()
        };
        store.save_plan(run, &plan, at(minute)).unwrap();
        store
            .finish_run(run, at(minute), RunStatus::Succeeded, None)
            .unwrap();
        run
    }

    /// The sweeps' holds wait for `approve` as the reconcile's do: each person once
    /// however often the sweep re-checked them, not once more when the latest
    /// reconcile holds them too, and not after a decision or a newer reconcile.
    #[test]
    fn the_sweeps_held_actions_count_once_each_until_decided() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.sweep_actions_awaiting_approval(0).unwrap(), 0);
        held_run(&mut store, RunKind::Sweep, 0, &["ann", "bob"]);
        // Re-checked 15 minutes later: held again, in a run of its own.
        let recheck = held_run(&mut store, RunKind::Sweep, 15, &["ann", "bob", "cy"]);
        assert_eq!(store.sweep_actions_awaiting_approval(0).unwrap(), 3);
        store
            .record_decisions(recheck, &[(0, Decision::Rejected, None)], "it", at(20))
            .unwrap();
        assert_eq!(store.sweep_actions_awaiting_approval(0).unwrap(), 2);
        // A reconcile holding bob too: its report counts him.
        let reconcile = held_run(&mut store, RunKind::Reconcile, 30, &["bob"]);
        let after = held_run(&mut store, RunKind::Sweep, 45, &["bob", "dee"]);
        assert_eq!(
            store.sweep_actions_awaiting_approval(reconcile).unwrap(),
            1,
            "only dee: the sweeps before the reconcile are its to count, bob is in its report"
        );
        store
            .record_decisions(after, &[(1, Decision::Approved, None)], "it", at(50))
            .unwrap();
        assert_eq!(
            store.sweep_actions_awaiting_approval(reconcile).unwrap(),
            1,
            "approved and not sent yet still waits"
        );
        // A reconcile whose directory read was incomplete holding eve: its report
        // does not count her (no approval releases that hold), so the sweep's
        // hold of her, which an approval does release, counts here.
        let incomplete = held_run_by(
            &mut store,
            RunKind::Reconcile,
            60,
            &["eve"],
            &HoldReason::IncompleteDirectory,
        );
        held_run(&mut store, RunKind::Sweep, 75, &["eve"]);
        assert_eq!(
            store.sweep_actions_awaiting_approval(incomplete).unwrap(),
            1
        );
    }

    /// The run an overdue alert, `status` and the digest tell to approve for a held
    /// deprovision is never one that held it for its incomplete directory read:
    /// `approve` refuses that hold. The sweep's hold of the same person is the one.
    #[test]
    fn the_run_to_approve_is_not_one_holding_for_an_incomplete_read() {
        let mut store = Store::open_in_memory().unwrap();
        let sweep = held_run(&mut store, RunKind::Sweep, 0, &["ann"]);
        held_run_by(
            &mut store,
            RunKind::Reconcile,
            30,
            &["ann", "bob"],
            &HoldReason::IncompleteDirectory,
        );
        let waiting = store.held_for_approval().unwrap();
        assert_eq!(waiting.get("00u-ann"), Some(&sweep));
        assert_eq!(waiting.get("00u-bob"), None);
    }

    /// A job's wait is recorded and cleared by itself, the others' stay, and a
    /// start clears them all; the key/value state beside them is untouched.
    #[test]
    fn lock_waits_are_recorded_per_job_and_cleared() {
        let mut store = Store::open_in_memory().unwrap();
        assert!(store.lock_waits().unwrap().is_empty());
        store
            .set_state_value("fired_slot.sweep", Some("x"))
            .unwrap();
        store.set_lock_wait("sweep", Some(at(1))).unwrap();
        store.set_lock_wait("retry", Some(at(2))).unwrap();
        store
            .set_state_value("lock_wait.prune", Some("not a time"))
            .unwrap();
        let waits = store.lock_waits().unwrap();
        assert_eq!(
            waits.into_iter().collect::<Vec<_>>(),
            [("retry".to_owned(), at(2)), ("sweep".to_owned(), at(1))]
        );
        store.set_lock_wait("sweep", None).unwrap();
        assert_eq!(store.lock_waits().unwrap().len(), 1);
        store.clear_lock_waits().unwrap();
        assert!(store.lock_waits().unwrap().is_empty());
        assert_eq!(
            store.state_value("fired_slot.sweep").unwrap().as_deref(),
            Some("x")
        );
    }

    /// A stop's, an open breaker's and a workspace found down's unsent rows are not
    /// failed writes, whatever the error goes on to say after its beginning.
    #[test]
    fn unsent_rows_count_apart_from_failed_ones() {
        let mut store = Store::open_in_memory().unwrap();
        let run = store.begin_run(RunKind::Reconcile, at(0)).unwrap();
        let plan = Plan {
            actions: (0u32..4)
                .map(|seq| Action {
                    seq,
                    kind: ActionKind::Deactivate {
                        account_id: format!("acc-{seq}"),
                    },
                    reason: DriftKind::StaleAccess,
                    subject: format!("person{seq}"),
                    identity_id: None,
                    detail: String::new(),
                    held: None,
                })
                .collect(),
            ..Plan::default()
        };
        store.save_plan(run, &plan, at(0)).unwrap();
        for (seq, error) in [
            (0, "HTTP 500"),
            (1, "stopping"),
            (2, "breaker"),
            (
                3,
                "down (POST /Users: timed out); the next run plans it again",
            ),
        ] {
            store.mark_in_flight(run, seq, at(1)).unwrap();
            store.mark_failed(run, seq, at(1), error).unwrap();
        }
        let counts = store
            .journal_state_counts(run, &["stopping", "breaker", "down"])
            .unwrap();
        let expected: std::collections::BTreeMap<String, usize> = [("failed", 1), ("not_sent", 3)]
            .into_iter()
            .map(|(state, n)| (state.to_owned(), n))
            .collect();
        assert_eq!(counts, expected);
    }

    /// The backlog is the pending messages: new ones and those retried, not the
    /// sent or refused ones, and its age is the oldest pending one's; the
    /// refused ones are counted apart.
    #[test]
    fn the_outbox_backlog_counts_pending_messages_and_their_age() {
        use crate::store::{NewMessage, OutboxKind};
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.outbox_backlog().unwrap(), OutboxBacklog::default());
        let message = NewMessage {
            kind: OutboxKind::Alert,
            subject: "alert".into(),
            from: "seatwarden@example.com".into(),
            to: vec!["it@example.com".into()],
            text: "text".into(),
            html: "<p>html</p>".into(),
            in_reply_to: None,
        };
        let ids: Vec<_> = (0..4)
            .map(|minute| store.enqueue_message(&message, at(minute)).unwrap())
            .collect();
        store.mark_message_sent(ids[0], at(5)).unwrap();
        store
            .mark_message_attempt_failed(ids[1], "550 refused", None)
            .unwrap();
        store
            .mark_message_attempt_failed(ids[2], "timed out", Some(at(10)))
            .unwrap();
        assert_eq!(
            store.outbox_backlog().unwrap(),
            OutboxBacklog {
                queued: 1,
                retrying: 1,
                oldest_queued_at: Some(at(2)),
                failed: 1,
            }
        );
    }
}
