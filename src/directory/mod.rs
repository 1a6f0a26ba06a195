//! Directory sources: where seatwarden reads the people it reconciles against.
//!
//! Every source produces one [`DirectorySnapshot`] per read. A source that cannot read
//! every person returns an error (or, for a SCIM directory whose listing ends short of
//! its `totalResults`, a snapshot marked incomplete): a partial directory must never
//! look like people who left (design invariant 3).
//!
//! Sources are an enum rather than a trait object: the set is closed (file, Okta,
//! Entra, LDAP, SCIM), `snapshot` is async, and `match` keeps the dispatch
//! visible and free of boxing.

mod dpop;
pub mod entra;
pub mod file;
mod jwt;
pub mod ldap;
pub mod okta;
mod remote;
pub mod scim;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::model::{DirectorySnapshot, Identity};
use crate::policy::fold_group_name;
use crate::retry::Transient;

pub use entra::{EntraAuth, EntraSettings, EntraSource, EntraUserName};
pub use file::FileSource;
pub use ldap::{LdapFlavor, LdapSettings, LdapSource};
pub use okta::{OktaAuth, OktaSettings, OktaSource, OktaUserName};
pub use remote::{RemoteStats, Secret, secret_in_file, token_in_file};
pub use scim::{MissingActive, ScimDirectorySettings, ScimDirectorySource};

/// Why a directory could not be read. A file error is never transient: the file
/// will not fix itself between two attempts of the same run.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read directory file {} (directory.path): {source}", .path.display())]
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
    /// A connector's settings cannot work (bad URL, unreadable key, HTTP client).
    #[error("directory connector settings: {0}")]
    Settings(String),
    /// A secret file (`token_file`, `client_secret_file`, `private_key_file`) could
    /// not be read. The secret itself is never part of an error.
    #[error("cannot read {key} {}: {source}", .file.display())]
    SecretFile {
        key: &'static str,
        file: PathBuf,
        source: std::io::Error,
    },
    /// No HTTP answer: connect error, timeout, connection closed mid-exchange.
    #[error("{endpoint}: {message}")]
    Transport {
        endpoint: String,
        message: String,
        transient: bool,
    },
    /// The provider answered with a non-success status.
    #[error("{endpoint}: HTTP {status}{}: {detail}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        endpoint: String,
        status: u16,
        /// The provider's error code: Okta `errorCode` (`E0000047`), Graph
        /// `error.code` (`syncStateNotFound`), OAuth `error` (`invalid_client`).
        code: Option<String>,
        /// The provider's message, truncated, or what seatwarden says of the
        /// web page that answered in its place, whole; secrets are scrubbed.
        detail: String,
        retry_after: Option<Duration>,
    },
    /// A success status with a body or headers the connector cannot use.
    #[error("{endpoint}: malformed response: {what}")]
    Malformed { endpoint: String, what: String },
    /// An LDAP server answered an operation with an error result (RFC 4511 §4.1.9):
    /// the code, its name, the server's diagnostic text and what to check.
    #[error("{endpoint}: {detail}")]
    Ldap {
        endpoint: String,
        code: u32,
        detail: String,
    },
    /// The configured scope does not exist in the directory (a `scope_groups` name,
    /// an app id); reading on would make everyone look out of scope.
    #[error("{provider}: {message}")]
    Scope {
        provider: &'static str,
        message: String,
    },
}

fn field_suffix(field: &Option<String>) -> String {
    match field {
        Some(field) => format!(", field {field:?}"),
        None => String::new(),
    }
}

