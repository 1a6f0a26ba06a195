//! The file source: a JSON or CSV export of the directory, read whole on every run.
//!
//! The kind is chosen by the extension, `.json` or `.csv` (any case).
//!
//! JSON:
//!
//! ```json
//! {"users": [
//!   {"id": "u1", "userName": "ada@example.com", "email": "ada@example.com",
//!    "givenName": "Ada", "familyName": "Lovelace", "displayName": "Ada Lovelace",
//!    "status": "active", "department": "Research", "groups": ["Engineering"]}
//! ]}
//! ```
//!
//! CSV: a header row `id,userName,email,givenName,familyName,displayName,status,department,groups`
//! (RFC 4180 quoting; columns in any order) with `groups` separated by `;`. A row
//! of only empty fields (`,,,,`) is skipped, and a column without a name is
//! allowed while every value in it is empty: spreadsheets write both.
//!
//! Rules, the same for both kinds:
//! - `id`, `userName` and `status` are required and non-empty; every other field is
//!   optional, and an empty value (or JSON `null`) means "none". `status` is
//!   `active`, `suspended` or `deprovisioned`; a person absent from the file is
//!   deleted.
//! - JSON `"groups": null` is an error: `[]` or no `groups` field means no groups,
//!   while a `null` there is usually an exporter that failed to read them. An
//!   export with no `groups` column, or no user with a `groups` field, is an error
//!   when the configuration names groups: everyone would be in none.
//! - Values are trimmed; group names are trimmed, composed (Unicode NFC: `e` and
//!   U+0301 is `é`, as the configuration's names are), empty entries dropped and
//!   duplicates removed (first occurrence kept).
//! - An id, userName or email holding a character that does not show (a tab, a
//!   no-break or zero-width space, a control character) is an error: it is
//!   matched and written exactly, and an id so changed makes a stranger.
//! - A group entry that is not a group the configuration names (scope, mapping or
//!   protected group, in any case) but that, split at commas, `|` or line breaks,
//!   names some (`Taskade Users, Engineering`) is an error: a list written with the
//!   wrong separator would put the person in none of them. A group whose name
//!   holds a comma is read as it is when no part of it is a configured group.
//! - So is a group entry that differs from a configured group only in what does
//!   not show (a no-break or zero-width space, two spaces, a tab, quotes), as
//!   copies from web pages, documents and spreadsheets bring: policy compares
//!   names exactly, so the person would not be in it.
//! - Unknown JSON fields and unknown CSV columns are errors: a typo such as
//!   `usrName` must not silently drop data.
//! - Duplicate ids, and userNames equal ignoring case, are errors.
//! - A scope or mapping group spelt two ways across rows ("Taskade Users",
//!   "taskade users") is an error: policy compares those names exactly.
//! - Any error rejects the whole file; its message names the file, the row
//!   (`users[3] (id "u42")` or `line 5`, the file's own line, CRLF or not) and
//!   the field.
//! - The file must be UTF-8 (a UTF-8 byte-order mark is allowed); one that is not
//!   is rejected, naming the line and column of the first byte that is not.
//! - An empty file, a CSV file with only a header, and `{"users": []}` are valid and
//!   give an empty snapshot: whether to act on it is the guard's decision.

use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{DirectoryError, RequiredGroup};
use crate::model::{DirectorySnapshot, Identity, IdentityStatus};
use crate::policy::fold_group_name;

/// A directory export on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    path: PathBuf,
    /// `policy.scope_groups`: each must be carried by some row.
    scope_groups: Vec<String>,
    /// Groups that must be carried by some row too (see [`RequiredGroup`]).
    required_groups: Vec<RequiredGroup>,
    /// `policy.mapping[i].group`, with `i`: none is required (a group emptied by
    /// leavers is not carried), but one that no row spells as the mapping does
    /// while some row carries it in another case is a typo (see
    /// [`FileSource::with_mapping_groups`]).
    mapping_groups: Vec<(usize, String)>,
    /// `safety.distinct_groups`: groups that only look like a configured one
    /// but are declared other groups, carried as any unrelated group is.
    distinct_groups: Vec<String>,
}

impl FileSource {
    pub fn new(path: PathBuf) -> Self {
        FileSource {
            path,
            scope_groups: Vec::new(),
            required_groups: Vec::new(),
            mapping_groups: Vec::new(),
            distinct_groups: Vec::new(),
        }
    }

    /// Checks that each of `groups` is carried by some row of the export, as the
    /// network connectors check that a scope group exists: a renamed group or a
    /// typo would otherwise put all its members out of scope, to be deactivated.
    pub fn with_scope_groups(mut self, groups: Vec<String>) -> Self {
        self.scope_groups = groups;
        self
    }

    /// Checks that each of `groups` is carried by some row (names compared as
    /// policy compares them, without regard to case): see [`RequiredGroup`].
    /// Reads the groups of `groups` (`safety.distinct_groups`) as unrelated
    /// groups, not as configured groups written wrong: no refusal for them.
    pub fn with_distinct_groups(mut self, groups: Vec<String>) -> Self {
        self.distinct_groups = groups;
        self
    }

    pub fn with_required_groups(mut self, groups: Vec<RequiredGroup>) -> Self {
        self.required_groups = groups;
        self
    }

