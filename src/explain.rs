//! `seatwarden explain PERSON`: everything seatwarden knows and would do about one
//! person, in one view (Entra's "provision on demand" view, without the write).
//!
//! PERSON is a directory id, userName or email (case-insensitive), or a workspace
//! account id or userName. With `--live` ([`explain_with`]) the account is also read
//! from the workspace as it is now (one request). The view is built from the newest run that stored both
//! snapshots (it says which and when), the stored links and the action journal; the
//! "next run" section re-plans from those snapshots through policy, plan, guard
//! (with the current 24 h counts) and the settle window, so it reads nothing over
//! the network and writes nothing.
//!
//! Sections: directory record; scope decision and why; the mappings that give the
//! role; the link and how it was matched; the workspace account; the last actions
//! with their outcomes; the deprovision ledger entry; what the next run would do.
//!
//! The view is line-structured, and most of what it shows comes from the
//! directory, the workspace or a provider's answer (names, departments, groups,
//! error messages): every such value goes through [`clean`], so a value holding a
//! line break or a terminal escape cannot forge a line or rewrite the screen.

use std::borrow::Cow;
use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::guard;
use crate::model::{
    Account, AccountRef, ActionKind, DirectorySnapshot, Identity, Link, WorkspaceSnapshot,
};
use crate::plan;
use crate::policy;
use crate::safety;
use crate::store::{RunId, Store, StoreError, StoredLink};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error("no run has stored snapshots yet: run `seatwarden plan` first")]
    NoSnapshots,
    #[error(
        "{0:?} matches no directory identity (id, userName, email) and no workspace account (id, userName) in the snapshots of run {1}"
    )]
    NotFound(String, RunId),
}

/// The person's deprovision ledger episodes (newest first, at most five), one
/// line each: why, detected, due, and how it ended or stands at `now`.
pub fn ledger_lines(
    store: &Store,
    identity_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let Some(identity_id) = identity_id else {
        return Ok(Vec::new());
    };
    let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    Ok(store
        .deprovision_history(identity_id, 5)?
        .iter()
        .map(|e| {
            let mut line = format!(
                "{}: {} — detected {}, due {}",
                e.state(now).as_str(),
                clean(&e.reason.to_string()),
                at(e.detected_at),
                at(e.due_at)
            );
            match e.verified_at {
                Some(v) if e.found_without_access() => line.push_str(&format!(
                    ", found already inactive or gone {} (nothing to do)",
                    at(v)
                )),
                Some(v) => line.push_str(&format!(", verified {}", at(v))),
                None => {}
            }
            if let Some(c) = e.closed_at {
                line.push_str(&format!(", cancelled {} (access came back)", at(c)));
            }
            if let Some(r) = e.returned_at {
                line.push_str(&format!(", access again since {}", at(r)));
            }
            if let Some(h) = &e.held {
                line.push_str(&format!("; held: {}", clean(h)));
            }
            if let Some(err) = &e.last_error {
                line.push_str(&format!(
                    "; last error after {} attempts: {}",
                    e.attempts,
                    clean(err)
                ));
            }
            if let Some(x) = e.escalated_at {
                line.push_str(&format!("; escalated {}", at(x)));
            }
            line
        })
        .collect())
}

fn find_identity<'a>(directory: &'a DirectorySnapshot, person: &str) -> Option<&'a Identity> {
    directory
        .identities
        .iter()
        .find(|i| i.id == person)
        .or_else(|| {
            directory
                .identities
                .iter()
                .find(|i| i.user_name.eq_ignore_ascii_case(person))
        })
        .or_else(|| {
            directory.identities.iter().find(|i| {
                i.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(person))
            })
        })
}

/// One value from the directory, the workspace or a provider, made safe for one
/// line of the view: control characters (line breaks, escapes) and characters
/// that reorder text are replaced, as the digest and `status` do.
fn clean(value: &str) -> Cow<'_, str> {
    crate::report::printable(value, false)
}

