//! Column encodings. Timestamps are RFC 3339 UTC text with a fixed nine-digit
//! fraction and a `Z` suffix (`2026-11-29T23:30:00.000000000Z`): exact round trips of
//! `DateTime<Utc>`, readable in the sqlite3 shell, and text order equals time order.
//! Enums are stored as their snake_case `as_str` names; JSON columns are text.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Row;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::model::LinkMethod;

use super::{ActionState, RunKind, RunStatus};

pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A decode failure inside a row mapper; rusqlite wraps it with the column index.
#[derive(Debug)]
pub(crate) struct BadValue(pub String);

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadValue {}

fn bad_value(what: &str, value: &str) -> BadValue {
    // The offending text is shown only for enum/timestamp columns, which never hold
    // personal data or secrets; truncate anyway to keep messages short.
    let shown: String = value.chars().take(40).collect();
    BadValue(format!("invalid {what} {shown:?}"))
}

fn bad(what: &str, value: &str) -> FromSqlError {
    FromSqlError::Other(Box::new(bad_value(what, value)))
}

/// A timestamp column.
pub(crate) struct Ts(pub DateTime<Utc>);

impl FromSql for Ts {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        DateTime::parse_from_rfc3339(text)
            .map(|at| Ts(at.with_timezone(&Utc)))
            .map_err(|_| bad("timestamp", text))
    }
}

macro_rules! text_enum {
    ($ty:ty, $what:literal, [$($variant:expr),+ $(,)?]) => {
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                [$($variant),+]
                    .into_iter()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| bad($what, text))
            }
        }
    };
}

text_enum!(
    RunKind,
    "run kind",
    [
        RunKind::Plan,
        RunKind::Reconcile,
        RunKind::DryRun,
        RunKind::Sweep
    ]
);
text_enum!(
    RunStatus,
    "run status",
    [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Stopped
    ]
);
text_enum!(
    ActionState,
    "action state",
    [
        ActionState::Planned,
        ActionState::InFlight,
        ActionState::Applied,
        ActionState::Failed,
        ActionState::Held,
    ]
);

/// Reads a text column holding a model enum (foreign types cannot implement FromSql).
pub(crate) fn model_enum<T: Copy>(
    row: &Row<'_>,
    idx: usize,
    what: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> rusqlite::Result<T> {
    let value = row.get_ref(idx)?;
    let text = value.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, value.data_type(), Box::new(e))
    })?;
    all.iter()
        .copied()
        .find(|v| name(*v) == text)
        .ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                idx,
                value.data_type(),
                Box::new(bad_value(what, text)),
            )
        })
}

pub(crate) const LINK_METHODS: [LinkMethod; 6] = [
    LinkMethod::ExternalId,
    LinkMethod::UserName,
    LinkMethod::Email,
    LinkMethod::Created,
    LinkMethod::Adopted,
    LinkMethod::Manual,
];

pub(crate) fn link_method(row: &Row<'_>, idx: usize) -> rusqlite::Result<LinkMethod> {
    model_enum(row, idx, "link method", &LINK_METHODS, LinkMethod::as_str)
}

/// A JSON text column decoded into `T`.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let value = row.get_ref(idx)?;
    let text = value.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, value.data_type(), Box::new(e))
    })?;
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, value.data_type(), Box::new(e)))
}