    /// Refuses an export in which a mapping's group (`(index, name)` of
    /// `policy.mapping`) is carried only in another case ("taskade admins" for
    /// "Taskade Admins"): policy compares names exactly, so the mapping would apply
    /// to no one, and every Owner or member it makes would be planned down or out.
    /// A group carried by no row in any spelling passes, with a warning: its last
    /// members may have left, and their deprovisioning must not wait for an edit.
    pub fn with_mapping_groups(mut self, groups: Vec<(usize, String)>) -> Self {
        self.mapping_groups = groups;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the whole file (blocking).
    pub fn read(&self) -> Result<DirectorySnapshot, DirectoryError> {
        let format = Format::of(&self.path)?;
        let io = |source| DirectoryError::Io {
            path: self.path.clone(),
            source,
        };
        let before = std::fs::metadata(&self.path).map_err(io)?;
        let bytes = std::fs::read(&self.path).map_err(io)?;
        let after = std::fs::metadata(&self.path).map_err(io)?;
        // An export rewritten in place while it is read can still parse, cut at a
        // line boundary or inside the last column: people missing or with fewer
        // groups, who would look like leavers.
        if !unchanged(&before, &after, bytes.len()) {
            return Err(DirectoryError::Invalid {
                path: self.path.clone(),
                location: "the whole file".to_owned(),
                field: None,
                message: "it changed while it was read; the next run reads it again. Write \
                          exports to a temporary file and rename it into place"
                    .to_owned(),
            });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| not_utf8(&self.path, e.as_bytes(), e.utf8_error()))?;
        let identities = match format {
            Format::Json => read_json(&text, &self.path, self.configured_groups())?,
            Format::Csv => read_csv(&text, &self.path, self.configured_groups())?,
        };
        self.check_scope(&identities)?;
        Ok(DirectorySnapshot {
            identities,
            complete: true,
        })
    }

    /// [`FileSource::read`] on the blocking pool: parsing a large export is CPU
    /// work that must not stall the runtime's workers.
    pub async fn snapshot(&self) -> Result<DirectorySnapshot, DirectoryError> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || source.read())
            .await
            .map_err(|source| DirectoryError::Task {
                path: self.path.clone(),
                source,
            })?
    }
}

impl FileSource {
    fn configured_groups(&self) -> ConfiguredGroups {
        let scope = self
            .scope_groups
            .iter()
            .map(|g| (g, "policy.scope_groups".to_owned()));
        let mapping = self
            .mapping_groups
            .iter()
            .map(|(index, g)| (g, format!("policy.mapping[{index}].group")));
        let required = self
            .required_groups
            .iter()
            .map(|r| (&r.name, r.key.clone()));
        let mut configured = ConfiguredGroups::default();
        for (group, key) in scope.chain(mapping).chain(required) {
            configured.add(group, key);
        }
        for group in &self.distinct_groups {
            configured.inner.declare_distinct(group);
        }
        configured
    }

    fn check_scope(&self, identities: &[Identity]) -> Result<(), DirectoryError> {
        // An empty export is the source sanity check's: rejected, as a source fault.
        if (self.scope_groups.is_empty()
            && self.required_groups.is_empty()
            && self.mapping_groups.is_empty())
            || identities.is_empty()
        {
            return Ok(());
        }
        let carried: std::collections::HashSet<&str> = identities
            .iter()
            .flat_map(|i| i.groups.iter().map(String::as_str))
            .collect();
        self.check_one_spelling(identities, &carried)?;
        for (index, group) in &self.mapping_groups {
            if carried.contains(group.as_str()) {
                continue;
            }
            let Some(near) = carried.iter().find(|c| crate::model::same_ci(c, group)) else {
                // Its last members may have left; or it was renamed, and the
                // mapping now gives its role to no one. The connectors say so too.
                tracing::warn!(
                    group = %group,
                    key = %format!("policy.mapping[{index}].group"),
                    provider = "file",
                    "group named by policy.mapping not found in the directory: no row carries it"
                );
                continue;
            };
            return Err(DirectoryError::Scope {
                provider: "file",
                message: format!(
                    "no row of {} carries group {group:?} (policy.mapping[{index}].group), \
                     but rows carry {near:?}: names are compared exactly, so the mapping \
                     would apply to no one and take its role and workspace group from \
                     all of them. Check policy.mapping[{index}].group",
                    self.path.display()
                ),
            });
        }
        for required in &self.required_groups {
            if !super::group_present(carried.iter().copied(), &required.name) {
                return Err(DirectoryError::Scope {
                    provider: "file",
                    message: format!(
                        "no row of {} carries group {:?} ({}); a typo or a renamed group \
                         would {}. Check {} (a group that is empty now is removed from it)",
                        self.path.display(),
                        required.name,
                        required.key,
                        required.loss,
                        required.key
                    ),
                });
            }
        }
        for group in &self.scope_groups {
            if carried.contains(group.as_str()) {
                continue;
            }
            let near = carried
                .iter()
                .find(|c| crate::model::same_ci(c, group))
                .map(|c| format!(" (rows carry {c:?}: names are compared exactly)"))
                .unwrap_or_default();
            return Err(DirectoryError::Scope {
                provider: "file",
                message: format!(
                    "no row of {} carries scope group {group:?}{near}; a renamed group or a \
                     typo would put its members out of scope. Check policy.scope_groups (a \
                     group that is empty now is removed from it)",
                    self.path.display()
                ),
            });
        }
        Ok(())
    }
}