impl DirectoryError {
    /// Worth another attempt? Never for files; for connectors, network failures,
    /// timeouts and the statuses [`crate::http::status_is_transient`] names are.
    pub fn is_transient(&self) -> bool {
        match self {
            DirectoryError::Io { .. }
            | DirectoryError::Invalid { .. }
            | DirectoryError::UnsupportedFormat { .. }
            | DirectoryError::Task { .. }
            | DirectoryError::Settings(_)
            | DirectoryError::SecretFile { .. }
            | DirectoryError::Malformed { .. }
            | DirectoryError::Scope { .. } => false,
            DirectoryError::Transport { transient, .. } => *transient,
            DirectoryError::Status { status, .. } => crate::http::status_is_transient(*status),
            // busy, unavailable
            DirectoryError::Ldap { code, .. } => matches!(code, 51 | 52),
        }
    }

    /// The HTTP status, when the provider answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            DirectoryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Transient for DirectoryError {
    fn is_transient(&self) -> bool {
        DirectoryError::is_transient(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            DirectoryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A directory's group names as `check-config --connect` lists them
/// ([`Directory::group_names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNames {
    pub names: Vec<String>,
    /// False when a SCIM directory's listing ended short of the `totalResults`
    /// it announced: look-alikes among the groups not listed were not looked for.
    pub whole: bool,
}

/// The directory groups a snapshot carries on each identity: `policy.scope_groups`
/// and the other groups the configuration names (mappings and
/// `safety.protected_groups`); every group when it names none.
///
/// Names match without regard to case. The policy compares mapping names exactly
/// but protected groups without case, so a group either could need is read: a
/// break-glass group spelled `it admins` in the configuration still protects the
/// members of `IT Admins`.
///
/// A group whose name differs from a configured one only in what does not show
/// ([`crate::names::ConfiguredGroups::look_alike`]: a no-break or zero-width
/// space, two spaces, quotes) is read too: policy does not count it, but the
/// guard holds what its absence would take from its members, and the report
/// names it ([`crate::safety::hold_look_alikes`]). Unread, its members would
/// look out of scope, or without their mapping, and lose access silently.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupInterest {
    folded: std::collections::HashSet<String>,
    /// The same names, to recognise a look-alike (their keys are not needed here).
    configured: crate::names::ConfiguredGroups,
}

impl GroupInterest {
    /// `distinct_groups` (`safety.distinct_groups`): directory groups declared
    /// other groups than the configured ones they look like, read for nothing.
    pub fn new(
        scope_groups: &[String],
        other_groups: &[String],
        distinct_groups: &[String],
    ) -> GroupInterest {
        let mut configured = crate::names::ConfiguredGroups::default();
        for name in scope_groups.iter().chain(other_groups) {
            configured.add(name, String::new());
        }
        for name in distinct_groups {
            configured.declare_distinct(name);
        }
        GroupInterest {
            folded: scope_groups
                .iter()
                .chain(other_groups)
                .map(|name| fold_group_name(name))
                .collect(),
            configured,
        }
    }

    /// The configuration names no group: every group is wanted.
    pub fn is_everything(&self) -> bool {
        self.folded.is_empty()
    }

    pub fn wants(&self, name: &str) -> bool {
        self.folded.is_empty()
            || self.folded.contains(&fold_group_name(name))
            || self.configured.look_alike(name).is_some()
    }

    /// Whether `name` differs from a configured group only in what does not show.
    fn looks_alike(&self, name: &str) -> bool {
        self.configured.look_alike(name).is_some()
    }
}

/// A configured group `name` that the directory's groups `present` do not have,
/// but one of which differs from it only in what does not show: its name, when
/// there is one. The read goes on (the guard holds what the look-alike's
/// members would lose); logged here with what differs. One declared another
/// group (`distinct`: `safety.distinct_groups`) does not stand in for it: the
/// configured group is missing.
fn look_alike_present<'a>(
    provider: &'static str,
    present: &std::collections::HashSet<&'a str>,
    name: &str,
    key: &str,
    distinct: &[String],
) -> Option<&'a str> {
    let mut configured = crate::names::ConfiguredGroups::default();
    configured.add(name, key.to_owned());
    for group in distinct {
        configured.declare_distinct(group);
    }
    let mut found: Vec<(&str, crate::names::LookAlike)> = present
        .iter()
        .filter_map(|p| Some((*p, configured.look_alike(p)?)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    let (spelling, look_alike) = found.into_iter().next()?;
    tracing::warn!(
        provider,
        "{look_alike}, and the directory has no group named exactly {name:?}: its members \
         are read, and what they would lose is held for a person to decide. Rename the group \
         in the directory, or correct {key}"
    );
    Some(spelling)
}

/// Whether a group of `present` names answers to `name`, without regard to case.
pub(crate) fn group_present<'a>(mut present: impl Iterator<Item = &'a str>, name: &str) -> bool {
    let name = fold_group_name(name);
    present.any(|candidate| fold_group_name(candidate) == name)
}