/// An optional value [`clean`]ed, or `-`.
fn opt(value: Option<&str>) -> Cow<'_, str> {
    value.map_or(Cow::Borrowed("-"), clean)
}

/// What `explain` reads from the store: the newest snapshots and the links.
struct Loaded {
    run: RunId,
    record: Option<crate::store::RunRecord>,
    directory: DirectorySnapshot,
    workspace: WorkspaceSnapshot,
    links: Vec<StoredLink>,
}

impl Loaded {
    fn load(store: &Store) -> Result<Loaded, ExplainError> {
        let run = store
            .latest_snapshot_run()?
            .ok_or(ExplainError::NoSnapshots)?;
        Ok(Loaded {
            run,
            record: store.run(run)?,
            directory: store
                .load_directory_snapshot(run)?
                .ok_or(ExplainError::NoSnapshots)?,
            workspace: store
                .load_workspace_snapshot(run)?
                .ok_or(ExplainError::NoSnapshots)?,
            links: store.links()?,
        })
    }

    /// The person's identity, stored link and account (by link, else by
    /// externalId or userName; without an identity, by account id or userName).
    fn find(&self, person: &str) -> (Option<&Identity>, Option<&StoredLink>, Option<&Account>) {
        let identity = find_identity(&self.directory, person);
        let link = identity.and_then(|i| self.links.iter().find(|l| l.identity_id == i.id));
        let accounts = &self.workspace.accounts;
        let account = match (link, identity) {
            (Some(link), _) => accounts.iter().find(|a| a.id == link.account_id),
            (None, Some(identity)) => accounts.iter().find(|a| {
                a.external_id.as_deref() == Some(identity.id.as_str())
                    || a.user_name.eq_ignore_ascii_case(&identity.user_name)
            }),
            (None, None) => accounts
                .iter()
                .find(|a| a.id == person || a.user_name.eq_ignore_ascii_case(person)),
        };
        (identity, link, account)
    }
}

/// Which workspace account `explain --live` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveTarget {
    /// The account the snapshot (or link) names.
    Id(String),
    /// No account known: look the directory userName up by filter.
    UserName(String),
}

/// The account as the workspace shows it now (`explain --live`), or why it could
/// not be read.
pub type LiveAccount = Result<Option<Account>, String>;

/// What `--live` should read for `person`; `None` when nothing names an account.
pub fn live_target(store: &Store, person: &str) -> Result<Option<LiveTarget>, ExplainError> {
    let loaded = Loaded::load(store)?;
    Ok(match loaded.find(person) {
        (_, Some(link), None) => Some(LiveTarget::Id(link.account_id.clone())),
        (_, _, Some(account)) => Some(LiveTarget::Id(account.id.clone())),
        (Some(identity), None, None) => Some(LiveTarget::UserName(identity.user_name.clone())),
        (None, _, None) => None,
    })
}

/// Reads the live account for [`explain_with`].
pub async fn read_live(client: &crate::workspace::ScimClient, target: &LiveTarget) -> LiveAccount {
    match target {
        LiveTarget::Id(id) => client.get_account(id).await,
        LiveTarget::UserName(user_name) => client.find_account_by_user_name(user_name).await,
    }
    .map_err(|e| e.to_string())
}

/// The explanation as text, judged at `now` (for the 24 h counts), offline.
pub fn explain(
    config: &Config,
    store: &Store,
    person: &str,
    now: DateTime<Utc>,
) -> Result<String, ExplainError> {
    explain_with(config, store, person, now, None)
}