impl FileSource {
    /// Refuses an export whose rows spell a scope or mapping group in more than one
    /// way ("Taskade Users" on most rows, "taskade users" on one): policy compares
    /// those names exactly, so the odd rows would silently fall out of scope, to be
    /// deactivated, or lose what the mapping gives them. The network connectors
    /// refuse two look-alike groups the same way. Protected groups are compared
    /// without regard to case, so their spellings may differ.
    fn check_one_spelling(
        &self,
        identities: &[Identity],
        carried: &std::collections::HashSet<&str>,
    ) -> Result<(), DirectoryError> {
        let configured = self
            .scope_groups
            .iter()
            .map(|g| {
                (
                    g,
                    "policy.scope_groups".to_owned(),
                    "fall out of scope, to be deactivated",
                )
            })
            .chain(self.mapping_groups.iter().map(|(index, g)| {
                (
                    g,
                    format!("policy.mapping[{index}].group"),
                    "lose the role and workspace group the mapping gives",
                )
            }));
        for (group, key, loss) in configured {
            let mut spellings: Vec<&str> = carried
                .iter()
                .copied()
                .filter(|c| crate::model::same_ci(c, group))
                .collect();
            if spellings.len() < 2 {
                continue;
            }
            // The configured spelling first, then the others by how many rows use
            // them: the rare ones are the rows to fix.
            let rows_with = |spelling: &str| -> Vec<&str> {
                identities
                    .iter()
                    .filter(|i| i.groups.iter().any(|g| g == spelling))
                    .map(|i| i.user_name.as_str())
                    .collect()
            };
            spellings.sort_by_key(|s| {
                (
                    *s != group.as_str(),
                    std::cmp::Reverse(rows_with(s).len()),
                    *s,
                )
            });
            let described: Vec<String> = spellings
                .iter()
                .map(|spelling| {
                    let rows = rows_with(spelling);
                    let who = if rows.len() <= 3 {
                        format!(": {}", rows.join(", "))
                    } else {
                        String::new()
                    };
                    let noun = if rows.len() == 1 { "row" } else { "rows" };
                    format!("{spelling:?} ({} {noun}{who})", rows.len())
                })
                .collect();
            return Err(DirectoryError::Scope {
                provider: "file",
                message: format!(
                    "rows of {} spell group {group:?} ({key}) in {} ways: {}. Names are \
                     compared exactly, so the rows spelt otherwise would {loss}. Correct \
                     the export",
                    self.path.display(),
                    spellings.len(),
                    described.join(", ")
                ),
            });
        }
        Ok(())
    }
}

/// Whether a file read `read` bytes long between two looks at it that agree.
fn unchanged(before: &std::fs::Metadata, after: &std::fs::Metadata, read: usize) -> bool {
    before.len() == after.len()
        && u64::try_from(read).is_ok_and(|read| read == after.len())
        && before.modified().ok() == after.modified().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl Format {
    fn of(path: &Path) -> Result<Format, DirectoryError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            _ => Err(DirectoryError::UnsupportedFormat {
                path: path.to_owned(),
            }),
        }
    }
}

/// The fields of one person, as named in both file kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    UserName,
    Email,
    GivenName,
    FamilyName,
    DisplayName,
    Status,
    Department,
    Groups,
}

impl Field {
    const ALL: [Field; 9] = [
        Field::Id,
        Field::UserName,
        Field::Email,
        Field::GivenName,
        Field::FamilyName,
        Field::DisplayName,
        Field::Status,
        Field::Department,
        Field::Groups,
    ];
    const REQUIRED: [Field; 3] = [Field::Id, Field::UserName, Field::Status];

    fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::UserName => "userName",
            Field::Email => "email",
            Field::GivenName => "givenName",
            Field::FamilyName => "familyName",
            Field::DisplayName => "displayName",
            Field::Status => "status",
            Field::Department => "department",
            Field::Groups => "groups",
        }
    }

    /// "expected one of id, userName, …", for unknown-field errors.
    fn expected() -> String {
        format!("expected one of {}", Field::ALL.map(Field::name).join(", "))
    }

    /// A distinct bit per field, to notice a JSON key given twice.
    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Exact, case-sensitive: `username` is as much a typo as `usrName`.
    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Where a row is in the file, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Index in the JSON `users` array.
    Json(usize),
    /// 1-based line where the CSV record starts (quoted fields may span lines).
    Csv(u64),
}

impl Row {
    fn location(self, id: Option<&str>) -> String {
        match (self, id) {
            (Row::Json(index), Some(id)) => format!("users[{index}] (id {id:?})"),
            (Row::Json(index), None) => format!("users[{index}]"),
            (Row::Csv(line), _) => format!("line {line}"),
        }
    }
}

