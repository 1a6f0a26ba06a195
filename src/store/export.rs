//! Reads for the access-review export: the latest run with both snapshots, and the
//! last journaled change per account.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::codec::Ts;
use super::error::Context;
use super::{RunId, Store, StoreError};

impl Store {
    /// The latest run that saved both a directory and a workspace snapshot, and
    /// whose directory was not refused as a source fault (see
    /// [`Store::latest_snapshot_run`]).
    pub fn latest_run_with_snapshots(&self) -> Result<Option<RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM runs
                 WHERE workspace_saved = 1 AND directory_complete IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM reports WHERE reports.run_id = runs.id
                                   AND reports.json ->> '$.safety.source_fault' IS NOT NULL)
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
            .context(|| "finding the latest run with snapshots in runs".to_owned())
    }

    /// When each account last had an action applied to it (any run).
    pub fn last_applied_change_by_account(
        &self,
    ) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT account_id, max(updated_at) FROM actions
                 WHERE state = 'applied' AND account_id IS NOT NULL
                 GROUP BY account_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, Ts>(1)?.0)))?
                    .collect()
            })
            .context(|| "reading the last change per account from actions".to_owned())
    }
}
