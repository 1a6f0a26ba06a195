//! Directory and workspace snapshots, stored per run. Each save is one
//! `BEGIN IMMEDIATE` transaction with cached prepared statements and no per-row
//! reads; saving again for the same run replaces the earlier snapshot. Loads return
//! exactly what was saved, in the same order.

use rusqlite::{OptionalExtension, params};

use crate::model::{Account, DirectorySnapshot, Identity, WorkspaceGroup, WorkspaceSnapshot};

use super::codec;
use super::error::Context;
use super::{RunId, Store, StoreError};

fn pos(index: usize) -> i64 {
    // A Vec never holds more than isize::MAX elements.
    i64::try_from(index).unwrap_or(i64::MAX)
}

impl Store {
    /// Saves the directory snapshot of `run`: identities, their group memberships and
    /// the `complete` flag (on the run row).
    pub fn save_directory_snapshot(
        &mut self,
        run: RunId,
        snapshot: &DirectorySnapshot,
    ) -> Result<(), StoreError> {
        let tx = self.write_tx(|| format!("saving the directory snapshot of run {run}"))?;
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
        for table in ["directory_memberships", "directory_identities"] {
            tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), [run])
                .context(|| format!("clearing an earlier snapshot of run {run} from {table}"))?;
        }
        {
            let identities_context =
                || format!("saving the directory snapshot of run {run} into directory_identities");
            let memberships_context =
                || format!("saving the directory snapshot of run {run} into directory_memberships");
            let mut insert_identity = tx
                .prepare_cached(
                    "INSERT INTO directory_identities
                       (run_id, pos, id, user_name, email, given_name, family_name,
                        display_name, status, department)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .context(identities_context)?;
            let mut insert_membership = tx
                .prepare_cached(
                    "INSERT INTO directory_memberships
                       (run_id, pos, identity_pos, identity_id, group_name)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .context(memberships_context)?;
            let mut membership_pos = 0_i64;
            for (index, identity) in snapshot.identities.iter().enumerate() {
                insert_identity
                    .execute(params![
                        run,
                        pos(index),
                        identity.id,
                        identity.user_name,
                        identity.email,
                        identity.given_name,
                        identity.family_name,
                        identity.display_name,
                        identity.status.as_str(),
                        identity.department,
                    ])
                    .context(identities_context)?;
                for group in &identity.groups {
                    insert_membership
                        .execute(params![run, membership_pos, pos(index), identity.id, group])
                        .context(memberships_context)?;
                    membership_pos += 1;
                }
            }
        }
        tx.commit()
            .context(|| format!("committing the directory snapshot of run {run}"))
    }

    /// The directory snapshot saved for `run`; `None` when none was saved.
    pub fn load_directory_snapshot(
        &self,
        run: RunId,
    ) -> Result<Option<DirectorySnapshot>, StoreError> {
        let complete: Option<Option<bool>> = self
            .conn
            .prepare_cached("SELECT directory_complete FROM runs WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("reading the directory snapshot flag of run {run} from runs"))?;
        let Some(Some(complete)) = complete else {
            return Ok(None);
        };
        let mut identities: Vec<Identity> = self
            .conn
            .prepare_cached(
                "SELECT id, user_name, email, given_name, family_name, display_name, status,
                        department
                 FROM directory_identities WHERE run_id = ?1 ORDER BY pos",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| {
                    Ok(Identity {
                        id: row.get(0)?,
                        user_name: row.get(1)?,
                        email: row.get(2)?,
                        given_name: row.get(3)?,
                        family_name: row.get(4)?,
                        display_name: row.get(5)?,
                        status: codec::identity_status(row, 6)?,
                        department: row.get(7)?,
                        groups: Vec::new(),
                    })
                })?
                .collect()
            })
            .context(|| {
                format!("loading the directory snapshot of run {run} from directory_identities")
            })?;
        let context =
            || format!("loading the directory snapshot of run {run} from directory_memberships");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT identity_pos, group_name FROM directory_memberships
                 WHERE run_id = ?1 ORDER BY pos",
            )
            .context(context)?;
        let mut rows = stmt.query([run]).context(context)?;
        while let Some(row) = rows.next().context(context)? {
            let identity_pos: i64 = row.get(0).context(context)?;
            let group: String = row.get(1).context(context)?;
            let identity = usize::try_from(identity_pos)
                .ok()
                .and_then(|index| identities.get_mut(index))
                .ok_or_else(|| StoreError::Corrupt {
                    table: "directory_memberships",
                    run,
                    detail: format!(
                        "membership of identity position {identity_pos}, which does not exist"
                    ),
                })?;
            identity.groups.push(group);
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
        let tx = self.write_tx(|| format!("saving the workspace snapshot of run {run}"))?;
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
        for table in [
            "workspace_memberships",
            "workspace_groups",
            "workspace_accounts",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), [run])
                .context(|| format!("clearing an earlier snapshot of run {run} from {table}"))?;
        }
        {
            let accounts_context =
                || format!("saving the workspace snapshot of run {run} into workspace_accounts");
            let groups_context =
                || format!("saving the workspace snapshot of run {run} into workspace_groups");
            let memberships_context =
                || format!("saving the workspace snapshot of run {run} into workspace_memberships");
            let mut insert_account = tx
                .prepare_cached(
                    "INSERT INTO workspace_accounts
                       (run_id, pos, id, user_name, external_id, given_name, family_name,
                        display_name, email, active, roles)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .context(accounts_context)?;
            for (index, account) in snapshot.accounts.iter().enumerate() {
                let roles =
                    serde_json::to_string(&account.roles).map_err(|source| StoreError::Encode {
                        context: accounts_context(),
                        source,
                    })?;
                insert_account
                    .execute(params![
                        run,
                        pos(index),
                        account.id,
                        account.user_name,
                        account.external_id,
                        account.given_name,
                        account.family_name,
                        account.display_name,
                        account.email,
                        account.active,
                        roles,
                    ])
                    .context(accounts_context)?;
            }
            let mut insert_group = tx
                .prepare_cached(
                    "INSERT INTO workspace_groups (run_id, pos, id, display_name)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .context(groups_context)?;
            let mut insert_membership = tx
                .prepare_cached(
                    "INSERT INTO workspace_memberships (run_id, pos, group_pos, group_id, account_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .context(memberships_context)?;
            let mut membership_pos = 0_i64;
            for (index, group) in snapshot.groups.iter().enumerate() {
                insert_group
                    .execute(params![run, pos(index), group.id, group.display_name])
                    .context(groups_context)?;
                for member in &group.members {
                    insert_membership
                        .execute(params![run, membership_pos, pos(index), group.id, member])
                        .context(memberships_context)?;
                    membership_pos += 1;
                }
            }
        }
        tx.commit()
            .context(|| format!("committing the workspace snapshot of run {run}"))
    }

    /// The workspace snapshot saved for `run`; `None` when none was saved.
    pub fn load_workspace_snapshot(
        &self,
        run: RunId,
    ) -> Result<Option<WorkspaceSnapshot>, StoreError> {
        let saved: Option<bool> = self
            .conn
            .prepare_cached("SELECT workspace_saved FROM runs WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([run], |row| row.get(0)).optional())
            .context(|| format!("reading the workspace snapshot flag of run {run} from runs"))?;
        if saved != Some(true) {
            return Ok(None);
        }
        let accounts: Vec<Account> = self
            .conn
            .prepare_cached(
                "SELECT id, user_name, external_id, given_name, family_name, display_name,
                        email, active, roles
                 FROM workspace_accounts WHERE run_id = ?1 ORDER BY pos",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| {
                    Ok(Account {
                        id: row.get(0)?,
                        user_name: row.get(1)?,
                        external_id: row.get(2)?,
                        given_name: row.get(3)?,
                        family_name: row.get(4)?,
                        display_name: row.get(5)?,
                        email: row.get(6)?,
                        active: row.get(7)?,
                        roles: codec::json_col(row, 8)?,
                    })
                })?
                .collect()
            })
            .context(|| {
                format!("loading the workspace snapshot of run {run} from workspace_accounts")
            })?;
        let mut groups: Vec<WorkspaceGroup> = self
            .conn
            .prepare_cached(
                "SELECT id, display_name FROM workspace_groups WHERE run_id = ?1 ORDER BY pos",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |row| {
                    Ok(WorkspaceGroup {
                        id: row.get(0)?,
                        display_name: row.get(1)?,
                        members: Vec::new(),
                    })
                })?
                .collect()
            })
            .context(|| {
                format!("loading the workspace snapshot of run {run} from workspace_groups")
            })?;
        let context =
            || format!("loading the workspace snapshot of run {run} from workspace_memberships");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT group_pos, account_id FROM workspace_memberships
                 WHERE run_id = ?1 ORDER BY pos",
            )
            .context(context)?;
        let mut rows = stmt.query([run]).context(context)?;
        while let Some(row) = rows.next().context(context)? {
            let group_pos: i64 = row.get(0).context(context)?;
            let account_id: String = row.get(1).context(context)?;
            let group = usize::try_from(group_pos)
                .ok()
                .and_then(|index| groups.get_mut(index))
                .ok_or_else(|| StoreError::Corrupt {
                    table: "workspace_memberships",
                    run,
                    detail: format!(
                        "membership of group position {group_pos}, which does not exist"
                    ),
                })?;
            group.members.push(account_id);
        }
        Ok(Some(WorkspaceSnapshot { accounts, groups }))
    }
}
