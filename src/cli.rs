//! Command line: parses arguments, sets up logging, and wires config, store and
//! run together. No reconciliation logic lives here. An error is printed made
//! printable (control characters as U+FFFD), as reports are: it can quote a
//! provider's answer.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::report::{self, Report};
use crate::run::{self, Mode};
use crate::store::{RunId, RunKind, Store, WriterLock};

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success; for `reconcile`, the workspace converged.
    pub const OK: u8 = 0;
    /// An error: bad configuration, unreadable directory or workspace, database;
    /// `check-config --connect`: a connection failed.
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode`: the plan has changes.
    pub const CHANGES: u8 = 2;
    /// Some actions were held by the guard and wait for a human.
    pub const HELD: u8 = 3;
    /// Some actions failed (their errors are in the report), or were kept back
    /// unsent because the writes stopped (the report says why; the next run
    /// plans them again).
    pub const FAILED: u8 = 4;
    /// The directory snapshot was rejected by source sanity (empty, or shrank past
    /// `max_directory_shrink_percent`): nothing was planned.
    pub const SOURCE_FAULT: u8 = 5;
    /// The circuit breaker is open (it opened this run, or was open so nothing was
    /// written); `seatwarden resume` or the cool-down lets writes through again.
    pub const CIRCUIT_OPEN: u8 = 6;
    /// `status`: deprovisions are overdue (past the SLA).
    pub const OVERDUE: u8 = 7;
    /// `reconcile`, `resume` or `approve` stopped by SIGINT (Ctrl-C) before every
    /// write was sent: those sent were finished and recorded, the rest not sent.
    /// `plan` or `reconcile --dry-run` stopped by it before its plan was made:
    /// nothing planned. What a shell reports for a process SIGINT stopped (128 + 2).
    pub const INTERRUPTED: u8 = 130;
    /// The same, stopped by SIGTERM (128 + 15).
    pub const TERMINATED: u8 = 143;
    /// The command line could not be parsed (an unknown flag, a missing argument):
    /// `EX_USAGE` of sysexits.h, so it is not taken for `plan`'s "changes" (2),
    /// which is what clap would answer.
    pub const USAGE: u8 = 64;
    /// Stdout was closed by its reader (`seatwarden plan | head`): what a shell
    /// reports for a process stopped by SIGPIPE (128 + 13).
    pub const STDOUT_CLOSED: u8 = 141;
    /// `reconcile`, `approve`, `reject`, `link`, `unlink`, `resume`: another writer (a
    /// daemon job, another command) still held the state database's writer lock
    /// when `--lock-timeout` ran out; nothing was done. `demo`: another demo is
    /// using its directory. `EX_TEMPFAIL` of sysexits.h: try again later.
    pub const BUSY: u8 = 75;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success; for reconcile: every planned action was applied and verified
  1  error (configuration, directory, workspace or state database); backup: not
     written; check-config --connect: a connection failed or was throttled;
     healthcheck: not healthy; send-mail: messages still wait (a transient failure)
  2  plan --detailed-exitcode: the plan has changes
  3  reconcile (also --dry-run), resume, approve: actions were held by the guard
     (thresholds, incomplete directory, last Owner), or a leaver keeps access
     while their account is disputed (`link` settles it); plan exits 0 or 2
  4  some actions failed, or were not sent because the run's writes stopped (the
     workspace stopped answering or refused the token, or a proxy, firewall or WAF
     in front of it refused a write); see `seatwarden report`.
     send-mail: the mail server refused a message for good
  5  source fault: the directory was empty or shrank too much; nothing was planned
  6  the circuit breaker is open: writes stopped (see `seatwarden resume`)
  7  status: deprovisions are overdue (not verified within deprovision.sla)
 64  the command line could not be parsed
 75  reconcile, approve, reject, link, unlink, resume: another writer (a daemon job,
     another command) still held the state database's writer lock after --lock-timeout
     (default 10m); demo: another demo is using its --dir. Nothing was done, run it
     again later
130  reconcile, resume, approve: stopped by SIGINT (Ctrl-C) before every write was
     sent; those sent were finished and recorded, the rest not sent, and running
     the command again finishes the work (a second Ctrl-C quits at once: the next
     run resolves what that leaves in flight). A signal after the last write was
     sent lets the run finish with its own code. plan, reconcile (--dry-run too),
     resume: stopped by SIGINT while still reading, before the plan was made;
     they wrote nothing, and stored no plan
141  stdout was closed by its reader (e.g. `| head`); reconcile, resume and approve
     keep their own code
143  as 130, stopped by SIGTERM

Every configuration key (but the [[policy.mapping]] and [[safety.exceptions]] tables
and safety.distinct_groups, read from the file only) can be overridden with
SEATWARDEN__SECTION__KEY (two underscores between the levels; lists comma-separated),
e.g. SEATWARDEN__WORKSPACE__TOKEN_FILE=/run/credentials/seatwarden.service/workspace-token.
A relative path, in the file or in a variable, is taken from the configuration
file's folder, not from the working directory.

Typical use:
  seatwarden check-config            validate and print the effective configuration
  seatwarden check-config --connect  and test each connection, read-only
  seatwarden plan                    show what differs and why; writes nothing
  seatwarden reconcile               converge the workspace
  seatwarden report --format json    the latest drift report
  seatwarden approve RUN             apply what the guard held (re-checked first)
  seatwarden explain PERSON          everything about one person, and what comes next
  seatwarden link IDENTITY ACCOUNT   resolve a disputed match: this account is this person's
  seatwarden unlink ACCOUNT          undo a link: the account is matched by the rules again
  seatwarden daemon                  run as a service (schedule, sweep, /metrics)
  seatwarden status                  deprovisions pending and overdue, jobs
  seatwarden report --email          send the latest report to [report.email] now
  seatwarden export access --format csv   who has access, and why";

#[derive(Debug, Parser)]
#[command(
    name = "seatwarden",
    version,
    about = "Keeps a SCIM 2.0 workspace's accounts, roles and groups in line with the directory",
    long_about = "seatwarden reads the whole directory (the source of truth) and the whole SCIM 2.0 \
workspace, computes what the workspace should look like, shows the difference and why, and \
converges it — above all deactivating people who left — with every write journaled in a local \
SQLite database first.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Configuration file (`demo` and `sandbox` read none, and refuse it).
    #[arg(
        long,
        short,
        global = true,
        env = "SEATWARDEN_CONFIG",
        default_value = "seatwarden.toml"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One row per account, for a spreadsheet (RFC 4180; groups one a line of
    /// their cell; times UTC, `YYYY-MM-DD HH:MM:SS`).
    Csv,
    /// The same rows as one JSON document (`run_id`, `snapshot_at`, `applied_through`,
    /// `accounts`), for scripts.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportKind {
    /// Every account, its role and groups, and the identity and mapping behind it.
    Access,
    /// The workspace as the latest run read it, as a seed for `seatwarden sandbox
    /// --seed` (JSON only): rehearse a configuration against a copy of it.
    Workspace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

/// How `seatwarden sandbox` behaves beyond SCIM: its page cap and the faults it
/// injects, to rehearse a configuration against a slow or throttling workspace.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxBehaviour {
    /// `filter.maxResults`: the largest page served (providers cap pages at
    /// different sizes: AWS IAM Identity Center at 100, Slack at 1,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_results: u32,
    /// Refuse `or` in list filters (400 invalidFilter), as eq-only providers such
    /// as AWS IAM Identity Center do; seatwarden then verifies object by object.
    #[arg(long)]
    no_or_filters: bool,
    /// Serve groups as AWS IAM Identity Center does: `"members": []` in every
    /// answer, members found only by `members.value eq` filters (404 for a User
    /// that does not exist); seatwarden then needs
    /// `workspace.group_members = "by_member_filter"`.
    #[arg(long)]
    hide_group_members: bool,
    /// Serve without PATCH, as providers that only replace resources do:
    /// `/ServiceProviderConfig` announces `patch.supported: false` and every PATCH
    /// is answered 501. seatwarden then reads, changes and PUTs resources back
    /// whole (with `If-Match` where ETags are announced).
    #[arg(long)]
    no_patch: bool,
    /// How listings are paged: `index` (startIndex/count), `cursor` (RFC 9865
    /// cursor/count only, startIndex ignored, as AWS IAM Identity Center pages) or
    /// `both` (by cursor when a request asks with `cursor`). Announced in
    /// /ServiceProviderConfig, which seatwarden's `pagination = "auto"` follows.
    #[arg(long, value_enum, default_value_t = SandboxPagingArg::Index, value_name = "METHOD")]
    pagination: SandboxPagingArg,
    /// How long a cursor stays valid; an older one is 400 expiredCursor (RFC 9865).
    /// Without it, cursors never expire.
    #[arg(long, value_name = "SECONDS")]
    cursor_timeout: Option<u64>,
    /// Answer every request this many milliseconds late, like a remote workspace.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Share of requests (0–1) answered 429 Too Many Requests, with Retry-After.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE", value_parser = share)]
    rate_429: f64,
    /// Share of requests (0–1) answered 503 with a SCIM error body.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE", value_parser = share)]
    rate_5xx: f64,
    /// Share of requests (0–1) whose connection is dropped before any answer.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE", value_parser = share)]
    rate_reset: f64,
    /// The Retry-After (seconds) sent with each 429.
    #[arg(long, default_value_t = 1, value_name = "SECONDS")]
    retry_after: u64,
    /// The 429, 503 and dropped-connection shares apply to writes only (POST, PUT,
    /// PATCH, DELETE); reads always work. Latency still applies to every request.
    #[arg(long)]
    faults_on_writes_only: bool,
    /// Seed of the fault draws: the same seed and request order give the same faults.
    #[arg(long, default_value_t = 1)]
    fault_seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxPagingArg {
    Index,
    Cursor,
    Both,
}

impl SandboxBehaviour {
    fn paging(&self) -> crate::sandbox::SandboxPaging {
        use crate::sandbox::SandboxPaging;
        match self.pagination {
            SandboxPagingArg::Index => SandboxPaging::Index,
            SandboxPagingArg::Cursor => SandboxPaging::Cursor,
            SandboxPagingArg::Both => SandboxPaging::Both,
        }
    }

    fn faults(&self) -> crate::sandbox::Faults {
        crate::sandbox::Faults {
            latency: std::time::Duration::from_millis(self.latency_ms),
            rate_429: self.rate_429,
            rate_5xx: self.rate_5xx,
            rate_reset: self.rate_reset,
            retry_after_secs: self.retry_after,
            seed: self.fault_seed,
            writes_only: self.faults_on_writes_only,
            ..crate::sandbox::Faults::default()
        }
    }
}

/// A share of requests: a number from 0 to 1.
fn share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if (0.0..=1.0).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a share of requests from 0 to 1 (e.g. 0.05)"
        )),
    }
}

// Its doc comments are `--help` text, where `[schedule]` names a TOML table, not
// an item to link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, read every file it names (secrets, keys,
    /// certificates, the CA file, a directory export) as the service will, and
    /// print it, secrets redacted. Makes no network request unless --connect.
    #[command(after_help = "\
