//! What can go wrong talking to the workspace. Every variant names the endpoint
//! (`GET /Users?startIndex=201&count=100`) and what was wrong; none ever carries the
//! bearer token.

use std::time::Duration;

use crate::retry::Transient;

/// How long a provider's `detail` (or a non-SCIM body) may be in an error.
pub(crate) const MAX_DETAIL_CHARS: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The settings cannot make a client (bad base URL, TLS setup, zero limits).
    #[error("SCIM client settings: {0}")]
    Settings(String),

    /// No HTTP answer: connect error, timeout, connection closed mid-exchange.
    #[error("{endpoint}: {message}")]
    Transport {
        endpoint: String,
        message: String,
        transient: bool,
    },

    /// The provider answered with a non-success status.
    #[error("{endpoint}: HTTP {status}{}: {detail}", scim_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Status {
        endpoint: String,
        status: u16,
        /// SCIM `scimType` when the body was a SCIM error that had one.
        scim_type: Option<String>,
        /// The provider's `detail` (or the start of a non-SCIM body), truncated.
        detail: String,
        retry_after: Option<Duration>,
    },

    /// A success status with a body the client cannot use.
    #[error("{endpoint}: malformed response: {what}")]
    Malformed { endpoint: String, what: String },

    /// The write was not sent: what the workspace showed first made it unsafe.
    #[error("{endpoint}: not sent: {reason}")]
    NotSent { endpoint: String, reason: String },
}

impl WorkspaceError {
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// 409 — with or without `scimType: uniqueness`.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// No connection was made, or none answered in time: a wrong host or port in
    /// `workspace.url`, DNS, a firewall or a proxy, which only the operator can
    /// check. Told by the words [`crate::http::describe_failure`] starts such a
    /// message with; not a TLS failure (its message says what to set).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            WorkspaceError::Transport { message, .. }
                if message.starts_with(crate::http::CONNECTION_FAILED)
                    || message.starts_with(crate::http::TIMED_OUT)
        )
    }

    /// An error status answered with a web page rather than SCIM JSON (its
    /// `detail` is what `web_page` made of the page: the page's title, and that
    /// something other than the SCIM service answered). A provider's own
    /// `detail` is its JSON's text and never reads so.
    pub fn answered_by_web_page(&self) -> bool {
        matches!(
            self,
            WorkspaceError::Status { scim_type: None, detail, .. }
                if detail.starts_with(super::WEB_PAGE) && detail.contains(super::NOT_SCIM_JSON)
        )
    }

    /// What the operator should check after a read that failed so: the token
    /// (401, 403), or what stands in front of the workspace when that 401 or
    /// 403 was a web page (a WAF's or a proxy's block page: the SCIM service
    /// answers in JSON), or the URL and the network when nothing answered
    /// ([`WorkspaceError::is_unreachable`]); `None` for the rest. A run's reads
    /// say it through `RunError`, `explain --live` with the error it shows.
    pub fn what_to_check(&self) -> Option<&'static str> {
        match self.status() {
            Some(401 | 403) if self.answered_by_web_page() => Some(super::CHECK_IN_FRONT),
            Some(401 | 403) => Some(super::CHECK_TOKEN),
            _ if self.is_unreachable() => Some(super::CHECK_REACHABLE),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            WorkspaceError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn malformed(endpoint: &str, what: impl Into<String>) -> Self {
        WorkspaceError::Malformed {
            endpoint: endpoint.to_owned(),
            what: what.into(),
        }
    }
}

impl Transient for WorkspaceError {
    fn is_transient(&self) -> bool {
        match self {
            WorkspaceError::Transport { transient, .. } => *transient,
            WorkspaceError::Status { status, .. } => crate::http::status_is_transient(*status),
            WorkspaceError::Settings(_)
            | WorkspaceError::Malformed { .. }
            | WorkspaceError::NotSent { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            WorkspaceError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Cuts `s` to at most `max` characters (on a char boundary), marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let collapsed: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &collapsed[..at]),
        None => collapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_collapses_whitespace_and_cuts_on_char_boundaries() {
        assert_eq!(truncate("a  b\n\tc", 10), "a b c");
        assert_eq!(truncate("ééééé", 3), "ééé…");
    }

    #[test]
    fn classification() {
        let status = |s: u16| WorkspaceError::Status {
            endpoint: "GET /Users".into(),
            status: s,
            scim_type: None,
            detail: String::new(),
            retry_after: None,
        };
        assert!(status(429).is_transient());
        assert!(status(408).is_transient());
        assert!(status(503).is_transient());
        assert!(!status(501).is_transient());
        assert!(!status(400).is_transient());
        assert!(status(409).is_conflict());
        assert!(status(404).is_not_found());
        assert_eq!(
            status(409).to_string(),
            "GET /Users: HTTP 409: ".to_string()
        );
    }

    /// A 401 or 403 the SCIM service said (JSON) is the token's; one a web page
    /// said is what stands in front of the workspace; a provider's `detail` that
    /// merely mentions a page is the provider's.
    #[test]
    fn a_refusal_by_a_web_page_is_not_the_tokens() {
        let refused = |status: u16, detail: String| WorkspaceError::Status {
            endpoint: "GET /Users".into(),
            status,
            scim_type: None,
            detail,
            retry_after: None,
        };
        let page = format!(
            "{}{}{}",
            super::super::WEB_PAGE,
            " (\"Request Rejected\")",
            super::super::NOT_SCIM_JSON
        );
        for status in [401, 403] {
            assert!(refused(status, page.clone()).answered_by_web_page());
            assert_eq!(
                refused(status, page.clone()).what_to_check(),
                Some(super::super::CHECK_IN_FRONT)
            );
            let json = refused(status, "an HTML page was requested".into());
            assert!(!json.answered_by_web_page());
            assert_eq!(json.what_to_check(), Some(super::super::CHECK_TOKEN));
        }
        assert_eq!(refused(502, page).what_to_check(), None);
    }
}