/// One person's values as found in the file, before validation.
#[derive(Debug, Default)]
struct RawRow {
    id: Option<String>,
    user_name: Option<String>,
    email: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    display_name: Option<String>,
    status: Option<String>,
    department: Option<String>,
    groups: Vec<String>,
    /// The row has the field, even empty: `[]`, or a `groups` column.
    has_groups: bool,
}

impl RawRow {
    /// The slot of a single-valued field; `None` for `groups`.
    fn scalar(&mut self, field: Field) -> Option<&mut Option<String>> {
        match field {
            Field::Id => Some(&mut self.id),
            Field::UserName => Some(&mut self.user_name),
            Field::Email => Some(&mut self.email),
            Field::GivenName => Some(&mut self.given_name),
            Field::FamilyName => Some(&mut self.family_name),
            Field::DisplayName => Some(&mut self.display_name),
            Field::Status => Some(&mut self.status),
            Field::Department => Some(&mut self.department),
            Field::Groups => None,
        }
    }
}

/// Trimmed; `None` when empty. Reuses the allocation when nothing was trimmed.
fn clean(value: Option<String>) -> Option<String> {
    let value = value?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == value.len() {
        Some(value)
    } else {
        Some(trimmed.to_owned())
    }
}

/// Trimmed, empty entries dropped, duplicates removed keeping the first.
fn clean_groups(groups: Vec<String>) -> Vec<String> {
    let count = groups.len();
    // Composed here, not only once the read is done: the checks against the
    // configured groups below compare names exactly.
    let names = groups
        .into_iter()
        .filter_map(|group| clean(Some(group)))
        .map(|mut group| {
            crate::model::compose_in_place(&mut group);
            group
        });
    // A linear scan beats hashing for the usual handful of groups; long lists
    // (hundreds of groups per person in some Okta orgs) use a set.
    if count <= 16 {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    } else {
        let mut seen = HashSet::new();
        names.filter(|name| seen.insert(name.clone())).collect()
    }
}

/// Validates rows one at a time and keeps what is needed to find duplicates.
struct Collector<'p> {
    path: &'p Path,
    identities: Vec<Identity>,
    /// id → row where it was first seen.
    ids: HashMap<String, Row>,
    /// lowercased userName → row where it was first seen.
    user_names: HashMap<String, Row>,
    configured: ConfiguredGroups,
    /// Some row has a groups field.
    saw_groups: bool,
}

impl<'p> Collector<'p> {
    fn new(path: &'p Path, configured: ConfiguredGroups) -> Self {
        Collector {
            path,
            identities: Vec::new(),
            ids: HashMap::new(),
            user_names: HashMap::new(),
            configured,
            saw_groups: false,
        }
    }

    /// Refuses an export that has no groups at all where the configuration uses
    /// them: every person would be in none, out of scope or without the role
    /// their mapping gives, whatever the groups would have said.
    fn check_groups_given(&self, location: &str) -> Result<(), DirectoryError> {
        if self.saw_groups || self.identities.is_empty() || self.configured.inner.is_empty() {
            return Ok(());
        }
        Err(invalid(
            self.path,
            location.to_owned(),
            Some("groups"),
            format!(
                "missing, but the configuration names groups ({}): every person would be in \
                 none of them",
                self.configured.keys()
            ),
        ))
    }

