//! Directory and workspace snapshots, stored per run as one JSON document each
//! (migration `M_SNAPSHOT_DOCUMENTS` says why). Each save is one `BEGIN IMMEDIATE`
//! transaction; saving again for the same run replaces the earlier snapshot. Loads
//! return exactly what was saved, in the same order, duplicates included.
//!
//! The documents are the model types as serde writes them, so a field added to
//! `Identity`, `Account` or `WorkspaceGroup` needs `#[serde(default)]` (or a
//! migration) for snapshots saved before it to load.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{DirectorySnapshot, Identity, WorkspaceSnapshot};

use super::error::Context;
use super::{RunId, Store, StoreError};

fn count(n: usize) -> i64 {
    // A Vec never holds more than isize::MAX elements.
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// About what one account or identity, and one membership, take in a document.
const PERSON_BYTES: usize = 256;
const MEMBERSHIP_BYTES: usize = 24;

/// `value` as JSON text, holding `people` accounts or identities and
/// `memberships` memberships. The buffer is sized up front: at 100k accounts the
/// document is 25 MB, and growing to that by doubling copied it a dozen times.
fn encode(
    value: &impl Serialize,
    people: usize,
    memberships: usize,
    context: impl Fn() -> String,
) -> Result<String, StoreError> {
    let mut buffer = Vec::with_capacity(
        people
            .saturating_mul(PERSON_BYTES)
            .saturating_add(memberships.saturating_mul(MEMBERSHIP_BYTES)),
    );
    serde_json::to_writer(&mut buffer, value).map_err(|source| StoreError::Encode {
        context: context(),
        source,
    })?;
    // serde_json writes valid UTF-8 only.
    String::from_utf8(buffer).map_err(|e| StoreError::Encode {
        context: context(),
        source: serde::ser::Error::custom(e),
    })
}

/// The stored document of a run whose flag says it saved one; `None` (no row) is
/// a corrupt database, not an absent snapshot.
fn decode<T: DeserializeOwned>(
    body: Option<String>,
    table: &'static str,
    run: RunId,
) -> Result<T, StoreError> {
    let body = body.ok_or_else(|| StoreError::Corrupt {
        table,
        run,
        detail: "the run is marked as having this snapshot, but none is stored".to_owned(),
    })?;
    decode_document(&body, table, run)
}

/// A stored JSON document of `run` (a snapshot, a plan's drift) read back; an
/// undecodable one is corruption.
pub(super) fn decode_document<T: DeserializeOwned>(
    body: &str,
    table: &'static str,
    run: RunId,
) -> Result<T, StoreError> {
    // Where and what kind of error, not serde's message: that can quote a value.
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        table,
        run,
        detail: format!(
            "the stored document does not decode ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

impl Store {
    /// Saves the directory snapshot of `run`: its identities with their group
    /// memberships, and the `complete` flag (on the run row).
    pub fn save_directory_snapshot(
        &mut self,
        run: RunId,
        snapshot: &DirectorySnapshot,
    ) -> Result<(), StoreError> {
        let context = || format!("saving the directory snapshot of run {run}");
        let memberships: usize = snapshot.identities.iter().map(|i| i.groups.len()).sum();
        let body = encode(
            &snapshot.identities,
            snapshot.identities.len(),
            memberships,
            context,
        )?;
        let tx = self.write_tx(context)?;
        let marked = tx
            .prepare_cached("UPDATE runs SET directory_complete = ?2 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![run, snapshot.complete]))
            .context(|| format!("marking the directory snapshot of run {run} in runs"))?;
        if marked == 0 {
            return Err(StoreError::UnknownRun {
                run,
                context: "saving its directory snapshot",
            });
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO directory_snapshots (run_id, identity_count, body)
             VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut stmt| stmt.execute(params![run, count(snapshot.identities.len()), body]))
        .context(|| {
            format!("saving the directory snapshot of run {run} into directory_snapshots")
        })?;
        tx.commit()
            .context(|| format!("committing the directory snapshot of run {run}"))
    }

    /// The directory snapshot saved for `run`; `None` when none was saved.
    pub fn load_directory_snapshot(
        &self,
        run: RunId,
    ) -> Result<Option<DirectorySnapshot>, StoreError> {
        let saved: Option<(Option<bool>, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT r.directory_complete, s.body
                 FROM runs r LEFT JOIN directory_snapshots s ON s.run_id = r.id
                 WHERE r.id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([run], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .context(|| format!("loading the directory snapshot of run {run}"))?;
        let Some((Some(complete), body)) = saved else {
            return Ok(None);
        };
        let mut identities: Vec<Identity> = decode(body, "directory_snapshots", run)?;
        // Stored by a version that did not compose group names as it read them:
        // compared with the configuration's, composed at load, a decomposed `é`
        // would match nothing (see `crate::model::compose_name`).
        for group in identities.iter_mut().flat_map(|i| i.groups.iter_mut()) {
            crate::model::compose_in_place(group);
        }
        Ok(Some(DirectorySnapshot {
            identities,
            complete,
        }))
    }

    /// Saves the workspace snapshot of `run`: accounts, groups and memberships.
    pub fn save_workspace_snapshot(
        &mut self,
        run: RunId,
        snapshot: &WorkspaceSnapshot,
    ) -> Result<(), StoreError> {
        let context = || format!("saving the workspace snapshot of run {run}");
        let memberships: usize = snapshot.groups.iter().map(|g| g.members.len()).sum();
        let body = encode(snapshot, snapshot.accounts.len(), memberships, context)?;
        let tx = self.write_tx(context)?;
        let marked = tx
            .prepare_cached("UPDATE runs SET workspace_saved = 1 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([run]))
            .context(|| format!("marking the workspace snapshot of run {run} in runs"))?;
        if marked == 0 {
            return Err(StoreError::UnknownRun {
                run,
                context: "saving its workspace snapshot",
            });
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO workspace_snapshots (run_id, account_count, group_count, body)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                run,
                count(snapshot.accounts.len()),
                count(snapshot.groups.len()),
                body
            ])
        })
        .context(|| {
            format!("saving the workspace snapshot of run {run} into workspace_snapshots")
        })?;
        tx.commit()
            .context(|| format!("committing the workspace snapshot of run {run}"))
    }

    /// The workspace snapshot saved for `run`; `None` when none was saved.
    pub fn load_workspace_snapshot(
        &self,
        run: RunId,
    ) -> Result<Option<WorkspaceSnapshot>, StoreError> {
        let saved: Option<(bool, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT r.workspace_saved, s.body
                 FROM runs r LEFT JOIN workspace_snapshots s ON s.run_id = r.id
                 WHERE r.id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([run], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .context(|| format!("loading the workspace snapshot of run {run}"))?;
        let Some((true, body)) = saved else {
            return Ok(None);
        };
        decode(body, "workspace_snapshots", run).map(Some)
    }
}