Prints the effective configuration on stdout (defaults filled in, environment
overrides applied, secrets as [redacted]; [workspace.role_groups] only when role
groups are configured); on stderr, any warnings, every file it uses as it will be
used (relative paths are taken from the configuration file's folder), and the
daemon's next runs in schedule.timezone. Writes nothing.

--connect then tests each connection with the requests a run makes first, cheap
and read-only, one line a side on stderr: the directory (Okta or Entra: a token and
one small page of users, of groups, and of the app's assignments with app_id; LDAP:
bind and a search of one user and one group; SCIM: one page), the workspace
(ServiceProviderConfig, or why a run goes on without it; one page of Users and of
Groups, read as a run reads them) and, with [report.email], the mail relay
(connect, TLS, AUTH, QUIT: no message is sent). Every side is tried,
at once: each request once, within 10 s (or the configured timeout, when shorter),
never retried as the daemon retries, so an unreachable endpoint fails in seconds.
An endpoint answering 429 (or 503 with Retry-After) is THROTTLED: reachable, the
rest not checked. Nothing is written, not even the state database. Run it before
the first `plan`, and after rotating a secret.

Exit codes: 0 the configuration is valid (warnings do not fail it) and, with
--connect, every connection answered; 1 it is not: the error names the key and the
file, or the SEATWARDEN__… variable that set it (and, for one spelt with `_` for
`__`, the variable meant); or, with --connect, a connection failed or was throttled:
its FAILED or THROTTLED line says which request and why.

Examples:
  seatwarden --config /etc/seatwarden/seatwarden.toml check-config
  seatwarden --config /etc/seatwarden/seatwarden.toml check-config --connect
  SEATWARDEN__STATE__PATH=$HOME/seatwarden-trial/state.db seatwarden check-config")]
    CheckConfig {
        /// Also test each connection (directory, workspace, mail relay), read-only.
        #[arg(long)]
        connect: bool,
    },
    /// Read both sides and show what differs and why. Writes nothing to the workspace.
    #[command(after_help = "\
Writes the run to the state database (its directory and workspace snapshots, the plan
and its report: `report --run`, `approve`'s re-check and the digest read them), without
the writer lock: it runs beside the daemon's jobs, and waits up to 5 s for a write of
theirs in progress.

Exit codes: 0 done (with --detailed-exitcode: nothing to do), 2 the plan has changes
(--detailed-exitcode; held actions are changes too, never 3: `reconcile --dry-run`
exits 3 when the guard would hold some), 5 the directory was rejected (source
fault), 1 an error, 130 (143) Ctrl-C (SIGTERM) stopped it before the plan was made:
nothing was planned.

Examples:
  seatwarden plan --format markdown > plan.md
  seatwarden plan --workspace-moved     the provider changed the SCIM base URL: check
                                        the accounts still match before recording it
                                        with `seatwarden reconcile --workspace-moved`")]
    Plan {
        /// How the plan is printed on stdout: text for a terminal, json (the
        /// drift report's JSON) for scripts, markdown for a ticket or a pull
        /// request, html for a page of its own.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Exit 2 when the plan has changes (0 when there is nothing to do).
        #[arg(long)]
        detailed_exitcode: bool,
        /// The workspace this state database belongs to moved to workspace.url:
        /// plan against the new URL with the stored links, holds and ledger, on a
        /// throwaway copy of the state database. Records nothing: the database
        /// stays bound to the old URL until `reconcile --workspace-moved`.
        #[arg(long)]
        workspace_moved: bool,
    },
    /// Converge the workspace: plan, apply (journaled, with retries), verify, report.
    #[command(after_help = "\
Exit codes (first that applies): 5 the directory was rejected, nothing planned; 6 the
circuit breaker is open; 4 some actions failed, or were not sent because the run's writes
stopped (the workspace stopped answering or refused the token, or a proxy, firewall or WAF
in front of it refused a write: stderr says how many, and why); 3 some are held for
`seatwarden approve` (actions that only wait for the settle window do not count), or a
leaver keeps access because which account is theirs is disputed (`seatwarden link`);
0 converged; 1 an error;
130 (143) Ctrl-C (SIGTERM) stopped it before every write was sent: those sent were
finished and recorded, the rest not sent; run it again to finish (a second Ctrl-C quits
at once); 75 another writer (a daemon job, another command) still held the state
database's writer lock after --lock-timeout: nothing was done.

Examples:
  seatwarden reconcile --dry-run
  seatwarden reconcile --accept-directory     after a layoff shrank the directory")]
    Reconcile {
        /// Plan and report, but write nothing to the workspace.
        #[arg(long)]
        dry_run: bool,
        /// How the run's drift report is printed on stdout: text for a
        /// terminal, json for scripts, markdown for a ticket, html for a page of
        /// its own. It is stored either way (`seatwarden report`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Thresholds hold nothing for this one run (every other rule still does).
        /// Recorded in the audit trail with who ran it ($SEATWARDEN_OPERATOR, else
        /// $SUDO_USER, else the OS user).
        #[arg(long)]
        allow_over_threshold: bool,
        /// Accept this run's directory although it shrank more than
        /// safety.max_directory_shrink_percent (a layoff, a narrower scope): it
        /// becomes the new baseline. Never an empty directory. Audited. With
        /// --dry-run: shows the plan made from it, and accepts nothing.
        #[arg(long)]
        accept_directory: bool,
        /// The workspace this state database belongs to moved to workspace.url
        /// (its provider changed the SCIM base URL): record the new URL and go on.
        /// Without it, a state database used with another URL is refused, so a
        /// rehearsal against a sandbox cannot spend production's state. Audited.
        /// With --dry-run (or `plan --workspace-moved`): shows the plan against the
        /// new URL and records nothing.
        #[arg(long)]
        workspace_moved: bool,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Apply the held actions of a run, after re-checking each against the
    /// workspace as it is now (and the directory, for what would take access
    /// away). Audited.
    #[command(after_help = "\
Exit codes: 0 everything approved was applied, 3 some were refused by the re-check,
4 some failed, or were not sent because the writes stopped (the workspace stopped
answering or refused the token; the same `approve` sends them), 6 the circuit breaker
is (or went) open, 1 an error, 130 (143) Ctrl-C (SIGTERM) stopped it before every
write was sent: the same `approve` finishes it, 75 another writer still held the writer
lock after --lock-timeout: nothing was done.

The directory is read before the writer lock is taken (a large one takes minutes, and
the daemon's jobs would wait for them); the workspace, the held actions and the ledger
are read under it. When a reconcile or plan read the directory meanwhile and succeeded,
its newer read decides, and the output says so.

Actions that only wait for the settle window (safety.settle) are never approved,
with or without --only: they stay held, and the first reconcile after the window
applies them. Not to wait: SEATWARDEN__SAFETY__SETTLE=0s seatwarden reconcile.

The audit trail names $SEATWARDEN_OPERATOR, else $SUDO_USER, else the OS user
($USER, $LOGNAME, else the uid's name in /etc/passwd, else `uid N`).

Examples:
  seatwarden approve 42 --only deprovision
  seatwarden approve 42 --only deletion       deletions after the retention period")]
    Approve {
        /// The run id (see `seatwarden report`).
        #[arg(value_parser = decided_run)]
        run: RunId,
        /// Only actions of this kind (deactivate, delete, set_role, remove_members, …)
        /// or class (deprovision, membership_removal, role_downgrade, deletion, rename).
        #[arg(long, value_parser = only_kind)]
        only: Option<crate::approval::Only>,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Drop the held actions of a run: that run never applies them. Audited.
    #[command(after_help = "\
This decides about one run's plan, not about the people in it: while the directory still
asks for a change, the next reconcile plans it again (and the guard judges it again), and
a held deprovision's ledger episode stays open for the retry job. To keep an account,
protect it (safety.protected, safety.protected_groups) or fix the directory.

The audit trail names $SEATWARDEN_OPERATOR, else $SUDO_USER, else the OS user
($USER, $LOGNAME, else the uid's name in /etc/passwd, else `uid N`).

Exit codes: 0 rejected, 1 an error (no such run, a run with nothing held left to
decide on, a `plan` or dry run, which never applies anything), 75 another writer still
held the writer lock after --lock-timeout: nothing was done.

Examples:
  seatwarden reject 42                      drop everything run 42 held
  seatwarden reject 42 --only set_role      only its held role changes")]
    Reject {
        /// The run id (see `seatwarden report`).
        #[arg(value_parser = decided_run)]
        run: RunId,
        /// Only actions of this kind (deactivate, delete, set_role, remove_members, …)
        /// or class (deprovision, membership_removal, role_downgrade, deletion, rename).
        #[arg(long, value_parser = only_kind)]
        only: Option<crate::approval::Only>,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Link directory identity IDENTITY to workspace account ACCOUNT, by hand: how a
    /// disputed match is resolved (a stored link comes first in matching). Both
    /// must be in the newest stored snapshots (`seatwarden explain` shows the ids),
    /// or the identity, deleted since, in a disputed match a reconcile remembers.
    /// Says what the next run does with the other accounts that matched the person:
    /// a leaver's are deactivated with the linked one, an active person's reported.
    /// Audited.
    #[command(after_help = "\
Exit codes: 0 linked, 1 an error (an id in neither stored snapshot, a link either
side already has without --replace, an account the plan matches to someone else
without --replace, a protected account for a person who is not or an unprotected
account for a protected person, no state database),
75 another writer still held the writer lock after --lock-timeout: nothing was done.

Example:
  seatwarden explain emma.novak@example.com     lists the candidate accounts
  seatwarden link 00u1004 ws-0005
  seatwarden link -- -x7f2 ws-0005      an id that starts with - goes after --")]
    Link {
        /// The directory identity id.
        identity: String,
        /// The workspace account (SCIM) id.
        account: String,
        /// Move a link either of them already has to someone else (or take an
        /// account the plan matches to someone else).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Remove the stored link of workspace account ACCOUNT: the undo of `link` (a
    /// link made by hand, or a match a reconcile stored). The next run matches the
    /// account by the rules again (externalId, userName, email); `unlink` says what
    /// that run then does with the account (an orphan, deactivated or reported as
    /// policy.unmatched_accounts says, matched to someone else, or disputed again
    /// among a person's candidates) and with the
    /// person (matched anew, or a new account created), re-planned from the
    /// stored snapshots. An account protected by its own userName stays so.
    /// Audited.
    #[command(after_help = "\
Refused (exit 1, nothing changed) when: the account has no stored link, or no
link names it and it is not in the newest stored snapshot; a rule matches it to
the same person again (the next reconcile would link it anew: change the
attribute that matches first, or `link OWNER ACCOUNT --replace` if it is someone
else's); the person lost access and the next run deprovisions the account (or an
open deprovision names it), which unlinked would stay active (`link OWNER ACCOUNT
--replace` if it is someone else's); no state database.

Exit codes: 0 unlinked, 1 refused or an error, 75 another writer still held the
writer lock after --lock-timeout: nothing was done.

Example, an account left alone for a protected person it does not belong to (the
report's PROTECTED BY PERSON), a contractor's nobody in the directory owns:
  seatwarden explain ws-0007     shows the link and who made it
  seatwarden unlink ws-0007
  seatwarden unlink -- -x7f2     an id that starts with - goes after --")]
    Unlink {
        /// The workspace account (SCIM) id whose link goes.
        account: String,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Close the circuit breaker and run a reconcile to finish the work. Audited.
    #[command(after_help = "\
Exit codes: those of reconcile (0 converged, 3 held for a human, 4 some actions failed
or were not sent because the writes stopped, 5 the directory was rejected, 6 the breaker opened again, 130 or 143 stopped by Ctrl-C or
SIGTERM); with --no-run, 0; 75 another writer still held the writer lock after
--lock-timeout: nothing further was done (stderr says whether the breaker was closed
before the reconcile had to wait).

Example, once the failures `seatwarden report` shows are fixed:
  seatwarden resume")]
    Resume {
        /// Only close the circuit breaker; no reconcile.
        #[arg(long)]
        no_run: bool,
        /// How the reconcile's drift report is printed on stdout: text, json,
        /// markdown or html (as `reconcile --format`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        wait: LockWait,
    },
    /// Everything seatwarden knows and would do about one person: directory record,
    /// scope, role mapping, link, account, last actions, next run.
    #[command(after_help = "\
Reads the newest stored snapshots (nothing is sent unless --live) and writes
nothing.

Exit codes: 0 explained, 1 an error (nobody matches, several people share the
userName or email given, no state database).

Examples:
  seatwarden explain ada@example.com
  seatwarden explain 00u1004 --live")]
    Explain {
        /// A directory id, userName or email, or a workspace account id or userName.
        person: String,
        /// Also read the person's workspace account as it is now (one request). A
        /// failed read is shown in its place, with what to check for a refused token
        /// or a workspace out of reach.
        #[arg(long)]
        live: bool,
    },
    /// Run the whole job on an embedded example: a sandbox workspace with realistic
    /// drift, 50 people; plan, apply, verify, report, plan again. Exit 0 only if the
    /// workspace converged.
    #[command(after_help = "\
Needs no configuration and nothing installed: it writes its own configuration,
state database and sandbox seeds to --dir and prints the commands to run next.

Exit codes: 0 the workspace converged and the second plan is empty; 4 or above
(the reconcile's own code) when it did not; 75 another demo is using --dir
(nothing was done); 1 an error.

Examples:
  seatwarden demo
  seatwarden demo --dir /tmp/seatwarden-demo
  seatwarden --config seatwarden-demo/seatwarden.toml report")]
    Demo {
        /// Where the demo keeps its state database and files (printed). Each demo
        /// replaces them; a directory the demo did not make must be new or empty,
        /// and one another demo is using is refused until it ends.
        #[arg(long, default_value = "seatwarden-demo")]
        dir: PathBuf,
    },
    /// Serve an in-process SCIM 2.0 sandbox workspace, to rehearse a configuration
    /// against a copy of a workspace. Runs until interrupted (Ctrl-C, SIGTERM).
    #[command(after_help = "\
Serves on 127.0.0.1 only, keeps everything in memory (the seed file is only
read) and prints its URL and token on stderr.

Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 an error (the port is taken, the
seed is refused).

Examples:
  seatwarden sandbox --seed seatwarden-demo/workspace.json --port 8089 --token demo-token
  seatwarden sandbox --latency-ms 80 --rate-429 0.05 --retry-after 2")]
    Sandbox {
        /// Seed: JSON `{"users": [SCIM Users], "groups": [SCIM Groups]}` (other keys,
        /// or neither, are refused); an empty workspace if absent.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Loopback port (0 picks a free one; the URL is printed).
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// Bearer token clients must send. Without one, a random token is made and
        /// printed with the URL (a fixed default would let any local process, or a web
        /// page, read a sandbox seeded with a copy of a real workspace). Surrounding
        /// spaces and newlines are ignored. `--help` names the variable, not its value.
        #[arg(long, env = "SEATWARDEN_SANDBOX_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        behaviour: SandboxBehaviour,
    },
    /// Run as a service: reconcile and deprovisioning sweeps on the [schedule],
    /// the same-day deprovisioning ledger, and an HTTP listener ([http] listen) with
    /// /healthz, /readyz, /metrics, /status and, with a trigger token, POST /reconcile.
    /// Notifies systemd (Type=notify, watchdog). SIGHUP reloads the configuration;
    /// SIGTERM lets running work finish (at most 30 s) and exits 0.
    #[command(after_help = "\
Exit codes: 0 stopped by SIGTERM or SIGINT; 1 it could not start (an invalid
configuration or credential, the state database, the listener's address taken,
or another daemon already running on the same state database).

Observe first: with `[schedule] dry_run = true` (or SEATWARDEN__SCHEDULE__DRY_RUN=true)
every reconcile it runs is a dry run and no sweep runs: the drift is reported and
mailed, nothing is written, nobody who leaves is deactivated. Set it to false and
reload (SIGHUP) to enforce.

Example (systemd/seatwarden.service runs it so):
  seatwarden --config /etc/seatwarden/seatwarden.toml --log-format json daemon")]
    Daemon,
    /// Deprovisions pending and overdue (due times in [report] timezone), recent
    /// verified ones with their latency, each daemon job's last run and, while a
    /// daemon runs, its next, the circuit breaker when not closed, the
    /// exceptions of safety.exceptions with the time left, and the last
    /// reconcile's actions by state. Reads the state database; exit 7 when any
    /// deprovision is overdue.
    #[command(after_help = "\
Exit codes: 0 nothing is overdue, 7 some deprovisions are overdue, 1 an error (no
state database at state.path).

Examples:
  seatwarden status
  seatwarden status --format json")]
    Status {
        /// How the status is printed on stdout: text for a terminal, json (the
        /// daemon's /status document) for scripts and monitoring.
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Exit 0 if the daemon's /healthz answers 200, else 1 (for container
    /// HEALTHCHECKs; needs no curl). Never validates the configuration: the
    /// daemon runs on the one it loaded, whatever the file on disk says now.
    #[command(after_help = "\
The address checked is the first of: --listen; SEATWARDEN__HTTP__LISTEN (the
variable the daemon itself reads, so a container's environment answers for both);
[http] listen read alone from the configuration file (the rest of the file is not
looked at, so an edit breaking another key does not fail the check); the default
127.0.0.1:9464. A wildcard address (0.0.0.0, [::]) is reached on loopback.

Exit codes: 0 healthy, 1 not (no answer, or not 200).

Examples:
  seatwarden healthcheck                          as the Dockerfile's HEALTHCHECK runs it
  seatwarden healthcheck --listen 127.0.0.1:9464")]
    Healthcheck {
        /// The daemon's listen address, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Print a stored drift report.
    #[command(after_help = "\
Reads the state database only; nothing is sent to the workspace or the directory.

Exit codes: 0 printed (or, with --email, sent), 1 an error (no such run, a run
without a report, no state database; with --email, no [report.email] or a message
not sent yet, which `seatwarden send-mail` retries).

Examples:
  seatwarden report --format json
  seatwarden report --run 42 --format markdown > run-42.md")]
    Report {
        /// `latest` (the newest run that has a report) or a run id.
        #[arg(long, default_value = "latest", value_parser = report_run)]
        run: ReportRun,
        /// How the report is printed on stdout: text for a terminal, json for
        /// scripts, markdown for a ticket, html for a page of its own (with
        /// --email, the message carries text and html either way).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Send the report now to `[report.email]` (through the outbox) instead of printing it.
        #[arg(long)]
        email: bool,
    },
    /// Print (or email) the digest of a period: state, runs and actions, current
    /// drift with the people concerned, held actions, trend.
    #[command(after_help = "\
Reads the state database only, waiting for no writer; with --email it writes the digest
to the outbox and marks it sent there.

Exit codes: 0 printed (or, with --email, sent), 1 an error (no state database;
with --email, no [report.email] or a message not sent yet).

Examples:
  seatwarden digest --period 7d
  seatwarden digest --format html > digest.html")]
    Digest {
        /// The period ending now, e.g. `24h`, `7d`.
        #[arg(long, default_value = "24h", value_parser = period)]
        period: std::time::Duration,
        /// How the digest is printed on stdout: text for a terminal, json for
        /// scripts, markdown for a ticket, html for a page of its own.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Send the digest now to `[report.email]` (through the outbox).
        #[arg(long)]
        email: bool,
    },
    /// The audit trail: every decision a person made through seatwarden (approve,
    /// reject, link, unlink, resume, reconcile --accept-directory, --allow-over-threshold,
    /// --workspace-moved), who made it and when, oldest first. Reads the state
    /// database; the trail is never pruned.
    #[command(after_help = "\
Who: $SEATWARDEN_OPERATOR, else $SUDO_USER, else the OS user, followed by the
account the command ran as when that differs (`alice (as seatwarden)`). Times on
report.timezone's clock; with --format json, one JSON object per line (id, at in
UTC, user, command, run, detail), for a log shipper or a SIEM: remember the last
id read and ask for what came after it with --after.

Exit codes: 0 listed (none is still 0), 1 an error (no state database).

Examples:
  seatwarden audit --period 7d
  seatwarden audit --run 42
  seatwarden audit --format json --after 118 >> seatwarden-audit.jsonl")]
    Audit {
        /// Only the decisions of the period ending now, e.g. `24h`, `7d`.
        #[arg(long, value_parser = period)]
        period: Option<std::time::Duration>,
        /// Only the decisions about run RUN (approve, reject, --accept-directory,
        /// --allow-over-threshold name their run; link, unlink and resume name none).
        #[arg(long, value_name = "RUN")]
        run: Option<i64>,
        /// Only the entries with an id above ID.
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
        /// text for a terminal, json for scripts (JSON Lines).
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Export for an access review, or a copy of the workspace to rehearse against,
    /// from the latest stored snapshots (nothing is read from the directory or the
    /// workspace).
    #[command(after_help = "\
`access`: one row per account with its role, groups, the directory identity behind
it and the justification: the mappings that grant the access, why it is due to be
removed (`…: access due to be removed`) or already gone (`…: account deactivated (no
access)`), or, for an account linked to nobody, `protected`, `disputed: …` (`seatwarden
link` settles it) or `orphaned`. It is the newest stored snapshots with the writes
applied since laid over them (approvals, the daemon's sweep): `snapshot_at` and
`applied_through` say as of when, and `since_snapshot` what seatwarden did to the
account since (`deleted|deactivated|reactivated|created TIME UTC (run N)`). In the
CSV, times are UTC to the second, `2026-12-04 09:30:00` (a form spreadsheets read as
a date), and each of an account's groups is a line of its `workspace_groups` cell
(a `;` is part of a name; a name's backslash is written `\\`, its line break `\n`);
the JSON keeps times whole (RFC 3339, `Z`) and groups as a list. stderr says which
run and how long ago, on report.timezone's clock. Run `seatwarden plan` first for a
fresh view.

--output FILE writes the export to FILE instead of stdout: owner-only (0600),
written beside it and renamed, so FILE is never half-written and a failure leaves
nothing under its name; an existing FILE is replaced only with --force (never the
state database, nor a folder: FILE names the file, unlike backup's DEST); a FILE
that is a symbolic link is refused (nothing is written through a link: give the
file's own path). The temporary files exports to FILE killed a day ago or more left
(.FILE.export-PID) are removed first. Written to stdout instead, a file that others may read is made
private before anything is written. On a terminal, a character in a value that would
act on it (an escape, a carriage return, a bidi override) is shown as U+FFFD, and
stderr says how many; a file or a pipe gets every value exact.

Exit codes: 0 written, 1 an error (no stored snapshot yet: run `seatwarden plan`
first; no state database; the output could not be written; FILE exists without
--force, is the state database, or a symbolic link).

Example, the access review:
  seatwarden export access --output access-review.csv
  seatwarden export access --bom --output access-review.csv --force   # for Excel
  seatwarden export access --format json | jq .

A rehearsal against a copy of the workspace, nothing of it written:
  seatwarden export workspace > workspace.json
  seatwarden sandbox --seed workspace.json --port 8089 --token rehearsal
then, with a copy of the configuration whose [workspace] has url =
\"http://127.0.0.1:8089/scim/v2\", role_attribute = \"roles\" and a token_file
holding `rehearsal`, and a state.path of its own (a rehearsal must not write the
service's state): `seatwarden --config rehearsal.toml plan`.")]
    Export {
        /// What to export.
        #[arg(value_enum)]
        kind: ExportKind,
        /// How the export is written: `access` is CSV unless told, `workspace`
        /// is always JSON.
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
        /// Write the export to FILE (owner-only, whole or not at all) instead of
        /// stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace FILE if it exists (never the state database itself).
        #[arg(long, requires = "output")]
        force: bool,
        /// Begin the CSV with a UTF-8 byte order mark, for Excel: without one it
        /// reads a CSV in the machine's legacy code page, and what is not ASCII
        /// (each justification's →, accented userNames and groups) comes out garbled. Other CSV readers may take the mark for part
        /// of the first column's name, so it is off unless asked for. CSV only.
        #[arg(long)]
        bom: bool,
    },
    /// Copy the state database to DEST, consistently, while the daemon runs: links,
    /// journal, audit trail, held actions, the leavers' ledger, the breaker and the
    /// outbox, which neither the directory nor the workspace can give back.
    #[command(after_help = "\
The copy is one SQLite file, owner-only (0600) from its first byte, checked before
it is kept (it opens, passes integrity_check, has the state database's schema
version); it is written beside DEST and renamed, so DEST is never half-written.
A DEST that is a folder gets a new file named by the time, UTC:
seatwarden-state-YYYYMMDDTHHMMSSZ.db; one written with a trailing / is created
(0700) if missing. A DEST that is a symbolic link is refused (nothing is
written through a link: give the file's own path). The temporary copies backups killed while they wrote left for the same name
(.NAME.backup-PID…) are removed once a day old. DEST must be a UTF-8 path
(SQLite takes the name as text). Prints the file written and its size. Writes
nothing to the state database and does not wait for a running job.

Restore: stop the daemon, replace state.path with the copy, remove the stale -wal
and -shm beside it, run `seatwarden status` (README, \"Backing up and restoring
the state\").

Exit codes: 0 written, 1 an error (DEST exists without --force, a link to no file,
a path that is not UTF-8, no state database or not a seatwarden one, a copy that
failed its check: nothing is left under DEST).

Examples:
  seatwarden backup /var/backups/seatwarden/
  seatwarden backup /var/backups/seatwarden/state.db --force")]
    Backup {
        /// The backup file, or a folder to write a new one into (`backups/`).
        dest: PathBuf,
        /// Replace DEST if it exists (never the state database itself).
        #[arg(long)]
        force: bool,
    },
    /// Send every message waiting in the outbox now, those waiting for their next
    /// attempt too (retrying transient failures).
    #[command(after_help = "\
Writes only the outbox in the state database (each message's attempt, sent or failed
mark), without the writer lock: it runs beside the daemon's jobs.

Every pending message is tried now, whatever its backoff says (not one another
sender is sending); an alert's reminders and resolution still go after it.

Exit codes: 0 nothing left to send, 1 messages still wait (a transient failure: run it
again later) or an error (no [report.email] section, no state database),
4 the mail server refused a message for good (fix [report.email]).

Example (the daemon's mail job does the same every minute):
  seatwarden send-mail")]
    SendMail,
}

pub fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let cli = match parsed {
        Ok((cli, matches)) => {
            if matches.value_source("config") == Some(ValueSource::CommandLine)
                && let Some(refusal) = ignores_config(&cli.command)
            {
                eprintln!("error: {refusal}");
                return ExitCode::from(exit::USAGE);
            }
            cli
        }
        Err(error) => {
            // --help and --version go to stdout and succeed; anything else is a
            // usage error on stderr.
            let code = if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    // The demo narrates on stdout; its run logs would only interleave on stderr.
    let quiet = matches!(cli.command, Command::Demo { .. });
    let json = matches!(cli.log_format, LogFormat::Json);
    crate::logging::init(json, cli.verbose, quiet);
    match run_command(cli) {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout went away (`seatwarden plan | head`): end quietly,
        // with the status a shell reports for a process its SIGPIPE stopped.
        Err(error) if crate::is_closed_stdout(error.as_ref()) => {
            ExitCode::from(exit::STDOUT_CLOSED)
        }
        Err(error) => {
            // In the log stream too, where a collector or journald looks for it.
            if json && tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %describe(&error), "seatwarden failed");
            } else if crate::logging::stderr_is_journal() {
                let line = crate::logging::error_for_journal(&describe(&error));
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &line);
            } else {
                eprintln!("error: {}", describe(&error));
            }
            let demo_busy = matches!(
                error.downcast_ref::<crate::demo::DemoError>(),
                Some(crate::demo::DemoError::Busy { .. })
            );
            if demo_busy || error.downcast_ref::<WriterLockBusy>().is_some() {
                ExitCode::from(exit::BUSY)
            } else {
                ExitCode::from(exit::ERROR)
            }
        }
    }
}

/// Why `command` refuses a `--config` given on its command line: `demo` and
/// `sandbox` never read one, and one given by hand is someone expecting their
/// configuration to be used. `SEATWARDEN_CONFIG` set in the environment for the
/// other commands is left alone.
fn ignores_config(command: &Command) -> Option<String> {
    match command {
        Command::Demo { dir } => Some(format!(
            "`demo` runs its own embedded example and does not read --config; it writes \
             the configuration it used to {}, for `seatwarden --config {} report` (or \
             status, explain) afterwards. To rehearse your own configuration, serve \
             a copy of your workspace with `seatwarden sandbox --seed FILE` and point \
             workspace.url at the URL it prints",
            dir.join("seatwarden.toml").display(),
            dir.join("seatwarden.toml").display(),
        )),
        Command::Sandbox { .. } => Some(
            "`sandbox` serves a workspace and does not read --config: its seed, port and \
             token are its own flags (`seatwarden sandbox --help`). Run your configuration \
             against it from another shell, with workspace.url set to the URL it prints"
                .to_owned(),
        ),
        _ => None,
    }
}

/// The error and its causes, each said once: layer errors already quote their
/// cause in their own message, so a cause whose text is already there is skipped.
/// Made [`printable`](crate::report::printable) (line breaks kept): the text quotes
/// providers' answers (a SCIM `detail`, an Okta or Graph error), and an escape
/// sequence in one must not drive the terminal.
fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    crate::report::printable(&out, true).into_owned()
}

/// `error` with what to do when SQLite refused the state database at `state`
/// for a reason of the file or its disk ([`crate::store::failure_hint`]): a
/// full disk, a read-only file, a damaged one, a lock another process holds.
/// "database or disk is full" alone names neither the file nor the way out.
/// Its commands are spelled with `admin_command` (`report.admin_command`).
fn with_state_hint(error: anyhow::Error, state: &Path, admin_command: &str) -> anyhow::Error {
    match crate::store::failure_hint_of(error.as_ref(), state, admin_command) {
        Some(hint) => {
            let said = describe(&error);
            error.context(format!("{said}; {hint}"))
        }
        None => error,
    }
}

/// `check-config`'s lines about the `[[safety.exceptions]]`: whose account each
/// keeps, until when (and how long that is from now) and why; an ended one is
/// marked (and warned about above).
fn exceptions_text(config: &Config, now: chrono::DateTime<chrono::Utc>) {
    let Ok(exceptions) = config.exceptions() else {
        return;
    };
    if exceptions.is_empty() {
        return;
    }
    let tz = config.report_timezone().unwrap_or(chrono_tz::UTC);
    eprintln!("the exceptions it makes (safety.exceptions):");
    for exception in &exceptions {
        let when = if exception.until <= now {
            "ENDED ".to_owned()
        } else {
            String::new()
        };
        let left = exception.until - now;
        let left = if left <= chrono::TimeDelta::zero() {
            String::new()
        } else {
            format!(" (in {})", crate::report::time_left(left))
        };
        eprintln!(
            "  {when}{} kept until {}{left}: {}",
            crate::report::printable_field(&exception.user_name),
            crate::report::local_minute(exception.until, tz),
            crate::report::printable_field(&exception.reason)
        );
    }
}

/// `check-config`'s lines about the certificate files (when each runs out,
/// [`crate::certificate`]); whether the certificate credential has expired, which
/// Entra refuses. An expired CA in a `ca_file` is marked but fails nothing:
/// rustls does not check a trusted CA's dates, so the servers it issued may still
/// be reached until their own certificates run out.
fn certificates_text(config: &Config, now: chrono::DateTime<chrono::Utc>) -> bool {
    let certificates = crate::certificate::of_config(config);
    if certificates.is_empty() {
        return false;
    }
    let tz = config.report_timezone().unwrap_or(chrono_tz::UTC);
    eprintln!("the certificates it names:");
    let mut expired = false;
    for certificate in &certificates {
        match certificate {
            Ok(expiry) => {
                let mark = match expiry.standing(now) {
                    crate::certificate::Standing::Valid => "",
                    crate::certificate::Standing::RunningOut => "RUNS OUT SOON ",
                    crate::certificate::Standing::Expired => {
                        expired |= expiry.key == crate::certificate::CREDENTIAL_KEY;
                        "EXPIRED "
                    }
                };
                eprintln!("  {mark}{}", expiry.describe(now, tz));
            }
            // Checked where it is used, which names the key and the file.
            Err((key, error)) => eprintln!("  {key}: {error}"),
        }
    }
    expired
}

/// `check-config --connect`: one line a side on stderr ([`crate::connect`]);
/// exit 1 when any failed or was throttled, after every side was tried.
fn check_connections(config: &Config) -> anyhow::Result<u8> {
    eprintln!(
        "connections (read-only; nothing is written or sent; {}):",
        crate::connect::attempts(config)
    );
    let checks = runtime()?.block_on(crate::connect::check(config));
    for check in &checks {
        eprintln!("  {}", check.line());
        for warning in &check.warnings {
            eprintln!("    warning: {}", crate::report::printable_field(warning));
        }
        for note in &check.notes {
            eprintln!("    note: {}", crate::report::printable_field(note));
        }
    }
    Ok(match checks.iter().all(crate::connect::Check::passed) {
        true => {
            eprintln!("connections OK");
            exit::OK
        }
        false => {
            eprintln!(
                "some connections failed or were throttled: see the lines marked FAILED \
                 or THROTTLED"
            );
            exit::ERROR
        }
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_command(cli: Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Demo { dir } => return demo(dir),
        Command::Sandbox {
            seed,
            port,
            token,
            behaviour,
        } => {
            return serve_sandbox(seed.as_deref(), *port, token.as_deref(), behaviour);
        }
        // Before the configuration is loaded: see `healthcheck_address`.
        Command::Healthcheck { listen } => {
            return Ok(match healthcheck_address(*listen, &cli.config) {
                Ok(listen) => healthcheck(listen),
                Err(message) => {
                    eprintln!("unhealthy: {message}");
                    exit::ERROR
                }
            });
        }
        _ => {}
    }
    let config = Config::load(&cli.config)?;
    let check_config = matches!(cli.command, Command::CheckConfig { .. });
    for warning in config.warnings() {
        if check_config {
            eprintln!("warning: {warning}");
        } else {
            tracing::warn!("{warning}");
        }
    }
    // A backup's failures are its copy's as much as the database's.
    let state = (!matches!(cli.command, Command::Backup { .. })).then(|| config.state.path.clone());
    let admin_command = config.admin_command();
    let result = run_loaded(cli, config);
    match state {
        Some(state) => result.map_err(|error| with_state_hint(error, &state, &admin_command)),
        None => result,
    }
}

/// The command, with its configuration loaded.
fn run_loaded(cli: Cli, config: Config) -> anyhow::Result<u8> {
    match cli.command {
        Command::Demo { .. } | Command::Sandbox { .. } | Command::Healthcheck { .. } => {
            Ok(exit::OK)
        }
        Command::Daemon => {
            let clock = std::sync::Arc::new(crate::schedule::SystemClock);
            let runtime = runtime()?;
            let ran = runtime.block_on(crate::daemon::run(cli.config.clone(), config, clock));
            // Dropped, the runtime would wait for blocking work without end.
            runtime.shutdown_timeout(crate::daemon::BLOCKING_STOP_GRACE);
            ran?;
            Ok(exit::OK)
        }
        Command::Status { format } => {
            let store = open_existing_store(&config)?;
            let tz = config.report_timezone()?;
            // Next runs by the schedule in the file, which a running daemon
            // loaded unless the file changed since without a reload.
            let schedule = config.daemon_settings().ok();
            let status = crate::daemon::status::collect(
                &store,
                chrono::Utc::now(),
                crate::daemon::status::Settings::of(&config, tz, schedule.as_ref()),
            )?;
            match format {
                StatusFormat::Json => outln!(
                    "{}",
                    report::json_for_terminal(serde_json::to_string_pretty(&status)?)
                )?,
                StatusFormat::Text => out!(
                    "{}",
                    report::printable(&crate::daemon::status::render_text(&status), true)
                )?,
            }
            Ok(if status.deprovisions.overdue > 0 {
                exit::OVERDUE
            } else {
                exit::OK
            })
        }
        Command::Backup { dest, force } => {
            ensure_store_exists(&config)?;
            // Every error names the database or the backup file.
            let written = crate::store::backup(&config.state.path, &dest, force)?;
            outln!(
                "backed up {} to {} ({} bytes, schema version {})",
                config.state.path.display(),
                written.path.display(),
                written.bytes,
                written.schema_version
            )?;
            Ok(exit::OK)
        }
        Command::CheckConfig { connect } => {
            config.check_files()?;
            out!("{}", config.to_redacted_toml())?;
            // A relative path from a variable is taken from the file's folder too,
            // which surprises: each path is shown as it will be used.
            eprintln!(
                "the files it uses (relative paths, in the file or a variable, are taken \
                 from {}):",
                config.base_dir().display()
            );
            for (key, file) in config.files() {
                let origin = config.origin_of(key);
                let from = match origin == config.source {
                    true => String::new(),
                    false => format!(" (from {})", origin.display()),
                };
                eprintln!("  {key:<28} {}{from}", file.display());
            }
            // The first fires, to check a cron expression and its zone against what
            // was meant: "0 8 * * 1-5" in the wrong zone fires hours off.
            if let Ok(settings) = config.daemon_settings() {
                let now = chrono::Utc::now();
                eprintln!("the daemon's schedule ({}):", settings.timezone);
                for (name, schedule) in [
                    (crate::daemon::RECONCILE, Some(&settings.reconcile)),
                    (crate::daemon::SWEEP, Some(&settings.sweep)),
                    (crate::daemon::DIGEST, settings.digest.as_ref()),
                ] {
                    if settings.dry_run && name == crate::daemon::SWEEP {
                        eprintln!(
                            "  {name:<10} {:<16} off: schedule.dry_run (nobody who leaves is \
                             deactivated)",
                            schedule.map_or("", |s| s.pattern())
                        );
                        continue;
                    }
                    let Some(schedule) = schedule else {
                        let pattern = config.schedule.digest.trim();
                        if name == crate::daemon::DIGEST && !pattern.is_empty() {
                            // Not scheduled: nowhere to send it.
                            eprintln!(
                                "  {name:<10} {pattern:<16} off: no [report.email] to send it to"
                            );
                        } else {
                            eprintln!("  {name:<10} off");
                        }
                        continue;
                    };
                    let mut at = now;
                    let mut fires = Vec::new();
                    for _ in 0..2 {
                        let Some(next) =
                            crate::schedule::next_fire(schedule, settings.timezone, at)
                        else {
                            break;
                        };
                        let layout = format!("%a %Y-%m-%d {}", schedule.time_of_day_format());
                        fires.push(crate::model::clock_time(next, settings.timezone, &layout));
                        at = next;
                    }
                    let dry = if settings.dry_run && name == crate::daemon::RECONCILE {
                        " (dry runs: schedule.dry_run, nothing is written)"
                    } else {
                        ""
                    };
                    eprintln!(
                        "  {name:<10} {:<16} next {}{dry}",
                        schedule.pattern(),
                        fires.join(", then ")
                    );
                }
            }
            exceptions_text(&config, chrono::Utc::now());
            let credential_expired = certificates_text(&config, chrono::Utc::now());
            if credential_expired {
                eprintln!(
                    "configuration loads, but its certificate credential has expired, which \
                     Entra refuses: see the line marked EXPIRED: {}",
                    config.source.display()
                );
            } else {
                eprintln!("configuration OK: {}", config.source.display());
            }
            let connected = match connect {
                true => check_connections(&config)?,
                false => exit::OK,
            };
            Ok(if credential_expired {
                exit::ERROR
            } else {
                connected
            })
        }
        Command::Plan {
            format,
            detailed_exitcode,
            workspace_moved,
        } => {
            let options = run::RunOptions {
                workspace_moved,
                ..run::RunOptions::default()
            };
            let outcome = match preview(&config, Mode::Plan, options)? {
                Preview::Finished(outcome) => *outcome,
                Preview::Stopped(code) => return Ok(code),
            };
            print_report(&outcome.report, format, &config)?;
            // A rejected directory planned nothing: "no changes" would tell a
            // drift check that a broken source is in sync.
            Ok(if outcome.report.safety.source_fault.is_some() {
                exit::SOURCE_FAULT
            } else if detailed_exitcode && !outcome.plan.is_empty() {
                exit::CHANGES
            } else {
                exit::OK
            })
        }
        Command::Reconcile {
            dry_run,
            format,
            allow_over_threshold,
            accept_directory,
            workspace_moved,
            wait,
        } => {
            let options = run::RunOptions {
                allow_over_threshold,
                accept_directory,
                workspace_moved,
                ..run::RunOptions::default()
            };
            if !dry_run {
                return reconcile(&config, options, format, wait);
            }
            let outcome = match preview(&config, Mode::DryRun, options)? {
                Preview::Finished(outcome) => *outcome,
                Preview::Stopped(code) => return Ok(code),
            };
            after_writes(print_report(&outcome.report, format, &config))?;
            Ok(exit_with_hint(&config, Mode::DryRun, &outcome))
        }
        Command::Approve { run, only, wait } => approve(&config, run, only, wait),
        Command::Reject { run, only, wait } => {
            let only = only.unwrap_or(crate::approval::Only::All);
            // It rewrites the run's stored report, as approve does: one at a time.
            ensure_store_exists(&config)?;
            let _writer = writer_lock(&config, "reject", wait)?;
            let mut store = open_store(&config)?;
            let rejection = crate::approval::reject(
                &mut store,
                run,
                &only,
                &config.admin_command(),
                config.report_timezone()?,
                chrono::Utc::now(),
            )?;
            outln!("{rejection}")?;
            Ok(exit::OK)
        }
        Command::Link {
            identity,
            account,
            replace,
            wait,
        } => {
            ensure_store_exists(&config)?;
            let _writer = writer_lock(&config, "link", wait)?;
            let mut store = open_store(&config)?;
            let replaced = crate::approval::link_checked(
                &config,
                &mut store,
                &identity,
                &account,
                replace,
                chrono::Utc::now(),
            )?;
            // Ids as the providers gave them: made printable, as every report's are.
            let shown = crate::report::printable_field;
            outln!(
                "identity {} is linked to account {}",
                shown(&identity),
                shown(&account)
            )?;
            for old in replaced {
                outln!(
                    "  replaced: identity {} ↔ account {}",
                    shown(&old.identity_id),
                    shown(&old.account_id)
                )?;
            }
            let others = crate::explain::other_candidates(
                &config,
                &store,
                &identity,
                &account,
                chrono::Utc::now(),
            )?;
            if !others.is_empty() {
                outln!("other accounts that matched this person:")?;
            }
            for other in others {
                outln!("  - {other}")?;
            }
            Ok(exit::OK)
        }
        Command::Unlink { account, wait } => {
            ensure_store_exists(&config)?;
            let _writer = writer_lock(&config, "unlink", wait)?;
            let mut store = open_store(&config)?;
            let unlinked =
                crate::approval::unlink(&config, &mut store, &account, chrono::Utc::now())?;
            let shown = crate::report::printable_field;
            outln!(
                "account {} is no longer linked to identity {}",
                shown(&account),
                shown(&unlinked.link.identity_id)
            )?;
            outln!("the next run:")?;
            outln!("  - account {}: {}", shown(&account), unlinked.account)?;
            outln!("  - {}", unlinked.person)?;
            Ok(exit::OK)
        }
        Command::Resume {
            no_run,
            format,
            wait,
        } => {
            // A job writing now records its breaker when it ends, over this.
            let writer = writer_lock(&config, "resume", wait)?;
            let mut store = open_store(&config)?;
            let was_open = crate::approval::resume(&mut store, chrono::Utc::now())?;
            eprintln!(
                "circuit breaker {}",
                if was_open {
                    "closed"
                } else {
                    "was already closed"
                }
            );
            drop(store);
            // The reconcile takes it again: a second flock in this process would wait.
            drop(writer);
            if no_run {
                return Ok(exit::OK);
            }
            reconcile(&config, run::RunOptions::default(), format, wait)
        }
        Command::Explain { person, live } => {
            use crate::explain;
            let store = open_existing_store(&config)?;
            let live = match (
                live,
                explain::live_target(&store, &config, &person, chrono::Utc::now())?,
            ) {
                (true, Some(target)) => {
                    let client = crate::workspace::ScimClient::new(config.scim_settings()?)?;
                    Some(runtime()?.block_on(explain::read_live(&client, &target)))
                }
                _ => None,
            };
            let text =
                explain::explain_with(&config, &store, &person, chrono::Utc::now(), live.as_ref())?;
            out!("{}", report::printable(&text, true))?;
            Ok(exit::OK)
        }
        Command::Digest {
            period,
            format,
            email,
        } => digest(&config, period, format, email),
        Command::Audit {
            period,
            run,
            after,
            format,
        } => audit_trail(&config, period, run, after, format),
        Command::Export {
            kind,
            format,
            output,
            force,
            bom,
        } => export(&config, kind, format, bom, output.as_deref(), force),
        Command::SendMail => send_mail(&config),
        Command::Report { run, format, email } => {
            let store = open_existing_store(&config)?;
            let run_id = match run {
                ReportRun::Latest => latest_reported_run(&store)?,
                ReportRun::Id(run) => run,
            };
            let Some(json) = store.report(run_id)? else {
                anyhow::bail!(why_no_report(&config, &store, run_id)?);
            };
            let report = Report::from_json(&json)
                .with_context(|| format!("the stored report of run {run_id} cannot be read"))?;
            if email {
                return email_report(&config, store, &report);
            }
            print_report(&report, format, &config)?;
            Ok(exit::OK)
        }
    }
}

/// `seatwarden audit`: the audit rows asked for, as text or JSON Lines.
fn audit_trail(
    config: &Config,
    period: Option<std::time::Duration>,
    run: Option<RunId>,
    after: Option<i64>,
    format: StatusFormat,
) -> anyhow::Result<u8> {
    let store = open_existing_store(config)?;
    let tz = config.report_timezone()?;
    let since = period.map(|period| {
        chrono::Duration::from_std(period)
            .ok()
            .and_then(|period| chrono::Utc::now().checked_sub_signed(period))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    });
    let rows = store.audit_trail(crate::store::AuditFilter {
        after_id: after,
        since,
        run,
    })?;
    match format {
        StatusFormat::Json => out!(
            "{}",
            report::json_for_terminal(report::audit::render_json_lines(&rows)?)
        )?,
        StatusFormat::Text => {
            let mut scope = Vec::new();
            if let Some(since) = since {
                scope.push(format!("since {}", report::local_time(since, tz)));
            }
            if let Some(run) = run {
                // A mistyped run id must not read as a run nobody decided about
                // (the trail outlives pruned runs, so only when nothing is listed).
                let unknown = rows.is_empty() && store.run_and_whether_cut_off(run)?.is_none();
                scope.push(if unknown {
                    format!("about run {run} (no run {run} is recorded: check the id)")
                } else {
                    format!("about run {run}")
                });
            }
            if let Some(after) = after {
                scope.push(format!("after #{after}"));
            }
            out!(
                "{}",
                report::audit::render_text(&rows, tz, &scope.join(", "))
            )?
        }
    }
    Ok(exit::OK)
}

/// What `report --run` says of a run without a report. A run that failed before
/// its report (unreadable directory or workspace) still says why; one recorded as
/// running is told from a cut-off one as `status` tells it; a sweep, which stores
/// no report, says what it wrote from its journal.
fn why_no_report(config: &Config, store: &Store, run_id: RunId) -> anyhow::Result<String> {
    use crate::store::RunStatus;
    let Some((run, cut_off)) = store.run_and_whether_cut_off(run_id)? else {
        return Ok(format!("there is no run {run_id}"));
    };
    let tz = config.report_timezone()?;
    let at = |time: chrono::DateTime<chrono::Utc>| report::local_time(time, tz);
    let started = at(run.started_at);
    let ended = at(run.finished_at.unwrap_or(run.started_at));
    let sweep = run.kind == RunKind::Sweep;
    let state = match (run.status, &run.error) {
        (RunStatus::Running, _) if cut_off => {
            format!("was cut off: the process stopped before it finished (started {started})")
        }
        // Closed by the next writer, as `status` tells it: "failed at" gave the
        // time it was closed as the time it stopped.
        _ if run.closed_as_interrupted() => format!(
            "was interrupted: the process stopped before it finished (started {started}; \
             closed at {ended})"
        ),
        (RunStatus::Running, _) if sweep => format!("is still running (started {started})"),
        (RunStatus::Running, _) if run.kind == RunKind::Reconcile => {
            format!("is still running (started {started}): its report is stored when it finishes")
        }
        (RunStatus::Running, _) => format!(
            "has no report yet: still running, or cut off before it finished (started {started})"
        ),
        (status, Some(error)) => format!("{status} at {ended}: {error}"),
        (status, None) if sweep => format!("{status} at {ended}"),
        (status, None) => format!("has no report ({status})"),
    };
    let mut why = format!("run {run_id} ({}) {state}", run.kind);
    if (cut_off || run.closed_as_interrupted()) && !sweep {
        why.push_str("; it has no report");
    }
    // `export`, `explain` and `approve` send the operator here for why its
    // directory was refused: the run's report would say, and it stored none.
    if let Some(refused) = store.directory_refused_why(run_id)? {
        why.push_str("; the source check refused its directory: ");
        why.push_str(&refused);
    } else if store.directory_refused(run_id)? {
        // Refused by a build before migration 20, which kept the flag only:
        // its log line is all that says why.
        why.push_str(
            "; the source check refused its directory (why is not recorded: the seatwarden \
             that refused it did not keep it; its log says why, at \"directory snapshot \
             rejected\")",
        );
    }
    // A reconcile killed mid-apply (resolved since by the next writer's recovery,
    // or not yet), or failed after writing, has no report, but its journal says
    // what reached the workspace and what it holds: the questions a person asks
    // after a crash.
    if run.kind == RunKind::Reconcile && (run.status != RunStatus::Running || cut_off) {
        // As `status` counts them: an approved row a rejection took back before
        // it was sent is rejected, not "planned, not sent" nor kept back. A row
        // still held is told by what releases it (`held_rows`), rejected or not.
        let released_then_rejected: Vec<_> = store
            .rejected_unsent(run_id)?
            .into_iter()
            .filter(|(state, _)| *state != crate::store::ActionState::Held)
            .collect();
        let by_state = crate::daemon::status::rejected_apart(
            crate::apply::journal_outcomes(store, run_id)?,
            &released_then_rejected,
        );
        if !by_state.is_empty() {
            why.push_str(". ");
            why.push_str(&sweep_writes(
                &by_state,
                crate::approval::held_rows(store, run_id)?,
                &config.admin_command(),
                run_id,
            ));
        }
    }
    if sweep {
        why.push_str("; a sweep stores no report. ");
        why.push_str(&sweep_writes(
            &store.journal_state_counts(run_id, &crate::apply::NOT_SENT)?,
            crate::approval::held_rows(store, run_id)?,
            &config.admin_command(),
            run_id,
        ));
    }
    Ok(why)
}

/// What a run that stored no report (a sweep, a reconcile cut off) wrote, from
/// its journal's rows by state; its held rows by what releases them (`held`):
/// only those awaiting a decision are a human's (what an incomplete directory
/// read held, `approve` refuses; a settle-window wait, the next reconcile sends).
fn sweep_writes(
    by_state: &std::collections::BTreeMap<String, usize>,
    held: crate::approval::HeldRows,
    admin: &str,
    run_id: RunId,
) -> String {
    use crate::store::ActionState;
    let count = |state: ActionState| by_state.get(state.as_str()).copied().unwrap_or(0);
    let state_parts = |states: &[(ActionState, &str)]| -> Vec<String> {
        states
            .iter()
            .filter(|(state, _)| count(*state) > 0)
            .map(|(state, what)| format!("{} {what}", count(*state)))
            .collect()
    };
    let held_parts = [
        (held.awaiting_decision, "held for a human".to_owned()),
        (
            held.incomplete_directory,
            "held because the directory read was incomplete (nothing to approve)".to_owned(),
        ),
        (
            held.settle_window,
            "waiting for the settle window".to_owned(),
        ),
        (
            held.decided,
            "held and rejected (never sent from this run)".to_owned(),
        ),
        (
            held.refused,
            format!(
                "held that `{admin} approve {run_id}` refused (nothing to approve: the next run \
                 decides; `{admin} explain PERSON` says why)"
            ),
        ),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"));
    let parts: Vec<String> = state_parts(&[
        (ActionState::Applied, "applied"),
        (ActionState::Failed, "failed"),
    ])
    .into_iter()
    .chain(held_parts)
    .chain(
        by_state
            .get("rejected")
            .filter(|n| **n > 0)
            .map(|n| format!("{n} approved, then rejected before they were sent")),
    )
    .chain(state_parts(&[
        (ActionState::InFlight, "in flight"),
        (ActionState::Planned, "planned, not sent"),
    ]))
    .chain(
        by_state
            .get("not_sent")
            .filter(|n| **n > 0)
            .map(|n| format!("{n} kept back unsent (a stop, the circuit breaker, the workspace down or its token refused)")),
    )
    .chain(
        by_state
            .get("cut_off")
            .filter(|n| **n > 0)
            .map(|n| format!("{n} cut off before the workspace took them (the next run plans them again)")),
    )
    .collect();
    if parts.is_empty() {
        return "It wrote nothing.".to_owned();
    }
    let mut writes = format!("Its writes: {}.", parts.join(", "));
    if held.awaiting_decision > 0 {
        writes.push_str(&format!(
            " Review with `{admin} explain PERSON`, then `{admin} approve {run_id}` \
             (or `{admin} reject {run_id}`)."
        ));
    }
    if held.incomplete_directory > 0 {
        writes.push_str(&format!(
            " What the incomplete directory read held, no approval sends (someone only \
             missing from it looks gone): `{admin} reconcile` again once the directory \
             reads whole."
        ));
    }
    writes
}

/// The run `report` shows without `--run`: the newest that has a report. A newer
/// run still going, failed or cut off has none, and a cron job reading "the latest
/// report" must not fail while a reconcile runs: stderr says which run is shown
/// and why not the newer one. With no report at all, the newest run (whose lack
/// of one the caller explains).
fn latest_reported_run(store: &Store) -> anyhow::Result<RunId> {
    let newest = store
        .latest_run(&[RunKind::Plan, RunKind::DryRun, RunKind::Reconcile])?
        .context("no runs recorded yet in the state database")?;
    let Some((reported, _)) = store.latest_report()? else {
        return Ok(newest.id);
    };
    if newest.id > reported {
        let (newest, cut_off) = store
            .run_and_whether_cut_off(newest.id)?
            .unwrap_or((newest, false));
        let why = match (newest.status, &newest.error) {
            _ if newest.closed_as_interrupted() => {
                "was interrupted: the process stopped before it finished".to_owned()
            }
            (crate::store::RunStatus::Failed, Some(error)) => format!("failed: {error}"),
            (crate::store::RunStatus::Stopped, Some(error)) => format!("was stopped: {error}"),
            (crate::store::RunStatus::Running, _) if cut_off => {
                "was cut off: the process stopped before it finished".to_owned()
            }
            (crate::store::RunStatus::Running, _) if newest.kind == RunKind::Reconcile => {
                "is still running".to_owned()
            }
            (crate::store::RunStatus::Running, _) => {
                "has no report yet (still running, or cut off before it finished)".to_owned()
            }
            (status, _) => format!("has no report ({status})"),
        };
        eprintln!(
            "showing run {reported}, the newest with a report; run {} ({}) {}",
            newest.id,
            newest.kind,
            report::printable(&why, false)
        );
    }
    Ok(reported)
}

/// Where the daemon listens, found without loading the configuration: a broken
/// edit of the file (which a reload refuses, keeping the running configuration)
/// must not mark a healthy daemon unhealthy (an orchestrator may restart it). The
/// environment is the daemon's own (a container's HEALTHCHECK runs with it); the
/// file is read for `[http] listen` alone, however broken the rest is. Only a
/// listen address given but unusable is an error (the daemon refuses it too).
fn healthcheck_address(
    flag: Option<std::net::SocketAddr>,
    config: &std::path::Path,
) -> Result<std::net::SocketAddr, String> {
    if let Some(listen) = flag {
        return Ok(listen);
    }
    // Matched as the configuration matches it: prefix exact, key in any case.
    let from_env = std::env::vars_os().find_map(|(name, value)| {
        let name = name.into_string().ok()?;
        let key = name.strip_prefix("SEATWARDEN__")?;
        key.eq_ignore_ascii_case("HTTP__LISTEN")
            .then(|| (name.clone(), value))
    });
    if let Some((name, value)) = from_env {
        let text = value.to_string_lossy();
        return text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not an address like 127.0.0.1:9464"));
    }
    let (listen, origin) = match std::fs::read_to_string(config) {
        Ok(text) => match listen_in_file(&text) {
            Some(listen) => (listen, format!("[http] listen in {}", config.display())),
            None => (
                crate::config::HttpConfig::default().listen,
                "the default".to_owned(),
            ),
        },
        Err(e) => {
            eprintln!(
                "note: cannot read {} ({e}); checking the default [http] listen",
                config.display()
            );
            (
                crate::config::HttpConfig::default().listen,
                "the default".to_owned(),
            )
        }
    };
    listen
        .trim()
        .parse()
        .map_err(|_| format!("{origin} {listen:?} is not an address like 127.0.0.1:9464"))
}

/// `[http] listen` from a configuration file's text: parsed as TOML, or, when the
/// file does not parse, taken from its `[http]` table line by line.
fn listen_in_file(text: &str) -> Option<String> {
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        return table
            .get("http")?
            .get("listen")?
            .as_str()
            .map(str::to_owned);
    }
    let mut in_http = false;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            in_http = header.split(']').next().map(str::trim) == Some("http");
        } else if in_http
            && let Some(value) = line
                .strip_prefix("listen")
                .and_then(|rest| rest.trim_start().strip_prefix('='))
        {
            let value = value.trim();
            let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            return value.get(1..)?.split(quote).next().map(str::to_owned);
        }
    }
    None
}

/// GET /healthz over a plain TCP connection (std only: the container image has no
/// curl). A wildcard listen address is reached on the loopback of its family.
fn healthcheck(listen: std::net::SocketAddr) -> u8 {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, listen.port());
    let timeout = std::time::Duration::from_secs(3);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.take(4096).read_to_string(&mut response)?;
        Ok(response)
    })();
    match answer {
        Ok(response) if response.starts_with("HTTP/1.1 200") => exit::OK,
        Ok(response) => {
            let status = response.lines().next().unwrap_or("no answer");
            eprintln!("unhealthy: http://{addr}/healthz answered {status:?}");
            exit::ERROR
        }
        // A read or write timeout surfaces as WouldBlock on Unix ("Resource
        // temporarily unavailable"), which says nothing of a daemon that hangs.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            eprintln!(
                "unhealthy: http://{addr}/healthz gave no answer within {} s",
                timeout.as_secs()
            );
            exit::ERROR
        }
        Err(e) => {
            eprintln!("unhealthy: http://{addr}/healthz: {e}");
            exit::ERROR
        }
    }
}

fn mail_settings(config: &Config) -> anyhow::Result<crate::mail::MailSettings> {
    config.mail_settings()?.with_context(|| {
        format!(
            "{}: no [report.email] section: add smtp_url, from and to to send email",
            config.source.display()
        )
    })
}

/// Delivers everything due after `id` was queued, so an earlier message that
/// failed goes out first. Exit 1 when `id` is not sent, saying which command
/// (spelled with `admin_command`) to run next.
fn send_queued(
    settings: &crate::mail::MailSettings,
    store: Store,
    id: crate::store::OutboxId,
    now: chrono::DateTime<chrono::Utc>,
    admin_command: &str,
) -> anyhow::Result<u8> {
    let (store, _) = deliver(settings, store, now)?;
    let entry = store.outbox()?.into_iter().find(|e| e.id == id);
    match entry {
        Some(entry) if entry.state == crate::store::OutboxState::Sent => {
            eprintln!("sent: {}", entry.message.subject);
            Ok(exit::OK)
        }
        Some(entry) if entry.state == crate::store::OutboxState::Failed => anyhow::bail!(
            "the mail server refused the message for good ({}); it is not retried: fix \
             [report.email] (`{admin_command} check-config`), then send it again",
            entry.last_error.as_deref().unwrap_or("no answer recorded")
        ),
        _ => anyhow::bail!(
            "the message is queued in the outbox (id {id}) but was not sent yet; \
             `{admin_command} send-mail` retries"
        ),
    }
}

fn deliver(
    settings: &crate::mail::MailSettings,
    mut store: Store,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(Store, crate::mail::Delivery)> {
    let mailer = crate::mail::Mailer::new(settings)?;
    let delivery = runtime()?.block_on(crate::mail::deliver_due(
        &mut store,
        &mailer,
        settings.retry,
        now,
    ))?;
    if let Some(error) = &delivery.last_error {
        eprintln!(
            "mail: {} sent, {} to retry, {} refused; last error: {error}",
            delivery.sent, delivery.retrying, delivery.failed
        );
    }
    Ok((store, delivery))
}

fn email_report(config: &Config, mut store: Store, report: &Report) -> anyhow::Result<u8> {
    let settings = mail_settings(config)?;
    let now = chrono::Utc::now();
    let id = crate::mail::queue_report(
        &mut store,
        &settings,
        &config.report_name(),
        report,
        config.report_timezone()?,
        &config.admin_command(),
        now,
    )?;
    send_queued(&settings, store, id, now, &config.admin_command())
}

fn digest(
    config: &Config,
    period: std::time::Duration,
    format: Format,
    email: bool,
) -> anyhow::Result<u8> {
    let mut store = open_existing_store(config)?;
    let deprovisions = crate::daemon::notify::digest_deprovisions(&store)?;
    let digest = report::digest::build_from_store(
        &store,
        &config.report_name(),
        config.report_timezone()?,
        chrono::Utc::now(),
        period,
        &deprovisions,
        &config.admin_command(),
    )?
    .with_certificates(
        &crate::certificate::of_config(config)
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        chrono::Utc::now(),
    )
    .with_exceptions(&config.exceptions()?, chrono::Utc::now());
    // The daemon's digest under `schedule.dry_run` says so: so does this one.
    let digest = if config.schedule.dry_run {
        digest.in_dry_run()
    } else {
        digest
    };
    if email {
        let settings = mail_settings(config)?;
        let now = chrono::Utc::now();
        let id = crate::mail::queue_digest(&mut store, &settings, &digest, now)?;
        return send_queued(&settings, store, id, now, &config.admin_command());
    }
    match format {
        Format::Text => out!("{}", report::printable(&digest.render_text(), true))?,
        Format::Json => outln!("{}", report::json_for_terminal(digest.to_json()))?,
        Format::Markdown => out!("{}", digest.render_markdown()?)?,
        Format::Html => out!("{}", digest.render_html()?)?,
    }
    Ok(exit::OK)
}

fn export(
    config: &Config,
    kind: ExportKind,
    format: Option<ExportFormat>,
    bom: bool,
    output: Option<&Path>,
    force: bool,
) -> anyhow::Result<u8> {
    if kind == ExportKind::Workspace && format == Some(ExportFormat::Csv) {
        anyhow::bail!(
            "`export workspace` writes a sandbox seed, which is JSON: leave out --format csv"
        );
    }
    if bom && (kind == ExportKind::Workspace || format == Some(ExportFormat::Json)) {
        anyhow::bail!(
            "--bom begins a CSV for Excel; JSON takes none (RFC 8259 forbids one): leave out --bom"
        );
    }
    let store = open_existing_store(config)?;
    if output.is_none()
        && let Some(note) = keep_stdout_file_from_others()
    {
        eprintln!("{note}");
    }
    let tz = config.report_timezone()?;
    let text = match kind {
        ExportKind::Access => {
            let export = crate::export::access(&store, config)?;
            // Said on stderr as the seed's is: a review written to a file from an
            // old snapshot (a daemon stopped for days) reads as current otherwise.
            let now = chrono::Utc::now();
            eprintln!(
                "access as run {} read it at {} ({} ago){}",
                export.run_id,
                report::local_time(export.snapshot_at, tz),
                crate::sla::latency_text(now - export.snapshot_at),
                export.applied_through.map_or_else(
                    || ", nothing applied since".to_owned(),
                    |at| format!(
                        ", with the writes applied since, through {}",
                        report::local_time(at, tz)
                    )
                )
            );
            match format.unwrap_or(ExportFormat::Csv) {
                ExportFormat::Csv => {
                    let mark = if bom { "\u{FEFF}" } else { "" };
                    format!("{mark}{}", export.to_csv()?)
                }
                ExportFormat::Json => {
                    format!("{}\n", report::json_for_terminal(export.to_json()))
                }
            }
        }
        ExportKind::Workspace => {
            let export = crate::export::workspace_seed(&store, config)?;
            eprintln!(
                "the workspace as run {} read it at {}, before that run's writes",
                export.run_id,
                report::local_time(export.snapshot_at, tz)
            );
            format!(
                "{}\n",
                report::json_for_terminal(serde_json::to_string_pretty(&export.seed)?)
            )
        }
    };
    let name = match kind {
        ExportKind::Access => "access",
        ExportKind::Workspace => "workspace",
    };
    let Some(output) = output else {
        // Read there, not kept: an ESC or a carriage return in a name someone
        // gave an account would drive the reader's terminal. A file or a pipe
        // gets every value exact.
        let text = if std::io::stdout().is_terminal() {
            let (shown, replaced) = shown_on_terminal(&text);
            if replaced > 0 {
                eprintln!(
                    "{} that would act on this terminal (an escape, a carriage return, a \
                     bidi override) {} shown as U+FFFD (\u{fffd}); written to a file \
                     (--output) or a pipe, the export keeps every value exact",
                    report::plural(replaced, "character", "characters"),
                    if replaced == 1 { "is" } else { "are" }
                );
            }
            shown
        } else {
            text
        };
        // A full disk or a closed file: said as the export's, not as a bare OS
        // error that could be the state database's. A reader gone (`| head`)
        // stays quiet.
        out!("{text}").with_context(|| {
            format!("writing the {name} export to stdout (what was written is incomplete)")
        })?;
        return Ok(exit::OK);
    };
    let what = match kind {
        ExportKind::Access => "the access export",
        ExportKind::Workspace => "the workspace export",
    };
    let file = crate::store::outfile::Kind {
        what,
        mark: ".export-",
        leftovers: "files of earlier exports",
        beside: &[],
    };
    // Every error names the file; nothing is left under its name.
    crate::store::outfile::write(output, text.as_bytes(), force, &config.state.path, file)?;
    eprintln!(
        "{what} is written to {} ({} bytes, owner-only)",
        output.display(),
        text.len()
    );
    Ok(exit::OK)
}

/// `text` as an export shows it on a terminal: what [`crate::model::acts_on_terminal`]
/// (line breaks and tabs aside, the CSV's own) as U+FFFD, and how many were.
fn shown_on_terminal(text: &str) -> (String, usize) {
    let replaced = text
        .chars()
        .filter(|&c| crate::model::acts_on_terminal(c) && c != '\n' && c != '\t')
        .count();
    (report::printable(text, true).into_owned(), replaced)
}

/// An export holds every account's personal data (names, addresses, roles and
/// groups), and `export access > review.csv` from a shell (umask 022) makes a file
/// every user of the machine can read. When stdout is a regular file that others
/// (not the owner, not its group) can read or write, their access is taken away
/// before anything is written, as the state database is made private on open; a
/// group the file is shared with keeps it. What was done, or could not be, is
/// returned to be said on stderr. A pipe or a terminal is left as it is.
#[cfg(unix)]
fn keep_stdout_file_from_others() -> Option<String> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().ok()?);
    let metadata = stdout.metadata().ok().filter(std::fs::Metadata::is_file)?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o007 == 0 {
        return None;
    }
    let private = mode & !0o007;
    Some(
        match stdout.set_permissions(std::fs::Permissions::from_mode(private)) {
            Ok(()) => format!(
                "the export holds personal data: the file it is written to was open to every \
                 user of this machine (mode {mode:04o}), and is now mode {private:04o}"
            ),
            Err(e) => format!(
                "warning: the export holds personal data, and the file it is written to is \
                 open to every user of this machine (mode {mode:04o}), which cannot be \
                 changed ({e}): chmod o-rwx it"
            ),
        },
    )
}

#[cfg(not(unix))]
fn keep_stdout_file_from_others() -> Option<String> {
    None
}

fn send_mail(config: &Config) -> anyhow::Result<u8> {
    let settings = mail_settings(config)?;
    let mut store = open_existing_store(config)?;
    let now = chrono::Utc::now();
    // The operator's flush, once the relay is fixed: every pending message now,
    // not when its backoff ends (up to an hour). Not one another sender holds.
    store.release_waiting(now)?;
    // One delivery call takes a bounded number; a flush sends them all, until
    // one is kept for later (the relay fails again) or nothing is left.
    let mut failed = 0;
    let store = loop {
        let (next, delivery) = deliver(&settings, store, now)?;
        failed += delivery.failed;
        if delivery.retrying > 0 || delivery.sent + delivery.failed == 0 {
            break next;
        }
        store = next;
    };
    if failed > 0 {
        eprintln!(
            "{} refused for good by the mail server (kept as failed, not retried): fix \
             [report.email]",
            crate::report::plural(failed, "message was", "messages were")
        );
        return Ok(exit::FAILED);
    }
    let outbox = store.outbox()?;
    let waiting: Vec<_> = outbox
        .iter()
        .filter(|e| e.state == crate::store::OutboxState::Pending)
        .collect();
    let Some(next) = waiting.iter().min_by_key(|e| (e.next_attempt_at, e.id)) else {
        return Ok(exit::OK);
    };
    let waiting = report::plural(waiting.len(), "message is", "messages are");
    let when = if next.next_attempt_at > now {
        format!(
            "the next attempt is due at {}",
            report::local_time(next.next_attempt_at, config.report_timezone()?)
        )
    } else {
        // Due, yet not sent by this call: the relay refused the session before its
        // turn, more were due than one call sends, or an older message of its
        // thread is still waiting and goes first.
        "some are due now but this call did not send them".to_owned()
    };
    let why = next
        .last_error
        .as_deref()
        .map(|e| format!(" (its last error: {e})"))
        .unwrap_or_default();
    anyhow::bail!(
        "{waiting} still waiting in the outbox: {when}{why}; the daemon's mail job sends \
         them when due, or run `send-mail` again then"
    )
}

fn demo(dir: &std::path::Path) -> anyhow::Result<u8> {
    let colour = std::io::stdout().is_terminal();
    let outcome = runtime()?.block_on(crate::demo::run(dir, colour))?;
    outln!()?;
    if outcome.converged() {
        outln!(
            "Converged: {} actions applied and verified; the second plan is empty.",
            outcome.reconcile.summary.actions_applied
        )?;
    } else {
        outln!("Not converged: see the report above.")?;
    }
    out!("{}", crate::demo::closing_text(&outcome))?;
    Ok(if outcome.converged() {
        exit::OK
    } else {
        exit_code_for(&outcome.reconcile).max(exit::FAILED)
    })
}

fn serve_sandbox(
    seed: Option<&std::path::Path>,
    port: u16,
    token: Option<&str>,
    behaviour: &SandboxBehaviour,
) -> anyhow::Result<u8> {
    use crate::sandbox::{Sandbox, SandboxOptions};
    let faults = behaviour.faults();
    let (token, token_note) = match token {
        // Trimmed, as a token read from a file is (a quoted " T ", or a value with
        // its newline from an env file or `printf '%s\n'`): the sandbox trims the
        // bearer token each client sends, so surrounding spaces could never match.
        Some(token) if token.trim().is_empty() => anyhow::bail!(
            "--token (or SEATWARDEN_SANDBOX_TOKEN) is empty: give the bearer token clients \
             must send, or leave it out for a random one"
        ),
        // Not echoed: it may be a real secret from the environment.
        Some(token) => (
            token.trim().to_owned(),
            "bearer token from --token or SEATWARDEN_SANDBOX_TOKEN".to_owned(),
        ),
        None => {
            let token = random_token()?;
            let note = format!("bearer token {token} (random; --token to choose one)");
            (token, note)
        }
    };
    runtime()?.block_on(async {
        let seed = match seed {
            Some(path) => crate::sandbox::load_seed(path)?,
            None => crate::model::WorkspaceSnapshot::default(),
        };
        let (users, groups) = (seed.accounts.len(), seed.groups.len());
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            // Most often a sandbox still serving, or the demo's port (the demo's
            // closing text names it) taken by something else since.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
                "binding 127.0.0.1:{port}: {e}: another program listens on that port \
                 (a sandbox still running?). Stop it, or choose another --port (0 picks a \
                 free one) and set workspace.url to the URL this command prints"
            ),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("binding 127.0.0.1:{port}")));
            }
        };
        let sandbox = Sandbox::start(
            listener,
            SandboxOptions {
                token,
                max_results: usize::try_from(behaviour.max_results).unwrap_or(usize::MAX),
                or_filters: !behaviour.no_or_filters,
                members_hidden: behaviour.hide_group_members,
                paging: behaviour.paging(),
                cursor_timeout: behaviour.cursor_timeout.map(std::time::Duration::from_secs),
                patch_supported: !behaviour.no_patch,
                faults,
            },
            seed,
        )
        .await?;
        let stop = shutdown_signal()?;
        eprintln!(
            "sandbox SCIM 2.0 workspace at {} ({users} users, {groups} groups); {token_note}; Ctrl-C stops it",
            sandbox.base_url()
        );
        let injecting = !faults.latency.is_zero()
            || faults.rate_429 > 0.0
            || faults.rate_5xx > 0.0
            || faults.rate_reset > 0.0;
        if injecting {
            eprintln!(
                "injecting: {} ms latency, 429 {:.0}% (Retry-After {} s), 503 {:.0}%, dropped connections {:.0}%{}",
                behaviour.latency_ms,
                faults.rate_429 * 100.0,
                faults.retry_after_secs,
                faults.rate_5xx * 100.0,
                faults.rate_reset * 100.0,
                if faults.writes_only { " (faults on writes only)" } else { "" }
            );
        }
        stop.await;
        sandbox.shutdown().await;
        anyhow::Ok(exit::OK)
    })
}

/// 32 random bytes from the system's CSPRNG, hex: the `seatwarden sandbox` token
/// when none is given.
fn random_token() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Resolves on SIGTERM or SIGINT. Created before the server announces itself, so
/// a signal sent right after the announcement is never lost.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// 5 on a source fault, else 6 when the circuit breaker is open, else 4 when
/// anything failed or was kept back unsent (the workspace found down or its token
/// refused by a write, or by a read the run made while writing, stops the writes
/// after it: the report counts those not sent apart from failures, but the work is
/// not done), else 3 when anything waits for a human: held actions (those only
/// waiting for the settle window do not count), or a leaver who keeps access
/// until someone says which disputed account is theirs. Else 0: a wrapper that
/// checks only the exit code must not read a leaver with access, or writes never
/// sent, as converged. A stop's own code (130, 143) is decided before this.
pub fn exit_code_for(report: &Report) -> u8 {
    if report.safety.source_fault.is_some() {
        exit::SOURCE_FAULT
    } else if report
        .safety
        .circuit
        .as_ref()
        // Half-open, the run wrote: its own outcome decides.
        .is_some_and(|c| matches!(c.state, crate::circuit::CircuitState::Open { .. }))
    {
        exit::CIRCUIT_OPEN
    } else if report.summary.actions_failed > 0 || report.not_sent().next().is_some() {
        exit::FAILED
    } else if report.summary.actions_held > report.safety.actions_waiting
        || !report.safety.disputed_leavers.is_empty()
    {
        exit::HELD
    } else {
        exit::OK
    }
}

/// [`exit_code_for`] a run, saying on stderr what to do when a reconcile held
/// actions for a human: the report shows what, not the commands that decide. Of
/// writes kept back unsent it says that they are no failure and what sends them.
fn exit_with_hint(config: &Config, mode: Mode, outcome: &run::RunOutcome) -> u8 {
    let code = exit_code_for(&outcome.report);
    let not_sent = outcome.report.not_sent_by_reason();
    if mode == Mode::Reconcile && !not_sent.is_empty() {
        eprintln!(
            "{}: never sent, so no failure of theirs; `{} reconcile` plans and sends them \
             once the workspace takes writes again",
            report::not_sent_text(&not_sent),
            config.admin_command()
        );
    }
    if code == exit::HELD && mode == Mode::Reconcile {
        let admin = config.admin_command();
        let run = outcome.run_id;
        let report = &outcome.report;
        // What an incomplete directory read held, `approve` refuses: the next
        // reconcile from a whole read decides.
        let incomplete = outcome
            .plan
            .held()
            .filter(|a| a.held == Some(crate::model::HoldReason::IncompleteDirectory))
            .count();
        if incomplete > 0 {
            eprintln!(
                "{} held because the directory read was incomplete (someone only missing \
                 from it looks gone): no approval sends them; `{admin} reconcile` again once \
                 the directory reads whole",
                report::plural(incomplete, "action", "actions")
            );
        }
        if report.summary.actions_held > report.safety.actions_waiting + incomplete {
            eprintln!(
                "held for a human: review with `{admin} report --run {run}` or `{admin} \
                 explain PERSON`, then `{admin} approve {run}` (or `{admin} reject {run}`)"
            );
        }
        if let Some(hint) = disputed_leavers_hint(report, &admin) {
            eprintln!("{hint}");
        }
    }
    // Not a held run: the protection is someone's decision, which nothing but
    // the configuration changes, and a code of its own every run would stand
    // for nothing to approve. Said every run all the same.
    if mode == Mode::Reconcile
        && let Some(hint) = protected_leavers_hint(&outcome.report, &config.admin_command())
    {
        eprintln!("{hint}");
    }
    code
}

/// What a reconcile that leaves a leaver's protected account active says on
/// stderr: nothing seatwarden does ends that access. The userNames are the
/// workspace's, made [`report::printable`] as [`disputed_leavers_hint`]'s are.
fn protected_leavers_hint(report: &Report, admin: &str) -> Option<String> {
    let leavers = &report.safety.protected_leavers;
    (!leavers.is_empty()).then(|| {
        let names: Vec<&str> = leavers.iter().map(|p| p.user_name.as_str()).collect();
        format!(
            "a leaver keeps access through an account safety.protected names ({}): \
             seatwarden never deactivates it; deactivate it in the workspace by hand, or \
             take its name out of safety.protected and the next reconcile deactivates it \
             (the report's PROTECTED LEAVERS; `{admin} explain ACCOUNT` shows both sides)",
            report::printable(&names.join(", "), false)
        )
    })
}

/// What a reconcile that leaves a disputed leaver with access says on stderr.
/// Their userNames are the directory's: made [`report::printable`], so one typed
/// with an escape sequence or a bidi override cannot drive the operator's
/// terminal or reorder the line.
fn disputed_leavers_hint(report: &Report, admin: &str) -> Option<String> {
    (!report.safety.disputed_leavers.is_empty()).then(|| {
        format!(
            "a leaver keeps access until someone says which account is theirs ({}): \
             `{admin} explain PERSON` compares the accounts, `{admin} link IDENTITY \
             ACCOUNT` settles it",
            report::printable(&report.safety.disputed_leavers.join(", "), false)
        )
    })
}

/// How long a command run by hand waits for the writer lock unless told:
/// longer than a sweep or an `approve`, and than most reconciles.
const LOCK_TIMEOUT_DEFAULT: &str = "10m";

/// `--lock-timeout` of the commands that take the writer lock.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LockWait {
    /// How long to wait for another writer through the state database (a daemon
    /// job, another command) before giving up with exit 75, nothing done; 0 gives
    /// up at once. Who holds the lock is shown as soon as the command waits.
    #[arg(
        long,
        value_name = "DURATION",
        env = "SEATWARDEN_LOCK_TIMEOUT",
        default_value = LOCK_TIMEOUT_DEFAULT,
        value_parser = lock_timeout
    )]
    pub lock_timeout: std::time::Duration,
}

/// clap names the flag in its error even when the value came from
/// `SEATWARDEN_LOCK_TIMEOUT`, which a script sets and which its author then looks
/// for in vain among the command's flags: the error names both.
fn lock_timeout(value: &str) -> Result<std::time::Duration, String> {
    if value.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::config::parse_duration(value).map_err(|e| {
        format!(
            "{e}, or 0 to give up at once (given with --lock-timeout or SEATWARDEN_LOCK_TIMEOUT)"
        )
    })
}

/// The writer lock still held when `--lock-timeout` ran out: exit 75
/// ([`exit::BUSY`]), nothing done.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WriterLockBusy(String);

/// The lock every writer through this database holds (see [`WriterLock`]): a
/// command run by hand waits for whoever is writing (a daemon job, or another
/// `reconcile`, `approve`, `reject`, `link`, `unlink` or `resume`), says at once who that
/// is (the holder writes itself into the lock file), and gives up after
/// `--lock-timeout` ([`WriterLockBusy`]). `command` names it to whoever waits next.
fn writer_lock(config: &Config, command: &str, wait: LockWait) -> anyhow::Result<WriterLock> {
    let what = format!("the command `seatwarden {command}`");
    let patience = wait.lock_timeout;
    // The holder's time on the report clock, as every time people read; a zone
    // the configuration cannot name is refused where it is used, not here.
    let tz = config.report_timezone().unwrap_or(chrono_tz::UTC);
    let acquired =
        WriterLock::acquire_within(&config.state.path, &what, Some(patience), |path, holder| {
            eprintln!(
                "{}",
                writer_lock_wait_message(path, holder, patience, chrono::Utc::now(), tz)
            );
        })
        .context("taking the writer lock")?;
    match acquired {
        crate::store::Acquired::Taken(lock) => Ok(lock),
        crate::store::Acquired::Busy { holder } => Err(WriterLockBusy(writer_lock_busy_message(
            holder.as_ref(),
            patience,
            chrono::Utc::now(),
            tz,
        ))
        .into()),
    }
}

/// Who holds the writer lock, for a message: as the lock file names it, else
/// what it can be.
fn writer_lock_holder_text(
    holder: Option<&crate::store::LockHolder>,
    now: chrono::DateTime<chrono::Utc>,
    tz: chrono_tz::Tz,
) -> String {
    holder.map_or_else(
        || "the daemon or another command writing through this database".to_owned(),
        |holder| holder.describe(now, tz),
    )
}

fn lock_timeout_text(patience: std::time::Duration) -> String {
    crate::config::span(chrono::Duration::from_std(patience).unwrap_or(chrono::Duration::MAX))
}

/// What a command says as it starts to wait for the writer lock at `path`, and
/// again when another holder takes over.
fn writer_lock_wait_message(
    path: &std::path::Path,
    holder: Option<&crate::store::LockHolder>,
    patience: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
    tz: chrono_tz::Tz,
) -> String {
    let limit = if patience.is_zero() {
        "not waiting (--lock-timeout 0)".to_owned()
    } else {
        format!(
            "going on once it is released; giving up after {} (--lock-timeout)",
            lock_timeout_text(patience)
        )
    };
    format!(
        "waiting: another seatwarden process holds the state database's writer lock ({}): \
         {}; {limit}",
        path.display(),
        writer_lock_holder_text(holder, now, tz)
    )
}

/// The error of a command that gave up waiting for the writer lock.
fn writer_lock_busy_message(
    holder: Option<&crate::store::LockHolder>,
    patience: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
    tz: chrono_tz::Tz,
) -> String {
    format!(
        "the state database's writer lock is still held after {} (--lock-timeout), by {}; \
         nothing was done: run the command again once that is finished, or wait longer \
         (e.g. --lock-timeout 1h)",
        lock_timeout_text(patience),
        writer_lock_holder_text(holder, now, tz)
    )
}

/// The state database of a command that only reads or decides on what runs stored:
/// a path with no database is an error, not a new empty database whose "nothing
/// pending" would keep a check with a wrong path green.
fn open_existing_store(config: &Config) -> anyhow::Result<Store> {
    ensure_store_exists(config)?;
    open_store(config)
}

fn ensure_store_exists(config: &Config) -> anyhow::Result<()> {
    store_exists(
        &config.state.path,
        &config.origin_of("state.path"),
        &config.admin_command(),
    )
}

/// Whether the database at `path` (chosen by `state.path` in `source`: the file,
/// or the variable that set it) exists. A
/// path that cannot be looked at (a state directory this user may not read, a
/// parent that is a file) is that error with the path, not "no database": run
/// `plan` first would be the wrong advice.
fn store_exists(
    path: &std::path::Path,
    source: &std::path::Path,
    admin_command: &str,
) -> anyhow::Result<()> {
    match path.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!(
            "there is no state database at {} (state.path in {}): run `{admin_command} plan` \
             or `{admin_command} reconcile` first, or check the path",
            path.display(),
            source.display()
        ),
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "cannot look for the state database at {} (state.path in {}): check the \
             permissions of its directory and that this runs as the service's user",
            path.display(),
            source.display()
        ))),
    }
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::open(&config.state.path)
        // The store's error names the database; this names the key that chose it.
        .with_context(|| format!("state.path in {}", config.origin_of("state.path").display()))?;
    for copy in run::remove_stale_preview_copies(&config.state.path) {
        eprintln!(
            "removed {}: a copy of the state database left behind by a `plan \
             --workspace-moved` killed before it could remove it",
            copy.display()
        );
    }
    Ok(store)
}

/// How a `plan` or `reconcile --dry-run` ended.
enum Preview {
    Finished(Box<run::RunOutcome>),
    /// Given up by SIGINT or SIGTERM before its plan was stored: the exit code.
    Stopped(u8),
}

/// `plan` and `reconcile --dry-run`, which write nothing to the workspace and take
/// no writer lock (a reconcile goes through [`reconcile`]). The first SIGINT or
/// SIGTERM gives the run up where it stands ([`run::preview_until`]): it is
/// recorded stopped with nothing planned, one line on stderr says so, and the
/// exit is 130 (SIGINT) or 143 (SIGTERM). A signal once the plan is stored lets
/// the run finish with its own code.
///
/// With `--workspace-moved` it records no move: a state database bound to another
/// URL is planned against the new one on a throwaway copy ([`run::moved_preview`]).
fn preview(config: &Config, mode: Mode, mut options: run::RunOptions) -> anyhow::Result<Preview> {
    let store = open_store(config)?;
    let client = crate::workspace::ScimClient::new(config.scim_settings()?)?;
    let directory = run::directory_from_config(config);
    let (store, _copy) = if std::mem::take(&mut options.workspace_moved) {
        let (store, copy) = run::moved_preview(store, config, &client)?;
        if let Some(copy) = &copy {
            eprintln!(
                "planning against workspace.url {} with a copy of {}, which stays bound to \
                 {}: nothing of this plan is stored. If it matches the accounts you know \
                 (not every account missing or unmatched), record the move with `{} \
                 reconcile --workspace-moved`",
                client.base_url(),
                config.state.path.display(),
                copy.recorded,
                config.admin_command()
            );
        }
        (store, copy)
    } else {
        (store, None)
    };
    let (result, signal) = run_cancellable(|interrupted| {
        run::preview_until(
            config,
            &directory,
            &client,
            store,
            mode,
            options,
            interrupted,
        )
    })?;
    match (result, signal) {
        (Err(run::RunError::StoppedReading), Some(signal)) => {
            // The read's progress line, if any, was ended as the read was dropped.
            eprintln!(
                "interrupted ({}): stopped reading; nothing was written to the \
                 workspace and nothing was planned",
                signal.name()
            );
            Ok(Preview::Stopped(signal.exit_code()))
        }
        (result, _) => Ok(Preview::Finished(Box::new(result?))),
    }
}

/// Runs `work`, a command that writes nothing to the workspace (`plan`, `reconcile
/// --dry-run`), on a new runtime, handing it a future that resolves at the first
/// SIGINT or SIGTERM: it has nothing to finish, and gives up at once. A second
/// signal ends the process at once, should giving up take a while (a snapshot of
/// 100k accounts being stored). Returns the first signal received, if any.
fn run_cancellable<W, F>(work: W) -> anyhow::Result<(F::Output, Option<Interruption>)>
where
    W: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) -> F,
    F: std::future::Future,
{
    runtime()?.block_on(async {
        let mut signals = Interrupts::install()?;
        let (heard, first) = tokio::sync::watch::channel(None::<Interruption>);
        let watcher = tokio::spawn(async move {
            let signal = signals.next().await;
            heard.send_replace(Some(signal));
            let again = signals.next().await;
            eprintln!("{}: quitting at once", again.name());
            std::process::exit(again.exit_code().into());
        });
        let mut interrupted = first.clone();
        let output = work(Box::pin(async move {
            let heard = interrupted.wait_for(Option::is_some).await.is_ok();
            // The watcher gone (the work is done) is no signal.
            if !heard {
                std::future::pending::<()>().await;
            }
        }))
        .await;
        watcher.abort();
        let signal = *first.borrow();
        Ok((output, signal))
    })
}

/// `reconcile` (and the one `resume` runs): the run, under the writer lock, which
/// the first SIGINT or SIGTERM stops (see [`run_interruptible`]). Stopped before
/// every write was sent, it prints the report the run stored, says on stderr how
/// far it got and what finishes it, and exits 130 (SIGINT) or 143 (SIGTERM).
/// Stopped while still reading, before its plan was stored, it gives up at once
/// (its reads dropped; see [`run::RunOptions::stop`]), says so in one line and
/// exits the same.
fn reconcile(
    config: &Config,
    options: run::RunOptions,
    format: Format,
    wait: LockWait,
) -> anyhow::Result<u8> {
    let writer = writer_lock(config, "reconcile", wait)?;
    let store = open_store(config)?;
    let client = crate::workspace::ScimClient::new(config.scim_settings()?)?;
    let directory = run::directory_from_config(config);
    let stop = crate::apply::StopSignal::new();
    let options = run::RunOptions {
        stop: stop.clone(),
        ..options
    };
    let finish = format!("{} reconcile", config.admin_command());
    let running =
        run::execute_with_options(config, &directory, &client, store, Mode::Reconcile, options);
    let (result, signal) = run_interruptible(&stop, &finish, running)?;
    let outcome = match (result, signal) {
        (Err(run::RunError::StoppedReading), Some(signal)) => {
            // Given up before its plan was stored: no report to print. Rows an
            // earlier run left in flight that its recovery did not get to stay
            // for the next run's.
            let in_flight = open_store(config)?.interrupted()?.len();
            eprintln!("{}", stopped_reading_message(signal, in_flight, &finish));
            return Ok(signal.exit_code());
        }
        (Err(run::RunError::Stopped { unsent, .. }), Some(signal)) => {
            // We still hold the writer lock: the newest reconcile is the one stopped.
            let store = open_store(config)?;
            let stopped = store
                .latest_run(&[RunKind::Reconcile])?
                .context("the stopped reconcile is not recorded")?;
            let report = match store.report(stopped.id)? {
                Some(json) => Some(Report::from_json(&json).with_context(|| {
                    format!("the stored report of run {} cannot be read", stopped.id)
                })?),
                None => None,
            };
            let in_flight = store.interrupted()?.len();
            // Let go before printing: a reader that does not read (`| less` left
            // open) would otherwise keep the daemon's sweeps waiting on the lock.
            drop(store);
            drop(writer);
            if let Some(report) = &report {
                after_writes(print_report(report, format, config))?;
            }
            // Every write the run was to make: all but the held.
            let writes = report.as_ref().map(|report| {
                report
                    .actions
                    .iter()
                    .filter(|a| a.outcome != report::Outcome::Held)
                    .count()
            });
            eprintln!(
                "{}",
                interrupted_message(signal, unsent, writes, in_flight, &finish)
            );
            return Ok(signal.exit_code());
        }
        (result, signal) => {
            let outcome = result?;
            if let Some(signal) = signal {
                eprintln!(
                    "{}: came once nothing was left to send; the run finished",
                    signal.name()
                );
            }
            outcome
        }
    };
    // The run is over: the report is printed without the lock (see above).
    drop(writer);
    after_writes(print_report(&outcome.report, format, config))?;
    Ok(exit_with_hint(config, Mode::Reconcile, &outcome))
}

/// The first SIGINT or SIGTERM a command that writes received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interruption {
    Interrupt,
    Terminate,
}

