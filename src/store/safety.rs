//! The safety net's state (issue 6): accepted directory sizes (source sanity), the
//! rolling 24 h counts of destructive writes, the audit trail of human decisions,
//! decisions on held actions (a newer run's `reject` naming itself in older runs' rows,
//! `M_DECIDED_IN`), the persisted circuit breaker, and first-seen times
//! of pending drift (settle window). See the `M_SAFETY` migration. Beside them, the
//! plan inputs a run keeps for the next: retention clocks of deactivated accounts
//! and the disputed matches remembered (`M_DISPUTED_CANDIDATES`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::circuit::{CircuitRecord, FailedWrite};
use crate::model::{Action, ActionKind, DisputedCandidate, RecentCounts};

use super::codec::{self, Ts, json_col, ts};
use super::error::Context;
use super::{ActionState, RunId, Store, StoreError};

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The person who ran the command ([`crate::safety::audit_user`]).
    pub user: String,
    /// `approve`, `reject`, `link`, `unlink`, `resume`, `accept_directory`,
    /// `allow_over_threshold`, `workspace_moved`.
    pub command: String,
    pub run: Option<RunId>,
    /// What was done, e.g. "approved 30 held actions (deactivate)".
    pub detail: String,
}

/// An audit row with its id, as `seatwarden audit` lists it. Ids only grow and are
/// never reused (`AUTOINCREMENT`), so a log shipper that remembers the last one it
/// read asks for what came after it and sees every row once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Which audit rows [`Store::audit_trail`] returns; each bound left `None` is no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Rows with a larger id only.
    pub after_id: Option<i64>,
    /// Rows recorded at or after this time only.
    pub since: Option<DateTime<Utc>>,
    /// Rows about this run only.
    pub run: Option<RunId>,
}

/// What a human (or the approval's re-check) decided about a held action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Rejected,
    /// The re-check found the workspace already as the action wanted it.
    Obsolete,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
            Decision::Obsolete => "obsolete",
        }
    }

    fn parse(text: &str) -> Option<Decision> {
        [Decision::Approved, Decision::Rejected, Decision::Obsolete]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

/// Decisions of one kind one person recorded on a run's held actions
/// ([`Store::decision_summary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionSummary {
    pub decision: Decision,
    /// Who (`$SEATWARDEN_OPERATOR`, else `$SUDO_USER`, else the OS user).
    pub user: String,
    pub count: usize,
    /// When the last of them was recorded.
    pub last_at: DateTime<Utc>,
    /// The newer run whose `reject` decided them ([`Store::record_newer_rejection`]);
    /// `None`: decided on this run itself.
    pub decided_in: Option<RunId>,
}

/// A held action of an older run rejected by the `reject` of a newer run that
/// held the same action again ([`Store::record_newer_rejection`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewerRejection {
    pub seq: u32,
    /// The run whose `reject` decided it.
    pub run: RunId,
    pub user: String,
    pub at: DateTime<Utc>,
}

impl Store {
    // ---- source sanity ----------------------------------------------------------

