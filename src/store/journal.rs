//! Plans and the action journal. `save_plan` writes one row per action before any
//! of them is applied (design invariant 2); the executor then moves each row through
//! `Planned → InFlight → Applied | Failed` (see [`ActionState`]). Rows left
//! `InFlight` by a crash are found again with [`Store::interrupted`].

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use crate::model::{DriftItem, Plan};

use super::codec::{self, Ts, ts};
use super::error::Context;
use super::{ActionProgress, ActionState, JournalEntry, RunId, Store, StoreError};

const JOURNAL_COLUMNS: &str = "run_id, payload, state, attempts, last_error, updated_at";

fn journal_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEntry> {
    Ok(JournalEntry {
        run: row.get(0)?,
        action: codec::json_col(row, 1)?,
        state: row.get(2)?,
        attempts: row.get(3)?,
        last_error: row.get(4)?,
        updated_at: row.get::<_, Ts>(5)?.0,
    })
}

impl Store {
    /// Journals the plan of `run` in one transaction: a row per action (`Held` when
    /// the guard held it, else `Planned`) keyed by `action.seq`, and a row per drift
    /// item. A run's plan is saved once. `plan.new_links` are not stored here; see
    /// [`Store::upsert_links`].
    pub fn save_plan(
        &mut self,
        run: RunId,
        plan: &Plan,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at = ts(at);
        let tx = self.write_tx(|| format!("saving the plan of run {run}"))?;
        Self::require_run(&tx, run, "saving its plan")?;
        let exists = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM actions WHERE run_id = ?1)
                     OR EXISTS (SELECT 1 FROM plan_drift WHERE run_id = ?1)",
            )
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get::<_, bool>(0)))
            .context(|| format!("checking for an earlier plan of run {run} in actions"))?;
        if exists {
            return Err(StoreError::PlanExists { run });
        }
        {
            let actions_context = || format!("saving the plan of run {run} into actions");
            let drift_context = || format!("saving the plan of run {run} into plan_drift");
            let mut insert_action = tx
                .prepare_cached(
                    "INSERT INTO actions
                       (run_id, seq, kind, reason, subject, identity_id, account_id, payload,
                        state, attempts, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?10)",
                )
                .context(actions_context)?;
            for action in &plan.actions {
                let payload =
                    serde_json::to_string(action).map_err(|source| StoreError::Encode {
                        context: format!("saving action {} of run {run} into actions", action.seq),
                        source,
                    })?;
                let state = if action.held.is_some() {
                    ActionState::Held
                } else {
                    ActionState::Planned
                };
                insert_action
                    .execute(params![
                        run,
                        action.seq,
                        action.kind.name(),
                        action.reason.as_str(),
                        action.subject,
                        action.identity_id,
                        action.kind.account_id(),
                        payload,
                        state,
                        at,
                    ])
                    .context(|| {
                        format!("saving action {} of run {run} into actions", action.seq)
                    })?;
            }
            let drift =
                serde_json::to_string(&plan.drift).map_err(|source| StoreError::Encode {
                    context: drift_context(),
                    source,
                })?;
            tx.prepare_cached(
                "INSERT INTO plan_drift (run_id, item_count, body) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    run,
                    i64::try_from(plan.drift.len()).unwrap_or(i64::MAX),
                    drift
                ])
            })
            .context(drift_context)?;
        }
        tx.commit()
            .context(|| format!("committing the plan of run {run}"))
    }

    /// The journal of `run`, ordered by `seq`.
    pub fn journal(&self, run: RunId) -> Result<Vec<JournalEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {JOURNAL_COLUMNS} FROM actions WHERE run_id = ?1 ORDER BY seq"
            ))
            .and_then(|mut stmt| stmt.query_map([run], journal_entry)?.collect())
            .context(|| format!("reading the journal of run {run} from actions"))
    }

    /// The deactivations and deletions journaled for `run`, in plan order: what the
    /// same-day deprovisioning ledger reads after a run, without decoding the rest
    /// of a large journal.
    pub fn journal_deprovisions(&self, run: RunId) -> Result<Vec<JournalEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {JOURNAL_COLUMNS} FROM actions
                 WHERE run_id = ?1 AND kind IN ('deactivate', 'delete') ORDER BY seq"
            ))
            .and_then(|mut stmt| stmt.query_map([run], journal_entry)?.collect())
            .context(|| format!("reading the deprovisions of run {run} from actions"))
    }

    /// The actions applied (written and verified) at or after `at`, any run's, in
    /// the order they were applied: what a snapshot read at `at` does not show yet.
    pub fn applied_since(&self, at: DateTime<Utc>) -> Result<Vec<JournalEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {JOURNAL_COLUMNS} FROM actions
                 WHERE state = 'applied' AND updated_at >= ?1
                 ORDER BY updated_at, run_id, seq"
            ))
            .and_then(|mut stmt| stmt.query_map([ts(at)], journal_entry)?.collect())
            .context(|| "reading the actions applied since a snapshot from actions".to_owned())
    }

    /// Every membership change applied (`add_members`, `remove_members`), oldest
    /// first: a group-level action names its accounts only in its payload, so the
    /// per-account query of the export ([`Store::last_applied_change_by_account`])
    /// does not see them.
    pub fn applied_membership_changes(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {JOURNAL_COLUMNS} FROM actions
                 WHERE state = 'applied' AND kind IN ('add_members', 'remove_members')
                 ORDER BY updated_at, run_id, seq"
            ))
            .and_then(|mut stmt| stmt.query_map([], journal_entry)?.collect())
            .context(|| "reading the membership changes applied from actions".to_owned())
    }

    /// State, attempts and last error of every action of `run`, in plan order.
    pub fn journal_progress(&self, run: RunId) -> Result<Vec<ActionProgress>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT seq, state, attempts, last_error FROM actions
                 WHERE run_id = ?1 ORDER BY seq",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| {
                    Ok(ActionProgress {
                        seq: row.get(0)?,
                        state: row.get(1)?,
                        attempts: row.get(2)?,
                        last_error: row.get(3)?,
                    })
                })?
                .collect()
            })
            .context(|| format!("reading the progress of run {run} from actions"))
    }

    /// The drift items of `run`, in plan order; none when it saved no plan.
    pub fn drift(&self, run: RunId) -> Result<Vec<DriftItem>, StoreError> {
        let body: Option<String> = self
            .conn
            .prepare_cached("SELECT body FROM plan_drift WHERE run_id = ?1")
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("reading the drift items of run {run} from plan_drift"))?;
        body.map_or_else(
            || Ok(Vec::new()),
            |body| super::snapshot::decode_document(&body, "plan_drift", run),
        )
    }

    /// Journals that action `seq` of `run` is about to be sent: state `InFlight`,
    /// one more attempt. Allowed from `Planned`, `Failed` (a retry) and `InFlight`
    /// (resuming after a crash); never from `Held` or `Applied`.
    pub fn mark_in_flight(
        &mut self,
        run: RunId,
        seq: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE actions SET state = 'in_flight', attempts = attempts + 1, updated_at = ?3
                 WHERE run_id = ?1 AND seq = ?2 AND state IN ('planned', 'failed', 'in_flight')",
            )
            .and_then(|mut stmt| stmt.execute(params![run, seq, ts(at)]))
            .context(|| format!("marking action {seq} of run {run} in flight in actions"))?;
        self.check_transition(run, seq, changed, ActionState::InFlight)
    }

    /// Journals that action `seq` of `run` took effect; `result` is what the
    /// workspace returned that later steps need (e.g. `{"account_id": "..."}`).
    /// Only an `InFlight` action can be marked applied.
    pub fn mark_applied(
        &mut self,
        run: RunId,
        seq: u32,
        at: DateTime<Utc>,
        result: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let result = result
            .map(serde_json::to_string)
            .transpose()
            .map_err(|source| StoreError::Encode {
                context: format!("storing the result of action {seq} of run {run} in actions"),
                source,
            })?;
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE actions SET state = 'applied', result = COALESCE(?4, result), updated_at = ?3
                 WHERE run_id = ?1 AND seq = ?2 AND state = 'in_flight'",
            )
            .and_then(|mut stmt| stmt.execute(params![run, seq, ts(at), result]))
            .context(|| format!("marking action {seq} of run {run} applied in actions"))?;
        self.check_transition(run, seq, changed, ActionState::Applied)
    }

    /// [`Store::mark_applied`] with a note on how it was done, kept where a
    /// failure would be (`last_error`, which the report shows): a deactivation
    /// whose account was already gone from the workspace
    /// ([`crate::apply::ALREADY_GONE`]).
    pub fn mark_applied_noted(
        &mut self,
        run: RunId,
        seq: u32,
        at: DateTime<Utc>,
        note: &str,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE actions SET state = 'applied', last_error = ?4, updated_at = ?3
                 WHERE run_id = ?1 AND seq = ?2 AND state = 'in_flight'",
            )
            .and_then(|mut stmt| stmt.execute(params![run, seq, ts(at), note]))
            .context(|| format!("marking action {seq} of run {run} applied in actions"))?;
        self.check_transition(run, seq, changed, ActionState::Applied)
    }

    /// Records what a write returned (e.g. the id of a created account) while the
    /// action is still `InFlight`, before verification, so a crash between the
    /// write and its verification loses nothing. `mark_applied` keeps it.
    pub fn record_result(
        &mut self,
        run: RunId,
        seq: u32,
        at: DateTime<Utc>,
        result: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let result = serde_json::to_string(result).map_err(|source| StoreError::Encode {
            context: format!("storing the result of action {seq} of run {run} in actions"),
            source,
        })?;
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE actions SET result = ?4, updated_at = ?3
                 WHERE run_id = ?1 AND seq = ?2 AND state = 'in_flight'",
            )
            .and_then(|mut stmt| stmt.execute(params![run, seq, ts(at), result]))
            .context(|| format!("recording the result of action {seq} of run {run} in actions"))?;
        self.check_transition(run, seq, changed, ActionState::InFlight)
    }

    /// Journals that action `seq` of `run` failed (after its retries). Only an
    /// `InFlight` action can be marked failed; it may be retried with
    /// [`Store::mark_in_flight`].
    pub fn mark_failed(
        &mut self,
        run: RunId,
        seq: u32,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE actions SET state = 'failed', last_error = ?4, updated_at = ?3
                 WHERE run_id = ?1 AND seq = ?2 AND state = 'in_flight'",
            )
            .and_then(|mut stmt| stmt.execute(params![run, seq, ts(at), error]))
            .context(|| format!("marking action {seq} of run {run} failed in actions"))?;
        self.check_transition(run, seq, changed, ActionState::Failed)
    }

    /// [`Store::mark_in_flight`] for every action in `seqs`, in one statement: one
    /// `UPDATE` per row took about 17 µs each (perf, a phase of 9,445 creates).
    /// On error the rows that could move have moved; call it inside
    /// [`Store::batch`] to keep all or nothing.
    pub fn mark_all_in_flight(
        &mut self,
        run: RunId,
        seqs: &[u32],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.transition_all(
            run,
            seqs,
            at,
            ActionState::InFlight,
            "UPDATE actions SET state = 'in_flight', attempts = attempts + 1, updated_at = ?3
             WHERE run_id = ?1 AND seq IN (SELECT value FROM json_each(?2))
               AND state IN ('planned', 'failed', 'in_flight')",
        )
    }

    /// [`Store::mark_applied`] without a result for every action in `seqs`, in one
    /// statement (see [`Store::mark_all_in_flight`]).
    pub fn mark_all_applied(
        &mut self,
        run: RunId,
        seqs: &[u32],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.transition_all(
            run,
            seqs,
            at,
            ActionState::Applied,
            "UPDATE actions SET state = 'applied', updated_at = ?3
             WHERE run_id = ?1 AND seq IN (SELECT value FROM json_each(?2))
               AND state = 'in_flight'",
        )
    }

    /// Runs a guarded set-based transition `update` (?1 run, ?2 the seqs as a JSON
    /// array, ?3 the time) and checks that every action moved to `to`.
    fn transition_all(
        &mut self,
        run: RunId,
        seqs: &[u32],
        at: DateTime<Utc>,
        to: ActionState,
        update: &str,
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let list = seq_list(run, seqs)?;
        let changed = self
            .conn
            .prepare_cached(update)
            .and_then(|mut stmt| stmt.execute(params![run, list, ts(at)]))
            .context(|| {
                format!(
                    "marking {} actions of run {run} {to} in actions",
                    seqs.len()
                )
            })?;
        self.check_transitions(run, seqs, changed, to, at)
    }

    /// After a guarded set-based `UPDATE` to `to` at `at` changed `changed` rows:
    /// Ok when every action in `seqs` moved, otherwise the first that did not and
    /// why (the same errors as the one-row transitions).
    fn check_transitions(
        &self,
        run: RunId,
        seqs: &[u32],
        changed: usize,
        to: ActionState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let distinct: std::collections::BTreeSet<u32> = seqs.iter().copied().collect();
        if changed == distinct.len() {
            return Ok(());
        }
        let context = || format!("reading the states of actions of run {run} from actions");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, updated_at FROM actions WHERE run_id = ?1 AND seq = ?2")
            .context(context)?;
        // Compared as stored: the text form is what the UPDATE wrote.
        let at = ts(at);
        for seq in distinct {
            let row: Option<(ActionState, String)> = stmt
                .query_row(params![run, seq], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
                .context(context)?;
            match row {
                None => return Err(StoreError::NoSuchAction { run, seq }),
                Some((from, updated)) if from != to || updated != at => {
                    return Err(StoreError::InvalidTransition { run, seq, from, to });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// After a guarded `UPDATE` changed `changed` rows: Ok, or why not.
    fn check_transition(
        &self,
        run: RunId,
        seq: u32,
        changed: usize,
        to: ActionState,
    ) -> Result<(), StoreError> {
        if changed > 0 {
            return Ok(());
        }
        match self.action_state(run, seq)? {
            None => Err(StoreError::NoSuchAction { run, seq }),
            Some(from) => Err(StoreError::InvalidTransition { run, seq, from, to }),
        }
    }

    fn action_state(&self, run: RunId, seq: u32) -> Result<Option<ActionState>, StoreError> {
        self.conn
            .prepare_cached("SELECT state FROM actions WHERE run_id = ?1 AND seq = ?2")
            .and_then(|mut stmt| {
                stmt.query_row(params![run, seq], |row| row.get(0))
                    .optional()
            })
            .context(|| format!("reading the state of action {seq} of run {run} from actions"))
    }

    /// The result stored by [`Store::mark_applied`]; `None` when none was stored.
    /// Errors when the action does not exist.
    pub fn action_result(
        &self,
        run: RunId,
        seq: u32,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let row: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT result FROM actions WHERE run_id = ?1 AND seq = ?2")
            .and_then(|mut stmt| {
                stmt.query_row(params![run, seq], |row| row.get(0))
                    .optional()
            })
            .context(|| format!("reading the result of action {seq} of run {run} from actions"))?;
        let Some(result) = row else {
            return Err(StoreError::NoSuchAction { run, seq });
        };
        result
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                table: "actions",
                run,
                detail: format!("the result of action {seq} is not JSON: {e}"),
            })
    }

    /// Actions left `InFlight` by any run (a crash mid-apply), oldest run first,
    /// then by `seq`.
    pub fn interrupted(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {JOURNAL_COLUMNS} FROM actions WHERE state = 'in_flight'
                 ORDER BY run_id, seq"
            ))
            .and_then(|mut stmt| stmt.query_map([], journal_entry)?.collect())
            .context(|| "reading interrupted (in-flight) actions from actions".to_owned())
    }

    /// `seatwarden approve RUN`: moves every `Held` action of `run` back to
    /// `Planned` so the executor can apply it. The journaled action keeps its `held`
    /// reason as the record of why it waited. Returns how many were released.
    pub fn approve_held(&mut self, run: RunId, at: DateTime<Utc>) -> Result<usize, StoreError> {
        Self::require_run(&self.conn, run, "approving its held actions")?;
        self.conn
            .prepare_cached(
                "UPDATE actions SET state = 'planned', updated_at = ?2
                 WHERE run_id = ?1 AND state = 'held'",
            )
            .and_then(|mut stmt| stmt.execute(params![run, ts(at)]))
            .context(|| format!("approving the held actions of run {run} in actions"))
    }

    /// The people among `identities` whose deactivation or deletion a human
    /// approved (`seatwarden approve`: released from its hold, not refused by
    /// the re-check), each with the time of that decision, when it is the
    /// newest decision about a deprovision of theirs. An approved deprovision
    /// that failed is the retry job's to send: nothing that ends episodes of
    /// people a hold keeps may end its episode. A rejection made since (the
    /// same deprovision held again by a later run, and refused) stands instead,
    /// as the newest decision does everywhere: the person is left out.
    pub fn deprovisions_approved(
        &self,
        identities: &[String],
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, StoreError> {
        Ok(self
            .approved_deprovisions(identities)?
            .into_iter()
            .map(|(identity, approval)| (identity, approval.at))
            .collect())
    }

    /// [`Self::deprovisions_approved`], of approvals that released a hold for a
    /// directory group that only looks like a configured one
    /// (`look_alike_group`): only such an approval answered what a look-alike
    /// hold asks. One given over a threshold (too many deprovisions at once)
    /// decided how many may go, not whether a person a look-alike group may
    /// keep in is a leaver: their deprovision is held as a look-alike's again.
    pub fn look_alike_deprovisions_approved(
        &self,
        identities: &[String],
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, StoreError> {
        Ok(self
            .approved_deprovisions(identities)?
            .into_iter()
            .filter(|(_, approval)| approval.look_alike)
            .map(|(identity, approval)| (identity, approval.at))
            .collect())
    }

    /// When a reconcile last planned a deactivation or deletion of each of
    /// `identities`' people that no rule held (the guard let it go, no human
    /// asked), by person. Such a plan is newer than a rejection made before it
    /// and decides instead: a rejection that took back an approval no longer
    /// keeps that deprovision from the retry job
    /// ([`crate::safety::rejected_approvals`]).
    pub fn unheld_deprovisions_planned(
        &self,
        identities: &[String],
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, StoreError> {
        if identities.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let context =
            || "reading the unheld deprovisions reconciles planned from actions".to_owned();
        let wanted = serde_json::to_string(identities).map_err(|source| StoreError::Encode {
            context: context(),
            source,
        })?;
        self.conn
            .prepare_cached(
                "SELECT actions.identity_id, MAX(actions.created_at)
                 FROM actions
                 JOIN runs ON runs.id = actions.run_id
                 WHERE runs.kind = 'reconcile'
                   AND actions.kind IN ('deactivate', 'delete')
                   AND json_extract(actions.payload, '$.held') IS NULL
                   AND actions.identity_id IN (SELECT value FROM json_each(?1))
                 GROUP BY actions.identity_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([wanted], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Ts>(1)?.0))
                })?
                .collect()
            })
            .context(context)
    }

    /// The people among `identities` whose newest decision on a held
    /// deactivation or deletion (in any run) is an approval that released it
    /// (not refused by the re-check, not rejected since): who approved, in which
    /// run, when, and the accounts it took. An approved deprovision whose write
    /// failed is the retry job's to send again, past the thresholds the approval
    /// decided over ([`crate::safety::guard_input`]); a `reject` of the same
    /// deprovision since (of a run that held it again) stands instead.
    pub fn approved_deprovisions(
        &self,
        identities: &[String],
    ) -> Result<std::collections::HashMap<String, ApprovedDeprovision>, StoreError> {
        Ok(self
            .deprovision_decisions(identities)?
            .into_iter()
            .filter_map(|(identity, decided)| match decided.newest {
                NewestDecision::Approved => decided.approval.map(|a| (identity, a)),
                NewestDecision::Rejected(_) => None,
            })
            .collect())
    }

    /// The people among `identities` whose newest decision on a held
    /// deactivation or deletion is a rejection made after an approval of one
    /// (`reject` of a later run that held it again, or of the approved run
    /// before it sent it): the approval, and the rejection that took it back.
    /// The retry job does not send such a deprovision
    /// ([`crate::safety::rejected_approvals`]).
    pub fn rejected_approvals(
        &self,
        identities: &[String],
    ) -> Result<std::collections::HashMap<String, RejectedApproval>, StoreError> {
        Ok(self
            .deprovision_decisions(identities)?
            .into_iter()
            .filter_map(
                |(identity, decided)| match (decided.newest, decided.approval) {
                    (NewestDecision::Rejected(rejection), Some(approval)) => Some((
                        identity,
                        RejectedApproval {
                            approval,
                            rejection,
                        },
                    )),
                    _ => None,
                },
            )
            .collect())
    }

    /// The decisions about the held deactivations and deletions of
    /// `identities`' people, by person: the newest, and the newest approval
    /// that released one (not refused by the re-check). Ordered by time, then
    /// rejections last (a rejection at the same moment as an approval comes
    /// after it, and stands: it refuses), then run.
    fn deprovision_decisions(
        &self,
        identities: &[String],
    ) -> Result<std::collections::HashMap<String, DeprovisionDecisions>, StoreError> {
        let mut decided: std::collections::HashMap<String, DeprovisionDecisions> =
            std::collections::HashMap::new();
        if identities.is_empty() {
            return Ok(decided);
        }
        let context = || "reading the decided deprovisions from actions".to_owned();
        let wanted = serde_json::to_string(identities).map_err(|source| StoreError::Encode {
            context: context(),
            source,
        })?;
        type Row = (
            String,
            Option<String>,
            String,
            String,
            DateTime<Utc>,
            RunId,
            RunId,
            bool,
            DateTime<Utc>,
            Option<String>,
        );
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(
                "SELECT actions.identity_id, actions.account_id, held_decisions.decision,
                        held_decisions.user, held_decisions.at, actions.run_id,
                        COALESCE(held_decisions.decided_in, actions.run_id),
                        actions.state != 'held', actions.updated_at,
                        json_extract(actions.payload, '$.held.rule')
                 FROM actions
                 JOIN held_decisions ON held_decisions.run_id = actions.run_id
                                    AND held_decisions.seq = actions.seq
                 WHERE ((held_decisions.decision = 'approved' AND actions.state != 'held')
                        OR held_decisions.decision = 'rejected')
                   AND actions.kind IN ('deactivate', 'delete')
                   AND actions.identity_id IN (SELECT value FROM json_each(?1))
                 ORDER BY held_decisions.at, held_decisions.decision = 'rejected',
                          actions.run_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([wanted], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get::<_, Ts>(4)?.0,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get::<_, Ts>(8)?.0,
                        row.get(9)?,
                    ))
                })?
                .collect()
            })
            .context(context)?;
        for (identity, account, decision, user, at, run, decided_in, released, changed, rule) in
            rows
        {
            let look_alike = rule.as_deref() == Some("look_alike_group");
            // Oldest first: a later decision replaces an earlier one; the
            // accounts of one approval (a person's duplicate) gather.
            let person = decided
                .entry(identity)
                .or_insert_with(|| DeprovisionDecisions {
                    newest: NewestDecision::Approved,
                    approval: None,
                    approved_in: None,
                });
            if decision == "approved" {
                let same_approval = matches!(person.newest, NewestDecision::Approved)
                    && person.approval.as_ref().is_some_and(|a| a.run == run);
                if !same_approval {
                    person.approval = Some(ApprovedDeprovision {
                        run,
                        user,
                        at,
                        accounts: Vec::new(),
                        look_alike: false,
                    });
                }
                person.newest = NewestDecision::Approved;
                person.approved_in = Some(decided_in);
                if let Some(approval) = person.approval.as_mut() {
                    approval.look_alike |= look_alike;
                    approval.accounts.extend(account);
                }
            } else if matches!(person.newest, NewestDecision::Approved)
                && person
                    .approved_in
                    .is_some_and(|approved| decided_in < approved)
            {
                // `reject 7` after `approve 8` (clearing an old run that held
                // the same deprovision) decides run 7's plan, as `reject`
                // promises, not the newer approval: taken back by it, the
                // retry job would leave a leaver's deprovision unsent until
                // someone approved again.
            } else {
                if released {
                    // Released from its hold, so approved first: `reject` of
                    // the approved run itself (an approval that did not send
                    // it) replaced that decision, and with it who approved.
                    // Dated by the row's last change (its release, or the
                    // write that failed since), not by the rejection: a
                    // `reject` of a run an earlier episode's approval left
                    // unsent would pass for an approval of the episode open
                    // now, and hold a leaver's deprovision from the retry job.
                    person.approval = Some(ApprovedDeprovision {
                        run,
                        user: String::new(),
                        at: changed.min(at),
                        accounts: account.into_iter().collect(),
                        look_alike,
                    });
                }
                person.newest = NewestDecision::Rejected(Rejected {
                    run: decided_in,
                    user,
                    at,
                });
            }
        }
        Ok(decided)
    }

    /// The first run other than `entry`'s that applied the same action (the same
    /// [`crate::model::ActionKind`]) after `entry` last changed, with its kind
    /// and when: an approved row its own run never sent (kept back, released
    /// and cut off) that the retry job, a sweep or a reconcile sent since. A
    /// `reject` does not take back what reached the workspace, nor says it
    /// refused it ([`crate::approval::reject`]).
    pub fn applied_elsewhere_since(
        &self,
        entry: &JournalEntry,
    ) -> Result<Option<AppliedElsewhere>, StoreError> {
        let kind = entry.action.kind.name();
        let account = entry.action.kind.account_id();
        let context = || {
            format!(
                "reading where run {}'s {kind} #{} was applied since from actions",
                entry.run, entry.action.seq
            )
        };
        let rows: Vec<(RunId, String, Ts, crate::model::Action)> = self
            .conn
            .prepare_cached(
                "SELECT actions.run_id, runs.kind, actions.updated_at, actions.payload
                 FROM actions JOIN runs ON runs.id = actions.run_id
                 WHERE actions.run_id != ?1 AND actions.state = 'applied'
                   AND actions.kind = ?2 AND actions.account_id IS ?3
                   AND actions.updated_at >= ?4
                 ORDER BY actions.updated_at, actions.run_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![entry.run, kind, account, ts(entry.updated_at)],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            codec::json_col(row, 3)?,
                        ))
                    },
                )?
                .collect()
            })
            .context(context)?;
        for (run, run_kind, at, action) in rows {
            if action.kind == entry.action.kind {
                return Ok(Some(AppliedElsewhere {
                    run,
                    run_kind,
                    at: at.0,
                }));
            }
        }
        Ok(None)
    }

    /// Reconcile and sweep runs after `run` that hold journal rows nobody decided
    /// on yet, oldest first: where an approval of `run` looks for the same
    /// actions held again (see `approval::settle_later_holds`).
    pub fn later_runs_holding(&self, run: RunId) -> Result<Vec<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT DISTINCT actions.run_id FROM actions
                 JOIN runs ON runs.id = actions.run_id
                 LEFT JOIN held_decisions ON held_decisions.run_id = actions.run_id
                                         AND held_decisions.seq = actions.seq
                 WHERE actions.run_id > ?1 AND actions.state = 'held'
                   AND held_decisions.run_id IS NULL
                   AND runs.kind IN ('reconcile', 'sweep')
                 ORDER BY actions.run_id",
            )
            .and_then(|mut stmt| stmt.query_map([run], |row| row.get(0))?.collect())
            .context(|| format!("finding the runs after run {run} that hold actions"))
    }

    /// Reconcile and sweep runs before `run` with journal rows a `reject` of them
    /// would still reject: held and undecided, or approved by an approval cut off
    /// before it sent them (held, released, in flight or failed unsent), oldest
    /// first. Where a `reject` of `run` looks for the same actions held before
    /// (see `approval::reject_earlier_holds`).
    pub fn earlier_runs_holding(&self, run: RunId) -> Result<Vec<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT DISTINCT actions.run_id FROM actions
                 JOIN runs ON runs.id = actions.run_id
                 LEFT JOIN held_decisions ON held_decisions.run_id = actions.run_id
                                         AND held_decisions.seq = actions.seq
                 WHERE actions.run_id < ?1
                   AND ((actions.state = 'held' AND held_decisions.run_id IS NULL)
                        OR (held_decisions.decision = 'approved'
                            AND actions.state IN ('held', 'planned', 'in_flight', 'failed')))
                   AND runs.kind IN ('reconcile', 'sweep')
                 ORDER BY actions.run_id",
            )
            .and_then(|mut stmt| stmt.query_map([run], |row| row.get(0))?.collect())
            .context(|| format!("finding the runs before run {run} that hold actions"))
    }

    /// Deactivations and deletions applied or in flight (of any run) whose journal
    /// row changed at or after `since`: what the rolling 24 h deprovision threshold
    /// counts (see [`Self::deprovisions_and_deletions_since`]).
    pub fn deprovisions_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(self.deprovisions_and_deletions_since(since)?.0)
    }

    /// The deprovisions and, apart, the deletions after a retention period (which
    /// take no access away: a threshold class of their own) applied or in flight
    /// since `since`.
    pub fn deprovisions_and_deletions_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(u64, u64), StoreError> {
        self.conn
            .prepare_cached(
                "SELECT coalesce(sum(retained IS NULL), 0), coalesce(sum(retained IS NOT NULL), 0)
                 FROM (SELECT json_extract(payload, '$.kind.deactivated_since') AS retained
                       FROM actions
                       WHERE state IN ('applied', 'in_flight')
                         AND kind IN ('deactivate', 'delete')
                         AND updated_at >= ?1)",
            )
            .and_then(|mut stmt| stmt.query_row([ts(since)], |row| Ok((row.get(0)?, row.get(1)?))))
            .context(|| "counting recent deprovisions and deletions in actions".to_owned())
    }
}