/// A group the configuration cannot do without: a typo or a renamed group would
/// not shrink the scope but quietly take something from its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredGroup {
    pub name: String,
    /// Where the configuration names it, e.g. `safety.protected_groups`.
    pub key: String,
    /// What its absence would do, e.g. "take its members' protection away".
    pub loss: String,
    /// Compared as policy compares it: mapping groups exactly (case included),
    /// protected groups without regard to case.
    pub exact: bool,
}

impl RequiredGroup {
    const PROTECTED_KEY: &'static str = "safety.protected_groups";

    /// A `safety.protected_groups` entry.
    pub fn protected(name: &str) -> RequiredGroup {
        RequiredGroup {
            name: name.to_owned(),
            key: Self::PROTECTED_KEY.to_owned(),
            loss: "take its members' protection away, and the next run would deprovision \
                   leavers among them"
                .to_owned(),
            exact: false,
        }
    }

    pub fn is_protected(&self) -> bool {
        self.key == Self::PROTECTED_KEY
    }

    /// The group of the mapping at `index` (`policy.mapping[index].group`), which
    /// gives Owner.
    pub fn owner_mapping(name: &str, index: usize) -> RequiredGroup {
        RequiredGroup {
            name: name.to_owned(),
            key: format!("policy.mapping[{index}].group"),
            loss: "plan every workspace Owner it makes down to a lower role".to_owned(),
            exact: true,
        }
    }
}

/// Refuses a read in which a scope group is missing: everyone would look out of
/// scope. Policy matches scope groups by their exact name, so one that differs
/// only in case or spaces is missing too; the error names the directory's spelling.
/// `what` says what a group name is in this directory, e.g. "an Okta group
/// (profile.name)".
pub(crate) fn check_scope_groups(
    provider: &'static str,
    present: &std::collections::HashSet<&str>,
    scope_groups: &[String],
    distinct_groups: &[String],
    what: &str,
) -> Result<(), DirectoryError> {
    let composed_present = composed(present);
    for name in scope_groups {
        if composed_present.contains(&crate::model::compose_name(name))
            || look_alike_present(
                provider,
                present,
                name,
                "policy.scope_groups",
                distinct_groups,
            )
            .is_some()
        {
            continue;
        }
        let near = present
            .iter()
            .find(|p| fold_group_name(p) == fold_group_name(name))
            .map(|p| format!(" (the directory has {p:?}: scope groups are compared exactly)"))
            .unwrap_or_default();
        return Err(DirectoryError::Scope {
            provider,
            message: format!("scope group {name:?} is not {what}{near}; check policy.scope_groups"),
        });
    }
    Ok(())
}

/// The directory's group names `present` as they are compared: composed (see
/// [`compose_group_names`]).
fn composed<'a>(
    present: &std::collections::HashSet<&'a str>,
) -> std::collections::HashSet<std::borrow::Cow<'a, str>> {
    present
        .iter()
        .map(|name| crate::model::compose_name(name))
        .collect()
}