    /// Records that the directory snapshot of `run` (`identities` people) passed the
    /// source sanity check: the next check compares against it.
    pub fn accept_directory(
        &mut self,
        run: RunId,
        identities: usize,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let identities = i64::try_from(identities).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO accepted_directories (run_id, identities, accepted_at)
                 VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut stmt| stmt.execute(params![run, identities, ts(at)]))
            .context(|| format!("recording the accepted directory of run {run}"))?;
        Ok(())
    }

    /// The size of the newest accepted directory snapshot, if any.
    pub fn last_accepted_directory(&self) -> Result<Option<usize>, StoreError> {
        let n: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT identities FROM accepted_directories ORDER BY run_id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
            .context(|| "reading the last accepted directory size".to_owned())?;
        Ok(n.map(|n| usize::try_from(n).unwrap_or(0)))
    }

    /// Records that the source check refused the directory of `run` (empty, or
    /// shrunk past the limit), and `why` in its words: nothing reads its
    /// snapshots as the newest sound ones, and `report --run` says why, whether
    /// or not the run gets as far as storing its report.
    pub fn mark_directory_refused(&mut self, run: RunId, why: &str) -> Result<(), StoreError> {
        let marked = self
            .conn
            .prepare_cached(
                "UPDATE runs SET directory_refused = 1, directory_refused_why = ?2 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![run, why]))
            .context(|| format!("marking the directory of run {run} refused in runs"))?;
        if marked == 0 {
            return Err(StoreError::UnknownRun {
                run,
                context: "marking its directory refused",
            });
        }
        Ok(())
    }

    /// Why the source check refused the directory of `run`, as it said then;
    /// `None` when it did not, or refused it before the reason was stored.
    pub fn directory_refused_why(&self, run: RunId) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT directory_refused_why FROM runs WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .map(Option::flatten)
            .context(|| format!("reading why the directory of run {run} was refused"))
    }

    /// Whether the source check refused the directory of `run`.
    pub fn directory_refused(&self, run: RunId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM runs WHERE id = ?1 AND directory_refused = 1")
            .and_then(|mut stmt| stmt.exists([run]))
            .context(|| format!("reading whether the directory of run {run} was refused"))
    }

    /// The newest run whose directory the source check refused
    /// ([`Store::mark_directory_refused`]), whether or not it got as far as its
    /// report: what `explain` and `export` name when no run has snapshots they
    /// may read ([`Store::latest_snapshot_run`]), from the same column.
    pub fn newest_directory_refused_run(&self) -> Result<Option<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs WHERE directory_refused = 1 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
            .context(|| "finding the newest run whose directory was refused".to_owned())
    }

    /// What the source check measures a directory's shrink against: the largest
    /// directory accepted from `since` to `until` (the 24 h before the run, up to
    /// the clock-step margin after it), else the newest accepted; none before the
    /// newest a person accepted with `--accept-directory` (its audit row), which
    /// starts the measure afresh. The last accepted alone would let reconciles
    /// walk the baseline down: a read losing a little less than the limit at each
    /// run would never be a fault. One stamped after `until` was stamped by a
    /// clock since set back: in the window, it would stay there until the clock
    /// caught up.
    pub fn shrink_baseline(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<usize>, StoreError> {
        let n: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT max(identities) FROM accepted_directories
                 WHERE run_id >= coalesce(
                         (SELECT max(audit.run_id) FROM audit
                          JOIN accepted_directories accepted ON accepted.run_id = audit.run_id
                          WHERE audit.command = 'accept_directory'), 0)
                   AND ((accepted_at >= ?1 AND accepted_at <= ?2)
                        OR run_id = (SELECT max(run_id) FROM accepted_directories))",
            )
            .and_then(|mut stmt| stmt.query_row([ts(since), ts(until)], |row| row.get(0)))
            .context(|| "reading the directory size a shrink is measured against".to_owned())?;
        Ok(n.map(|n| usize::try_from(n).unwrap_or(0)))
    }

    /// Whether the directory snapshot of `run` was accepted as a baseline: complete,
    /// and passed (or was let through) the source sanity check.
    pub fn directory_accepted(&self, run: RunId) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM accepted_directories WHERE run_id = ?1")
            .and_then(|mut stmt| stmt.exists([run]))
            .context(|| format!("reading whether the directory of run {run} was accepted"))
    }

    /// The newest run after `run` that saved a complete directory snapshot the
    /// source check did not refuse, whatever its kind (a `plan` reads the
    /// directory as well as a reconcile does). A refused one is passed over, not
    /// taken for "no newer read": in a directory outage every run's read is
    /// refused, and the sound read before it is still the freshest evidence.
    pub fn newest_complete_directory_after(&self, run: RunId) -> Result<Option<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs WHERE directory_complete = 1 AND directory_refused = 0
                   AND id > ?1
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("finding a complete directory snapshot after run {run}"))
    }

    /// As [`Store::newest_complete_directory_after`], of the runs that
    /// succeeded only: a run still at work (a `plan` takes no writer lock) may
    /// have stored its snapshot before its source check refused it, and one
    /// that failed may never have been checked. What `approve` sets its own
    /// read aside for must be a read the check passed.
    pub fn newest_checked_directory_after(&self, run: RunId) -> Result<Option<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs WHERE directory_complete = 1 AND directory_refused = 0
                   AND status = 'succeeded' AND id > ?1
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("finding a checked complete directory snapshot after run {run}"))
    }

    /// The runs after `after`, up to `upto`, still at work: what `approve`
    /// notes as its read ahead of the writer lock begins. Each began reading
    /// the directory before that read did, and may finish after it: which of
    /// the two saw a person later is not known, so neither read is taken for
    /// the older one.
    pub fn runs_at_work_between(
        &self,
        after: RunId,
        upto: RunId,
    ) -> Result<Vec<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs WHERE status = 'running' AND id > ?1 AND id <= ?2
                 ORDER BY id",
            )
            .and_then(|mut stmt| stmt.query_map([after, upto], |row| row.get(0))?.collect())
            .context(|| format!("reading the runs at work after run {after} from runs"))
    }

    // ---- rolling 24 h counts ------------------------------------------------------

    /// Writes of each threshold class applied or in flight (of any run) whose
    /// journal row changed at or after `since`: what the 24 h limits count.
    /// Membership removals count members.
    pub fn recent_counts(&self, since: DateTime<Utc>) -> Result<RecentCounts, StoreError> {
        let context = || "counting recent writes by threshold class in actions".to_owned();
        let (deprovisions, deletions) = self.deprovisions_and_deletions_since(since)?;
        let mut counts = RecentCounts {
            deprovisions: usize::try_from(deprovisions).unwrap_or(usize::MAX),
            deletions: usize::try_from(deletions).unwrap_or(usize::MAX),
            ..RecentCounts::default()
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT payload FROM actions
                 WHERE state IN ('applied', 'in_flight')
                   AND kind IN ('remove_members', 'set_role', 'update_attributes')
                   -- Of the attribute updates (a mass email change makes many), only
                   -- those that may rename are parsed; the parse decides.
                   AND (kind <> 'update_attributes'
                        OR instr(payload, '\"attribute\":\"user_name\"') > 0)
                   AND updated_at >= ?1",
            )
            .context(context)?;
        let payloads = stmt
            .query_map([ts(since)], |row| row.get::<_, String>(0))
            .context(context)?;
        for payload in payloads {
            let payload = payload.context(context)?;
            // A payload this version cannot read counts as nothing rather than failing
            // every future run; the journal keeps it for inspection.
            let Ok(action) = serde_json::from_str::<Action>(&payload) else {
                continue;
            };
            match &action.kind {
                ActionKind::RemoveMembers { members, .. } => {
                    counts.membership_removals += members.len();
                }
                kind if kind.is_role_downgrade() => counts.role_downgrades += 1,
                kind if kind.renames() => counts.renames += 1,
                _ => {}
            }
        }
        Ok(counts)
    }

    // ---- audit ------------------------------------------------------------------

    pub fn record_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (at, user, command, run_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    ts(entry.at),
                    entry.user,
                    entry.command,
                    entry.run,
                    entry.detail
                ])
            })
            .context(|| format!("recording the {} in audit", entry.command))?;
        Ok(())
    }

    /// The audit trail, oldest first.
    pub fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.conn
            .prepare_cached("SELECT at, user, command, run_id, detail FROM audit ORDER BY id")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    Ok(AuditEntry {
                        at: row.get::<_, Ts>(0)?.0,
                        user: row.get(1)?,
                        command: row.get(2)?,
                        run: row.get(3)?,
                        detail: row.get(4)?,
                    })
                })?
                .collect()
            })
            .context(|| "reading the audit trail".to_owned())
    }

    /// The audit rows `filter` selects, oldest first. Times are compared as stored
    /// (RFC 3339 in UTC with nanoseconds, [`ts`]: fixed width, so text order is
    /// time order).
    pub fn audit_trail(&self, filter: AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, at, user, command, run_id, detail FROM audit
                 WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR at >= ?2)
                   AND (?3 IS NULL OR run_id = ?3)
                 ORDER BY id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![filter.after_id, filter.since.map(ts), filter.run],
                    |row| {
                        Ok(AuditRow {
                            id: row.get(0)?,
                            entry: AuditEntry {
                                at: row.get::<_, Ts>(1)?.0,
                                user: row.get(2)?,
                                command: row.get(3)?,
                                run: row.get(4)?,
                                detail: row.get(5)?,
                            },
                        })
                    },
                )?
                .collect()
            })
            .context(|| "reading the audit trail".to_owned())
    }

    // ---- held actions -------------------------------------------------------------

    /// Moves the `Held` actions `seqs` of `run` back to `Planned` (approval), leaving
    /// the journaled `held` reason as the record of why they waited (a refusal an
    /// earlier approval recorded, [`Store::refuse_held`], is cleared). Returns how
    /// many were released (actions not held are skipped).
    pub fn release_held(
        &mut self,
        run: RunId,
        seqs: &[u32],
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        Self::require_run(&self.conn, run, "releasing its held actions")?;
        let context = || format!("releasing held actions of run {run} in actions");
        let tx = self.write_tx(context)?;
        let mut released = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE actions SET state = 'planned', last_error = NULL, updated_at = ?3
                     WHERE run_id = ?1 AND seq = ?2 AND state = 'held'",
                )
                .context(context)?;
            for seq in seqs {
                released += stmt.execute(params![run, seq, ts(at)]).context(context)?;
            }
        }
        tx.commit().context(context)?;
        Ok(released)
    }

    /// Records why an approval's re-check refused the actions `refused` (seq, why)
    /// of `run`: each is `Held` with `why` as its last error. A held one stays held;
    /// one an earlier approval released but did not send (`Planned`) is held again,
    /// as a first refusal leaves it, rather than left planned for nobody. Rows in
    /// any other state are skipped. Returns how many it recorded.
    pub fn refuse_held(
        &mut self,
        run: RunId,
        refused: &[(u32, String)],
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let context = || format!("holding the actions of run {run} approval refused in actions");
        let tx = self.write_tx(context)?;
        let mut held = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE actions SET state = 'held', last_error = ?3, updated_at = ?4
                     WHERE run_id = ?1 AND seq = ?2 AND state IN ('held', 'planned')",
                )
                .context(context)?;
            for (seq, why) in refused {
                held += stmt
                    .execute(params![run, seq, why, ts(at)])
                    .context(context)?;
            }
        }
        tx.commit().context(context)?;
        Ok(held)
    }

    pub fn record_decisions(
        &mut self,
        run: RunId,
        decisions: &[(u32, Decision, Option<String>)],
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let context = || format!("recording decisions on held actions of run {run}");
        let tx = self.write_tx(context)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO held_decisions (run_id, seq, decision, user, at, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .context(context)?;
            for (seq, decision, detail) in decisions {
                stmt.execute(params![run, seq, decision.as_str(), user, ts(at), detail])
                    .context(context)?;
            }
        }
        tx.commit().context(context)
    }

    /// `seatwarden reject newer` of the same actions `run` holds undecided (`seqs`):
    /// recorded as rejected in `run` too, naming `newer`, so that the newest
    /// decision about an action wins and no older hold of it is offered for an
    /// approval (see `approval::reject_earlier_holds`). Replaces an approval
    /// cut off before it sent them: the rejection is newer.
    pub fn record_newer_rejection(
        &mut self,
        run: RunId,
        seqs: &[u32],
        newer: RunId,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let context = || format!("recording run {newer}'s rejection on held actions of run {run}");
        let tx = self.write_tx(context)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO held_decisions
                         (run_id, seq, decision, user, at, detail, decided_in)
                     VALUES (?1, ?2, 'rejected', ?3, ?4, NULL, ?5)",
                )
                .context(context)?;
            for seq in seqs {
                stmt.execute(params![run, seq, user, ts(at), newer])
                    .context(context)?;
            }
        }
        tx.commit().context(context)
    }

    /// `run`'s held actions a newer run's `reject` decided
    /// ([`Self::record_newer_rejection`]), by `seq`.
    pub fn newer_rejections(&self, run: RunId) -> Result<Vec<NewerRejection>, StoreError> {
        let rows: Vec<(u32, RunId, String, Ts)> = self
            .conn
            .prepare_cached(
                "SELECT seq, decided_in, user, at FROM held_decisions
                 WHERE run_id = ?1 AND decided_in IS NOT NULL AND decision = 'rejected'
                 ORDER BY seq",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect()
            })
            .context(|| format!("reading newer runs' rejections of run {run}'s held actions"))?;
        Ok(rows
            .into_iter()
            .map(|(seq, run, user, at)| NewerRejection {
                seq,
                run,
                user,
                at: at.0,
            })
            .collect())
    }

    /// `run`'s actions with a rejection recorded that this run never sent, each
    /// with its journal state and error: still held, or released by an approval
    /// and then taken back before it sent them (still `planned`, or `failed`
    /// kept back or cut off unsent: `reject` takes no other failed row). What
    /// `status` counts `rejected` rather than `held`, `not_sent` or `cut_off`.
    /// Not a row in flight (whether it reached the workspace is not known yet)
    /// nor one applied (it did).
    pub fn rejected_unsent(
        &self,
        run: RunId,
    ) -> Result<Vec<(ActionState, Option<String>)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT actions.state, actions.last_error FROM actions
                 JOIN held_decisions ON held_decisions.run_id = actions.run_id
                                    AND held_decisions.seq = actions.seq
                 WHERE actions.run_id = ?1
                   AND actions.state IN ('held', 'planned', 'failed')
                   AND held_decisions.decision = 'rejected'",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .context(|| format!("reading the rejected actions of run {run} it never sent"))
    }

    /// Decisions recorded for the held actions of `run`, by `seq`.
    pub fn decisions(&self, run: RunId) -> Result<HashMap<u32, Decision>, StoreError> {
        Ok(self
            .decisions_with_detail(run)?
            .into_iter()
            .map(|(seq, (decision, _))| (seq, decision))
            .collect())
    }

    /// Decisions recorded for the held actions of `run`, by `seq`, each with what
    /// was recorded beside it (why an approved action was obsolete).
    pub fn decisions_with_detail(
        &self,
        run: RunId,
    ) -> Result<HashMap<u32, (Decision, Option<String>)>, StoreError> {
        let rows: Vec<(u32, String, Option<String>)> = self
            .conn
            .prepare_cached("SELECT seq, decision, detail FROM held_decisions WHERE run_id = ?1")
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .context(|| format!("reading decisions on held actions of run {run}"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, d, detail)| Decision::parse(&d).map(|d| (seq, (d, detail))))
            .collect())
    }

    /// Who decided on `run`'s held actions: per decision and person, how many and
    /// when the last of them was recorded, oldest first. What `approve` and
    /// `reject` name when nothing is left to decide on (someone else decided).
    pub fn decision_summary(&self, run: RunId) -> Result<Vec<DecisionSummary>, StoreError> {
        let rows: Vec<(String, String, i64, Ts, Option<RunId>)> = self
            .conn
            .prepare_cached(
                "SELECT decision, user, count(*), max(at), decided_in FROM held_decisions
                 WHERE run_id = ?1
                 GROUP BY decision, user, decided_in ORDER BY max(at), decision, user",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })?
                .collect()
            })
            .context(|| format!("reading who decided on the held actions of run {run}"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(decision, user, count, at, decided_in)| {
                Some(DecisionSummary {
                    decision: Decision::parse(&decision)?,
                    user,
                    count: usize::try_from(count).unwrap_or(0),
                    last_at: at.0,
                    decided_in,
                })
            })
            .collect())
    }

    // ---- circuit breaker ------------------------------------------------------------

    /// The persisted breaker (closed when no row).
    pub fn circuit(&self) -> Result<CircuitRecord, StoreError> {
        let context = || "reading the circuit breaker".to_owned();
        let row: Option<(Ts, String, String)> = self
            .conn
            .prepare_cached("SELECT opened_at, reason, failures FROM circuit_breaker WHERE id = 1")
            .and_then(|mut stmt| {
                stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .optional()
            })
            .context(context)?;
        Ok(match row {
            None => CircuitRecord::default(),
            Some((opened_at, reason, failures)) => CircuitRecord {
                opened_at: Some(opened_at.0),
                reason: Some(reason),
                failures: serde_json::from_str::<Vec<FailedWrite>>(&failures).unwrap_or_default(),
            },
        })
    }

    /// Persists the breaker: a record with `opened_at` opens it, one without closes it.
    pub fn set_circuit(&mut self, record: &CircuitRecord) -> Result<(), StoreError> {
        let context = || "saving the circuit breaker".to_owned();
        match record.opened_at {
            None => {
                self.conn
                    .execute("DELETE FROM circuit_breaker", [])
                    .context(context)?;
            }
            Some(at) => {
                let failures = serde_json::to_string(&record.failures).map_err(|source| {
                    StoreError::Encode {
                        context: context(),
                        source,
                    }
                })?;
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO circuit_breaker (id, opened_at, reason, failures)
                         VALUES (1, ?1, ?2, ?3)",
                    )
                    .and_then(|mut stmt| {
                        stmt.execute(params![
                            ts(at),
                            record.reason.clone().unwrap_or_default(),
                            failures
                        ])
                    })
                    .context(context)?;
            }
        }
        Ok(())
    }

    // ---- settle window --------------------------------------------------------------

    /// When each of `keys` was first seen (keys never seen are absent).
    pub fn drift_first_seen(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let mut pending = pending_drift(&self.conn)?;
        Ok(keys
            .iter()
            .filter_map(|key| pending.remove_entry(key))
            .collect())
    }

    /// Makes `keys` the set of pending drift: new keys are first seen `now`, kept
    /// ones keep their first-seen time, keys not given are forgotten (drift that
    /// went away and comes back starts a new settle window). Returns when each of
    /// `keys` was first seen.
    pub fn replace_drift_seen(
        &mut self,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let context = || "updating pending_drift".to_owned();
        // Read and written in one write transaction: a `plan` run beside the
        // daemon's reconcile must not lose the other's first sightings.
        let tx = self.write_tx(context)?;
        let before = pending_drift(&tx)?;
        let pending: BTreeMap<&str, DateTime<Utc>> = keys
            .iter()
            // A first sighting in the future was stored by a clock that has since
            // been stepped back: kept, it would hold the change until the clock
            // caught up, plus the window.
            .map(|key| {
                let seen = before.get(key).copied().map_or(now, |seen| seen.min(now));
                (key.as_str(), seen)
            })
            .collect();
        let body = serde_json::to_string(&pending).map_err(|source| StoreError::Encode {
            context: context(),
            source,
        })?;
        let key_count = i64::try_from(pending.len()).unwrap_or(i64::MAX);
        tx.prepare_cached(
            "INSERT OR REPLACE INTO pending_drift (id, key_count, body) VALUES (1, ?1, ?2)",
        )
        .and_then(|mut stmt| stmt.execute(params![key_count, body]))
        .context(context)?;
        tx.commit().context(context)?;
        Ok(pending
            .into_iter()
            .map(|(key, seen)| (key.to_owned(), seen))
            .collect())
    }

    // ---- retention before deletion ----------------------------------------------------

    /// When each deactivated account awaiting deletion was first seen so.
    pub fn deactivated_since(&self) -> Result<BTreeMap<String, DateTime<Utc>>, StoreError> {
        self.conn
            .prepare_cached("SELECT account_id, since FROM deactivated_accounts")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, Ts>(1)?.0)))?
                    .collect()
            })
            .context(|| "reading deactivated_accounts".to_owned())
    }

    /// Starts the clocks of `start` at `now` (a clock already running keeps its
    /// start) and forgets those of `forget`, in one transaction.
    pub fn update_deactivated(
        &mut self,
        start: &[String],
        forget: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if start.is_empty() && forget.is_empty() {
            return Ok(());
        }
        let context = || "updating deactivated_accounts".to_owned();
        let tx = self.write_tx(context)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO deactivated_accounts (account_id, since) VALUES (?1, ?2)",
                )
                .context(context)?;
            let since = ts(now);
            for account in start {
                insert.execute(params![account, since]).context(context)?;
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM deactivated_accounts WHERE account_id = ?1")
                .context(context)?;
            for account in forget {
                delete.execute([account]).context(context)?;
            }
        }
        tx.commit().context(context)
    }

    /// Forgets every retention clock (deletion after a retention period is off).
    pub fn clear_deactivated(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM deactivated_accounts", [])
            .map(|_| ())
            .context(|| "clearing deactivated_accounts".to_owned())
    }

    // ---- disputed matches remembered -------------------------------------------------

    /// What the last reconcile that read both sides whole remembered of disputed
    /// matches and linked people's duplicates, sorted by identity and account.
    pub fn disputed_candidates(&self) -> Result<Vec<DisputedCandidate>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT identity_id, account_id, user_name, method, duplicate_of, email \
                 FROM disputed_candidates ORDER BY identity_id, account_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    Ok(DisputedCandidate {
                        identity_id: row.get(0)?,
                        account_id: row.get(1)?,
                        user_name: row.get(2)?,
                        method: codec::link_method(row, 3)?,
                        duplicate_of: row.get(4)?,
                        email: row.get(5)?,
                    })
                })?
                .collect()
            })
            .context(|| "reading disputed_candidates".to_owned())
    }

    /// Replaces the remembered disputed matches with `candidates`, in one
    /// transaction: what the previous run remembered and this one no longer
    /// lists (settled by a link, its accounts deactivated or gone) is forgotten.
    pub fn replace_disputed_candidates(
        &mut self,
        candidates: &[DisputedCandidate],
    ) -> Result<(), StoreError> {
        let context = || "replacing disputed_candidates".to_owned();
        let tx = self.write_tx(context)?;
        tx.execute("DELETE FROM disputed_candidates", [])
            .context(context)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO disputed_candidates \
                     (identity_id, account_id, user_name, method, duplicate_of, email) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .context(context)?;
            for candidate in candidates {
                insert
                    .execute(params![
                        candidate.identity_id,
                        candidate.account_id,
                        candidate.user_name,
                        candidate.method.as_str(),
                        candidate.duplicate_of,
                        candidate.email
                    ])
                    .context(context)?;
            }
        }
        tx.commit().context(context)
    }

    /// Whether a remembered disputed match names `identity_id`.
    pub fn remembers_disputed(&self, identity_id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM disputed_candidates WHERE identity_id = ?1 LIMIT 1")
            .and_then(|mut stmt| stmt.exists([identity_id]))
            .context(|| format!("reading disputed_candidates of {identity_id}"))
    }

    // ---- explain ----------------------------------------------------------------------

    /// The newest run that saved both snapshots (what `explain` and `export` read), but not
    /// one whose directory was refused as a source fault (empty, shrunk): that
    /// snapshot is stored as read, and would show everyone it lacks as deleted,
    /// and their access as due to be removed, though nothing was planned from it.
    /// The refusal is on the run from the moment of the check
    /// ([`Store::mark_directory_refused`]), not only in its report, which a run
    /// that fails or crashes afterwards never stores.
    pub fn latest_snapshot_run(&self) -> Result<Option<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs WHERE directory_complete IS NOT NULL AND workspace_saved = 1
                   AND directory_refused = 0
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
            .context(|| "finding the latest run with snapshots".to_owned())
    }

    /// The newest `limit` journal rows about an identity or an account, newest
    /// first, of runs that write (reconciles and sweeps): a plan or a dry run
    /// journals what it would do, never sent, and a few of them run by hand would
    /// push the rows that happened out of the limit.
    pub fn actions_about(
        &self,
        identity_id: Option<&str>,
        account_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<super::JournalEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(
                "SELECT run_id, payload, state, attempts, last_error, updated_at FROM actions
                 WHERE (identity_id = ?1 OR account_id = ?2)
                   AND run_id NOT IN (SELECT id FROM runs WHERE kind IN ('plan', 'dry_run'))
                 ORDER BY run_id DESC, seq DESC LIMIT ?3",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![identity_id, account_id, limit], |row| {
                    Ok(super::JournalEntry {
                        run: row.get(0)?,
                        action: super::codec::json_col(row, 1)?,
                        state: row.get(2)?,
                        attempts: row.get(3)?,
                        last_error: row.get(4)?,
                        updated_at: row.get::<_, Ts>(5)?.0,
                    })
                })?
                .collect()
            })
            .context(|| "reading the actions about one person from actions".to_owned())
    }

    // ---- workspace sanity -------------------------------------------------------------

    /// How many accounts the workspace snapshot of `run` holds.
    pub fn workspace_account_count(&self, run: RunId) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT account_count FROM workspace_snapshots WHERE run_id = ?1")
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("counting the workspace accounts of run {run}"))?
            .unwrap_or(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The newest run before `run` that saved a workspace snapshot.
    pub fn previous_workspace_run(&self, run: RunId) -> Result<Option<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs WHERE workspace_saved = 1 AND id < ?1 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("finding the workspace snapshot before run {run}"))
    }
}