impl Interruption {
    fn name(self) -> &'static str {
        match self {
            Interruption::Interrupt => "SIGINT",
            Interruption::Terminate => "SIGTERM",
        }
    }

    /// What a shell reports for a process this signal stopped (128 + its number),
    /// so that a script tells a stopped run from a finished one.
    fn exit_code(self) -> u8 {
        match self {
            Interruption::Interrupt => exit::INTERRUPTED,
            Interruption::Terminate => exit::TERMINATED,
        }
    }
}

/// SIGINT and SIGTERM, as they come.
#[cfg(unix)]
struct Interrupts {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Interrupts {
    fn install() -> anyhow::Result<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupts {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn next(&mut self) -> Interruption {
        tokio::select! {
            _ = self.interrupt.recv() => Interruption::Interrupt,
            _ = self.terminate.recv() => Interruption::Terminate,
        }
    }
}

#[cfg(not(unix))]
struct Interrupts;

#[cfg(not(unix))]
impl Interrupts {
    fn install() -> anyhow::Result<Interrupts> {
        Ok(Interrupts)
    }

    async fn next(&mut self) -> Interruption {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        Interruption::Interrupt
    }
}

/// Runs `work`, a command that writes to the workspace, on a new runtime. The first
/// SIGINT or SIGTERM sets `stop`: the apply sends no further write, the writes
/// already sent finish and are journaled, and those not sent are journaled "not
/// sent" (as when the daemon stops). A second one ends the process at once, as
/// the first used to: the writes it leaves in flight are resolved by the next
/// reconcile, sweep or approval (`finish` is the command that finishes the work).
/// While the work still reads, before its first write (a reconcile's reads, an
/// approval's re-check), `stop` gives it up at once. Returns the first signal
/// received, if any.
fn run_interruptible<F: std::future::Future>(
    stop: &crate::apply::StopSignal,
    finish: &str,
    work: F,
) -> anyhow::Result<(F::Output, Option<Interruption>)> {
    runtime()?.block_on(async {
        let mut signals = Interrupts::install()?;
        let first = std::sync::Arc::new(std::sync::OnceLock::new());
        let watcher = tokio::spawn({
            let stop = stop.clone();
            let first = std::sync::Arc::clone(&first);
            let finish = finish.to_owned();
            async move {
                let signal = signals.next().await;
                let _ = first.set(signal);
                stop.stop();
                // On a new line: a progress line may be on this one.
                let newline = if std::io::stderr().is_terminal() {
                    "\n"
                } else {
                    ""
                };
                eprintln!(
                    "{newline}{}: stopping: a run still reading gives up at once; once \
                     writing, no further write is sent and the writes already sent finish \
                     and are recorded (a second signal quits at once)",
                    signal.name()
                );
                let again = signals.next().await;
                eprintln!(
                    "{}: quitting at once; `{finish}` first resolves the writes left in flight",
                    again.name()
                );
                std::process::exit(again.exit_code().into());
            }
        });
        let output = work.await;
        watcher.abort();
        Ok((output, first.get().copied()))
    })
}

/// What a command stopped by `signal` says on stderr: how many of its `writes`
/// it sent (`unsent` were not), whether any is left in flight, and what finishes
/// the work.
fn interrupted_message(
    signal: Interruption,
    unsent: usize,
    writes: Option<usize>,
    in_flight: usize,
    finish: &str,
) -> String {
    let sent = match writes {
        Some(writes) => format!("{} of {writes} writes sent", writes.saturating_sub(unsent)),
        None => format!("{unsent} writes not sent"),
    };
    let in_flight = match in_flight {
        0 => "nothing is in flight".to_owned(),
        n => format!("{n} writes are still in flight (it resolves them first)"),
    };
    format!(
        "interrupted ({}): {sent}; {in_flight}; run `{finish}` to finish",
        signal.name()
    )
}

/// What a `reconcile` stopped by `signal` before its plan was stored says on
/// stderr: nothing was sent; `in_flight` rows a cut-off run left are still to be
/// resolved, by `finish` as by any later run.
fn stopped_reading_message(signal: Interruption, in_flight: usize, finish: &str) -> String {
    let in_flight = match in_flight {
        0 => String::new(),
        n => format!(
            "; {n} writes an earlier run left in flight are still to be resolved (it \
             resolves them first)"
        ),
    };
    format!(
        "interrupted ({}): stopped reading; nothing was written to the workspace and \
         nothing was planned{in_flight}; run `{finish}` to do the work",
        signal.name()
    )
}

/// The `approve` that finishes what `approve RUN [--only KIND]` left unsent.
fn approve_command(admin: &str, run: RunId, only: &crate::approval::Only) -> String {
    use crate::approval::Only;
    match only {
        Only::All => format!("{admin} approve {run}"),
        Only::Op(op) => format!("{admin} approve {run} --only {op}"),
        Only::Class(class) => format!("{admin} approve {run} --only {}", class.as_str()),
    }
}

/// The run an approval or rejection is about: an id, never `latest`, so that the
/// decision is about the plan that was read even when a newer run started since.
fn decided_run(value: &str) -> Result<RunId, String> {
    match value.parse::<RunId>() {
        Ok(run) if run > 0 => Ok(run),
        _ if value.eq_ignore_ascii_case("latest") => Err("a decision names its run: give the \
            id that `seatwarden report` shows (`latest` might be a newer run than the one \
            whose plan was read)"
            .to_owned()),
        _ => Err("a run id is a positive number, as `seatwarden report` shows it".to_owned()),
    }
}

/// `report --run`: `latest` or a run id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRun {
    Latest,
    Id(RunId),
}

/// Parsed by clap, so that a bad value is a usage error (64) like any other.
fn report_run(value: &str) -> Result<ReportRun, String> {
    if value.eq_ignore_ascii_case("latest") {
        return Ok(ReportRun::Latest);
    }
    match value.parse::<RunId>() {
        Ok(run) if run > 0 => Ok(ReportRun::Id(run)),
        _ => Err(
            "--run takes `latest` or a run id (a positive number, as `seatwarden \
            report` shows it)"
                .to_owned(),
        ),
    }
}

/// `approve`/`reject --only`, parsed by clap: an unknown kind is a usage error.
fn only_kind(value: &str) -> Result<crate::approval::Only, String> {
    crate::approval::Only::parse(Some(value)).map_err(|e| e.to_string())
}

/// `digest --period`, parsed by clap: a bad duration is a usage error, and so is
/// an empty one (`0s`, `0d`), whose digest would say no run happened in it.
fn period(value: &str) -> Result<std::time::Duration, String> {
    let period = crate::config::parse_duration(value)?;
    if period.is_zero() {
        return Err(format!(
            "{value:?} is an empty period: give the period ending now, e.g. 24h or 7d"
        ));
    }
    Ok(period)
}

/// `seatwarden approve RUN [--only KIND]`: 0 when everything approved was applied,
/// 3 when the re-check refused some (they stay held), 4 when some failed or were
/// kept back unsent ([`approve_exit_code`]; the output counts those apart, with
/// why), 6 when the circuit breaker opened or was already open (nothing
/// approved), 130 or 143 when
/// SIGINT or SIGTERM stopped it before it sent everything it approved (see
/// [`run_interruptible`]; while it still re-checked, it gives up at once, nothing
/// approved). On a terminal it shows the apply's progress line.
fn approve(
    config: &Config,
    run: RunId,
    only: Option<crate::approval::Only>,
    wait: LockWait,
) -> anyhow::Result<u8> {
    use crate::approval;
    let only = only.unwrap_or(approval::Only::All);
    ensure_store_exists(config)?;
    // The directory first, without the writer lock: a large Okta or Entra ID
    // takes minutes to read, and the daemon's reconcile and same-day sweep
    // would wait for them. Nothing is decided or written yet, so a Ctrl-C here
    // ends the process as it would while waiting for the lock; what changed
    // meanwhile is decided under the lock (`approval::approve_read_ahead`).
    let ahead = {
        let store = open_store(config)?;
        runtime()?.block_on(approval::read_ahead(config, &store, run, &only))?
    };
    let writer = writer_lock(config, "approve", wait)?;
    let mut store = open_store(config)?;
    let client = crate::workspace::ScimClient::new(config.scim_settings()?)?;
    run::same_workspace(&mut store, config, &client, false, chrono::Utc::now())?;
    let stop = crate::apply::StopSignal::new();
    let finish = approve_command(&config.admin_command(), run, &only);
    let approving = crate::apply::until_stopped(
        stop.clone(),
        run::with_apply_progress(approval::approve_read_ahead(
            config,
            &client,
            store,
            run,
            &only,
            ahead,
            chrono::Utc::now(),
        )),
    );
    let ((result, unsent), signal) = run_interruptible(&stop, &finish, approving)?;
    let result = match (result, signal) {
        (Err(approval::ApprovalError::StoppedReading), Some(signal)) => {
            eprintln!(
                "interrupted ({}): stopped re-checking; nothing was approved and nothing was \
                 sent to the workspace; run `{finish}` to approve",
                signal.name()
            );
            return Ok(signal.exit_code());
        }
        (result, _) => result,
    };
    let result = match result {
        Ok(result) => result,
        Err(e @ approval::ApprovalError::CircuitOpen { .. }) => {
            eprintln!("error: {}", describe(&e.into()));
            return Ok(exit::CIRCUIT_OPEN);
        }
        Err(e) => return Err(e.into()),
    };
    // Who each obsolete or refused action is about: a seq alone sends the person
    // deciding to the report to find out.
    let about: std::collections::HashMap<u32, String> = if result.obsolete.is_empty()
        && result.refused.is_empty()
        && result.rejected_later.is_empty()
    {
        std::collections::HashMap::new()
    } else {
        open_store(config)?
            .journal(run)?
            .into_iter()
            .map(|row| {
                let what = format!(" {} {}", row.action.kind.name(), row.action.subject);
                (row.action.seq, report::printable(&what, false).into_owned())
            })
            .collect()
    };
    let about = |seq: &u32| about.get(seq).map_or("", String::as_str);
    let in_flight = match signal.filter(|_| unsent > 0) {
        Some(_) => open_store(config)?.interrupted()?.len(),
        None => 0,
    };
    // Every write and read is done: printed without the lock, so that a reader
    // that does not read (`| less` left open) keeps no daemon job waiting.
    drop(writer);
    let print = || -> anyhow::Result<()> {
        let not_sent = if result.not_sent.is_empty() {
            String::new()
        } else {
            format!(", {} not sent", result.not_sent.len())
        };
        outln!(
            "run {run}: {} approved ({} applied, {} failed{not_sent}), {} obsolete, {} refused",
            result.approved.len(),
            result.applied.applied,
            result.failed,
            result.obsolete.len(),
            result.refused.len()
        )?;
        if !result.not_sent.is_empty() {
            outln!(
                "  {}: never sent, so no failure of theirs; `{finish}` sends them once the \
                 workspace takes writes again",
                report::not_sent_text(&report::count_by_reason(
                    result.not_sent.iter().map(|(_, why)| *why)
                ))
            )?;
        }
        for (seq, why) in &result.obsolete {
            outln!("  obsolete #{seq}{}: {why}", about(seq))?;
        }
        for (seq, why) in &result.refused {
            outln!("  refused  #{seq}{}: {why} (still held)", about(seq))?;
        }
        for (seq, why) in &result.rejected_later {
            outln!("  not approved #{seq}{}: {why}", about(seq))?;
        }
        if let Some(note) = &result.directory_note {
            outln!("  {}", report::printable(note, false))?;
        }
        if result.waiting > 0 {
            outln!(
                "  {} held actions only wait for the settle window: left held, the first \
                 reconcile after it passes applies them",
                result.waiting
            )?;
        }
        for (later, count) in &result.settled_later {
            outln!(
                "  run {later} held {count} of these again: recorded there as done, not to be \
                 approved again"
            )?;
        }
        Ok(())
    };
    after_writes(print())?;
    if let Some(signal) = signal.filter(|_| unsent > 0) {
        eprintln!(
            "{}",
            interrupted_message(
                signal,
                unsent,
                Some(result.approved.len()),
                in_flight,
                &finish
            )
        );
        return Ok(signal.exit_code());
    }
    Ok(approve_exit_code(&result))
}

/// `approve`'s exit code, by [`exit_code_for`]'s rule: 6 when the circuit
/// breaker opened, else 4 when an approved write failed or was kept back unsent
/// (the work is not done), else 3 when the re-check refused some, else 0.
pub fn approve_exit_code(approval: &crate::approval::Approval) -> u8 {
    if approval.applied.circuit_opened.is_some() {
        exit::CIRCUIT_OPEN
    } else if approval.failed > 0 || !approval.not_sent.is_empty() {
        exit::FAILED
    } else if !approval.refused.is_empty() {
        exit::HELD
    } else {
        exit::OK
    }
}

/// Output printed once writes were made (`reconcile`, `resume`, `approve`): a
/// reader that went away (`reconcile | head`) only stops the printing; it must not
/// hide what the exit code says of the writes (held, failed, directory rejected),
/// nor the approval hint on stderr.
fn after_writes(printed: anyhow::Result<()>) -> anyhow::Result<()> {
    match printed {
        Err(error) if crate::is_closed_stdout(error.as_ref()) => Ok(()),
        other => other,
    }
}

/// Text, Markdown and HTML show times in `report.timezone`.
fn print_report(report: &Report, format: Format, config: &Config) -> anyhow::Result<()> {
    match format {
        Format::Json => outln!("{}", report::json_for_terminal(report.to_json()))?,
        Format::Text => out!(
            "{}",
            report::render_text(
                report,
                config.report_timezone()?,
                &config.admin_command(),
                std::io::stdout().is_terminal()
            )
        )?,
        Format::Markdown => out!(
            "{}",
            report::render_markdown(report, config.report_timezone()?, &config.admin_command())?
        )?,
        Format::Html => out!(
            "{}",
            report::render_html(report, config.report_timezone()?, &config.admin_command())?
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::{describe, disputed_leavers_hint, period, store_exists, with_state_hint};
    use std::path::Path;

    /// `digest --period 0d` is refused (exit 64) instead of a digest of nothing
    /// that reads "no run in this period"; a real period is taken.
    #[test]
    fn an_empty_digest_period_is_refused() {
        for empty in ["0s", "0d", "0h"] {
            let error = period(empty).unwrap_err();
            assert!(error.contains("empty period"), "{empty}: {error}");
        }
        assert_eq!(period("7d"), Ok(std::time::Duration::from_secs(7 * 86_400)));
        assert!(period("soon").is_err());
    }

    /// Every option and argument of every command says what it is for in
    /// `--help`: one shown only with its default and possible values teaches
    /// nothing (`--format` said what it takes, not what it formats or where to).
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        let cli = super::Cli::command();
        let mut silent = Vec::new();
        for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    silent.push(format!("{} {}", command.get_name(), arg.get_id()));
                }
            }
        }
        assert!(silent.is_empty(), "{silent:?}");
    }

    /// A reconcile that leaves a leaver's protected account active says on
    /// stderr what ends the access; its exit code stays its own (nothing waits
    /// for an approval).
    #[test]
    fn a_protected_leaver_is_told_on_stderr() {
        let mut report = crate::report::Report {
            schema_version: crate::report::SCHEMA_VERSION,
            run_id: 1,
            mode: "reconcile".into(),
            started_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
            directory: String::new(),
            workspace: String::new(),
            summary: crate::report::Summary::default(),
            drift: Vec::new(),
            actions: Vec::new(),
            safety: crate::report::SafetyReport::default(),
        };
        assert_eq!(super::exit_code_for(&report), crate::cli::exit::OK);
        assert_eq!(super::protected_leavers_hint(&report, "seatwarden"), None);
        report.safety.protected_leavers = vec![crate::model::ProtectedLeaver {
            account_id: "7".into(),
            user_name: "ops-admin@example.com".into(),
            identity_id: "00u7".into(),
            why: "identity is deprovisioned in the directory".into(),
        }];
        assert_eq!(super::exit_code_for(&report), crate::cli::exit::OK);
        let hint = super::protected_leavers_hint(&report, "seatwarden").unwrap();
        assert!(
            hint.starts_with(
                "a leaver keeps access through an account safety.protected names \
                 (ops-admin@example.com): seatwarden never deactivates it"
            ),
            "{hint}"
        );
    }

    /// The hint a reconcile prints for a disputed leaver names them by their
    /// directory userName: an escape sequence or a bidi override in it shows as
    /// U+FFFD on the operator's terminal.
    #[test]
    fn the_disputed_leavers_hint_cannot_drive_the_terminal() {
        let at = chrono::Utc::now();
        let report = crate::report::Report {
            schema_version: crate::report::SCHEMA_VERSION,
            run_id: 7,
            mode: "reconcile".into(),
            started_at: at,
            finished_at: at,
            directory: "file directory.json".into(),
            workspace: "https://ws.example/scim/v2".into(),
            summary: crate::report::Summary::default(),
            drift: Vec::new(),
            actions: Vec::new(),
            safety: crate::report::SafetyReport {
                disputed_leavers: vec!["ada\u{1b}]0;pwned\u{7}\u{202e}x".into()],
                ..Default::default()
            },
        };
        let hint = disputed_leavers_hint(&report, "seatwarden").unwrap();
        assert!(
            hint.contains("(ada\u{fffd}]0;pwned\u{fffd}\u{fffd}x)"),
            "{hint:?}"
        );
    }

    /// A write refused mid-run by a full disk said "database or disk is full"
    /// after the statement's context: neither which file nor what to do.
    #[test]
    fn a_full_disk_names_the_state_database_and_what_to_do() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let error = anyhow::Error::from(crate::run::RunError::Store(
            crate::store::StoreError::Sqlite {
                context: "saving the report of run 2 in reports".into(),
                source: full,
            },
        ));
        let text = describe(&with_state_hint(
            error,
            Path::new("/var/lib/seatwarden/state.db"),
            crate::model::DEFAULT_ADMIN_COMMAND,
        ));
        assert!(
            text.starts_with(
                "state database: saving the report of run 2 in reports: database or disk is full"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "the disk holding the state database /var/lib/seatwarden/state.db is full: \
                 free space there"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("database or disk is full").count(),
            1,
            "{text}"
        );
    }

    /// A state path that cannot be looked at is not "no database, run plan
    /// first": the OS error is given with the path.
    #[test]
    fn an_unreachable_state_database_is_not_called_missing() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("seatwarden.toml");
        const ADMIN: &str = "sudo -u sw seatwarden --config /etc/sw.toml";
        let missing = store_exists(&dir.path().join("state.db"), &source, ADMIN).unwrap_err();
        assert!(
            describe(&missing).contains(&format!(
                "there is no state database at {}/state.db (state.path in {}): run `{ADMIN} \
                 plan` or `{ADMIN} reconcile` first",
                dir.path().display(),
                source.display()
            )),
            "{missing:#}"
        );

        // A parent that is a regular file (ENOTDIR), which stops root too.
        std::fs::write(dir.path().join("state"), "").unwrap();
        let path = dir.path().join("state/state.db");
        let text = describe(&store_exists(&path, &source, ADMIN).unwrap_err());
        assert!(!text.contains("there is no state database"), "{text}");
        assert!(
            text.contains("cannot look for the state database")
                && text.contains(&path.display().to_string())
                && text.contains("state.path in"),
            "{text}"
        );

        // A state directory this user may not enter (EACCES). Root passes
        // permission bits, so this part only runs where they stop the test.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let locked = dir.path().join("locked");
            std::fs::create_dir(&locked).unwrap();
            std::fs::write(locked.join("state.db"), "").unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
            let stopped = std::fs::metadata(locked.join("state.db")).is_err();
            let result = store_exists(&locked.join("state.db"), &source, ADMIN);
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
            if stopped {
                let text = describe(&result.unwrap_err());
                assert!(!text.contains("there is no state database"), "{text}");
                assert!(text.contains("ermission denied"), "{text}");
            } else {
                eprintln!("running as root: the permission case is skipped");
            }
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("GET /Users: HTTP 401")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the workspace: {0}")]
    struct Outer(#[from] Inner);

    #[test]
    fn causes_already_quoted_are_not_repeated() {
        let error = anyhow::Error::from(Outer(Inner)).context("running the plan");
        assert_eq!(
            describe(&error),
            "running the plan: reading the workspace: GET /Users: HTTP 401"
        );
    }

    /// A provider's `detail` is quoted in the error: its escape sequences are
    /// neutralised, the message's own line breaks kept.
    #[test]
    fn provider_text_is_made_printable() {
        let error = anyhow::anyhow!("HTTP 400: bad\u{1b}]0;owned\u{7}\u{1b}[2J\r")
            .context("first line\nsecond line");
        assert_eq!(
            describe(&error),
            "first line\nsecond line: HTTP 400: bad\u{fffd}]0;owned\u{fffd}\u{fffd}[2J\u{fffd}"
        );
    }
}