/// Checks the groups the configuration names against the directory's groups
/// (`present`, by name). A required group (see [`RequiredGroup`]) the directory
/// does not have is refused. Another mapping group the directory lacks, or spells
/// otherwise (in case or spaces: policy compares mapping groups exactly, so it
/// matches no one), is only logged, with the directory's spelling: its members
/// lose what it gave them through role downgrades and membership removals, which
/// the guard's thresholds limit. `what` says what a name must be, e.g. "an Okta
/// group (profile.name)".
pub(crate) fn check_named_groups(
    provider: &'static str,
    present: &std::collections::HashSet<&str>,
    other_groups: &[String],
    required_groups: &[RequiredGroup],
    distinct_groups: &[String],
    what: &str,
) -> Result<(), DirectoryError> {
    let composed_present = composed(present);
    for required in required_groups {
        let found = if required.exact {
            composed_present.contains(&crate::model::compose_name(&required.name))
        } else {
            group_present(present.iter().copied(), &required.name)
        };
        if !found
            && look_alike_present(
                provider,
                present,
                &required.name,
                &required.key,
                distinct_groups,
            )
            .is_none()
        {
            // A mapping matches its group's name exactly: one that differs only in
            // case or spaces matches nobody.
            let near = present
                .iter()
                .find(|p| fold_group_name(p) == fold_group_name(&required.name))
                .map(|p| format!(" (the directory has {p:?}: mapping groups are compared exactly)"))
                .unwrap_or_default();
            return Err(DirectoryError::Scope {
                provider,
                message: format!(
                    "group {:?} ({}) is not {what}{near}; a typo or a renamed group would {}. \
                     Check {}",
                    required.name, required.key, required.loss, required.key
                ),
            });
        }
    }
    for name in other_groups {
        // Policy matches a mapping's group by its exact name: one the directory
        // spells otherwise ("engineering", "Engineering ") matches no one.
        if required_groups.iter().any(|r| &r.name == name)
            || composed_present.contains(&crate::model::compose_name(name))
        {
            continue;
        }
        match present
            .iter()
            .find(|p| fold_group_name(p) == fold_group_name(name))
        {
            Some(spelling) => tracing::warn!(
                group = %name,
                directory_spelling = %spelling,
                provider,
                "group named by policy.mapping is spelt otherwise in the directory; mapping \
                 groups are compared exactly, so the mapping applies to no one"
            ),
            None => tracing::warn!(
                group = %name,
                provider,
                "group named by policy.mapping not found in the directory"
            ),
        }
    }
    Ok(())
}