/// [`explain`] with the account as the workspace shows it now (`--live`).
pub fn explain_with(
    config: &Config,
    store: &Store,
    person: &str,
    now: DateTime<Utc>,
    live: Option<&LiveAccount>,
) -> Result<String, ExplainError> {
    let loaded = Loaded::load(store)?;
    let (identity, link, account) = loaded.find(person);
    if identity.is_none() && account.is_none() {
        return Err(ExplainError::NotFound(person.to_owned(), loaded.run));
    }
    let view = View {
        config,
        store,
        loaded: &loaded,
        identity,
        link,
        account,
        now,
    };
    // Writing to a String cannot fail.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — as of run {}",
        clean(person),
        view.run_described()
    );
    view.directory_record(&mut out);
    view.scope_and_role(&mut out);
    view.link(&mut out);
    view.workspace_account(&mut out)?;
    if let Some(live) = live {
        live_account(&mut out, live);
    }
    view.last_actions(&mut out)?;
    view.ledger(&mut out)?;
    view.next_run(&mut out)?;
    Ok(out)
}

/// One person as the stored snapshots, links and journal show them: each method
/// writes one section of `explain`.
struct View<'a> {
    config: &'a Config,
    store: &'a Store,
    loaded: &'a Loaded,
    identity: Option<&'a Identity>,
    link: Option<&'a StoredLink>,
    account: Option<&'a Account>,
    now: DateTime<Utc>,
}

