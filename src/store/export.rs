//! Reads for the access-review export: the last journaled change per account (the
//! run it reads is [`Store::latest_snapshot_run`], as `explain`'s).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::codec::Ts;
use super::error::Context;
use super::{Store, StoreError};

impl Store {
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
