//! The mail outbox and alert state. A message is stored before any attempt to send
//! it and marked `sent` only after the SMTP server accepted it; an alert's state
//! (when it was last sent, whether its resolution went out) is saved in the same
//! transaction as the message it caused, so a crash cannot send an alert without
//! recording it, nor record it without queueing the message. That transaction
//! first checks that the alert rows the decision was read from are unchanged
//! ([`Store::record_alerts`]), so two connections cannot both send it.
//!
//! A next attempt further ahead than any the mail module schedules
//! ([`LONGEST_WAIT`]) was set by a clock since stepped back, and is due now.
//!
//! A pending row's `sent_at` is the time a sender claimed it
//! ([`Store::claim_message`]), cleared when the attempt fails: it tells a claim
//! (a send in flight, never to be taken) from a backoff (a wait that
//! [`Store::release_waiting`] may cut short) without a column of its own.
//! [`OutboxEntry::sent_at`] shows it only for a `sent` row. A claim outlives its
//! sender only while another sender is alive: one that finds itself alone
//! ([`super::SenderLock`]) releases it ([`Store::release_dead_claims`]).

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::codec::{Ts, ts};
use super::error::Context;
use super::{RUN_COLUMNS, RunId, RunRecord, Store, StoreError, run_record};

pub type OutboxId = i64;

/// The furthest ahead a pending message's next attempt is ever set by a clock that
/// kept time: the redelivery backoff stops at an hour (`mail::redelivery_delay`)
/// and a sender's claim holds a message for ten minutes to an hour, as long as
/// its send may take (`mail::deliver_due`); an hour of margin on top of the
/// backoff, as `sla::longest_wait` allows. Further ahead than this,
/// the attempt was scheduled before the clock was stepped back (NTP, a restored
/// VM): it is due now, not once the clock has caught up, with an alert waiting.
pub(crate) const LONGEST_WAIT: chrono::Duration = chrono::Duration::minutes(60 + 10 + 60);

/// `now + LONGEST_WAIT`: a next attempt after it is due (see [`LONGEST_WAIT`]).
fn stepped_after(now: DateTime<Utc>) -> DateTime<Utc> {
    now.checked_add_signed(LONGEST_WAIT)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The pending messages as `seatwarden status` tells them at `now`
/// ([`Store::outbox_waiting`]): how many go at the next delivery call, how many
/// wait for their next attempt and when the first of those is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxWaiting {
    /// Pending and due now: the mail job (each minute) sends them next.
    pub due: usize,
    /// Pending and waiting for their next attempt: a failed attempt's backoff,
    /// or put off with a message whose login the relay refused.
    pub waiting: usize,
    /// Pending and being sent now (a sender's claim).
    pub sending: usize,
    /// Refused for good (`failed`), until the prune removes them.
    pub failed: usize,
    /// The soonest next attempt of those `waiting`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last error of the oldest pending message that failed an attempt: the
    /// one the others wait behind.
    pub last_error: Option<String>,
}