impl View<'_> {
    /// `42 (reconcile, 2026-11-29 08:00:00Z)`.
    fn run_described(&self) -> String {
        let record = self.loaded.record.as_ref();
        format!(
            "{} ({}, {})",
            self.loaded.run,
            record.map_or("?", |r| r.kind.as_str()),
            record.map_or_else(
                || "?".to_owned(),
                |r| r.started_at.format("%Y-%m-%d %H:%M:%SZ").to_string()
            )
        )
    }

    fn identity_id(&self) -> Option<&str> {
        self.identity.map(|i| i.id.as_str())
    }

    fn account_id(&self) -> Option<&str> {
        self.account.map(|a| a.id.as_str())
    }

    fn directory_record(&self, out: &mut String) {
        let _ = writeln!(out, "\nDirectory record");
        let Some(i) = self.identity else {
            let _ = writeln!(
                out,
                "  not in the directory snapshot (deleted, or never there)"
            );
            return;
        };
        let _ = writeln!(out, "  id:         {}", clean(&i.id));
        let _ = writeln!(out, "  userName:   {}", clean(&i.user_name));
        let _ = writeln!(out, "  email:      {}", opt(i.email.as_deref()));
        let name = [i.given_name.as_deref(), i.family_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  name:       {}",
            if name.is_empty() {
                "-".into()
            } else {
                clean(&name)
            }
        );
        let _ = writeln!(out, "  status:     {}", i.status.as_str());
        let _ = writeln!(out, "  department: {}", opt(i.department.as_deref()));
        let _ = writeln!(out, "  groups:     {}", clean(&i.groups.join(", ")));
    }

    /// Whether the person is in scope and why, and with which role and groups.
    fn scope_and_role(&self, out: &mut String) {
        let (config, directory) = (self.config, &self.loaded.directory);
        let desired = policy::desired_state(directory, &config.policy_settings());
        let _ = writeln!(out, "\nScope");
        let protected = safety::plan_settings(config, directory).protected;
        let is_protected = self
            .identity
            .is_some_and(|i| protected.matches(&i.user_name))
            || self
                .account
                .is_some_and(|a| protected.matches(&a.user_name));
        match self.identity {
            Some(i) => {
                if let Some(want) = desired.active.get(&i.id) {
                    let scope = if config.policy.scope_groups.is_empty() {
                        "every active identity is in scope".to_owned()
                    } else {
                        let via: Vec<&str> = config
                            .policy
                            .scope_groups
                            .iter()
                            .filter(|g| i.groups.iter().any(|m| m.eq_ignore_ascii_case(g)))
                            .map(String::as_str)
                            .collect();
                        format!("member of scope group {}", clean(&via.join(", ")))
                    };
                    let _ = writeln!(out, "  in scope: active, {scope}");
                    let _ = writeln!(out, "\nRole");
                    let _ = writeln!(
                        out,
                        "  desired:    {}",
                        want.spec.role.map_or("(roles not managed)", |r| r.as_str())
                    );
                    for line in want.justification.iter() {
                        let _ = writeln!(out, "  because:    {}", clean(line));
                    }
                    let groups: Vec<&str> = want.groups.iter().map(String::as_str).collect();
                    let _ = writeln!(out, "  workspace groups: {}", listed(&groups));
                } else if let Some(reason) = desired.inactive.get(&i.id) {
                    let _ = writeln!(out, "  no access: {reason}");
                } else {
                    let _ = writeln!(out, "  no access: identity is not in the desired state");
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "  no access: no directory identity justifies this account"
                );
            }
        }
        if is_protected {
            let _ = writeln!(
                out,
                "  protected: yes (safety.protected / protected_groups): seatwarden never touches it"
            );
        }
    }

    fn link(&self, out: &mut String) {
        let _ = writeln!(out, "\nLink");
        match self.link {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "  {} ↔ account {}, matched by {} at {}",
                    clean(&l.identity_id),
                    clean(&l.account_id),
                    l.method.as_str(),
                    l.linked_at.format("%Y-%m-%d %H:%M:%SZ")
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  no stored link{}",
                    if self.account.is_some() {
                        " (the account below is a match candidate, not linked yet)"
                    } else {
                        ""
                    }
                );
            }
        }
    }

    /// The account as the run's workspace snapshot shows it, and when it is
    /// deleted after a retention period.
    fn workspace_account(&self, out: &mut String) -> Result<(), StoreError> {
        let _ = writeln!(
            out,
            "\nWorkspace account (run {} snapshot)",
            self.loaded.run
        );
        let Some(a) = self.account else {
            let _ = writeln!(out, "  none");
            return Ok(());
        };
        let _ = writeln!(out, "  id:         {}", clean(&a.id));
        let _ = writeln!(out, "  userName:   {}", clean(&a.user_name));
        let _ = writeln!(out, "  externalId: {}", opt(a.external_id.as_deref()));
        let _ = writeln!(out, "  active:     {}", a.active);
        let _ = writeln!(out, "  roles:      {}", clean(&a.roles.join(", ")));
        let groups: Vec<&str> = self
            .loaded
            .workspace
            .groups
            .iter()
            .filter(|g| g.members.contains(&a.id))
            .map(|g| g.display_name.as_str())
            .collect();
        let _ = writeln!(out, "  groups:     {}", listed(&groups));
        if let Some(delete_after) = self.config.delete_after()
            && let Some(since) = self.store.deactivated_since()?.get(&a.id)
        {
            let due = chrono::TimeDelta::from_std(delete_after)
                .ok()
                .and_then(|d| since.checked_add_signed(d));
            let _ = writeln!(
                out,
                "  deletion:   seen deactivated since {}; deleted from {} \
                 (deprovision.delete_after)",
                since.format("%Y-%m-%d %H:%M:%SZ"),
                due.map_or("never".to_owned(), |d| d
                    .format("%Y-%m-%d %H:%M:%SZ")
                    .to_string())
            );
        }
        Ok(())
    }

    fn last_actions(&self, out: &mut String) -> Result<(), StoreError> {
        let _ = writeln!(out, "\nLast actions");
        let history = self
            .store
            .actions_about(self.identity_id(), self.account_id(), 10)?;
        if history.is_empty() {
            let _ = writeln!(out, "  none journaled");
        }
        for entry in &history {
            let _ = writeln!(
                out,
                "  run {} #{} {} — {}{} ({})",
                entry.run,
                entry.action.seq,
                entry.action.kind.name(),
                entry.state,
                match (&entry.action.held, &entry.last_error) {
                    (Some(held), _) if entry.state == crate::store::ActionState::Held =>
                        format!(": {}", clean(&held.to_string())),
                    (_, Some(error)) => format!(": {}", clean(error)),
                    _ => String::new(),
                },
                entry.updated_at.format("%Y-%m-%d %H:%M:%SZ")
            );
        }
        Ok(())
    }

    fn ledger(&self, out: &mut String) -> Result<(), StoreError> {
        let _ = writeln!(out, "\nDeprovision ledger");
        let lines = ledger_lines(self.store, self.identity_id(), self.now)?;
        if lines.is_empty() {
            let _ = writeln!(out, "  none: never seen losing access");
        }
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
        Ok(())
    }

    /// The actions about this person that a run now would plan from the stored
    /// snapshots, with what the guard and the settle window would hold.
    fn next_run(&self, out: &mut String) -> Result<(), StoreError> {
        let loaded = self.loaded;
        let _ = writeln!(
            out,
            "\nNext run (re-planned from run {}'s snapshots)",
            loaded.run
        );
        let links: Vec<Link> = loaded
            .links
            .iter()
            .map(|l| Link {
                identity_id: l.identity_id.clone(),
                account_id: l.account_id.clone(),
            })
            .collect();
        let next = next_actions(
            self.config,
            self.store,
            &loaded.directory,
            &loaded.workspace,
            &links,
            self.now,
        )?;
        let (identity_id, account_id) = (self.identity_id(), self.account_id());
        let mine: Vec<String> = next
            .actions
            .iter()
            .filter(|a| {
                (identity_id.is_some() && a.identity_id.as_deref() == identity_id)
                    || a.kind.account_id().is_some_and(|id| Some(id) == account_id)
                    || match &a.kind {
                        ActionKind::RemoveMembers { members, .. } => {
                            account_id.is_some_and(|id| members.iter().any(|m| m == id))
                        }
                        ActionKind::AddMembers { members, .. } => members.iter().any(|m| match m {
                            AccountRef::Existing { id } => Some(id.as_str()) == account_id,
                            AccountRef::Created { identity_id: who } => {
                                Some(who.as_str()) == identity_id
                            }
                        }),
                        _ => false,
                    }
            })
            .map(|a| {
                format!(
                    "  {} — {}{}",
                    a.kind.name(),
                    clean(&a.detail),
                    a.held
                        .as_ref()
                        .map(|h| format!(" [HELD: {}]", clean(&h.to_string())))
                        .unwrap_or_default()
                )
            })
            .collect();
        if mine.is_empty() {
            let _ = writeln!(out, "  nothing");
        } else {
            for line in mine {
                let _ = writeln!(out, "{line}");
            }
        }
        Ok(())
    }
}

