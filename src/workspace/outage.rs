//! Telling a workspace that stopped answering from one object it cannot serve.
//!
//! Each read that fails for a transient reason has already spent the client's
//! retries (about 20 s with the defaults). Against a workspace that is down, a
//! pass that reads object by object would spend that again for every object: a
//! verification of a hundred rows behind a killed workspace took 17 minutes. So a
//! pass (a verification, a sweep's account reads) watches its reads with an
//! [`Outage`], and once they show the workspace down, sends no further read; what
//! it leaves unread is decided as a read that failed would be.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::retry::Transient;

use super::{ScimClient, WorkspaceError};

/// How a read an [`Outage`] kept from being sent fails; the reason follows.
pub const NOT_READ: &str = "not read: the workspace stopped answering";

/// How many distinct objects must fail with a 5xx in a row, nothing answered
/// between, before a workspace that replies only 5xx is taken as down (a load
/// balancer in front of a dead service). One object that keeps failing is that
/// object's trouble, even when it is the only read in flight.
const FAILING_OBJECTS_FOR_OUTAGE: usize = 3;

/// Whether the workspace of one pass is down. Past the client's retries, a read
/// shows it down when
/// - nothing replied at all (no connection, a timeout, a dropped answer) while
///   nothing else the workspace was asked since that read began was answered; or
/// - it failed with a 5xx (or 408), and so did the reads of at least
///   [`FAILING_OBJECTS_FOR_OUTAGE`] distinct objects with nothing answered
///   between them.
///
/// A 5xx is a reply: the workspace is there, and one object it cannot serve (a
/// provider that 500s on one account) fails only its own reads, even when it is
/// the last read in flight and nothing else is asked meanwhile. A read failing
/// while others are answered is that object's own trouble too, and the pass reads
/// on. A 429 is a workspace pacing us, never an outage.
#[derive(Debug)]
pub struct Outage {
    client: ScimClient,
    down: OnceLock<String>,
    replies: Mutex<FailingReplies>,
}

/// Where the client's answers stood when a read began (see [`Outage::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStart(u64);

/// The objects whose reads failed with a 5xx since the workspace last answered.
#[derive(Debug, Default)]
struct FailingReplies {
    /// The client's answers when the first of them failed: once it moves, the
    /// workspace answered something and the run of failures ends.
    answers: u64,
    endpoints: HashSet<String>,
}

impl FailingReplies {
    /// Notes a read that failed with `error`, begun with the client at `before`
    /// answers and failed at `now`; returns why the workspace is down, if it is.
    fn note(&mut self, error: &WorkspaceError, before: u64, now: u64) -> Option<String> {
        if !error.is_transient() || error.status() == Some(429) || now != before {
            return None;
        }
        let WorkspaceError::Status { endpoint, .. } = error else {
            // Nothing replied, and nothing else was answered meanwhile.
            return Some(error.to_string());
        };
        if self.answers != now {
            *self = FailingReplies {
                answers: now,
                endpoints: HashSet::new(),
            };
        }
        self.endpoints.insert(endpoint.clone());
        let failing = self.endpoints.len();
        (failing >= FAILING_OBJECTS_FOR_OUTAGE).then(|| {
            format!("{error}; {failing} objects in a row failed so, and nothing was answered")
        })
    }
}

impl Outage {
    pub fn new(client: &ScimClient) -> Outage {
        Outage {
            client: client.clone(),
            down: OnceLock::new(),
            replies: Mutex::new(FailingReplies::default()),
        }
    }

    /// Taken as a read is about to be sent.
    pub fn start(&self) -> ReadStart {
        ReadStart(self.client.answers())
    }

    /// Notes a read begun at `start` that failed with `error`; returns whether the
    /// workspace is now taken as down.
    pub fn failed(&self, start: ReadStart, error: &WorkspaceError) -> bool {
        let now = self.client.answers();
        let down = self
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(error, start.0, now);
        if let Some(why) = down {
            let _ = self.down.set(why);
        }
        self.down.get().is_some()
    }

    /// The first read that showed the workspace down, once one did.
    pub fn down(&self) -> Option<&str> {
        self.down.get().map(String::as_str)
    }

    /// The error of a read not sent because the workspace is down; `None` while
    /// reads are still sent.
    pub fn skipped(&self) -> Option<String> {
        self.down().map(|why| format!("{NOT_READ} ({why})"))
    }