/// Refuses two groups of interest that answer to the same name (without regard to
/// case). Policy matches groups by name, so the members of both would count: in
/// Entra, where `displayName` is not unique and any user may create a Microsoft
/// 365 group, a look-alike "IT Admins" would protect its members from
/// deprovisioning, and a look-alike mapping group would hand out its role.
/// `groups` yields (id, name); `remedy` says what the administrator can change.
pub(crate) fn refuse_ambiguous_names<'a>(
    provider: &'static str,
    interest: &GroupInterest,
    groups: impl IntoIterator<Item = (&'a str, &'a str)>,
    remedy: &str,
) -> Result<(), DirectoryError> {
    if interest.is_everything() {
        return Ok(());
    }
    let mut first: std::collections::HashMap<String, (&str, &str)> =
        std::collections::HashMap::new();
    for (id, name) in groups {
        if !interest.wants(name) {
            continue;
        }
        // Compared as policy compares them, case aside: a look-alike with a
        // no-break space at its end is another name, its members held, not two
        // groups counted as one.
        if interest.looks_alike(name) {
            continue;
        }
        match first.entry(fold_group_name(name)) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((id, name));
            }
            std::collections::hash_map::Entry::Occupied(seen) => {
                let (first_id, first_name) = *seen.get();
                if first_id != id {
                    return Err(DirectoryError::Scope {
                        provider,
                        message: format!(
                            "two groups answer to the name {first_name:?}, which the \
                             configuration uses: {first_id:?} and {id:?} ({name:?}); \
                             groups are matched by name, so the members of both would \
                             count; {remedy}"
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The group names of `identities` in Unicode NFC, as the configuration's are
/// ([`crate::model::compose_name`]): macOS exports and some HR systems write `é` as `e`
/// and U+0301, and compared exactly with the configuration's `é` the person would
/// lose what a mapping gives them, or fall out of scope. Every connector's read
/// ends here.
fn compose_group_names(identities: &mut [Identity]) {
    for identity in identities {
        for group in &mut identity.groups {
            crate::model::compose_in_place(group);
        }
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
#[derive(Debug, Clone)]
pub enum Directory {
    /// A JSON or CSV export on disk (see [`file`](mod@file) for the format).
    File(FileSource),
    /// Okta's Management API (see [`okta`]).
    Okta(OktaSource),
    /// Microsoft Entra ID through Microsoft Graph (see [`entra`]).
    Entra(EntraSource),
    /// Active Directory or OpenLDAP (see [`ldap`](mod@ldap)).
    Ldap(LdapSource),
    /// A SCIM 2.0 service provider that serves the people (see [`scim`]).
    Scim(ScimDirectorySource),
}

impl Directory {
    /// Reads the whole directory. A file is always read whole, so its snapshot is
    /// `complete`.
    ///
    /// Boxed as `Send` here, where the connectors' futures are concrete: left to
    /// inference inside a spawned caller (the daemon's jobs) the compiler cannot
    /// prove their stream closures `Send` for every lifetime (rust-lang/rust#102211).
    pub fn snapshot(&self) -> BoxFuture<'_, Result<DirectorySnapshot, DirectoryError>> {
        Box::pin(async move {
            let mut snapshot = match self {
                Directory::File(source) => source.snapshot().await,
                Directory::Okta(source) => source.snapshot().await,
                Directory::Entra(source) => source.snapshot().await,
                Directory::Ldap(source) => source.snapshot().await,
                Directory::Scim(source) => source.snapshot().await,
            }?;
            compose_group_names(&mut snapshot.identities);
            Ok(snapshot)
        })
    }

    /// What changed since `cursor` (from the previous call; `None` the first time),
    /// for the daemon's deprovisioning sweep. Sources without a cheap delta, and
    /// connectors whose cursor expired, answer with the whole directory.
    pub fn changes_since<'a>(
        &'a self,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<DirectoryChanges, DirectoryError>> {
        Box::pin(async move {
            let mut changes = match self {
                // Re-reading a file is as cheap as any delta could be.
                Directory::File(source) => Ok(DirectoryChanges::Full {
                    snapshot: source.snapshot().await?,
                    cursor: None,
                }),
                Directory::Okta(source) => source.changes_since(cursor).await,
                Directory::Entra(source) => source.changes_since(cursor).await,
                // No delta that shows deletions without tombstone access.
                Directory::Ldap(source) => Ok(DirectoryChanges::Full {
                    snapshot: source.snapshot().await?,
                    cursor: None,
                }),
                // SCIM has no delta that shows deletions.
                Directory::Scim(source) => Ok(DirectoryChanges::Full {
                    snapshot: source.snapshot().await?,
                    cursor: None,
                }),
            }?;
            match &mut changes {
                DirectoryChanges::Full { snapshot, .. } => {
                    compose_group_names(&mut snapshot.identities)
                }
                DirectoryChanges::Delta { changed, .. } => compose_group_names(changed),
            }
            Ok(changes)
        })
    }

    /// `check-config --connect`: the requests a snapshot starts with, each
    /// cheap and read-only, through the connector's own request path (its
    /// errors name the endpoint and what to fix): what each proved, in order.
    /// A file was read whole by `check-config` already. `progress` is told
    /// after each page of a SCIM directory's listing of every User (the other
    /// connectors' probes read a page or an entry).
    pub fn probe<'a>(
        &'a self,
        progress: &'a (dyn Fn(crate::workspace::Progress) + Send + Sync),
    ) -> BoxFuture<'a, Result<Vec<String>, DirectoryError>> {
        Box::pin(async move {
            match self {
                Directory::File(_) => Ok(vec!["read above (a file: no connection)".to_owned()]),
                Directory::Okta(source) => source.probe().await,
                Directory::Entra(source) => source.probe().await,
                Directory::Ldap(source) => source.probe().await,
                Directory::Scim(source) => source.probe(progress).await,
            }
        })
    }

    /// `check-config --connect`: the names of every group (Okta's and Entra's
    /// listing a run starts with; LDAP's groups under `group_base_dn` matching
    /// `group_filter`, `cn` alone; a SCIM directory's `/Groups` with
    /// `attributes=displayName`), so that the groups whose names differ from a
    /// configured one only in what does not show are named before a run holds
    /// what they would take. `None` for a file export: the check read it whole
    /// already, and refuses such a group there. `progress` is told after each
    /// page of a SCIM directory's listing.
    pub fn group_names<'a>(
        &'a self,
        progress: &'a (dyn Fn(crate::workspace::Progress) + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<GroupNames>, DirectoryError>> {
        let whole = |names: Vec<String>| Some(GroupNames { names, whole: true });
        Box::pin(async move {
            match self {
                Directory::Okta(source) => source.group_names().await.map(whole),
                Directory::Entra(source) => source.group_names().await.map(whole),
                // A search cut short (a server's size limit) fails: never part of one.
                Directory::Ldap(source) => source.group_names().await.map(whole),
                Directory::Scim(source) => source.group_names(progress).await.map(Some),
                // Read whole by the check already, and refused there for such a group.
                Directory::File(_) => Ok(None),
            }
        })
    }

    /// Reads every file the settings name (credentials, keys, certificates, the
    /// CA file, an export) and parses what needs no network, so that
    /// `check-config` finds a missing, empty or malformed file before a run does.
    /// Connectors still read their secrets at use, so rotation keeps working.
    pub fn check_files(&self) -> Result<(), DirectoryError> {
        match self {
            // Read by a run, an export without a person is a source fault (exit 5):
            // said here, where someone is checking the file on purpose.
            Directory::File(source) => match source.read()? {
                snapshot if snapshot.identities.is_empty() => Err(DirectoryError::Invalid {
                    path: source.path().to_owned(),
                    location: "top level".to_owned(),
                    field: None,
                    message: "it holds no one; a run would refuse it as a source fault \
                              (exit 5) and plan nothing"
                        .to_owned(),
                }),
                _ => Ok(()),
            },
            _ => self.check_credentials(),
        }
    }

    /// [`Directory::check_files`] but the export of a `file` source: its secrets,
    /// keys and certificates only.
    pub fn check_credentials(&self) -> Result<(), DirectoryError> {
        match self {
            Directory::File(_) => Ok(()),
            Directory::Okta(source) => source.check_files(),
            Directory::Entra(source) => source.check_files(),
            Directory::Ldap(source) => source.check_files(),
            Directory::Scim(source) => {
                remote::ca_pem(source.settings().ca_file.as_deref())?;
                source.settings().token.read().map(drop)
            }
        }
    }

    /// Requests to the directory retried after a transient failure (429, 5xx, no
    /// answer) so far: a run's report and the retry metric count them with the
    /// workspace's, as a throttled directory read is what a slow run spent its
    /// time on. A file is never retried.
    pub fn retries(&self) -> u64 {
        match self {
            Directory::File(_) => 0,
            Directory::Okta(source) => source.stats().retries,
            Directory::Entra(source) => source.stats().retries,
            Directory::Ldap(source) => source.retries(),
            Directory::Scim(source) => source.retries(),
        }
    }

    /// One line for logs and reports, e.g. `file /etc/seatwarden/directory.json`.
    pub fn describe(&self) -> String {
        match self {
            Directory::File(source) => format!("file {}", source.path().display()),
            Directory::Okta(source) => format!("okta {}", source.url()),
            Directory::Entra(source) => format!("entra tenant {}", source.tenant_id()),
            Directory::Ldap(source) => format!("ldap {}", source.url()),
            Directory::Scim(source) => format!("scim {}", source.url()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn a_mapping_group_spelt_otherwise_in_the_directory_is_logged() {
        let present: std::collections::HashSet<&str> = ["Taskade Users", "engineering", "Design "]
            .into_iter()
            .collect();
        let other_groups = ["Engineering", "Design", "Finance"].map(str::to_owned);
        let (checked, log) = crate::retry::logged(async {
            check_named_groups("okta", &present, &other_groups, &[], &[], "an Okta group")
        })
        .await;
        checked.unwrap();
        for (group, spelling) in [("Engineering", "engineering"), ("Design", "Design ")] {
            let line = log
                .lines()
                .find(|line| line.contains(&format!("group={group} ")))
                .unwrap_or_else(|| panic!("no line for {group}: {log}"));
            assert!(line.contains("spelt otherwise"), "{line}");
            assert!(line.contains(spelling), "{line}");
        }
        assert!(
            log.lines()
                .any(|line| line.contains("Finance") && line.contains("not found")),
            "{log}"
        );
    }

    /// A scope or required group the directory has only as a look-alike (a
    /// no-break space at its end, a zero-width space inside) no longer refuses
    /// the read, which stopped everyone's deprovisioning: the guard holds what
    /// its members would lose. A group missing outright still refuses it.
    #[test]
    fn a_look_alike_of_a_scope_or_required_group_lets_the_read_go_on() {
        let present: std::collections::HashSet<&str> = ["Taskade Users\u{a0}", "IT\u{200b} Admins"]
            .into_iter()
            .collect();
        check_scope_groups(
            "okta",
            &present,
            &["Taskade Users".to_owned()],
            &[],
            "an Okta group",
        )
        .unwrap();
        check_named_groups(
            "okta",
            &present,
            &["IT Admins".to_owned()],
            &[RequiredGroup::protected("IT Admins")],
            &[],
            "an Okta group",
        )
        .unwrap();
        let missing = check_scope_groups(
            "okta",
            &present,
            &["Finance".to_owned()],
            &[],
            "an Okta group",
        );
        assert!(missing.is_err());
        // Declared another group (safety.distinct_groups), a look-alike does not
        // stand in for the configured group: that one is missing.
        let distinct = [
            "Taskade Users\u{a0}".to_owned(),
            "it\u{200b} admins".to_owned(),
        ];
        let missing = check_scope_groups(
            "okta",
            &present,
            &["Taskade Users".to_owned()],
            &distinct,
            "an Okta group",
        );
        assert!(missing.is_err());
        let missing = check_named_groups(
            "okta",
            &present,
            &["IT Admins".to_owned()],
            &[RequiredGroup::protected("IT Admins")],
            &distinct,
            "an Okta group",
        );
        assert!(missing.is_err());
        let interest = GroupInterest::new(
            &["Taskade Users".to_owned()],
            &[],
            &["Taskade\u{200b} Users".to_owned()],
        );
        assert!(!interest.wants("Taskade\u{200b} Users"));
        assert!(interest.wants("Taskade  Users"));
        // Read, and not taken for a second group of the same name.
        let interest = GroupInterest::new(&["Taskade Users".to_owned()], &[], &[]);
        assert!(interest.wants("Taskade\u{200b} Users"));
        assert!(!interest.wants("Finance"));
        refuse_ambiguous_names(
            "okta",
            &interest,
            [("g1", "Taskade Users"), ("g2", "Taskade Users\u{a0}")],
            "rename one",
        )
        .unwrap();
        assert!(
            refuse_ambiguous_names(
                "okta",
                &interest,
                [("g1", "Taskade Users"), ("g2", "taskade users")],
                "rename one",
            )
            .is_err()
        );
    }
}
