//! Schema migrations. The schema version lives in `PRAGMA user_version`; migration
//! `n` (1-based) takes the database from version `n - 1` to `n` inside one
//! `BEGIN IMMEDIATE` transaction, so a failed migration leaves the file unchanged and
//! two processes opening the same file cannot both migrate it. A database already
//! at [`LATEST`] is opened without that lock: every command opens the database
//! through here, and one that only reads must not wait behind a daemon job's long
//! write. A database whose version is newer than [`LATEST`] is refused rather
//! than guessed at.
//!
//! Append new migrations; never edit a released one.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration 1: runs, snapshots keyed by run, links, the action journal, drift
/// items and reports.
///
/// Snapshot rows are keyed by `(run_id, pos)` where `pos` is the position in the
/// snapshot as read, so loads return exactly what was saved, in the same order, and
/// inserts append to the end of the b-tree (WITHOUT ROWID: one b-tree per table, no
/// separate rowid index). Ids inside a snapshot are not declared unique: a snapshot
/// records what the source said, duplicates included. Everything keyed by run
/// cascades from `runs`, so pruning old runs is `DELETE FROM runs WHERE id < ?`.
pub(crate) const M1: &str = r#"
CREATE TABLE runs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    kind               TEXT NOT NULL CHECK (kind IN ('plan', 'reconcile', 'dry_run')),
    status             TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at         TEXT NOT NULL,
    finished_at        TEXT,
    error              TEXT,
    -- NULL: no directory snapshot saved for this run; else its `complete` flag.
    directory_complete INTEGER CHECK (directory_complete IN (0, 1)),
    -- 1 once a workspace snapshot was saved for this run.
    workspace_saved    INTEGER NOT NULL DEFAULT 0 CHECK (workspace_saved IN (0, 1))
) STRICT;
CREATE INDEX runs_kind ON runs (kind, id);

CREATE TABLE directory_identities (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pos          INTEGER NOT NULL,
    id           TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    email        TEXT,
    given_name   TEXT,
    family_name  TEXT,
    display_name TEXT,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deprovisioned')),
    department   TEXT,
    PRIMARY KEY (run_id, pos)
) STRICT, WITHOUT ROWID;

CREATE TABLE directory_memberships (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pos          INTEGER NOT NULL,
    identity_pos INTEGER NOT NULL,
    identity_id  TEXT NOT NULL,
    group_name   TEXT NOT NULL,
    PRIMARY KEY (run_id, pos)
) STRICT, WITHOUT ROWID;

CREATE TABLE workspace_accounts (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pos          INTEGER NOT NULL,
    id           TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    external_id  TEXT,
    given_name   TEXT,
    family_name  TEXT,
    display_name TEXT,
    email        TEXT,
    active       INTEGER NOT NULL CHECK (active IN (0, 1)),
    roles        TEXT NOT NULL, -- JSON array of strings
    PRIMARY KEY (run_id, pos)
) STRICT, WITHOUT ROWID;

CREATE TABLE workspace_groups (
    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pos          INTEGER NOT NULL,
    id           TEXT NOT NULL,
    display_name TEXT NOT NULL,
    PRIMARY KEY (run_id, pos)
) STRICT, WITHOUT ROWID;

CREATE TABLE workspace_memberships (
    run_id     INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pos        INTEGER NOT NULL,
    group_pos  INTEGER NOT NULL,
    group_id   TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (run_id, pos)
) STRICT, WITHOUT ROWID;

CREATE TABLE links (
    identity_id TEXT NOT NULL PRIMARY KEY,
    account_id  TEXT NOT NULL UNIQUE,
    method      TEXT NOT NULL
                CHECK (method IN ('external_id', 'user_name', 'email', 'created', 'adopted')),
    linked_at   TEXT NOT NULL
) STRICT;