    /// Runs `read` unless the workspace is down, and notes its failure.
    pub async fn watch<T>(
        &self,
        read: impl Future<Output = Result<T, WorkspaceError>>,
    ) -> Result<T, Unread> {
        if let Some(skipped) = self.skipped() {
            return Err(Unread::Skipped(skipped));
        }
        let start = self.start();
        read.await.map_err(|e| {
            self.failed(start, &e);
            Unread::Failed(e)
        })
    }
}

/// Why [`Outage::watch`] returned no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unread {
    /// Not sent: the workspace was down already ([`NOT_READ`] and why).
    #[error("{0}")]
    Skipped(String),
    #[error(transparent)]
    Failed(WorkspaceError),
}

impl Transient for Unread {
    fn is_transient(&self) -> bool {
        match self {
            // Nothing was asked: the next pass may find the workspace back.
            Unread::Skipped(_) => true,
            Unread::Failed(e) => e.is_transient(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> WorkspaceError {
        WorkspaceError::Status {
            endpoint: "GET /Users/a".into(),
            status,
            scim_type: None,
            detail: String::new(),
            retry_after: None,
        }
    }

    fn transport(transient: bool) -> WorkspaceError {
        WorkspaceError::Transport {
            endpoint: "GET /Users/a".into(),
            message: "connection refused".into(),
            transient,
        }
    }

    fn status_of(endpoint: &str, status: u16) -> WorkspaceError {
        WorkspaceError::Status {
            endpoint: endpoint.into(),
            status,
            scim_type: None,
            detail: String::new(),
            retry_after: None,
        }
    }

    fn shows_outage(error: &WorkspaceError, before: u64, now: u64) -> bool {
        FailingReplies::default().note(error, before, now).is_some()
    }

    #[test]
    fn no_reply_while_nothing_else_was_answered_shows_an_outage() {
        assert!(shows_outage(&transport(true), 7, 7));
        assert!(shows_outage(&transport(true), 0, 0));
        // Others were answered while this one retried: the object's own trouble.
        assert!(!shows_outage(&transport(true), 7, 9));
        assert!(!shows_outage(&status(500), 7, 8));
        // The workspace answered and refused, or is pacing us: it is up.
        assert!(!shows_outage(&status(429), 7, 7));
        assert!(!shows_outage(&status(403), 7, 7));
        assert!(!shows_outage(&transport(false), 7, 7));
    }

    /// A 5xx is a reply: one object that keeps failing so is no outage, even as
    /// the only read in flight, however often it is read.
    #[test]
    fn one_object_answering_5xx_is_no_outage() {
        let mut replies = FailingReplies::default();
        for _ in 0..10 {
            assert_eq!(replies.note(&status(500), 7, 7), None);
            assert_eq!(replies.note(&status(503), 7, 7), None);
        }
    }

    /// Distinct objects failing with a 5xx, nothing answered between them: a
    /// workspace behind a load balancer that answers only 502.
    #[test]
    fn distinct_objects_failing_with_5xx_in_a_row_show_an_outage() {
        let mut replies = FailingReplies::default();
        assert_eq!(replies.note(&status_of("GET /Users/a", 502), 7, 7), None);
        assert_eq!(replies.note(&status_of("GET /Users/b", 502), 7, 7), None);
        let why = replies.note(&status_of("GET /Users/c", 502), 7, 7);
        assert!(
            why.as_deref().is_some_and(
                |w| w.starts_with("GET /Users/c: HTTP 502") && w.contains("3 objects in a row")
            ),
            "{why:?}"
        );
    }

    /// An answer between the failures starts the count again.
    #[test]
    fn an_answer_between_5xx_failures_starts_them_over() {
        let mut replies = FailingReplies::default();
        assert_eq!(replies.note(&status_of("GET /Users/a", 500), 7, 7), None);
        assert_eq!(replies.note(&status_of("GET /Users/b", 500), 7, 7), None);
        // c's read began before an answer and failed after it.
        assert_eq!(replies.note(&status_of("GET /Users/c", 500), 7, 8), None);
        assert_eq!(replies.note(&status_of("GET /Users/d", 500), 9, 9), None);
        assert_eq!(replies.note(&status_of("GET /Users/e", 500), 9, 9), None);
        assert!(
            replies
                .note(&status_of("GET /Users/f", 500), 9, 9)
                .is_some()
        );
    }
}