/// `seqs` as a JSON array, the form `json_each` takes.
fn seq_list(run: RunId, seqs: &[u32]) -> Result<String, StoreError> {
    serde_json::to_string(seqs).map_err(|source| StoreError::Encode {
        context: format!("listing actions of run {run} for a journal update"),
        source,
    })
}

/// The decisions about one person's held deprovisions
/// ([`Store::deprovision_decisions`]).
struct DeprovisionDecisions {
    newest: NewestDecision,
    /// The newest approval, whatever came after it. One a `reject` of its own
    /// run replaced is known by the run and the row's last change alone (its
    /// `user` empty).
    approval: Option<ApprovedDeprovision>,
    /// The run the newest approval was decided in (`approve N`): a rejection
    /// decided in an older run does not take it back.
    approved_in: Option<RunId>,
}

enum NewestDecision {
    Approved,
    Rejected(Rejected),
}

/// A `reject` of a held deprovision: the run the person rejected (for a
/// decision recorded in an older run that held it too, the newer run named),
/// who and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub run: RunId,
    /// Who rejected it, as the audit row names them.
    pub user: String,
    pub at: DateTime<Utc>,
}

/// An approved deprovision a newer rejection took back
/// ([`Store::rejected_approvals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedApproval {
    /// The approval taken back. Rejected in its own run (`reject` of the run
    /// an approval did not send from), the rejection replaced the approval's
    /// record: `user` is empty and `at` the row's last change (its release,
    /// or a failed write since), the nearest to the approval left.
    pub approval: ApprovedDeprovision,
    /// The newest decision.
    pub rejection: Rejected,
}

/// Where an action was applied by another run than its own
/// ([`Store::applied_elsewhere_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedElsewhere {
    pub run: RunId,
    /// That run's kind, as stored (`sweep`: the daemon's sweep or retry job).
    pub run_kind: String,
    /// When its row was applied.
    pub at: DateTime<Utc>,
}

/// A person's deprovision a human approved, newest decision first
/// ([`Store::approved_deprovisions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedDeprovision {
    /// The run whose held deprovision was approved.
    pub run: RunId,
    /// Who approved it, as the audit row names them.
    pub user: String,
    pub at: DateTime<Utc>,
    /// The accounts it deactivates or deletes.
    pub accounts: Vec<String>,
    /// Whether it released a hold for a directory group that only looks like
    /// a configured one (`look_alike_group`): only then did it answer what a
    /// look-alike hold asks ([`Store::look_alike_deprovisions_approved`]).
    pub look_alike: bool,
}