CREATE TABLE actions (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    identity_id TEXT,
    account_id  TEXT,
    payload     TEXT NOT NULL, -- the whole model::Action as JSON
    state       TEXT NOT NULL
                CHECK (state IN ('planned', 'in_flight', 'applied', 'failed', 'held')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  TEXT,
    result      TEXT, -- JSON, e.g. {"account_id": "..."} for creates
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX actions_state ON actions (state);
CREATE INDEX actions_identity ON actions (identity_id);
CREATE INDEX actions_account ON actions (account_id);

CREATE TABLE drift_items (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    identity_id TEXT,
    account_id  TEXT,
    user_name   TEXT NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE reports (
    run_id INTEGER NOT NULL PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    json   TEXT NOT NULL CHECK (json_valid(json))
) STRICT;
"#;

/// Migration 2: the daemon. Runs gain the `sweep` kind (SQLite cannot alter a
/// CHECK, so `runs` is rebuilt; [`migrate`] runs with foreign keys off so the
/// rebuild does not cascade into the tables that reference it). Then the
/// deprovisioning ledger (one row per episode of someone losing access; at most one
/// open episode per identity), the scheduler's per-job record, and small daemon
/// state such as the directory's change cursor.
pub(crate) const M2: &str = r#"
CREATE TABLE runs_v2 (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    kind               TEXT NOT NULL
                       CHECK (kind IN ('plan', 'reconcile', 'dry_run', 'sweep')),
    status             TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at         TEXT NOT NULL,
    finished_at        TEXT,
    error              TEXT,
    directory_complete INTEGER CHECK (directory_complete IN (0, 1)),
    workspace_saved    INTEGER NOT NULL DEFAULT 0 CHECK (workspace_saved IN (0, 1))
) STRICT;
INSERT INTO runs_v2 SELECT * FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;
CREATE INDEX runs_kind ON runs (kind, id);

CREATE TABLE deprovisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id     TEXT NOT NULL,
    account_id      TEXT,
    user_name       TEXT NOT NULL,
    reason          TEXT NOT NULL,
    detected_at     TEXT NOT NULL,
    due_at          TEXT NOT NULL,
    enforced_at     TEXT,
    verified_at     TEXT,
    -- Regained access before enforcement: the episode is void.
    closed_at       TEXT,
    -- Seen with access again after a verified deprovision: a later loss is a new
    -- episode. Until then the verified episode stands for the person's state, so
    -- someone long gone does not open an episode on every sweep.
    returned_at     TEXT,
    escalated_at    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TEXT,
    last_error      TEXT,
    held            TEXT,
    CHECK (verified_at IS NULL OR closed_at IS NULL)
) STRICT;
CREATE UNIQUE INDEX deprovisions_open ON deprovisions (identity_id)
    WHERE verified_at IS NULL AND closed_at IS NULL;
CREATE INDEX deprovisions_current ON deprovisions (identity_id)
    WHERE closed_at IS NULL AND returned_at IS NULL;
CREATE INDEX deprovisions_verified ON deprovisions (verified_at);

CREATE TABLE jobs (
    name             TEXT NOT NULL PRIMARY KEY,
    last_started_at  TEXT,
    last_finished_at TEXT,
    last_status      TEXT CHECK (last_status IN ('running', 'succeeded', 'failed')),
    last_error       TEXT,
    last_success_at  TEXT
) STRICT;

CREATE TABLE daemon_state (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"#;

/// Migration (issue 6): the safety net's state. None of these tables cascades from
/// `runs`: pruning old runs must not forget the last accepted directory size, the
/// audit trail, an open circuit or when drift was first seen.
///
/// - `accepted_directories`: size of every directory snapshot the source sanity
///   check accepted (the baseline for the next shrink check).
/// - `audit`: who (OS user) did what and when: approve, reject, resume,
///   `--allow-over-threshold`.
/// - `held_decisions`: per held action, whether a human approved or rejected it
///   (or approval found it obsolete); the action row itself keeps its state.
/// - `circuit_breaker`: one row while the breaker is open (opened_at, why, the
///   failing writes as JSON); no row = closed.
/// - `drift_seen`: when each pending create/update (by its settle key) was first
///   seen, for the settle window; keys no longer planned are dropped (one
///   document in `pending_drift` since `M_PENDING_DRIFT_DOCUMENT`).
pub(crate) const M_SAFETY: &str = r#"
CREATE TABLE accepted_directories (
    run_id      INTEGER NOT NULL PRIMARY KEY,
    identities  INTEGER NOT NULL CHECK (identities >= 0),
    accepted_at TEXT NOT NULL
) STRICT;

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    user    TEXT NOT NULL,
    command TEXT NOT NULL,
    run_id  INTEGER,
    detail  TEXT NOT NULL
) STRICT;

CREATE TABLE held_decisions (
    run_id   INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected', 'obsolete')),
    user     TEXT NOT NULL,
    at       TEXT NOT NULL,
    detail   TEXT,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE circuit_breaker (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    opened_at TEXT NOT NULL,
    reason    TEXT NOT NULL,
    failures  TEXT NOT NULL CHECK (json_valid(failures))
) STRICT;

CREATE TABLE drift_seen (
    key        TEXT NOT NULL PRIMARY KEY,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// Migration: the mail outbox and alert state (issue 5).
///
/// `outbox` holds every message before it is sent; a row becomes `sent` only after
/// the SMTP server accepted it, so a crash or an unreachable server loses nothing.
/// `next_attempt_at` spaces retries out across restarts. `alerts` remembers, per
/// condition key, when the alert was last sent (the quiet period) and whether its
/// resolution went out.
pub(crate) const M_OUTBOX: &str = r#"
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL CHECK (kind IN ('report', 'digest', 'alert', 'resolution')),
    subject         TEXT NOT NULL,
    mail_from       TEXT NOT NULL,
    mail_to         TEXT NOT NULL, -- JSON array of addresses
    text_body       TEXT NOT NULL,
    html_body       TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    sent_at         TEXT
) STRICT;
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

CREATE TABLE alerts (
    key             TEXT NOT NULL PRIMARY KEY,
    condition       TEXT NOT NULL, -- JSON of the alert condition last raised
    state           TEXT NOT NULL CHECK (state IN ('active', 'resolved')),
    first_raised_at TEXT NOT NULL,
    last_sent_at    TEXT NOT NULL,
    resolved_at     TEXT,
    suppressed      INTEGER NOT NULL DEFAULT 0 CHECK (suppressed >= 0)
) STRICT;
"#;

/// Migration: journal indexes shaped by the queries that use them.
///
/// Every journal transition (planned → in_flight → applied) rewrote an entry of
/// the index on `state`, which only two kinds of query read: the rows left in
/// flight (now a partial index that holds just those) and the rolling 24 h
/// counts, which filter by kind and time (now partial indexes on `updated_at` for
/// exactly the kinds they count, so creates and updates never touch them).
pub(crate) const M_JOURNAL_INDEXES: &str = r#"
DROP INDEX actions_state;
CREATE INDEX actions_in_flight ON actions (run_id, seq) WHERE state = 'in_flight';
CREATE INDEX actions_recent_deprovisions ON actions (updated_at)
    WHERE kind IN ('deactivate', 'delete');
CREATE INDEX actions_recent_downgrades ON actions (updated_at)
    WHERE kind IN ('remove_members', 'set_role');
"#;

/// Migration: `links` is clustered on its key (`WITHOUT ROWID`).
///
/// A rowid table with a text primary key keeps three b-trees (rows, the key,
/// `account_id`); a first run stores a link for every matched account, and at
/// 100k accounts that insert took about a second. Clustered, it is two b-trees:
/// 99k upserts took 0.67 s instead of 1.13 s when measured through Python's
/// sqlite3 module. Nothing references `links`, so it is copied and renamed.
pub(crate) const M_LINKS_CLUSTERED: &str = r#"
CREATE TABLE links_clustered (
    identity_id TEXT NOT NULL PRIMARY KEY,
    account_id  TEXT NOT NULL UNIQUE,
    method      TEXT NOT NULL
                CHECK (method IN ('external_id', 'user_name', 'email', 'created', 'adopted')),
    linked_at   TEXT NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO links_clustered (identity_id, account_id, method, linked_at)
    SELECT identity_id, account_id, method, linked_at FROM links;
DROP TABLE links;
ALTER TABLE links_clustered RENAME TO links;
"#;

/// Migration: each snapshot is one JSON document, one row per run and side.
///
/// A snapshot is written whole and read whole (`save_*_snapshot` and
/// `load_*_snapshot`, nothing queries its rows), and row by row it was the most
/// expensive write of a run: about 30,000 inserts at 10k people, 0.1–0.2 s on a
/// reconcile's critical path. As one text document it is a few milliseconds to
/// encode and write. The documents are text, so `sqlite3` still reads them with
/// the JSON functions, e.g. `SELECT value ->> 'user_name' FROM
/// workspace_snapshots, json_each(body -> 'accounts') WHERE run_id = 7`.
///
/// The body is `model::DirectorySnapshot::identities` (an array) or
/// `model::WorkspaceSnapshot` (`{"accounts": [...], "groups": [...]}`) as serde
/// writes them; the counts are kept beside it for the sanity checks. Existing
/// snapshots are converted in place, order kept.
pub(crate) const M_SNAPSHOT_DOCUMENTS: &str = r#"
CREATE TABLE directory_snapshots (
    run_id         INTEGER NOT NULL PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    identity_count INTEGER NOT NULL,
    body           TEXT NOT NULL
) STRICT;

CREATE TABLE workspace_snapshots (
    run_id        INTEGER NOT NULL PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    account_count INTEGER NOT NULL,
    group_count   INTEGER NOT NULL,
    body          TEXT NOT NULL
) STRICT;

INSERT INTO directory_snapshots (run_id, identity_count, body)
SELECT r.id,
       (SELECT count(*) FROM directory_identities i WHERE i.run_id = r.id),
       (SELECT json_group_array(json_object(
                   'id', i.id,
                   'user_name', i.user_name,
                   'email', i.email,
                   'given_name', i.given_name,
                   'family_name', i.family_name,
                   'display_name', i.display_name,
                   'status', i.status,
                   'department', i.department,
                   'groups', json((SELECT json_group_array(m.group_name ORDER BY m.pos)
                                   FROM directory_memberships m
                                   WHERE m.run_id = i.run_id AND m.identity_pos = i.pos)))
                   ORDER BY i.pos)
        FROM directory_identities i WHERE i.run_id = r.id)
FROM runs r WHERE r.directory_complete IS NOT NULL;

INSERT INTO workspace_snapshots (run_id, account_count, group_count, body)
SELECT r.id,
       (SELECT count(*) FROM workspace_accounts a WHERE a.run_id = r.id),
       (SELECT count(*) FROM workspace_groups g WHERE g.run_id = r.id),
       json_object(
           'accounts', json((SELECT json_group_array(json_object(
                                 'id', a.id,
                                 'user_name', a.user_name,
                                 'external_id', a.external_id,
                                 'given_name', a.given_name,
                                 'family_name', a.family_name,
                                 'display_name', a.display_name,
                                 'email', a.email,
                                 'active', json(CASE a.active WHEN 1 THEN 'true' ELSE 'false' END),
                                 'roles', json(a.roles))
                                 ORDER BY a.pos)
                             FROM workspace_accounts a WHERE a.run_id = r.id)),
           'groups', json((SELECT json_group_array(json_object(
                               'id', g.id,
                               'display_name', g.display_name,
                               'members', json((SELECT json_group_array(m.account_id ORDER BY m.pos)
                                                FROM workspace_memberships m
                                                WHERE m.run_id = g.run_id AND m.group_pos = g.pos)))
                               ORDER BY g.pos)
                           FROM workspace_groups g WHERE g.run_id = r.id)))
FROM runs r WHERE r.workspace_saved = 1;

DROP TABLE directory_memberships;
DROP TABLE directory_identities;
DROP TABLE workspace_memberships;
DROP TABLE workspace_groups;
DROP TABLE workspace_accounts;
"#;

/// A plan's drift items become one JSON document per run, like the snapshots:
/// a first run over 10k people has about 30,000 of them, and nothing queries them
/// one by one. The documents keep plan order.
pub(crate) const M_DRIFT_DOCUMENTS: &str = r#"
CREATE TABLE plan_drift (
    run_id     INTEGER NOT NULL PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    item_count INTEGER NOT NULL,
    body       TEXT NOT NULL
) STRICT;

INSERT INTO plan_drift (run_id, item_count, body)
SELECT run_id,
       count(*),
       json_group_array(json_object(
           'kind', kind,
           'identity_id', identity_id,
           'account_id', account_id,
           'user_name', user_name,
           'detail', detail)
           ORDER BY seq)
FROM drift_items GROUP BY run_id;

DROP TABLE drift_items;
"#;

/// Pending drift (settle key → first seen) becomes one JSON document, rewritten
/// each run: a first run over 10k people upserted 9,485 `drift_seen` rows one by
/// one (about 120 ms), and the settle check reads the whole set anyway.
pub(crate) const M_PENDING_DRIFT_DOCUMENT: &str = r#"
CREATE TABLE pending_drift (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    key_count INTEGER NOT NULL CHECK (key_count >= 0),
    body      TEXT NOT NULL -- {"settle key": "first seen (RFC 3339)", ...}
) STRICT;

INSERT INTO pending_drift (id, key_count, body)
SELECT 1, count(*), json_group_object(key, first_seen)
FROM drift_seen HAVING count(*) > 0;

DROP TABLE drift_seen;
"#;

/// Migration: the journal's and the links' value checks are written as `=`
/// comparisons joined by `OR` instead of `IN (...)` lists, which is the same
/// constraint.
///
/// SQLite compiles a `CHECK (x IN ('a', 'b'))` into a temporary b-tree that it
/// builds every time the statement runs, so for every row: each action is written
/// three times (planned, in flight, applied) and a first run stores a link per
/// matched account. Without them, perf measured saving a 10k-create plan in
/// 0.18 s instead of 0.30 s, and storing a first run's 100k links in 0.40 s
/// instead of 0.98 s (BENCHMARKS.md, "Session 9"). A check cannot be altered, so
/// both tables are copied and renamed, with the same columns, keys and indexes;
/// nothing references them.
pub(crate) const M_CHECKS_WITHOUT_IN_LISTS: &str = r#"
CREATE TABLE actions_checked (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    identity_id TEXT,
    account_id  TEXT,
    payload     TEXT NOT NULL, -- the whole model::Action as JSON
    state       TEXT NOT NULL
                CHECK (state = 'planned' OR state = 'in_flight' OR state = 'applied'
                       OR state = 'failed' OR state = 'held'),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  TEXT,
    result      TEXT, -- JSON, e.g. {"account_id": "..."} for creates
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO actions_checked
    (run_id, seq, kind, reason, subject, identity_id, account_id, payload, state,
     attempts, last_error, result, created_at, updated_at)
SELECT run_id, seq, kind, reason, subject, identity_id, account_id, payload, state,
       attempts, last_error, result, created_at, updated_at
FROM actions;
DROP TABLE actions;
ALTER TABLE actions_checked RENAME TO actions;
CREATE INDEX actions_identity ON actions (identity_id);
CREATE INDEX actions_account ON actions (account_id);
CREATE INDEX actions_in_flight ON actions (run_id, seq) WHERE state = 'in_flight';
CREATE INDEX actions_recent_deprovisions ON actions (updated_at)
    WHERE kind IN ('deactivate', 'delete');
CREATE INDEX actions_recent_downgrades ON actions (updated_at)
    WHERE kind IN ('remove_members', 'set_role');

CREATE TABLE links_checked (
    identity_id TEXT NOT NULL PRIMARY KEY,
    account_id  TEXT NOT NULL UNIQUE,
    method      TEXT NOT NULL
                CHECK (method = 'external_id' OR method = 'user_name' OR method = 'email'
                       OR method = 'created' OR method = 'adopted'),
    linked_at   TEXT NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO links_checked (identity_id, account_id, method, linked_at)
    SELECT identity_id, account_id, method, linked_at FROM links;
DROP TABLE links;
ALTER TABLE links_checked RENAME TO links;
"#;

/// Migration 11: links may be `manual` (`seatwarden link`). SQLite cannot change
/// a CHECK in place, so the table is copied, as migration 10 did.
pub(crate) const M_MANUAL_LINKS: &str = r#"
CREATE TABLE links_manual (
    identity_id TEXT NOT NULL PRIMARY KEY,
    account_id  TEXT NOT NULL UNIQUE,
    method      TEXT NOT NULL
                CHECK (method = 'external_id' OR method = 'user_name' OR method = 'email'
                       OR method = 'created' OR method = 'adopted' OR method = 'manual'),
    linked_at   TEXT NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO links_manual (identity_id, account_id, method, linked_at)
    SELECT identity_id, account_id, method, linked_at FROM links;
DROP TABLE links;
ALTER TABLE links_manual RENAME TO links;
"#;

/// Migration 12: the retention clock of `deprovision.delete_after`, one row per
/// deactivated account of a person without access, with when it was first seen
/// so. Not pruned with the runs: the retention may be longer than theirs.
pub(crate) const M_DEACTIVATED_SINCE: &str = r#"
CREATE TABLE deactivated_accounts (
    account_id TEXT NOT NULL PRIMARY KEY,
    since      TEXT NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// Migration 13: runs and jobs gain the `stopped` status. A reconcile the
/// daemon's SIGTERM stopped finished what it had sent and left the rest for the
/// next run: recorded as `failed`, every restart during a run read as a failure
/// in the digest, `status` and the job metrics. SQLite cannot alter a CHECK, so
/// both tables are copied and renamed (foreign keys are off while migrating, so
/// the copy of `runs` cascades into nothing). The `runs` AUTOINCREMENT counter is
/// carried over: copying the rows alone would set it to the highest id left,
/// and after the newest runs were pruned a new run could take an old run's id.
pub(crate) const M_STOPPED_STATUS: &str = r#"
CREATE TABLE runs_stopped (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    kind               TEXT NOT NULL
                       CHECK (kind = 'plan' OR kind = 'reconcile' OR kind = 'dry_run'
                              OR kind = 'sweep'),
    status             TEXT NOT NULL
                       CHECK (status = 'running' OR status = 'succeeded' OR status = 'failed'
                              OR status = 'stopped'),
    started_at         TEXT NOT NULL,
    finished_at        TEXT,
    error              TEXT,
    directory_complete INTEGER CHECK (directory_complete IN (0, 1)),
    workspace_saved    INTEGER NOT NULL DEFAULT 0 CHECK (workspace_saved IN (0, 1))
) STRICT;
INSERT INTO runs_stopped
    (id, kind, status, started_at, finished_at, error, directory_complete, workspace_saved)
SELECT id, kind, status, started_at, finished_at, error, directory_complete, workspace_saved
FROM runs;
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0))
WHERE name = 'runs_stopped';
DROP TABLE runs;
ALTER TABLE runs_stopped RENAME TO runs;
CREATE INDEX runs_kind ON runs (kind, id);

CREATE TABLE jobs_stopped (
    name             TEXT NOT NULL PRIMARY KEY,
    last_started_at  TEXT,
    last_finished_at TEXT,
    last_status      TEXT
                     CHECK (last_status = 'running' OR last_status = 'succeeded'
                            OR last_status = 'failed' OR last_status = 'stopped'),
    last_error       TEXT,
    last_success_at  TEXT
) STRICT;
INSERT INTO jobs_stopped
    (name, last_started_at, last_finished_at, last_status, last_error, last_success_at)
SELECT name, last_started_at, last_finished_at, last_status, last_error, last_success_at
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_stopped RENAME TO jobs;
"#;

/// Migration 14: alert mails thread. `alerts.thread_root` is the Message-ID of the
/// first mail of an alert (NULL for alerts raised before this migration: their
/// next mail starts the thread), `outbox.in_reply_to` the one a reminder or a
/// resolution follows. A Message-ID, not an outbox id: the first mail's row may be
/// pruned while its alert is still active.
pub(crate) const M_ALERT_THREADS: &str = r#"
ALTER TABLE alerts ADD COLUMN thread_root TEXT;
ALTER TABLE outbox ADD COLUMN in_reply_to TEXT;
"#;

/// Migration 15: the accounts each disputed person may have
/// (`Plan::disputed_candidates`), replaced whole by each reconcile that read both
/// sides whole. Once the directory no longer has a disputed person, this is all
/// that ties them to those accounts. Not pruned with the runs: a person may be
/// deleted long after their match was last disputed.
pub(crate) const M_DISPUTED_CANDIDATES: &str = r#"
CREATE TABLE disputed_candidates (
    identity_id TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    method      TEXT NOT NULL
                CHECK (method = 'external_id' OR method = 'user_name' OR method = 'email'),
    PRIMARY KEY (identity_id, account_id)
) STRICT, WITHOUT ROWID;
"#;

/// Migration 16: `held_decisions.decided_in`, the run whose decision a row
/// records when it is not the row's own run's: `seatwarden reject N` also
/// decides the older runs' undecided holds of the same actions (the newest
/// decision about an action wins), and those rows name run N. NULL: decided on
/// the row's own run (every row written before this migration).
pub(crate) const M_DECIDED_IN: &str = r#"
ALTER TABLE held_decisions ADD COLUMN decided_in INTEGER;
"#;

/// Migration 17: a resolution held while a flapping condition may come back.
/// `alerts.cleared_at` is when an active alert's condition was seen clear (its
/// `Resolved: ` mail waits until it has stayed clear for
/// `report.email.resolve_after`; a job that finds it again clears it), `flaps`
/// how often it came back meanwhile. Every alert of an older database holds no
/// resolution (NULL) and has not flapped (0): it resolves as it did.
pub(crate) const M_ALERT_CLEARED: &str = r#"
ALTER TABLE alerts ADD COLUMN cleared_at TEXT;
ALTER TABLE alerts ADD COLUMN flaps INTEGER NOT NULL DEFAULT 0 CHECK (flaps >= 0);
"#;

/// Migration 18: `deprovisions.excepted_until`, the end of the exception
/// (`safety.exceptions`) that last put an episode off: its SLA clock runs from
/// then, and its due time was moved to that end plus the SLA. NULL: never put
/// off (every episode of an older database).
pub(crate) const M_EXCEPTED_UNTIL: &str = r#"
ALTER TABLE deprovisions ADD COLUMN excepted_until TEXT;
"#;

/// Migration 19: `runs.directory_refused`, 1 when the source check refused the
/// run's directory (empty, or shrunk past `safety.max_directory_shrink_percent`).
/// It is set when the check runs, before the run stores its workspace snapshot,
/// so a run that saved both snapshots and then failed or crashed before its
/// report is never taken for one whose directory was sound (`explain`,
/// `export`, `link` and the sweep read the newest such run). Runs of an older
/// database take it from their stored report; one without a report stays 0, as
/// it was read before.
pub(crate) const M_DIRECTORY_REFUSED: &str = r#"
ALTER TABLE runs ADD COLUMN directory_refused INTEGER NOT NULL DEFAULT 0
    CHECK (directory_refused IN (0, 1));
UPDATE runs SET directory_refused = 1
WHERE EXISTS (SELECT 1 FROM reports WHERE reports.run_id = runs.id
              AND reports.json ->> '$.safety.source_fault' IS NOT NULL);
"#;

/// Migration 20: `runs.directory_refused_why`, what the source check said as it
/// refused the run's directory. A run that fails or is killed after the check
/// stores no report, and `report --run`, where `export`, `explain` and
/// `approve` send the operator, then told only that it failed. Older refused
/// runs keep it empty: those with a report say why there; for those without,
/// `report --run` says the reason was not kept and that their log has it.
pub(crate) const M_DIRECTORY_REFUSED_WHY: &str = r#"
ALTER TABLE runs ADD COLUMN directory_refused_why TEXT;
"#;

/// Migration 21: `disputed_candidates.duplicate_of`, the account a person was
/// linked to when the row was remembered as their duplicate (NULL: a disputed
/// match). Once retention deletes that account, it is all that says the
/// person's dispute was settled, so their duplicate is deprovisioned (and
/// deleted at its own due time) instead of disputed again for good. Rows of an
/// older database are disputes (NULL): a duplicate among them is marked again
/// by the first reconcile that still finds its person's linked account.
pub(crate) const M_DUPLICATE_OF: &str = r#"
ALTER TABLE disputed_candidates ADD COLUMN duplicate_of TEXT;
"#;

/// Migration 22: `disputed_candidates.email`, the person's directory email
/// when the directory last had them. A duplicate remembered for someone the
/// directory deleted stays theirs only while it still matches them by a rule
/// (their id, userName or email): one renamed since is an unmatched account,
/// never deleted as theirs. Rows of an older database keep no email (NULL):
/// a duplicate among them remembered by email stays theirs, and the first
/// reconcile keeps the address its account shows then.
pub(crate) const M_CANDIDATE_EMAIL: &str = r#"
ALTER TABLE disputed_candidates ADD COLUMN email TEXT;
"#;

pub(crate) const MIGRATIONS: &[&str] = &[
    M1,
    M2,
    M_SAFETY,
    M_OUTBOX,
    M_JOURNAL_INDEXES,
    M_LINKS_CLUSTERED,
    M_SNAPSHOT_DOCUMENTS,
    M_DRIFT_DOCUMENTS,
    M_PENDING_DRIFT_DOCUMENT,
    M_CHECKS_WITHOUT_IN_LISTS,
    M_MANUAL_LINKS,
    M_DEACTIVATED_SINCE,
    M_STOPPED_STATUS,
    M_ALERT_THREADS,
    M_DISPUTED_CANDIDATES,
    M_DECIDED_IN,
    M_ALERT_CLEARED,
    M_EXCEPTED_UNTIL,
    M_DIRECTORY_REFUSED,
    M_DIRECTORY_REFUSED_WHY,
    M_DUPLICATE_OF,
    M_CANDIDATE_EMAIL,
];

/// The schema version this binary writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`LATEST`]; `path` is only for messages.
///
/// Foreign keys are off while migrating (the pragma is a no-op inside a
/// transaction, so it is set around them): a migration that rebuilds a table must
/// not cascade deletes into the tables referencing it. The keys are checked after
/// each migration, before the next one runs.
pub(crate) fn migrate(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let pragma_error = |source| StoreError::Migration {
        path: path.to_owned(),
        version: LATEST,
        source,
    };
    let enforced: bool = conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .map_err(pragma_error)?;
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(pragma_error)?;
    let result = migrate_all(conn, path);
    conn.pragma_update(None, "foreign_keys", enforced)
        .map_err(pragma_error)?;
    result
}

/// Every pending migration in one transaction: a database is upgraded whole or
/// not at all, and a new one costs one commit (one fsync under `synchronous=FULL`)
/// instead of one per migration — about 40 ms of a first run at 10k identities.
fn migrate_all(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    // Looked at first without the write lock: every command opens the database
    // this way, and a read-only one (`status`, `report`, `explain`, `export`)
    // would otherwise wait behind a daemon job's long write (the prune's VACUUM,
    // a large snapshot) and fail with "database is locked" after the busy
    // timeout. A version, once reached, never goes back, so an up-to-date one
    // needs nothing more.
    let seen: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::Migration {
            path: path.to_owned(),
            version: LATEST,
            source,
        })?;
    if seen > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: seen,
            supported: LATEST,
        });
    }
    if seen == LATEST {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|source| StoreError::Migration {
            path: path.to_owned(),
            version: LATEST,
            source,
        })?;
    // Read the version inside the write lock: another process may have migrated
    // the file while we waited for it.
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::Migration {
            path: path.to_owned(),
            version: LATEST,
            source,
        })?;
    if found > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported: LATEST,
        });
    }
    if found == LATEST {
        return Ok(());
    }
    for current in found..LATEST {
        let next = current + 1;
        let migration_error = |source| StoreError::Migration {
            path: path.to_owned(),
            version: next,
            source,
        };
        let sql = usize::try_from(current)
            .ok()
            .and_then(|index| MIGRATIONS.get(index))
            .ok_or_else(|| StoreError::Migration {
                path: path.to_owned(),
                version: next,
                source: rusqlite::Error::InvalidQuery,
            })?;
        tx.execute_batch(sql).map_err(migration_error)?;
        let dangling: i64 = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .map_err(migration_error)?;
        if dangling > 0 {
            return Err(migration_error(rusqlite::Error::InvalidQuery));
        }
    }
    tx.pragma_update(None, "user_version", LATEST)
        .map_err(|source| StoreError::Migration {
            path: path.to_owned(),
            version: LATEST,
            source,
        })?;
    tx.commit().map_err(|source| StoreError::Migration {
        path: path.to_owned(),
        version: LATEST,
        source,
    })
}