/// Why a message was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    Report,
    Digest,
    Alert,
    Resolution,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Report => "report",
            OutboxKind::Digest => "digest",
            OutboxKind::Alert => "alert",
            OutboxKind::Resolution => "resolution",
        }
    }

    fn parse(text: &str) -> Option<OutboxKind> {
        [
            OutboxKind::Report,
            OutboxKind::Digest,
            OutboxKind::Alert,
            OutboxKind::Resolution,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

impl fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Pending` until the server accepts the message (`Sent`) or refuses it for good
/// (`Failed`, kept with the server's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    Sent,
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<OutboxState> {
        [OutboxState::Pending, OutboxState::Sent, OutboxState::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A message to queue. Addresses were validated by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub kind: OutboxKind,
    pub subject: String,
    pub from: String,
    pub to: Vec<String>,
    pub text: String,
    pub html: String,
    /// The Message-ID of the mail this one follows (an alert's first mail, for
    /// its reminders and its resolution): sent as `In-Reply-To` and `References`
    /// so mail clients show them as one thread.
    #[serde(default)]
    pub in_reply_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: OutboxId,
    pub message: NewMessage,
    pub state: OutboxState,
    pub attempts: u32,
    /// The server's or the connection's last answer, for `failed` and retried rows.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl OutboxEntry {
    /// This message's Message-ID, derived from its row so that a message sent
    /// again after a crash is the same message.
    pub fn message_id(&self) -> String {
        message_id(self.id, self.created_at, &self.message.from)
    }

    /// The mail thread it belongs to: the Message-ID of the mail it follows (an
    /// alert's reminders and resolution), else its own.
    pub fn thread(&self) -> String {
        self.message
            .in_reply_to
            .clone()
            .unwrap_or_else(|| self.message_id())
    }
}

/// The Message-ID of the outbox row `id` queued at `created_at` from `from`.
fn message_id(id: OutboxId, created_at: DateTime<Utc>, from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .unwrap_or("seatwarden.invalid");
    format!("<seatwarden.{id}.{}@{domain}>", created_at.timestamp())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRecordState {
    Active,
    Resolved,
}

impl AlertRecordState {
    fn as_str(self) -> &'static str {
        match self {
            AlertRecordState::Active => "active",
            AlertRecordState::Resolved => "resolved",
        }
    }
}

/// What the store remembers about one alert condition (by key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub key: String,
    /// The condition as JSON, as last raised (for the resolution message).
    pub condition: String,
    pub state: AlertRecordState,
    pub first_raised_at: DateTime<Utc>,
    pub last_sent_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Raises inside the quiet period since the last message.
    pub suppressed: u32,
    /// The Message-ID of the alert's first mail, which its reminders and its
    /// resolution follow; `None` until [`Store::record_alerts`] queues that mail.
    pub thread_root: Option<String>,
    /// When the condition was seen clear while the alert stays active: its
    /// resolution is held until it has stayed clear for `report.email.resolve_after`
    /// ([`crate::alert::decide_resolve`]); `None` while it holds (or is resolved).
    pub cleared_at: Option<DateTime<Utc>>,
    /// How often the condition came back while its resolution was held, since it
    /// was first raised: a flapping condition's count, which its reminders and
    /// its resolution tell instead of a mail per flip.
    pub flaps: u32,
}

const OUTBOX_COLUMNS: &str = "id, kind, subject, mail_from, mail_to, text_body, html_body, state, \
     attempts, last_error, created_at, next_attempt_at, sent_at, in_reply_to";

fn corrupt(detail: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(super::codec::BadValue(detail)),
    )
}

fn outbox_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    let kind: String = row.get(1)?;
    let to: String = row.get(4)?;
    let state: String = row.get(7)?;
    Ok(OutboxEntry {
        id: row.get(0)?,
        message: NewMessage {
            kind: OutboxKind::parse(&kind)
                .ok_or_else(|| corrupt("invalid outbox kind".to_owned()))?,
            subject: row.get(2)?,
            from: row.get(3)?,
            to: serde_json::from_str(&to)
                .map_err(|e| corrupt(format!("mail_to is not a JSON list: {e}")))?,
            text: row.get(5)?,
            html: row.get(6)?,
            in_reply_to: row.get(13)?,
        },
        state: OutboxState::parse(&state)
            .ok_or_else(|| corrupt("invalid outbox state".to_owned()))?,
        attempts: row.get(8)?,
        last_error: row.get(9)?,
        created_at: row.get::<_, Ts>(10)?.0,
        next_attempt_at: row.get::<_, Ts>(11)?.0,
        // On a pending row, the time of its claim (see the module doc).
        sent_at: row
            .get::<_, Option<Ts>>(12)?
            .map(|t| t.0)
            .filter(|_| state == OutboxState::Sent.as_str()),
    })
}

fn alert_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRecord> {
    let state: String = row.get(2)?;
    Ok(AlertRecord {
        key: row.get(0)?,
        condition: row.get(1)?,
        state: match state.as_str() {
            "active" => AlertRecordState::Active,
            "resolved" => AlertRecordState::Resolved,
            _ => return Err(corrupt("invalid alert state".to_owned())),
        },
        first_raised_at: row.get::<_, Ts>(3)?.0,
        last_sent_at: row.get::<_, Ts>(4)?.0,
        resolved_at: row.get::<_, Option<Ts>>(5)?.map(|t| t.0),
        suppressed: row.get(6)?,
        thread_root: row.get(7)?,
        cleared_at: row.get::<_, Option<Ts>>(8)?.map(|t| t.0),
        flaps: row.get(9)?,
    })
}

/// The alert rows a decision was made from, checked again when it is written
/// ([`Store::record_alerts`]).
#[derive(Debug, Clone, Copy)]
pub enum AlertsSeen<'a> {
    /// The row of one key, or its absence.
    Key {
        key: &'a str,
        record: Option<&'a AlertRecord>,
    },
    /// Every active row whose key starts with `prefix`, by key
    /// ([`Store::active_alerts_under`]).
    ActiveUnder {
        prefix: &'a str,
        records: &'a [AlertRecord],
    },
}

const ALERT_COLUMNS: &str = "key, condition, state, first_raised_at, last_sent_at, resolved_at, \
     suppressed, thread_root, cleared_at, flaps";

fn alert_row(conn: &rusqlite::Connection, key: &str) -> Result<Option<AlertRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE key = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([key], alert_record).optional())
    .context(|| "reading an alert from alerts".to_owned())
}

fn active_alerts_under(
    conn: &rusqlite::Connection,
    prefix: &str,
) -> Result<Vec<AlertRecord>, StoreError> {
    // substr, not LIKE: `_` in a prefix is a LIKE wildcard.
    conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts
         WHERE state = 'active' AND substr(key, 1, length(?1)) = ?1 ORDER BY key"
    ))
    .and_then(|mut stmt| stmt.query_map([prefix], alert_record)?.collect())
    .context(|| format!("reading the active {prefix} alerts from alerts"))
}

fn insert_message(
    conn: &rusqlite::Connection,
    message: &NewMessage,
    now: DateTime<Utc>,
) -> Result<OutboxId, StoreError> {
    let to = serde_json::to_string(&message.to).map_err(|source| StoreError::Encode {
        context: "queueing a message in outbox".to_owned(),
        source,
    })?;
    conn.prepare_cached(
        "INSERT INTO outbox (kind, subject, mail_from, mail_to, text_body, html_body, state,
                             created_at, next_attempt_at, in_reply_to)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.insert(params![
            message.kind.as_str(),
            message.subject,
            message.from,
            to,
            message.text,
            message.html,
            ts(now),
            message.in_reply_to,
        ])
    })
    .context(|| format!("queueing a {} message in outbox", message.kind))
}

/// A person's held deprovision nobody is to approve any more
/// ([`Store::decided_holds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedHold {
    /// The run that held it.
    pub run: RunId,
    /// Why `approve`'s re-check refused it; `None`: it was rejected.
    pub refused: Option<String>,
    /// Who decided, as the audit names them: the `reject`'s operator, or the
    /// `approve`'s whose re-check refused it (from the audit trail: `None` when
    /// it has no row for that approval).
    pub by: Option<String>,
    /// When: the rejection's time, or the refusal's (the row's last change).
    pub at: Option<DateTime<Utc>>,
}

impl Store {
    /// Queues a message; it is due at once.
    pub fn enqueue_message(
        &mut self,
        message: &NewMessage,
        now: DateTime<Utc>,
    ) -> Result<OutboxId, StoreError> {
        insert_message(&self.conn, message, now)
    }

    /// Queues a message and sets `daemon_state` values (`(key, value)` pairs) in
    /// one IMMEDIATE transaction: all are written or none. The digest job queues
    /// its digest and records the period it covers so; written one after the
    /// other, a crash or a busy database between them would have the next digest
    /// cover the same period again (a second message, counts doubled).
    pub fn enqueue_message_setting_state(
        &mut self,
        message: &NewMessage,
        now: DateTime<Utc>,
        state: &[(&str, &str)],
    ) -> Result<OutboxId, StoreError> {
        let tx = self.write_tx(|| format!("queueing a {} message", message.kind))?;
        let id = insert_message(&tx, message, now)?;
        for (key, value) in state {
            tx.prepare_cached(
                "INSERT INTO daemon_state (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute(params![key, value]))
            .context(|| format!("writing {key:?} to daemon_state"))?;
        }
        tx.commit()
            .context(|| format!("committing a {} message and its daemon_state", message.kind))?;
        Ok(id)
    }

    /// Pending messages whose next attempt is due at `now` (or is further ahead than
    /// [`LONGEST_WAIT`]), oldest first.
    pub fn due_messages(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox
                 WHERE state = 'pending' AND (next_attempt_at <= ?1 OR next_attempt_at > ?3)
                 ORDER BY id LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![ts(now), limit, ts(stepped_after(now))],
                    outbox_entry,
                )?
                .collect()
            })
            .context(|| "reading due messages from outbox".to_owned())
    }

    /// The mail thread of every message not sent yet and not failed for good,
    /// oldest first, whether due or waiting for its next attempt: the Message-ID
    /// of the mail it follows (an alert's reminders and resolution), else its own.
    /// Bodies are not read: after days of a relay outage the waiting digests add up.
    pub fn pending_threads(&self) -> Result<Vec<(OutboxId, String)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, created_at, mail_from, in_reply_to FROM outbox
                 WHERE state = 'pending' ORDER BY id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    let id: OutboxId = row.get(0)?;
                    let created_at = row.get::<_, Ts>(1)?.0;
                    let from: String = row.get(2)?;
                    let in_reply_to: Option<String> = row.get(3)?;
                    Ok((
                        id,
                        in_reply_to.unwrap_or_else(|| message_id(id, created_at, &from)),
                    ))
                })?
                .collect()
            })
            .context(|| "reading the threads of pending messages from outbox".to_owned())
    }

    /// The pending and failed messages at `now` ([`OutboxWaiting`]). A next
    /// attempt further ahead than [`LONGEST_WAIT`] is due, as
    /// [`Store::due_messages`] takes it; a claimed row is being sent.
    pub fn outbox_waiting(&self, now: DateTime<Utc>) -> Result<OutboxWaiting, StoreError> {
        let context = || "counting the messages waiting in outbox".to_owned();
        let (due, waiting, sending, failed, next) = self
            .conn
            .prepare_cached(
                "SELECT
                   coalesce(sum(state = 'pending' AND sent_at IS NULL
                                AND (next_attempt_at <= ?1 OR next_attempt_at > ?2)), 0),
                   coalesce(sum(state = 'pending' AND sent_at IS NULL
                                AND next_attempt_at > ?1 AND next_attempt_at <= ?2), 0),
                   coalesce(sum(state = 'pending' AND sent_at IS NOT NULL), 0),
                   coalesce(sum(state = 'failed'), 0),
                   min(CASE WHEN state = 'pending' AND sent_at IS NULL
                                 AND next_attempt_at > ?1 AND next_attempt_at <= ?2
                            THEN next_attempt_at END)
                 FROM outbox WHERE state IN ('pending', 'failed')",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![ts(now), ts(stepped_after(now))], |row| {
                    let count = |i| {
                        row.get::<_, i64>(i)
                            .map(|n| usize::try_from(n).unwrap_or(0))
                    };
                    Ok((
                        count(0)?,
                        count(1)?,
                        count(2)?,
                        count(3)?,
                        row.get::<_, Option<Ts>>(4)?.map(|Ts(at)| at),
                    ))
                })
            })
            .context(context)?;
        let last_error = self
            .conn
            .prepare_cached(
                "SELECT last_error FROM outbox
                 WHERE state = 'pending' AND attempts > 0 AND last_error IS NOT NULL
                 ORDER BY id LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
            .context(context)?;
        Ok(OutboxWaiting {
            due,
            waiting,
            sending,
            failed,
            next_attempt_at: next,
            last_error,
        })
    }

    /// Every message, oldest first (status output and tests).
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id"))
            .and_then(|mut stmt| stmt.query_map([], outbox_entry)?.collect())
            .context(|| "reading outbox".to_owned())
    }

    /// Takes a due message for one sender until `until`: false when another
    /// sender (a job beside this one, `seatwarden send-mail` in a shell) took it
    /// first, so one message is not sent twice. A sender that dies holding it
    /// leaves it to be sent again once `until` has passed, or at once by the
    /// next sender that finds no other alive ([`Store::release_dead_claims`]).
    /// The claim is marked on the row (`sent_at`, see the module doc) so that
    /// [`Store::release_waiting`] leaves it alone.
    pub fn claim_message(
        &mut self,
        id: OutboxId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET next_attempt_at = ?3, sent_at = ?2
                 WHERE id = ?1 AND state = 'pending'
                   AND (next_attempt_at <= ?2 OR next_attempt_at > ?4)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![id, ts(now), ts(until), ts(stepped_after(now))])
            })
            .map(|changed| changed == 1)
            .context(|| format!("claiming message {id} in outbox"))
    }

    /// Makes every pending message waiting for its next attempt due at `now`
    /// (the relay took a message again, or the operator flushes the outbox by
    /// hand); returns how many. Not one a sender holds (claimed, its send in
    /// flight): that one would be sent twice. A claim left by a sender that died
    /// ends on its own, when its deadline passes.
    pub fn release_waiting(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET next_attempt_at = ?1
                 WHERE state = 'pending' AND next_attempt_at > ?1 AND sent_at IS NULL",
            )
            .and_then(|mut stmt| stmt.execute([ts(now)]))
            .context(|| {
                "making the messages waiting for their next attempt due in outbox".to_owned()
            })
    }

    /// Makes every claimed pending message due at `now`, its claim dropped (its
    /// attempts and last error unchanged); returns how many. Only for a sender
    /// that holds the sender lock alone ([`super::Senders::Alone`]): no sender
    /// that claimed them is alive, and each would otherwise wait until its claim
    /// ran out (ten minutes to an hour). One its dead sender had sent but not yet
    /// marked goes again, with the same Message-ID, as after any crash.
    pub fn release_dead_claims(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET next_attempt_at = ?1, sent_at = NULL
                 WHERE state = 'pending' AND sent_at IS NOT NULL",
            )
            .and_then(|mut stmt| stmt.execute([ts(now)]))
            .context(|| "releasing the claims of senders no longer alive in outbox".to_owned())
    }

    /// Moves the next attempt of every pending message due at `now` to `until`,
    /// its attempts and last error unchanged: the relay refused the session (our
    /// login, our sender), and each of them would be another refused login, a
    /// minute apart. A claimed message is not due, and is left to its sender.
    pub fn defer_due(
        &mut self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET next_attempt_at = ?2
                 WHERE state = 'pending' AND next_attempt_at <= ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![ts(now), ts(until)]))
            .context(|| "putting off the due messages in outbox".to_owned())
    }

    /// The server accepted the message.
    pub fn mark_message_sent(&mut self, id: OutboxId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.mark_message_sent_noting(id, at, None)
    }

    /// The server accepted the message, with `note` kept as its last error (the
    /// recipients it refused while accepting others).
    pub fn mark_message_sent_noting(
        &mut self,
        id: OutboxId,
        at: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = 'sent', sent_at = ?2, attempts = attempts + 1,
                        last_error = coalesce(?3, last_error)
                 WHERE id = ?1 AND state = 'pending'",
            )
            .and_then(|mut stmt| stmt.execute(params![id, ts(at), note]))
            .context(|| format!("marking message {id} sent in outbox"))?;
        Ok(())
    }

    /// A send attempt failed: retried at `retry_at`, or never again (`None`, the
    /// server refused the message for good).
    pub fn mark_message_attempt_failed(
        &mut self,
        id: OutboxId,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let (state, next) = match retry_at {
            Some(at) => (OutboxState::Pending, Some(ts(at))),
            None => (OutboxState::Failed, None),
        };
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3,
                        next_attempt_at = coalesce(?4, next_attempt_at), sent_at = NULL
                 WHERE id = ?1 AND state = 'pending'",
            )
            .and_then(|mut stmt| stmt.execute(params![id, state.as_str(), error, next]))
            .context(|| format!("recording a failed attempt of message {id} in outbox"))?;
        Ok(())
    }

    /// The stored state of one alert condition.
    pub fn alert(&self, key: &str) -> Result<Option<AlertRecord>, StoreError> {
        alert_row(&self.conn, key)
    }

    /// Alerts not yet resolved, by key.
    pub fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'active' ORDER BY key"
            ))
            .and_then(|mut stmt| stmt.query_map([], alert_record)?.collect())
            .context(|| "reading active alerts from alerts".to_owned())
    }

    /// For each person with a held deactivation or deletion nobody approved or
    /// rejected yet, the newest reconcile or sweep run that holds it: what an
    /// overdue alert names for `seatwarden approve RUN`. Not one held because its
    /// run's directory read was incomplete: `approve` refuses those. Nor one an
    /// approval's re-check refused ([`crate::model::REFUSED_BY_APPROVAL`]):
    /// approving again re-checks the same workspace; see [`Store::decided_holds`].
    pub fn held_for_approval(
        &self,
    ) -> Result<std::collections::HashMap<String, RunId>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT actions.identity_id, max(actions.run_id) FROM actions
                 JOIN runs ON runs.id = actions.run_id
                 LEFT JOIN held_decisions ON held_decisions.run_id = actions.run_id
                                         AND held_decisions.seq = actions.seq
                 WHERE actions.state = 'held' AND held_decisions.run_id IS NULL
                   AND actions.kind IN ('deactivate', 'delete')
                   AND (actions.payload ->> '$.held.rule') IS NOT 'incomplete_directory'
                   AND coalesce(instr(actions.last_error, ?1), 0) != 1
                   AND actions.identity_id IS NOT NULL
                   AND runs.kind IN ('reconcile', 'sweep')
                 GROUP BY actions.identity_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([crate::model::REFUSED_BY_APPROVAL], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect()
            })
            .context(|| "reading the held deprovisions awaiting approval from actions".to_owned())
    }

    /// For each person with a held deactivation or deletion that waits for no
    /// approval any more, the newest reconcile or sweep run's: rejected
    /// (`seatwarden reject`), or refused by an approval's re-check (and why).
    /// A rejected row counts whatever state an approval left it in before the
    /// rejection took that approval back (released `planned`, kept back or cut
    /// off `failed`), but not once sent: otherwise the episode the rejection
    /// held was told "waiting for `approve RUN`", which no run waited for.
    /// What `status` and the digest tell instead of "approve RUN" while no
    /// undecided hold ([`Store::held_for_approval`]) names the person.
    pub fn decided_holds(
        &self,
    ) -> Result<std::collections::HashMap<String, DecidedHold>, StoreError> {
        type Row = (
            String,
            RunId,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<Ts>,
        );
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(
                "SELECT actions.identity_id, actions.run_id, held_decisions.decision,
                        actions.last_error,
                        CASE WHEN held_decisions.run_id IS NOT NULL THEN held_decisions.user
                             ELSE (SELECT audit.user FROM audit
                                   WHERE audit.command = 'approve'
                                     AND audit.run_id = actions.run_id
                                     AND audit.at <= actions.updated_at
                                   ORDER BY audit.at DESC, audit.id DESC LIMIT 1) END,
                        coalesce(held_decisions.at, actions.updated_at)
                 FROM actions
                 JOIN runs ON runs.id = actions.run_id
                 LEFT JOIN held_decisions ON held_decisions.run_id = actions.run_id
                                         AND held_decisions.seq = actions.seq
                 WHERE actions.kind IN ('deactivate', 'delete')
                   AND actions.identity_id IS NOT NULL
                   AND runs.kind IN ('reconcile', 'sweep')
                   AND ((held_decisions.decision = 'rejected'
                         AND actions.state NOT IN ('applied', 'in_flight'))
                        OR (actions.state = 'held'
                            AND held_decisions.run_id IS NULL
                            AND coalesce(instr(actions.last_error, ?1), 0) = 1))
                 ORDER BY actions.run_id, actions.seq",
            )
            .and_then(|mut stmt| {
                stmt.query_map([crate::model::REFUSED_BY_APPROVAL], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                })?
                .collect()
            })
            .context(|| "reading the decided held deprovisions from actions".to_owned())?;
        // Ordered by run: the newest run's row is the one kept.
        Ok(rows
            .into_iter()
            .map(|(identity, run, decision, last_error, by, at)| {
                let refused = match decision {
                    Some(_) => None,
                    None => last_error.map(|e| {
                        e.strip_prefix(crate::model::REFUSED_BY_APPROVAL)
                            .unwrap_or(&e)
                            .to_owned()
                    }),
                };
                (
                    identity,
                    DecidedHold {
                        run,
                        refused,
                        by,
                        at: at.map(|at| at.0),
                    },
                )
            })
            .collect())
    }

    /// Active alerts whose key starts with `prefix` (one condition's per-person
    /// alerts), by key.
    pub fn active_alerts_under(&self, prefix: &str) -> Result<Vec<AlertRecord>, StoreError> {
        active_alerts_under(&self.conn, prefix)
    }

    /// Saves alerts' states and queues the messages they caused, in one IMMEDIATE
    /// transaction, if the alerts read as `seen` still do: the check and the write
    /// share the writer's lock, so two connections deciding from the same state
    /// (the mail job beside a sweep) cannot both queue the message. Returns the
    /// queued messages' ids, or `None` (nothing written) when the stored state
    /// changed since it was read: decide again from a fresh read.
    ///
    /// The first alert message queued (kind [`OutboxKind::Alert`]) is the first
    /// mail of every active alert in `records` that has no thread yet: its
    /// Message-ID becomes their `thread_root`, which their reminders and
    /// resolution then follow.
    pub fn record_alerts(
        &mut self,
        seen: AlertsSeen<'_>,
        records: &[AlertRecord],
        messages: &[NewMessage],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<OutboxId>>, StoreError> {
        let tx = self.write_tx(|| "recording alerts".to_owned())?;
        let unchanged = match seen {
            AlertsSeen::Key { key, record } => alert_row(&tx, key)?.as_ref() == record,
            AlertsSeen::ActiveUnder { prefix, records } => {
                active_alerts_under(&tx, prefix)? == records
            }
        };
        if !unchanged {
            return Ok(None);
        }
        let ids = messages
            .iter()
            .map(|message| insert_message(&tx, message, now))
            .collect::<Result<Vec<_>, _>>()?;
        let new_thread = messages
            .iter()
            .zip(&ids)
            .find(|(message, _)| message.kind == OutboxKind::Alert)
            .map(|(message, id)| message_id(*id, now, &message.from));
        for record in records {
            let thread_root = match (&record.thread_root, record.state) {
                (None, AlertRecordState::Active) => new_thread.as_ref(),
                (root, _) => root.as_ref(),
            };
            tx.prepare_cached(
                "INSERT INTO alerts (key, condition, state, first_raised_at, last_sent_at,
                                     resolved_at, suppressed, thread_root, cleared_at, flaps)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (key) DO UPDATE SET
                    condition = excluded.condition, state = excluded.state,
                    first_raised_at = excluded.first_raised_at,
                    last_sent_at = excluded.last_sent_at, resolved_at = excluded.resolved_at,
                    suppressed = excluded.suppressed, thread_root = excluded.thread_root,
                    cleared_at = excluded.cleared_at, flaps = excluded.flaps",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    record.key,
                    record.condition,
                    record.state.as_str(),
                    ts(record.first_raised_at),
                    ts(record.last_sent_at),
                    record.resolved_at.map(ts),
                    record.suppressed,
                    thread_root,
                    record.cleared_at.map(ts),
                    record.flaps,
                ])
            })
            .context(|| "saving an alert in alerts".to_owned())?;
        }
        tx.commit()
            .context(|| "committing alerts and their messages".to_owned())?;
        Ok(Some(ids))
    }

    /// Runs finished in `[from, to)` with their stored report JSON (`None` for a run
    /// that failed before its report), oldest first: the digest's input. By the
    /// finish, not the start: a run still going when one digest is built is counted
    /// by the next, once it has a report and an outcome.
    pub fn reports_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(RunRecord, Option<String>)>, StoreError> {
        let columns = RUN_COLUMNS
            .split(", ")
            .map(|c| format!("runs.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.conn
            .prepare_cached(&format!(
                "SELECT {columns}, reports.json FROM runs
                 LEFT JOIN reports ON reports.run_id = runs.id
                 WHERE runs.finished_at >= ?1 AND runs.finished_at < ?2
                 ORDER BY runs.id"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![ts(from), ts(to)], |row| {
                    Ok((run_record(row)?, row.get::<_, Option<String>>(6)?))
                })?
                .collect()
            })
            .context(|| "reading runs and reports for a period from runs".to_owned())
    }

    /// Runs still recorded as running, oldest first: the digest counts those a
    /// killed process left (no writer holds the lock, [`Store::run_and_whether_cut_off`])
    /// until the next writer closes them as failed.
    pub fn running_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY id"
            ))
            .and_then(|mut stmt| stmt.query_map([], run_record)?.collect())
            .context(|| "reading the runs recorded as running from runs".to_owned())
    }

    /// The latest run of any kind that has a stored report.
    pub fn latest_report(&self) -> Result<Option<(RunId, String)>, StoreError> {
        self.conn
            .prepare_cached("SELECT run_id, json FROM reports ORDER BY run_id DESC LIMIT 1")
            .and_then(|mut stmt| {
                stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .context(|| "reading the latest report from reports".to_owned())
    }

    /// The latest run finished before `at` that has a stored report: the drift a
    /// digest built at `at` showed, when no run of its period stored one.
    pub fn latest_report_finished_before(
        &self,
        at: DateTime<Utc>,
    ) -> Result<Option<(RunId, String)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT reports.run_id, reports.json FROM reports
                 JOIN runs ON runs.id = reports.run_id
                 WHERE runs.finished_at < ?1
                 ORDER BY reports.run_id DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([ts(at)], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .context(|| {
                "reading the latest report finished before an instant from reports".to_owned()
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn digest_message() -> NewMessage {
        NewMessage {
            kind: OutboxKind::Digest,
            subject: "digest".to_owned(),
            from: "seatwarden@example.com".to_owned(),
            to: vec!["it@example.com".to_owned()],
            text: "t".to_owned(),
            html: "<p>h</p>".to_owned(),
            in_reply_to: None,
        }
    }

    /// The message and the state value are one transaction: a failing state
    /// write leaves no message behind, and a successful call leaves both.
    #[test]
    fn a_message_and_its_state_value_are_written_together_or_not_at_all() {
        let mut store = Store::open_in_memory().unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .unwrap()
            .to_utc();
        store
            .conn
            .execute_batch(
                "CREATE TEMP TRIGGER refuse_state BEFORE INSERT ON daemon_state
                 BEGIN SELECT RAISE(ABORT, 'database is locked'); END;",
            )
            .unwrap();
        let refused =
            store.enqueue_message_setting_state(&digest_message(), now, &[("covered", "8:00")]);
        assert!(refused.is_err(), "{refused:?}");
        assert!(
            store.outbox().unwrap().is_empty(),
            "no message without its state"
        );
        assert_eq!(store.state_value("covered").unwrap(), None);

        store
            .conn
            .execute_batch("DROP TRIGGER refuse_state")
            .unwrap();
        let id = store
            .enqueue_message_setting_state(&digest_message(), now, &[("covered", "8:00")])
            .unwrap();
        assert_eq!(store.outbox().unwrap()[0].id, id);
        assert_eq!(
            store.state_value("covered").unwrap().as_deref(),
            Some("8:00")
        );
    }
}
