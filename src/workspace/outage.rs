//! Telling a workspace that stopped answering from one object it cannot serve.
//!
//! Each read that fails for a transient reason has already spent the client's
//! retries (about 20 s with the defaults). Against a workspace that is down, a
//! pass that reads object by object would spend that again for every object: a
//! verification of a hundred rows behind a killed workspace took 17 minutes. So a
//! pass (a verification, a sweep's account reads) watches its reads with an
//! [`Outage`], and once one of them shows the workspace down, sends no further
//! read; what it leaves unread is decided as a read that failed would be.

use std::future::Future;
use std::sync::OnceLock;

use crate::retry::Transient;

use super::{ScimClient, WorkspaceError};

/// How a read an [`Outage`] kept from being sent fails; the reason follows.
pub const NOT_READ: &str = "not read: the workspace stopped answering";

/// Whether the workspace of one pass is down: a read failed past the client's
/// retries for a reason that says nothing answered (no connection, a timeout, a
/// dropped answer, a 5xx) while nothing else the workspace was asked since that
/// read began was answered either. A read failing while others are answered is
/// that object's own trouble (a provider that 500s on one account), and the pass
/// reads on. A 429 is a workspace pacing us, never an outage.
#[derive(Debug)]
pub struct Outage {
    client: ScimClient,
    down: OnceLock<String>,
}

/// Where the client's answers stood when a read began (see [`Outage::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStart(u64);

impl Outage {
    pub fn new(client: &ScimClient) -> Outage {
        Outage {
            client: client.clone(),
            down: OnceLock::new(),
        }
    }

    /// Taken as a read is about to be sent.
    pub fn start(&self) -> ReadStart {
        ReadStart(self.client.answers())
    }

    /// Notes a read begun at `start` that failed with `error`; returns whether the
    /// workspace is now taken as down.
    pub fn failed(&self, start: ReadStart, error: &WorkspaceError) -> bool {
        if shows_outage(error, start.0, self.client.answers()) {
            let _ = self.down.set(error.to_string());
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

/// Whether a read that failed with `error` shows the workspace down, the client
/// having had `before` answers when it began and `now` when it failed.
fn shows_outage(error: &WorkspaceError, before: u64, now: u64) -> bool {
    error.is_transient() && error.status() != Some(429) && now == before
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

    #[test]
    fn only_a_failure_nothing_else_was_answered_beside_shows_an_outage() {
        assert!(shows_outage(&transport(true), 7, 7));
        assert!(shows_outage(&status(503), 7, 7));
        assert!(shows_outage(&status(500), 0, 0));
        // Others were answered while this one retried: the object's own trouble.
        assert!(!shows_outage(&status(500), 7, 8));
        assert!(!shows_outage(&transport(true), 7, 9));
        // The workspace answered and refused, or is pacing us: it is up.
        assert!(!shows_outage(&status(429), 7, 7));
        assert!(!shows_outage(&status(403), 7, 7));
        assert!(!shows_outage(&transport(false), 7, 7));
    }
}