    fn invalid(
        &self,
        row: Row,
        id: Option<&str>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> DirectoryError {
        invalid(self.path, row.location(id), field, message)
    }

    fn push(&mut self, row: Row, raw: RawRow) -> Result<(), DirectoryError> {
        const MISSING: &str = "required, but missing or empty";
        let Some(id) = clean(raw.id) else {
            return Err(self.invalid(row, None, Some("id"), MISSING));
        };
        let Some(user_name) = clean(raw.user_name) else {
            return Err(self.invalid(row, Some(&id), Some("userName"), MISSING));
        };
        let Some(status) = clean(raw.status) else {
            return Err(self.invalid(row, Some(&id), Some("status"), MISSING));
        };
        let status: IdentityStatus = status
            .parse()
            .map_err(|message: String| self.invalid(row, Some(&id), Some("status"), message))?;
        let email = clean(raw.email);
        // Matching compares these exactly (case aside): a zero-width space pasted
        // into an id makes the person a stranger whose account is deactivated,
        // and a new one created; in a userName or an email, it is written to the
        // account.
        let keys = [("id", Some(&id)), ("userName", Some(&user_name))];
        for (field, value) in keys.into_iter().chain([("email", email.as_ref())]) {
            let Some(value) = value else { continue };
            if let Some(hidden) = crate::names::hidden_in(value) {
                let message = format!(
                    "{value:?} holds {}, which does not show: it would be compared and \
                     written as it is; remove it",
                    crate::names::describe(hidden)
                );
                return Err(self.invalid(row, Some(&id), Some(field), message));
            }
        }

        if let Some(first) = first_seen(&mut self.ids, id.clone(), row) {
            let message = format!(
                "duplicate id {id:?}, first seen at {}",
                first.location(None)
            );
            return Err(self.invalid(row, Some(&id), Some("id"), message));
        }
        if let Some(first) = first_seen(&mut self.user_names, user_name.to_lowercase(), row) {
            let message = format!(
                "duplicate userName {user_name:?} (compared ignoring case), first seen at {}",
                first.location(None)
            );
            return Err(self.invalid(row, Some(&id), Some("userName"), message));
        }

        self.saw_groups |= raw.has_groups;
        let groups = clean_groups(raw.groups);
        if let Some(message) = groups
            .iter()
            .find_map(|group| self.configured.misspelt(group, row))
        {
            return Err(self.invalid(row, Some(&id), Some("groups"), message));
        }

        self.identities.push(Identity {
            id,
            user_name,
            email,
            given_name: clean(raw.given_name),
            family_name: clean(raw.family_name),
            display_name: clean(raw.display_name),
            status,
            department: clean(raw.department),
            groups,
        });
        Ok(())
    }
}

/// The groups the configuration names (`policy.scope_groups`, the mappings,
/// `safety.protected_groups`), to recognise one of them written so that policy,
/// which compares names exactly, would not find it. The look-alike rule is the
/// live directories' too ([`crate::names`]).
#[derive(Debug, Default)]
struct ConfiguredGroups {
    inner: crate::names::ConfiguredGroups,
}

impl ConfiguredGroups {
    /// Characters exports put between list items, with how to name them.
    const SEPARATORS: [(char, &'static str); 3] = [
        (',', "commas"),
        ('|', "'|' characters"),
        ('\n', "line breaks"),
    ];

    fn add(&mut self, name: &str, key: String) {
        self.inner.add(name, key);
    }

    /// The configuration keys that name groups, each once: `policy.scope_groups,
    /// policy.mapping`.
    fn keys(&self) -> String {
        let mut keys: Vec<&str> = Vec::new();
        for (_, key) in self.inner.groups() {
            let key = key.split_once('[').map_or(key.as_str(), |(key, _)| key);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys.join(", ")
    }

    fn named(&self, folded: &str) -> Option<&(String, String)> {
        self.inner.named(folded)
    }

    /// Why the group entry `group` is, most likely, configured groups written so
    /// that policy would find none of them: read as it is, the person would be
    /// out of scope, to be deactivated, or without their role or protection. A
    /// difference in case alone is left to [`FileSource::check_scope`], which
    /// counts the rows of each spelling.
    fn misspelt(&self, group: &str, row: Row) -> Option<String> {
        if self.inner.is_empty() || self.named(&fold_group_name(group)).is_some() {
            return None;
        }
        self.look_alike(group)
            .or_else(|| self.joined_list(group, row))
    }

    /// A configured group with characters a spreadsheet, a web page or a document
    /// brings along (a no-break or zero-width space, two spaces, quotes): it
    /// looks the same on screen and matches nothing.
    fn look_alike(&self, group: &str) -> Option<String> {
        let crate::names::LookAlike {
            configured: name,
            key,
            differs,
            ..
        } = self.inner.look_alike(group)?;
        Some(format!(
            "{group:?} is not {name:?} ({key}) but differs from it only in {differs}: \
             group names are compared exactly, so this person would not be in it; write \
             {name:?}"
        ))
    }

    /// Several groups joined by the wrong separator: the value names none of the
    /// configured groups as a whole, but split at a separator it names some. A
    /// real group whose name holds a comma is read as it is unless a part of it is
    /// a configured group.
    fn joined_list(&self, group: &str, row: Row) -> Option<String> {
        Self::SEPARATORS
            .iter()
            .filter(|(separator, _)| group.contains(*separator))
            .find_map(|&(separator, separators)| {
                let parts: Vec<&str> = group
                    .split(separator)
                    .map(str::trim)
                    .filter(|part| !part.is_empty())
                    .collect();
                let configured: Vec<String> = parts
                    .iter()
                    .filter_map(|part| {
                        let (_, key) = self.named(&fold_group_name(part))?;
                        Some(format!("{part:?} ({key})"))
                    })
                    .collect();
                if configured.is_empty() {
                    return None;
                }
                let write = match row {
                    Row::Csv(_) => format!(
                        "groups in a cell are separated by ';': write {:?}",
                        parts.join(";")
                    ),
                    Row::Json(_) => format!(
                        "each group is a string of its own: write {}",
                        serde_json::to_string(&parts).unwrap_or_default()
                    ),
                };
                Some(format!(
                    "{group:?} is not a group the configuration names, but split at its \
                     {separators} it names {}, so this person would be in none of them; \
                     {write}. A group whose name holds such a character, if the \
                     configuration does not name it, can be left out of the export",
                    configured.join(" and ")
                ))
            })
    }
}

/// Records `key` at `row`, or returns the row where it was seen before.
fn first_seen(seen: &mut HashMap<String, Row>, key: String, row: Row) -> Option<Row> {
    match seen.entry(key) {
        Entry::Occupied(first) => Some(*first.get()),
        Entry::Vacant(slot) => {
            slot.insert(row);
            None
        }
    }
}

fn invalid(
    path: &Path,
    location: String,
    field: Option<&str>,
    message: impl Into<String>,
) -> DirectoryError {
    DirectoryError::Invalid {
        path: path.to_owned(),
        location,
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

/// An export that is not UTF-8: where the first byte that is not, and what the
/// file most likely is instead. Excel's plain "CSV" and Windows PowerShell's `>`
/// write Windows-1252 and UTF-16, in which names such as "José" are not UTF-8.
fn not_utf8(path: &Path, bytes: &[u8], error: std::str::Utf8Error) -> DirectoryError {
    const SAVE_AS: &str = "save the export as UTF-8 (Excel: \"CSV UTF-8\"; PowerShell: \
                           -Encoding utf8)";
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return invalid(
            path,
            "the whole file".to_owned(),
            None,
            format!("it is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8; {SAVE_AS}"),
        );
    }
    let (good, rest) = bytes.split_at(error.valid_up_to().min(bytes.len()));
    let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = good
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let column = good.len() - line_start + 1;
    let bad: Vec<String> = rest
        .iter()
        .take(error.error_len().unwrap_or(rest.len()).min(4))
        .map(|b| format!("{b:#04x}"))
        .collect();
    let (noun, verb) = if bad.len() == 1 {
        ("byte", "is")
    } else {
        ("bytes", "are")
    };
    invalid(
        path,
        format!("line {line}, column {column}"),
        None,
        format!(
            "{noun} {} {verb} not UTF-8: the file must be UTF-8 (one saved as Windows-1252 \
             or Latin-1 writes \"é\" as 0xe9); {SAVE_AS}",
            bad.join(" ")
        ),
    )
}

/// Excel and some PowerShell exports start UTF-8 files with a byte-order mark.
fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

// ---------------------------------------------------------------------------------
// JSON

/// Parses a JSON export (see the module docs for the shape).
///
/// The `users` array is streamed: each element is validated as soon as it is read,
/// so memory holds the identities and one raw row, never a tree of the whole file.
pub fn parse_json(text: &str, path: &Path) -> Result<Vec<Identity>, DirectoryError> {
    read_json(text, path, ConfiguredGroups::default())
}

fn read_json(
    text: &str,
    path: &Path,
    configured: ConfiguredGroups,
) -> Result<Vec<Identity>, DirectoryError> {
    let text = strip_bom(text);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut state = JsonState {
        collector: Collector::new(path, configured),
        failure: None,
        saw_users: false,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let result = FileSeed(&mut state)
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    // A validation error is stashed in `failure` and aborts serde with a
    // placeholder error; the stashed one is what the user needs to see.
    if let Some(failure) = state.failure {
        return Err(failure);
    }
    if let Err(error) = result {
        return Err(json_syntax(path, &error));
    }
    if !state.saw_users {
        return Err(invalid(
            path,
            "top level".to_owned(),
            Some("users"),
            "missing; the file must be {\"users\": [...]}",
        ));
    }
    state.collector.check_groups_given("every user")?;
    Ok(state.collector.identities)
}

fn json_syntax(path: &Path, error: &serde_json::Error) -> DirectoryError {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = text.strip_suffix(&position).unwrap_or(&text);
    invalid(
        path,
        format!("line {}, column {}", error.line(), error.column()),
        None,
        message,
    )
}

struct JsonState<'p> {
    collector: Collector<'p>,
    failure: Option<DirectoryError>,
    saw_users: bool,
}

impl JsonState<'_> {
    fn fail<E: de::Error>(&mut self, error: DirectoryError) -> E {
        self.failure = Some(error);
        E::custom("invalid directory file")
    }
}

/// The top-level object.
struct FileSeed<'s, 'p>(&'s mut JsonState<'p>);

impl<'de> DeserializeSeed<'de> for FileSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object {\"users\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(key) = map.next_key::<String>()? {
            if key != "users" {
                let path = state.collector.path;
                return Err(state.fail(invalid(
                    path,
                    "top level".to_owned(),
                    Some(&key),
                    "unknown field; the file must be {\"users\": [...]}",
                )));
            }
            if state.saw_users {
                let path = state.collector.path;
                return Err(state.fail(invalid(
                    path,
                    "top level".to_owned(),
                    Some("users"),
                    "appears twice",
                )));
            }
            state.saw_users = true;
            map.next_value_seed(UsersSeed(&mut *state))?;
        }
        Ok(())
    }
}

/// The `users` array.
struct UsersSeed<'s, 'p>(&'s mut JsonState<'p>);

impl<'de> DeserializeSeed<'de> for UsersSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for UsersSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of user objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        let mut index = 0;
        loop {
            let row = Row::Json(index);
            let path = state.collector.path;
            let Some(parsed) = seq.next_element_seed(UserSeed { path, row })? else {
                return Ok(());
            };
            if let Err(error) = parsed.and_then(|raw| state.collector.push(row, raw)) {
                return Err(state.fail(error));
            }
            index += 1;
        }
    }
}