/// The whole pending-drift document: settle key → first seen.
/// The stored first-seen times, by settle key. Keys stored before settle keys were
/// hashed (the kind's JSON itself) are hashed on the way in, so an upgrade does
/// not restart any settle window.
fn pending_drift(
    conn: &rusqlite::Connection,
) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
    let stored: HashMap<String, DateTime<Utc>> = conn
        .prepare_cached("SELECT body FROM pending_drift WHERE id = 1")
        .and_then(|mut stmt| stmt.query_row([], |row| json_col(row, 0)).optional())
        .map(Option::unwrap_or_default)
        .context(|| "reading first-seen times from pending_drift".to_owned())?;
    Ok(stored
        .into_iter()
        .map(|(key, seen)| (crate::guard::settle_key_of_stored(key), seen))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{Attribute, AttributeChange, DriftKind, GroupRef, Plan, Role};
    use crate::store::RunKind;

    fn action(seq: u32, kind: ActionKind) -> Action {
        Action {
            seq,
            kind,
            reason: DriftKind::StaleAccess,
            subject: format!("s{seq}"),
            identity_id: None,
            detail: String::new(),
            held: None,
        }
    }

    fn update(account_id: &str, attribute: Attribute) -> ActionKind {
        ActionKind::UpdateAttributes {
            account_id: account_id.into(),
            changes: vec![AttributeChange {
                attribute,
                from: Some("old".into()),
                to: Some("new".into()),
            }],
        }
    }

    #[test]
    fn recent_counts_count_applied_writes_per_class() {
        let mut store = Store::open_in_memory().unwrap();
        let t0 = Utc::now();
        let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
        let plan = Plan {
            actions: vec![
                action(
                    0,
                    ActionKind::Deactivate {
                        account_id: "a".into(),
                    },
                ),
                action(
                    1,
                    ActionKind::RemoveMembers {
                        group: GroupRef::Existing {
                            id: "g".into(),
                            display_name: "G".into(),
                        },
                        members: vec!["a".into(), "b".into(), "c".into()],
                    },
                ),
                action(
                    2,
                    ActionKind::SetRole {
                        account_id: "b".into(),
                        from: vec!["Owner".into()],
                        to: Role::Viewer,
                    },
                ),
                action(
                    3,
                    ActionKind::SetRole {
                        account_id: "c".into(),
                        from: vec!["Viewer".into()],
                        to: Role::Editor,
                    },
                ),
                action(
                    4,
                    ActionKind::Deactivate {
                        account_id: "d".into(),
                    },
                ),
                action(5, update("e", Attribute::UserName)),
                action(6, update("f", Attribute::Email)),
            ],
            ..Plan::default()
        };
        store.save_plan(run, &plan, t0).unwrap();
        for seq in [0, 1, 2, 3, 5, 6] {
            store.mark_in_flight(run, seq, t0).unwrap();
            store.mark_applied(run, seq, t0, None).unwrap();
        }
        let counts = store
            .recent_counts(t0 - chrono::Duration::hours(24))
            .unwrap();
        assert_eq!(
            counts,
            RecentCounts {
                deprovisions: 1,
                membership_removals: 3,
                role_downgrades: 1,
                deletions: 0,
                renames: 1,
            },
            "the planned (unapplied) deactivation, the promotion and the email change do not count"
        );
        let later = store
            .recent_counts(t0 + chrono::Duration::seconds(1))
            .unwrap();
        assert_eq!(later, RecentCounts::default());
    }

    /// The 24 h limits count what was written at or after `now - 24 h`, with no
    /// upper bound: after the clock was stepped back (NTP, a restored VM), writes
    /// journaled "in the future" still count, once each, until the clock has
    /// passed them by 24 h. Time is the caller's, never the clock's.
    #[test]
    fn writes_journaled_after_now_by_a_clock_stepped_back_count_once() {
        let mut store = Store::open_in_memory().unwrap();
        let journaled = chrono::DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let run = store.begin_run(RunKind::Reconcile, journaled).unwrap();
        let plan = Plan {
            actions: (0..2)
                .map(|seq| {
                    action(
                        seq,
                        ActionKind::Deactivate {
                            account_id: format!("a{seq}"),
                        },
                    )
                })
                .collect(),
            ..Plan::default()
        };
        store.save_plan(run, &plan, journaled).unwrap();
        store.mark_in_flight(run, 0, journaled).unwrap();
        store.mark_applied(run, 0, journaled, None).unwrap();
        // In flight at 12:00, then the clock went back two hours: applied "at 10:05".
        store.mark_in_flight(run, 1, journaled).unwrap();
        let stepped_back = journaled - chrono::Duration::hours(2);
        store
            .mark_applied(run, 1, stepped_back + chrono::Duration::minutes(5), None)
            .unwrap();
        let day = chrono::Duration::hours(24);
        for (now, expected) in [
            (stepped_back, 2),
            (stepped_back + chrono::Duration::minutes(10), 2),
            (journaled + day, 1),
            (journaled + day + chrono::Duration::seconds(1), 0),
        ] {
            assert_eq!(
                crate::safety::guard_input(&store, now, true, 10, false)
                    .unwrap()
                    .recent
                    .deprovisions,
                expected,
                "at {now}"
            );
        }
    }

    #[test]
    fn the_audit_trail_is_filtered_by_id_time_and_run() {
        let mut store = Store::open_in_memory().unwrap();
        let t0 = Utc::now();
        let entry = |minutes: i64, run: Option<RunId>| AuditEntry {
            at: t0 + chrono::Duration::minutes(minutes),
            user: "alice".into(),
            command: "reject".into(),
            run,
            detail: format!("at +{minutes} min"),
        };
        for (minutes, run) in [(0, Some(1)), (10, None), (20, Some(1)), (30, Some(2))] {
            store.record_audit(&entry(minutes, run)).unwrap();
        }
        let ids = |filter: AuditFilter| -> Vec<i64> {
            store
                .audit_trail(filter)
                .unwrap()
                .into_iter()
                .map(|row| row.id)
                .collect()
        };
        assert_eq!(ids(AuditFilter::default()), [1, 2, 3, 4]);
        assert_eq!(
            store.audit_trail(AuditFilter::default()).unwrap()[2].entry,
            entry(20, Some(1))
        );
        let after = |id| AuditFilter {
            after_id: Some(id),
            ..AuditFilter::default()
        };
        assert_eq!(ids(after(2)), [3, 4]);
        // A time between two rows, and one a nanosecond after a row: text order
        // must be time order.
        let since = |at| AuditFilter {
            since: Some(at),
            ..AuditFilter::default()
        };
        assert_eq!(ids(since(t0 + chrono::Duration::minutes(15))), [3, 4]);
        assert_eq!(
            ids(since(
                t0 + chrono::Duration::minutes(10) + chrono::Duration::nanoseconds(1)
            )),
            [3, 4]
        );
        assert_eq!(ids(since(t0 + chrono::Duration::minutes(10))), [2, 3, 4]);
        let run = |run| AuditFilter {
            run: Some(run),
            ..AuditFilter::default()
        };
        assert_eq!(ids(run(1)), [1, 3]);
        assert_eq!(
            ids(AuditFilter {
                after_id: Some(1),
                since: Some(t0),
                run: Some(1),
            }),
            [3]
        );
    }

    /// The shrink baseline is the largest directory accepted in the window (or the
    /// newest one, however old), and none before the newest `--accept-directory`
    /// that was recorded as a baseline: one audited for an incomplete snapshot
    /// (never a baseline) does not forget the larger ones before it.
    #[test]
    fn the_shrink_baseline_is_the_largest_accepted_in_the_window_since_an_acceptance() {
        let mut store = Store::open_in_memory().unwrap();
        let t0 = Utc::now();
        let hours = chrono::Duration::hours;
        assert_eq!(store.shrink_baseline(t0, t0 + hours(1000)).unwrap(), None);
        store.accept_directory(1, 100, t0).unwrap();
        store.accept_directory(2, 90, t0 + hours(1)).unwrap();
        store.accept_directory(3, 80, t0 + hours(2)).unwrap();
        assert_eq!(
            store.shrink_baseline(t0, t0 + hours(1000)).unwrap(),
            Some(100)
        );
        assert_eq!(
            store
                .shrink_baseline(t0 + hours(1), t0 + hours(1000))
                .unwrap(),
            Some(90)
        );
        // Nothing in the window: the newest accepted.
        assert_eq!(
            store
                .shrink_baseline(t0 + hours(30), t0 + hours(1000))
                .unwrap(),
            Some(80)
        );

        let accepted_by_hand = |store: &mut Store, run| {
            store
                .record_audit(&AuditEntry {
                    at: t0 + hours(3),
                    user: "ops".into(),
                    command: "accept_directory".into(),
                    run: Some(run),
                    detail: "accepted".into(),
                })
                .unwrap();
        };
        // Audited, but its snapshot was incomplete: no baseline, nothing forgotten.
        accepted_by_hand(&mut store, 4);
        assert_eq!(
            store.shrink_baseline(t0, t0 + hours(1000)).unwrap(),
            Some(100)
        );
        accepted_by_hand(&mut store, 5);
        store.accept_directory(5, 60, t0 + hours(3)).unwrap();
        store.accept_directory(6, 55, t0 + hours(4)).unwrap();
        assert_eq!(
            store.shrink_baseline(t0, t0 + hours(1000)).unwrap(),
            Some(60)
        );
    }

    /// A directory accepted while the clock ran ahead (a VM booted with a clock
    /// a year out, set right by NTP since) is stamped in the clock's future: it
    /// stayed "in the 24 h before" every run until the clock caught up, so for
    /// a year every read was measured against it, and a workforce that shrank
    /// past the limit over months refused every reconcile and full sweep, with
    /// nobody deprovisioned. Stamped more than `CLOCK_STEP_MARGIN` ahead, it is
    /// out of the window (the newest accepted still counts when nothing else is).
    #[test]
    fn a_directory_accepted_by_a_clock_set_back_since_is_not_the_shrink_baseline() {
        let mut store = Store::open_in_memory().unwrap();
        let t0 = Utc::now();
        let hours = chrono::Duration::hours;
        store
            .accept_directory(1, 100, t0 + hours(365 * 24))
            .unwrap();
        store.accept_directory(2, 80, t0).unwrap();
        assert_eq!(
            crate::safety::shrink_baseline_at(&store, t0 + hours(1)).unwrap(),
            Some(80)
        );
        // Within the margin, an honest skew: still in the window.
        store.accept_directory(3, 90, t0 + hours(2)).unwrap();
        assert_eq!(
            crate::safety::shrink_baseline_at(&store, t0 + hours(1)).unwrap(),
            Some(90)
        );
        // Only one accepted, however far ahead: it is the newest, and counts.
        let mut alone = Store::open_in_memory().unwrap();
        alone
            .accept_directory(1, 100, t0 + hours(365 * 24))
            .unwrap();
        assert_eq!(
            crate::safety::shrink_baseline_at(&alone, t0).unwrap(),
            Some(100)
        );
    }

    #[test]
    fn safety_state_round_trips() {
        let mut store = Store::open_in_memory().unwrap();
        let t0 = Utc::now();
        assert_eq!(store.last_accepted_directory().unwrap(), None);
        store.accept_directory(1, 100, t0).unwrap();
        store.accept_directory(2, 90, t0).unwrap();
        assert_eq!(store.last_accepted_directory().unwrap(), Some(90));

        assert_eq!(store.circuit().unwrap(), CircuitRecord::default());
        let open = CircuitRecord {
            opened_at: Some(t0),
            reason: Some("why".into()),
            failures: vec![FailedWrite {
                op: "deactivate".into(),
                subject: "p".into(),
                message: "HTTP 503".into(),
            }],
        };
        store.set_circuit(&open).unwrap();
        assert_eq!(store.circuit().unwrap(), open);
        store.set_circuit(&CircuitRecord::default()).unwrap();
        assert_eq!(store.circuit().unwrap(), CircuitRecord::default());

        let key = |kind: &str| crate::guard::settle_key_of_stored(kind.to_owned());
        let (a, b, c) = (key("a"), key("b"), key("c"));
        store
            .replace_drift_seen(&[a.clone(), b.clone()], t0)
            .unwrap();
        let t1 = t0 + chrono::Duration::minutes(5);
        let returned = store
            .replace_drift_seen(&[b.clone(), c.clone()], t1)
            .unwrap();
        assert_eq!(
            returned,
            HashMap::from([(b.clone(), t0), (c.clone(), t1)]),
            "what the settle check uses"
        );
        let seen = store
            .drift_first_seen(&[a.clone(), b.clone(), c.clone()])
            .unwrap();
        assert_eq!(seen.get(&a), None, "a went away");
        assert_eq!(seen.get(&b), Some(&t0), "b keeps its first sighting");
        assert_eq!(seen.get(&c), Some(&t1));
        // The clock stepped back an hour: c's sighting "in the future" becomes now,
        // and stays so, rather than holding c until the clock catches up.
        let back = t1 - chrono::Duration::hours(1);
        let returned = store
            .replace_drift_seen(&[b.clone(), c.clone()], back)
            .unwrap();
        assert_eq!(
            returned,
            HashMap::from([(b.clone(), back), (c.clone(), back)])
        );
        let seen = store.drift_first_seen(&[b.clone(), c.clone()]).unwrap();
        assert_eq!(seen.get(&c), Some(&back), "stored as clamped");

        let entry = AuditEntry {
            at: t0,
            user: "alice".into(),
            command: "approve".into(),
            run: Some(7),
            detail: "approved 3".into(),
        };
        store.record_audit(&entry).unwrap();
        assert_eq!(store.audit().unwrap(), vec![entry]);
    }
}
