//! Directory sources: where seatwarden reads the people it reconciles against.
//!
//! Every source produces one [`DirectorySnapshot`] per read. A source that cannot read
//! every person returns an error (or, for connectors that page, an incomplete
//! snapshot): a partial directory must never look like people who left (design
//! invariant 3).
//!
//! Sources are an enum rather than a trait object: the set is closed (file now; Okta,
//! Entra, LDAP, SCIM later), `snapshot` is async, and `match` keeps the dispatch
//! visible and free of boxing.

pub mod file;

use std::path::PathBuf;

use crate::model::{DirectorySnapshot, Identity};
use crate::retry::Transient;

pub use file::FileSource;

/// Why a directory could not be read. A file error is never transient: the file
/// will not fix itself between two attempts of the same run.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read directory file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but its content is not a valid directory; the whole file
    /// is rejected.
    #[error(
        "invalid directory file {}: {location}{}: {message}",
        .path.display(),
        field_suffix(field)
    )]
    Invalid {
        path: PathBuf,
        /// Where in the file: `users[3] (id "u42")`, `line 5`, `top level`.
        location: String,
        /// The field or column concerned, when there is one.
        field: Option<String>,
        message: String,
    },
    #[error(
        "directory file {} has an unknown format: its name must end in .json or .csv",
        .path.display()
    )]
    UnsupportedFormat { path: PathBuf },
    /// The blocking reader task did not finish (it panicked or the runtime is
    /// shutting down).
    #[error("reading directory file {} did not finish: {source}", .path.display())]
    Task {
        path: PathBuf,
        source: tokio::task::JoinError,
    },
}

fn field_suffix(field: &Option<String>) -> String {
    match field {
        Some(field) => format!(", field {field:?}"),
        None => String::new(),
    }
}

impl DirectoryError {
    /// Worth another attempt? Never for files; network connectors will add
    /// variants (timeouts, 429, 5xx) that are.
    pub fn is_transient(&self) -> bool {
        match self {
            DirectoryError::Io { .. }
            | DirectoryError::Invalid { .. }
            | DirectoryError::UnsupportedFormat { .. }
            | DirectoryError::Task { .. } => false,
        }
    }
}

impl Transient for DirectoryError {
    fn is_transient(&self) -> bool {
        DirectoryError::is_transient(self)
    }
}

/// The answer to [`Directory::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryChanges {
    /// The whole directory: identities absent from it are gone (when `complete`).
    Full {
        snapshot: DirectorySnapshot,
        /// Pass to the next call; `None` when the source has no deltas.
        cursor: Option<String>,
    },
    /// Only what changed since the cursor.
    Delta {
        /// Identities created or updated since the cursor, as they are now
        /// (status and groups included).
        changed: Vec<Identity>,
        /// Ids of identities deleted from the directory since the cursor.
        removed: Vec<String>,
        /// Pass to the next call.
        cursor: String,
    },
}

/// A configured directory source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directory {
    /// A JSON or CSV export on disk (see [`file`](mod@file) for the format).
    File(FileSource),
}

impl Directory {
    /// Reads the whole directory. A file is always read whole, so its snapshot is
    /// `complete`.
    pub async fn snapshot(&self) -> Result<DirectorySnapshot, DirectoryError> {
        match self {
            Directory::File(source) => source.snapshot().await,
        }
    }

    /// What changed since `cursor` (from the previous call; `None` the first time),
    /// for the daemon's deprovisioning sweep. Sources without a cheap delta, and
    /// connectors whose cursor expired, answer with the whole directory.
    pub async fn changes_since(
        &self,
        _cursor: Option<&str>,
    ) -> Result<DirectoryChanges, DirectoryError> {
        match self {
            // Re-reading a file is as cheap as any delta could be.
            Directory::File(source) => Ok(DirectoryChanges::Full {
                snapshot: source.snapshot().await?,
                cursor: None,
            }),
        }
    }

    /// One line for logs and reports, e.g. `file /etc/seatwarden/directory.json`.
    pub fn describe(&self) -> String {
        match self {
            Directory::File(source) => format!("file {}", source.path().display()),
        }
    }
}