/// One element of `users`, read field by field without building a map. The first
/// problem found is kept and reported once the whole object is read, so the
/// message can name the row's id even when `id` comes after the bad field.
struct UserSeed<'p> {
    path: &'p Path,
    row: Row,
}

impl<'de> DeserializeSeed<'de> for UserSeed<'_> {
    type Value = Result<RawRow, DirectoryError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UserSeed<'_> {
    type Value = Result<RawRow, DirectoryError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a user object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawRow::default();
        let mut problem: Option<(String, String)> = None;
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Key>()? {
            let field = match key {
                Key::Known(field) if seen & field.bit() != 0 => {
                    map.next_value::<de::IgnoredAny>()?;
                    problem.get_or_insert((
                        field.name().to_owned(),
                        "appears twice in this user".to_owned(),
                    ));
                    continue;
                }
                Key::Known(field) => field,
                Key::Unknown(name) => {
                    map.next_value::<de::IgnoredAny>()?;
                    problem.get_or_insert((name, format!("unknown field; {}", Field::expected())));
                    continue;
                }
            };
            seen |= field.bit();
            let value = map.next_value::<Value>()?;
            let parsed = match raw.scalar(field) {
                Some(slot) => json_scalar(value).map(|v| *slot = v),
                None => json_groups(value).map(|groups| {
                    raw.groups = groups;
                    raw.has_groups = true;
                }),
            };
            if let Err(message) = parsed {
                problem.get_or_insert((field.name().to_owned(), message));
            }
        }
        Ok(match problem {
            None => Ok(raw),
            Some((field, message)) => {
                let id = clean(raw.id);
                Err(invalid(
                    self.path,
                    self.row.location(id.as_deref()),
                    Some(&field),
                    message,
                ))
            }
        })
    }

    // Anything but an object: read it whole, then say what it was.
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.not_an_object(&Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.not_an_object(&Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.not_an_object(&Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.not_an_object(&Value::from(v)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.not_an_object(&Value::String(String::new())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.not_an_object(&Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(self.not_an_object(&Value::Array(Vec::new())))
    }
}

impl UserSeed<'_> {
    fn not_an_object(&self, value: &Value) -> Result<RawRow, DirectoryError> {
        Err(invalid(
            self.path,
            self.row.location(None),
            None,
            format!("expected a user object, found {}", kind(value)),
        ))
    }
}

/// A user object's key, recognised without allocating for the known ones.
enum Key {
    Known(Field),
    Unknown(String),
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match Field::parse(name) {
                    Some(field) => Key::Known(field),
                    None => Key::Unknown(name.to_owned()),
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

fn json_scalar(value: Value) -> Result<Option<String>, String> {
    match value {
        Value::String(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        other => Err(format!("expected a string, found {}", kind(&other))),
    }
}

fn json_groups(value: Value) -> Result<Vec<String>, String> {
    match value {
        // Other fields may be null; groups may not. An exporter writes null where it
        // failed to read a person's groups (None, a NULL column, a lookup that
        // threw), and taken as "none" that person would fall out of scope, to be
        // deactivated, without a word.
        Value::Null => Err(
            "null where a list of group names is expected: write [] for a \
                            person in no group, or leave the field out. An exporter that \
                            writes null has usually failed to read the groups, and this \
                            person would be taken for one in none"
                .to_owned(),
        ),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(format!(
                    "entry {i} should be a group name, found {}",
                    kind(&other)
                )),
            })
            .collect(),
        other => Err(format!(
            "expected an array of group names, found {}",
            kind(&other)
        )),
    }
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n} (quote it)"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

// ---------------------------------------------------------------------------------
// CSV

/// Parses a CSV export (see the module docs for the columns).
pub fn parse_csv(text: &str, path: &Path) -> Result<Vec<Identity>, DirectoryError> {
    read_csv(text, path, ConfiguredGroups::default())
}

fn read_csv(
    text: &str,
    path: &Path,
    configured: ConfiguredGroups,
) -> Result<Vec<Identity>, DirectoryError> {
    let text = strip_bom(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| csv_error(text, path, &e))?
        .clone();
    if header.is_empty() {
        return Ok(Vec::new());
    }

    let header_error = |column: &str, message: String| {
        invalid(path, "line 1 (header)".to_owned(), Some(column), message)
    };
    let mut columns: Vec<(usize, Field)> = Vec::with_capacity(header.len());
    // Spreadsheets add columns without a name after the last one (a cell once
    // formatted there): harmless while they stay empty.
    let mut unnamed: Vec<usize> = Vec::new();
    for (index, name) in header.iter().enumerate() {
        let name = name.trim();
        if name.is_empty() {
            unnamed.push(index);
            continue;
        }
        let Some(field) = Field::parse(name) else {
            return Err(header_error(name, unknown_column(name)));
        };
        if columns.iter().any(|&(_, f)| f == field) {
            return Err(header_error(name, "column appears twice".to_owned()));
        }
        columns.push((index, field));
    }
    for field in Field::REQUIRED {
        if !columns.iter().any(|&(_, f)| f == field) {
            return Err(header_error(
                field.name(),
                "required column is missing".to_owned(),
            ));
        }
    }

    let mut collector = Collector::new(path, configured);
    let mut lines = LineCounter::new(text);
    let mut record = csv::StringRecord::new();
    while reader
        .read_record(&mut record)
        .map_err(|e| csv_error(text, path, &e))?
    {
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        // A row of nothing but separators (`,,,,`, as spreadsheets write rows
        // that were once formatted) names no one.
        if record.iter().all(|value| value.trim().is_empty()) {
            continue;
        }
        if let Some((index, value)) = unnamed.iter().find_map(|&index| {
            Some((index, record.get(index)?.trim())).filter(|(_, v)| !v.is_empty())
        }) {
            return Err(invalid(
                path,
                Row::Csv(line).location(None),
                None,
                format!(
                    "column {} has no name in the header but holds {value:?}; name the \
                     column or remove it",
                    index + 1
                ),
            ));
        }
        let mut raw = RawRow::default();
        for &(index, field) in &columns {
            let value = record.get(index).unwrap_or_default();
            match raw.scalar(field) {
                Some(slot) => *slot = Some(value.to_owned()),
                None => {
                    raw.groups = value.split(';').map(str::to_owned).collect();
                    raw.has_groups = true;
                }
            }
        }
        collector.push(Row::Csv(line), raw)?;
    }
    collector.check_groups_given("line 1 (header)")?;
    Ok(collector.identities)
}

/// Why a header name is not a column, with the likely slip: a file separated by
/// `;` (Excel's "CSV" where the decimal separator is a comma) or by tabs reads as
/// one column named after the whole header; `UserName` is `userName` in another
/// case.
fn unknown_column(name: &str) -> String {
    for (separator, what) in [(';', "';'"), ('\t', "tabs")] {
        if name
            .split(separator)
            .filter_map(|part| Field::parse(part.trim()))
            .count()
            >= 2
        {
            return format!(
                "unknown column: the file is separated by {what}, not commas (Excel saves \
                 \"CSV\" that way where the decimal separator is a comma); save it separated \
                 by commas"
            );
        }
    }
    match Field::ALL
        .into_iter()
        .find(|field| field.name().eq_ignore_ascii_case(name))
    {
        Some(field) => format!(
            "unknown column; column names are compared exactly: write {:?}",
            field.name()
        ),
        None => format!("unknown column; {}", Field::expected()),
    }
}

/// The file line a record starts on, from the byte offset the reader gives it.
/// The reader's own line numbers are one short after a CRLF line end or a blank
/// line (BurntSushi/rust-csv#395, #208), and exports from Windows tools end their
/// lines with CRLF: the operator must be sent to the right person's row.
struct LineCounter<'a> {
    text: &'a [u8],
    /// Where counting stopped, and the line that byte is on (1-based).
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        LineCounter {
            text: text.as_bytes(),
            offset: 0,
            line: 1,
        }
    }

    /// The line of the first byte at or after `byte` that is not a line end: a
    /// record's position can point at the `\n` of the line end before it, or at a
    /// blank line the reader skipped. Offsets must not decrease between calls.
    fn line_at(&mut self, byte: u64) -> u64 {
        let mut start = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .clamp(self.offset, self.text.len());
        while matches!(self.text.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        let newlines = self.text[self.offset..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += u64::try_from(newlines).unwrap_or(u64::MAX);
        self.offset = start;
        self.line
    }
}

fn csv_error(text: &str, path: &Path, error: &csv::Error) -> DirectoryError {
    let start = error.position().map(|p| p.byte());
    let location = start.map_or_else(
        || "unknown line".to_owned(),
        |byte| format!("line {}", LineCounter::new(text).line_at(byte)),
    );
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            // A quote opened and never closed makes the rest of the file one field:
            // the count is then what is wrong with the row, not the reason.
            let rest = start
                .and_then(|byte| usize::try_from(byte).ok())
                .and_then(|byte| text.get(byte..))
                .unwrap_or_default();
            let unclosed = len < expected_len && rest.matches('"').count() % 2 == 1;
            format!(
                "has {len} fields, but the header has {expected_len}{}",
                if unclosed {
                    "; a quote (\") opened in this row is never closed, so the rest of \
                     the file was read as one field"
                } else {
                    ""
                }
            )
        }
        _ => error.to_string(),
    };
    invalid(path, location, None, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The check behind "changed while it was read": the two looks must agree
    /// with each other and with what was read.
    #[test]
    fn a_file_that_changed_between_two_looks_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.csv");
        std::fs::write(&path, "id,userName\n1,ada\n").unwrap();
        let before = std::fs::metadata(&path).unwrap();
        assert!(unchanged(&before, &std::fs::metadata(&path).unwrap(), 18));
        assert!(
            !unchanged(&before, &std::fs::metadata(&path).unwrap(), 12),
            "read shorter than the file"
        );
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"2,ben\n").unwrap();
        drop(file);
        assert!(!unchanged(&before, &std::fs::metadata(&path).unwrap(), 18));
    }

    /// A renamed mapping group passes (its last members may have left), but is
    /// said, as the connectors say it.
    #[tokio::test]
    async fn a_mapping_group_no_row_carries_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.csv");
        std::fs::write(
            &path,
            "id,userName,status,groups\nu1,ada@example.com,active,Taskade Users;Engineering Team\n",
        )
        .unwrap();
        let source = FileSource::new(path)
            .with_scope_groups(vec!["Taskade Users".into()])
            .with_mapping_groups(vec![(0, "Engineering".into()), (1, "Taskade Users".into())]);
        let (read, log) = crate::retry::logged(async { source.read() }).await;
        assert_eq!(read.unwrap().identities.len(), 1);
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(warnings[0].contains("group=Engineering "), "{log}");
        assert!(warnings[0].contains("policy.mapping[0].group"), "{log}");
        assert!(warnings[0].contains("no row carries it"), "{log}");
    }
}