/// The account as the workspace shows it now (`--live`).
fn live_account(out: &mut String, live: &LiveAccount) {
    let _ = writeln!(out, "\nWorkspace account now (read live)");
    match live {
        Err(error) => {
            let _ = writeln!(out, "  could not be read: {}", clean(error));
        }
        Ok(None) => {
            let _ = writeln!(out, "  none");
        }
        Ok(Some(a)) => {
            let _ = writeln!(
                out,
                "  {} {} active={} roles={}",
                clean(&a.id),
                clean(&a.user_name),
                a.active,
                clean(&a.roles.join(", "))
            );
        }
    }
}

/// `a, b` ([`clean`]ed), or `-` for none.
fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "-".to_owned()
    } else {
        clean(&names.join(", ")).into_owned()
    }
}

fn next_actions(
    config: &Config,
    store: &Store,
    directory: &DirectorySnapshot,
    workspace: &WorkspaceSnapshot,
    links: &[Link],
    now: DateTime<Utc>,
) -> Result<crate::model::Plan, StoreError> {
    let desired = policy::desired_state(directory, &config.policy_settings());
    let planned = plan::plan(
        &desired,
        directory,
        workspace,
        links,
        &safety::plan_settings_at(config, directory, store, now)?,
    );
    let managed = planned.new_links.len()
        + links
            .iter()
            .filter(|l| workspace.accounts.iter().any(|a| a.id == l.account_id))
            .count();
    let input = safety::guard_input(store, now, directory.complete, managed, false)?;
    let guarded = guard::guard(
        planned,
        workspace,
        &safety::guard_settings(config, &desired),
        &input,
    );
    // The settle window as the next run would see it (read only: nothing recorded).
    let keys: Vec<String> = guarded
        .actions
        .iter()
        .flat_map(guard::settle_keys)
        .collect();
    let first_seen = store.drift_first_seen(&keys)?;
    Ok(guard::hold_dependents(guard::hold_unsettled(
        guarded,
        &first_seen,
        now,
        config.settle(),
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::model::{Action, DriftKind, IdentityStatus, Plan};
    use crate::store::{RunKind, RunStatus};

    /// An LDAP `sn`, a department, a group, a workspace userName and a stored
    /// provider error holding a line break, a carriage return and terminal escapes
    /// stay on their own line of the view: nothing forges a `status:` line.
    #[test]
    fn values_from_the_directory_and_the_workspace_cannot_forge_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.json"), "{\"users\": []}").unwrap();
        let file = dir.path().join("seatwarden.toml");
        std::fs::write(
            &file,
            "[directory]\nkind = \"file\"\npath = \"directory.json\"\n\
             [workspace]\nurl = \"https://example.invalid/scim/v2\"\ntoken = \"t\"\n",
        )
        .unwrap();
        let config = Config::load_with_env(&file, Some(Default::default())).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let forged = "\n  status:     active\r\u{1b}[2J\u{1b}]0;title\u{7}";
        let directory = DirectorySnapshot {
            identities: vec![Identity {
                id: "p1".into(),
                user_name: "ada@example.com".into(),
                email: Some("ada@example.com".into()),
                given_name: Some("Ada".into()),
                family_name: Some(format!("Smith{forged}")),
                display_name: None,
                status: IdentityStatus::Suspended,
                department: Some(format!("R&D{forged}")),
                groups: vec![format!("Engineering{forged}")],
            }],
            complete: true,
        };
        let workspace = WorkspaceSnapshot {
            accounts: vec![Account {
                id: "a1".into(),
                user_name: "ada@example.com".into(),
                external_id: Some(format!("p1{forged}")),
                given_name: None,
                family_name: None,
                display_name: None,
                email: None,
                active: true,
                roles: vec![format!("Viewer{forged}")],
            }],
            groups: vec![],
        };
        let mut store = Store::open(&config.state.path).unwrap();
        let run = store.begin_run(RunKind::Reconcile, t0).unwrap();
        store.save_directory_snapshot(run, &directory).unwrap();
        store.save_workspace_snapshot(run, &workspace).unwrap();
        let plan = Plan {
            actions: vec![Action {
                seq: 0,
                kind: ActionKind::Deactivate {
                    account_id: "a1".into(),
                },
                reason: DriftKind::StaleAccess,
                subject: "ada@example.com".into(),
                identity_id: Some("p1".into()),
                detail: "suspended".into(),
                held: None,
            }],
            ..Plan::default()
        };
        store.save_plan(run, &plan, t0).unwrap();
        store.mark_in_flight(run, 0, t0).unwrap();
        store
            .mark_failed(run, 0, t0, &format!("HTTP 400: bad{forged}"))
            .unwrap();
        store
            .finish_run(run, t0, RunStatus::Succeeded, None)
            .unwrap();
        let live: LiveAccount = Err(format!("HTTP 500{forged}"));

        let text = explain_with(&config, &store, "p1", t0, Some(&live)).unwrap();

        let status_lines: Vec<&str> = text
            .lines()
            .filter(|line| line.trim_start().starts_with("status:"))
            .collect();
        assert_eq!(status_lines, ["  status:     suspended"], "{text}");
        assert!(
            !text.contains(['\u{1b}', '\r', '\u{7}']),
            "control characters reach the terminal: {text:?}"
        );
        for label in [
            "  name:",
            "  department:",
            "  groups:",
            "  externalId:",
            "  roles:",
            "  could not be read:",
        ] {
            assert!(
                text.lines()
                    .any(|line| line.starts_with(label) && line.contains("status:     active")),
                "{label} is not kept on its line: {text}"
            );
        }
        assert!(
            text.lines()
                .any(|line| line.contains("HTTP 400: bad") && line.contains("status:     active")),
            "{text}"
        );
    }
}
